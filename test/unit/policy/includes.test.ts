/**
 * `_include` / `_revinclude` are judged before the upstream is asked (BYPASSES 1), with the
 * shipped policy, from raw requests through the real classifier: refused when they reach a type
 * the role cannot see, narrowed to the granted targets when they name none.
 */
import { describe, expect, it } from 'vitest';
import type { Principal } from '../../../src/auth/principal.js';
import { loadPolicy } from '../../../src/config/load.js';
import { isR4ResourceType } from '../../../src/fhir/resource-types.js';
import { classify, upstreamUrl } from '../../../src/policy/classify.js';
import { type Decision, decide } from '../../../src/policy/decide.js';
import { narrowIncludes } from '../../../src/policy/includes.js';

const { policy } = loadPolicy('config/policy.yaml');

function who(roles: string[]): Principal {
  return { iss: 'i', sub: 's', clientId: undefined, jti: undefined, roles, tokenPurposes: undefined, patient: undefined, scopes: undefined, familyName: undefined, exp: 2e9 };
}
const PURPOSE: Record<string, string> = { clinician: 'TREAT', billing: 'HPAYMT', 'front-desk': 'HOPERAT', researcher: 'HRESCH' };

function classified(url: string, method = 'GET', body?: unknown) {
  return classify(
    { method, url, headers: body === undefined ? {} : { 'content-type': 'application/fhir+json' }, body: body === undefined ? undefined : Buffer.from(JSON.stringify(body)) },
    { isResourceType: isR4ResourceType, maxBodyBytes: 1 << 20 },
  );
}
function run(url: string, role = 'clinician'): Decision {
  return decide({ policy, principal: who([role]), purpose: PURPOSE[role]!, request: classified(url) });
}
const code = (d: Decision) => (d.allow ? 'allow' : d.code);
/** What would be forwarded: the narrowed request when there is one. */
const forwarded = (d: Decision, url: string) => {
  if (!d.allow) throw new Error(`denied: ${d.code} ${d.rule}`);
  return upstreamUrl(d.request ?? classified(url));
};
const q = (s: string) => s.replaceAll(':', '%3A');

describe('includes that reach what the role cannot see are refused', () => {
  it.each([
    ['a wildcard include', '/Encounter?_include=*'],
    ['a wildcard revinclude', '/Patient?_revinclude=*'],
    ['a wildcard parameter', '/Encounter?_include=Encounter:*'],
    ['a wildcard target', '/Encounter?_include=Encounter:subject:*'],
    ['a wildcard under :iterate', '/Encounter?_include:iterate=*'],
    ['a named target outside the plan', '/Encounter?_include=Encounter:subject:Group'],
    ['a source outside the plan (:iterate)', '/Encounter?_include:iterate=Claim:patient'],
    ['a revinclude source outside the plan', '/Patient?_revinclude=Claim:patient'],
    ['an unknown parameter', '/Encounter?_include=Encounter:no-such-param'],
    ['a parameter that is not a reference', '/Encounter?_include=Encounter:status'],
    ['a target its parameter cannot reach', '/Encounter?_include=Encounter:subject:Practitioner'],
    ['a source other than the searched type', '/Encounter?_include=Observation:subject:Patient'],
    ['a revinclude target other than the searched type', '/Encounter?_revinclude=Observation:subject:Patient'],
    ['a revinclude whose parameter cannot reach the searched type', '/Practitioner?_revinclude=Observation:subject'],
    ['no part after the type', '/Encounter?_include=Encounter'],
    ['an empty part', '/Encounter?_include=Encounter:'],
    ['an empty source', '/Encounter?_include=:subject'],
    ['too many parts', '/Encounter?_include=Encounter:subject:Patient:x'],
    ['a comma list', '/Encounter?_include=Encounter:subject,Encounter:participant'],
    ['an empty value', '/Encounter?_include='],
    ['an unknown modifier', '/Encounter?_include:deep=Encounter:subject:Patient'],
    ['a lower-case type', '/Encounter?_include=encounter:subject:Patient'],
  ])('%s: type-denied', (_name, url) => {
    expect(code(run(url))).toBe('type-denied');
  });

  it('refuses an untargeted include when none of its targets is granted', () => {
    // front-desk sees Appointment but no Location.
    expect(code(run('/Appointment?_include=Appointment:location', 'front-desk'))).toBe('type-denied');
    // billing sees Patient but no Observation: a reverse include of Observations is refused.
    expect(code(run('/Patient?_revinclude=Observation:subject', 'billing'))).toBe('type-denied');
  });

  it('one refused include refuses the whole search, wherever it stands', () => {
    expect(code(run('/Encounter?_include=Encounter:subject:Patient&_include=Encounter:subject:Group'))).toBe('type-denied');
  });

  it('an include granted to one role is refused to another that lacks the target type', () => {
    expect(code(run('/Encounter?_include=Encounter:diagnosis:Condition', 'clinician'))).toBe('allow');
    expect(code(run('/Patient?_revinclude=Observation:subject:Patient', 'billing'))).toBe('type-denied');
  });
});

describe('untargeted includes are narrowed to the granted targets', () => {
  it('Encounter:subject becomes Encounter:subject:Patient (Group is not granted)', () => {
    const url = '/Encounter?_include=Encounter:subject';
    const d = run(url);
    expect(forwarded(d, url)).toBe(`/Encounter?_include=${q('Encounter:subject:Patient')}`);
    if (d.allow) expect(d.request?.params).toEqual([['_include', 'Encounter:subject:Patient']]);
  });

  it('one parameter per granted target, in place, other parameters in order', () => {
    const url = '/Observation?code=x&_include=Observation:subject&_count=5';
    // Observation.subject reaches Device, Group, Location, Patient; the clinician sees Location and Patient.
    expect(forwarded(run(url), url)).toBe(`/Observation?code=x&_include=${q('Observation:subject:Location')}&_include=${q('Observation:subject:Patient')}&_count=5`);
  });

  it('narrows per role', () => {
    const url = '/Patient?_include=Patient:general-practitioner';
    // Organization, Practitioner and PractitionerRole for the clinician; billing has no PractitionerRole.
    expect(forwarded(run(url, 'clinician'), url)).toBe(
      `/Patient?_include=${q('Patient:general-practitioner:Organization')}&_include=${q('Patient:general-practitioner:Practitioner')}&_include=${q('Patient:general-practitioner:PractitionerRole')}`,
    );
    // Billing's Patient view has no generalPractitioner: following it would show who it names.
    expect(code(run(url, 'billing'))).toBe('type-denied');
  });

  it('an include along a reference the role does not see is refused (researcher: Patient.link)', () => {
    expect(code(run('/Patient?_include=Patient:link', 'researcher'))).toBe('type-denied');
    expect(code(run('/Patient?_revinclude=Patient:link', 'researcher'))).toBe('type-denied');
  });

  it('a reverse include without a target names the searched type', () => {
    const url = '/Patient?_revinclude=Observation:subject';
    expect(forwarded(run(url), url)).toBe(`/Patient?_revinclude=${q('Observation:subject:Patient')}`);
  });

  it(':iterate may start from any granted type and keeps its modifier', () => {
    const url = '/Encounter?_include:iterate=Observation:subject&_revinclude:iterate=Condition:encounter:Encounter';
    expect(forwarded(run(url), url)).toBe(
      `/Encounter?${q('_include:iterate')}=${q('Observation:subject:Location')}&${q('_include:iterate')}=${q('Observation:subject:Patient')}&${q('_revinclude:iterate')}=${q('Condition:encounter:Encounter')}`,
    );
    expect(code(run('/Encounter?_include:recurse=Observation:subject:Patient'))).toBe('allow');
  });

  it('leaves a request whose includes are already exact as it is (no narrowed request)', () => {
    const d = run('/Encounter?_include=Encounter:subject:Patient&_revinclude=Observation:encounter:Encounter');
    expect(d).toMatchObject({ allow: true });
    expect(d.allow && d.request).toBeUndefined();
  });

  it('the narrowed request is a new frozen one; the classified request is untouched', () => {
    const req = classified('/Encounter?_include=Encounter:subject&status=finished');
    const before = JSON.stringify(req);
    const d = decide({ policy, principal: who(['clinician']), purpose: 'TREAT', request: req });
    if (!d.allow || d.request === undefined) throw new Error('expected a narrowed request');
    expect(JSON.stringify(req)).toBe(before);
    expect(Object.isFrozen(d.request)).toBe(true);
    expect(Object.isFrozen(d.request.params)).toBe(true);
    expect(d.request.params.every((p) => Object.isFrozen(p))).toBe(true);
    expect(d.request).toMatchObject({ method: 'GET', interaction: 'search-type', resourceType: 'Encounter', upstreamPath: '/Encounter' });
  });

  it('narrows inside a batch and rewrites the forwarded entry url to match', () => {
    const bundle = {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [{ request: { method: 'GET', url: 'Patient/p1' } }, { request: { method: 'GET', url: 'Encounter?_include=Encounter:subject' } }],
    };
    const req = classified('/', 'POST', bundle);
    const d = decide({ policy, principal: who(['clinician']), purpose: 'TREAT', request: req });
    if (!d.allow || d.request === undefined) throw new Error('expected a narrowed batch');
    const body = d.request.body as { entry: Array<{ request: { url: string } }> };
    expect(body.entry[1]!.request.url).toBe(`Encounter?_include=${q('Encounter:subject:Patient')}`);
    expect(body.entry[0]).toBe((req.body as { entry: unknown[] }).entry[0]);
    expect(d.request.entries?.[1]?.params).toEqual([['_include', 'Encounter:subject:Patient']]);
    // The rebuilt Bundle classifies to what was decided.
    expect(classified('/', 'POST', body).entries?.[1]?.upstreamQuery).toBe(d.request.entries?.[1]?.upstreamQuery);
  });

  it('a refused include in one batch entry refuses the batch', () => {
    const bundle = { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: 'Encounter?_include=Encounter:subject:Group' } }] };
    const d = decide({ policy, principal: who(['clinician']), purpose: 'TREAT', request: classified('/', 'POST', bundle) });
    expect(d).toMatchObject({ allow: false, code: 'type-denied' });
    expect(d.rule).toMatch(/^batch\.entry\[0\]: /);
  });
});

describe('narrowIncludes (pure)', () => {
  const types = policy.roles.get('clinician')!.plans.get('TREAT')!.types;
  it('returns the same array when nothing changes, a new one otherwise', () => {
    const same: Array<readonly [string, string]> = [['code', 'x'], ['_include', 'Encounter:subject:Patient']];
    const r = narrowIncludes(same, 'Encounter', types);
    expect(r.ok && r.params).toBe(same);
    const changed: Array<readonly [string, string]> = [['_include', 'Encounter:subject']];
    const n = narrowIncludes(changed, 'Encounter', types);
    expect(n.ok && n.params).not.toBe(changed);
    expect(changed).toEqual([['_include', 'Encounter:subject']]);
  });

  it('never echoes the value in its reason', () => {
    const r = narrowIncludes([['_include', 'Encounter:secret-value']], 'Encounter', types);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.why).not.toContain('secret');
  });
});

describe('_offset', () => {
  it('is refused: an upstream offset counts withheld resources', () => {
    expect(code(run('/Observation?_offset=10'))).toBe('search-param-denied');
    expect(code(run('/Observation?_offset=0&_count=10'))).toBe('search-param-denied');
  });
});
