/**
 * A command-line writer (an export's or a review's own record) beside a running gateway's file
 * sink: it writes a file of its own and never touches the gateway's. Opening a plain second sink
 * in the same directory would "repair" the gateway's last line while its batch is being written.
 */
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileAuditSink } from '../../../src/audit/file-sink.js';
import { listAuditFiles, parseAuditFileName } from '../../../src/audit/files.js';
import { readFileRecords } from '../../../src/audit/read.js';
import { verifyChains } from '../../../src/audit/verify.js';
import { sampleRecord } from './fixtures.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'phi-sidecar-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const open = (writerId: string, sidecar?: string) => FileAuditSink.open({ dir, rotateBytes: 1 << 20, groupCommitMs: 0, writerId, sidecar });

async function read() {
  const items = [];
  for await (const i of readFileRecords(dir)) items.push(i);
  return items;
}

describe('a command-line writer beside the gateway (file sink)', () => {
  it('writes its own file and leaves a gateway batch in flight alone', async () => {
    const gateway = await open('gw');
    for (let i = 0; i < 3; i++) await gateway.write(sampleRecord(i));
    const [mainFile] = readdirSync(dir);
    // The gateway's next batch, half written when the command line starts.
    const inFlight = '{"id":"req-half","kind":"fhir"';
    appendFileSync(join(dir, mainFile), inFlight);
    const before = readFileSync(join(dir, mainFile), 'utf8');

    const cli = await open('cli-writer', 'clitest1');
    await cli.write(sampleRecord(100, { kind: 'audit-export' }));
    await cli.close();

    expect(readFileSync(join(dir, mainFile), 'utf8')).toBe(before);
    const files = await listAuditFiles(dir);
    expect(files.map((f) => f.sidecar ?? 'main').sort()).toEqual(['clitest1', 'main']);
    const cliLines = readFileSync(join(dir, files.find((f) => f.sidecar)!.name), 'utf8').trim().split('\n');
    expect(cliLines.map((l) => JSON.parse(l).kind)).toEqual(['audit-export', 'writer-seal']);

    // Both tails are a writer's own: the gateway's torn line is reported as torn, not as corruption.
    const items = await read();
    const torn = items.filter((i) => 'corrupt' in i);
    expect(torn).toHaveLength(1);
    expect(torn[0]).toMatchObject({ torn: true });
    await gateway.close();
  });

  it('a gateway opened later repairs and continues its own file, never the command line\'s', async () => {
    const first = await open('gw1');
    await first.write(sampleRecord(1));
    await first.close();
    const cli = await open('cli-writer', 'clitest2');
    await cli.write(sampleRecord(2, { kind: 'audit-export' }));
    await cli.close();
    const second = await open('gw2');
    await second.write(sampleRecord(3));
    await second.close();
    const files = await listAuditFiles(dir);
    expect(files).toHaveLength(2);
    const writersIn = (name: string) => new Set(readFileSync(join(dir, name), 'utf8').trim().split('\n').map((l) => JSON.parse(l).chain.writer));
    expect([...writersIn(files.find((f) => !f.sidecar)!.name)].sort()).toEqual(['gw1', 'gw2']);
    expect([...writersIn(files.find((f) => f.sidecar)!.name)]).toEqual(['cli-writer']);
    const report = await verifyChains(await read());
    expect(report.problems).toEqual([]);
    expect(report.writers).toBe(3);
  });

  it('names: a sidecar file carries its name after the number; odd names are not audit files', () => {
    expect(parseAuditFileName('audit-2026-12-06-000-cli1t2.ndjson')).toMatchObject({ day: '2026-12-06', n: 0, sidecar: 'cli1t2' });
    expect(parseAuditFileName('audit-2026-12-06-001.ndjson')?.sidecar).toBeUndefined();
    expect(parseAuditFileName('audit-2026-12-06-001-CLI.ndjson')).toBeUndefined();
    expect(parseAuditFileName('audit-2026-12-06-001-a.b.ndjson')).toBeUndefined();
  });
});
