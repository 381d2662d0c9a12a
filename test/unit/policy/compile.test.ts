import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadPolicy } from '../../../src/config/load.js';
import { CONTROL_SEARCH_PARAMS, compilePolicy, type ElementCompiler } from '../../../src/policy/compile.js';
import type { PolicyFile } from '../../../src/policy/model.js';

const SHIPPED = 'config/policy.yaml';
const loaded = loadPolicy(SHIPPED);
const { policy } = loaded;

describe('compiling the shipped policy', () => {
  it('versions the policy by the sha256 of its bytes', () => {
    const hex = createHash('sha256').update(readFileSync(SHIPPED)).digest('hex');
    expect(policy.version).toBe(hex.slice(0, 16));
    expect(policy.version).toMatch(/^[0-9a-f]{16}$/);
  });

  it('gives a role every descendant of a granted purpose, granted by the parent', () => {
    const billing = policy.roles.get('billing')!;
    expect([...billing.plans.keys()].sort()).toEqual(['CLMATTCH', 'COVAUTH', 'COVERAGE', 'ELIGDTRM', 'ELIGVER', 'ENROLLM', 'HPAYMT', 'REMITADV']);
    expect(billing.plans.get('ELIGVER')).toMatchObject({ purpose: 'ELIGVER', dataSet: 'billing', grantedBy: 'roles.billing.purposes.HPAYMT' });
  });

  it('prefers an explicit grant over the inherited one', () => {
    const clinician = policy.roles.get('clinician')!;
    expect(clinician.plans.get('COC')?.grantedBy).toBe('roles.clinician.purposes.COC');
    expect(clinician.plans.get('ETREAT')?.grantedBy).toBe('roles.clinician.purposes.TREAT');
  });

  it('never lets BTG be inherited from TREAT', () => {
    for (const role of policy.roles.values()) expect(role.plans.has('BTG')).toBe(false);
    expect(policy.roles.get('clinician')?.breakGlass).toBe(true);
    expect(policy.roles.get('billing')?.breakGlass).toBe(false);
  });

  it('lets HOPERAT roles declare HCOMPL (audit export is gated by capability elsewhere)', () => {
    expect(policy.roles.get('front-desk')?.plans.get('HCOMPL')?.grantedBy).toBe('roles.front-desk.purposes.HOPERAT');
    expect(policy.roles.get('front-desk')?.capabilities.has('audit-export')).toBe(false);
    expect([...policy.roles.get('privacy-officer')!.capabilities].sort()).toEqual(['audit-export', 'break-glass-review']);
    expect(policy.roles.get('auditor')?.plans.get('HCOMPL')?.types.size).toBe(0);
  });

  it('shares one compiled data set between roles and purposes', () => {
    const coder = policy.roles.get('coder')!;
    expect(coder.plans.get('HPAYMT')?.types).toBe(coder.plans.get('HOPERAT')?.types);
  });

  it('billing: the table of SPEC 4', () => {
    const types = policy.roles.get('billing')!.plans.get('HPAYMT')!.types;
    expect([...types.keys()].sort()).toEqual(
      ['Claim', 'Condition', 'Coverage', 'Encounter', 'ExplanationOfBenefit', 'Organization', 'Patient', 'Practitioner', 'Procedure'],
    );
    const patient = types.get('Patient')!;
    expect(patient.rule).toBe('dataSets.billing.rules[0]');
    expect([...patient.interactions].sort()).toEqual(['read', 'search']);
    expect(patient.elements.keepsAll).toBe(false);
    for (const label of ['PSY', 'PSYTHPN', 'SUD', 'HIV', 'ETH', 'SDV']) {
      expect(patient.withhold.match([{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: label }])).toBeDefined();
    }
    expect(patient.withhold.match([{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' }])).toBeDefined();
    expect(patient.withhold.match([{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'N' }])).toBeUndefined();
    // Search only on what billing can see: telecom is removed, name is kept.
    expect(patient.searchParams.has('name')).toBe(true);
    expect(patient.searchParams.has('telecom')).toBe(false);
    expect(patient.searchParams.has('phone')).toBe(false);
    expect(types.has('Observation')).toBe(false);
    expect(types.has('DocumentReference')).toBe(false);
  });

  it('clinician: everything clinical, $everything on Patient only, R and V withheld', () => {
    const types = policy.roles.get('clinician')!.plans.get('TREAT')!.types;
    expect(types.size).toBe(23);
    expect([...types.get('Patient')!.operations]).toEqual(['$everything']);
    expect(types.get('Observation')!.operations.size).toBe(0);
    expect([...types.get('Observation')!.interactions].sort()).toEqual(['create', 'history', 'read', 'search', 'update']);
    expect(types.get('Observation')!.elements.keepsAll).toBe(true);
    expect(types.get('Observation')!.withhold.labels).toEqual([
      'http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R',
      'http://terminology.hl7.org/CodeSystem/v3-Confidentiality|V',
    ]);
  });

  it('every plan allows the control parameters', () => {
    for (const role of policy.roles.values()) {
      for (const plan of role.plans.values()) {
        for (const t of plan.types.values()) {
          for (const p of CONTROL_SEARCH_PARAMS) {
            // Safe Harbor removes meta.lastUpdated: searching on it would bisect the hidden instant.
            const refused = t.deidentify === 'safe-harbor' && p === '_lastUpdated';
            expect(t.searchParams.has(p)).toBe(!refused);
          }
        }
      }
    }
  });

  it('researcher: Safe Harbor transforms remove date searches (transformed values are oracles)', () => {
    const obs = policy.roles.get('researcher')!.plans.get('HRESCH')!.types.get('Observation')!;
    expect(obs.searchParams.has('date')).toBe(false);
    expect(obs.searchParams.has('code')).toBe(true);
    expect(policy.restrictedZip3).toEqual(new Set(['036', '059', '063', '102', '203', '556', '692', '790', '821', '823', '830', '831', '878', '879', '884', '890', '893']));
  });

  it('break-glass: the emergency data set with nothing withheld', () => {
    const bg = policy.breakGlass!;
    expect(bg).toMatchObject({ dataSet: 'emergency', sessionMs: 3_600_000, minReasonLength: 20, maxSessionsPerDay: 5 });
    expect(bg.plan).toMatchObject({ role: 'break-glass', purpose: 'BTG', grantedBy: 'breakGlass', compartment: undefined });
    expect(bg.plan.types.size).toBe(23);
    for (const t of bg.plan.types.values()) expect(t.withhold.labels).toEqual([]);
  });

  it('is frozen', () => {
    expect(Object.isFrozen(policy)).toBe(true);
    expect(Object.isFrozen(policy.roles.get('billing')!.plans.get('HPAYMT'))).toBe(true);
    expect(Object.isFrozen(loaded.raw.roles.billing.purposes)).toBe(true);
  });
});

describe('compilePolicy problems', () => {
  const fake: ElementCompiler = { compileElementPlan: () => ({ keepsAll: true, describe: () => [] }) };
  const base: PolicyFile = {
    version: 1,
    purposes: { TREAT: { display: 't' }, BTG: { display: 'b', parent: 'TREAT' } },
    dataSets: { d: { rules: [{ types: ['Patient'] }] } },
    roles: { r: { purposes: { TREAT: 'd' } } },
  };
  const problems = (raw: PolicyFile) => {
    const r = compilePolicy(raw, 'x', fake);
    return r.ok ? [] : r.problems.map((p) => `${p.path}: ${p.message}`);
  };

  it('a valid policy has none', () => {
    expect(problems(base)).toEqual([]);
  });

  it.each([
    ['BTG granted as a purpose', { ...base, roles: { r: { purposes: { BTG: 'd' } } } }, 'roles.r.purposes.BTG: BTG cannot be granted'],
    ['breakGlass role without a breakGlass section', { ...base, roles: { r: { purposes: { TREAT: 'd' }, breakGlass: true } } }, 'roles.r.breakGlass: role is break-glass eligible'],
    ['breakGlass without BTG purpose', { ...base, purposes: { TREAT: { display: 't' } }, breakGlass: { dataSet: 'd' } }, 'breakGlass: breakGlass is configured but purpose BTG'],
    ['purpose cycle', { ...base, purposes: { A: { display: 'a', parent: 'B' }, B: { display: 'b', parent: 'A' } }, roles: {} }, 'purposes.A.parent: purpose hierarchy has a cycle'],
    ['zip3 without safeHarbor', { ...base, dataSets: { d: { rules: [{ types: ['Patient'], transforms: [{ select: 'address.postalCode', apply: 'zip3' }] }] } } }, 'dataSets.d.rules[0].transforms[0].apply: zip3 needs safeHarbor.restrictedZip3'],
    ['safe-harbor without safeHarbor', { ...base, dataSets: { d: { deidentify: 'safe-harbor', rules: [{ types: ['Patient'] }] } } }, 'dataSets.d.deidentify: safe-harbor needs safeHarbor.restrictedZip3'],
    [
      'a search the profile would undo',
      { ...base, safeHarbor: { restrictedZip3: [] }, dataSets: { d: { deidentify: 'safe-harbor', rules: [{ types: ['Patient'], search: ['gender', 'birthdate'] }] } } },
      "dataSets.d.rules[0].search[1]: Patient: 'birthdate' searches values the safe-harbor profile generalizes or removes",
    ],
    ['selector error without a where', { ...base }, 'dataSets.d.rules[0]: Patient: boom'],
  ] as Array<[string, PolicyFile, string]>)('%s', (name, raw, expected) => {
    if (name === 'selector error without a where') {
      const throwing: ElementCompiler = {
        compileElementPlan: () => {
          throw new Error('boom');
        },
      };
      const r = compilePolicy(raw, 'x', throwing);
      expect(r.ok ? [] : r.problems.map((p) => `${p.path}: ${p.message}`)).toEqual([expected]);
      return;
    }
    expect(problems(raw).some((p) => p.startsWith(expected)), problems(raw).join('\n')).toBe(true);
  });

  it('the limited data set may search dates and ZIP codes that safe harbor generalizes', () => {
    const lds: PolicyFile = { ...base, dataSets: { d: { deidentify: 'limited-data-set', rules: [{ types: ['Patient'], search: ['birthdate', 'address-postalcode'] }] } } };
    expect(problems(lds)).toEqual([]);
    const plan = compilePolicy(lds, 'x', fake).policy!.roles.get('r')!.plans.get('TREAT')!.types.get('Patient')!;
    expect(plan.deidentify).toBe('limited-data-set');
    expect([...plan.searchParams].filter((p) => ['birthdate', 'address-postalcode', '_lastUpdated', '_id'].includes(p)).sort()).toEqual(['_id', '_lastUpdated', 'address-postalcode', 'birthdate']);
  });

  it('a policy with problems yields no compiled policy at all', () => {
    const r = compilePolicy({ ...base, roles: { r: { purposes: { TREAT: 'missing' } } } }, 'x', fake);
    expect(r.ok).toBe(false);
    expect(r.policy).toBeUndefined();
  });
});

describe('compilePolicy: accessRequests', () => {
  const fake: ElementCompiler = { compileElementPlan: () => ({ keepsAll: true, describe: () => [] }) };
  const base: PolicyFile = {
    version: 1,
    purposes: { TREAT: { display: 't' }, HPAYMT: { display: 'p' }, BTG: { display: 'b', parent: 'TREAT' } },
    dataSets: {
      own: { rules: [{ types: ['Claim'] }] },
      more: { rules: [{ types: ['DocumentReference'], interactions: ['read', 'search'] }] },
      writes: { rules: [{ types: ['DocumentReference'], interactions: ['read', 'create'] }] },
      deid: { deidentify: 'limited-data-set', rules: [{ types: ['Patient'] }] },
    },
    roles: { clerk: { purposes: { HPAYMT: 'own' } }, officer: { purposes: { TREAT: 'own' } }, self: { purposes: { HPAYMT: 'own' }, compartment: 'patient' } },
    accessRequests: { dataSets: { more: { requesters: ['clerk'], purposes: ['HPAYMT'], approvers: ['officer'] } } },
  } as PolicyFile;
  const problems = (raw: PolicyFile) => {
    const r = compilePolicy(raw, 'x', fake);
    return r.ok ? [] : r.problems.map((p) => `${p.path}: ${p.message}`);
  };
  const withSet = (over: Record<string, unknown>, extra: Partial<PolicyFile> = {}) =>
    ({ ...base, ...extra, accessRequests: { ...(extra.accessRequests ?? {}), dataSets: { more: { requesters: ['clerk'], purposes: ['HPAYMT'], approvers: ['officer'], ...over } } } }) as PolicyFile;

  it('a valid section compiles with its defaults', () => {
    const r = compilePolicy(base, 'x', fake);
    expect(r.ok).toBe(true);
    const ar = r.ok ? r.policy.accessRequests! : undefined;
    expect(ar).toMatchObject({ maxMs: 1440 * 60_000, minJustificationLength: 20, maxPatients: 20, maxPending: 5 });
    expect([...ar!.dataSets.get('more')!.types.keys()]).toEqual(['DocumentReference']);
    expect(ar!.dataSets.get('more')!.rule).toBe('accessRequests.dataSets.more');
  });

  it.each([
    ['an unknown data set', { ...base, accessRequests: { dataSets: { nope: { requesters: ['clerk'], purposes: ['HPAYMT'], approvers: ['officer'] } } } } as PolicyFile, "accessRequests.dataSets.nope: unknown data set 'nope'"],
    ['a data set that writes', { ...base, accessRequests: { dataSets: { writes: { requesters: ['clerk'], purposes: ['HPAYMT'], approvers: ['officer'] } } } } as PolicyFile, 'accessRequests.dataSets.writes: a requestable data set grants reads only: DocumentReference grants create'],
    ['a de-identifying data set', { ...base, accessRequests: { dataSets: { deid: { requesters: ['clerk'], purposes: ['HPAYMT'], approvers: ['officer'] } } } } as PolicyFile, 'accessRequests.dataSets.deid: a requestable data set cannot de-identify'],
    ['BTG', withSet({ purposes: ['BTG'] }), 'accessRequests.dataSets.more.purposes[0]: BTG cannot be requested'],
    ['an unknown purpose', withSet({ purposes: ['HPAYMNT'] }), "accessRequests.dataSets.more.purposes[0]: unknown purpose 'HPAYMNT'"],
    ['a requester without the purpose', withSet({ requesters: ['officer'] }), 'accessRequests.dataSets.more.requesters[0]: role officer does not hold purpose HPAYMT'],
    ['a patient-compartment requester', withSet({ requesters: ['self'] }), 'accessRequests.dataSets.more.requesters[0]: role self is limited to a patient compartment'],
    ['an unknown approver', withSet({ approvers: ['boss'] }), "accessRequests.dataSets.more.approvers[0]: unknown role 'boss'"],
    ['a data set longer than the section', withSet({ maxMinutes: 120 }, { accessRequests: { maxMinutes: 60, dataSets: {} } }), 'accessRequests.dataSets.more.maxMinutes: longer than accessRequests.maxMinutes (60)'],
  ] as Array<[string, PolicyFile, string]>)('refuses %s', (_name, raw, expected) => {
    expect(problems(raw).some((p) => p.startsWith(expected)), problems(raw).join('\n')).toBe(true);
  });

  it('the shipped policy names its requestable data sets with their approvers', () => {
    const ar = policy.accessRequests!;
    expect([...ar.dataSets.keys()].sort()).toEqual(['claim-attachment', 'compliance-chart']);
    for (const ds of ar.dataSets.values()) {
      expect(ds.approvers.size).toBeGreaterThan(0);
      // Nobody approves a data set they may request: separation of duties by policy as well.
      for (const r of ds.requesters) expect(ds.approvers.has(r), `${ds.name} ${r}`).toBe(false);
    }
  });
});
