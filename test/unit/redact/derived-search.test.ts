// A role may search on what it can see: derived from the R4 SearchParameter paths and the plan.
import { describe, expect, it } from 'vitest';
import { loadPolicy } from '../../../src/config/load.js';

const policy = loadPolicy(new URL('../../../config/policy.yaml', import.meta.url).pathname, {
  pseudonymKey: 'derived-search-test-key-0123456789abcdef',
}).policy;

function params(role: string, purpose: string, type: string): Set<string> {
  const plan = policy.roles.get(role)?.plans.get(purpose)?.types.get(type);
  if (!plan) throw new Error(`no plan for ${role}/${purpose}/${type}`);
  return new Set(plan.searchParams);
}

describe('derived search parameters', () => {
  it('a reference search compares the reference, so removing display does not hide it', () => {
    const coder = params('coder', 'HOPERAT', 'Condition');
    expect(coder.has('patient')).toBe(true);
    expect(coder.has('subject')).toBe(true);
    expect(coder.has('code')).toBe(true);
  });

  it('identifiers with a hidden SSN are not searchable (searching them would confirm an SSN)', () => {
    expect(params('billing', 'HPAYMT', 'Patient').has('identifier')).toBe(false);
    expect(params('coder', 'HOPERAT', 'Patient').has('identifier')).toBe(false);
  });

  it('removed telecom is not searchable; kept telecom is', () => {
    const billing = params('billing', 'HPAYMT', 'Patient');
    for (const p of ['telecom', 'phone', 'email']) expect(billing.has(p)).toBe(false);
    expect(params('front-desk', 'HOPERAT', 'Patient').has('phone')).toBe(true);
  });

  it('generalized or pseudonymized elements are not searchable for research', () => {
    const patient = params('researcher', 'HRESCH', 'Patient');
    expect(patient.has('birthdate')).toBe(false); // year only
    expect(patient.has('address-postalcode')).toBe(false); // zip3
    expect(patient.has('name')).toBe(false);
    expect(patient.has('_lastUpdated')).toBe(false); // meta.lastUpdated is removed
    expect(patient.has('address-state')).toBe(true); // kept by Safe Harbor
    const obs = params('researcher', 'HRESCH', 'Observation');
    // References are pseudonymized: searched by pseudonym (translated by the gateway), never sorted.
    expect(obs.has('patient')).toBe(true);
    expect(obs.has('subject')).toBe(true);
    expect(obs.has('date')).toBe(false);
    expect(obs.has('value-quantity')).toBe(false); // an age observation's value is capped
    expect(obs.has('code')).toBe(true);
  });

  it('billing may search conditions by patient but not on removed notes or onset', () => {
    const c = params('billing', 'HPAYMT', 'Condition');
    expect(c.has('patient')).toBe(true);
    expect(c.has('onset-date')).toBe(false);
  });
});
