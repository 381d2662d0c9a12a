/**
 * Starts a real rsyslogd as a syslog receiver over TLS (RFC 5425, rsyslog's gtls driver) on a
 * free loopback port, with its own config, pid file, work directory and certificates in a temp
 * dir, and no system inputs (no /dev/log, no kernel log). Every message received is written raw
 * (the SYSLOG-MSG as it arrived, framing removed) as one line of `received.log`.
 * Missing rsyslogd or its gtls module: a failure in CI (CI=true), elsewhere `undefined` plus a loud
 * warning so the caller can `describe.skip`, as test/helpers/redis.ts does.
 *
 *   const rs = await startRsyslog({ mutualTls: true });
 *   // target: { url: rs.url, tls: { ca: rs.ca, cert: rs.clientCert, key: rs.clientKey } }
 *   const lines = await rs.waitForMessages(3);
 *   const m = parseSyslogMessage(lines[0]);   // m.sd['phi-gateway@32473'].recordId, JSON.parse(m.msg)
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestPki, HAS_OPENSSL } from './pki.js';

export const RSYSLOGD = '/usr/sbin/rsyslogd';
const GTLS_MODULES = ['/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so', '/usr/lib/aarch64-linux-gnu/rsyslog/lmnsd_gtls.so', '/usr/lib/rsyslog/lmnsd_gtls.so'];

export interface RsyslogOptions {
  /** Require a client certificate signed by the test CA (`x509/certvalid`). Default: any client (`anon`). */
  readonly mutualTls?: boolean;
}

export interface RsyslogHandle {
  /** `tls://127.0.0.1:PORT`, a syslog target's `url`. */
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** The test CA that signed the receiver's certificate (and the client's): the target's `tls.ca`. */
  readonly ca: string;
  /** A client certificate and key the receiver accepts (mutual TLS). */
  readonly clientCert: string;
  readonly clientKey: string;
  /** The file every received message is appended to, one per line. */
  readonly logFile: string;
  /** The messages received so far (raw SYSLOG-MSG lines, BOM included). */
  messages(): Promise<string[]>;
  /** Waits until at least `n` messages arrived (default timeout 10 s), then returns them all. */
  waitForMessages(n: number, timeoutMs?: number): Promise<string[]>;
  /** SIGTERM and wait: an outage. The port and the received messages stay (start() again). */
  stop(): Promise<void>;
  /** Starts it again on the same port (after stop()). */
  start(): Promise<void>;
  /** Stops it and removes the temp dir. */
  dispose(): Promise<void>;
}

let available: boolean | undefined;

export function rsyslogAvailable(): boolean {
  available ??=
    HAS_OPENSSL && spawnSync(RSYSLOGD, ['-v'], { stdio: 'ignore' }).status === 0 && GTLS_MODULES.some((f) => existsSync(f));
  return available;
}

const leftovers = new Set<{ proc: () => ChildProcess | undefined; dir: string }>();
process.once('exit', () => {
  for (const l of leftovers) {
    l.proc()?.kill('SIGKILL');
    rmSync(l.dir, { recursive: true, force: true });
  }
});

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

async function waitForListen(port: number, proc: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`rsyslogd exited (${proc.exitCode ?? proc.signalCode}) before listening`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = new Socket();
      s.once('error', () => resolve(false));
      s.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`rsyslogd did not listen on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function config(dir: string, port: number, logFile: string, mutualTls: boolean): string {
  return `
global(
  workDirectory="${dir}/work"
  maxMessageSize="256k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="${dir}/ca.pem"
  defaultNetstreamDriverCertFile="${dir}/server.pem"
  defaultNetstreamDriverKeyFile="${dir}/server-key.pem"
)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="${mutualTls ? 'x509/certvalid' : 'anon'}")
input(type="imtcp" address="127.0.0.1" port="${port}")
template(name="raw" type="string" string="%rawmsg%\\n")
action(type="omfile" file="${logFile}" template="raw")
`;
}

export async function startRsyslog(opts: RsyslogOptions = {}): Promise<RsyslogHandle | undefined> {
  if (!rsyslogAvailable()) {
    if (process.env.CI === 'true') throw new Error('rsyslogd with its gtls module (rsyslog-gnutls) is not installed, and CI=true requires the syslog tests to run');
    console.warn('\n!!! rsyslogd or rsyslog-gnutls not found: syslog-over-TLS tests are SKIPPED. Install rsyslog and rsyslog-gnutls to run them. !!!\n');
    return undefined;
  }
  const dir = await mkdtemp(join(tmpdir(), 'phi-rsyslog-'));
  await mkdir(join(dir, 'work'));
  createTestPki(dir, [
    { name: 'server', cn: 'localhost', san: 'IP:127.0.0.1,DNS:localhost', usage: 'serverAuth' },
    { name: 'client', cn: 'phi-gateway', san: 'DNS:phi-gateway', usage: 'clientAuth' },
  ]);
  const port = await freePort();
  const logFile = join(dir, 'received.log');
  const confFile = join(dir, 'rsyslog.conf');
  await writeFile(confFile, config(dir, port, logFile, opts.mutualTls ?? false));
  let proc: ChildProcess | undefined;
  let stderr = '';
  const launch = async (): Promise<void> => {
    stderr = '';
    const p = spawn(RSYSLOGD, ['-n', '-f', confFile, '-i', join(dir, 'rsyslogd.pid')], { stdio: ['ignore', 'ignore', 'pipe'] });
    p.stderr?.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    proc = p;
    try {
      await waitForListen(port, p, 10_000);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${stderr}`);
    }
  };
  const exited = (p: ChildProcess): Promise<void> =>
    p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise((r) => p.once('exit', () => r()));
  const messages = async (): Promise<string[]> => {
    const text = await readFile(logFile, 'utf8').catch(() => '');
    return text.split('\n').filter((l) => l !== '');
  };
  const handle: RsyslogHandle = {
    url: `tls://127.0.0.1:${port}`,
    port,
    dir,
    ca: join(dir, 'ca.pem'),
    clientCert: join(dir, 'client.pem'),
    clientKey: join(dir, 'client-key.pem'),
    logFile,
    messages,
    async waitForMessages(n, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const got = await messages();
        if (got.length >= n) return got;
        if (Date.now() > deadline) throw new Error(`rsyslog received ${got.length} of ${n} messages`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      const p = proc;
      if (!p) return;
      proc = undefined;
      p.kill('SIGTERM');
      await exited(p);
    },
    async start() {
      if (proc) return;
      await launch();
    },
    async dispose() {
      const p = proc;
      proc = undefined;
      if (p) {
        p.kill('SIGKILL');
        await exited(p);
      }
      await rm(dir, { recursive: true, force: true });
      leftovers.delete(entry);
    },
  };
  const entry = { proc: () => proc, dir };
  leftovers.add(entry);
  await launch();
  return handle;
}

/** An RFC 5424 SYSLOG-MSG, parsed (an independent reading of what src/siem/syslog.ts writes). */
export interface ParsedSyslog {
  readonly pri: number;
  readonly facility: number;
  readonly severity: number;
  readonly version: number;
  readonly timestamp: string;
  readonly hostname: string;
  readonly appName: string;
  readonly procId: string;
  readonly msgId: string;
  /** SD-ID -> PARAM-NAME -> unescaped value. */
  readonly sd: Record<string, Record<string, string>>;
  /** Whether MSG started with the UTF-8 BOM (removed from `msg`). */
  readonly bom: boolean;
  readonly msg: string;
}

export function parseSyslogMessage(line: string): ParsedSyslog {
  const head = /^<(\d{1,3})>(\d{1,2}) (\S+) (\S+) (\S+) (\S+) (\S+) /.exec(line);
  if (!head) throw new Error(`not an RFC 5424 message: ${line.slice(0, 80)}`);
  let i = head[0].length;
  const sd: Record<string, Record<string, string>> = {};
  if (line[i] === '-') {
    i += 1;
  } else {
    while (line[i] === '[') {
      const idEnd = line.slice(i + 1).search(/[ \]]/) + i + 1;
      const id = line.slice(i + 1, idEnd);
      const params: Record<string, string> = {};
      i = idEnd;
      while (line[i] === ' ') {
        const eq = line.indexOf('="', i);
        const name = line.slice(i + 1, eq);
        i = eq + 2;
        let value = '';
        while (line[i] !== '"') {
          if (i >= line.length) throw new Error('unterminated SD-PARAM');
          if (line[i] === '\\' && (line[i + 1] === '"' || line[i + 1] === '\\' || line[i + 1] === ']')) i += 1;
          value += line[i];
          i += 1;
        }
        params[name] = value;
        i += 1;
      }
      if (line[i] !== ']') throw new Error('malformed SD-ELEMENT');
      i += 1;
      sd[id] = params;
    }
  }
  let msg = line[i] === ' ' ? line.slice(i + 1) : line.slice(i);
  const bom = msg.startsWith('\uFEFF');
  if (bom) msg = msg.slice(1);
  const pri = Number(head[1]);
  return {
    pri,
    facility: pri >> 3,
    severity: pri & 7,
    version: Number(head[2]),
    timestamp: head[3],
    hostname: head[4],
    appName: head[5],
    procId: head[6],
    msgId: head[7],
    sd,
    bom,
    msg,
  };
}

/**
 * Splits an RFC 5425 octet-counted stream into its SYSLOG-MSGs (bytes), checking each MSG-LEN.
 */
export function unframe(stream: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  while (i < stream.length) {
    const sp = stream.indexOf(0x20, i);
    const len = Number(stream.subarray(i, sp).toString('ascii'));
    if (sp < 0 || !/^[1-9]\d*$/.test(stream.subarray(i, sp).toString('ascii'))) throw new Error('bad MSG-LEN');
    if (sp + 1 + len > stream.length) throw new Error('frame longer than the stream');
    out.push(stream.subarray(sp + 1, sp + 1 + len));
    i = sp + 1 + len;
  }
  return out;
}
