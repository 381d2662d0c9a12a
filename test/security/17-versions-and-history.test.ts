/**
 * BYPASSES 17: versions and history. A resource whose current version is withheld withholds every
 * version: a vread of an older, unlabelled version answers exactly as a read of the resource
 * would, and its instance history answers like a missing resource's (byte for byte apart from
 * X-Request-Id, for callers not told about break-glass). Past versions need the `history` grant.
 * Full stack: the real upstream (medplum, seeded demo), the shipped policy plus one role that
 * treats like a clinician but may not break the glass (`ward-clerk`).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type RequestOpts, type Stack, startStack } from '../helpers/gateway.js';
import { auditFor, comparableHeaders, expectAbsent, expectError, receive } from './support.js';

const ACT = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
const CONF = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
/** Version 1 unlabelled, version 2 (current) labelled HIV + R. */
const RELABELLED = 'cond-relabelled-17';
const SECRET = 'HIV-SECRET-FIRST-VERSION';
/** Unlabelled, two versions. */
const TWO = 'cond-two-versions-17';
const MISSING = 'cond-missing-17';
/** A Patient relabelled R in version 2. */
const PATIENT = 'pat-relabelled-17';
const PATIENT_SECRET = 'Relabelled-Seventeen';

const billing: RequestOpts = { role: 'billing', purpose: 'HPAYMT' };
const clinician: RequestOpts = { role: 'clinician', purpose: 'TREAT' };
/** Treats with the clinical data set (history granted) but is not break-glass eligible. */
const clerk: RequestOpts = { role: 'clinician', purpose: 'TREAT', tokenClaims: { roles: ['ward-clerk'] } };

let stack: Stack;

async function putUpstream(path: string, body: unknown): Promise<void> {
  const r = await fetch(`${stack.upstreamUrl}${path}`, { method: 'PUT', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(body) });
  if (r.status >= 300) throw new Error(`setup ${path}: ${r.status}`);
}

beforeAll(async () => {
  stack = await startStack({
    policy: (p) => {
      p.roles['ward-clerk'] = { description: 'Treats; may not break the glass.', purposes: { TREAT: 'clinical' } };
    },
  });
  const cond = { resourceType: 'Condition', id: RELABELLED, subject: { reference: `Patient/${DEMO.patients.henry}` }, code: { text: SECRET } };
  await putUpstream(`/Condition/${RELABELLED}`, cond);
  await putUpstream(`/Condition/${RELABELLED}`, { ...cond, meta: { security: [{ system: ACT, code: 'HIV' }, { system: CONF, code: 'R' }] } });
  const pat = { resourceType: 'Patient', id: PATIENT, name: [{ family: PATIENT_SECRET }] };
  await putUpstream(`/Patient/${PATIENT}`, pat);
  await putUpstream(`/Patient/${PATIENT}`, { ...pat, meta: { security: [{ system: CONF, code: 'R' }] } });
  const two = { resourceType: 'Condition', id: TWO, subject: { reference: `Patient/${DEMO.patients.alice}` }, code: { text: 'first' } };
  await putUpstream(`/Condition/${TWO}`, two);
  await putUpstream(`/Condition/${TWO}`, { ...two, code: { text: 'second' } });
});

afterAll(async () => {
  await stack?.close();
});

describe('a withheld current version withholds every version (vread)', () => {
  it('the setup: upstream version 1 carries no label, version 2 is labelled', async () => {
    const v1 = (await (await fetch(`${stack.upstreamUrl}/Condition/${RELABELLED}/_history/1`)).json()) as { meta?: { security?: unknown } };
    expect(v1.meta?.security).toBeUndefined();
    const cur = (await (await fetch(`${stack.upstreamUrl}/Condition/${RELABELLED}`)).json()) as { meta?: { versionId?: string } };
    expect(cur.meta?.versionId).toBe('2');
  });

  it('billing: the vread of version 1 answers exactly like a vread of a missing Condition', async () => {
    const a = await receive(await stack.get(`/Condition/${RELABELLED}/_history/1`, billing));
    const b = await receive(await stack.get(`/Condition/${MISSING}/_history/1`, billing));
    expectError(a, 404, 'not-found');
    expect(a.text).toBe(b.text);
    expect(comparableHeaders(a.headers)).toEqual(comparableHeaders(b.headers));
    expectAbsent(a, [SECRET, RELABELLED, DEMO.patients.henry]);
    const rec = await auditFor(stack, a.requestId);
    expect(rec.decision).toBe('deny');
    expect(rec.disclosed.resources).toEqual([]);
  });

  it('a clinician without break-glass is told break-glass can reveal it, and sees nothing of it', async () => {
    for (const path of [`/Condition/${RELABELLED}/_history/1`, `/Condition/${RELABELLED}/_history`]) {
      const r = await receive(await stack.get(path, clinician));
      expectError(r, 403, 'break-glass-available');
      expectAbsent(r, [SECRET, DEMO.patients.henry]);
    }
    const head = await stack.request(`/Condition/${RELABELLED}/_history/1`, { ...clinician, method: 'HEAD' });
    expect(head.status).toBe(403);
  });

  it('under break-glass the clinician reads version 1 (a Patient: break-glass names one patient)', async () => {
    const path = `/Patient/${PATIENT}/_history/1`;
    const denied = await receive(await stack.get(path, clinician));
    expectError(denied, 403, 'break-glass-available');
    expectAbsent(denied, [PATIENT_SECRET]);
    const r = await receive(await stack.get(path, { ...clinician, purpose: 'BTG', headers: { 'x-break-glass-reason': 'unconscious patient in the emergency department' } }));
    expect(r.status, r.text).toBe(200);
    expect(r.text).toContain(PATIENT_SECRET);
    expect(r.headers.get('x-break-glass-session')).toBeTruthy();
  });
});

describe('instance history of a withheld resource looks like a missing one (BYPASSES 17)', () => {
  it('a caller not told about break-glass: withheld and missing answer the same bytes', async () => {
    const a = await receive(await stack.get(`/Condition/${RELABELLED}/_history`, clerk));
    const b = await receive(await stack.get(`/Condition/${MISSING}/_history`, clerk));
    expectError(a, 404, 'not-found');
    expect(a.status).toBe(b.status);
    expect(a.text).toBe(b.text);
    expect(comparableHeaders(a.headers)).toEqual(comparableHeaders(b.headers));
    expectAbsent(a, [SECRET, RELABELLED]);
  });

  it('the vread of version 1 too', async () => {
    const a = await receive(await stack.get(`/Condition/${RELABELLED}/_history/1`, clerk));
    const b = await receive(await stack.get(`/Condition/${MISSING}/_history/1`, clerk));
    expect([a.status, a.text]).toEqual([b.status, b.text]);
    expect(comparableHeaders(a.headers)).toEqual(comparableHeaders(b.headers));
  });

  it('a visible resource keeps its history', async () => {
    const r = await receive(await stack.get(`/Condition/${TWO}/_history`, clerk));
    expect(r.status, r.text).toBe(200);
    expect(r.text).toContain('first');
    expect(r.text).toContain('second');
  });
});

describe('past versions need the history grant', () => {
  it('billing (read, search) may vread the current version only', async () => {
    const past = await receive(await stack.get(`/Condition/${TWO}/_history/1`, billing));
    expectError(past, 403, 'interaction-denied');
    expectAbsent(past, ['first']);
    const cur = await receive(await stack.get(`/Condition/${TWO}/_history/2`, billing));
    expect(cur.status, cur.text).toBe(200);
  });

  it('a clinician (history granted) may vread a past version', async () => {
    const r = await receive(await stack.get(`/Condition/${TWO}/_history/1`, clerk));
    expect(r.status, r.text).toBe(200);
    expect(r.text).toContain('first');
  });
});
