/**
 * Care relationships judged on the request alone (src/policy/relationship.ts), from raw requests
 * through the real classifier: what names an unrelated patient is refused by the value it names;
 * a search naming none is narrowed to the related patients; generated requests never reach the
 * upstream naming an unrelated patient, and the verdict never depends on which unrelated id it is.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isR4ResourceType } from '../../../src/fhir/resource-types.js';
import { classify, upstreamUrl } from '../../../src/policy/classify.js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadPolicy } from '../../../src/config/load.js';
import { judgeRelationship, narrowingParam, patientsNamed, type RelationshipVerdict, selfGrantingTypes } from '../../../src/policy/relationship.js';

const RELATED = new Set(['pat-1', 'pat-2']);
const OPTS = { searchPatients: 100 };

function classified(url: string, method = 'GET', body?: unknown) {
  const bytes = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return classify(
    { method, url, headers: bytes === undefined ? {} : { 'content-type': 'application/fhir+json' }, body: bytes },
    { isResourceType: isR4ResourceType, maxBodyBytes: 1 << 20 },
  );
}
const judge = (url: string, method = 'GET', body?: unknown, related: ReadonlySet<string> = RELATED) =>
  judgeRelationship(classified(url, method, body), related, OPTS);
const kind = (v: RelationshipVerdict) => v.kind;
const sent = (v: RelationshipVerdict) => {
  if (v.kind !== 'allow') throw new Error(`not allowed: ${v.kind}`);
  return decodeURIComponent(upstreamUrl(v.request));
};

describe('by the patient a request names', () => {
  it.each([
    ['/Patient/pat-1', 'allow'],
    ['/Patient/pat-9', 'unrelated'],
    ['/Patient/does-not-exist', 'unrelated'],
    ['/Patient/pat-9/_history/1', 'unrelated'],
    ['/Patient/pat-9/_history', 'unrelated'],
    ['/Patient/pat-9/$everything', 'unrelated'],
    ['/Patient/pat-1/$everything', 'allow'],
    ['/Patient/pat-9/Observation', 'unrelated'],
    ['/Patient/pat-1/Observation', 'allow'],
    ['/Patient/pat-1/Observation?subject=Patient/pat-9', 'unrelated'],
    ['/Observation?patient=pat-9', 'unrelated'],
    ['/Observation?subject=Patient/pat-9', 'unrelated'],
    ['/Observation?subject=http://elsewhere.example/fhir/Patient/pat-9', 'unrelated'],
    ['/Observation?patient=pat-1,pat-9', 'unrelated'],
    ['/Observation?subject:Patient=pat-9', 'unrelated'],
    ['/Observation?patient=pat-1', 'allow'],
    ['/Observation?patient=pat-1&performer=Patient/pat-9', 'unrelated'],
    ['/Patient?_id=pat-1,pat-9', 'unrelated'],
    ['/Patient?_id=pat-2', 'allow'],
    ['/Patient?link=Patient/pat-9', 'unrelated'],
    ['/Patient?_id:not=pat-9', 'allow'],
    // A typed reference to another kind of resource names no patient.
    ['/Observation?subject:Group=g1', 'allow'],
    // Other types than patient data are not judged.
    ['/Practitioner?name=Reyes', 'allow'],
    ['/Organization/org-1', 'allow'],
    // Reads of other types by id are judged on what comes back (the response filter).
    ['/Observation/obs-1', 'allow'],
  ])('%s: %s', (url, expected) => {
    expect(kind(judge(url))).toBe(expected);
  });

  it('names the unrelated patients, and an unparseable value as ?', () => {
    expect(judge('/Observation?patient=pat-1,pat-9,pat-8')).toEqual({ kind: 'unrelated', patients: ['pat-9', 'pat-8'] });
    expect(judge('/Observation?subject=Patient/')).toEqual({ kind: 'unrelated', patients: ['?'] });
  });

  it('writes naming an unrelated patient are refused by the body', () => {
    const obs = (ref: string) => ({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: ref } });
    expect(kind(judge('/Observation', 'POST', obs('Patient/pat-1')))).toBe('allow');
    expect(kind(judge('/Observation', 'POST', obs('Patient/pat-9')))).toBe('unrelated');
    expect(kind(judge('/Observation/o1', 'PUT', { ...obs('Patient/pat-9'), id: 'o1' }))).toBe('unrelated');
    // A Reference without a reference string cannot be checked.
    expect(kind(judge('/Observation', 'POST', { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { display: 'Someone' } }))).toBe('unrelated');
    expect(kind(judge('/Patient/pat-9', 'PUT', { resourceType: 'Patient', id: 'pat-9' }))).toBe('unrelated');
    expect(kind(judge('/Patient/pat-9', 'DELETE'))).toBe('unrelated');
    // A new patient has no relationship yet and names nobody.
    expect(kind(judge('/Patient', 'POST', { resourceType: 'Patient' }))).toBe('allow');
  });

  it('a write naming an unrelated patient on any element is refused', () => {
    const obs = { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/pat-1' } };
    expect(judge('/Observation', 'POST', { ...obs, focus: [{ reference: 'Patient/pat-9' }] })).toEqual({ kind: 'unrelated', patients: ['pat-9'] });
    expect(kind(judge('/Observation', 'POST', { ...obs, extension: [{ url: 'u', valueReference: { reference: 'https://x/fhir/Patient/pat-9' } }] }))).toBe('unrelated');
    expect(kind(judge('/Observation', 'POST', { ...obs, contained: [{ resourceType: 'Patient', id: 'c1' }] }))).toBe('unrelated');
    expect(kind(judge('/Patient/pat-1', 'PUT', { resourceType: 'Patient', id: 'pat-1', link: [{ other: { reference: 'Patient/pat-9' }, type: 'seealso' }] }))).toBe('unrelated');
    expect(kind(judge('/Patient/pat-1', 'PUT', { resourceType: 'Patient', id: 'pat-1', link: [{ other: { reference: 'Patient/pat-2' }, type: 'seealso' }] }))).toBe('allow');
  });

  it('a patch writing an unrelated patient reference, as a reference or a bare value, is refused', () => {
    const patch = (value: unknown) => [{ op: 'add', path: '/focus', value }];
    const req = (body: unknown) =>
      judgeRelationship(
        classify(
          { method: 'PATCH', url: '/Observation/o1', headers: { 'content-type': 'application/json-patch+json' }, body: Buffer.from(JSON.stringify(body)) },
          { isResourceType: isR4ResourceType, maxBodyBytes: 1 << 20 },
        ),
        RELATED,
        OPTS,
      );
    expect(kind(req(patch([{ reference: 'Patient/pat-9' }])))).toBe('unrelated');
    expect(kind(req([{ op: 'replace', path: '/subject/reference', value: 'Patient/pat-9' }]))).toBe('unrelated');
    expect(kind(req([{ op: 'replace', path: '/subject/reference', value: 'Patient/pat-2' }]))).toBe('allow');
  });
});

describe('a search naming no patient is narrowed', () => {
  it('to the related patients, on the type parameter that names them', () => {
    expect(sent(judge('/Observation?code=1234-5'))).toBe('/Observation?code=1234-5&patient=Patient/pat-1,Patient/pat-2');
    expect(sent(judge('/Patient?name=Smith'))).toBe('/Patient?name=Smith&_id=pat-1,pat-2');
    expect(sent(judge('/Coverage?status=active'))).toBe('/Coverage?status=active&patient=Patient/pat-1,Patient/pat-2');
    const v = judge('/Encounter');
    expect(v.kind === 'allow' && v.narrowed).toBe(2);
  });

  it('also when it names patients only by identifier, chain or _has', () => {
    expect(sent(judge('/Observation?patient:identifier=urn:mrn|123'))).toContain('&patient=Patient/pat-1,Patient/pat-2');
    expect(sent(judge('/Observation?subject.name=Smith'))).toContain('&patient=Patient/pat-1,Patient/pat-2');
    expect(sent(judge('/Patient?_has:Observation:patient:code=1234-5'))).toContain('&_id=pat-1,pat-2');
  });

  it('also when it names a related patient on a parameter that matches other patients too', () => {
    expect(sent(judge('/Observation?performer=Patient/pat-1'))).toBe('/Observation?performer=Patient/pat-1&patient=Patient/pat-1,Patient/pat-2');
    expect(sent(judge('/Patient?link=Patient/pat-1'))).toBe('/Patient?link=Patient/pat-1&_id=pat-1,pat-2');
    expect(sent(judge('/Patient?_id:not=pat-1'))).toBe('/Patient?_id:not=pat-1&_id=pat-1,pat-2');
    expect(sent(judge('/Patient/pat-1/Observation?code=1'))).toBe('/Patient/pat-1/Observation?code=1&patient=Patient/pat-1');
    // Bounded already: forwarded as it is.
    expect(sent(judge('/Observation?patient=pat-1&code=1'))).toBe('/Observation?patient=pat-1&code=1');
    expect(sent(judge('/Observation?subject:Patient=pat-2'))).toBe('/Observation?subject:Patient=pat-2&patient=Patient/pat-1,Patient/pat-2');
  });

  it('with nobody related, to nothing; with too many, it must name one', () => {
    expect(kind(judge('/Observation?code=1', 'GET', undefined, new Set()))).toBe('empty');
    const many = new Set(Array.from({ length: 101 }, (_, i) => `p${i}`));
    expect(kind(judge('/Observation?code=1', 'GET', undefined, many))).toBe('too-broad');
    expect(kind(judge('/Observation?patient=p3', 'GET', undefined, many))).toBe('allow');
  });

  it('every compartment type the shipped policy grants has a narrowing parameter', () => {
    for (const t of ['Patient', 'Encounter', 'Condition', 'Observation', 'Procedure', 'DiagnosticReport', 'DocumentReference', 'MedicationRequest',
      'MedicationStatement', 'AllergyIntolerance', 'Immunization', 'CarePlan', 'CareTeam', 'Goal', 'ServiceRequest', 'Appointment', 'Specimen',
      'FamilyMemberHistory', 'Coverage', 'Claim', 'ExplanationOfBenefit']) {
      expect(narrowingParam(t), t).toBeDefined();
    }
  });
});

describe('a caller cannot relate itself', () => {
  const opts = { searchPatients: 100, sourceWriteTypes: selfGrantingTypes(['PractitionerRole', 'Task', 'CareTeam', 'Encounter']) };
  it('writes of PractitionerRole and Task are refused where those sources count', () => {
    const j = (url: string, method: string, body?: unknown) => judgeRelationship(classified(url, method, body), RELATED, opts).kind;
    expect(j('/PractitionerRole', 'POST', { resourceType: 'PractitionerRole', organization: { reference: 'Organization/o1' } })).toBe('source-write');
    expect(j('/Task/t1', 'PUT', { resourceType: 'Task', id: 't1', status: 'ready', intent: 'order', focus: { reference: 'Encounter/e9' } })).toBe('source-write');
    expect(j('/Task/t1', 'DELETE')).toBe('source-write');
    // CareTeam and Encounter relate the patient they name, which must be related already.
    expect(j('/CareTeam', 'POST', { resourceType: 'CareTeam', subject: { reference: 'Patient/pat-1' } })).toBe('allow');
    expect(j('/CareTeam', 'POST', { resourceType: 'CareTeam', subject: { reference: 'Patient/pat-9' } })).toBe('unrelated');
    expect(j('/PractitionerRole', 'GET')).toBe('allow');
  });

  it('check-config refuses a data set that enforces a relationship and lets its callers write such a source', () => {
    const yaml = readFileSync('config/policy.yaml', 'utf8').replace(
      "      - types: [PractitionerRole]\n        interactions: [read, search, history]",
      "      - types: [PractitionerRole]\n        interactions: [read, search, history, create]",
    );
    expect(yaml).not.toBe(readFileSync('config/policy.yaml', 'utf8'));
    const dir = mkdtempSync(join(tmpdir(), 'phi-rel-'));
    try {
      writeFileSync(join(dir, 'policy.yaml'), yaml);
      expect(() => loadPolicy(join(dir, 'policy.yaml'))).toThrow(/source 'department' reads PractitionerRole, which this data set lets its callers create/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('batches', () => {
  const bundle = (urls: string[]) => ({ resourceType: 'Bundle', type: 'batch', entry: urls.map((url) => ({ request: { method: 'GET', url } })) });
  it('one entry about an unrelated patient refuses the Bundle', () => {
    expect(kind(judge('/', 'POST', bundle(['Patient/pat-1', 'Patient/pat-9'])))).toBe('unrelated');
    expect(kind(judge('/', 'POST', bundle(['Observation?patient=pat-9'])))).toBe('unrelated');
    expect(kind(judge('/', 'POST', bundle(['Patient/pat-1', 'Observation?patient=pat-2'])))).toBe('allow');
  });
  it('entries naming no patient are narrowed in the forwarded Bundle', () => {
    const v = judge('/', 'POST', bundle(['Observation?code=1', 'Patient/pat-1']));
    expect(v.kind).toBe('allow');
    if (v.kind !== 'allow') return;
    const body = v.request.body as { entry: Array<{ request: { url: string } }> };
    expect(decodeURIComponent(body.entry[0]!.request.url)).toBe('Observation?code=1&patient=Patient/pat-1,Patient/pat-2');
    expect(body.entry[1]!.request.url).toBe('Patient/pat-1');
  });
});

describe('properties over generated requests', () => {
  const ids = fc.constantFrom('pat-1', 'pat-2', 'pat-9', 'pat-8', 'ghost');
  const types = fc.constantFrom('Observation', 'Condition', 'Encounter', 'Patient', 'Procedure', 'Claim');
  const params = fc.constantFrom('patient', 'subject', 'code', '_id', 'encounter', 'performer', 'subject:Patient', 'name');
  const query = fc.array(fc.tuple(params, fc.array(ids, { minLength: 1, maxLength: 3 }), fc.boolean()), { maxLength: 3 });
  const url = fc.tuple(types, query).map(
    ([t, q]) => `/${t}?${q.map(([p, vs, typed]) => `${p}=${encodeURIComponent(vs.map((v) => (typed && p !== '_id' ? `Patient/${v}` : v)).join(','))}`).join('&')}`,
  );

  it('what is forwarded names related patients only', () => {
    fc.assert(
      fc.property(url, (u) => {
        let req: ReturnType<typeof classified>;
        try {
          req = classified(u);
        } catch {
          return; // refused by the classifier
        }
        const v = judgeRelationship(req, RELATED, OPTS);
        if (v.kind !== 'allow' || req.resourceType === undefined) return;
        const forwarded = patientsNamed(req.resourceType, v.request.params).ids;
        expect(forwarded.length).toBeGreaterThan(0);
        for (const p of forwarded) expect(RELATED.has(p)).toBe(true);
        // Bounded: the type's own patient parameter, unmodified, names related patients only, so
        // every match is a related patient's record (not one that merely mentions one).
        const param = narrowingParam(req.resourceType)!;
        const bounding = v.request.params.filter(([n]) => n === param || (param !== '_id' && n === `${param}:Patient`));
        expect(bounding.length).toBeGreaterThan(0);
        for (const [, value] of bounding) {
          for (const alt of value.split(',')) expect(RELATED.has(alt.replace(/^Patient\//, ''))).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('an unrelated patient and one that does not exist are judged alike', () => {
    fc.assert(
      fc.property(url, (u) => {
        let a: ReturnType<typeof classified>;
        let b: ReturnType<typeof classified>;
        try {
          a = classified(u);
          b = classified(u.replaceAll('pat-9', 'ghost'));
        } catch {
          return;
        }
        const va = judgeRelationship(a, RELATED, OPTS);
        const vb = judgeRelationship(b, RELATED, OPTS);
        expect(va.kind).toBe(vb.kind);
        if (va.kind === 'allow' && vb.kind === 'allow') expect(upstreamUrl(va.request).replaceAll('pat-9', 'ghost')).toBe(upstreamUrl(vb.request));
      }),
      { numRuns: 500 },
    );
  });
});
