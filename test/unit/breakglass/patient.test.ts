// Which patient a break-glass request opens: classified by the real classifier, then resolved.
import { describe, expect, it } from 'vitest';
import { resolvePatient } from '../../../src/breakglass/patient.js';
import { isR4ResourceType } from '../../../src/fhir/resource-types.js';
import { classify } from '../../../src/policy/classify.js';

const req = (url: string, method = 'GET') => classify({ method, url, headers: {}, body: undefined }, { isResourceType: isR4ResourceType, maxBodyBytes: 1 << 20 });

describe('resolvePatient', () => {
  it.each([
    ['/Patient/p1', 'p1'],
    ['/Patient/p1/_history/2', 'p1'],
    ['/Patient/p1/_history', 'p1'],
    ['/Patient/p1/$everything', 'p1'],
    ['/Patient/p1/Observation', 'p1'],
    ['/Patient/p1/Condition?code=x', 'p1'],
    ['/Observation?patient=p1', 'p1'],
    ['/Observation?patient=Patient/p1', 'p1'],
    ['/Condition?subject=Patient/p-2.x', 'p-2.x'],
    ['/Coverage?beneficiary=p3&status=active', 'p3'],
  ])('%s -> %s', (url, id) => {
    expect(resolvePatient(req(url))).toBe(id);
  });

  it.each([
    ['/Observation', 'no patient parameter'],
    ['/Observation/o1', 'a read of another type'],
    ['/Patient?name=smith', 'a Patient search'],
    ['/Patient?_id=p1', 'a Patient search by _id'],
    ['/Observation?patient=p1&subject=p2', 'two patient parameters'],
    ['/Observation?patient=p1&patient=p1', 'a repeated patient parameter'],
    ['/Observation?patient=p1,p2', 'an OR list'],
    ['/Observation?subject=Group/g1', 'a Group subject'],
    ['/Observation?subject:Patient=p1', 'a modifier'],
    ['/Observation?patient:missing=true', 'a :missing modifier'],
    ['/Observation?patient.name=smith', 'a chain'],
    ['/Observation/$lastn?patient=p1', 'a type operation'],
  ])('%s is refused (%s)', (url) => {
    expect(resolvePatient(req(url))).toBeUndefined();
  });

  it('refuses a compartment other than Patient (built by hand: the classifier refuses them first)', () => {
    const r = { ...req('/Patient/d1/Observation'), compartment: { type: 'Practitioner', id: 'd1' } };
    expect(resolvePatient(r)).toBeUndefined();
  });

  it('refuses a batch, even of one patient', () => {
    const body = Buffer.from(JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: 'Patient/p1' } }] }));
    const r = classify(
      { method: 'POST', url: '/', headers: { 'content-type': 'application/fhir+json' }, body },
      { isResourceType: isR4ResourceType, maxBodyBytes: 1 << 20 },
    );
    expect(r.interaction).toBe('batch');
    expect(resolvePatient(r)).toBeUndefined();
  });
});
