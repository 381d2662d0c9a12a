/**
 * Issue 3, `GET /audit/export` on the proxy port, against the real stack: auditors and privacy
 * officers with HCOMPL get every format (ndjson, csv with its header row, NDJSON of BALP
 * AuditEvents) with the SPEC 5 filters; everyone else gets 403 export-denied; every attempt,
 * allowed or not, is itself a record of kind 'export'; and with the audit sink failing an export
 * is refused with 503 before a single exported byte is sent.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditEvent } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditSink, openAuditSource } from '../../src/audit/index.js';
import type { AuditRecord, AuditSink, ChainedRecord } from '../../src/audit/record.js';
import { CSV_COLUMNS } from '../../src/audit/csv.js';
import { DEMO } from '../../src/demo/data.js';
import { ERROR_SYSTEM } from '../../src/errors.js';
import { type Stack, startStack } from '../helpers/gateway.js';

const root = mkdtempSync(join(tmpdir(), 'phi-export-http-'));
const auditDir = join(root, 'audit');

/** The real file sink behind a switch that makes every write fail (a dead disk). */
let failing = false;
const inner = await createAuditSink({ sink: 'file', path: auditDir, failOpen: false, rotateBytes: 64 * 1024 * 1024, groupCommitMs: 0 });
const switchable: AuditSink = {
  write: (r: AuditRecord) => (failing ? Promise.reject(new Error('simulated disk failure')) : inner.write(r)),
  ready: () => inner.ready(),
  close: () => inner.close(),
};

let stack: Stack;
let origin: string;
/** The seed requests' X-Request-Ids. */
const seed: Record<'aliceRead' | 'brianBilling' | 'denied' | 'aliceSearch', string> = { aliceRead: '', brianBilling: '', denied: '', aliceSearch: '' };

async function stored(): Promise<ChainedRecord[]> {
  const out: ChainedRecord[] = [];
  for await (const i of openAuditSource(`file:${auditDir}`)) if ('record' in i) out.push(i.record);
  return out;
}

async function byId(id: string): Promise<ChainedRecord> {
  const mine = (await stored()).filter((r) => r.id === id);
  expect(mine, `exactly one record for ${id}`).toHaveLength(1);
  return mine[0];
}

interface Answer {
  status: number;
  id: string;
  contentType: string;
  text: string;
}

async function exportAs(role: string | undefined, purpose: string | undefined, query: string): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (role) headers.authorization = `Bearer ${await stack.token(role)}`;
  if (purpose) headers['x-purpose-of-use'] = purpose;
  const res = await fetch(`${origin}/audit/export${query ? `?${query}` : ''}`, { headers });
  return { status: res.status, id: res.headers.get('x-request-id') ?? '', contentType: res.headers.get('content-type') ?? '', text: await res.text() };
}

function ndjson<T>(text: string): T[] {
  expect(text === '' || text.endsWith('\n')).toBe(true);
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as T);
}

/** RFC 4180 reader (quoted fields, doubled quotes, CRLF records): the test's own, not the exporter's. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\r' && text[i + 1] === '\n') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
      i++;
    } else field += c;
  }
  expect(field === '' && row.length === 0, 'CSV ends with CRLF').toBe(true);
  return rows;
}

function errorCode(text: string): string | undefined {
  const oo = JSON.parse(text) as { issue?: Array<{ details?: { coding?: Array<{ system?: string; code?: string }> } }> };
  return oo.issue?.[0]?.details?.coding?.find((c) => c.system === ERROR_SYSTEM)?.code;
}

const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 5)); // distinct record times for from/to

beforeAll(async () => {
  stack = await startStack({ audit: switchable, env: { PHI_GATEWAY_AUDIT: `file:${auditDir}` } });
  origin = stack.url.replace(/\/fhir$/, '');
  const get = async (role: string, purpose: string, path: string, status: number): Promise<string> => {
    const res = await stack.get(path, { role, purpose });
    await res.arrayBuffer();
    expect(res.status, `${role} ${path}`).toBe(status);
    await tick();
    return res.headers.get('x-request-id')!;
  };
  seed.aliceRead = await get('clinician', 'TREAT', `/Patient/${DEMO.patients.alice}`, 200);
  seed.brianBilling = await get('billing', 'HPAYMT', `/Patient/${DEMO.patients.brian}`, 200);
  seed.denied = await get('front-desk', 'HOPERAT', '/Observation/obs-alice-bp', 403);
  seed.aliceSearch = await get('clinician', 'TREAT', `/Observation?patient=${DEMO.patients.alice}`, 200);
});

afterAll(async () => {
  await stack?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('GET /audit/export', () => {
  for (const role of ['auditor', 'privacy-officer']) {
    it(`${role} + HCOMPL: ndjson is the stored records, including this export's own record`, async () => {
      const a = await exportAs(role, 'HCOMPL', 'format=ndjson');
      expect(a.status).toBe(200);
      expect(a.contentType).toMatch(/^application\/x-ndjson/);
      const lines = ndjson<ChainedRecord>(a.text);
      const ids = lines.map((r) => r.id);
      for (const id of Object.values(seed)) expect(ids).toContain(id);
      // Recorded (durably) before the first byte, so the export contains itself.
      const self = lines.find((r) => r.id === a.id);
      expect(self).toMatchObject({ kind: 'export', decision: 'allow', role, purpose: 'HCOMPL', details: { format: 'ndjson' } });
      // Byte-for-byte the stored records (chain fields and all).
      const store = await stored();
      expect(lines).toEqual(store.slice(0, lines.length));
    });

    it(`${role} + HCOMPL: csv has the header row and one RFC 4180 row per record`, async () => {
      const a = await exportAs(role, 'HCOMPL', 'format=csv');
      expect(a.status).toBe(200);
      expect(a.contentType).toMatch(/^text\/csv/);
      const rows = parseCsv(a.text);
      expect(rows[0]).toEqual([...CSV_COLUMNS]);
      const col = (name: (typeof CSV_COLUMNS)[number]): number => CSV_COLUMNS.indexOf(name);
      for (const r of rows.slice(1)) expect(r).toHaveLength(CSV_COLUMNS.length);
      const alice = rows.find((r) => r[col('id')] === seed.aliceRead)!;
      expect([alice[col('decision')], alice[col('status')], alice[col('patients')], alice[col('resources')], alice[col('purpose')]]).toEqual([
        'allow',
        '200',
        DEMO.patients.alice,
        `Patient/${DEMO.patients.alice}`,
        'TREAT',
      ]);
      const denied = rows.find((r) => r[col('id')] === seed.denied)!;
      expect([denied[col('decision')], denied[col('status')], denied[col('patients')]]).toEqual(['deny', '403', '']);
      const store = (await stored()).filter((r) => r.kind !== 'writer-seal');
      expect(rows.slice(1).map((r) => r[col('id')])).toEqual(store.slice(0, rows.length - 1).map((r) => r.id));
    });

    it(`${role} + HCOMPL: fhir is NDJSON of BALP AuditEvents keyed by X-Request-Id`, async () => {
      const a = await exportAs(role, 'HCOMPL', 'format=fhir');
      expect(a.status).toBe(200);
      expect(a.contentType).toMatch(/^application\/fhir\+ndjson/);
      const events = ndjson<AuditEvent>(a.text);
      expect(events.every((e) => e.resourceType === 'AuditEvent')).toBe(true);
      const requestIdOf = (e: AuditEvent): string | undefined => e.entity?.find((x) => x.type?.code === 'XrequestId')?.what?.identifier?.value;
      const read = events.filter((e) => requestIdOf(e) === seed.aliceRead);
      expect(read).toHaveLength(1);
      expect(read[0]).toMatchObject({ action: 'R', outcome: '0', purposeOfEvent: [{ coding: [{ code: 'TREAT' }] }] });
      expect(read[0].entity?.some((x) => x.what?.reference === `Patient/${DEMO.patients.alice}` && x.role?.code === '1')).toBe(true);
      const denied = events.filter((e) => requestIdOf(e) === seed.denied);
      expect(denied).toHaveLength(1);
      expect(denied[0].outcome).toBe('4');
      const self = events.filter((e) => requestIdOf(e) === a.id);
      expect(self.map((e) => e.type.code)).toEqual(['110106']);
    });
  }

  it('filters: actor, patient, decision, from/to each return exactly the matching records', async () => {
    const clinicianSub = (await byId(seed.aliceRead)).actor.sub!;
    const t = {
      from: (await byId(seed.brianBilling)).time,
      to: (await byId(seed.denied)).time,
    };
    const cases: Array<{ query: string; match: (r: ChainedRecord) => boolean; has: string[]; not: string[] }> = [
      { query: `actor=${encodeURIComponent(clinicianSub)}`, match: (r) => r.actor.sub === clinicianSub, has: [seed.aliceRead, seed.aliceSearch], not: [seed.brianBilling, seed.denied] },
      {
        query: `patient=${DEMO.patients.alice}`,
        match: (r) => r.disclosed.patients.includes(DEMO.patients.alice),
        has: [seed.aliceRead, seed.aliceSearch],
        not: [seed.brianBilling, seed.denied],
      },
      { query: 'decision=deny', match: (r) => r.decision === 'deny', has: [seed.denied], not: [seed.aliceRead, seed.brianBilling] },
      {
        query: `from=${encodeURIComponent(t.from)}&to=${encodeURIComponent(t.to)}`,
        match: (r) => r.time >= t.from && r.time < t.to,
        has: [seed.brianBilling],
        not: [seed.aliceRead, seed.denied, seed.aliceSearch],
      },
    ];
    for (const c of cases) {
      const a = await exportAs('auditor', 'HCOMPL', `format=ndjson&${c.query}`);
      expect(a.status, c.query).toBe(200);
      const got = ndjson<ChainedRecord>(a.text).map((r) => r.id);
      // The oracle: the store itself, filtered here (the export's own record is in the store too).
      const expected = (await stored()).filter((r) => r.kind !== 'writer-seal' && c.match(r)).map((r) => r.id);
      expect(got, c.query).toEqual(expected);
      for (const id of c.has) expect(got, c.query).toContain(id);
      for (const id of c.not) expect(got, c.query).not.toContain(id);
      expect((await byId(a.id)).details).toMatchObject({ format: 'ndjson', filter: expect.any(Object) });
    }
  });

  it('is refused (403 export-denied) to other roles and other purposes, and every refusal is an export record', async () => {
    const attempts: Array<[string, string]> = [
      ['billing', 'HPAYMT'],
      ['clinician', 'TREAT'],
      ['auditor', 'TREAT'],
      ['privacy-officer', 'HOPERAT'],
    ];
    for (const [role, purpose] of attempts) {
      const a = await exportAs(role, purpose, 'format=ndjson');
      expect({ role, purpose, status: a.status, code: errorCode(a.text) }).toEqual({ role, purpose, status: 403, code: 'export-denied' });
      // Nothing from the trail leaks into the refusal.
      for (const id of [...Object.values(seed), DEMO.patients.alice, DEMO.patients.brian]) expect(a.text).not.toContain(id);
      const rec = await byId(a.id);
      expect({ kind: rec.kind, decision: rec.decision, status: rec.status, purpose: rec.purpose, roles: rec.actor.roles }).toEqual({
        kind: 'export',
        decision: 'deny',
        status: 403,
        purpose,
        roles: [role],
      });
      expect(rec.rule).toContain('export-denied');
    }
    const anonymous = await exportAs(undefined, 'HCOMPL', '');
    expect([anonymous.status, errorCode(anonymous.text)]).toEqual([401, 'invalid-token']);
    expect((await byId(anonymous.id)).kind).toBe('export');
  });

  it('a token naming exactly one purpose (HCOMPL) needs no header; one naming two does', async () => {
    const one = await stack.token('auditor', { purpose_of_use: ['HCOMPL'] });
    const res = await fetch(`${origin}/audit/export?format=ndjson`, { headers: { authorization: `Bearer ${one}` } });
    expect(res.status).toBe(200);
    const two = await stack.token('auditor', { purpose_of_use: ['HCOMPL', 'TREAT'] });
    const res2 = await fetch(`${origin}/audit/export?format=ndjson`, { headers: { authorization: `Bearer ${two}` } });
    expect([res2.status, errorCode(await res2.text())]).toEqual([400, 'purpose-missing']);
    // An expired token: the challenge names the failed check, as on the FHIR routes.
    const expired = await stack.token('auditor', { exp: Math.floor(Date.now() / 1000) - 3600 });
    const res3 = await fetch(`${origin}/audit/export?format=ndjson`, { headers: { authorization: `Bearer ${expired}`, 'x-purpose-of-use': 'HCOMPL' } });
    expect(res3.status).toBe(401);
    expect(res3.headers.get('www-authenticate')).toMatch(/error="invalid_token", error_description="[^"]*expired/);
  });

  it('answers 503 audit-unavailable, with no exported data, while the audit sink is failing', async () => {
    failing = true;
    let a: Answer;
    try {
      a = await exportAs('auditor', 'HCOMPL', 'format=ndjson');
    } finally {
      failing = false;
    }
    expect([a.status, errorCode(a.text)]).toEqual([503, 'audit-unavailable']);
    expect(a.contentType).toMatch(/^application\/fhir\+json/);
    for (const id of [...Object.values(seed), DEMO.patients.alice]) expect(a.text).not.toContain(id);
    // No record of an export that did not happen; the sink healed, exports work again.
    expect((await stored()).some((r) => r.id === a.id)).toBe(false);
    const again = await exportAs('auditor', 'HCOMPL', 'format=ndjson');
    expect(again.status).toBe(200);
    expect(ndjson<ChainedRecord>(again.text).map((r) => r.id)).toContain(seed.aliceRead);
  });
});
