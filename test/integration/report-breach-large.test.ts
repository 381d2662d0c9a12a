/**
 * `report breach` over 1,000,000 stored records under the memory bound of the other exports
 * (audit-export-large.test.ts: 128 MB old space, 256 MB RSS), and its per-patient and per-state
 * counts equal a brute-force recount of the same generated records. The trail is written with a
 * plain streaming writer (not the sink) to keep the test fast; the report runs in a child process
 * (tsx) through the CLI's own `run`, so its RSS is measured alone.
 */
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const N = 1_000_000;
const PATIENTS = 3000;
const RSS_LIMIT_MB = 256;
const T0 = Date.parse('2025-01-01T00:00:00.000Z');
/** Ten days of records, one every 864 ms. */
const STEP = (10 * 86_400_000) / N;
const FROM = '2025-01-02T00:00:00.000Z';
const TO = '2025-01-09T00:00:00.000Z';
const ACTORS = ['user-1', 'user-2'];
const CLIENTS = ['app-c'];
const RANGES = ['10.2.0.0/16', '2001:db8:1::/48'];
const TYPES = ['Patient', 'Observation', 'Condition'] as const;
const ELEMENTS: Record<(typeof TYPES)[number], readonly (readonly string[])[]> = {
  Patient: [
    ['address', 'birthDate', 'id', 'name'],
    ['gender', 'id'],
  ],
  Observation: [
    ['code', 'id', 'subject', 'valueQuantity'],
    ['code', 'id', 'status', 'subject'],
  ],
  Condition: [['code', 'id', 'subject']],
};

let root: string;
let dir: string;

interface Expected {
  requests: number;
  resources: number;
  first: number;
  last: number;
  elements: Set<string>;
  types: Set<string>;
  /** The state of the latest record that showed one. */
  state: string | undefined;
  /** Every state a record showed. */
  states: Set<string>;
  sessions: Set<string>;
  grants: Set<string>;
}
const expected = new Map<string, Expected>();

/** The state a patient's Patient resource shows at time t: two in 3 in CA; one in 7 none; one in 11 moved to OR on day 5. */
function stateOf(k: number, t: number): string | undefined {
  if (k % 7 === 0) return undefined;
  if (k % 11 === 0 && t >= T0 + 5 * 86_400_000) return 'OR';
  return k % 3 !== 2 ? 'CA' : (['NY', 'TX', 'MA', 'WA'][k % 4] as string);
}

function addressOf(i: number): string {
  switch (i % 6) {
    case 0:
      return `10.1.${i % 200}.${i % 250}`;
    case 1:
      return `::ffff:10.2.${i % 200}.${i % 250}`; // mapped IPv4, inside 10.2.0.0/16
    case 2:
      return `2001:db8:1::${(i % 65535).toString(16)}`;
    case 3:
      return `2001:db8:2::${(i % 65535).toString(16)}`;
    case 4:
      return `10.2.${i % 200}.${i % 250}`;
    default:
      return '192.168.0.9';
  }
}

// Constant parts of every line, built once (the generator writes ~800 MB).
const HASHES = `"hash":"${'a'.repeat(64)}","prev":"${'0'.repeat(64)}"`;

async function generate(): Promise<void> {
  const from = Date.parse(FROM);
  const to = Date.parse(TO);
  const perFile = N / 2;
  for (let f = 0; f < 2; f++) {
    const out = createWriteStream(join(dir, `audit-2025-01-01-00${f + 1}.ndjson`));
    let chunk = '';
    for (let k = 0; k < perFile; k++) {
      const i = f * perFile + k;
      const t = T0 + Math.floor(i * STEP);
      const time = new Date(t).toISOString();
      const sub = `user-${i % 8}`;
      const client = `app-${'abcde'[i % 5]}`;
      const address = addressOf(i);
      const selected = ACTORS.includes(sub) || CLIENTS.includes(client) || i % 6 === 1 || i % 6 === 2 || i % 6 === 4;
      const inWindow = t >= from && t < to;
      const p1 = (i * 7919) % PATIENTS;
      const pats = i % 10 === 0 ? [p1, (p1 + 1) % PATIENTS] : [p1];
      const type = TYPES[Math.floor(i / 7) % 3] as (typeof TYPES)[number];
      const variants = ELEMENTS[type];
      const names = variants[i % variants.length] as readonly string[];
      const resources = type === 'Patient' ? pats.map((p) => `Patient/pat-${p}`) : pats.map((_, j) => `${type}/o${i}-${j}`);
      const states = type === 'Patient' ? pats.map((p) => [p, stateOf(p, t)] as const).filter(([, s]) => s !== undefined) : [];
      const anomaly = i % 1000 === 999;
      const decision = i % 13 === 0 ? 'deny' : 'allow';
      const session = i % 997 === 0 ? `bg-${i % 5}` : undefined;
      const grant = i % 1009 === 0 ? `grant-${i % 3}` : undefined;
      const releasing = !anomaly && decision === 'allow';
      const disclosed = releasing
        ? `{"elements":{"${type}":${JSON.stringify(names)}},"elementsRemoved":2,"patients":${JSON.stringify(pats.map((p) => `pat-${p}`))},"resources":${JSON.stringify(resources)},"resourcesWithheld":0${
            states.length ? `,"states":{${states.map(([p, s]) => `"pat-${p}":"${s}"`).join(',')}}` : ''
          }}`
        : `{"elementsRemoved":0,"patients":${anomaly ? JSON.stringify(pats.map((p) => `pat-${p}`)) : '[]'},"resources":[],"resourcesWithheld":0}`;
      chunk +=
        `{"actor":{"clientId":"${client}","iss":"https://idp.example","jti":"j${i}","roles":["clinician"],"sub":"${sub}"}` +
        (session ? `,"breakGlass":{"reason":"ED emergency ${session}","session":"${session}"}` : '') +
        `,"chain":{${HASHES},"seq":${i + 1},"writer":"w"}` +
        `,"client":{"address":"${address}"},"decision":"${decision}"${anomaly ? ',"details":{"anomaly":"bulk-access"}' : ''},"disclosed":${disclosed}` +
        `,"durations":{"totalMs":3}${grant ? `,"grant":{"approvedBy":"boss","dataSet":"claims","id":"${grant}","patient":"pat-${p1}"}` : ''}` +
        `,"id":"req-${i}","kind":"${anomaly ? 'anomaly' : 'fhir'}","policyVersion":"v1","purpose":"TREAT"` +
        `,"request":{"interaction":"read","method":"GET","path":"/${type}/x","resourceType":"${type}"},"role":"clinician","rule":"r"` +
        `,"status":${decision === 'allow' ? 200 : 403},"time":"${time}","upstreamStatus":200}\n`;

      // The brute-force recount, straight from what was just written.
      if (selected && inWindow && releasing && !anomaly) {
        for (const p of pats) {
          const id = `pat-${p}`;
          let e = expected.get(id);
          if (!e) {
            e = { requests: 0, resources: 0, first: t, last: t, elements: new Set(), types: new Set(), state: undefined, states: new Set(), sessions: new Set(), grants: new Set() };
            expected.set(id, e);
          }
          e.requests++;
          e.resources += resources.length;
          e.first = Math.min(e.first, t);
          e.last = Math.max(e.last, t);
          e.types.add(type);
          for (const n of names) e.elements.add(`${type}.${n}`);
          const s = states.find(([q]) => q === p)?.[1];
          if (s !== undefined) {
            e.state = s; // records are written in time order: the last one wins
            e.states.add(s);
          }
          if (session) e.sessions.add(session);
          if (grant) e.grants.add(grant);
        }
      }
      if (chunk.length > 1 << 20) {
        if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
        chunk = '';
      }
    }
    await new Promise<void>((r) => out.end(chunk, () => r()));
  }
}

// The child: the CLI's `report breach` to a file, sampling RSS, then one JSON line.
const CHILD = `
const { run } = await import(${JSON.stringify(resolve('src/cli/report.ts'))});
let maxRss = 0;
const sample = () => { maxRss = Math.max(maxRss, process.memoryUsage().rss); };
const timer = setInterval(sample, 20);
let err = '';
const io = { stdout: process.stdout, stderr: { write: (s) => { err += s; return true; } }, env: {}, now: () => new Date('2025-01-10T00:00:00.000Z') };
const code = await run(JSON.parse(process.argv[1]), io);
sample();
clearInterval(timer);
process.stdout.write(JSON.stringify({ code, err, maxRssMb: maxRss / 1048576 }) + '\\n');
`;

function runChild(args: string[]): Promise<{ code: number; err: string; maxRssMb: number }> {
  return new Promise((resolvePromise, reject) => {
    // The same capped old space as the export test: a leak fails loudly (out of memory).
    const child = spawn(process.execPath, ['--max-old-space-size=128', '--import', 'tsx', '--input-type=module', '-e', CHILD, JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (err += d));
    child.on('exit', (code) => (code === 0 ? resolvePromise(JSON.parse(out.trim().split('\n').at(-1) as string)) : reject(new Error(`child exited ${code}: ${err.slice(0, 2000)}`))));
  });
}

/** RFC 4180 rows (quoted cells may hold commas, quotes and line breaks). */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(cell);
      cell = '';
    } else if (c === '\r' && text[i + 1] === '\n') {
      row.push(cell);
      rows.push(row);
      row = [];
      cell = '';
      i++;
    } else cell += c;
  }
  return rows;
}

describe('report breach at 1,000,000 records', () => {
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'phi-breach-large-'));
    dir = join(root, 'audit');
    await mkdir(dir);
    const t = performance.now();
    await generate();
    console.info(`generated ${N} records in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }, 120_000);
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it(`counts every patient as a brute-force recount does, in under ${RSS_LIMIT_MB} MB RSS`, { timeout: 300_000 }, async () => {
    const out = join(root, 'breach.csv');
    const args = ['report', 'breach', '--source', `file:${dir}`, '--from', FROM, '--to', TO, '--discovered', '2025-01-10T00:00:00Z', '--format', 'csv', '--out', out];
    for (const a of ACTORS) args.push('--actor', a);
    for (const c of CLIENTS) args.push('--client', c);
    for (const r of RANGES) args.push('--address', r);
    const started = performance.now();
    const { code, err, maxRssMb } = await runChild(args);
    const seconds = (performance.now() - started) / 1000;
    expect(code, err).toBe(0);
    expect(err).toContain(`breach from ${N} records, ${expected.size} patients`);

    const [header, ...rows] = parseCsv(await readFile(out, 'utf8'));
    const col = (name: string) => (header as string[]).indexOf(name);
    expect(col('patient')).toBe(0);
    expect(rows).toHaveLength(expected.size);
    // Most patients, but not all: the selection and the window leave some out.
    expect(expected.size).toBeGreaterThan(PATIENTS / 2);
    expect(expected.size).toBeLessThan(PATIENTS);

    const perState = new Map<string, number>();
    const wantPerState = new Map<string, number>();
    for (const row of rows) {
      const id = row[0] as string;
      const e = expected.get(id);
      expect(e, id).toBeDefined();
      if (!e) continue;
      const got = {
        state: row[col('state')],
        others: row[col('other states shown')],
        first: row[col('first access')],
        last: row[col('last access')],
        requests: Number(row[col('requests')]),
        resources: Number(row[col('resources')]),
        types: row[col('resource types')],
        elements: row[col('elements')],
        sessions: row[col('break-glass (session: reason)')],
        grants: row[col('access grants (data set)')],
      };
      expect(got, id).toEqual({
        state: e.state ?? 'unknown',
        others: [...e.states].filter((s) => s !== e.state).sort().join(' '),
        first: new Date(e.first).toISOString(),
        last: new Date(e.last).toISOString(),
        requests: e.requests,
        resources: e.resources,
        types: [...e.types].sort().join(' '),
        elements: [...e.elements].sort().join(' '),
        sessions: [...e.sessions].sort().map((s) => `${s}: ED emergency ${s}`).join('; '),
        grants: [...e.grants].sort().map((g) => `${g} (claims)`).join('; '),
      });
      perState.set(got.state as string, (perState.get(got.state as string) ?? 0) + 1);
      const want = e.state ?? 'unknown';
      wantPerState.set(want, (wantPerState.get(want) ?? 0) + 1);
    }
    expect(perState).toEqual(wantPerState);
    // The generated population has one state over the media threshold, movers, and patients of unknown state.
    expect(wantPerState.get('CA')).toBeGreaterThan(500);
    expect(wantPerState.get('OR')).toBeGreaterThan(0);
    expect(rows.filter((r) => r[col('other states shown')] === 'CA').length).toBeGreaterThan(0);
    expect(wantPerState.get('unknown')).toBeGreaterThan(0);

    console.info(`report breach 1M records: ${seconds.toFixed(1)} s, max RSS ${maxRssMb.toFixed(0)} MB (limit ${RSS_LIMIT_MB})`);
    expect(maxRssMb).toBeLessThan(RSS_LIMIT_MB);
  });
});
