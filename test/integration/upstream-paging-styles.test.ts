/**
 * Paging against upstreams that page the way HAPI and Azure do, under another host name than the
 * one the gateway connects to (their configured public address), with `upstream.linkBases` set:
 *
 * - HAPI: `<advertised>?_getpages=<id>&_getpagesoffset=N&_count=N&_bundletype=searchset`, pages
 *   cut from a result the server keeps (410 once it forgot it);
 * - Azure: `<advertised>/<Type>?<query>&ct=<base64 continuation>`.
 *
 * Through the gateway's own `_cursor` links a client reaches every result it may see exactly once,
 * in upstream order; no upstream address, search id or continuation reaches it; what a billing
 * caller gets does not depend on the labelled resources it may not see (spread across upstream
 * pages); without linkBases paging fails closed; a link to any other address is never fetched.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Bundle, Coding, Condition, Patient, Resource } from 'fhir/r4.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RequestOpts, type Stack, startStack } from '../helpers/gateway.js';
import { type StyledUpstream, startStyledUpstream, type UpstreamStyle } from '../helpers/styled-upstream.js';
import { errorCode, type Received, receive } from '../security/support.js';

const clinician = { role: 'clinician', purpose: 'TREAT' } as const;
const billing = { role: 'billing', purpose: 'HPAYMT' } as const;
const PUBLIC_BASE = 'http://phi-gateway.paging-styles.test/fhir';
const SEARCH = '/Condition?_count=2';

const CONFIDENTIALITY = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
/**
 * How each seeded Condition is labelled. `R` (with its system) is withheld from billing and the
 * clinician, and excluded by the upstream itself for billing (`_security:not`); PSY/SUD without a
 * system are withheld from billing by the gateway only (the upstream cannot match a coding
 * without a system), so billing's upstream pages really carry them and the gateway skips them.
 */
const LABELS: ReadonlyArray<Coding | undefined> = [
  undefined,
  { system: CONFIDENTIALITY, code: 'R' },
  undefined,
  { code: 'PSY' },
  { code: 'SUD' },
  undefined,
  undefined,
  { system: CONFIDENTIALITY, code: 'R' },
  { code: 'PSY' },
  undefined,
  undefined,
  { system: ACT_CODE, code: 'PSY' },
  undefined,
  { code: 'SUD' },
  undefined,
  undefined,
];
const SEED_INSTANT = '2024-06-01T00:00:00.000Z';

function seedResources(withWithheld: boolean): Resource[] {
  const patient: Patient = {
    resourceType: 'Patient',
    id: 'pat-paging',
    meta: { versionId: '1', lastUpdated: SEED_INSTANT },
    name: [{ family: 'Pager', given: ['Pat'] }],
    gender: 'female',
    birthDate: '1970-01-01',
  };
  const out: Resource[] = [patient];
  LABELS.forEach((label, i) => {
    if (label !== undefined && !withWithheld) return;
    const c: Condition = {
      resourceType: 'Condition',
      id: `cond-page-${String(i + 1).padStart(2, '0')}`,
      meta: { versionId: '1', lastUpdated: SEED_INSTANT, ...(label ? { security: [label] } : {}) },
      code: { coding: [{ system: 'http://snomed.info/sct', code: String(38341003 + i), display: `Condition ${i + 1}` }] },
      subject: { reference: 'Patient/pat-paging' },
      recordedDate: '2024-05-01',
    };
    out.push(c);
  });
  return out;
}

/** Condition ids a caller may see, in seed order: no label for billing; anything but R for the clinician. */
function visible(who: 'billing' | 'clinician'): string[] {
  return LABELS.flatMap((l, i) => {
    const id = `cond-page-${String(i + 1).padStart(2, '0')}`;
    if (l === undefined) return [id];
    return who === 'clinician' && l.code !== 'R' ? [id] : [];
  });
}

async function styled(style: UpstreamStyle, withWithheld: boolean): Promise<StyledUpstream> {
  const up = await startStyledUpstream(style, { seed: false });
  for (const r of seedResources(withWithheld)) await up.repo.createResource(structuredClone(r) as never, { assignedId: true });
  return up;
}

async function gatewayFor(up: StyledUpstream, opts: { linkBases?: boolean; publicBase?: string } = {}): Promise<Stack> {
  return startStack({
    upstreamUrl: up.url,
    env: opts.linkBases === false ? {} : { PHI_GATEWAY_UPSTREAM_LINK_BASES: up.advertisedBase },
    configure: (c) => ({
      ...c,
      ...(opts.publicBase ? { publicBaseUrl: opts.publicBase } : {}),
      // Upstream pages as small as the client's page allows: the gateway refills across them.
      paging: { ...c.paging, minUpstreamCount: 1 },
    }),
  });
}

type Link = { relation: string; url: string };
const links = (json: unknown): Link[] => (json as { link?: Link[] } | undefined)?.link ?? [];
const nextOf = (json: unknown): string | undefined => links(json).find((l) => l.relation === 'next')?.url;
const matchIds = (json: unknown): string[] =>
  ((json as Bundle).entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => `${e.resource?.resourceType}/${e.resource?.id}`);

/** A link the gateway handed out, as a path under `stack.url` (mapped from `publicBase` when set). */
function pathOf(stack: Stack, url: string, publicBase = stack.url): string {
  expect(url.startsWith(`${publicBase}/`) || url.startsWith(`${publicBase}?`), url).toBe(true);
  return url.slice(publicBase.length);
}

/** Follows `next` from `path`, returning every answer (the last one may be an error). */
async function walk(stack: Stack, path: string, who: RequestOpts, publicBase?: string, max = 30): Promise<Received[]> {
  const out: Received[] = [];
  let p: string | undefined = path;
  while (p !== undefined && out.length < max) {
    const r = await receive(await stack.get(p, who));
    out.push(r);
    if (r.status !== 200) break;
    const n = nextOf(r.json);
    p = n === undefined ? undefined : pathOf(stack, n, publicBase);
  }
  return out;
}

/** Everything the client received: bodies and every header. */
function bytesOf(pages: readonly Received[]): string {
  return pages
    .map((r) => {
      const h: string[] = [];
      r.headers.forEach((v, k) => void h.push(`${k}: ${v}`));
      return `${h.join('\n')}\n\n${r.text}`;
    })
    .join('\n----\n');
}

/** Search ids and continuation tokens the upstream handed out and the gateway followed. */
function upstreamPositions(up: StyledUpstream): string[] {
  const out = new Set<string>();
  for (const line of up.requests) {
    const q = line.indexOf('?');
    if (q < 0) continue;
    const params = new URLSearchParams(line.slice(q + 1));
    for (const name of ['_getpages', 'ct']) {
      const v = params.get(name);
      if (v) {
        out.add(v);
        out.add(encodeURIComponent(v));
      }
    }
  }
  return [...out];
}

const hostOf = (url: string) => new URL(url).host;

describe.each(['hapi', 'azure'] as const)('%s-style upstream under another host name, linkBases set', (style) => {
  let up: StyledUpstream;
  let stack: Stack;
  beforeAll(async () => {
    up = await styled(style, true);
    stack = await gatewayFor(up);
  });
  afterAll(async () => {
    await stack?.close();
    await up?.close();
  });

  it.each([
    ['billing', billing],
    ['clinician', clinician],
  ] as const)('%s: every visible result exactly once, in order, across upstream pages', async (who, caller) => {
    const before = up.requests.length;
    const pages = await walk(stack, SEARCH, caller);
    for (const p of pages) expect(p.status, p.text).toBe(200);
    expect(pages.length).toBeGreaterThan(2);
    const ids = pages.flatMap((p) => matchIds(p.json));
    const expected = visible(who).map((id) => `Condition/${id}`);
    expect(ids).toEqual(expected);
    for (const p of pages.slice(0, -1)) expect(matchIds(p.json)).toHaveLength(2);
    // `total` once the gateway has seen the whole result (the last page at least), and right.
    const last = pages[pages.length - 1]!.json as Bundle;
    expect(last.total).toBe(expected.length);
    for (const p of pages) {
      const t = (p.json as Bundle).total;
      if (t !== undefined) expect(t).toBe(expected.length);
    }
    // The upstream's own paging was what the gateway followed.
    const followed = up.requests.slice(before);
    if (style === 'hapi') expect(followed.some((l) => l.startsWith('GET /fhir?_getpages='))).toBe(true);
    else expect(followed.some((l) => /[?&]ct=/.test(l))).toBe(true);
  });

  it('no upstream address, host name, search id or continuation reaches the client', async () => {
    up.requests.length = 0;
    const pages = [...(await walk(stack, SEARCH, billing)), ...(await walk(stack, SEARCH, clinician))];
    const positions = upstreamPositions(up);
    expect(positions.length).toBeGreaterThan(0);
    const bytes = bytesOf(pages).toLowerCase();
    for (const secret of [hostOf(up.url), hostOf(up.innerUrl), hostOf(up.advertisedBase), new URL(up.advertisedBase).hostname, ...positions]) {
      expect(bytes, `leaked ${secret}`).not.toContain(secret.toLowerCase());
    }
    expect(bytes).not.toContain('_getpages');
    expect(bytes).not.toMatch(/[?&]ct=/);
    // fullUrls and links are the gateway's (rewritten from the advertised base, not dropped).
    for (const p of pages) {
      for (const l of links(p.json)) expect(l.url.startsWith(stack.url), l.url).toBe(true);
      for (const e of (p.json as Bundle).entry ?? []) {
        if (e.search?.mode !== 'match') continue;
        expect(e.fullUrl).toBe(`${stack.url}/Condition/${e.resource?.id}`);
      }
    }
  });

  it('a Location under the advertised base is rewritten to the public base', async () => {
    const r = await receive(
      await stack.request('/Patient', {
        ...clinician,
        method: 'POST',
        contentType: 'application/fhir+json',
        body: JSON.stringify({ resourceType: 'Patient', name: [{ family: 'Located' }] }),
      }),
    );
    expect(r.status, r.text).toBe(201);
    expect(r.headers.get('location')).toMatch(new RegExp(`^${stack.url.replace(/[.]/g, '\\.')}/Patient/[^/]+/_history/1$`));
    expect(bytesOf([r]).toLowerCase()).not.toContain(new URL(up.advertisedBase).hostname);
  });

  if (style === 'hapi') {
    it("an expired search (HAPI forgot the _getpages id) answers paging-token-invalid, naming nothing upstream", async () => {
      // Page 3 of billing's walk resumes inside a kept search (its position is a _getpages link).
      const pages = await walk(stack, SEARCH, billing);
      expect(pages.length).toBeGreaterThan(3);
      const third = pathOf(stack, nextOf(pages[1]!.json)!);
      const fine = await receive(await stack.get(third, billing));
      expect(fine.status).toBe(200);
      expect(matchIds(fine.json)).toEqual(matchIds(pages[2]!.json));
      const positions = upstreamPositions(up);
      up.expire();
      up.requests.length = 0;
      const r = await receive(await stack.get(third, billing));
      expect({ status: r.status, code: errorCode(r.json) }).toEqual({ status: 400, code: 'paging-token-invalid' });
      // The gateway did ask the upstream, which answered 410 for the forgotten id.
      expect(up.requests.some((l) => l.startsWith('GET /fhir?_getpages='))).toBe(true);
      const bytes = bytesOf([r]).toLowerCase();
      for (const s of [...positions, hostOf(up.url), new URL(up.advertisedBase).hostname, 'hapi-0417', 'search id']) {
        expect(bytes, `leaked ${s}`).not.toContain(s.toLowerCase());
      }
      // Repeating the search works again.
      const again = await walk(stack, SEARCH, billing);
      expect(again.flatMap((p) => matchIds(p.json))).toEqual(visible('billing').map((id) => `Condition/${id}`));
    });
  }
});

/**
 * `_cursor` values differ per issue (fresh IV): replaced by a placeholder (their lengths are
 * compared on their own, below). The ETag is a hash of the released bytes, cursor included, so it
 * differs on every answer: the bytes it hashes are compared instead.
 */
function comparable(r: Received): unknown {
  const headers: Record<string, string | null> = {};
  for (const h of ['content-type', 'location', 'content-location', 'last-modified']) headers[h] = r.headers.get(h);
  return { status: r.status, headers, body: r.text.replace(/_cursor=[A-Za-z0-9_-]+/g, '_cursor=<cursor>') };
}

const cursorLengths = (pages: readonly Received[]) => pages.map((p) => [...p.text.matchAll(/_cursor=([A-Za-z0-9_-]+)/g)].map((m) => m[1]!.length));

describe.each(['hapi', 'azure'] as const)('%s style, non-interference: billing pages with and without the withheld resources', (style) => {
  let withWithheld: { up: StyledUpstream; stack: Stack };
  let without: { up: StyledUpstream; stack: Stack };
  beforeAll(async () => {
    const a = await styled(style, true);
    withWithheld = { up: a, stack: await gatewayFor(a, { publicBase: PUBLIC_BASE }) };
    const b = await styled(style, false);
    without = { up: b, stack: await gatewayFor(b, { publicBase: PUBLIC_BASE }) };
  });
  afterAll(async () => {
    for (const w of [withWithheld, without]) {
      await w?.stack.close();
      await w?.up.close();
    }
  });

  const searches = [SEARCH, '/Condition?_count=3', '/Condition?_count=1&subject=Patient/pat-paging', '/Condition?_count=4&_sort=_id'];

  it.each(searches)('%s: identical pages, page by page', async (path) => {
    const a = await walk(withWithheld.stack, path, billing, PUBLIC_BASE);
    const b = await walk(without.stack, path, billing, PUBLIC_BASE);
    expect(a.length).toBeGreaterThan(1);
    expect(a.map(comparable)).toEqual(b.map(comparable));
    for (const p of a) expect(p.status, p.text).toBe(200);
  });

  // The sealed position is padded so that its length says nothing about how far the gateway read
  // upstream; a HAPI page link (`?_getpages=...`) is much shorter than the first upstream request
  // (the search plus `_count` and `_security:not`), so the token must be padded for the longer one.
  it.each(searches)('%s: next links of the same length, page by page', async (path) => {
    const a = await walk(withWithheld.stack, path, billing, PUBLIC_BASE);
    const b = await walk(without.stack, path, billing, PUBLIC_BASE);
    expect(cursorLengths(a)).toEqual(cursorLengths(b));
  });

  it('the withheld resources were there, on the upstream pages the gateway read', async () => {
    // Sanity of the comparison above: the upstream itself holds and serves the labelled ones.
    const all = await withWithheld.up.get<Bundle>('Condition?_count=100');
    expect(all.body.entry?.length).toBe(LABELS.length);
    const fewer = await without.up.get<Bundle>('Condition?_count=100');
    expect(fewer.body.entry?.length).toBe(visible('billing').length);
  });
});

describe.each(['hapi', 'azure'] as const)('%s style without linkBases: fails closed', (style) => {
  let up: StyledUpstream;
  let stack: Stack;
  beforeAll(async () => {
    up = await styled(style, true);
    stack = await gatewayFor(up, { linkBases: false });
  });
  afterAll(async () => {
    await stack?.close();
    await up?.close();
  });

  it.each([
    ['billing', billing],
    ['clinician', clinician],
  ] as const)('%s: paging stops with 502 upstream-bad-response, never with a silently short result', async (who, caller) => {
    const pages = await walk(stack, SEARCH, caller);
    const last = pages[pages.length - 1]!;
    expect({ status: last.status, code: errorCode(last.json) }).toEqual({ status: 502, code: 'upstream-bad-response' });
    const released = pages.slice(0, -1).flatMap((p) => matchIds(p.json));
    const expected = visible(who).map((id) => `Condition/${id}`);
    expect(released.length).toBeLessThan(expected.length);
    expect(released).toEqual(expected.slice(0, released.length));
    // The advertised host's fullUrls were not released as they came (dropped, not passed on).
    expect(bytesOf(pages).toLowerCase()).not.toContain(new URL(up.advertisedBase).hostname);
  });
});

// ---------------------------------------------------------------------------------------------
// Links to anywhere else: a hand-written upstream answers page 1 with a `next` link of our choice.

interface Recorder {
  readonly url: string;
  readonly port: number;
  readonly seen: string[];
  close(): Promise<void>;
}

/** A server standing for "another host": it answers like a FHIR server and records every request. */
async function startRecorder(page: (req: IncomingMessage, base: string) => unknown): Promise<Recorder> {
  const seen: string[] = [];
  let base = '';
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    seen.push(`${req.method} ${req.url}`);
    const body = JSON.stringify(page(req, base));
    res.writeHead(200, { 'content-type': 'application/fhir+json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  base = `http://127.0.0.1:${port}/fhir`;
  return {
    url: base,
    port,
    seen,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function patientsPage(ids: readonly string[], fullBase: string, next?: string): Bundle {
  return {
    resourceType: 'Bundle',
    type: 'searchset',
    link: [{ relation: 'self', url: `${fullBase}/Patient` }, ...(next ? [{ relation: 'next', url: next }] : [])],
    entry: ids.map((id) => ({
      fullUrl: `${fullBase}/Patient/${id}`,
      resource: { resourceType: 'Patient', id, gender: 'other' } as Patient,
      search: { mode: 'match' as const },
    })),
  };
}

describe('a next link to another address is never followed, linkBases or not', () => {
  const ADVERTISED = 'http://hapi.hospital.internal:8080/fhir';
  let elsewhere: Recorder;
  let upstream: Recorder;
  let nextLink = '';
  let stack: Stack;
  beforeAll(async () => {
    elsewhere = await startRecorder((_req, base) => patientsPage(['p-elsewhere-1', 'p-elsewhere-2'], base));
    // Page 1 holds one patient and links on with `nextLink`; `page=2` (reached through the link
    // base) holds the rest, so a followed link is visible as a second page.
    upstream = await startRecorder((req) =>
      (req.url ?? '').includes('page=2') ? patientsPage(['p-2', 'p-3'], ADVERTISED) : patientsPage(['p-1'], ADVERTISED, nextLink),
    );
    stack = await startStack({
      upstreamUrl: upstream.url,
      env: { PHI_GATEWAY_UPSTREAM_LINK_BASES: `${ADVERTISED}, https://fhir.hospital.example/r4` },
      configure: (c) => ({ ...c, paging: { ...c.paging, minUpstreamCount: 1 } }),
    });
  });
  afterAll(async () => {
    await stack?.close();
    await upstream?.close();
    await elsewhere?.close();
  });

  it('control: a link under a link base is read from the configured upstream', async () => {
    for (const link of [`${ADVERTISED}/Patient?page=2`, 'https://fhir.hospital.example/r4/Patient?page=2', `${ADVERTISED}?_getpages=x&page=2`]) {
      nextLink = link;
      upstream.seen.length = 0;
      const r = await receive(await stack.get('/Patient?_count=3', clinician));
      expect(r.status, r.text).toBe(200);
      expect(matchIds(r.json)).toEqual(['Patient/p-1', 'Patient/p-2', 'Patient/p-3']);
      expect(upstream.seen[1], link).toBe(`GET /fhir${link.slice(link.startsWith(ADVERTISED) ? ADVERTISED.length : 'https://fhir.hospital.example/r4'.length)}`);
      expect(r.text).not.toContain('hapi.hospital.internal');
      expect(r.text).not.toContain('fhir.hospital.example');
    }
    expect(elsewhere.seen).toEqual([]);
  });

  it.each([
    ['another host (a real server)', () => `${elsewhere.url}/Patient?page=2`],
    ['another host, protocol-relative', () => `//127.0.0.1:${elsewhere.port}/fhir/Patient?page=2`],
    ['the link base as userinfo in front of another host', () => `http://hapi.hospital.internal:8080@127.0.0.1:${elsewhere.port}/fhir/Patient?page=2`],
    ['a host name that only starts like the link base', () => 'http://hapi.hospital.internal.attacker.example:8080/fhir/Patient?page=2'],
    ['the link base host on another port', () => 'http://hapi.hospital.internal:8081/fhir/Patient?page=2'],
    ['the link base host over another scheme', () => 'https://hapi.hospital.internal:8080/fhir/Patient?page=2'],
    ['the link base host outside its base path', () => 'http://hapi.hospital.internal:8080/admin/Patient?page=2'],
    ['a base path prefix that is not a path segment', () => 'http://hapi.hospital.internal:8080/fhir-internal/Patient?page=2'],
    ['dot segments leaving the base path', () => 'http://hapi.hospital.internal:8080/fhir/../admin?page=2'],
    ['encoded dot segments leaving the base path', () => 'http://hapi.hospital.internal:8080/fhir/%2e%2e/admin?page=2'],
  ])('%s: 502 upstream-bad-response, nothing fetched there, nothing of it released', async (_name, link) => {
    nextLink = link();
    upstream.seen.length = 0;
    const r = await receive(await stack.get('/Patient?_count=3', clinician));
    expect({ status: r.status, code: errorCode(r.json) }).toEqual({ status: 502, code: 'upstream-bad-response' });
    expect(elsewhere.seen).toEqual([]);
    expect(upstream.seen).toHaveLength(1);
    const bytes = bytesOf([r]).toLowerCase();
    for (const s of ['p-1', 'p-elsewhere', String(elsewhere.port), 'attacker', 'hapi.hospital.internal']) expect(bytes, s).not.toContain(s);
  });
});
