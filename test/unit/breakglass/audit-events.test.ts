// The Security Alert records the service writes come out of the FHIR export as DCM 110113 with
// 110127 (started) / 110138 (stopped), naming the patient and the session.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { toAuditEvents } from '../../../src/audit/fhir.js';
import type { ChainedRecord } from '../../../src/audit/record.js';
import { Alerter } from '../../../src/breakglass/alerts.js';
import { FileSessionStore } from '../../../src/breakglass/file-store.js';
import { FileOutbox } from '../../../src/breakglass/outbox.js';
import { createBreakGlassService } from '../../../src/breakglass/service.js';
import { Clock, capturingLogger, MemorySink, principal, request, shippedPolicy } from './helpers.js';

describe('break-glass Security Alert events', () => {
  it('export as DCM 110113 / 110127 and 110138 with the patient and the session', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bg-fhir-'));
    try {
      const clock = new Clock();
      const audit = new MemorySink();
      const policy = shippedPolicy();
      const { logger } = capturingLogger();
      const alerter = new Alerter({ outbox: await FileOutbox.open(dir), audit, logger, webhook: undefined, policyVersion: () => policy.version, now: clock.now, newId: () => crypto.randomUUID() });
      const svc = createBreakGlassService({ store: await FileSessionStore.open(dir), alerter, audit, logger, policy: () => policy, publicBaseUrl: 'http://x/fhir', now: clock.now, sweepMs: 0 });
      const s = await svc.open({ principal: principal('dr-a'), request: request('/Patient/vip'), reason: 'Unconscious patient in the ED, chart restricted', requestId: 'rq' });
      clock.advance(policy.breakGlass!.sessionMs);
      await svc.sweep();
      await svc.close();
      const chained = audit.records.map((r, i) => ({ ...r, chain: { writer: 'w', seq: i, prev: '', hash: '' } }) as ChainedRecord);
      const [start, end] = chained.map((r) => toAuditEvents(r)[0]);
      expect(start.type).toMatchObject({ code: '110113' });
      expect(start.subtype).toMatchObject([{ code: '110127' }]);
      expect(end.subtype).toMatchObject([{ code: '110138' }]);
      for (const ev of [start, end]) {
        expect(ev.entity?.some((e) => e.what?.reference === 'Patient/vip')).toBe(true);
        expect(ev.entity?.some((e) => e.what?.identifier?.value === s.session)).toBe(true);
        expect(ev.purposeOfEvent?.[0]?.coding?.[0]?.code).toBe('BTG');
        expect(ev.outcome).toBe('0');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
