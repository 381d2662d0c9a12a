/**
 * `phi-gateway break-glass list [--unreviewed] [--json] [--config F]`
 * `phi-gateway break-glass review ID --reviewer SUB --outcome justified|unjustified [--note T] [--config F]`
 *
 * Reads the same session store as the gateway (Redis when the audit sink is Redis, else the
 * embedded `break-glass/` directory beside the audit directory). A review is written to the audit
 * trail first (kind `break-glass-review`), then to the session; the reviewer may not be the actor.
 * Exit codes: 0 done, 1 refused or failed, 2 usage error.
 */
import { randomUUID } from 'node:crypto';
import { hostname, userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import type { AuditRecord } from '../audit/record.js';
import { openSessionStore } from '../breakglass/index.js';
import { MAX_NOTE_LENGTH, REVIEW_OUTCOMES, reviewRefusal } from '../breakglass/service.js';
import { type BreakGlassSession, isOpen, type ReviewOutcome } from '../breakglass/types.js';
import type { GatewayConfig } from '../config/types.js';

export interface BreakGlassCliIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
  /** Tests inject the clock. */
  readonly now?: () => Date;
}

const USAGE = `usage:
  phi-gateway break-glass list [--unreviewed] [--json] [--config F]
  phi-gateway break-glass review ID --reviewer SUB --outcome justified|unjustified [--note T] [--config F]
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
    options: { reviewer: { type: 'string' }, outcome: { type: 'string' }, note: { type: 'string' }, config: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1) throw new UsageError('exactly one session ID is required');
  const id = positionals[0];
  const reviewer = values.reviewer?.trim();
  if (!reviewer) throw new UsageError('--reviewer SUB is required');
  const outcome = values.outcome as ReviewOutcome | undefined;
  if (outcome === undefined || !REVIEW_OUTCOMES.includes(outcome)) throw new UsageError('--outcome must be justified or unjustified');
  if (values.note !== undefined && values.note.length > MAX_NOTE_LENGTH) throw new UsageError(`--note is limited to ${MAX_NOTE_LENGTH} characters`);
  const now = (io.now ?? (() => new Date()))();

  const config = await loadConfig(values.config, io.env);
  const { store } = await openSessionStore(config);
  try {
    const session = await store.get(id);
    if (!session) {
      io.stderr.write(`phi-gateway break-glass: no session ${JSON.stringify(id.slice(0, 80))}\n`);
      return 1;
    }
    if (reviewRefusal(session, reviewer)) {
      io.stderr.write('phi-gateway break-glass: refused: the reviewer is the actor of this session (separation of duties)\n');
      return 1;
    }
    const { loadPolicy } = await import('../config/load.js');
    const { createAuditSink } = await import('../audit/index.js');
    const policyVersion = loadPolicy(config.policyFile, { pseudonymKey: config.pseudonymKey }).policy.version;
    const auditId = randomUUID();
    const record: AuditRecord = {
      id: auditId,
      time: now.toISOString(),
      kind: 'break-glass-review',
      // The CLI runs with OS access to the store; who ran it is recorded beside the stated reviewer.
      actor: { iss: undefined, sub: reviewer, roles: [] },
      purpose: 'HCOMPL',
      client: { address: '', userAgent: `phi-gateway-cli (${userInfo().username}@${hostname()})` },
      request: { method: 'CLI', path: `break-glass review ${id}`, interaction: undefined, resourceType: undefined },
      decision: 'allow',
      rule: `cli: break-glass review ${outcome}`,
      disclosed: { resources: [], patients: [session.patient], elementsRemoved: 0, resourcesWithheld: 0 },
      status: 200,
      upstreamStatus: undefined,
      durations: { totalMs: 0 },
      policyVersion,
      details: { action: 'review', via: 'cli', session: id, outcome, note: values.note, sessionActor: session.actor.sub, patient: session.patient },
    };
    const sink = await createAuditSink(config.audit);
    try {
      await sink.write(record);
    } finally {
      await sink.close();
    }
    const updated = await store.addReview(id, { reviewer: { iss: undefined, sub: reviewer }, outcome, note: values.note, at: now.toISOString(), via: 'cli', auditId });
    if (!updated) throw new Error('session disappeared while reviewing');
    io.stdout.write(`session ${id}: ${reviewState(updated)}\n`);
    return 0;
  } finally {
    await store.close();
  }
}
