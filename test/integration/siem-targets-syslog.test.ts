// The syslog target against a real rsyslogd over TLS (test/helpers/rsyslog.ts): messages arrive
// intact and parseable, one per record (record format) or per BALP AuditEvent, each naming its
// record; the connection is reused and comes back after the receiver's outage; mutual TLS is
// accepted with the client certificate and refused without it; a receiver whose certificate comes
// from an unknown CA fails the delivery with a TLS code.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chainRecords, genesisHead } from '../../src/audit/chain.js';
import { toAuditEvents } from '../../src/audit/fhir.js';
import type { AuditRecord, ChainedRecord } from '../../src/audit/record.js';
import { createTarget, deliveryErrorCode, SD_ID } from '../../src/siem/targets.js';
import type { SyslogTargetConfig, Target } from '../../src/siem/types.js';
import { createTestPki } from '../helpers/pki.js';
import { parseSyslogMessage, type RsyslogHandle, rsyslogAvailable, startRsyslog } from '../helpers/rsyslog.js';
import { capturingLogger } from '../unit/breakglass/helpers.js';
import { sampleRecord } from '../unit/audit/fixtures.js';

let seq = 0;
function records(n: number, over: (i: number) => Partial<AuditRecord> = () => ({})): ChainedRecord[] {
  const recs = Array.from({ length: n }, () => {
    seq += 1;
    return sampleRecord(seq, { id: `rec-${seq}-ü`, ...over(seq) });
  });
  return chainRecords(genesisHead('w-1'), recs).chained;
}

function syslogTarget(rs: RsyslogHandle, over: Partial<SyslogTargetConfig> = {}): { target: Target; lines: string[] } {
  const { logger, lines } = capturingLogger();
  const target = createTarget({ name: 'siem', type: 'syslog', url: rs.url, format: 'balp', tls: { ca: rs.ca }, hostname: 'gw-test', ...over }, { logger });
  return { target, lines };
}

async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return deliveryErrorCode(e);
  }
  throw new Error('the delivery succeeded');
}

/** Received messages, parsed, grouped by record id. */
async function byRecord(rs: RsyslogHandle): Promise<Map<string, ReturnType<typeof parseSyslogMessage>[]>> {
  const out = new Map<string, ReturnType<typeof parseSyslogMessage>[]>();
  for (const line of await rs.messages()) {
    const m = parseSyslogMessage(line);
    const id = m.sd[SD_ID].recordId;
    out.set(id, [...(out.get(id) ?? []), m]);
  }
  return out;
}

describe.skipIf(!rsyslogAvailable() && process.env.CI !== 'true')('syslog target against rsyslog over TLS', () => {
  let rs: RsyslogHandle;
  beforeAll(async () => {
    rs = (await startRsyslog())!;
  });
  afterAll(async () => {
    await rs?.dispose();
  });

  it('balp: one message per AuditEvent, intact, each naming its record; the connection is reused', async () => {
    const { target, lines } = syslogTarget(rs);
    const first = records(3, (i) => (i % 3 === 0 ? { disclosed: { resources: [], patients: ['a', 'b'], elementsRemoved: 0, resourcesWithheld: 0 } } : {}));
    const second = records(2, () => ({ decision: 'deny', status: 403 }));
    const before = (await rs.messages()).length;
    await target.deliver(first);
    await target.deliver(second);
    const expected = [...first, ...second].reduce((n, r) => n + toAuditEvents(r).length, 0);
    await rs.waitForMessages(before + expected);
    const got = await byRecord(rs);
    for (const r of [...first, ...second]) {
      const events = toAuditEvents(r);
      const msgs = got.get(r.id) ?? [];
      expect(msgs).toHaveLength(events.length);
      msgs.forEach((m, i) => {
        expect(m).toMatchObject({ facility: 10, severity: r.decision === 'deny' ? 4 : 5, version: 1, timestamp: r.time, hostname: 'gw-test', appName: 'phi-gateway', msgId: 'AuditEvent', bom: true });
        expect(m.sd[SD_ID]).toEqual({ recordId: r.id, kind: 'fhir', decision: r.decision, writer: 'w-1', seq: String(r.chain.seq), event: `${i + 1}/${events.length}` });
        expect(JSON.parse(m.msg)).toEqual(JSON.parse(JSON.stringify(events[i])));
      });
    }
    expect(lines.filter((l) => l.includes('syslog connection open'))).toHaveLength(1);
    await target.close();
  });

  it('record format: one message per record holding its JSON', async () => {
    const { target } = syslogTarget(rs, { format: 'record', appName: 'gw-audit' });
    const recs = records(4, () => ({ disclosed: { resources: [], patients: ['x', 'y', 'z'], elementsRemoved: 1, resourcesWithheld: 0 } }));
    const before = (await rs.messages()).length;
    await target.deliver(recs);
    await rs.waitForMessages(before + 4);
    const got = await byRecord(rs);
    for (const r of recs) {
      const msgs = got.get(r.id) ?? [];
      expect(msgs).toHaveLength(1);
      expect(msgs[0]).toMatchObject({ msgId: 'audit-record', appName: 'gw-audit' });
      expect(JSON.parse(msgs[0].msg)).toEqual(JSON.parse(JSON.stringify(r)));
    }
    await target.close();
  });

  it('a receiver outage fails deliveries by code; after it they go through on a new connection', async () => {
    const { target, lines } = syslogTarget(rs);
    const a = records(2);
    const before = (await rs.messages()).length;
    await target.deliver(a);
    // RFC 5425 has no acknowledgement: what a receiver stopped before reading is lost to it, so the
    // outage begins once it has what was delivered.
    await rs.waitForMessages(before + 2);
    await rs.stop();
    const b = records(2);
    expect(await failure(target.deliver(b))).toMatch(/^(ECONNREFUSED|ECONNRESET|EPIPE|connection-closed)$/);
    expect(await failure(target.deliver(b))).toBe('ECONNREFUSED');
    await rs.start();
    await target.deliver(b);
    const ids = [...a, ...b].map((r) => r.id);
    const deadline = Date.now() + 10_000;
    let got = await byRecord(rs);
    while (!ids.every((id) => got.has(id)) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      got = await byRecord(rs);
    }
    for (const id of ids) expect(got.get(id)).toHaveLength(1);
    expect(lines.join('\n')).not.toContain('rec-');
    await target.close();
  });
});

describe.skipIf(!rsyslogAvailable() && process.env.CI !== 'true')('syslog target: mutual TLS and certificate checks', () => {
  let rs: RsyslogHandle;
  let otherPki: string;
  beforeAll(async () => {
    rs = (await startRsyslog({ mutualTls: true }))!;
    otherPki = mkdtempSync(join(tmpdir(), 'phi-other-ca-'));
    createTestPki(otherPki, [{ name: 'client', cn: 'phi-gateway', san: 'DNS:phi-gateway', usage: 'clientAuth' }]);
  });
  afterAll(async () => {
    await rs?.dispose();
    rmSync(otherPki, { recursive: true, force: true });
  });

  it('with the client certificate: delivered', async () => {
    const { target } = syslogTarget(rs, { tls: { ca: rs.ca, cert: rs.clientCert, key: rs.clientKey } });
    const recs = records(2);
    await target.deliver(recs);
    await rs.waitForMessages(2);
    const got = await byRecord(rs);
    for (const r of recs) expect(got.get(r.id)).toHaveLength(1);
    await target.close();
  });

  it('without a client certificate, or with one from another CA: refused, nothing received', async () => {
    const before = (await rs.messages()).length;
    for (const tls of [{ ca: rs.ca }, { ca: rs.ca, cert: join(otherPki, 'client.pem'), key: join(otherPki, 'client-key.pem') }]) {
      const { target } = syslogTarget(rs, { tls });
      const recs = records(2);
      // Refused after the handshake (the receiver closes): the delivery fails rather than writing
      // into a connection about to go, and again on the next attempt.
      expect(await failure(target.deliver(recs))).toBe('connection-refused-by-receiver');
      expect(await failure(target.deliver(recs))).toBe('connection-refused-by-receiver');
      await target.close();
    }
    await new Promise((r) => setTimeout(r, 500));
    expect(await rs.messages()).toHaveLength(before);
  });

  it('a receiver certificate from an unknown CA: the delivery fails with a TLS code', async () => {
    const { target, lines } = syslogTarget(rs, { tls: { ca: join(otherPki, 'ca.pem'), cert: rs.clientCert, key: rs.clientKey } });
    const code = await failure(target.deliver(records(1)));
    expect(code).toMatch(/CERT|SIGNATURE|ISSUER/);
    await target.close();
    expect(lines.join('\n')).not.toContain('BEGIN');
  });

  it('a receiver certificate for another name: refused', async () => {
    const { target } = syslogTarget(rs, { tls: { ca: rs.ca, cert: rs.clientCert, key: rs.clientKey, serverName: 'siem.other.example' } });
    expect(await failure(target.deliver(records(1)))).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    await target.close();
  });
});
