/**
 * `seed` (docker-compose's one-shot job) against a real FHIR server: every demo resource lands at
 * its own id with its security labels, Alice gets two versions, and a second run is harmless (PUT
 * is idempotent). A gateway with the shipped policy in front of the seeded server withholds what
 * the demo withholds: the VIP chart from a plain TREAT read, psychiatric conditions from billing.
 * A server that drops labels on update gets them through `$meta-add`; one that keeps dropping them
 * makes the seed fail instead of leaving a stack that releases labelled records.
 */
import { execFile } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import type { Bundle, Coding, Parameters, Resource } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, seedBundle } from '../../src/cli/seed.js';
import { DEMO, demoResources } from '../../src/demo/data.js';
import { type RunningUpstream, startFhirUpstream } from '../../src/demo/upstream.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { REPO_ROOT } from '../helpers/gateway-process.js';

const CLI_SEED = `${REPO_ROOT}dist/cli/seed.js`;
const LABELLED = demoResources().filter((r) => (r.meta?.security?.length ?? 0) > 0);
const VIP = [DEMO.names.vip, DEMO.ssn.vip, DEMO.mrn.vip, DEMO.phones.vip];

let upstream: RunningUpstream;

function io() {
  const out: string[] = [];
  const err: string[] = [];
  return {
    out,
    err,
    io: {
      stdout: { write: (s: string) => out.push(s) } as unknown as NodeJS.WritableStream,
      stderr: { write: (s: string) => err.push(s) } as unknown as NodeJS.WritableStream,
      env: {},
    },
  };
}

const labelKeys = (labels: readonly Coding[] | undefined) => (labels ?? []).map((c) => `${c.system}|${c.code}`).sort();

async function readUpstream(base: string, ref: string): Promise<Resource> {
  const res = await fetch(`${base}/${ref}`, { headers: { accept: 'application/fhir+json' } });
  expect(res.status, ref).toBe(200);
  return (await res.json()) as Resource;
}

/** Headers and body as one text: what a withheld value must never be part of. */
async function bytes(res: Response): Promise<string> {
  return `${[...res.headers.entries()].map(([k, v]) => `${k}: ${v}`).join('\n')}\n\n${await res.text()}`;
}

beforeAll(async () => {
  upstream = await startFhirUpstream({ seed: false });
}, 60_000);

afterAll(async () => {
  await upstream?.close();
});

describe('seed', () => {
  it('builds a transaction of PUTs that keeps every id and label and drops server-assigned meta', () => {
    const resources = demoResources();
    const b = seedBundle(resources);
    expect(b.type).toBe('transaction');
    expect(b.entry).toHaveLength(resources.length);
    for (const [i, e] of (b.entry ?? []).entries()) {
      const r = resources[i];
      expect(e.request).toEqual({ method: 'PUT', url: `${r.resourceType}/${r.id}` });
      // The server owns versions and timestamps; labels are data the gateway's policy reads.
      expect(e.resource?.meta).toEqual(r.meta?.security ? { security: r.meta.security } : undefined);
    }
    expect(LABELLED.length).toBeGreaterThan(5);
    // The input is not mutated.
    expect(resources.every((r) => r.meta?.versionId !== undefined)).toBe(true);
  });

  it('loads the demo data into an empty FHIR server with every label, twice without harm', async () => {
    const before = await fetch(`${upstream.url}/Patient/pat-alice`);
    await before.arrayBuffer();
    expect(before.status).toBe(404);
    const first = io();
    expect(await run(['--upstream', upstream.url, '--wait', '5'], first.io), first.err.join('')).toBe(0);
    expect(first.out.join('')).toContain(`security labels checked on ${LABELLED.length} resources`);
    const second = io();
    expect(await run(['--upstream', upstream.url, '--wait', '5'], second.io), second.err.join('')).toBe(0);
    for (const r of demoResources()) {
      const stored = await readUpstream(upstream.url, `${r.resourceType}/${r.id}`);
      expect(stored.id).toBe(r.id);
      // Read directly upstream: the labels the demo data carries, no more and no fewer.
      expect(labelKeys(stored.meta?.security), `${r.resourceType}/${r.id}`).toEqual(labelKeys(r.meta?.security));
    }
    const vip = await readUpstream(upstream.url, `Patient/${DEMO.patients.vip}`);
    expect(vip.meta?.security?.map((c) => c.code)).toEqual(['R']);
    const history = (await (await fetch(`${upstream.url}/Patient/pat-alice/_history`)).json()) as { entry?: unknown[] };
    expect(history.entry?.length ?? 0).toBeGreaterThanOrEqual(2);
  });

  it('fails (exit 1) when the server never becomes ready, and on a bad --upstream', async () => {
    const down = io();
    expect(await run(['--upstream', 'http://127.0.0.1:9/fhir', '--wait', '0'], down.io)).toBe(1);
    expect(down.err.join('')).toMatch(/not ready/);
    const bad = io();
    expect(await run(['--upstream', 'ftp://x'], bad.io)).toBe(1);
  });

  it('runs standalone from the build, as the compose seed job does', async () => {
    const p = await promisify(execFile)(process.execPath, [CLI_SEED, '--upstream', upstream.url, '--wait', '5'], { encoding: 'utf8', timeout: 60_000 });
    expect(p.stdout).toMatch(/resources \(demo data\) stored/);
    expect(p.stdout).toMatch(/security labels checked/);
  });
});

describe('a gateway with the shipped policy over the seeded server withholds what the demo withholds', () => {
  let stack: Stack;

  beforeAll(async () => {
    const seeded = io();
    expect(await run(['--upstream', upstream.url, '--wait', '5'], seeded.io), seeded.err.join('')).toBe(0);
    stack = await startStack({ upstreamUrl: upstream.url });
  }, 60_000);

  afterAll(async () => {
    await stack?.close();
  });

  it("refuses a clinician's plain TREAT read of the VIP chart and keeps it out of searches", async () => {
    const direct = await stack.get(`/Patient/${DEMO.patients.vip}`, { role: 'clinician', purpose: 'TREAT' });
    expect(direct.status).toBe(403);
    const directBytes = await bytes(direct);
    expect(directBytes).toContain('break-glass-available');
    for (const v of VIP) expect(directBytes).not.toContain(v);
    const search = await stack.get('/Patient?_count=50', { role: 'clinician', purpose: 'TREAT' });
    expect(search.status).toBe(200);
    const searchBytes = await bytes(search);
    for (const v of VIP) expect(searchBytes).not.toContain(v);
    // The same clinician still reads an unlabelled chart: the refusal is the label's doing.
    const alice = await stack.get(`/Patient/${DEMO.patients.alice}`, { role: 'clinician', purpose: 'TREAT' });
    expect(alice.status).toBe(200);
    expect(await alice.text()).toContain(DEMO.ssn.alice);
  });

  it('keeps psychiatric conditions, notes and claims from billing', async () => {
    const as = { role: 'billing', purpose: 'HPAYMT' };
    const conditions = await stack.get(`/Condition?patient=${DEMO.patients.paula}`, as);
    expect(conditions.status).toBe(200);
    const body = await bytes(conditions);
    for (const v of [DEMO.psyCondition, DEMO.psythpnCondition, DEMO.notes.psy, DEMO.notes.psythpn]) expect(body).not.toContain(v);
    const direct = await stack.get(`/Condition/${DEMO.psyCondition}`, as);
    expect(direct.status).toBe(404);
    expect(await bytes(direct)).not.toContain(DEMO.notes.psy);
    const claims = await stack.get(`/Claim?patient=${DEMO.patients.paula}`, as);
    expect(claims.status).toBe(200);
    expect(await claims.text()).not.toContain(DEMO.psyClaim);
  });
});

describe('the same stack over data without labels would release them (what the seed used to load)', () => {
  let bare: RunningUpstream;
  let stack: Stack;

  beforeAll(async () => {
    bare = await startFhirUpstream({ seed: false });
    const unlabelled = demoResources().map(({ meta: _meta, ...r }) => r as Resource);
    const res = await fetch(bare.url, { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(seedBundle(unlabelled.slice(0, 50))) });
    expect(res.ok).toBe(true);
    const rest = await fetch(bare.url, { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify(seedBundle(unlabelled.slice(50))) });
    expect(rest.ok).toBe(true);
    stack = await startStack({ upstreamUrl: bare.url });
  }, 60_000);

  afterAll(async () => {
    await stack?.close();
    await bare?.close();
  });

  it('a clinician reads the VIP chart and billing sees the PSY condition: the assertions above can fail', async () => {
    const vip = await stack.get(`/Patient/${DEMO.patients.vip}`, { role: 'clinician', purpose: 'TREAT' });
    expect(vip.status).toBe(200);
    expect(await vip.text()).toContain(DEMO.ssn.vip);
    const psy = await stack.get(`/Condition/${DEMO.psyCondition}`, { role: 'billing', purpose: 'HPAYMT' });
    expect(psy.status).toBe(200);
  });
});

/**
 * A FHIR server in front of the real one that drops `meta.security` from every resource it is
 * sent in a transaction (as some servers treat labels as server-managed), and optionally answers
 * `$meta-add` by adding the labels to the stored resource.
 */
async function labelDroppingServer(target: string, metaAdd: boolean): Promise<{ url: string; metaAddCalls: string[]; close(): Promise<void> }> {
  const origin = new URL(target).origin;
  const metaAddCalls: string[] = [];
  const server: Server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    let body = chunks.length > 0 ? Buffer.concat(chunks).toString('utf8') : undefined;
    const url = req.url ?? '/';
    const op = /^\/fhir\/([A-Za-z]+)\/([^/]+)\/\$meta-add$/.exec(url);
    if (op) {
      metaAddCalls.push(`${op[1]}/${op[2]}`);
      if (!metaAdd) {
        res.writeHead(404, { 'content-type': 'application/fhir+json' }).end('{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported"}]}');
        return;
      }
      const stored = (await (await fetch(`${target}/${op[1]}/${op[2]}`)).json()) as Resource;
      const added = ((JSON.parse(body ?? '{}') as Parameters).parameter ?? []).flatMap((p) => p.valueMeta?.security ?? []);
      const put = await fetch(`${target}/${op[1]}/${op[2]}`, {
        method: 'PUT',
        headers: { 'content-type': 'application/fhir+json' },
        body: JSON.stringify({ ...stored, meta: { security: [...(stored.meta?.security ?? []), ...added] } }),
      });
      res.writeHead(put.ok ? 200 : 500, { 'content-type': 'application/fhir+json' }).end(JSON.stringify({ resourceType: 'Parameters' }));
      return;
    }
    if (req.method === 'POST' && body && url === '/fhir') {
      const bundle = JSON.parse(body) as Bundle;
      for (const e of bundle.entry ?? []) if (e.resource?.meta) delete e.resource.meta.security;
      body = JSON.stringify(bundle);
    }
    const answer = await fetch(`${origin}${url}`, { method: req.method, headers: body ? { 'content-type': 'application/fhir+json' } : {}, body });
    res.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/fhir+json' }).end(await answer.text());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${port}/fhir`, metaAddCalls, close: () => new Promise((r) => server.close(() => r())) };
}

describe('a server that drops labels on update', () => {
  it('gets them through $meta-add, and the seed checks they stayed', async () => {
    const store = await startFhirUpstream({ seed: false });
    const front = await labelDroppingServer(store.url, true);
    try {
      const out = io();
      expect(await run(['--upstream', front.url, '--wait', '5'], out.io), out.err.join('')).toBe(0);
      expect(front.metaAddCalls.sort()).toEqual(LABELLED.map((r) => `${r.resourceType}/${r.id}`).sort());
      for (const r of LABELLED) {
        const stored = await readUpstream(store.url, `${r.resourceType}/${r.id}`);
        expect(labelKeys(stored.meta?.security)).toEqual(labelKeys(r.meta?.security));
      }
    } finally {
      await front.close();
      await store.close();
    }
  });

  it('without $meta-add the seed fails (exit 1) naming the unlabelled resources', async () => {
    const store = await startFhirUpstream({ seed: false });
    const front = await labelDroppingServer(store.url, false);
    try {
      const out = io();
      expect(await run(['--upstream', front.url, '--wait', '5'], out.io)).toBe(1);
      const err = out.err.join('');
      expect(err).toContain('did not keep the security labels');
      expect(err).toContain(`Patient/${DEMO.patients.vip}: R`);
      expect(err).toContain(`Condition/${DEMO.psyCondition}: PSY`);
      expect(out.out.join('')).not.toContain('security labels checked');
    } finally {
      await front.close();
      await store.close();
    }
  });
});
