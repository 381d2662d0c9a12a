/**
 * The gateway's continuation tokens. A `next` link never carries an upstream paging link (which
 * could be replayed by someone else, names the upstream and counts withheld resources); it carries
 * this token: the upstream position the gateway stopped at, sealed with AES-256-GCM under a key
 * only the gateway holds, and bound to the caller (issuer, subject, roles, purpose, patient, FHIR user
 * context), the policy version and an expiry. Any token that does not open, has expired or was
 * issued to someone or something else is refused with one code, so a refusal says nothing about
 * why.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { GatewayError } from '../errors.js';

/** Where a result set continues, and for whom. Short keys: the token travels in every next link. */
export interface PageState {
  /** The search as the client asked it, relative to the FHIR base (`/Observation?code=x`): re-classified and re-decided on every page. */
  readonly q: string;
  /** The upstream page to read next: path and query on the upstream origin. */
  readonly u: string;
  /** Entries of that upstream page already consumed (index of the first one still to release). */
  readonly i: number;
  /** Matches released on earlier pages (for `total` once the whole result has been seen). */
  readonly r: number;
  /** Page size. */
  readonly n: number;
  /**
   * Bytes of the gateway's own first upstream request for this search (its query plus what the
   * gateway adds: `_count`, `_security:not`): the padding holds a position of that size, whichever
   * upstream page the position is on (a later page's link is often far shorter: the length of the
   * token would tell whether withheld results were skipped).
   */
  readonly f: number;
}

export interface PageBinding {
  readonly iss: string;
  readonly sub: string;
  readonly roles: readonly string[];
  readonly purpose: string;
  readonly patient: string | undefined;
  /** The caller's FHIR user: a search narrowed to its care relationships continues for it alone. */
  readonly fhirUser?: string | undefined;
  readonly policyVersion: string;
  /** The access grant (X-Access-Grant) the search was made under: its pages continue under it alone. */
  readonly grant?: string | undefined;
}

interface Sealed extends PageState {
  readonly v: 1;
  /** Digest of the binding: the token need not carry who it is for, only prove it. */
  readonly b: string;
  /** Expiry, epoch seconds. */
  readonly e: number;
}

const IV_BYTES = 12;
const TAG_BYTES = 16;

function bindingDigest(b: PageBinding): string {
  const roles = [...new Set(b.roles)].sort();
  return createHash('sha256')
    .update(JSON.stringify([b.iss, b.sub, roles, b.purpose, b.patient ?? null, b.policyVersion, b.fhirUser ?? null, ...(b.grant === undefined ? [] : [b.grant])]))
    .digest('base64url');
}

/**
 * The sealed text padded (JSON ignores trailing whitespace) to a length that depends only on the
 * client's own search: how far the gateway read upstream (the upstream link, the entry index, the
 * count released) changes the plaintext, and a token whose length followed it would tell how many
 * withheld resources were skipped. The upstream link normally echoes the search, so twice its
 * length plus a margin holds it; a longer one (an unusually long upstream cursor) falls into
 * coarse 1 KiB steps.
 */
function padded(json: string, q: string, f: number): string {
  const bytes = Buffer.byteLength(json, 'utf8');
  const qBytes = Buffer.byteLength(q, 'utf8');
  let target = Math.ceil((qBytes + Math.max(qBytes, f) + 512) / 256) * 256;
  if (bytes > target) target = Math.ceil(bytes / 1024) * 1024;
  return json + ' '.repeat(target - bytes);
}

function invalid(detail: string): GatewayError {
  return new GatewayError('paging-token-invalid', detail);
}

export interface PageTokens {
  seal(state: PageState, binding: PageBinding): string;
  /** The state, or throws GatewayError('paging-token-invalid'). */
  open(token: string, binding: PageBinding): PageState;
}

/**
 * `secret` (at least 32 characters) is shared by every replica behind one load balancer; without
 * one, a random key per process (tokens then die with the process and do not cross replicas).
 */
export function createPageTokens(opts: { secret: string | undefined; ttlSeconds: number; now?: () => number }): PageTokens {
  const key =
    opts.secret === undefined ? randomBytes(32) : createHash('sha256').update('phi-gateway paging token v1\0').update(opts.secret).digest();
  const nowSec = () => Math.floor((opts.now?.() ?? Date.now()) / 1000);

  return {
    seal(state, binding) {
      const sealed: Sealed = { v: 1, b: bindingDigest(binding), e: nowSec() + opts.ttlSeconds, q: state.q, u: state.u, i: state.i, r: state.r, n: state.n, f: state.f };
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, iv);
      const body = Buffer.concat([cipher.update(padded(JSON.stringify(sealed), state.q, state.f), 'utf8'), cipher.final()]);
      return Buffer.concat([iv, body, cipher.getAuthTag()]).toString('base64url');
    },

    open(token, binding) {
      if (token.length > 8192 || !/^[A-Za-z0-9_-]+$/.test(token)) throw invalid('malformed');
      const raw = Buffer.from(token, 'base64url');
      if (raw.length < IV_BYTES + TAG_BYTES + 2) throw invalid('too short');
      let text: string;
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, IV_BYTES));
        decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
        text = Buffer.concat([decipher.update(raw.subarray(IV_BYTES, raw.length - TAG_BYTES)), decipher.final()]).toString('utf8');
      } catch {
        throw invalid('does not open');
      }
      let s: Partial<Sealed>;
      try {
        s = JSON.parse(text) as Partial<Sealed>;
      } catch {
        throw invalid('not JSON');
      }
      if (s.v !== 1 || typeof s.b !== 'string' || typeof s.e !== 'number') throw invalid('unknown version');
      if (s.b !== bindingDigest(binding)) throw invalid('issued to another caller, purpose or policy');
      if (s.e < nowSec()) throw invalid('expired');
      if (typeof s.q !== 'string' || !s.q.startsWith('/') || typeof s.u !== 'string' || !s.u.startsWith('/')) throw invalid('bad position');
      for (const k of ['i', 'r', 'n', 'f'] as const) {
        const v = s[k];
        if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw invalid('bad position');
      }
      return { q: s.q, u: s.u, i: s.i!, r: s.r!, n: s.n!, f: s.f! };
    },
  };
}
