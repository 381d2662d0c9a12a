/**
 * The built gateway as a real OS process (`node dist/cli/main.js serve`), for tests that must
 * kill it (SIGKILL mid-load), run several replicas, or run the CLI the way an operator does.
 * Configured only through the documented environment overrides (SPEC 2) on top of the shipped
 * config/gateway.yaml, so what is tested is what ships; the policy is the shipped one without its
 * care-relationship requirements unless `relationships: true`, and without patient consent
 * enforcement unless `consent: true` (as startStack's). Needs `npm run build` first.
 *
 *   const gw = await spawnGateway({ upstream, issuer, audience, jwksUri, audit: `file:${dir}` });
 *   await fetch(`${gw.url}/Patient/pat-alice`, { headers });
 *   await gw.kill('SIGKILL');
 *   const v = await runCli(['audit', 'verify', '--source', `file:${dir}`]);
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { freePort, type TestPolicyFile, testPolicyFile } from './gateway.js';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The built CLI; PHI_GATEWAY_TEST_CLI points the tests at another build (mutation checks). */
export const CLI_PATH = process.env.PHI_GATEWAY_TEST_CLI || fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

export interface SpawnGatewayOptions {
  /** FHIR base URL of the upstream. */
  readonly upstream: string;
  readonly issuer: string;
  readonly audience: string;
  /** http is accepted on loopback. */
  readonly jwksUri: string;
  /** PHI_GATEWAY_AUDIT: `file:DIR` or `redis://...`. */
  readonly audit: string;
  /** Further environment overrides (beat the ones above). */
  readonly env?: Readonly<Record<string, string>>;
  /**
   * Keep the shipped policy's care-relationship requirements (StackOptions.relationships): by
   * default the process runs a copy without them, removed when it exits. Not applied when
   * `env.PHI_GATEWAY_POLICY` names a policy of the test's own.
   */
  readonly relationships?: boolean;
  /**
   * Keep the shipped policy's `consent` section (StackOptions.consent): by default the process
   * runs a copy without it. Not applied when `env.PHI_GATEWAY_POLICY` names a policy of the test's own.
   */
  readonly consent?: boolean;
  /** How long to wait for /healthz. Default 30 s (a loaded CI machine starts node slowly). */
  readonly readyTimeoutMs?: number;
}

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface GatewayProcess {
  readonly pid: number;
  /** FHIR base as clients see it, e.g. http://127.0.0.1:41234/fhir */
  readonly url: string;
  /** Proxy origin (for /audit/export), e.g. http://127.0.0.1:41234 */
  readonly origin: string;
  /** Admin origin (/healthz, /readyz). */
  readonly adminUrl: string;
  /** stdout and stderr lines (pino JSON), for diagnostics and log assertions. */
  readonly output: string[];
  /** Settles when the process has exited. */
  readonly exited: Promise<Exit>;
  /**
   * Sends `signal` (default SIGTERM) and resolves once the process is gone; SIGKILLs it after
   * `graceMs` (default 20 s) so a shutdown that hangs shows up as `signal: 'SIGKILL'`.
   */
  kill(signal?: NodeJS.Signals, graceMs?: number): Promise<Exit>;
}

// Processes still alive when the test process exits (a test that failed before its cleanup).
const alive = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of alive) p.kill('SIGKILL');
});

function assertBuilt(): void {
  if (!existsSync(CLI_PATH)) throw new Error(`${CLI_PATH} is missing: run \`npm run build\` before these tests`);
}

function collectLines(stream: NodeJS.ReadableStream | null, into: string[]): void {
  if (!stream) return;
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const text = rest + chunk;
    const lines = text.split('\n');
    rest = lines.pop() ?? '';
    for (const l of lines) if (l.length > 0) into.push(l);
  });
  stream.on('end', () => {
    if (rest.length > 0) into.push(rest);
  });
}

function exitOf(p: ChildProcess): Promise<Exit> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve({ code: p.exitCode, signal: p.signalCode });
  return new Promise((resolve) => p.once('exit', (code, signal) => resolve({ code, signal })));
}

async function healthy(adminUrl: string): Promise<boolean> {
  try {
    const res = await fetch(`${adminUrl}/healthz`, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

async function spawnOnce(opts: SpawnGatewayOptions): Promise<GatewayProcess | { retry: string }> {
  const port = await freePort();
  let adminPort = await freePort();
  while (adminPort === port) adminPort = await freePort();
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    NODE_ENV: 'production',
    PHI_GATEWAY_LISTEN: `127.0.0.1:${port}`,
    PHI_GATEWAY_ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
    PHI_GATEWAY_UPSTREAM: opts.upstream,
    PHI_GATEWAY_ISSUER: opts.issuer,
    PHI_GATEWAY_AUDIENCE: opts.audience,
    PHI_GATEWAY_JWKS_URI: opts.jwksUri,
    PHI_GATEWAY_AUDIT: opts.audit,
    PHI_GATEWAY_PSEUDONYM_KEY: 'process-test-pseudonym-key-0123456789abcdef',
    LOG_LEVEL: 'info',
    ...opts.env,
  };
  const proc = spawn(process.execPath, [CLI_PATH, 'serve', '--config', 'config/gateway.yaml'], {
    cwd: REPO_ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  alive.add(proc);
  const output: string[] = [];
  collectLines(proc.stdout, output);
  collectLines(proc.stderr, output);
  const exited = exitOf(proc).then((e) => {
    alive.delete(proc);
    return e;
  });
  let gone: Exit | undefined;
  void exited.then((e) => {
    gone = e;
  });

  const adminUrl = `http://127.0.0.1:${adminPort}`;
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
  for (;;) {
    if (gone) {
      const tail = output.slice(-20).join('\n');
      // Another process took one of the two ports between freePort() and listen: try new ports.
      if (/EADDRINUSE/.test(tail)) return { retry: tail };
      throw new Error(`gateway process exited (${gone.code ?? gone.signal}) before it was ready:\n${tail}`);
    }
    if (await healthy(adminUrl)) break;
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      await exited;
      throw new Error(`gateway process not ready after ${opts.readyTimeoutMs ?? 30_000} ms:\n${output.slice(-20).join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const origin = `http://127.0.0.1:${port}`;
  return {
    pid: proc.pid!,
    url: `${origin}/fhir`,
    origin,
    adminUrl,
    output,
    exited,
    async kill(signal: NodeJS.Signals = 'SIGTERM', graceMs = 20_000) {
      if (gone) return exited;
      proc.kill(signal);
      // A process that does not stop is a failure to report (signal SIGKILL), not a hung test.
      const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      const e = await exited;
      clearTimeout(t);
      return e;
    },
  };
}

/** Starts `phi-gateway serve` and resolves once the admin /healthz answers 200. */
export async function spawnGateway(opts: SpawnGatewayOptions): Promise<GatewayProcess> {
  assertBuilt();
  let policy: TestPolicyFile | undefined;
  if (opts.env?.PHI_GATEWAY_POLICY === undefined) {
    policy = testPolicyFile({ relationships: opts.relationships, consent: opts.consent });
    opts = { ...opts, env: { PHI_GATEWAY_POLICY: policy.file, ...opts.env } };
  }
  let last = '';
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      const r = await spawnOnce(opts);
      if (!('retry' in r)) {
        void r.exited.then(() => policy?.remove());
        return r;
      }
      last = r.retry;
    }
  } catch (e) {
    policy?.remove();
    throw e;
  }
  policy?.remove();
  throw new Error(`gateway process could not bind its ports after 3 attempts:\n${last}`);
}

export interface CliResult extends Exit {
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the built CLI (`phi-gateway ...args`) to completion, as an operator would. */
export async function runCli(args: readonly string[], env: Readonly<Record<string, string>> = {}, timeoutMs = 60_000): Promise<CliResult> {
  assertBuilt();
  const proc = spawn(process.execPath, [CLI_PATH, ...args], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  alive.add(proc);
  let stdout = '';
  let stderr = '';
  proc.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  proc.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
  const exit = await exitOf(proc);
  clearTimeout(timer);
  alive.delete(proc);
  // 'exit' can precede the last 'data' events of the pipes; 'close' cannot.
  if (proc.stdout.readable || proc.stderr.readable) await new Promise((r) => proc.once('close', r));
  return { ...exit, stdout, stderr };
}

/** One response as the load generator saw it; `text` is the whole body (it arrived in full). */
export interface Received {
  readonly path: string;
  readonly status: number;
  readonly id: string;
  readonly contentType: string;
  readonly text: string;
}

export interface LoadOptions {
  /** FHIR base or origin; each request goes to `base + path`. */
  readonly base: string;
  /** Paths cycled through by every loop (loop i starts at paths[i % n]). */
  readonly paths: readonly string[];
  readonly headers: Readonly<Record<string, string>>;
  readonly concurrency: number;
  /** Hard stop for the loops, whatever happens. */
  readonly maxMs: number;
}

export interface Load {
  /** Responses received in full so far (by any loop). */
  readonly received: Received[];
  /** Requests that failed at the transport level (connection refused/reset, truncated body). */
  errors(): number;
  /** Resolves when `received.length >= n` or the load has ended. */
  waitFor(n: number, timeoutMs: number): Promise<void>;
  /** No loop starts a new request after this; requests in flight continue until they settle. */
  stop(): void;
  /** Settles when every loop has ended. */
  readonly done: Promise<void>;
}

/**
 * `concurrency` fetch loops, each awaiting its whole response body before the next request. A
 * response counts as received only once its body was read completely (undici rejects a body cut
 * short of its content-length), so `received` is exactly what clients got.
 */
export function startLoad(opts: LoadOptions): Load {
  const received: Received[] = [];
  let errors = 0;
  let stopped = false;
  const deadline = Date.now() + opts.maxMs;
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  const wake = (): void => {
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (stopped || received.length >= waiters[i].n) {
        waiters[i].resolve();
        waiters.splice(i, 1);
      }
    }
  };
  const loop = async (i: number): Promise<void> => {
    for (let k = i; !stopped && Date.now() < deadline; k++) {
      const path = opts.paths[k % opts.paths.length];
      try {
        const res = await fetch(`${opts.base}${path}`, { headers: opts.headers, signal: AbortSignal.timeout(15_000) });
        const text = await res.text();
        received.push({ path, status: res.status, id: res.headers.get('x-request-id') ?? '', contentType: res.headers.get('content-type') ?? '', text });
      } catch {
        errors++;
        // The target is gone (killed) or refusing: do not spin on instant failures.
        if (!stopped) await new Promise((r) => setTimeout(r, 20));
      }
      wake();
    }
  };
  const done = Promise.all(Array.from({ length: opts.concurrency }, (_, i) => loop(i))).then(() => {
    stopped = true;
    wake();
  });
  return {
    received,
    errors: () => errors,
    waitFor(n, timeoutMs) {
      if (stopped || received.length >= n) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const t = setTimeout(resolve, timeoutMs);
        waiters.push({
          n,
          resolve: () => {
            clearTimeout(t);
            resolve();
          },
        });
      });
    },
    stop() {
      stopped = true;
    },
    done,
  };
}
