/**
 * `phi-gateway seed --upstream URL [--wait SECONDS] [--token T]`: loads the synthetic demo data into
 * a FHIR server (docker-compose: HAPI) as transaction Bundles of PUTs, so resource ids are kept and
 * the demo tour, tests and curl examples work against it. Idempotent: PUT creates or updates. Waits
 * for the server to answer /metadata first (HAPI takes a while to start). Talks to the FHIR server
 * directly: it is an operator's tool, never exposed through the gateway. Synthetic data only.
 *
 * Security labels (`meta.security`) travel with the resources: the gateway withholds restricted
 * charts and sensitive conditions by label, so a server holding the data without them would serve
 * the VIP chart to a plain TREAT read. After loading, every labelled resource is read back; labels
 * the server dropped are added with `$meta-add` (the FHIR operation for exactly this), and if they
 * are still missing the seed fails rather than leave a stack that releases what the demo withholds.
 */
import { isMainModule } from './main-module.js';
import { parseArgs } from 'node:util';
import type { Bundle, Coding, Meta, Parameters, Resource } from 'fhir/r4.js';
import { request } from 'undici';
import { aliceFirstVersion, demoResources } from '../demo/data.js';
import type { CliIo } from './main.js';

/** Entries per transaction: below common server caps (Medplum allows 50 updates per transaction). */
export const CHUNK = 50;

/** Meta elements the server owns: a client cannot set its version, timestamp or source. */
const SERVER_META = new Set(['versionId', 'lastUpdated', 'source']);

/**
 * What of `meta` a client sends: labels, tags and profiles (data the gateway's policy reads),
 * without the elements the server assigns. Undefined when nothing is left.
 */
export function clientMeta(meta: Meta | undefined): Meta | undefined {
  if (!meta) return undefined;
  const kept = Object.fromEntries(Object.entries(meta).filter(([k, v]) => !SERVER_META.has(k) && v !== undefined && !(Array.isArray(v) && v.length === 0)));
  return Object.keys(kept).length > 0 ? (kept as Meta) : undefined;
}

/** A transaction Bundle that PUTs each resource at its own id, security labels kept, server-owned meta dropped. */
export function seedBundle(resources: readonly Resource[]): Bundle {
  return {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: resources.map((r) => {
      if (!r.id) throw new Error(`seed: a ${r.resourceType} has no id`);
      const { meta, ...rest } = r;
      const kept = clientMeta(meta);
      const resource = (kept ? { ...rest, meta: kept } : rest) as Resource;
      return { resource, request: { method: 'PUT', url: `${r.resourceType}/${r.id}` } };
    }),
  };
}

/** The labels of `expected` (by system and code) that `actual` lacks. */
export function missingLabels(expected: readonly Coding[] | undefined, actual: readonly Coding[] | undefined): Coding[] {
  const have = new Set((actual ?? []).map((c) => `${c.system ?? ''}|${c.code ?? ''}`));
  return (expected ?? []).filter((c) => !have.has(`${c.system ?? ''}|${c.code ?? ''}`));
}

/** `Type/id: CODE,CODE` for a message: synthetic ids and label codes only, never content. */
function describeMissing(missing: ReadonlyMap<string, Coding[]>): string {
  return [...missing].map(([ref, labels]) => `${ref}: ${labels.map((l) => l.code).join(',')}`).join('; ');
}

type Send = (path: string, init: { method: string; body?: string }) => Promise<{ status: number; text: string }>;

/** Reads each labelled resource back: reference -> the labels the server does not hold. */
async function labelsMissing(send: Send, resources: readonly Resource[]): Promise<Map<string, Coding[]>> {
  const missing = new Map<string, Coding[]>();
  for (const r of resources) {
    const expected = r.meta?.security;
    if (!expected?.length) continue;
    const ref = `${r.resourceType}/${r.id}`;
    const res = await send(`/${ref}`, { method: 'GET' });
    if (res.status !== 200) throw new Error(`reading ${ref} back answered ${res.status}`);
    const lacking = missingLabels(expected, (JSON.parse(res.text) as Resource).meta?.security);
    if (lacking.length > 0) missing.set(ref, lacking);
  }
  return missing;
}

/**
 * Every labelled resource holds its labels on the server, adding dropped ones with `$meta-add`.
 * Returns an error message, or undefined when all labels are there.
 */
export async function ensureLabels(send: Send, resources: readonly Resource[]): Promise<string | undefined> {
  const dropped = await labelsMissing(send, resources);
  if (dropped.size === 0) return undefined;
  for (const [ref, labels] of dropped) {
    const params: Parameters = { resourceType: 'Parameters', parameter: [{ name: 'meta', valueMeta: { security: labels } }] };
    // A server without $meta-add answers an error: the read-back below reports what is missing.
    await send(`/${ref}/$meta-add`, { method: 'POST', body: JSON.stringify(params) });
  }
  const still = await labelsMissing(send, resources);
  if (still.size === 0) return undefined;
  return (
    `the FHIR server did not keep the security labels of ${still.size} resource(s) (${describeMissing(still)}), ` +
    'not on update and not through $meta-add. The gateway withholds by label: without them it would ' +
    'release these resources. Use a FHIR server that stores meta.security.'
  );
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

export const USAGE = `usage: phi-gateway seed --upstream URL [--wait SECONDS] [--token BEARER]
  Loads the synthetic demo patients into a FHIR server (docker compose: HAPI) as transactions of
  PUTs, keeping resource ids and security labels (read back; labels the server dropped are re-added
  with $meta-add, and the seed fails if any is still missing); idempotent. Talks to the FHIR server
  directly, not through the gateway.
  --upstream URL: the FHIR base, e.g. http://fhir-server:8080/fhir (default PHI_GATEWAY_UPSTREAM).
  --wait SECONDS: how long to wait for the server's /metadata (default 300).
  --token BEARER: a token for the FHIR server (default PHI_GATEWAY_SEED_TOKEN). Synthetic data only.
`;

export async function run(argv: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { upstream: { type: 'string' }, wait: { type: 'string' }, token: { type: 'string' } },
    strict: true,
  });
  const upstream = values.upstream ?? io.env.PHI_GATEWAY_UPSTREAM;
  if (!upstream || !/^https?:\/\//.test(upstream)) {
    io.stderr.write(`seed: --upstream URL (http or https) is required\n${USAGE}`);
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
  const problem = await ensureLabels((path, init) => send(base, path, { ...init, token }), all).catch((e: unknown) => `checking security labels: ${(e as Error).message}`);
  if (problem) {
    io.stderr.write(`seed: ${problem}\n`);
    return 1;
  }
  const labelled = all.filter((r) => r.meta?.security?.length).length;
  io.stdout.write(`seed: security labels checked on ${labelled} resources\n`);
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
