/**
 * The FHIR target: the records' BALP AuditEvents (src/audit/fhir.ts) created on an Audit Record
 * Repository, IHE ATNA's FHIR feed, in `batch` Bundles of `batchSize` AuditEvents, with the
 * target's own credentials (none, a bearer token, or client credentials from its token endpoint).
 *
 * Each AuditEvent carries a tag naming it: `meta.tag` {system `https://phi-gateway.dev/audit-event`,
 * code = the record id, or `<record id>-<n>` for the n-th patient of a record that released
 * several: the id the gateway's own FHIR export gives it}. Each entry is a conditional create
 * (`ifNoneExist: _tag=<system>|<code>`), so a batch sent again after a failure that hid a
 * success creates nothing twice on a repository that honours conditional create (the entry then
 * answers 200 instead of 201); on one that does not, duplicates carry the same tag. The record id
 * is also the AuditEvent's X-Request-Id entity (BALP XrequestId). Find a record's events with
 * `GET [base]/AuditEvent?_tag=https://phi-gateway.dev/audit-event|<record id>`.
 *
 * A delivery succeeds when every Bundle was answered 2xx with a batch-response holding a 2xx for
 * every entry; anything else fails the whole delivery (the forwarder sends the batch again).
 * Failures are reported by code only: `http-<status>`, `entry-<status>`, `auth-failed`, a
 * network code (`ECONNREFUSED`...).
 */
import { readFile } from 'node:fs/promises';
import type { AuditEvent, Bundle, BundleEntry } from 'fhir/r4.js';
import type { Logger } from 'pino';
import { Agent, request } from 'undici';
import { toAuditEvents } from '../audit/fhir.js';
import type { ChainedRecord } from '../audit/record.js';
import { createUpstreamAuthorization, type UpstreamAuthorization } from '../proxy/upstream-auth.js';
import { deliveryError, errorCode } from './syslog.js';
import type { FhirTargetConfig, Target } from './types.js';

export const AUDIT_EVENT_TAG_SYSTEM = 'https://phi-gateway.dev/audit-event';
const FHIR_JSON = 'application/fhir+json';
const DEFAULT_BATCH = 50;

/** FHIR search escaping of a token's parts (`\`, `|`, `,`, `$`). */
function escapeToken(v: string): string {
  return v.replace(/[\\|,$]/g, (c) => `\\${c}`);
}

/** The Bundle entries (conditional creates) for some records, in order. */
export function auditEventEntries(records: readonly ChainedRecord[]): BundleEntry[] {
  const out: BundleEntry[] = [];
  for (const r of records) {
    const events = toAuditEvents(r);
    events.forEach((ev, i) => {
      const key = events.length === 1 ? r.id : `${r.id}-${i + 1}`;
      const { id: _id, ...rest } = ev;
      const resource: AuditEvent = { ...rest, meta: { tag: [{ system: AUDIT_EVENT_TAG_SYSTEM, code: key }] } };
      const ifNoneExist = new URLSearchParams({ _tag: `${AUDIT_EVENT_TAG_SYSTEM}|${escapeToken(key)}` }).toString();
      out.push({ resource, request: { method: 'POST', url: 'AuditEvent', ifNoneExist } });
    });
  }
  return out;
}

export interface FhirTargetOptions {
  readonly logger: Logger;
  readonly now?: (() => number) | undefined;
  /** Per request (headers and body), default 30 s. */
  readonly timeoutMs?: number | undefined;
}

export function createFhirTarget(config: FhirTargetConfig, opts: FhirTargetOptions): Target {
  return new FhirTarget(config, opts);
}

function statusOf(s: string | undefined): number {
  const m = /^\s*(\d{3})/.exec(s ?? '');
  return m ? Number(m[1]) : 0;
}

class FhirTarget implements Target {
  readonly name: string;
  readonly type = 'fhir' as const;
  private readonly base: string;
  private readonly authorization: UpstreamAuthorization;
  private agent: Promise<Agent> | undefined;
  private closed = false;

  constructor(
    private readonly config: FhirTargetConfig,
    private readonly opts: FhirTargetOptions,
  ) {
    this.name = config.name;
    this.base = config.url.replace(/\/+$/, '');
    const a = config.auth;
    this.authorization = createUpstreamAuthorization(
      a.type === 'client-credentials' ? { type: a.type, tokenUrl: a.tokenUrl, clientId: a.clientId, clientSecret: a.clientSecret, ...(a.scope ? { scope: a.scope } : {}) } : a,
      opts.now,
    );
  }

  /** The connection pool, with the target's CA and client certificate when configured (read once). */
  private dispatcher(): Promise<Agent> {
    this.agent ??= (async () => {
      const t = this.config.tls;
      const [ca, cert, key] = await Promise.all([t?.ca, t?.cert, t?.key].map((f) => (f ? readFile(f) : undefined)));
      return new Agent({ connect: { ca, cert, key }, connections: 4 });
    })();
    return this.agent.catch((e) => {
      this.agent = undefined;
      throw deliveryError(`tls-file-${errorCode(e)}`);
    });
  }

  async deliver(records: readonly ChainedRecord[]): Promise<void> {
    if (this.closed) throw deliveryError('target-closed');
    const entries = auditEventEntries(records);
    const size = Math.max(1, this.config.batchSize ?? DEFAULT_BATCH);
    for (let i = 0; i < entries.length; i += size) await this.post(entries.slice(i, i + size));
  }

  private async post(entry: BundleEntry[]): Promise<void> {
    const dispatcher = await this.dispatcher();
    let authorization: string | undefined;
    try {
      authorization = await this.authorization();
    } catch {
      throw deliveryError('auth-failed');
    }
    const bundle: Bundle = { resourceType: 'Bundle', type: 'batch', entry };
    const headers: Record<string, string> = { 'content-type': FHIR_JSON, accept: FHIR_JSON };
    if (authorization) headers.authorization = authorization;
    const timeout = this.opts.timeoutMs ?? 30_000;
    let res: Awaited<ReturnType<typeof request>>;
    try {
      res = await request(this.base, { method: 'POST', headers, body: JSON.stringify(bundle), dispatcher, headersTimeout: timeout, bodyTimeout: timeout });
    } catch (e) {
      throw deliveryError(errorCode(e));
    }
    const body = (await res.body.json().catch(() => undefined)) as Bundle | undefined;
    if (res.statusCode < 200 || res.statusCode > 299) throw deliveryError(`http-${res.statusCode}`);
    if (body?.resourceType !== 'Bundle' || body.entry?.length !== entry.length) throw deliveryError('bad-batch-response');
    for (const e of body.entry) {
      const status = statusOf(e.response?.status);
      if (status < 200 || status > 299) throw deliveryError(`entry-${status || 'missing'}`);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const agent = await this.agent?.catch(() => undefined);
    this.agent = undefined;
    await agent?.close();
  }
}
