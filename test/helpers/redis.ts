/**
 * Starts a real `redis-server` on a free loopback port with its own temp dir (AOF on, fsync
 * always, no RDB). Missing binary: a failure in CI (CI=true), elsewhere `undefined` plus a loud
 * warning so the caller can `describe.skip`.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface RedisHandle {
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** Graceful shutdown; data kept on disk until dispose() or process exit (restart() brings it back). */
  stop(): Promise<void>;
  /** Starts it again on the same port and dir (after stop() or kill()). */
  restart(): Promise<void>;
  /** SIGKILL: an outage without a goodbye. */
  kill(): Promise<void>;
  /**
   * SIGSTOP: a stall. The process keeps its port and connections (the kernel still accepts and
   * buffers) but answers nothing until resume().
   */
  pause(): void;
  /** SIGCONT after pause(): it runs what it buffered meanwhile and answers again. */
  resume(): void;
  /** Stops it and removes the temp dir. */
  dispose(): Promise<void>;
}

let binaryChecked: boolean | undefined;

// Servers and dirs still around when the test process exits (a test that forgot dispose()).
const leftovers = new Set<{ proc: () => ChildProcess | undefined; dir: string }>();
process.once('exit', () => {
  for (const l of leftovers) {
    l.proc()?.kill('SIGKILL');
    rmSync(l.dir, { recursive: true, force: true });
  }
});

export function redisAvailable(): boolean {
  binaryChecked ??= spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
  return binaryChecked;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

async function waitForPing(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = new Socket();
      let buf = '';
      s.setTimeout(500);
      s.once('error', () => resolve(false));
      s.once('timeout', () => {
        s.destroy();
        resolve(false);
      });
      s.on('data', (d) => {
        buf += d.toString();
        if (buf.includes('\r\n')) {
          s.destroy();
          resolve(buf.startsWith('+PONG'));
        }
      });
      s.connect(port, '127.0.0.1', () => s.write('PING\r\n'));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`redis-server on ${port} did not answer PING`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startRedis(opts: { appendfsync?: 'always' | 'everysec' } = {}): Promise<RedisHandle | undefined> {
  if (!redisAvailable()) {
    if (process.env.CI === 'true') throw new Error('redis-server is not installed, and CI=true requires the Redis tests to run');
    console.warn('\n!!! redis-server not found: Redis tests are SKIPPED. Install redis-server to run them. !!!\n');
    return undefined;
  }
  const dir = await mkdtemp(join(tmpdir(), 'phi-redis-'));
  const port = await freePort();
  let proc: ChildProcess | undefined;
  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--dir', dir,
    '--save', '',
    '--appendonly', 'yes',
    '--appendfsync', opts.appendfsync ?? 'always',
    '--protected-mode', 'yes',
    '--loglevel', 'warning',
  ];
  const launch = async (): Promise<void> => {
    const p = spawn('redis-server', args, { stdio: 'ignore' });
    proc = p;
    await waitForPing(port, 10_000);
  };
  const exited = (p: ChildProcess): Promise<void> =>
    p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise((r) => p.once('exit', () => r()));
  const handle: RedisHandle = {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir,
    async stop() {
      const p = proc;
      if (!p) return;
      proc = undefined;
      p.kill('SIGTERM');
      // A paused server would hold the SIGTERM until it runs again.
      p.kill('SIGCONT');
      await exited(p);
    },
    pause() {
      if (!proc?.kill('SIGSTOP')) throw new Error('redis-server is not running');
    },
    resume() {
      if (!proc?.kill('SIGCONT')) throw new Error('redis-server is not running');
    },
    async kill() {
      const p = proc;
      if (!p) return;
      proc = undefined;
      p.kill('SIGKILL');
      await exited(p);
    },
    async restart() {
      await handle.stop();
      await launch();
    },
    async dispose() {
      await handle.kill();
      await rm(dir, { recursive: true, force: true });
      leftovers.delete(entry);
    },
  };
  const entry = { proc: () => proc, dir };
  leftovers.add(entry);
  await launch();
  return handle;
}
