/**
 * `phi-gateway break-glass list [--unreviewed] [--json] [--config F]`
 * `phi-gateway break-glass review ID --token-file F --outcome justified|unjustified [--note T]
 *  [--gateway URL] [--ca F] [--config F]`
 *
 * `list` reads the session store the gateway uses (Redis when the audit sink is Redis, else the
 * embedded `break-glass/` directory beside the audit directory) and records that it did (kind
 * `audit-export`, cli-audit.ts): the list shows reasons and patient ids.
 *
 * `review` is a client of the running gateway's HTTP review route: the gateway verifies the token,
 * checks the role and separation of duties, audits and stores the review exactly as for any HTTP
 * review. The CLI verifies nothing itself, so a gateway.yaml or policy written on this machine
 * (another JWKS, a role given the review capability) cannot make it accept a reviewer.
 * Exit codes: 0 done, 1 refused or failed, 2 usage error.
 */
import { parseArgs } from 'node:util';
import { openSessionStore } from '../breakglass/index.js';
import { MAX_NOTE_LENGTH, REVIEW_OUTCOMES } from '../breakglass/service.js';
import { type BreakGlassSession, isOpen, type ReviewOutcome } from '../breakglass/types.js';
import { withCliAuditRecord } from './cli-audit.js';
import { callGateway, gatewayBase, loadConfig, parseJson, refusal, UsageError, readTokenFile, trustedCa } from './gateway-client.js';

export interface BreakGlassCliIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
  /** Tests inject the clock. */
  readonly now?: () => Date;
}

export const USAGE = `usage:
  phi-gateway break-glass list [--unreviewed] [--json] [--config F]
      Sessions with reason, actor, patient, start, expiry and review state (--json: one per line),
      from the session store the gateway uses (Redis when the audit sink is Redis, else the
      break-glass directory beside the audit directory). The listing is itself recorded in the
      audit trail (kind audit-export); nothing is shown when that record cannot be written.
  phi-gateway break-glass review ID --token-file F --outcome justified|unjustified [--note T]
                                [--gateway URL] [--ca F] [--config F]
      Sends the review to the running gateway (POST /break-glass/sessions/ID/review, purpose
      HCOMPL), which verifies the access token in F (or PHI_GATEWAY_TOKEN_FILE), requires a role
      with the break-glass-review capability, refuses the session's own actor, and audits and stores
      the review as for any HTTP review. This machine's config decides nothing but where the gateway
      is: --gateway URL (e.g. https://fhir.example-hospital.org), else PHI_GATEWAY_URL, else the
      config's publicBaseUrl without /fhir. TLS is verified; --ca F adds a private CA (PEM). The
      token is sent over http only to a loopback address. --reviewer is refused: a name typed on
      the command line proves nothing.

  --config F, else PHI_GATEWAY_CONFIG, else config/gateway.yaml. Exit 0 done, 1 refused or failed
  (the gateway's answer, or "gateway unreachable"), 2 usage.
`;

function reviewState(s: BreakGlassSession): string {
  const last = s.reviews.at(-1);
  return last ? `${last.outcome} by ${last.reviewer.sub}${s.reviews.length > 1 ? ` (+${s.reviews.length - 1})` : ''}` : 'UNREVIEWED';
}

/** One line per field value: tabs and newlines in a reason must not break the table. */
function cell(v: string): string {
  return v.replace(/[\t\r\n]+/g, ' ');
}

export async function run(argv: string[], io: BreakGlassCliIo): Promise<number> {
  const args = argv[0] === 'break-glass' ? argv.slice(1) : argv;
  const [verb, ...rest] = args;
  try {
    if (verb === 'list') return await list(rest, io);
    if (verb === 'review') return await review(rest, io);
    if (verb === '--help' || verb === '-h') {
      io.stdout.write(USAGE);
      return 0;
    }
    throw new UsageError(verb ? `unknown break-glass command "${verb}"` : 'missing command');
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.stderr.write(`phi-gateway break-glass: ${(e as Error).message}\n\n${USAGE}`);
      return 2;
    }
    io.stderr.write(`phi-gateway break-glass: ${(e as Error).message.split('\n')[0]}\n`);
    return 1;
  }
}

async function list(argv: string[], io: BreakGlassCliIo): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { unreviewed: { type: 'boolean' }, json: { type: 'boolean' }, config: { type: 'string' } }, strict: true });
  const config = await loadConfig(values.config, io.env);
  // Reasons and patient ids: reading them is recorded in the trail, as the HTTP queue's reads are,
  // and nothing is printed unless that record was written.
  const { value: sessions } = await withCliAuditRecord(config.audit, { command: 'break-glass list', details: { unreviewed: values.unreviewed === true } }, io, async () => {
    const { store } = await openSessionStore(config);
    try {
      let found = await store.list();
      if (values.unreviewed) found = found.filter((s) => s.reviews.length === 0);
      return { value: found, patients: found.map((s) => s.patient), details: { count: found.length, sessions: found.map((s) => s.id) } };
    } finally {
      await store.close();
    }
  });
  const now = (io.now ?? (() => new Date()))();
  if (values.json) {
    for (const s of sessions) io.stdout.write(`${JSON.stringify({ ...s, open: isOpen(s, now) })}\n`);
    return 0;
  }
  io.stdout.write(['SESSION', 'ACTOR', 'PATIENT', 'STARTED', 'EXPIRES', 'STATE', 'REVIEW', 'REASON'].join('\t') + '\n');
  for (const s of sessions) {
    const state = isOpen(s, now) ? 'open' : 'expired';
    io.stdout.write(`${[s.id, s.actor.sub, s.patient, s.startedAt, s.expiresAt, state, reviewState(s), s.reason].map(cell).join('\t')}\n`);
  }
  io.stderr.write(`${sessions.length} session(s)\n`);
  return 0;
}

const REVIEW_PURPOSE = 'HCOMPL';
/** How long the gateway gets to answer (it audits before it answers). */
const REVIEW_TIMEOUT_MS = 30_000;
/** A session view is a few KB; anything far larger is not the gateway's answer. */
const MAX_ANSWER_BYTES = 1 << 20;

async function review(argv: string[], io: BreakGlassCliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      'token-file': { type: 'string' },
      reviewer: { type: 'string' },
      outcome: { type: 'string' },
      note: { type: 'string' },
      gateway: { type: 'string' },
      ca: { type: 'string' },
      config: { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  });
  // A name typed on the command line proves nothing: separation of duties would be self-declared.
  if (values.reviewer !== undefined) {
    throw new UsageError(
      '--reviewer is no longer accepted: the reviewer is the subject of the access token the gateway verifies. Pass --token-file F (or set PHI_GATEWAY_TOKEN_FILE), or review over HTTP: POST /break-glass/sessions/ID/review with X-Purpose-Of-Use: HCOMPL',
    );
  }
  if (positionals.length !== 1) throw new UsageError('exactly one session ID is required');
  const id = positionals[0];
  const tokenFile = values['token-file']?.trim() || io.env.PHI_GATEWAY_TOKEN_FILE?.trim();
  if (!tokenFile) throw new UsageError('--token-file F (or PHI_GATEWAY_TOKEN_FILE) is required: the reviewer is who the access token in F names');
  const outcome = values.outcome as ReviewOutcome | undefined;
  if (outcome === undefined || !REVIEW_OUTCOMES.includes(outcome)) throw new UsageError('--outcome must be justified or unjustified');
  if (values.note !== undefined && values.note.length > MAX_NOTE_LENGTH) throw new UsageError(`--note is limited to ${MAX_NOTE_LENGTH} characters`);
  const base = await gatewayBase(values.gateway, values.config, io.env);
  const ca = trustedCa(values.ca);
  let token: string;
  try {
    token = readTokenFile(tokenFile);
  } catch (e) {
    io.stderr.write(`phi-gateway break-glass: ${(e as Error).message}\n`);
    return 1;
  }

  const url = new URL(`${base}/break-glass/sessions/${encodeURIComponent(id)}/review`);
  const body = JSON.stringify(values.note === undefined ? { outcome } : { outcome, note: values.note });
  let answer: { status: number; body: string; challenge: string | undefined };
  try {
    answer = await post(url, body, token, ca);
  } catch (e) {
    const code = (e as { code?: string }).code ?? 'error';
    const tls = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code) ? ': its TLS certificate is not trusted (a private CA: --ca F)' : '';
    io.stderr.write(`phi-gateway break-glass: gateway unreachable at ${base} (${code})${tls}; nothing was recorded\n`);
    return 1;
  }
  const parsed = parseJson(answer.body);
  if (answer.status >= 200 && answer.status < 300) {
    const last = (parsed as { reviews?: { outcome?: unknown; reviewer?: { sub?: unknown } }[] } | undefined)?.reviews?.at(-1);
    if (typeof last?.outcome !== 'string' || typeof last.reviewer?.sub !== 'string') {
      io.stderr.write(`phi-gateway break-glass: ${base} answered HTTP ${answer.status} without a session: is it the gateway?\n`);
      return 1;
    }
    io.stdout.write(`session ${id}: ${last.outcome} by ${last.reviewer.sub}\n`);
    return 0;
  }
  io.stderr.write(`phi-gateway break-glass: refused by the gateway: ${refusal(answer.status, parsed, answer.challenge, reviewHint)}\n`);
  return 1;
}

/**
 * Where the gateway's proxy port is: --gateway, PHI_GATEWAY_URL, else the config's public base URL
 * without its /fhir path. A bearer token goes over http only to this machine.
 */
function post(url: URL, body: string, token: string, ca: string[] | undefined) {
  return callGateway(url, 'POST', body, { authorization: `Bearer ${token}`, 'x-purpose-of-use': REVIEW_PURPOSE }, { ca, timeoutMs: REVIEW_TIMEOUT_MS, maxAnswerBytes: MAX_ANSWER_BYTES });
}

/** What a refusal of the review route usually means. */
function reviewHint(status: number): string | undefined {
  return status === 403
    ? `the token's subject may not review this session (a role with capability break-glass-review for ${REVIEW_PURPOSE} is needed, and nobody reviews their own session)`
    : status === 404
      ? 'no such break-glass session (or break-glass is not enabled on that gateway)'
      : status === 409
        ? 'the session cannot be reviewed in its current state'
        : undefined;
}
