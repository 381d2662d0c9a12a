/**
 * SIEM delivery end to end, on a file audit sink and on the Redis stream (a consumer group per
 * target): a gateway forwards its trail to a real rsyslog
 * over TLS and to the demo FHIR server as the Audit Record Repository. Every record arrives exactly
 * once per target (by record id) across a receiver outage (requests still answered 200, quickly;
 * lag and failures visible in /metrics) and a gateway restart on the same audit and state
 * directories; a receiver whose certificate the target does not trust fails delivery, shows in
 * /metrics and /readyz, and requests are unaffected.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GatewayConfig } from '../../src/config/types.js';
import { DEMO } from '../../src/demo/data.js';
import { type RunningUpstream, startFhirUpstream } from '../../src/demo/upstream.js';
import { type RunningGateway, startGateway } from '../../src/server/runtime.js';
import { AUDIT_EVENT_TAG_SYSTEM } from '../../src/siem/targets.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { parseSyslogMessage, type RsyslogHandle, startRsyslog } from '../helpers/rsyslog.js';
import { openAuditSource } from '../../src/audit/index.js';
import type { ChainedRecord } from '../../src/audit/record.js';
import { type RedisHandle, startRedis } from '../helpers/redis.js';

// Whether rsyslogd with TLS is here at all (each suite starts its own receiver).
const probe: RsyslogHandle | undefined = await startRsyslog();
await probe?.dispose();
const suite = probe ? describe : describe.skip;

const metric = (text: string, name: string, target: string): number => {
  const m = new RegExp(`^${name}\\{target="${target}"\\} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : Number.NaN;
};

function deliverySuite(sink: 'file' | 'redis'): void {
  suite(`SIEM delivery from a ${sink} trail to rsyslog over TLS and a FHIR Audit Record Repository`, () => {
    let rsyslog: RsyslogHandle | undefined;
    let redis: RedisHandle | undefined;
    let arr: RunningUpstream;
    let stack: Stack;
    let stateDir: string;
    let second: RunningGateway | undefined;
    let siem: GatewayConfig['siem'];

    /** The whole trail, from the sink the gateways write. */
    async function trailIds(): Promise<string[]> {
      if (sink === 'file') return (await stack.auditRecords()).map((r) => r.id);
      const out: string[] = [];
      for await (const item of openAuditSource(redis!.url)) if ('record' in item) out.push((item.record as ChainedRecord).id);
      return out;
    }

    beforeAll(async () => {
      rsyslog = await startRsyslog();
      if (sink === 'redis') redis = await startRedis();
      arr = await startFhirUpstream({ seed: false });
      stateDir = mkdtempSync(join(tmpdir(), 'phi-siem-state-'));
      siem = {
        stateDir,
        baseDelayMs: 50,
        maxDelayMs: 200,
        pollMs: 50,
        targets: [
          { name: 'soc', type: 'syslog', url: rsyslog!.url, format: 'record', tls: { ca: rsyslog!.ca } },
          { name: 'arr', type: 'fhir', url: arr.url, auth: { type: 'none' }, batchSize: 20 },
          // The receiver's CA is not this one: every delivery fails the TLS handshake.
          { name: 'untrusted', type: 'syslog', url: rsyslog!.url, format: 'record', tls: { ca: rsyslog!.clientCert } },
        ],
      };
      stack = await startStack({ configure: (c) => ({ ...c, siem }), ...(sink === 'redis' ? { env: { PHI_GATEWAY_AUDIT: redis!.url } } : {}) });
    }, 60_000);
    afterAll(async () => {
      await second?.close();
      await stack?.close();
      await arr?.close();
      await rsyslog?.dispose();
      await redis?.dispose();
      rmSync(stateDir, { recursive: true, force: true });
    });

    const adminBase = () => `http://${stack.config.admin.host}:${second ? (second.admin!.server.address() as { port: number }).port : (stack.gateway.admin!.server.address() as { port: number }).port}`;
    const metrics = async () => (await fetch(`${adminBase()}/metrics`)).text();

    async function syslogIds(): Promise<string[]> {
      return (await rsyslog!.messages()).map((l) => parseSyslogMessage(l).sd['phi-gateway@32473']?.recordId ?? '');
    }
    async function arrIds(): Promise<string[]> {
      const ids: string[] = [];
      let url: string | undefined = `${arr.url}/AuditEvent?_count=1000`;
      while (url) {
        const b = (await (await fetch(url)).json()) as { entry?: Array<{ resource: { meta?: { tag?: Array<{ system: string; code: string }> } } }>; link?: Array<{ relation: string; url: string }> };
        for (const e of b.entry ?? []) ids.push(e.resource.meta?.tag?.find((t) => t.system === AUDIT_EVENT_TAG_SYSTEM)?.code ?? '');
        url = b.link?.find((l) => l.relation === 'next')?.url;
      }
      return ids;
    }
    const read = () => stack.get(`/Patient/${DEMO.patients.alice}`, { role: 'clinician', purpose: 'TREAT' });

    it('delivers every record exactly once per target across a receiver outage and a gateway restart', async () => {
      for (let i = 0; i < 5; i++) expect((await read()).status).toBe(200);
      await expect.poll(async () => metric(await metrics(), 'phi_gateway_siem_lag_records', 'soc')).toBe(0);

      // Syslog over TLS has no acknowledgement (RFC 5425): what the receiver has not read when it
      // stops is lost with it. The outage starts once rsyslog holds everything delivered so far.
      const delivered = await trailIds();
      await expect
        .poll(
          async () => {
            const got = new Set(await syslogIds());
            return delivered.every((id) => got.has(id));
          },
          { timeout: 10_000 },
        )
        .toBe(true);
      // Outage: requests are answered as before; the lag and the failures show.
      await rsyslog!.stop();
      for (let i = 0; i < 5; i++) {
        const t0 = Date.now();
        expect((await read()).status).toBe(200);
        expect(Date.now() - t0).toBeLessThan(2000);
      }
      await expect.poll(async () => metric(await metrics(), 'phi_gateway_siem_failures_total', 'soc')).toBeGreaterThan(0);
      const during = await metrics();
      expect(metric(during, 'phi_gateway_siem_lag_records', 'soc')).toBeGreaterThan(0);
      expect(metric(during, 'phi_gateway_siem_oldest_undelivered_age_seconds', 'soc')).toBeGreaterThan(0);
      await rsyslog!.start();
      await expect.poll(async () => metric(await metrics(), 'phi_gateway_siem_lag_records', 'soc'), { timeout: 20_000 }).toBe(0);

      // Restart on the same audit and state directories.
      await stack.gateway.close();
      second = await startGateway(stack.config, { logger: pino({ level: 'silent' }) });
      const base = second.url;
      for (let i = 0; i < 5; i++) {
        const r = await fetch(`${base}/Patient/${DEMO.patients.alice}`, { headers: { authorization: `Bearer ${await stack.token('clinician')}`, 'x-purpose-of-use': 'TREAT' } });
        expect(r.status).toBe(200);
      }
      await expect.poll(async () => metric(await metrics(), 'phi_gateway_siem_lag_records', 'soc'), { timeout: 20_000 }).toBe(0);
      await expect.poll(async () => metric(await metrics(), 'phi_gateway_siem_lag_records', 'arr'), { timeout: 20_000 }).toBe(0);

      const trail = await trailIds();
      // The second gateway's own records up to now (its seal comes at close).
      const fromSyslog = await syslogIds();
      expect(new Set(fromSyslog).size).toBe(fromSyslog.length);
      expect([...fromSyslog].sort()).toEqual([...trail].sort());
      // The ARR: one AuditEvent per record (a record releasing several patients has one per patient, tagged id-n).
      const fromArr = (await arrIds()).map((c) => c.replace(/-\d+$/, ''));
      expect(new Set(await arrIds()).size).toBe(fromArr.length);
      expect(new Set(fromArr)).toEqual(new Set(trail));
    }, 120_000);

    it('a receiver it does not trust fails delivery, shows in /metrics and /readyz, and requests are unaffected', async () => {
      const m = await metrics();
      expect(metric(m, 'phi_gateway_siem_failures_total', 'untrusted')).toBeGreaterThan(0);
      expect(metric(m, 'phi_gateway_siem_delivered_total', 'untrusted')).toBe(0);
      expect(metric(m, 'phi_gateway_siem_lag_records', 'untrusted')).toBeGreaterThan(0);
      const ready = await fetch(`${adminBase()}/readyz`);
      expect(ready.status).toBe(200);
      const body = (await ready.json()) as { siem: { targets: Array<{ name: string; status: string; lastError?: string }> } };
      const untrusted = body.siem.targets.find((t) => t.name === 'untrusted')!;
      expect(untrusted.status).toBe('failing');
      expect(untrusted.lastError).toMatch(/^[A-Z_]+$/);
      expect(body.siem.targets.find((t) => t.name === 'soc')!.status).toBe('delivering');
    });
  });
}

deliverySuite('file');
deliverySuite('redis');
