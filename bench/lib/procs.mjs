/**
 * Child processes for the benchmark: each server runs in its own process (its own event loop),
 * reports readiness over IPC, and is stopped by the same handle that started it.
 */
import { fork, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, Socket } from 'node:net';

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * Forks `script` and waits for its `{ ready: true }` message. Its stdout is discarded (the gateway
 * logs a line per request); the tail of stderr is kept for error messages.
 */
export function startChild(script, { env = {}, execArgv = [], timeoutMs = 60_000, label = script } = {}) {
  return new Promise((resolve, reject) => {
    const child = fork(script, [], {
      env: { ...process.env, ...env },
      execArgv,
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${label} did not become ready in ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${label} exited before it was ready (code ${code}, signal ${signal})\n${stderr.trim()}`));
    });
    child.once('message', (info) => {
      clearTimeout(timer);
      resolve({
        pid: child.pid,
        info,
        label,
        stderr: () => stderr,
        /** Sends a message and resolves with the child's next message. */
        ask(message) {
          return new Promise((res) => {
            child.once('message', res);
            child.send(message);
          });
        },
        rss: () => rssOf(child.pid),
        /** Graceful stop (the child closes its server, flushes, exits); SIGKILL after `graceMs`. */
        async stop(graceMs = 10_000) {
          if (child.exitCode !== null || child.signalCode !== null) return;
          if (child.connected) child.send('stop');
          const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
          await exited;
          clearTimeout(t);
        },
      });
    });
  });
}

/** Resident set size and its peak (VmHWM) of a process, in bytes (Linux /proc). */
export function rssOf(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN) * 1024;
    return { rss: kb('VmRSS'), peak: kb('VmHWM') };
  } catch {
    return { rss: Number.NaN, peak: Number.NaN };
  }
}

/** USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s on Linux. */
const TICK = 100;

/** CPU time (user + system, all threads) `pid` has used, in seconds (Linux /proc; NaN elsewhere). */
export function cpuSeconds(pid) {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / TICK;
  } catch {
    return Number.NaN;
  }
}

/** Samples a process's RSS every `everyMs` until stopped; returns the highest sample. */
export function sampleRss(pid, everyMs = 50) {
  let max = 0;
  const tick = () => {
    const { rss } = rssOf(pid);
    if (rss > max) max = rss;
  };
  tick();
  const t = setInterval(tick, everyMs);
  return {
    stop() {
      clearInterval(t);
      tick();
      return max;
    },
  };
}

export function redisAvailable() {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

function ping(port) {
  return new Promise((resolve) => {
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
}

/** A private redis-server (AOF on, appendfsync always: the durability the audit sink relies on). */
export async function startRedis(dir) {
  const port = await freePort();
  const proc = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--loglevel', 'warning'],
    { stdio: 'ignore' },
  );
  const deadline = Date.now() + 10_000;
  while (!(await ping(port))) {
    if (Date.now() > deadline || proc.exitCode !== null) {
      proc.kill('SIGKILL');
      throw new Error('redis-server did not answer PING');
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    pid: proc.pid,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const done = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await done;
    },
  };
}

/**
 * Pins a process (all its threads) to the given CPU list, e.g. '1' or '0-2'. Returns false when
 * taskset is missing or refuses (the run then goes on unpinned).
 */
export function pin(pid, cpuList) {
  return spawnSync('taskset', ['-a', '-pc', cpuList, String(pid)], { stdio: 'ignore' }).status === 0;
}
