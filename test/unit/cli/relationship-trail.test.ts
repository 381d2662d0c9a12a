// Relationship evidence through a real file trail: records written by the file sink, read back by
// `report access` (its "Access without relationship" section) and by `policy diff` (a recorded
// requirement switched on: exit 3, the refusals counted; the same policy: exit 0).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditSink } from '../../../src/audit/index.js';
import { run as policyCli } from '../../../src/cli/policy.js';
import { run as reportCli } from '../../../src/cli/report.js';
import { evidence, fhirRecord, RECORDED, REQUIRED, relationshipPolicyYaml } from '../monitor/relationship-fixtures.js';

type Run = (argv: string[], io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream; env: NodeJS.ProcessEnv }) => Promise<number>;

async function cli(run: Run, argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d) => (out += d));
  stderr.on('data', (d) => (err += d));
  const code = await run(argv, { stdout, stderr, env: {} });
  return { code, out, err };
}

describe('relationship evidence on a file trail', () => {
  let dir: string;
  let source: string;
  let recorded: string;
  let required: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'phi-rel-trail-'));
    source = `file:${join(dir, 'audit')}`;
    recorded = join(dir, 'recorded.yaml');
    required = join(dir, 'required.yaml');
    writeFileSync(recorded, relationshipPolicyYaml(RECORDED));
    writeFileSync(required, relationshipPolicyYaml(REQUIRED));
    const sink = await createAuditSink({ sink: 'file', path: join(dir, 'audit'), failOpen: false, rotateBytes: 1 << 20, groupCommitMs: 0 });
    const ct = { patient: 'pat-1', resource: 'CareTeam/ct-1', source: 'care-team' };
    await sink.write(fhirRecord('/Patient/pat-9', { sub: 'dr-a', released: ['pat-9'], relationship: evidence({ unrelated: ['pat-9'] }) }));
    await sink.write(fhirRecord('/Patient/pat-8', { sub: 'dr-a', released: ['pat-8'], relationship: evidence({ unrelated: ['pat-8'] }) }));
    await sink.write(fhirRecord('/Patient/pat-1', { sub: 'dr-a', released: ['pat-1'], relationship: evidence({ related: [ct] }) }));
    await sink.write(fhirRecord('/Patient/pat-1', { sub: 'dr-b', released: ['pat-1'] }));
    await sink.close();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('report access: the section counts the stored evidence', async () => {
    const r = await cli(reportCli as Run, ['access', '--format', 'csv', '--source', source]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toContain('# Access without relationship\r\nactor,refused: no relationship,break-glass sessions opened without one,recorded only (required: false),patients without relationship\r\ndr-a,0,0,2,2\r\n');
  });

  it('policy diff: a recorded requirement switched on would refuse two reads and cannot replay the record without a lookup', async () => {
    const r = await cli(policyCli as Run, ['diff', '--policy', recorded, '--candidate', required, '--source', source, '--format', 'csv']);
    expect(r.err).toBe('');
    expect(r.code).toBe(3);
    expect(r.out).toContain('clinician,TREAT,would be refused: no relationship,read Patient (dataSets.clinical.relationship),2\r\n');
    expect(r.out).toContain('clinician,TREAT,not looked up (cannot replay),read Patient (dataSets.clinical.relationship),1\r\n');
    const same = await cli(policyCli as Run, ['diff', '--policy', recorded, '--candidate', recorded, '--source', source, '--format', 'csv']);
    expect(same.code).toBe(0);
  });
});
