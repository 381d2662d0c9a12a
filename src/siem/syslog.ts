/**
 * The syslog target: RFC 5424 messages over TLS with RFC 5425 octet-counted framing, the secure
 * transport of IHE ATNA Record Audit Event [ITI-20].
 *
 *   MSG-LEN SP <PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID [phi-gateway@32473 recordId="..." ...] BOM MSG
 *
 * - PRI: facility 10 (security/authorization), as ITI-20 requires; severity 5 (notice) for an
 *   allowed request, 4 (warning) for a denial and for the security alerts among the record kinds
 *   (break-glass start, alerts, anomalies), 3 (err) for an error. ITI-20 asks for 5 "unless another
 *   value is more appropriate": a SIEM's rules key on severity, so the outcome is carried there.
 * - TIMESTAMP: the record's time (RFC 3339, UTC), not the time of sending: a record delivered late
 *   after an outage keeps its time.
 * - PROCID `-`. MSGID `AuditEvent` when MSG is a BALP AuditEvent (FHIR JSON), `audit-record` when
 *   it is the trail record's JSON. ITI-20's `IHE+RFC-3881` announces the DICOM/RFC 3881 XML
 *   message, which neither is, so it is not claimed.
 * - STRUCTURED-DATA: one element naming the record (id, kind, decision, writer and seq of its
 *   chain) and, for BALP, which of the record's AuditEvents this is (`event="2/3"`: BALP makes one
 *   per patient). The record id tells a receiver duplicates apart: delivery is at least once.
 *   32473 is the private enterprise number RFC 5612 reserves for documentation.
 * - MSG: a UTF-8 BOM, then the JSON on one line. Receivers must accept messages as large as the
 *   largest record (rsyslog: `global(maxMessageSize=...)`, default 8 KiB).
 *
 * The connection is opened on the first delivery and reused; any error or a close by the receiver
 * drops it, and the next delivery connects afresh. A delivery resolves once its bytes are written
 * to the TLS socket. RFC 5425 has no acknowledgement: bytes the receiver's kernel accepted and
 * the receiver then lost (a crash, or a stop before it read them) are not seen here; a receiver
 * with a disk-assisted queue loses nothing it has read. A new connection waits a moment after its handshake before the
 * first write, long enough for a receiver that refuses the client (no or wrong client
 * certificate: in TLS 1.3 the client learns it only after its handshake is done) to say so.
 * Failures are reported by code only (`ECONNREFUSED`, `UNABLE_TO_VERIFY_LEAF_SIGNATURE`,
 * `connect-timeout`...), never by a message.
 */
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { hostname as osHostname } from 'node:os';
import { connect, type TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { toAuditEvents } from '../audit/fhir.js';
import type { ChainedRecord } from '../audit/record.js';
import type { SyslogTargetConfig, Target } from './types.js';

/** security/authorization messages (RFC 5424 6.2.1), the facility ITI-20 requires. */
export const SYSLOG_FACILITY = 10;
export const SD_ID = 'phi-gateway@32473';
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);
const DEFAULT_PORT = 6514;
const NIL = '-';
/** Record kinds that are security alerts by themselves: at least warning. */
const ALERT_KINDS: ReadonlySet<string> = new Set(['break-glass-start', 'alert', 'anomaly']);

export const SEVERITY = { err: 3, warning: 4, notice: 5 } as const;

/** The RFC 5424 severity of a record: by its decision, raised to warning for security alerts. */
export function severityOf(r: Pick<ChainedRecord, 'decision' | 'kind'>): number {
  if (r.decision === 'error') return SEVERITY.err;
  if (r.decision === 'deny' || ALERT_KINDS.has(r.kind)) return SEVERITY.warning;
  return SEVERITY.notice;
}

/** PARAM-VALUE escaping (RFC 5424 6.3.3): `"`, `\` and `]` get a backslash. */
export function escapeSdValue(v: string): string {
  return v.replace(/["\\\]]/g, (c) => `\\${c}`);
}

/**
 * A header field: printable US-ASCII without spaces (RFC 5424 6.2), at most `max` characters;
 * anything else is replaced by `_`. Empty: the NILVALUE.
 */
export function headerField(v: string | undefined, max: number): string {
  if (!v) return NIL;
  return v.replace(/[^\x21-\x7e]/g, '_').slice(0, max);
}

const RFC3339 = /^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

/** An RFC 5424 TIMESTAMP from an ISO 8601 time (fraction cut to 6 digits), or `-` when it is not one. */
export function syslogTimestamp(time: string): string {
  const m = RFC3339.exec(time);
  if (!m) return NIL;
  const frac = m[3] ? m[3].slice(0, 7) : '';
  const zone = m[4] === 'z' ? 'Z' : m[4];
  return `${m[1]}T${m[2]}${frac}${zone}`;
}

export interface SyslogHeader {
  readonly facility: number;
  readonly severity: number;
  /** RFC 3339, or `-`. */
  readonly timestamp: string;
  readonly hostname: string;
  readonly appName: string;
  readonly msgId: string;
  /** SD-PARAMs of the one SD-ELEMENT (`SD_ID`), in order; values are escaped here. */
  readonly params: ReadonlyArray<readonly [string, string]>;
}

/** One SYSLOG-MSG (RFC 5424 6), unframed: the header, the structured data, BOM and `msg`. */
export function formatSyslogMessage(h: SyslogHeader, msg: string): Buffer {
  const pri = h.facility * 8 + h.severity;
  const sd = h.params.length ? `[${SD_ID}${h.params.map(([k, v]) => ` ${k}="${escapeSdValue(v)}"`).join('')}]` : NIL;
  const head = `<${pri}>1 ${h.timestamp} ${headerField(h.hostname, 255)} ${headerField(h.appName, 48)} ${NIL} ${headerField(h.msgId, 32)} ${sd} `;
  return Buffer.concat([Buffer.from(head, 'utf8'), BOM, Buffer.from(msg, 'utf8')]);
}

/** RFC 5425 4.3 octet counting: `MSG-LEN SP SYSLOG-MSG`, the length in bytes. */
export function frame(message: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${message.length} `, 'ascii'), message]);
}

export interface MessageOptions {
  readonly format: SyslogTargetConfig['format'];
  readonly hostname: string;
  readonly appName: string;
}

/** The SYSLOG-MSGs for one record: one per BALP AuditEvent, or one holding the record's JSON. */
export function recordMessages(r: ChainedRecord, o: MessageOptions): Buffer[] {
  const params: Array<readonly [string, string]> = [
    ['recordId', r.id],
    ['kind', r.kind],
    ['decision', r.decision],
  ];
  if (r.chain) params.push(['writer', r.chain.writer], ['seq', String(r.chain.seq)]);
  const base = { facility: SYSLOG_FACILITY, severity: severityOf(r), timestamp: syslogTimestamp(r.time), hostname: o.hostname, appName: o.appName };
  if (o.format === 'record') return [formatSyslogMessage({ ...base, msgId: 'audit-record', params }, JSON.stringify(r))];
  const events = toAuditEvents(r);
  return events.map((ev, i) =>
    formatSyslogMessage({ ...base, msgId: 'AuditEvent', params: [...params, ['event', `${i + 1}/${events.length}`]] }, JSON.stringify(ev)),
  );
}

/** An error that says only its code: safe for logs, metrics and /readyz. */
export function deliveryError(code: string): Error & { code: string } {
  return Object.assign(new Error(code), { code });
}

/** A thrown value's code when it has a plain one (`ECONNREFUSED`, `ERR_TLS_...`), else `error`. */
export function errorCode(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[A-Za-z0-9_.-]{1,64}$/.test(code) ? code : 'error';
}

export interface SyslogTargetOptions {
  readonly logger: Logger;
  /** Default 10 s. */
  readonly connectTimeoutMs?: number | undefined;
  /** Default 30 s. */
  readonly writeTimeoutMs?: number | undefined;
  /** How long a new connection waits after its handshake for a refusal (default 250 ms). */
  readonly settleMs?: number | undefined;
}

/** `tls://host:port` (port default 6514). */
export function parseSyslogUrl(url: string): { host: string; port: number } {
  const u = new URL(url);
  if (u.protocol !== 'tls:' || !u.hostname) throw new Error('a syslog target URL is tls://host:port');
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  return { host, port: u.port ? Number(u.port) : DEFAULT_PORT };
}

export function createSyslogTarget(config: SyslogTargetConfig, opts: SyslogTargetOptions): Target {
  return new SyslogTarget(config, opts);
}

class SyslogTarget implements Target {
  readonly name: string;
  readonly type = 'syslog' as const;
  private readonly host: string;
  private readonly port: number;
  private readonly messages: MessageOptions;
  private socket: TLSSocket | undefined;
  /** Why the current socket is unusable (error code), once it is. */
  private broken: string | undefined;
  /** Deliveries run one after another (one connection, frames never interleave). */
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly config: SyslogTargetConfig,
    private readonly opts: SyslogTargetOptions,
  ) {
    this.name = config.name;
    ({ host: this.host, port: this.port } = parseSyslogUrl(config.url));
    this.messages = { format: config.format, hostname: config.hostname ?? osHostname(), appName: config.appName ?? 'phi-gateway' };
  }

  deliver(records: readonly ChainedRecord[]): Promise<void> {
    const run = this.queue.then(() => this.send(records));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async send(records: readonly ChainedRecord[]): Promise<void> {
    if (this.closed) throw deliveryError('target-closed');
    if (records.length === 0) return;
    const frames: Buffer[] = [];
    for (const r of records) for (const m of recordMessages(r, this.messages)) frames.push(frame(m));
    const socket = await this.connection();
    await this.write(socket, Buffer.concat(frames));
  }

  private async connection(): Promise<TLSSocket> {
    const s = this.socket;
    if (s && this.broken === undefined) {
      // One turn of the event loop first: a close or reset the receiver already sent is then
      // seen here, rather than after the batch was written into a connection that is gone.
      await new Promise((r) => setImmediate(r));
      if (this.broken === undefined && !s.destroyed && s.writable) return s;
    }
    this.drop();
    const fresh = await this.open();
    this.socket = fresh;
    this.broken = undefined;
    fresh.on('error', (e) => this.lost(fresh, errorCode(e)));
    fresh.on('end', () => this.lost(fresh, 'connection-closed'));
    fresh.on('close', () => this.lost(fresh, 'connection-closed'));
    return fresh;
  }

  /** The receiver closed or broke the connection: the next delivery reconnects. */
  private lost(s: TLSSocket, code: string): void {
    if (this.socket !== s || this.broken !== undefined) return;
    this.broken = code;
    if (!this.closed) this.opts.logger.warn({ siem: { target: this.name, error: code } }, 'syslog connection lost');
    s.destroy();
  }

  private drop(): void {
    this.socket?.destroy();
    this.socket = undefined;
  }

  private async open(): Promise<TLSSocket> {
    const t = this.config.tls;
    let ca: Buffer | undefined;
    let cert: Buffer | undefined;
    let key: Buffer | undefined;
    try {
      [ca, cert, key] = await Promise.all([t?.ca, t?.cert, t?.key].map((f) => (f ? readFile(f) : undefined)));
    } catch (e) {
      throw deliveryError(`tls-file-${errorCode(e)}`);
    }
    const serverName = t?.serverName ?? (isIP(this.host) ? undefined : this.host);
    const connectTimeout = this.opts.connectTimeoutMs ?? 10_000;
    const settle = this.opts.settleMs ?? 250;
    return new Promise<TLSSocket>((resolve, reject) => {
      const s = connect({ host: this.host, port: this.port, servername: serverName, ca, cert, key, minVersion: 'TLSv1.2' });
      // The receiver sends nothing (RFC 5425 is one-way), but reading is what surfaces its close.
      s.on('data', () => undefined);
      let settled = false;
      const fail = (code: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        s.destroy();
        reject(deliveryError(code));
      };
      const timer = setTimeout(() => fail('connect-timeout'), connectTimeout);
      s.once('error', (e) => fail(errorCode(e)));
      s.once('end', () => fail('connection-refused-by-receiver'));
      s.once('close', () => fail('connection-refused-by-receiver'));
      s.once('secureConnect', () => {
        setTimeout(() => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          s.removeAllListeners('error');
          s.removeAllListeners('end');
          s.removeAllListeners('close');
          s.setKeepAlive(true, 30_000);
          s.setNoDelay(true);
          this.opts.logger.debug({ siem: { target: this.name, tls: s.getProtocol() } }, 'syslog connection open');
          resolve(s);
        }, settle);
      });
    });
  }

  private write(s: TLSSocket, bytes: Buffer): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let done = false;
      const finish = (code: string | undefined) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        s.off('close', onClose);
        if (code === undefined) resolve();
        else {
          if (this.socket === s) this.lost(s, code);
          reject(deliveryError(code));
        }
      };
      const onClose = () => finish(this.broken ?? 'connection-closed');
      const timer = setTimeout(() => finish('write-timeout'), this.opts.writeTimeoutMs ?? 30_000);
      s.once('close', onClose);
      s.write(bytes, (e) => finish(e ? errorCode(e) : this.socket === s ? this.broken : 'connection-closed'));
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.queue;
    const s = this.socket;
    this.socket = undefined;
    if (!s || s.destroyed) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        s.destroy();
        resolve();
      }, 2_000);
      s.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      s.end();
    });
  }
}
