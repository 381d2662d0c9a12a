// The usage report's element variance: per role and purpose, the top-level elements the policy
// keeps for a granted type against those the records show disclosed.
import { describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../../src/audit/record.js';
import { loadPolicy } from '../../../src/config/policy-file.js';
import { AuditDigest, type Table } from '../../../src/report/digest.js';

const policy = loadPolicy(new URL('../../../config/policy.yaml', import.meta.url).pathname).policy;
const NOW = new Date('2024-06-05T00:00:00Z');

function rec(role: string, purpose: string, resources: string[], elements?: unknown): AuditRecord {
  const type = resources[0]?.split('/')[0];
  return {
    id: Math.random().toString(36),
    time: '2024-06-03T14:10:00.000Z',
    kind: 'fhir',
    actor: { sub: `${role}-1`, roles: [role] },
    purpose,
    role,
    client: { address: '127.0.0.1' },
    request: { method: 'GET', path: `/${resources[0] ?? 'Patient'}`, interaction: 'read', resourceType: type },
    decision: 'allow',
    rule: 'r',
    disclosed: { resources, patients: [], elementsRemoved: 0, resourcesWithheld: 0, ...(elements !== undefined ? { elements: elements as Record<string, string[]> } : {}) },
    status: 200,
    upstreamStatus: 200,
    durations: { totalMs: 1 },
    policyVersion: policy.version,
  };
}

function usage(records: AuditRecord[]): { types: string[]; elements: string[]; grants: Table } {
  const d = new AuditDigest();
  for (const r of records) d.add(r);
  const [types, elements, grants] = d.report('usage', { policy, now: NOW }).tables;
  expect(elements.title).toBe('Elements never disclosed (candidates for removal)');
  return {
    types: types.rows.map((r) => r.slice(0, 3).join(' ')),
    elements: elements.rows.map((r) => r.slice(0, 4).join(' ')),
    grants,
  };
}

const row = (t: Table, role: string, type: string) => t.rows.find((r) => r[0] === role && r[2] === type)!;

describe('usage report: elements', () => {
  it("names billing's granted Patient elements that no disclosed Patient carried", () => {
    const u = usage([
      rec('billing', 'HPAYMT', ['Patient/a'], { Patient: ['birthDate', 'gender', 'id', 'meta', 'name'] }),
      rec('billing', 'HPAYMT', ['Patient/b'], { Patient: ['id', 'identifier', 'name'] }),
    ]);
    // Granted: identifier, name, gender, birthDate, address (id and meta are always kept, never named).
    expect(u.elements.filter((e) => e.startsWith('billing '))).toEqual(['billing HPAYMT Patient Patient.address']);
    expect(row(u.grants, 'billing', 'Patient').slice(3)).toEqual(['used', 2, 2, 'read', 7, 'address']);
    // A type never disclosed is named once, as a type.
    expect(u.types).toContain('billing HPAYMT Claim');
    expect(u.elements.some((e) => e.startsWith('billing HPAYMT Claim '))).toBe(false);
  });

  it('matches a choice grant (deceased[x]) by its concrete names', () => {
    const base = ['birthDate', 'gender', 'id', 'address', 'extension'];
    const without = usage([rec('researcher', 'HRESCH', ['Patient/x'], { Patient: base })]);
    expect(without.elements.filter((e) => e.startsWith('researcher HRESCH Patient'))).toEqual(['researcher HRESCH Patient Patient.deceased[x]']);
    const withIt = usage([rec('researcher', 'HRESCH', ['Patient/x'], { Patient: [...base, 'deceasedBoolean'] })]);
    expect(withIt.elements.filter((e) => e.startsWith('researcher HRESCH Patient'))).toEqual([]);
  });

  it('names no element where any release in the window predates element recording', () => {
    const u = usage([
      rec('billing', 'HPAYMT', ['Patient/a'], { Patient: ['id', 'name'] }),
      rec('billing', 'HPAYMT', ['Patient/b']), // an older record: it might have disclosed anything
      rec('billing', 'HPAYMT', ['Patient/c'], 'garbage'), // not shaped as written: same
    ]);
    expect(u.elements.filter((e) => e.startsWith('billing '))).toEqual([]);
    expect(row(u.grants, 'billing', 'Patient')[8]).toBe('not recorded');
    expect(u.types).not.toContain('billing HPAYMT Patient');
  });

  it('counts a type disclosed only as a contained resource as used', () => {
    const u = usage([rec('clinician', 'TREAT', ['Condition/c'], { Condition: ['code', 'contained', 'id'], Practitioner: ['id', 'name'] })]);
    expect(u.types).not.toContain('clinician TREAT Practitioner');
    expect(u.types).toContain('clinician TREAT Organization');
    expect(row(u.grants, 'clinician', 'Practitioner')[3]).toBe('used');
    expect(u.elements).toContain('clinician TREAT Practitioner Practitioner.telecom');
    expect(u.elements).not.toContain('clinician TREAT Practitioner Practitioner.name');
  });

  it('children of a granting purpose share its grant', () => {
    // CLMATTCH is a child of HPAYMT: its disclosures count against billing's HPAYMT data set.
    const u = usage([
      rec('billing', 'HPAYMT', ['Patient/a'], { Patient: ['id', 'name', 'gender', 'birthDate'] }),
      rec('billing', 'CLMATTCH', ['Patient/b'], { Patient: ['id', 'identifier', 'address'] }),
    ]);
    expect(u.elements.filter((e) => e.startsWith('billing '))).toEqual([]);
  });
});
