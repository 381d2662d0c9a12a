#!/usr/bin/env node
/**
 * `phi-gateway <verb>`: one file per verb under src/cli, loaded on demand. Each verb module exports
 * `run` and its `USAGE`; `--help`/`-h` anywhere in a verb's arguments (and `help <verb>`) prints that
 * usage before the verb parses an option or reads a config, so help works on a machine with no
 * gateway.yaml and never fails on an option the verb would refuse.
 */
import { isMainModule } from './main-module.js';

export interface CliIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
}

interface VerbModule {
  readonly run: (argv: string[], io: CliIo) => Promise<number>;
  readonly USAGE: string;
}

export const VERBS: Readonly<Record<string, () => Promise<VerbModule>>> = {
  serve: () => import('./serve.js'),
  demo: () => import('./demo.js'),
  'check-config': () => import('./check-config.js'),
  explain: () => import('./explain.js'),
  audit: () => import('./audit.js'),
  token: () => import('./token.js'),
  seed: () => import('./seed.js'),
  'break-glass': () => import('./break-glass.js'),
  access: () => import('./access.js'),
  report: () => import('./report.js'),
  policy: () => import('./policy.js'),
};

/** Verbs the production image (docker/prune-runtime.mjs) removes. */
const DEMO_VERBS = new Set(['demo', 'token', 'seed']);

export const USAGE = `usage: phi-gateway <verb> [options]
       phi-gateway <verb> --help         options of one verb (or: phi-gateway help <verb>)

  serve [--config F]                 run the gateway (default config/gateway.yaml)
  demo [--config F] [--data DIR]     the embedded demo (sample FHIR server + gateway + demo tokens)
  check-config [--config F]          validate gateway + policy files, every problem as file:line:col
  explain --role R --purpose P [--resource T] [--patient ID] [--config F]
                                     what that role may do and see for that purpose, element by element
                                     (--patient ID: that patient's consent directives and what they do)
  audit export [filters] [--format ndjson|csv|fhir] [--out F]
                                     export audit records (the export is itself audited)
  audit verify [--public-key F] [--allow-unsealed] [--anchor F]
                                     check the audit hash chains and signed checkpoints
  audit keygen --out DIR             create the Ed25519 key pair that signs audit checkpoints
  audit ship [--once]                deliver the audit trail to the SIEM targets of the config (docs/siem.md)
  break-glass list [--unreviewed]    break-glass sessions: reason, actor, patient, expiry, review state
  break-glass review ID --token-file F --outcome justified|unjustified [--note T]
                                     record a retrospective review as the token's verified subject
                                     (the reviewer may not be the actor)
  access request|approve|deny|revoke|list ... --token-file F --purpose P
                                     elevated access on request, through the running gateway:
                                     ask for a data set for named patients, decide (never your
                                     own), revoke, list (see phi-gateway access --help)
  report usage|access|break-glass [--from T] [--to T] [--format table|csv|html] [--out F]
                                     compliance reports from the audit trail
  report breach (--actor SUB | --client ID | --address CIDR)... --from T --to T [--discovered T]
                                     what was released to those actors: patients, states, deadlines
  policy diff --candidate F [--from T] [--to T]
                                     replay recorded requests: what a candidate policy would change
  seed --upstream URL                load the synthetic demo patients into a FHIR server (docker compose)
  token --role R [--sub S] [--purpose P] [--patient ID] [--ttl 1h]
                                     demo only: mint a token with the demo key
`;

/** `--help` or `-h` among the arguments, before a `--` that ends the options. */
export function wantsHelp(args: readonly string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}

export async function main(argv: string[], io: CliIo): Promise<number> {
  const [verb, ...rest] = argv;
  if (verb === undefined) {
    io.stderr.write(USAGE);
    return 1;
  }
  if (verb === '--help' || verb === '-h') {
    io.stdout.write(USAGE);
    return 0;
  }
  if (verb === 'help') {
    const topic = rest[0];
    if (topic === undefined || topic === '--help' || topic === '-h') {
      io.stdout.write(USAGE);
      return 0;
    }
    const load = Object.hasOwn(VERBS, topic) ? VERBS[topic] : undefined;
    if (!load) {
      io.stderr.write(`phi-gateway: no verb "${topic}"\n\n${USAGE}`);
      return 1;
    }
    io.stdout.write((await load()).USAGE);
    return 0;
  }
  // Own properties only: `phi-gateway constructor` is an unknown verb, not Object's constructor.
  const load = Object.hasOwn(VERBS, verb) ? VERBS[verb] : undefined;
  if (!load) {
    io.stderr.write(`phi-gateway: unknown verb "${verb}"\n\n${USAGE}`);
    return 1;
  }
  let mod: VerbModule;
  try {
    mod = await load();
  } catch (e) {
    // The production image leaves the demo verbs (demo, token, seed) out: say so, not a module path.
    if ((e as { code?: string }).code === 'ERR_MODULE_NOT_FOUND' && DEMO_VERBS.has(verb)) {
      io.stderr.write(`phi-gateway: "${verb}" is not part of this installation (the production image leaves the demo out)\n`);
      return 1;
    }
    throw e;
  }
  if (wantsHelp(rest)) {
    io.stdout.write(mod.USAGE);
    return 0;
  }
  return mod.run(rest, io);
}

if (isMainModule(import.meta.url)) {
  main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env }).then(
    (code) => {
      // Long-running verbs (serve, demo) resolve only when they are told to stop.
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`phi-gateway: ${(e as Error)?.message ?? String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
