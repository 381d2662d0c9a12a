/**
 * A patient-context token searches only its own compartment (SPEC 3, BYPASSES 4 and 11), with the
 * shipped policy, from raw requests through the real classifier: a search naming another patient
 * is refused by the value it names alone; any other search on a compartment type is narrowed to
 * the token's patient before it is sent.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Principal } from '../../../src/auth/principal.js';
import { loadPolicy } from '../../../src/config/load.js';
import { isR4ResourceType } from '../../../src/fhir/resource-types.js';
import { classify, upstreamMethod, upstreamUrl } from '../../../src/policy/classify.js';
import { encodeParams } from '../../../src/policy/classify/url.js';
import { isCompartmentType } from '../../../src/policy/compartment.js';
import { type Decision, decide } from '../../../src/policy/decide.js';
import { paramNamingOtherPatient } from '../../../src/policy/narrow.js';

const { policy } = loadPolicy('config/policy.yaml');
const ME = 'pat-1';

function who(patient: string | undefined, roles = ['clinician']): Principal {
  return { iss: 'i', sub: 's', clientId: undefined, jti: undefined, roles, tokenPurposes: undefined, patient, scopes: undefined, familyName: undefined, exp: 2e9 };
}
function classified(url: string, method = 'GET', body?: unknown, contentType = 'application/fhir+json') {
  const bytes = body === undefined ? undefined : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  return classify({ method, url, headers: bytes === undefined ? {} : { 'content-type': contentType }, body: bytes }, { isResourceType: isR4ResourceType, maxBodyBytes: 1 << 20 });
}
/** `patient` null: a token without a patient claim. */
function run(url: string, patient: string | null = ME): Decision {
  return decide({ policy, principal: who(patient ?? undefined), purpose: 'TREAT', request: classified(url) });
}
const code = (d: Decision) => (d.allow ? 'allow' : d.code);
const sent = (d: Decision, url: string) => {
  if (!d.allow) throw new Error(`denied: ${d.code} ${d.rule}`);
  return upstreamUrl(d.request ?? classified(url));
};
const enc = encodeURIComponent;

describe('a search naming another patient is refused', () => {
  it.each([
    ['patient=X', '/Observation?patient=pat-2'],
    ['patient=Patient/X', '/Observation?patient=Patient/pat-2'],
    ['subject=Patient/X', '/Observation?subject=Patient/pat-2'],
    ['subject=X (bare, the upstream may resolve it to a Patient)', '/Observation?subject=pat-2'],
    ['subject:Patient=X', '/Observation?subject:Patient=pat-2'],
    ['subject:Patient=Patient/X', '/Observation?subject:Patient=Patient/pat-2'],
    ['an absolute URL', `/Observation?subject=${enc('https://other.example/fhir/Patient/pat-2')}`],
    ['a versioned reference', `/Observation?subject=${enc('Patient/pat-2/_history/1')}`],
    ['an OR list with one other patient', `/Observation?patient=${enc('pat-1,pat-2')}`],
    ['an OR list starting with another patient', `/Observation?patient=${enc('Patient/pat-2,Patient/pat-1')}`],
    ['a prefix of the patient id', '/Observation?patient=pat-'],
    ['an extension of the patient id (no substring match)', '/Observation?patient=pat-12'],
    ['an empty value', '/Observation?patient='],
    ['an unparseable reference', `/Observation?subject=${enc('Patient/')}`],
    [':not naming another patient', '/Observation?subject:not=Patient/pat-2'],
    ['the performer as another patient', '/Observation?performer=Patient/pat-2'],
    ['Encounter subject', '/Encounter?subject=Patient/pat-2'],
    ['Condition patient', '/Condition?patient=pat-2'],
    ['Appointment actor', '/Appointment?actor=Patient/pat-2'],
    ['a Patient search by another id', '/Patient?_id=pat-2'],
    ['a Patient search by an id list', `/Patient?_id=${enc('pat-1,pat-2')}`],
    ['a Patient search by link', '/Patient?link=Patient/pat-2'],
    ['POST _search with the patient in the form body', '/Observation/_search'],
    ['a compartment search of the own patient naming another', '/Patient/pat-1/Observation?subject=Patient/pat-2'],
  ])('%s', (_name, url) => {
    const post = url === '/Observation/_search';
    const req = post ? classified(url, 'POST', 'patient=pat-2', 'application/x-www-form-urlencoded') : classified(url);
    const d = decide({ policy, principal: who(ME), purpose: 'TREAT', request: req });
    expect(code(d)).toBe('compartment-denied');
    // The rule names the parameter, never the patient it named.
    expect(d.rule).not.toContain('pat-2');
  });

  it('the same search is allowed (and not narrowed) without a patient claim', () => {
    const d = run('/Observation?patient=pat-2', null);
    expect(code(d)).toBe('allow');
    expect(d.allow && d.request).toBeUndefined();
  });

  it('chains stay refused unless granted, with or without a claim', () => {
    expect(code(run('/Observation?subject.name=x'))).toBe('search-param-denied');
    expect(code(run('/Observation?subject:Patient.name=x'))).toBe('search-param-denied');
    expect(code(run('/Patient?_has:Observation:patient:code=x'))).toBe('search-param-denied');
  });
});

describe('what stays with the patient passes, narrowed', () => {
  it.each([
    ['patient=P', '/Observation?patient=pat-1'],
    ['patient=Patient/P', '/Observation?patient=Patient/pat-1'],
    ['subject:Patient=P', '/Observation?subject:Patient=pat-1'],
    ['an absolute URL of P', `/Observation?subject=${enc('https://gw.example/fhir/Patient/pat-1')}`],
    ['an OR list of P only', `/Observation?patient=${enc('pat-1,Patient/pat-1')}`],
    ['a typed reference to another kind of resource', '/Observation?subject=Location/l1'],
    ['a type modifier naming another kind', '/Observation?subject:Group=g1'],
    ['a practitioner performer', '/Observation?performer=Practitioner/pr1'],
    [':missing', '/Observation?patient:missing=false'],
    [':identifier (bounded by the compartment path)', `/Observation?patient:identifier=${enc('urn:mrn|123')}`],
    ['no patient parameter at all', '/Observation?code=1234-5'],
  ])('%s', (_name, url) => {
    const d = run(url);
    expect(code(d)).toBe('allow');
    expect(sent(d, url)).toBe(`/Patient/pat-1${upstreamUrl(classified(url))}`);
  });

  it('a search on a compartment type becomes the compartment search, same parameters, same interaction', () => {
    const url = `/Condition?code=${enc('http://snomed.info/sct|38341003')}&_count=5`;
    const d = run(url);
    if (!d.allow || d.request === undefined) throw new Error('expected a narrowed request');
    expect(d.request).toMatchObject({ method: 'GET', interaction: 'search-type', resourceType: 'Condition', upstreamPath: '/Patient/pat-1/Condition' });
    expect(d.request.upstreamQuery).toBe(classified(url).upstreamQuery);
    expect(Object.isFrozen(d.request)).toBe(true);
  });

  it('POST _search is narrowed too and still forwarded as a GET', () => {
    const req = classified('/Observation/_search?code=x', 'POST', 'category=vital-signs', 'application/x-www-form-urlencoded');
    const d = decide({ policy, principal: who(ME), purpose: 'TREAT', request: req });
    if (!d.allow || d.request === undefined) throw new Error('expected a narrowed request');
    expect(upstreamMethod(d.request)).toBe('GET');
    expect(upstreamUrl(d.request)).toBe('/Patient/pat-1/Observation?code=x&category=vital-signs');
  });

  it('a Patient search gets _id=P appended', () => {
    expect(sent(run('/Patient?name=smith'), '/Patient?name=smith')).toBe('/Patient?name=smith&_id=pat-1');
    expect(sent(run('/Patient'), '/Patient')).toBe('/Patient?_id=pat-1');
    expect(sent(run('/Patient?_id=pat-1'), '/Patient?_id=pat-1')).toBe('/Patient?_id=pat-1&_id=pat-1');
  });

  it('includes are narrowed first, then the path', () => {
    const url = '/Encounter?_include=Encounter:subject';
    expect(sent(run(url), url)).toBe(`/Patient/pat-1/Encounter?_include=${enc('Encounter:subject:Patient')}`);
  });

  it('types outside the patient compartment are not narrowed', () => {
    const d = run('/Practitioner?name=x');
    expect(code(d)).toBe('allow');
    expect(d.allow && d.request).toBeUndefined();
  });

  it('a compartment search of the own patient is forwarded as it is', () => {
    const d = run('/Patient/pat-1/Observation?code=x');
    expect(code(d)).toBe('allow');
    expect(d.allow && d.request).toBeUndefined();
  });

  it('a patient claim that is not a FHIR id (or is a dot segment) is refused, not spliced into a path', () => {
    for (const p of ['..', '.', 'a/b', 'a b', '']) {
      expect(code(run('/Observation?code=x', p)), JSON.stringify(p)).toBe('compartment-denied');
    }
  });
});

describe('type history under a patient claim', () => {
  it('is refused on compartment types (the upstream cannot narrow it)', () => {
    expect(code(run('/Observation/_history'))).toBe('compartment-denied');
    expect(code(run('/Patient/_history'))).toBe('compartment-denied');
    expect(code(run('/Encounter/_history?_count=5'))).toBe('compartment-denied');
  });
  it('is allowed without a claim, and on types outside the compartment', () => {
    expect(code(run('/Observation/_history', null))).toBe('allow');
    expect(code(run('/Practitioner/_history'))).toBe('allow');
  });
});

describe('batch entries are narrowed one by one', () => {
  const bundle = {
    resourceType: 'Bundle',
    type: 'batch',
    entry: [
      { request: { method: 'GET', url: 'Observation?code=x' } },
      { request: { method: 'GET', url: 'Patient/pat-1' } },
      { request: { method: 'GET', url: 'Patient?name=y' } },
    ],
  };

  it('rewrites each narrowed entry url and leaves the others alone', () => {
    const req = classified('/', 'POST', bundle);
    const before = JSON.stringify(req);
    const d = decide({ policy, principal: who(ME), purpose: 'TREAT', request: req });
    if (!d.allow || d.request === undefined) throw new Error('expected a narrowed batch');
    expect(JSON.stringify(req)).toBe(before);
    const out = d.request.body as { entry: Array<{ request: { method: string; url: string } }> };
    expect(out.entry.map((e) => e.request.url)).toEqual(['Patient/pat-1/Observation?code=x', 'Patient/pat-1', 'Patient?name=y&_id=pat-1']);
    expect(out.entry[1]).toBe((req.body as { entry: unknown[] }).entry[1]);
    expect(d.request.entries?.[0]?.upstreamPath).toBe('/Patient/pat-1/Observation');
    expect(d.request.entries?.[1]).toBe(req.entries?.[1]);
    expect(d.request).toMatchObject({ interaction: 'batch', upstreamPath: '/' });
    // The forwarded Bundle classifies to the decided urls.
    const again = classified('/', 'POST', out);
    expect(again.entries?.map(upstreamUrl)).toEqual(d.request.entries?.map(upstreamUrl));
  });

  it('an entry naming another patient refuses the batch; an entry type history too', () => {
    const bad = { ...bundle, entry: [...bundle.entry, { request: { method: 'GET', url: 'Condition?patient=pat-2' } }] };
    const d = decide({ policy, principal: who(ME), purpose: 'TREAT', request: classified('/', 'POST', bad) });
    expect(d).toMatchObject({ allow: false, code: 'compartment-denied' });
    expect(d.rule).toMatch(/^batch\.entry\[3\]: /);
    const hist = { ...bundle, entry: [{ request: { method: 'GET', url: 'Observation/_history' } }] };
    expect(code(decide({ policy, principal: who(ME), purpose: 'TREAT', request: classified('/', 'POST', hist) }))).toBe('compartment-denied');
  });

  it('is left alone without a claim', () => {
    const d = decide({ policy, principal: who(undefined), purpose: 'TREAT', request: classified('/', 'POST', bundle) });
    expect(code(d)).toBe('allow');
    expect(d.allow && d.request).toBeUndefined();
  });
});

describe('paramNamingOtherPatient (pure)', () => {
  it('derives patient parameters from the tables, not a hand list', () => {
    expect(paramNamingOtherPatient('Coverage', [['beneficiary', 'pat-2']], ME)).toBe('beneficiary');
    expect(paramNamingOtherPatient('Claim', [['payee', 'Patient/pat-2']], ME)).toBe('payee');
    expect(paramNamingOtherPatient('Group', [['member', 'Patient/pat-2']], ME)).toBe('member');
    expect(paramNamingOtherPatient('Observation', [['code', 'pat-2']], ME)).toBeUndefined();
    expect(paramNamingOtherPatient('Observation', [['encounter', 'Encounter/pat-2']], ME)).toBeUndefined();
  });
});

// ---- properties ----

const plan = policy.roles.get('clinician')!.plans.get('TREAT')!;
/** Granted compartment types with a `patient` search parameter (every one of them has it). */
const SEARCHABLE = [...plan.types.keys()].filter((t) => t !== 'Patient' && isCompartmentType(t) && plan.types.get(t)!.searchParams.has('patient'));
const type = fc.constantFrom(...SEARCHABLE);
const id = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9-]{0,20}$/);
const twoIds = fc.tuple(id, id, id).filter(([p, x, y]) => x !== p && y !== p);
/** Parameters that name no patient; allowed on every granted type. */
const benign = fc.array(
  fc.oneof(
    fc.constant(['_count', '10'] as const),
    fc.constant(['_lastUpdated', 'ge2020-01-01'] as const),
    fc.constant(['_summary', 'true'] as const),
    fc.constant(['_elements', 'id'] as const),
    fc.constant(['_total', 'none'] as const),
    id.map((v) => ['_id', v] as const),
  ),
  { maxLength: 4 },
);
/** Ways of naming patient `x` when the token's patient is `p`. */
const naming = (x: string, p: string): Array<readonly [string, string]> => [
  ['patient', x],
  ['patient', `Patient/${x}`],
  ['subject', `Patient/${x}`],
  ['subject:Patient', x],
  ['patient', `https://other.example/fhir/Patient/${x}`],
  ['patient', `${p},${x}`],
  ['patient', `Patient/${x},Patient/${p}`],
];
const searchUrl = (t: string, params: ReadonlyArray<readonly [string, string]>) => (params.length === 0 ? `/${t}` : `/${t}?${encodeParams(params)}`);

describe('properties', () => {
  it('a search naming another patient gets the same refusal whoever that patient is', () => {
    fc.assert(
      fc.property(type, twoIds, benign, benign, fc.nat(6), (t, [p, x, y], before, after, k) => {
        const form = (who: string) => naming(who, p)[k]!;
        // subject is not a parameter of every type; patient is.
        const named = (who: string) => (t === 'Observation' || t === 'Encounter' || t === 'Condition' ? form(who) : (['patient', form(who)[1]] as const));
        const dx = run(searchUrl(t, [...before, named(x), ...after]), p);
        const dy = run(searchUrl(t, [...before, named(y), ...after]), p);
        expect(dx).toMatchObject({ allow: false, code: 'compartment-denied' });
        expect(dy).toEqual(dx);
      }),
      { numRuns: 300 },
    );
  });

  it('every allowed search on a compartment type under a claim is forwarded under /Patient/P/', () => {
    fc.assert(
      fc.property(type, id, benign, fc.boolean(), (t, p, params, own) => {
        const all = own ? [...params, ['patient', `Patient/${p}`] as const] : params;
        const url = searchUrl(t, all);
        const d = run(url, p);
        expect(code(d)).toBe('allow');
        if (!d.allow || d.request === undefined) throw new Error('not narrowed');
        expect(d.request.upstreamPath).toBe(`/Patient/${p}/${t}`);
        expect(d.request.upstreamQuery).toBe(classified(url).upstreamQuery);
      }),
      { numRuns: 300 },
    );
  });

  it('every allowed Patient search under a claim carries _id=P', () => {
    fc.assert(
      fc.property(id, benign, (p, params) => {
        const d = run(searchUrl('Patient', params), p);
        const named = params.filter(([n]) => n === '_id');
        if (named.some(([, v]) => v !== p)) {
          expect(code(d)).toBe('compartment-denied');
          return;
        }
        if (!d.allow || d.request === undefined) throw new Error('not narrowed');
        expect(d.request.upstreamPath).toBe('/Patient');
        expect(d.request.params.at(-1)).toEqual(['_id', p]);
      }),
      { numRuns: 200 },
    );
  });
});
