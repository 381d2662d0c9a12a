/**
 * 1,000,000 stored records exported in every format under a fixed memory bound. The export runs in
 * a child process (tsx) so its RSS is measured alone; the file is generated with a plain streaming
 * writer (not the sink) to keep the test fast.
 */
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const N = 1_000_000;
// A fixed bound, far below what a million buffered records would need (GBs); Node 24's baseline RSS
// is ~100 MB higher than Node 20's, so the bound leaves room for both runtimes.
const RSS_LIMIT_MB = 256;
let root: string;
let dir: string;

async function generate(): Promise<void> {
  // Two files, so the reader crosses a file boundary, each line a plausible ChainedRecord.
  const perFile = N / 2;
  for (let f = 0; f < 2; f++) {
    const out = createWriteStream(join(dir, `audit-2025-01-01-00${f + 1}.ndjson`));
    let chunk = '';
    for (let k = 0; k < perFile; k++) {
      const i = f * perFile + k;
      const multi = i % 10 === 0;
      const pats = multi ? `"p${i % 977}","p${(i + 1) % 977}"` : `"p${i % 977}"`;
      chunk +=
        `{"id":"req-${i}","time":"2025-01-01T${String(Math.floor(i / 60000) % 24).padStart(2, '0')}:00:00.000Z","kind":"fhir",` +
        `"actor":{"iss":"https://idp.example","sub":"user-${i % 50}","clientId":"app","jti":"j${i}","roles":["billing"]},` +
        `"purpose":"${i % 3 ? 'HPAYMT' : 'TREAT'}","role":"billing","client":{"address":"10.0.0.${i % 250}"},` +
        `"request":{"method":"GET","path":"/fhir/${multi ? 'Observation?code=x' : `Patient/p${i % 977}`}","interaction":"${multi ? 'search-type' : 'read'}","resourceType":"${multi ? 'Observation' : 'Patient'}"},` +
        `"decision":"${i % 17 ? 'allow' : 'deny'}","rule":"r","disclosed":{"resources":["Patient/p${i % 977}"],"patients":[${pats}],"elementsRemoved":2,"resourcesWithheld":0},` +
        `"status":${i % 17 ? 200 : 403},"upstreamStatus":200,"durations":{"totalMs":3},"policyVersion":"v1",` +
        `"chain":{"writer":"w","seq":${i + 1},"prev":"${'0'.repeat(64)}","hash":"${'a'.repeat(64)}"}}\n`;
      if (chunk.length > 1 << 20) {
        if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
        chunk = '';
      }
    }
    await new Promise<void>((r) => out.end(chunk, () => r()));
  }
}

// The child: exports in each format to a counting sink, sampling RSS, prints one JSON line.
const CHILD = `
import { Writable } from 'node:stream';
const { exportRecords } = await import(${JSON.stringify(resolve('src/audit/export.ts'))});
const { openAuditSource } = await import(${JSON.stringify(resolve('src/audit/index.ts'))});
let maxRss = 0;
const sample = () => { maxRss = Math.max(maxRss, process.memoryUsage().rss); };
const timer = setInterval(sample, 20);
const results = {};
for (const format of ['ndjson', 'csv', 'fhir']) {
  let bytes = 0, lines = 0;
  const out = new Writable({ highWaterMark: 1 << 16, write(c, _e, cb) { bytes += c.length; for (let i = c.indexOf(10); i !== -1; i = c.indexOf(10, i + 1)) lines++; setImmediate(cb); } });
  const filter = format === 'fhir' ? { decision: 'allow' } : {};
  const r = await exportRecords(openAuditSource(process.argv[1]), out, { format, filter });
  sample();
  results[format] = { ...r, bytes, lines };
}
clearInterval(timer);
process.stdout.write(JSON.stringify({ maxRssMb: maxRss / 1048576, results }) + '\\n');
`;

function runChild(source: string): Promise<{ maxRssMb: number; results: Record<string, { scanned: number; exported: number; lines: number; bytes: number }> }> {
  return new Promise((resolvePromise, reject) => {
    // A capped old space makes a leak fail loudly (out of memory) instead of just growing RSS.
    const child = spawn(process.execPath, ['--max-old-space-size=128', '--import', 'tsx', '--input-type=module', '-e', CHILD, source], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (err += d));
    child.on('exit', (code) => (code === 0 ? resolvePromise(JSON.parse(out)) : reject(new Error(`child exited ${code}: ${err.slice(0, 2000)}`))));
  });
}

describe('audit export at 1,000,000 records', () => {
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'phi-audit-large-'));
    dir = join(root, 'audit');
    await mkdir(dir);
    await generate();
  }, 120_000);
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it(`streams every format in under ${RSS_LIMIT_MB} MB RSS`, { timeout: 300_000 }, async () => {
    const { maxRssMb, results } = await runChild(`file:${dir}`);
    const allowed = N - Math.ceil(N / 17);
    expect(results.ndjson).toMatchObject({ scanned: N, exported: N, lines: N });
    expect(results.csv).toMatchObject({ scanned: N, exported: N, lines: N + 1 });
    // One AuditEvent per patient: every 10th record touches two.
    const multiAllowed = Array.from({ length: N / 10 }, (_, k) => k * 10).filter((i) => i % 17 !== 0).length;
    expect(results.fhir).toMatchObject({ scanned: N, exported: allowed, lines: allowed + multiAllowed });
    console.info(`audit export 1M records: max RSS ${maxRssMb.toFixed(0)} MB (limit ${RSS_LIMIT_MB})`);
    expect(maxRssMb).toBeLessThan(RSS_LIMIT_MB);
  });
});
