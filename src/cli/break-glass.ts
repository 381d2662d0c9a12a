/**
 * `phi-gateway break-glass list [--unreviewed] [--json] [--config F]`
 * `phi-gateway break-glass review ID --token-file F --outcome justified|unjustified [--note T] [--config F]`
 *
 * Reads the same session store as the gateway (Redis when the audit sink is Redis, else the
 * embedded `break-glass/` directory beside the audit directory). A review is written to the audit
 * trail first (kind `break-glass-review`), then to the session; the reviewer is the subject of a
 * verified access token holding the role the HTTP review route requires, and may not be the actor.
 * Exit codes: 0 done, 1 refused or failed, 2 usage error.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import type { AuditRecord } from '../audit/record.js';
import { openSessionStore } from '../breakglass/index.js';
import { MAX_NOTE_LENGTH, REVIEW_OUTCOMES, reviewRefusal } from '../breakglass/service.js';
import { type BreakGlassSession, isOpen, type ReviewOutcome } from '../breakglass/types.js';
import type { Principal } from '../auth/principal.js';
import type { GatewayConfig } from '../config/types.js';
import type { CompiledPolicy } from '../policy/plan.js';
import { isCoveredBy } from '../policy/purpose.js';

export interface BreakGlassCliIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
  /** Tests inject the clock. */
  readonly now?: () => Date;
}

export const USAGE = `usage:
  phi-gateway break-glass list [--unreviewed] [--json] [--config F]
      Sessions with reason, actor, patient, start, expiry and review state (--json: one per line).
  phi-gateway break-glass review ID --token-file F --outcome justified|unjustified [--note T] [--config F]
      Records a retrospective review, written to the audit trail first. The reviewer is the subject
      of the access token in F (or PHI_GATEWAY_TOKEN_FILE), verified with the gateway config's auth
      section (issuer, audience, JWKS) as the HTTP review route does, and needs the same role; the
      reviewer may not be the session's actor. --reviewer is refused: a name typed on the command
      line proves nothing.

  Reads the session store the gateway uses (Redis when the audit sink is Redis, else the
  break-glass directory beside the audit directory). --config F, else PHI_GATEWAY_CONFIG, else
  config/gateway.yaml. Exit 0 done, 1 refused or failed, 2 usage.
`;

class UsageError extends Error {}

async function loadConfig(flag: string | undefined, env: NodeJS.ProcessEnv): Promise<GatewayConfig> {
  const { resolveConfigPath } = await import('../config/env.js');
  const { loadGatewayConfig } = await import('../config/gateway.js');
  return loadGatewayConfig(resolveConfigPath(flag, env), env);
}

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
  const { store } = await openSessionStore(config);
  try {
    let sessions = await store.list();
    if (values.unreviewed) sessions = sessions.filter((s) => s.reviews.length === 0);
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
  } finally {
    await store.close();
  }
}

async function review(argv: string[], io: BreakGlassCliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      'token-file': { type: 'string' },
      reviewer: { type: 'string' },
      outcome: { type: 'string' },
      note: { type: 'string' },
      config: { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  });
  // A name typed on the command line proves nothing: separation of duties would be self-declared.
  if (values.reviewer !== undefined) {
    throw new UsageError(
      '--reviewer is no longer accepted: the reviewer is the subject of a verified access token. Pass --token-file F (or set PHI_GATEWAY_TOKEN_FILE), or review over HTTP: POST /break-glass/sessions/ID/review with X-Purpose-Of-Use: HCOMPL',
    );
  }
  if (positionals.length !== 1) throw new UsageError('exactly one session ID is required');
  const id = positionals[0];
  const tokenFile = values['token-file']?.trim() || io.env.PHI_GATEWAY_TOKEN_FILE?.trim();
  if (!tokenFile) throw new UsageError('--token-file F (or PHI_GATEWAY_TOKEN_FILE) is required: the reviewer is who the access token in F names');
  const outcome = values.outcome as ReviewOutcome | undefined;
  if (outcome === undefined || !REVIEW_OUTCOMES.includes(outcome)) throw new UsageError('--outcome must be justified or unjustified');
  if (values.note !== undefined && values.note.length > MAX_NOTE_LENGTH) throw new UsageError(`--note is limited to ${MAX_NOTE_LENGTH} characters`);
  const now = (io.now ?? (() => new Date()))();

  const config = await loadConfig(values.config, io.env);
  const { loadPolicy } = await import('../config/load.js');
  const policy = loadPolicy(config.policyFile, { pseudonymKey: config.pseudonymKey }).policy;
  const who = await reviewerFromToken(tokenFile, config, policy);
  if (!who.ok) {
    io.stderr.write(`phi-gateway break-glass: refused: ${who.message}\n`);
    return 1;
  }
  const { principal, role } = who;
  const { store } = await openSessionStore(config);
  try {
    const session = await store.get(id);
    if (!session) {
      io.stderr.write(`phi-gateway break-glass: no session ${JSON.stringify(id.slice(0, 80))}\n`);
      return 1;
    }
    if (reviewRefusal(session, principal.sub)) {
      io.stderr.write('phi-gateway break-glass: refused: the reviewer is the actor of this session (separation of duties)\n');
      return 1;
    }
    const { createAuditSink } = await import('../audit/index.js');
    const auditId = randomUUID();
    const record: AuditRecord = {
      id: auditId,
      time: now.toISOString(),
      kind: 'break-glass-review',
      // The token's subject, as the HTTP route records it; the OS account that ran the CLI beside it.
      actor: { iss: principal.iss, sub: principal.sub, clientId: principal.clientId, jti: principal.jti, roles: principal.roles },
      purpose: REVIEW_PURPOSE,
      role: role,
      client: { address: '', userAgent: `phi-gateway-cli (${userInfo().username}@${hostname()})` },
      request: { method: 'CLI', path: `break-glass review ${id}`, interaction: undefined, resourceType: undefined },
      decision: 'allow',
      rule: `roles.${role}.capabilities.break-glass-review: cli review ${outcome}`,
      disclosed: { resources: [], patients: [session.patient], elementsRemoved: 0, resourcesWithheld: 0 },
      status: 200,
      upstreamStatus: undefined,
      durations: { totalMs: 0 },
      policyVersion: policy.version,
      details: { action: 'review', via: 'cli', osUser: userInfo().username, host: hostname(), session: id, outcome, note: values.note, sessionActor: session.actor.sub, patient: session.patient },
    };
    const sink = await createAuditSink(config.audit, { env: io.env, cli: true });
    try {
      await sink.write(record);
    } finally {
      await sink.close();
    }
    const updated = await store.addReview(id, { reviewer: { iss: principal.iss, sub: principal.sub }, outcome, note: values.note, at: now.toISOString(), via: 'cli', auditId });
    if (!updated) throw new Error('session disappeared while reviewing');
    io.stdout.write(`session ${id}: ${reviewState(updated)}\n`);
    return 0;
  } finally {
    await store.close();
  }
}

const REVIEW_PURPOSE = 'HCOMPL';

type ReviewerCheck = { ok: true; principal: Principal; role: string } | { ok: false; message: string };

/**
 * The reviewer behind the access token in `file`, held to what the HTTP review route requires
 * (src/server/breakglass-routes.ts): verified with the config's `auth` section (issuer, audience,
 * JWKS, algorithms), any purposes the token carries covering HCOMPL, and a role with capability
 * `break-glass-review` that grants HCOMPL. Messages never hold token bytes or claims.
 */
export async function reviewerFromToken(file: string, config: GatewayConfig, policy: CompiledPolicy): Promise<ReviewerCheck> {
  let token: string;
  try {
    token = readFileSync(file, 'utf8').trim().replace(/^Bearer\s+/i, '');
  } catch (e) {
    return { ok: false, message: `cannot read the token file (${(e as NodeJS.ErrnoException).code ?? 'error'})` };
  }
  if (token === '') return { ok: false, message: 'the token file is empty' };
  const { createTokenVerifier, tokenFailureOf } = await import('../auth/verify.js');
  let principal: Principal;
  try {
    principal = await createTokenVerifier(config.auth).verify(`Bearer ${token}`);
  } catch (e) {
    const why = tokenFailureOf(e);
    return { ok: false, message: `the access token was not accepted${why ? ` (${why})` : ''}: it must be issued by ${config.auth.issuer} for audience ${config.auth.audience}` };
  }
  const tokenPurposes = principal.tokenPurposes;
  if (tokenPurposes !== undefined && !tokenPurposes.some((tp) => isCoveredBy(REVIEW_PURPOSE, tp, policy.purposes))) {
    return { ok: false, message: `the access token's purposes of use do not cover ${REVIEW_PURPOSE}` };
  }
  const role = principal.roles.map((r) => policy.roles.get(r)).find((r) => r?.capabilities.has('break-glass-review') && r.plans.has(REVIEW_PURPOSE));
  if (!role) return { ok: false, message: `${principal.sub} has no role with capability break-glass-review for ${REVIEW_PURPOSE}` };
  return { ok: true, principal, role: role.name };
}
