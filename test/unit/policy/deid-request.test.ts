/**
 * The request side of de-identification (src/policy/deid-request.ts through decide()): a caller
 * whose data set de-identifies names resources by pseudonym, which are resolved to real ids before
 * anything is forwarded; real, forged and foreign values are refused by their shape alone, and
 * searches, sorts and `_elements` reach only what the profile releases unchanged.
 */
import { describe, expect, it } from 'vitest';
import type { Principal } from '../../../src/auth/principal.js';
import { elementCompiler } from '../../../src/config/policy-file.js';
import { isR4ResourceType } from '../../../src/fhir/resource-types.js';
import { classify, upstreamUrl } from '../../../src/policy/classify.js';
import { compilePolicy } from '../../../src/policy/compile.js';
import { type Decision, decide } from '../../../src/policy/decide.js';
import { translateDeidRequest } from '../../../src/policy/deid-request.js';
import type { PolicyFile } from '../../../src/policy/model.js';
import { withMetaElements } from '../../../src/policy/narrow.js';
import type { ClassifiedRequest } from '../../../src/policy/request.js';
import { pseudonymize } from '../../../src/redact/pseudonym.js';

const RAW: PolicyFile = {
  version: 1,
  purposes: { HRESCH: { display: 'research' }, TREAT: { display: 'treatment' } },
  safeHarbor: { restrictedZip3: ['036'] },
  dataSets: {
    research: {
      deidentify: 'safe-harbor',
      rules: [
        { types: ['Patient'], elements: ['gender', 'birthDate', 'address'], interactions: ['read', 'search', 'history', 'update', 'delete'], operations: ['$everything'] },
        { types: ['Observation', 'Encounter'], elements: ['*'], search: ['code', 'category', 'subject', 'patient'] },
      ],
    },
    clinical: { rules: [{ types: ['Patient', 'Observation'] }] },
  },
  roles: { researcher: { purposes: { HRESCH: 'research' } }, clinician: { purposes: { TREAT: 'clinical' } } },
};
const compiled = compilePolicy(RAW, JSON.stringify(RAW), elementCompiler);
if (!compiled.ok) throw new Error(compiled.problems.map((p) => `${p.path}: ${p.message}`).join('\n'));
const policy = compiled.policy;

const KEY = new TextEncoder().encode('unit-test-pseudonym-key-0123456789abcdef');
const OLD_KEY = new TextEncoder().encode('unit-test-previous-key-0123456789abcdef!');
const BASE = 'https://gw.example/fhir';
const LOINC_BP = 'http://loinc.org|85354-9';
const p = (type: string, id: string, key = KEY) => pseudonymize(key, type, id)!;
const ALICE = p('Patient', 'pat-alice');
const BP = p('Observation', 'obs-alice-bp');

function principal(roles: string[]): Principal {
  return { iss: 'i', sub: 's', clientId: undefined, jti: undefined, roles, tokenPurposes: undefined, patient: undefined, scopes: undefined, familyName: undefined, exp: 2e9 };
}
function classified(url: string, method = 'GET', body?: unknown): ClassifiedRequest {
  const bytes = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers = bytes === undefined ? {} : { 'content-type': 'application/fhir+json' };
  return classify({ method, url, headers, body: bytes }, { isResourceType: isR4ResourceType, maxBodyBytes: 1 << 20 });
}
function research(url: string, opts: { method?: string; body?: unknown; keys?: Uint8Array[] } = {}): Decision {
  const request = classified(url, opts.method, opts.body);
  return decide({ policy, principal: principal(['researcher']), purpose: 'HRESCH', request, pseudonyms: { keys: opts.keys ?? [KEY], publicBase: BASE } });
}
const code = (d: Decision) => (d.allow ? 'allow' : d.code);
/** What goes upstream (path and query), for an allowed decision. */
function sent(d: Decision, url: string): string {
  if (!d.allow) throw new Error(`denied: ${d.code} ${d.rule}`);
  return upstreamUrl(d.request ?? classified(url));
}
const q = (url: string) => {
  const d = research(url);
  return code(d) === 'allow' ? sent(d, url) : code(d);
};
const enc = encodeURIComponent;

describe('ids are pseudonyms', () => {
  it.each([
    [`/Patient/${ALICE}`, '/Patient/pat-alice'],
    [`/Patient/${ALICE}/$everything`, '/Patient/pat-alice/$everything'],
    [`/Observation/${BP}`, '/Observation/obs-alice-bp'],
    [`/Patient/${ALICE}/Observation?code=${enc(LOINC_BP)}`, `/Patient/pat-alice/Observation?code=${enc(LOINC_BP)}`],
  ])('%s goes upstream as %s', (url, upstream) => {
    expect(q(url)).toBe(upstream);
  });

  it('the forwarded request carries the real id (the stored-resource guard reads it)', () => {
    const d = research(`/Patient/${ALICE}`);
    expect(d.allow && d.request?.id).toBe('pat-alice');
    const c = research(`/Patient/${ALICE}/Observation`);
    expect(c.allow && c.request?.compartment).toEqual({ type: 'Patient', id: 'pat-alice' });
  });

  it('a real id is refused exactly as a real id that does not exist', () => {
    const real = research('/Patient/pat-alice');
    expect(real).toMatchObject({ allow: false, code: 'pseudonym-required' });
    expect(research('/Patient/pat-nobody')).toEqual(real);
  });

  it.each([
    ['a real id', '/Observation/obs-alice-bp'],
    ['a Patient pseudonym used as an Observation id', `/Observation/${ALICE}`],
    ['an edited pseudonym', `/Patient/${ALICE.slice(0, -1)}${ALICE.endsWith('A') ? 'B' : 'A'}`],
    ['a pseudonym under another key', `/Patient/${p('Patient', 'pat-alice', new TextEncoder().encode('some-other-gateway-key-0123456789abcdef'))}`],
    ['a compartment by real id', '/Patient/pat-alice/Observation'],
    ['$everything by real id', '/Patient/pat-alice/$everything'],
  ])('%s: pseudonym-required', (_name, url) => {
    expect(code(research(url))).toBe('pseudonym-required');
  });

  // Versions are not released: a vread answering only for the current version counted the edits.
  it.each([
    ['a vread of the current version', `/Patient/${ALICE}/_history/2`],
    ['a vread of an older version', `/Patient/${ALICE}/_history/1`],
    ['a vread by real id (no existence oracle either)', '/Patient/pat-alice/_history/1'],
    ['an instance history', `/Patient/${ALICE}/_history`],
    ['a history with _since', `/Patient/${ALICE}/_history?_since=2024-01-01`],
  ])('%s: interaction-denied', (_name, url) => {
    expect(code(research(url))).toBe('interaction-denied');
  });

  it('without a key nothing resolves', () => {
    expect(code(research(`/Patient/${ALICE}`, { keys: [] }))).toBe('pseudonym-required');
  });

  it('a pseudonym issued under the previous key still resolves', () => {
    const old = p('Patient', 'pat-alice', OLD_KEY);
    expect(code(research(`/Patient/${old}`, { keys: [KEY] }))).toBe('pseudonym-required');
    expect(sent(research(`/Patient/${old}`, { keys: [KEY, OLD_KEY] }), '')).toBe('/Patient/pat-alice');
  });

  it('update and delete go to the real id; the update body moves with it', () => {
    const body = { resourceType: 'Patient', id: ALICE, gender: 'female' };
    const u = research(`/Patient/${ALICE}`, { method: 'PUT', body });
    expect(u.allow && u.request?.upstreamPath).toBe('/Patient/pat-alice');
    expect(u.allow && u.request?.body).toEqual({ ...body, id: 'pat-alice' });
    expect(code(research('/Patient/pat-alice', { method: 'PUT', body: { ...body, id: 'pat-alice' } }))).toBe('pseudonym-required');
    const d = research(`/Patient/${ALICE}`, { method: 'DELETE' });
    expect(d.allow && d.request?.upstreamPath).toBe('/Patient/pat-alice');
  });
});

describe('search parameters', () => {
  it.each([
    [`/Patient?_id=${ALICE}`, '/Patient?_id=pat-alice'],
    [`/Patient?_id=${ALICE},${p('Patient', 'pat-brian')}`, `/Patient?_id=${enc('pat-alice,pat-brian')}`],
    [`/Observation?subject=Patient/${ALICE}`, `/Observation?subject=${enc('Patient/pat-alice')}`],
    [`/Observation?subject=${ALICE}`, `/Observation?subject=${enc('Patient/pat-alice')}`],
    [`/Observation?subject:Patient=${ALICE}`, `/Observation?${enc('subject:Patient')}=pat-alice`],
    [`/Observation?patient=${enc(`${BASE}/Patient/${ALICE}`)}`, `/Observation?patient=${enc('Patient/pat-alice')}`],
    [`/Observation?subject=Patient/${ALICE},Patient/${p('Patient', 'pat-brian')}`, `/Observation?subject=${enc('Patient/pat-alice,Patient/pat-brian')}`],
    [`/Observation?code=${enc(LOINC_BP)}&_count=5`, `/Observation?code=${enc(LOINC_BP)}&_count=5`],
    ['/Observation?_sort=-status', '/Observation?_sort=-status'],
    ['/Observation?_elements=code,subject', `/Observation?_elements=${enc('code,subject')}`],
    // Includes are judged (and narrowed to the granted targets) as for everyone.
    ['/Observation?_include=Observation:subject', `/Observation?_include=${enc('Observation:subject:Patient')}`],
  ])('%s goes upstream as %s', (url, upstream) => {
    expect(q(url)).toBe(upstream);
  });

  it.each([
    ['_id by real id', '/Patient?_id=pat-alice'],
    ['_id with one real id among pseudonyms', `/Patient?_id=${ALICE},pat-brian`],
    ['a reference by real id', '/Observation?subject=Patient/pat-alice'],
    ['a bare real id', '/Observation?patient=pat-alice'],
    ['a reference under another base', `/Observation?subject=${enc(`https://other.example/fhir/Patient/${ALICE}`)}`],
    ['a versioned reference', `/Observation?subject=Patient/${ALICE}/_history/1`],
    ['a pseudonym of the wrong type', `/Observation?subject=Patient/${BP}`],
    ['a type modifier the value contradicts', `/Observation?subject:Patient=Group/${p('Group', 'g1')}`],
  ])('%s: pseudonym-required', (_name, url) => {
    expect(code(research(url))).toBe('pseudonym-required');
  });

  it.each([
    ['_lastUpdated (removed by safe harbor)', '/Observation?_lastUpdated=gt2020-01-01'],
    ['a generalized element', '/Patient?birthdate=1984'],
    ['a removed element', '/Patient?name=Anderson'],
    [':text on a kept element', '/Observation?code:text=pressure'],
    ['a parameter without paths', '/Observation?_content=pressure'],
    ['a reference the rules do not release', `/Patient?general-practitioner=Practitioner/${p('Practitioner', 'prac-1')}`],
    [':identifier', '/Observation?subject:identifier=MRN-100001'],
    [':above', `/Observation?subject:above=Patient/${ALICE}`],
    ['a chain', '/Observation?subject.name=Anderson'],
    ['a reverse chain', '/Patient?_has:Observation:subject:code=85354-9'],
    // Codings under other systems are removed from answers: a bare code could match one of them.
    ['a code without its system', '/Observation?code=85354-9'],
    ['a code under a local system', `/Observation?code=${enc('http://hospital.example.org/codes|MRN-100001')}`],
    ['a code with a modifier', `/Observation?code:not=${enc(LOINC_BP)}`],
    ['_sort by a code', '/Observation?_sort=-code'],
    ['_sort by _id', '/Observation?_sort=_id'],
    ['_sort by a reference', '/Observation?_sort=subject'],
    ['_sort by _lastUpdated', '/Observation?_sort=-_lastUpdated'],
    ['_elements naming a removed element', '/Patient?_elements=name'],
    ['_elements naming a generalized element', '/Patient?_elements=gender,birthDate'],
    ['_id with a modifier', `/Patient?_id:not=${ALICE}`],
    // A removed reference (to a contained resource the caller may not see) is present upstream.
    ['a reference :missing', '/Observation?subject:missing=true'],
    ['start on $everything', `/Patient/${ALICE}/$everything?start=2024`],
  ])('%s: search-param-denied', (_name, url) => {
    expect(code(research(url))).toBe('search-param-denied');
  });

  it('a chain is refused even where the type plan grants it verbatim', () => {
    const obs = policy.roles.get('researcher')!.plans.get('HRESCH')!.types.get('Observation')!;
    const granted = { ...obs, searchParams: new Set([...obs.searchParams, 'subject.name']) };
    const r = translateDeidRequest(classified('/Observation?subject.name=Anderson'), granted, new Map([['Observation', granted]]), { keys: [KEY], publicBase: BASE });
    expect(r).toMatchObject({ ok: false, code: 'search-param-denied' });
  });

  it('$everything keeps _type and _count', () => {
    expect(q(`/Patient/${ALICE}/$everything?_type=Observation&_count=5`)).toBe('/Patient/pat-alice/$everything?_type=Observation&_count=5');
  });
});

describe('batch and transaction entries', () => {
  const bundle = (type: string, urls: string[]) => ({ resourceType: 'Bundle', type, entry: urls.map((url) => ({ request: { method: 'GET', url } })) });

  it.each(['batch', 'transaction'])('%s: one real id refuses the whole Bundle', (type) => {
    const d = research('/', { method: 'POST', body: bundle(type, [`Patient/${ALICE}`, 'Patient/pat-brian']) });
    expect(d).toMatchObject({ allow: false, code: 'pseudonym-required' });
    expect(d.allow ? '' : d.rule).toContain('entry[1]');
  });

  it('pseudonyms in entries are forwarded as real ids', () => {
    const d = research('/', { method: 'POST', body: bundle('batch', [`Patient/${ALICE}`, `Observation?subject=Patient/${ALICE}`]) });
    if (!d.allow || d.request === undefined) throw new Error('not translated');
    const urls = (d.request.body as { entry: Array<{ request: { url: string } }> }).entry.map((e) => e.request.url);
    expect(urls).toEqual(['Patient/pat-alice', `Observation?subject=${enc('Patient/pat-alice')}`]);
    expect(d.request.entries?.map((e) => e.id ?? e.params[0]?.[1])).toEqual(['pat-alice', 'Patient/pat-alice']);
  });
});

describe('_elements always brings meta along (every caller)', () => {
  it.each([
    ['/Observation?_elements=code', `/Observation?_elements=${enc('code,meta')}`],
    ['/Patient/pat-alice?_elements=gender', `/Patient/pat-alice?_elements=${enc('gender,meta')}`],
    ['/Observation?_elements=code,meta', `/Observation?_elements=${enc('code,meta')}`],
    ['/Observation?code=x', '/Observation?code=x'],
  ])('%s goes upstream as %s', (url, upstream) => {
    const req = classified(url);
    const out = withMetaElements(req)!;
    expect(upstreamUrl(out)).toBe(upstream);
    if (upstream === upstreamUrl(req)) expect(out).toBe(req);
  });

  it('in batch entries too', () => {
    const req = classified('/', 'POST', { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: 'Observation?_elements=code' } }, { request: { method: 'GET', url: 'Patient/1' } }] });
    const out = withMetaElements(req)!;
    expect((out.body as { entry: Array<{ request: { url: string } }> }).entry.map((e) => e.request.url)).toEqual([`Observation?_elements=${enc('code,meta')}`, 'Patient/1']);
  });

  it('_elements:exclude is refused (it could exclude meta)', () => {
    const d = decide({ policy, principal: principal(['clinician']), purpose: 'TREAT', request: classified('/Observation?_elements:exclude=meta') });
    expect(code(d)).toBe('search-param-denied');
  });
});
