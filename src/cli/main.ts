#!/usr/bin/env node
/** `phi-gateway <verb>`: one file per verb under src/cli, loaded on demand. */
import { isMainModule } from './main-module.js';

export interface CliIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
}

type Verb = (argv: string[], io: CliIo) => Promise<number>;

const VERBS: Record<string, () => Promise<Verb>> = {
  serve: async () => (await import('./serve.js')).run,
  demo: async () => (await import('./demo.js')).run,
  'check-config': async () => (await import('./check-config.js')).run,
  explain: async () => (await import('./explain.js')).run,
  audit: async () => (await import('./audit.js')).run,
  token: async () => (await import('./token.js')).run,
  seed: async () => (await import('./seed.js')).run,
  'break-glass': async () => (await import('./break-glass.js')).run,
  report: async () => (await import('./report.js')).run,
  policy: async () => (await import('./policy.js')).run,
};

const USAGE = `usage: phi-gateway <verb> [options]

  serve [--config F]                 run the gateway (default config/gateway.yaml)
  demo                               the embedded demo (sample FHIR server + gateway + demo tokens)
  check-config [--config F]          validate gateway + policy files
  explain --role R --purpose P [--resource T]
                                     what that role may do and see for that purpose, element by element
  audit export [filters] [--format ndjson|csv|fhir] [--out F]
  audit verify                       check the audit hash chains
  break-glass list [--unreviewed]    break-glass sessions: reason, actor, patient, expiry, review state
  break-glass review ID --reviewer SUB --outcome justified|unjustified [--note T]
                                     record a retrospective review (the reviewer may not be the actor)
  report usage|access|break-glass [--from T] [--to T] [--format table|csv|html] [--out F]
                                     compliance reports from the audit trail
  policy diff --candidate F [--from T] [--to T]
                                     replay recorded requests: what a candidate policy would change
  seed --upstream URL                load the synthetic demo patients into a FHIR server (docker compose)
  token --role R [--sub S] [--purpose P] [--patient ID] [--ttl 1h]
                                     demo only: mint a token with the demo key
`;

export async function main(argv: string[], io: CliIo): Promise<number> {
  const [verb, ...rest] = argv;
  if (!verb || verb === '--help' || verb === '-h' || verb === 'help') {
    io.stdout.write(USAGE);
    return verb ? 0 : 1;
  }
  const load = VERBS[verb];
  if (!load) {
    io.stderr.write(`phi-gateway: unknown verb "${verb}"\n\n${USAGE}`);
    return 1;
  }
  return (await load())(rest, io);
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
