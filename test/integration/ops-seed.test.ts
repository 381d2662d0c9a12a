/**
 * `seed` (docker-compose's one-shot job) against a real FHIR server: every demo resource lands at
 * its own id, Alice gets two versions, and a second run is harmless (PUT is idempotent).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, seedBundle } from '../../src/cli/seed.js';
import { demoResources } from '../../src/demo/data.js';
import { type RunningUpstream, startFhirUpstream } from '../../src/demo/upstream.js';
import { REPO_ROOT } from '../helpers/gateway-process.js';

const CLI_SEED = `${REPO_ROOT}dist/cli/seed.js`;

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

beforeAll(async () => {
  upstream = await startFhirUpstream({ seed: false });
}, 60_000);

afterAll(async () => {
  await upstream?.close();
});

describe('seed', () => {
  it('builds a transaction of PUTs that keeps every id and drops server-assigned meta', () => {
    const resources = demoResources();
    const b = seedBundle(resources);
    expect(b.type).toBe('transaction');
    expect(b.entry).toHaveLength(resources.length);
    for (const [i, e] of (b.entry ?? []).entries()) {
      expect(e.request).toEqual({ method: 'PUT', url: `${resources[i].resourceType}/${resources[i].id}` });
      expect(e.resource?.meta).toBeUndefined();
    }
    // The input is not mutated.
    expect(resources.some((r) => r.meta !== undefined)).toBe(true);
  });

  it('loads the demo data into an empty FHIR server, twice without harm', async () => {
    const before = await fetch(`${upstream.url}/Patient/pat-alice`);
    await before.arrayBuffer();
    expect(before.status).toBe(404);
    const first = io();
    expect(await run(['--upstream', upstream.url, '--wait', '5'], first.io), first.err.join('')).toBe(0);
    const second = io();
    expect(await run(['--upstream', upstream.url, '--wait', '5'], second.io), second.err.join('')).toBe(0);
    for (const r of demoResources()) {
      const res = await fetch(`${upstream.url}/${r.resourceType}/${r.id}`);
      expect(res.status, `${r.resourceType}/${r.id}`).toBe(200);
      expect(((await res.json()) as { id: string }).id).toBe(r.id);
    }
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
    const { execFile } = await import('node:child_process');
    const { promisify } = await import('node:util');
    const p = await promisify(execFile)(process.execPath, [CLI_SEED, '--upstream', upstream.url, '--wait', '5'], { encoding: 'utf8', timeout: 60_000 });
    expect(p.stdout).toMatch(/resources \(demo data\) stored/);
  });
});
