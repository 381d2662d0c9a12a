// The FHIR target's Bundle entries: the BALP AuditEvents of each record as conditional creates,
// each tagged with its key (the record id, or `<id>-<n>` per patient), no client-chosen id.
import { describe, expect, it } from 'vitest';
import { chainRecords, genesisHead } from '../../../src/audit/chain.js';
import { toAuditEvents } from '../../../src/audit/fhir.js';
import type { AuditRecord, ChainedRecord } from '../../../src/audit/record.js';
import { AUDIT_EVENT_TAG_SYSTEM, auditEventEntries } from '../../../src/siem/fhir-target.js';
import { sampleRecord } from '../audit/fixtures.js';

function chained(...recs: AuditRecord[]): ChainedRecord[] {
  return chainRecords(genesisHead('w'), recs).chained;
}

describe('auditEventEntries', () => {
  it('one conditional create per AuditEvent, tagged with the record id (per patient: id-n)', () => {
    const recs = chained(
      sampleRecord(1),
      sampleRecord(2, { disclosed: { resources: [], patients: ['a', 'b'], elementsRemoved: 0, resourcesWithheld: 0 } }),
    );
    const entries = auditEventEntries(recs);
    expect(entries).toHaveLength(3);
    const keys = entries.map((e) => e.resource?.meta?.tag?.[0]);
    expect(keys).toEqual([
      { system: AUDIT_EVENT_TAG_SYSTEM, code: 'req-1' },
      { system: AUDIT_EVENT_TAG_SYSTEM, code: 'req-2-1' },
      { system: AUDIT_EVENT_TAG_SYSTEM, code: 'req-2-2' },
    ]);
    for (const e of entries) {
      expect(e.request?.method).toBe('POST');
      expect(e.request?.url).toBe('AuditEvent');
      const q = new URLSearchParams(e.request?.ifNoneExist ?? '');
      expect(q.get('_tag')).toBe(`${AUDIT_EVENT_TAG_SYSTEM}|${e.resource?.meta?.tag?.[0].code}`);
      expect(e.resource && 'id' in e.resource).toBe(false);
    }
    // Otherwise the BALP mapping, unchanged.
    const { id: _id, ...first } = toAuditEvents(recs[0])[0];
    expect(entries[0].resource).toEqual({ ...first, meta: { tag: [{ system: AUDIT_EVENT_TAG_SYSTEM, code: 'req-1' }] } });
  });

  it('escapes the token separators of FHIR search in the conditional query', () => {
    const [r] = chained(sampleRecord(1, { id: 'a|b,c$d\\e' }));
    const [e] = auditEventEntries([r]);
    expect(new URLSearchParams(e.request?.ifNoneExist ?? '').get('_tag')).toBe(`${AUDIT_EVENT_TAG_SYSTEM}|a\\|b\\,c\\$d\\\\e`);
    expect(e.resource?.meta?.tag?.[0].code).toBe('a|b,c$d\\e');
  });
});
