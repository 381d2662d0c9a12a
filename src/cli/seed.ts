/**
 * `phi-gateway seed --upstream URL [--wait SECONDS] [--token T]`: loads the synthetic demo data into
 * a FHIR server (docker-compose: HAPI) as transaction Bundles of PUTs, so resource ids are kept and
 * the demo tour, tests and curl examples work against it. Idempotent: PUT creates or updates. Waits
 * for the server to answer /metadata first (HAPI takes a while to start). Talks to the FHIR server
 * directly: it is an operator's tool, never exposed through the gateway. Synthetic data only.
 */
import { isMainModule } from './main-module.js';
import { parseArgs } from 'node:util';
import type { Bundle, Resource } from 'fhir/r4.js';
import { request } from 'undici';
import { aliceFirstVersion, demoResources } from '../demo/data.js';
import type { CliIo } from './main.js';

/** Entries per transaction: below common server caps (Medplum allows 50 updates per transaction). */
export const CHUNK = 50;

/** A transaction Bundle that PUTs each resource at its own id (meta stripped: the server assigns versions). */
export function seedBundle(resources: readonly Resource[]): Bundle {
  return {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: resources.map((r) => {
      if (!r.id) throw new Error(`seed: a ${r.resourceType} has no id`);
      const { meta: _meta, ...resource } = r;
      return { resource: resource as Resource, request: { method: 'PUT', url: `${r.resourceType}/${r.id}` } };
    }),
  };
}

async function send(base: string, path: string, init: { method: string; body?: string; token?: string | undefined }): Promise<{ status: number; text: string }> {
  const res = await request(`${base}${path}`, {
    method: init.method as 'GET',
    headers: {
      accept: 'application/fhir+json',
      ...(init.body ? { 'content-type': 'application/fhir+json' } : {}),
      ...(init.token ? { authorization: `Bearer ${init.token}` } : {}),
    },
    body: init.body,
    headersTimeout: 120_000,
    bodyTimeout: 120_000,
  });
  return { status: res.statusCode, text: await res.body.text() };
}

export async function run(argv: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { upstream: { type: 'string' }, wait: { type: 'string' }, token: { type: 'string' } },
    strict: true,
  });
  const upstream = values.upstream ?? io.env.PHI_GATEWAY_UPSTREAM;
  if (!upstream || !/^https?:\/\//.test(upstream)) {
    io.stderr.write('usage: phi-gateway seed --upstream http://fhir-server:8080/fhir [--wait 300] [--token BEARER]\n');
    return 1;
  }
  const base = upstream.replace(/\/+$/, '');
  const waitSec = Number(values.wait ?? '300');
  if (!Number.isFinite(waitSec) || waitSec < 0) {
    io.stderr.write('seed: --wait must be a number of seconds\n');
    return 1;
  }
  const token = values.token ?? io.env.PHI_GATEWAY_SEED_TOKEN;

  const deadline = Date.now() + waitSec * 1000;
  for (let attempt = 1; ; attempt++) {
    try {
      const meta = await send(base, '/metadata', { method: 'GET', token });
      if (meta.status === 200) break;
      io.stderr.write(`seed: ${base}/metadata answered ${meta.status}\n`);
    } catch (e) {
      if (attempt === 1 || attempt % 10 === 0) io.stderr.write(`seed: waiting for ${base} (${(e as NodeJS.ErrnoException).code ?? 'error'})\n`);
    }
    if (Date.now() > deadline) {
      io.stderr.write(`seed: ${base} not ready after ${waitSec} s\n`);
      return 1;
    }
    await new Promise((r) => setTimeout(r, 2000));
  }

  // Alice's older version first, so her _history has two versions (one with her old phone). Then
  // the rest in dependency order, in transactions of at most CHUNK entries (servers cap them).
  const all = demoResources();
  const batches: Array<{ label: string; resources: Resource[] }> = [{ label: 'history', resources: [aliceFirstVersion()] }];
  for (let i = 0; i < all.length; i += CHUNK) batches.push({ label: 'demo data', resources: all.slice(i, i + CHUNK) });
  for (const b of batches) {
    const res = await send(base, '', { method: 'POST', body: JSON.stringify(seedBundle(b.resources)), token });
    if (res.status < 200 || res.status >= 300) {
      // The server's OperationOutcome may quote resource content: synthetic data, but keep it short.
      io.stderr.write(`seed: transaction (${b.label}) answered ${res.status}: ${res.text.slice(0, 500)}\n`);
      return 1;
    }
    io.stdout.write(`seed: ${b.resources.length} resources (${b.label}) stored in ${base}\n`);
  }
  return 0;
}

// Runnable on its own (`node dist/cli/seed.js --upstream URL`), e.g. as the compose seed job.
if (isMainModule(import.meta.url)) {
  run(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env }).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`seed: ${(e as Error)?.message ?? String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
