/**
 * `phi-gateway policy diff --candidate F [--from T] [--to T] [--source S] [--config F] [--policy F]
 *  [--format table|csv]`
 *
 * Replays the recorded requests of the window through the running policy (--policy, else the
 * gateway config's) and the candidate, and lists per role what would change. Exit codes: 0 no
 * change, 3 changes found (or requests the candidate's care-relationship requirement or consent
 * section cannot be replayed on), 1 failure (an invalid candidate: every problem as file:line:col), 2 usage.
 */
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { isChainRecord } from '../audit/chain.js';
import { parseTimeBound } from '../audit/export.js';
import { openAuditSource } from '../audit/index.js';
import type { AuditConfig } from '../config/types.js';
import { PolicyDiff } from '../report/policy-diff.js';
import { toCsv, toText } from '../report/render.js';
import { namedTrail, withCliAuditRecord } from './cli-audit.js';

export interface PolicyCliIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
}

export const USAGE = `usage:
  phi-gateway policy diff --candidate F [--from T] [--to T] [--format table|csv] [--out F]
                          [--source S] [--config F] [--policy F]

  Replays recorded requests through the running policy (--policy F, else PHI_GATEWAY_POLICY, else
  the gateway config's) and the candidate: newly allowed, newly denied, elements newly shown or
  hidden, per role. Care relationships are judged from each record's relationship evidence: would
  be refused (or narrowed) for no relationship, would be allowed once a requirement is dropped, and,
  apart, requests the candidate requires a relationship for that the record holds no lookup of
  ("not looked up": put the requirement in force with required: false first, then diff).
  Patients' consents are judged from each record's consent evidence: what they withheld would be
  released by a candidate without a consent section (or exempting the purpose), what break-glass
  overrode would be withheld by a candidate whose break-glass no longer overrides them, and,
  apart, requests that reached patient data where the candidate applies consents the running
  policy did not, or otherwise ("not replayable for consent").
  An invalid candidate is reported problem by problem as file:line:col.
  S: file:DIR or redis://host:port[/db][?stream=NAME]; default PHI_GATEWAY_AUDIT, then the audit
  section of the gateway config (--config F, else PHI_GATEWAY_CONFIG, else config/gateway.yaml).
  T: an ISO 8601 time; --from inclusive, --to exclusive. The replay is itself recorded in the trail
  it read (kind audit-export); when that record cannot be written, nothing is shown (exit 1).
  Exit 0: no change; 3: changes (or requests not looked up, or not replayable for consent); 1: error; 2: usage.
`;

class UsageError extends Error {}

export async function run(argv: string[], io: PolicyCliIo): Promise<number> {
  const args = argv[0] === 'policy' ? argv.slice(1) : argv;
  const [verb, ...rest] = args;
  try {
    if (verb === 'diff') return await runDiff(rest, io);
    if (verb === '--help' || verb === '-h') {
      io.stdout.write(USAGE);
      return 0;
    }
    throw new UsageError(verb ? `unknown policy verb "${verb}"` : 'missing policy verb');
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.stderr.write(`phi-gateway policy: ${(e as Error).message}\n\n${USAGE}`);
      return 2;
    }
    io.stderr.write(`phi-gateway policy: ${(e as Error).message}\n`);
    return 1;
  }
}

async function runDiff(argv: string[], io: PolicyCliIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      candidate: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      format: { type: 'string', default: 'table' },
      out: { type: 'string' },
      source: { type: 'string' },
      config: { type: 'string' },
      policy: { type: 'string' },
    },
  });
  if (!values.candidate) throw new UsageError('--candidate is required');
  if (values.format !== 'table' && values.format !== 'csv') throw new UsageError('--format must be table or csv');
  let from: number | undefined;
  let to: number | undefined;
  try {
    if (values.from !== undefined) from = parseTimeBound(values.from, '--from');
    if (values.to !== undefined) to = parseTimeBound(values.to, '--to');
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { readPolicy, loadPolicy } = await import('../config/load.js');
  const candidate = readPolicy(values.candidate);
  if (!candidate.loaded) {
    io.stderr.write(`${candidate.problems.join('\n')}\n`);
    return 1;
  }
  const source = await namedTrail(values.source, io.env);
  let policyFile = values.policy ?? io.env.PHI_GATEWAY_POLICY;
  let trail: string | AuditConfig | undefined = source;
  if (trail === undefined || policyFile === undefined) {
    const { resolveConfigPath } = await import('../config/env.js');
    const { loadGatewayConfig } = await import('../config/gateway.js');
    const config = loadGatewayConfig(resolveConfigPath(values.config, io.env), io.env);
    trail ??= config.audit;
    policyFile ??= config.policyFile;
  }
  const current = loadPolicy(policyFile).policy;
  const cand = candidate.loaded;
  // The replay reads who asked for what: itself recorded (cli-audit.ts); nothing is released unless it was.
  const { value } = await withCliAuditRecord(
    trail,
    {
      command: 'policy diff',
      details: { from: values.from, to: values.to, format: values.format, out: values.out ? resolve(values.out) : 'stdout', candidate: resolve(cand.file), candidateVersion: cand.policy.version },
      policyVersion: current.version,
    },
    io,
    async () => {
      const diff = new PolicyDiff(current, cand.policy);
      const audit = openAuditSource(trail);
      let replayed = 0;
      try {
        for await (const item of audit) {
          if (!('record' in item) || isChainRecord(item.record)) continue;
          const t = Date.parse(item.record.time);
          if ((from !== undefined && !(t >= from)) || (to !== undefined && !(t < to))) continue;
          diff.add(item.record);
          replayed++;
        }
      } finally {
        await audit.close();
      }
      const report = {
        kind: 'usage' as const,
        title: `Policy diff: ${current.version} (running) -> ${cand.policy.version} (${cand.file})`,
        from: values.from,
        to: values.to,
        tables: diff.tables(),
        charts: { accessOverTime: [], denialsByRole: [], reviewAges: [] },
      };
      const text = values.format === 'csv' ? toCsv(report) : toText(report);
      return {
        value: { text, changed: diff.changed + diff.notLookedUp + diff.notReplayableConsent },
        details: { replayed, changed: diff.changed, notLookedUp: diff.notLookedUp || undefined, notReplayableConsent: diff.notReplayableConsent || undefined },
      };
    },
  );
  if (values.out) await writeFile(values.out, value.text, { mode: 0o600 });
  else io.stdout.write(value.text);
  return value.changed > 0 ? 3 : 0;
}
