/**
 * `phi-gateway access request|approve|deny|revoke|list ... --token-file F --purpose P`
 *
 * A client of the running gateway's access-request routes (/access-requests on the proxy port),
 * as `break-glass review` is of the review route: the gateway verifies the access token, judges the
 * roles and separation of duties, audits every call (kind `access-request`, the OS account that ran
 * the CLI as the user agent) and stores the change, exactly as for any HTTP call. The CLI verifies
 * and stores nothing itself, so a gateway.yaml or policy written on this machine (another JWKS, a
 * role made an approver) cannot make it accept a requester or an approver.
 * Exit codes: 0 done, 1 refused or failed, 2 usage error.
 */
import { parseArgs } from 'node:util';
import { callGateway, type GatewayAnswer, gatewayBase, parseJson, refusal, UsageError, readTokenFile, trustedCa } from './gateway-client.js';

export interface AccessCliIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
}

export const USAGE = `usage:
  phi-gateway access request --data-set D --patient ID [--patient ID...] [--encounter ID...]
                             [--type T...] [--from DATE] [--to DATE] --justification T --minutes N
                             [--role R] --token-file F --purpose P [connection] [--format table|json]
      Asks for a requestable data set (the policy's accessRequests.dataSets) for the named patients:
      optionally only some encounters, some of its resource types, records dated in a period. The
      justification is checked as a break-glass reason is; the minutes may not exceed the data
      set's cap. --role picks the requesting role when the token holds several (X-Role).
  phi-gateway access approve ID [--minutes N] [--patient ID...] [--encounter ID...] [--type T...]
                             [--from DATE] [--to DATE] [--note T] --token-file F --purpose P
                             [connection] [--format table|json]
      Approves, as asked or narrower (each option at most what was asked). The approver holds an
      approver role for the data set and is never the requester.
  phi-gateway access deny ID --note T --token-file F --purpose P [connection] [--format table|json]
  phi-gateway access revoke ID [--note T] --token-file F --purpose P [connection] [--format table|json]
      Ends an approved grant now (an approver of its data set, or the requester giving it up).
  phi-gateway access list [--status pending|approved|denied|active] --token-file F --purpose P
                             [connection] [--format table|json]
      The token's own requests and those it may decide (--format json: one per line).

  Every call goes to the running gateway, which verifies the access token in F (or
  PHI_GATEWAY_TOKEN_FILE) and the purpose P (X-Purpose-Of-Use), and audits and stores it as for
  any HTTP call (POST/GET /access-requests...). This machine's config decides nothing but where the
  gateway is.
  connection: --gateway URL (e.g. https://fhir.example-hospital.org), else PHI_GATEWAY_URL, else
  the config's publicBaseUrl without /fhir (--config F, else PHI_GATEWAY_CONFIG, else
  config/gateway.yaml). TLS is verified; --ca F adds a private CA (PEM). The token is sent over
  http only to a loopback address.
  Exit 0 done, 1 refused or failed (the gateway's answer, or "gateway unreachable"), 2 usage.
`;


/** How long the gateway gets to answer (it audits before it answers). */
const CALL_TIMEOUT_MS = 30_000;
/** A listing of a few hundred requests is well under this; anything far larger is not the gateway's answer. */
const MAX_ANSWER_BYTES = 16 << 20;
/** As the gateway's own limit on a note (longer is refused there too). */
const MAX_NOTE_LENGTH = 2000;
const STATUSES = ['pending', 'approved', 'denied', 'active'];

const CONNECTION = {
  'token-file': { type: 'string' },
  purpose: { type: 'string' },
  gateway: { type: 'string' },
  ca: { type: 'string' },
  config: { type: 'string' },
  format: { type: 'string' },
} as const;

const SCOPE = {
  patient: { type: 'string', multiple: true },
  encounter: { type: 'string', multiple: true },
  type: { type: 'string', multiple: true },
  from: { type: 'string' },
  to: { type: 'string' },
  minutes: { type: 'string' },
} as const;

/** A request as the gateway shows it (only what the CLI prints is read). */
interface RequestView {
  readonly id: string;
  readonly requester: { readonly sub: string };
  readonly role: string;
  readonly dataSet: string;
  readonly purpose: string;
  readonly scope: { readonly patients: readonly string[] };
  readonly justification: string;
  readonly minutes: number;
  readonly requestedAt: string;
  readonly status: string;
  readonly decision?: { readonly by: { readonly sub: string }; readonly outcome: string; readonly narrowed: boolean } | undefined;
  readonly granted?: { readonly scope: { readonly patients: readonly string[] }; readonly expiresAt: string } | undefined;
  readonly revoked?: { readonly by: { readonly sub: string }; readonly at: string } | undefined;
  readonly active: boolean;
  readonly uses: number;
  readonly url: string;
}

interface Connection {
  readonly base: string;
  readonly token: string;
  readonly purpose: string;
  readonly ca: string[] | undefined;
  readonly format: 'table' | 'json';
}

export async function run(argv: string[], io: AccessCliIo): Promise<number> {
  const args = argv[0] === 'access' ? argv.slice(1) : argv;
  const [verb, ...rest] = args;
  try {
    if (verb === 'request') return await request(rest, io);
    if (verb === 'approve' || verb === 'deny' || verb === 'revoke') return await decide(verb, rest, io);
    if (verb === 'list') return await list(rest, io);
    if (verb === '--help' || verb === '-h') {
      io.stdout.write(USAGE);
      return 0;
    }
    throw new UsageError(verb ? `unknown access command "${verb}"` : 'missing command');
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.stderr.write(`phi-gateway access: ${(e as Error).message}\n\n${USAGE}`);
      return 2;
    }
    io.stderr.write(`phi-gateway access: ${(e as Error).message.split('\n')[0]}\n`);
    return 1;
  }
}

async function request(argv: string[], io: AccessCliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { ...CONNECTION, ...SCOPE, 'data-set': { type: 'string' }, justification: { type: 'string' }, role: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length > 0) throw new UsageError('access request takes no positional argument');
  if (!values['data-set']) throw new UsageError('--data-set D is required');
  if (!values.patient?.length) throw new UsageError('--patient ID is required (repeat it for several patients)');
  if (values.justification === undefined) throw new UsageError('--justification T is required');
  if (values.minutes === undefined) throw new UsageError('--minutes N is required');
  const body = {
    dataSet: values['data-set'],
    patients: values.patient,
    ...scopeOf(values),
    justification: values.justification,
    minutes: minutesOf(values.minutes),
  };
  const conn = await connect(values, io);
  const headers: Record<string, string> = values.role === undefined ? {} : { 'x-role': values.role };
  return show(io, conn, await call(io, conn, 'POST', '/access-requests', body, headers), (v) => `request ${v.id}: ${v.status}, ${v.dataSet} for ${v.scope.patients.join(',')} (${v.url})`);
}

async function decide(verb: 'approve' | 'deny' | 'revoke', argv: string[], io: AccessCliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { ...CONNECTION, ...(verb === 'approve' ? SCOPE : {}), note: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1) throw new UsageError('exactly one request ID is required');
  if (verb === 'deny' && values.note === undefined) throw new UsageError('--note T is required: say why the request is denied');
  if (values.note !== undefined && values.note.length > MAX_NOTE_LENGTH) throw new UsageError(`--note is limited to ${MAX_NOTE_LENGTH} characters`);
  const v = values as typeof values & { patient?: string[]; encounter?: string[]; type?: string[]; from?: string; to?: string; minutes?: string };
  const body = {
    ...(v.minutes === undefined ? {} : { minutes: minutesOf(v.minutes) }),
    ...(v.patient === undefined ? {} : { patients: v.patient }),
    ...scopeOf(v),
    ...(values.note === undefined ? {} : { note: values.note }),
  };
  const conn = await connect(values, io);
  const answer = await call(io, conn, 'POST', `/access-requests/${encodeURIComponent(positionals[0])}/${verb}`, body);
  return show(io, conn, answer, (r) =>
    verb === 'revoke'
      ? `request ${r.id}: revoked by ${r.revoked?.by.sub ?? '?'}`
      : `request ${r.id}: ${r.status} by ${r.decision?.by.sub ?? '?'}${r.decision?.narrowed ? ' (narrowed)' : ''}${r.granted ? `, until ${r.granted.expiresAt}` : ''}`,
  );
}

async function list(argv: string[], io: AccessCliIo): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { ...CONNECTION, status: { type: 'string' } }, allowPositionals: true, strict: true });
  if (positionals.length > 0) throw new UsageError('access list takes no positional argument');
  if (values.status !== undefined && !STATUSES.includes(values.status)) throw new UsageError(`--status must be one of ${STATUSES.join(', ')}`);
  const conn = await connect(values, io);
  const answer = await call(io, conn, 'GET', `/access-requests${values.status === undefined ? '' : `?status=${values.status}`}`);
  if (answer === undefined) return 1;
  const requests = (answer as { requests?: unknown }).requests;
  if (!Array.isArray(requests) || !requests.every(isView)) {
    io.stderr.write(`phi-gateway access: ${conn.base} answered without a list of requests: is it the gateway?\n`);
    return 1;
  }
  if (conn.format === 'json') {
    for (const r of requests) io.stdout.write(`${JSON.stringify(r)}\n`);
    return 0;
  }
  io.stdout.write(`${['REQUEST', 'REQUESTER', 'ROLE', 'DATA SET', 'PURPOSE', 'PATIENTS', 'REQUESTED', 'STATE', 'DECIDED BY', 'EXPIRES', 'USES', 'JUSTIFICATION'].join('\t')}\n`);
  for (const r of requests) {
    const patients = (r.granted?.scope ?? r.scope).patients.join(',');
    const row = [r.id, r.requester.sub, r.role, r.dataSet, r.purpose, patients, r.requestedAt, state(r), r.decision?.by.sub ?? '', r.granted?.expiresAt ?? '', String(r.uses), r.justification];
    io.stdout.write(`${row.map(cell).join('\t')}\n`);
  }
  io.stderr.write(`${requests.length} request(s)\n`);
  return 0;
}

/** pending, denied, active, revoked or expired. */
function state(r: RequestView): string {
  if (r.status !== 'approved') return r.status;
  if (r.active) return 'active';
  return r.revoked ? 'revoked' : 'expired';
}

/** One line per field value: tabs and newlines in a justification must not break the table. */
function cell(v: string): string {
  return v.replace(/[\t\r\n]+/g, ' ');
}

function minutesOf(raw: string): number {
  if (!/^[0-9]{1,7}$/.test(raw) || Number(raw) < 1) throw new UsageError('--minutes must be a whole number of minutes, at least 1');
  return Number(raw);
}

/** The optional scope members the options name (the gateway validates them). */
function scopeOf(v: { encounter?: string[] | undefined; type?: string[] | undefined; from?: string | undefined; to?: string | undefined }) {
  return {
    ...(v.encounter === undefined ? {} : { encounters: v.encounter }),
    ...(v.type === undefined ? {} : { types: v.type }),
    ...(v.from === undefined && v.to === undefined ? {} : { period: { ...(v.from === undefined ? {} : { start: v.from }), ...(v.to === undefined ? {} : { end: v.to }) } }),
  };
}

function isView(x: unknown): x is RequestView {
  const r = x as Partial<RequestView> | null;
  return typeof r === 'object' && r !== null && typeof r.id === 'string' && typeof r.status === 'string' && typeof r.requester?.sub === 'string' && Array.isArray(r.scope?.patients);
}

function show(io: AccessCliIo, conn: Connection, answer: unknown, line: (r: RequestView) => string): number {
  if (answer === undefined) return 1;
  if (!isView(answer)) {
    io.stderr.write(`phi-gateway access: ${conn.base} answered without an access request: is it the gateway?\n`);
    return 1;
  }
  io.stdout.write(conn.format === 'json' ? `${JSON.stringify(answer)}\n` : `${cell(line(answer))}\n`);
  return 0;
}

/** The options every verb shares, checked before anything is sent. */
async function connect(
  values: { 'token-file'?: string | undefined; purpose?: string | undefined; gateway?: string | undefined; ca?: string | undefined; config?: string | undefined; format?: string | undefined },
  io: AccessCliIo,
): Promise<Connection> {
  const format = values.format ?? 'table';
  if (format !== 'table' && format !== 'json') throw new UsageError('--format must be table or json');
  const purpose = values.purpose?.trim();
  if (!purpose) throw new UsageError('--purpose P is required (sent as X-Purpose-Of-Use)');
  const tokenFile = values['token-file']?.trim() || io.env.PHI_GATEWAY_TOKEN_FILE?.trim();
  if (!tokenFile) throw new UsageError('--token-file F (or PHI_GATEWAY_TOKEN_FILE) is required: the caller is who the access token in F names');
  const base = await gatewayBase(values.gateway, values.config, io.env);
  const ca = trustedCa(values.ca);
  const token = readTokenFile(tokenFile);
  return { base, token, purpose, ca, format };
}

/**
 * Where the gateway's proxy port is: --gateway, PHI_GATEWAY_URL, else the config's public base URL
 * without its /fhir path. A bearer token goes over http only to this machine.
 */
/** One call to the gateway; its parsed 2xx answer, or undefined once the refusal or failure is told on stderr. */
async function call(io: AccessCliIo, conn: Connection, method: 'GET' | 'POST', path: string, body?: unknown, extra: Record<string, string> = {}): Promise<unknown> {
  let answer: GatewayAnswer;
  try {
    answer = await callGateway(
      new URL(`${conn.base}${path}`),
      method,
      body === undefined ? undefined : JSON.stringify(body),
      { ...extra, authorization: `Bearer ${conn.token}`, 'x-purpose-of-use': conn.purpose },
      { ca: conn.ca, timeoutMs: CALL_TIMEOUT_MS, maxAnswerBytes: MAX_ANSWER_BYTES },
    );
  } catch (e) {
    const code = (e as { code?: string }).code ?? 'error';
    const tls = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code) ? ': its TLS certificate is not trusted (a private CA: --ca F)' : '';
    io.stderr.write(`phi-gateway access: gateway unreachable at ${conn.base} (${code})${tls}${method === 'POST' ? '; nothing was recorded' : ''}\n`);
    return undefined;
  }
  const parsed = parseJson(answer.body);
  if (answer.status >= 200 && answer.status < 300) {
    if (parsed === undefined) io.stderr.write(`phi-gateway access: ${conn.base} answered HTTP ${answer.status} without JSON: is it the gateway?\n`);
    return parsed;
  }
  io.stderr.write(`phi-gateway access: refused by the gateway: ${refusal(answer.status, parsed, answer.challenge, accessHint)}\n`);
  return undefined;
}

/** What a refusal of the access-request routes usually means. */
function accessHint(status: number, code: string | undefined): string | undefined {
  return status === 404 && code === 'route-not-found' ? 'access requests are not enabled on that gateway' : undefined;
}
