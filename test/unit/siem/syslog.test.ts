// The syslog target's messages (RFC 5424) and framing (RFC 5425), read back by an independent
// parser (test/helpers/rsyslog.ts): PRI from facility 10 and the record's outcome, the record's
// time, SD-PARAM escaping, the BOM, MSG-LEN in bytes with multibyte UTF-8, one message per BALP
// AuditEvent.
import { describe, expect, it } from 'vitest';
import { chainRecords, genesisHead } from '../../../src/audit/chain.js';
import { toAuditEvents } from '../../../src/audit/fhir.js';
import type { AuditRecord, ChainedRecord } from '../../../src/audit/record.js';
import {
  escapeSdValue,
  errorCode,
  formatSyslogMessage,
  frame,
  headerField,
  parseSyslogUrl,
  recordMessages,
  SD_ID,
  severityOf,
  syslogTimestamp,
} from '../../../src/siem/syslog.js';
import { parseSyslogMessage, unframe } from '../../helpers/rsyslog.js';
import { sampleRecord } from '../audit/fixtures.js';

function chained(...recs: AuditRecord[]): ChainedRecord[] {
  return chainRecords(genesisHead('writer-1'), recs).chained;
}

const OPTS = { format: 'balp', hostname: 'gw-1.example', appName: 'phi-gateway' } as const;

function parse(buf: Buffer) {
  return parseSyslogMessage(buf.toString('utf8'));
}

describe('RFC 5424 message', () => {
  it('PRI is facility 10 with the severity of the outcome', () => {
    const [allow, deny, error, bg] = chained(
      sampleRecord(1),
      sampleRecord(2, { decision: 'deny', status: 403 }),
      sampleRecord(3, { decision: 'error', status: 502 }),
      sampleRecord(4, { kind: 'break-glass-start' }),
    );
    const pri = (r: ChainedRecord) => parse(recordMessages(r, OPTS)[0]).pri;
    expect(pri(allow)).toBe(10 * 8 + 5);
    expect(pri(deny)).toBe(10 * 8 + 4);
    expect(pri(error)).toBe(10 * 8 + 3);
    expect(pri(bg)).toBe(10 * 8 + 4);
    expect(severityOf({ kind: 'anomaly', decision: 'allow' })).toBe(4);
    expect(recordMessages(allow, OPTS)[0].toString('latin1').startsWith('<85>1 ')).toBe(true);
  });

  it('header: the record time as TIMESTAMP, HOSTNAME, APP-NAME, PROCID -, MSGID by format', () => {
    const [r] = chained(sampleRecord(7, { time: '2025-03-04T05:06:07.123Z' }));
    const m = parse(recordMessages(r, OPTS)[0]);
    expect(m).toMatchObject({ version: 1, timestamp: '2025-03-04T05:06:07.123Z', hostname: 'gw-1.example', appName: 'phi-gateway', procId: '-', msgId: 'AuditEvent' });
    expect(parse(recordMessages(r, { ...OPTS, format: 'record' })[0]).msgId).toBe('audit-record');
  });

  it('TIMESTAMP keeps at most 6 fractional digits; a time that is not RFC 3339 is the NILVALUE', () => {
    expect(syslogTimestamp('2025-01-01T00:00:00.123456789Z')).toBe('2025-01-01T00:00:00.123456Z');
    expect(syslogTimestamp('2025-01-01t00:00:00z')).toBe('2025-01-01T00:00:00Z');
    expect(syslogTimestamp('2025-01-01T00:00:00+02:00')).toBe('2025-01-01T00:00:00+02:00');
    expect(syslogTimestamp('yesterday')).toBe('-');
    expect(syslogTimestamp('2025-01-01 00:00:00')).toBe('-');
  });

  it('header fields are printable ASCII without spaces, within their lengths', () => {
    expect(headerField('my host\n', 255)).toBe('my_host_');
    expect(headerField('gäteway', 48)).toBe('g_teway');
    expect(headerField('a'.repeat(60), 48)).toHaveLength(48);
    expect(headerField('', 48)).toBe('-');
    const m = parse(formatSyslogMessage({ facility: 10, severity: 5, timestamp: '-', hostname: 'h o', appName: 'a]"b', msgId: 'X', params: [] }, 'hi'));
    expect(m.hostname).toBe('h_o');
    expect(m.appName).toBe('a]"b');
    expect(m.sd).toEqual({});
  });

  it('SD-PARAM values escape ", \\ and ] and read back unchanged', () => {
    expect(escapeSdValue('a"b\\c]d[e')).toBe('a\\"b\\\\c\\]d[e');
    const id = 'id "quoted" \\ back ] bracket = ü';
    const [r] = chained(sampleRecord(1, { id }));
    const raw = recordMessages(r, OPTS)[0].toString('utf8');
    expect(raw).toContain('recordId="id \\"quoted\\" \\\\ back \\] bracket = ü"');
    const m = parseSyslogMessage(raw);
    expect(m.sd[SD_ID]).toEqual({ recordId: id, kind: 'fhir', decision: 'allow', writer: 'writer-1', seq: '1', event: '1/1' });
    expect(JSON.parse(m.msg).entity.at(-1).what.identifier.value).toBe(id);
  });

  it('MSG is the BOM then one line of JSON; balp: one message per AuditEvent, each naming the record', () => {
    const [r] = chained(sampleRecord(3, { disclosed: { resources: ['Patient/a', 'Patient/b', 'Patient/c'], patients: ['a', 'b', 'c'], elementsRemoved: 0, resourcesWithheld: 0 } }));
    const msgs = recordMessages(r, OPTS);
    const events = toAuditEvents(r);
    expect(msgs).toHaveLength(3);
    msgs.forEach((buf, i) => {
      const bomAt = buf.indexOf(Buffer.from([0xef, 0xbb, 0xbf]));
      expect(buf.subarray(bomAt + 3).includes(0x0a)).toBe(false);
      expect(buf[bomAt - 1]).toBe(0x20);
      expect(buf[bomAt - 2]).toBe(0x5d); // ']' closes the SD
      const m = parse(buf);
      expect(m.bom).toBe(true);
      expect(m.sd[SD_ID]).toMatchObject({ recordId: 'req-3', event: `${i + 1}/3` });
      expect(JSON.parse(m.msg)).toEqual(JSON.parse(JSON.stringify(events[i])));
    });
  });

  it('record format: one message holding the record JSON', () => {
    const [r] = chained(sampleRecord(3, { disclosed: { resources: [], patients: ['a', 'b'], elementsRemoved: 0, resourcesWithheld: 0 } }));
    const msgs = recordMessages(r, { ...OPTS, format: 'record' });
    expect(msgs).toHaveLength(1);
    const m = parse(msgs[0]);
    expect(m.sd[SD_ID]).toEqual({ recordId: 'req-3', kind: 'fhir', decision: 'allow', writer: 'writer-1', seq: '1' });
    expect(JSON.parse(m.msg)).toEqual(r);
  });
});

describe('RFC 5425 octet counting', () => {
  it('MSG-LEN counts bytes, not characters, and the stream splits back into the messages', () => {
    const [a, b] = chained(
      sampleRecord(1, { id: 'ß漢字🙂', client: { address: '10.0.0.1', userAgent: 'Mözilla 漢字 🙂' } }),
      sampleRecord(2),
    );
    const ma = recordMessages(a, { ...OPTS, format: 'record' })[0];
    const mb = recordMessages(b, OPTS)[0];
    const text = ma.toString('utf8');
    expect(ma.length).toBeGreaterThan(text.length);
    const fa = frame(ma);
    expect(fa.toString('utf8').startsWith(`${ma.length} <`)).toBe(true);
    const parts = unframe(Buffer.concat([fa, frame(mb)]));
    expect(parts).toHaveLength(2);
    expect(parts[0].equals(ma)).toBe(true);
    expect(parts[1].equals(mb)).toBe(true);
    expect(JSON.parse(parse(parts[0]).msg).client.userAgent).toBe('Mözilla 漢字 🙂');
    // A frame cut short (a length in characters) would not parse back.
    expect(() => unframe(Buffer.concat([Buffer.from(`${text.length} `), ma]))).toThrow();
  });
});

describe('target URL and error codes', () => {
  it('tls://host:port, 6514 by default, IPv6 in brackets', () => {
    expect(parseSyslogUrl('tls://siem.example:7514')).toEqual({ host: 'siem.example', port: 7514 });
    expect(parseSyslogUrl('tls://siem.example')).toEqual({ host: 'siem.example', port: 6514 });
    expect(parseSyslogUrl('tls://[::1]:6514')).toEqual({ host: '::1', port: 6514 });
    expect(() => parseSyslogUrl('tcp://siem.example:514')).toThrow();
  });

  it('only plain codes pass; messages never do', () => {
    expect(errorCode(Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:6514'), { code: 'ECONNREFUSED' }))).toBe('ECONNREFUSED');
    expect(errorCode(new Error('token s3cret rejected'))).toBe('error');
    expect(errorCode({ code: 'has space s3cret' })).toBe('error');
    expect(errorCode(undefined)).toBe('error');
  });
});
