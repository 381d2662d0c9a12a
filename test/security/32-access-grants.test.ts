/**
 * Elevated access on request, attacked from outside with billing's tokens against the real upstream
 * and the shipped policy (`claim-attachment`: billing asks, the privacy officer approves, documents
 * and reports of the granted patient). A grant must reach exactly what it names, for its requester,
 * while it is in force: nobody approves their own request; another requester's grant, a grant for
 * another patient and a grant no longer in force open nothing, and answer byte for byte as a grant
 * or a patient that does not exist would (apart from X-Request-Id); a page of a search made under a
 * grant is not read after the grant ends; and a grant never lets anyone write.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { comparableHeaders, expectAbsent, expectError, type Received, receive, refs } from './support.js';

const P = DEMO.patients;
const FHIR_JSON = 'application/fhir+json';
const JUSTIFICATION = 'Payer requested the progress note as a claim attachment for claim 2024-32';
/** Alice's extra documents (so a search under the grant pages) and one of Brian's. */
const ALICE_DOCS = ['doc-alice-32a', 'doc-alice-32b', 'doc-alice-32c'];
const BRIAN_DOC = 'doc-brian-32';
const BRIAN_TEXT = 'Brian Baker discharge summary 32: knee arthroscopy, no complications.';
/** A grant id nobody was given. */
const NO_GRANT = '00000000-0000-4000-8000-000000000032';

class Clock {
  t = Date.now();
  readonly now = () => new Date(this.t);
}

let stack: Stack;
let base: string;
const clock = new Clock();

function documentOf(id: string, patient: string, text: string) {
  return {
    resourceType: 'DocumentReference',
    id,
    status: 'current',
    type: { coding: [{ system: 'http://loinc.org', code: '11506-3', display: 'Progress note' }] },
    subject: { reference: `Patient/${patient}` },
    date: '2024-03-01T10:00:00Z',
    content: [{ attachment: { contentType: 'text/plain', data: Buffer.from(text, 'utf8').toString('base64') } }],
  };
}

beforeAll(async () => {
  stack = await startStack({ now: clock.now });
  base = stack.url.replace(/\/fhir$/, '');
  const put = async (r: { resourceType: string; id: string }) => {
    const res = await fetch(`${stack.upstreamUrl}/${r.resourceType}/${r.id}`, { method: 'PUT', headers: { 'content-type': FHIR_JSON }, body: JSON.stringify(r) });
    expect(res.ok, `${r.resourceType}/${r.id}`).toBe(true);
  };
  for (const id of ALICE_DOCS) await put(documentOf(id, P.alice, `Alice progress note ${id}`));
  await put(documentOf(BRIAN_DOC, P.brian, BRIAN_TEXT));
}, 60_000);

afterAll(async () => {
  await stack?.close();
});

type Who = { role: string; sub: string; roles?: string[]; purpose: string };
const clerk = (sub: string): Who => ({ role: 'billing', sub, purpose: 'HPAYMT' });
const officer = (sub: string): Who => ({ role: 'privacy-officer', sub, purpose: 'HCOMPL' });

async function tokenOf(who: Who): Promise<string> {
  return stack.token(who.role, { sub: who.sub, ...(who.roles ? { roles: who.roles } : {}) });
}

/** A call to the access-request routes. */
async function access(who: Who, method: 'GET' | 'POST', path: string, body?: unknown): Promise<Received> {
  const headers: Record<string, string> = { authorization: `Bearer ${await tokenOf(who)}`, 'x-purpose-of-use': who.purpose };
  if (body !== undefined) headers['content-type'] = 'application/json';
  return receive(await fetch(`${base}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) }));
}

/** A FHIR call, with the grant header when given. */
async function fhir(who: Who, path: string, grant?: string, o: { method?: string; body?: unknown } = {}): Promise<Received> {
  return receive(
    await stack.request(path, {
      token: await tokenOf(who),
      purpose: who.purpose,
      method: o.method ?? 'GET',
      headers: { accept: FHIR_JSON, ...(grant === undefined ? {} : { 'x-access-grant': grant }) },
      ...(o.body === undefined ? {} : { body: JSON.stringify(o.body), contentType: FHIR_JSON }),
    }),
  );
}

/** A new request for `patients` by `who`; its id. */
async function ask(who: Who, patients: string[] = [P.alice], minutes = 60): Promise<string> {
  const r = await access(who, 'POST', '/access-requests', { dataSet: 'claim-attachment', patients, justification: JUSTIFICATION, minutes });
  expect(r.status, r.text).toBe(201);
  return (r.json as { id: string }).id;
}

/** A request by `who`, approved by a privacy officer: the grant's id. */
async function granted(who: Who, patients: string[] = [P.alice], minutes = 60): Promise<string> {
  const id = await ask(who, patients, minutes);
  const r = await access(officer('po-32'), 'POST', `/access-requests/${id}/approve`, {});
  expect(r.status, r.text).toBe(200);
  return id;
}

/** The answer without what differs per request by design (X-Request-Id, Date). */
function same(a: Received, b: Received): void {
  expect({ status: a.status, headers: comparableHeaders(a.headers), text: a.text }).toEqual({ status: b.status, headers: comparableHeaders(b.headers), text: b.text });
}

const documentData = (text: string) => Buffer.from(text, 'utf8').toString('base64');
const ALICE_NOTE = documentData(DEMO.documentText);

describe('access grants from outside', () => {
  it('nobody approves their own request, nor a request for a data set they hold one for; the grant opens nothing', async () => {
    // One person holding both the requester and the approver role.
    const both: Who = { role: 'billing', sub: 'clerk-and-officer-32', roles: ['billing', 'privacy-officer'], purpose: 'HPAYMT' };
    const own = await ask(both);
    const self = await access({ ...both, purpose: 'HCOMPL' }, 'POST', `/access-requests/${own}/approve`, {});
    expectError(self, 403, 'approval-not-permitted');
    // ... nor another clerk's, while holding a pending request for the same data set.
    const other = await ask(clerk('clerk-32-x'));
    const mutual = await access({ ...both, purpose: 'HCOMPL' }, 'POST', `/access-requests/${other}/approve`, {});
    expectError(mutual, 403, 'approval-not-permitted');
    // Billing alone has no approver role, and may not see another clerk's request: it is told
    // nothing of it, exactly as for an id that does not exist.
    const unseen = await access(clerk('clerk-32-y'), 'POST', `/access-requests/${other}/approve`, {});
    const missing = await access(clerk('clerk-32-y'), 'POST', '/access-requests/8513cabb-25d0-45a9-89be-6f0cbae99f1b/approve', {});
    expectError(unseen, 404, 'access-request-not-found');
    expectError(missing, 404, 'access-request-not-found');

    const use = await fhir(both, `/DocumentReference?patient=${P.alice}`, own);
    expectError(use, 403, 'grant-inactive');
    expectAbsent(use, [ALICE_NOTE, DEMO.documentReference]);
    expect((await access(officer('po-32'), 'GET', `/access-requests/${own}`)).json).toMatchObject({ status: 'pending', active: false });
  });

  it("another requester's grant opens nothing, and answers exactly as a grant that does not exist", async () => {
    const id = await granted(clerk('clerk-32-a'));
    expect((await fhir(clerk('clerk-32-a'), `/DocumentReference?patient=${P.alice}`, id)).status).toBe(200);

    const stolen = await fhir(clerk('clerk-32-b'), `/DocumentReference?patient=${P.alice}`, id);
    const unknown = await fhir(clerk('clerk-32-b'), `/DocumentReference?patient=${P.alice}`, NO_GRANT);
    expectError(stolen, 403, 'grant-invalid');
    expectAbsent(stolen, [ALICE_NOTE, DEMO.documentReference, ...ALICE_DOCS]);
    same(stolen, unknown);
    // The header is the caller's to send: the same grant id under another role is no better.
    expectError(await fhir({ role: 'coder', sub: 'clerk-32-b', purpose: 'HPAYMT' }, `/DocumentReference?patient=${P.alice}`, id), 403, 'grant-invalid');
  });

  it('a grant for one patient opens nothing of another, whether or not that patient exists', async () => {
    const who = clerk('clerk-32-c');
    const id = await granted(who);
    const brian = await fhir(who, `/DocumentReference?patient=${P.brian}`, id);
    const nobody = await fhir(who, '/DocumentReference?patient=pat-does-not-exist-32', id);
    expectError(brian, 403, 'grant-out-of-scope');
    expectAbsent(brian, [BRIAN_DOC, documentData(BRIAN_TEXT), 'Baker']);
    same(brian, nobody);
    for (const path of [`/Patient/${P.brian}/DocumentReference`, `/DocumentReference?subject=Patient/${P.brian}`, `/DiagnosticReport?patient=${P.brian}`]) {
      expectError(await fhir(who, path, id), 403, 'grant-out-of-scope');
    }

    // Naming no patient: limited to the granted one. Brian's document by id answers as a missing one.
    const all = await fhir(who, '/DocumentReference?_count=50', id);
    expect(all.status).toBe(200);
    expect(refs(all.json).sort()).toEqual([...ALICE_DOCS, DEMO.documentReference].map((d) => `DocumentReference/${d}`).sort());
    expectAbsent(all, [BRIAN_DOC, documentData(BRIAN_TEXT)]);
    const byId = await fhir(who, `/DocumentReference/${BRIAN_DOC}`, id);
    const missing = await fhir(who, '/DocumentReference/doc-does-not-exist-32', id);
    expect(byId.status).toBe(404);
    expectAbsent(byId, [documentData(BRIAN_TEXT), P.brian]);
    same(byId, missing);
  });

  it('a revoked, expired, denied or pending grant opens nothing, and they all answer alike', async () => {
    const who = clerk('clerk-32-d');
    const path = `/DocumentReference?patient=${P.alice}`;
    const pending = await ask(who);
    const denied = await ask(who);
    expect((await access(officer('po-32'), 'POST', `/access-requests/${denied}/deny`, { note: 'No payer letter on file' })).status).toBe(200);
    const revoked = await granted(who);
    expect((await fhir(who, path, revoked)).status).toBe(200);
    expect((await access(officer('po-32'), 'POST', `/access-requests/${revoked}/revoke`, {})).status).toBe(200);
    const expiring = await granted(who, [P.alice], 1);
    expect((await fhir(who, path, expiring)).status).toBe(200);
    clock.t += 61_000;

    const answers = [await fhir(who, path, pending), await fhir(who, path, denied), await fhir(who, path, revoked), await fhir(who, path, expiring)];
    for (const a of answers) {
      expectError(a, 403, 'grant-inactive');
      expectAbsent(a, [ALICE_NOTE, DEMO.documentReference, ...ALICE_DOCS]);
      same(a, answers[0]);
    }
  });

  it('a search made under a grant is not paged on after the grant ends, nor without it or under another', async () => {
    const who = clerk('clerk-32-e');
    const id = await granted(who);
    const other = await granted(who);
    const first = await fhir(who, `/DocumentReference?patient=${P.alice}&_count=1`, id);
    expect(first.status).toBe(200);
    const next = (r: Received) => (r.json as { link?: { relation: string; url: string }[] }).link?.find((l) => l.relation === 'next')?.url;
    const link = next(first)!;
    expect(link).toContain('_cursor=');
    const path = link.slice(stack.url.length);
    const second = await fhir(who, path, id);
    expect(second.status).toBe(200);
    expect(refs(second.json)).toHaveLength(1);
    const third = next(second)!.slice(stack.url.length);

    // The continuation is bound to the grant: not without it, not under another grant of the same requester.
    expectError(await fhir(who, third, undefined), 400, 'paging-token-invalid');
    expectError(await fhir(who, third, other), 400, 'paging-token-invalid');

    expect((await access(clerk('clerk-32-e'), 'POST', `/access-requests/${id}/revoke`, { note: 'Done with it' })).status).toBe(200);
    const after = await fhir(who, third, id);
    expectError(after, 403, 'grant-inactive');
    expectAbsent(after, [ALICE_NOTE, ...ALICE_DOCS, DEMO.documentReference]);
  });

  it('a grant never lets its holder write, the granted types included; nothing reaches the upstream', async () => {
    const who = clerk('clerk-32-f');
    const id = await granted(who);
    const read = async () => (await (await fetch(`${stack.upstreamUrl}/DocumentReference/${ALICE_DOCS[0]}`, { headers: { accept: FHIR_JSON } })).json()) as { meta: { versionId: string } };
    const before = (await read()).meta.versionId;
    const changed = { ...documentOf(ALICE_DOCS[0], P.alice, 'Rewritten under a grant'), status: 'entered-in-error' };
    const attempts = [
      await fhir(who, `/DocumentReference/${ALICE_DOCS[0]}`, id, { method: 'PUT', body: changed }),
      await fhir(who, '/DocumentReference', id, { method: 'POST', body: { ...changed, id: undefined } }),
      await fhir(who, `/DocumentReference/${ALICE_DOCS[0]}`, id, { method: 'DELETE' }),
      await fhir(who, `/Claim`, id, { method: 'POST', body: { resourceType: 'Claim', status: 'active', patient: { reference: `Patient/${P.alice}` } } }),
    ];
    for (const a of attempts) {
      expect(a.status, a.text).toBe(403);
      expect(a.text).not.toContain('Rewritten under a grant');
    }
    expect((await read()).meta.versionId).toBe(before);
    const search = (await (await fetch(`${stack.upstreamUrl}/DocumentReference?patient=${P.alice}&_count=100`, { headers: { accept: FHIR_JSON } })).json()) as { entry?: unknown[] };
    expect(search.entry).toHaveLength(ALICE_DOCS.length + 1);
  });

  // Found by an outside tester: shapes naming another patient that a one-patient grant answered
  // empty without refusing or alerting. Each is now refused as outside the grant.
  it('a grant refuses every request naming a patient it does not grant (lists, repeats, search bodies, batches)', async () => {
    const me = clerk('clerk-32-names');
    const grant = await granted(me, [P.alice]);
    const refused = [
      `/DocumentReference?patient=${P.alice},${P.brian}`,
      `/DocumentReference?patient=${P.alice}&patient=${P.brian}`,
      `/DocumentReference?subject:Patient=${P.brian}`,
      `/DocumentReference?subject=Patient/${P.brian}`,
      `/Patient?_id=${P.brian}`,
    ];
    for (const path of refused) expectError(await fhir(me, path, grant), 403, 'grant-out-of-scope');
    const body = await receive(
      await stack.request(`/DocumentReference/_search?patient=${P.alice}`, {
        token: await tokenOf(me),
        purpose: me.purpose,
        method: 'POST',
        headers: { accept: FHIR_JSON, 'x-access-grant': grant },
        body: `patient=${P.brian}`,
        contentType: 'application/x-www-form-urlencoded',
      }),
    );
    expectError(body, 403, 'grant-out-of-scope');
    const batch = { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: `DocumentReference?patient=${P.alice}` } }] };
    expectError(await fhir(me, '/', grant, { method: 'POST', body: batch }), 403, 'grant-out-of-scope');
    // The granted patient alone is still answered.
    expect((await fhir(me, `/DocumentReference?patient=${P.alice}`, grant)).status).toBe(200);
    const misuse = (await stack.auditRecords()).filter((r) => r.kind === 'fhir' && r.details?.accessGrant === grant && r.rule.endsWith('grant-out-of-scope'));
    expect(misuse.length).toBe(refused.length + 2);
  });

  // Found by an outside tester: a period of bare dates was widened by other time zones, releasing a
  // record of the day before (09:00 in New York) under a grant approved "from" the next day.
  it('a period of dates is days in the hospital time zone: nothing of the day before is released', async () => {
    const me = clerk('clerk-32-period');
    const FEB10 = 'doc-alice-32-feb10';
    const FEB11 = 'doc-alice-32-feb11';
    const put = async (r: { resourceType: string; id: string; date: string }) => {
      const res = await fetch(`${stack.upstreamUrl}/${r.resourceType}/${r.id}`, { method: 'PUT', headers: { 'content-type': FHIR_JSON }, body: JSON.stringify(r) });
      expect(res.ok).toBe(true);
    };
    await put({ ...documentOf(FEB10, P.alice, 'note of Feb 10'), date: '2024-02-10T14:00:00Z' });
    await put({ ...documentOf(FEB11, P.alice, 'note of Feb 11'), date: '2024-02-11T07:45:00Z' });
    const asked = await access(me, 'POST', '/access-requests', { dataSet: 'claim-attachment', patients: [P.alice], period: { start: '2024-02-11', end: '2024-02-28' }, justification: JUSTIFICATION, minutes: 60 });
    expect(asked.status, asked.text).toBe(201);
    const id = (asked.json as { id: string }).id;
    expect((await access(officer('po-32'), 'POST', `/access-requests/${id}/approve`, {})).status).toBe(200);
    const found = await fhir(me, `/DocumentReference?patient=${P.alice}`, id);
    expect(found.status).toBe(200);
    expect(refs(found.json)).toContain(`DocumentReference/${FEB11}`);
    expect(refs(found.json)).not.toContain(`DocumentReference/${FEB10}`);
    expectAbsent(found, [documentData('note of Feb 10')]);
    // By id, the day before answers like a document that does not exist.
    same(await fhir(me, `/DocumentReference/${FEB10}`, id), await fhir(me, '/DocumentReference/doc-alice-32-none', id));
  });

  // Found by an outside tester (second round): the same subject under a de-identified role saw and
  // used the identified requests of its billing role; a patient-limited token filed a request for
  // another patient.
  it('a request belongs to its requester in the role it was made under; a patient-limited token asks for its patient only', async () => {
    const me = clerk('clerk-32-roles');
    const grant = await granted(me, [P.alice]);
    const asResearcher: Who = { role: 'researcher', sub: 'clerk-32-roles', purpose: 'HRESCH' };
    expectError(await access(asResearcher, 'GET', `/access-requests/${grant}`), 404, 'access-request-not-found');
    const listed = await access(asResearcher, 'GET', '/access-requests');
    expect(listed.status).toBe(200);
    expect(listed.text).not.toContain(grant);
    expect(listed.text).not.toContain(JUSTIFICATION);
    expectError(await fhir(asResearcher, `/Observation?patient=${P.alice}`, grant), 403, 'grant-invalid');
    same(await fhir(asResearcher, `/Observation?patient=${P.alice}`, grant), await fhir(asResearcher, `/Observation?patient=${P.alice}`, NO_GRANT));
    const limited = await receive(
      await fetch(`${base}/access-requests`, {
        method: 'POST',
        headers: { authorization: `Bearer ${await stack.token('billing', { sub: 'clerk-32-limited', patient: P.alice })}`, 'x-purpose-of-use': 'HPAYMT', 'content-type': 'application/json' },
        body: JSON.stringify({ dataSet: 'claim-attachment', patients: [P.brian], justification: JUSTIFICATION, minutes: 60 }),
      }),
    );
    expectError(limited, 403, 'access-request-not-permitted');
  });
});
