// The access-requests section of `report access` on a generated trail: a few hundred access
// requests (refused, undecided, approved narrower or not, denied, approvals refused, approvals that
// raced and were superseded, grants used, revoked by the requester or an approver, expired) written
// in shuffled order through a real file sink, read back by the CLI, and every count compared with a
// brute-force recount of the same records: the summary, the per-data-set rows, the per-grant rows
// and the HTML charts. Then the records the access-request service itself writes, read the same way.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileAccessStore } from '../../../src/access/file-store.js';
import { createAccessService } from '../../../src/access/service.js';
import type { CallContext } from '../../../src/access/types.js';
import { FileAuditSink } from '../../../src/audit/file-sink.js';
import { createAuditSink } from '../../../src/audit/index.js';
import type { AuditRecord } from '../../../src/audit/record.js';
import { Alerter } from '../../../src/breakglass/alerts.js';
import { FileOutbox } from '../../../src/breakglass/outbox.js';
import { run as reportCli } from '../../../src/cli/report.js';
import { AuditDigest } from '../../../src/report/digest.js';
import { toCsv } from '../../../src/report/render.js';
import { Clock, capturingLogger, request as classified, principal, shippedPolicy } from '../breakglass/helpers.js';

const T0 = Date.parse('2024-06-01T00:00:00.000Z');
const FROM = '2024-06-02T00:00:00.000Z';
const TO = '2024-06-06T00:00:00.000Z';
const MIN = 60_000;
const DATA_SETS = ['claim-attachment', 'compliance-chart'] as const;

/** Deterministic PRNG (mulberry32): the same trail on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const uuid = (n: number, kind: number) => `${kind.toString(16).padStart(8, '0')}-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;

/** The trail: access-request records shaped as src/access/service.ts writes them, FHIR records naming grants, noise. */
function generate(seed: number): AuditRecord[] {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const out: AuditRecord[] = [];
  let auditN = 0;
  const base = (t: number, sub: string, roles: string[], over: Partial<AuditRecord>): AuditRecord => ({
    id: uuid(++auditN, 0xa),
    time: new Date(t).toISOString(),
    kind: 'access-request',
    actor: { iss: 'https://idp', sub, roles },
    purpose: 'HPAYMT',
    role: roles[0],
    client: { address: '10.0.0.9' },
    request: { method: 'POST', path: '/access-requests', interaction: undefined, resourceType: undefined },
    decision: 'allow',
    rule: 'r',
    disclosed: { resources: [], patients: [], elementsRemoved: 0, resourcesWithheld: 0 },
    status: 200,
    upstreamStatus: undefined,
    durations: { totalMs: 1 },
    policyVersion: 'v',
    ...over,
  });
  const supersede = (r: AuditRecord, t: number): AuditRecord => ({
    ...r,
    id: uuid(++auditN, 0xa),
    time: new Date(t).toISOString(),
    decision: 'deny',
    status: 409,
    rule: 'access-request-decided',
    details: { ...r.details, why: 'decided concurrently', supersedes: r.id },
  });

  for (let i = 0; i < 300; i++) {
    const dataSet = pick(DATA_SETS);
    const requester = dataSet === 'claim-attachment' ? `bill-${i % 7}` : `aud-${i % 5}`;
    const role = dataSet === 'claim-attachment' ? 'billing' : 'auditor';
    const purpose = dataSet === 'claim-attachment' ? 'HPAYMT' : 'HCOMPL';
    const tReq = T0 + Math.floor(rnd() * 6 * 1440) * MIN;
    const patients = [`pat-${i % 11}`, ...(rnd() < 0.3 ? [`pat-${(i + 3) % 11}`] : [])];
    const id = uuid(i, 0xb);
    const asked = 30 + Math.floor(rnd() * 450);
    const fate = rnd();
    if (fate < 0.1) {
      // Refused before a request exists: invalid (the data set named only once it is known to be one).
      out.push(
        base(tReq, requester, [role], {
          purpose,
          decision: 'deny',
          status: 400,
          rule: 'access-request-invalid',
          details: { action: 'request', ...(rnd() < 0.5 ? { dataSet, purpose } : {}), why: 'minutes: at most 480' },
        }),
      );
      continue;
    }
    const common = { request: id, dataSet, purpose, scope: { patients }, minutes: asked, justificationCode: 'APPEAL' };
    const req = base(tReq, requester, [role], { purpose, role, status: 201, disclosed: { resources: [], patients, elementsRemoved: 0, resourcesWithheld: 0 }, details: { action: 'request', ...common } });
    out.push(req);
    if (fate < 0.14) {
      // Audited, then the store refused it (pending limit reached on another replica).
      out.push(supersede(req, tReq + 5));
      continue;
    }
    const decided = rnd();
    if (decided < 0.2) continue; // undecided
    const tDec = tReq + (1 + Math.floor(rnd() * 3000)) * MIN + Math.floor(rnd() * 60_000);
    const about = { ...common, requester };
    if (rnd() < 0.25) {
      // Self-approval, refused first.
      out.push(base(tDec - 2 * MIN, requester, [role, 'privacy-officer'], { purpose: 'HCOMPL', decision: 'deny', status: 403, rule: 'approval-not-permitted', details: { action: 'approve', ...about, why: 'own request' } }));
    }
    const approver = `po-${i % 3}`;
    const decideSeconds = (tDec - tReq) / 1000;
    if (decided < 0.45) {
      out.push(base(tDec, approver, ['privacy-officer'], { purpose: 'HCOMPL', role: 'privacy-officer', details: { action: 'deny', ...about, narrowed: false, decideSeconds, note: 'not needed' } }));
      continue;
    }
    const narrowed = rnd() < 0.3;
    const minutes = narrowed ? Math.max(1, Math.floor(asked / 2)) : asked;
    const expiresAt = tDec + minutes * MIN;
    const approve = base(tDec, approver, ['privacy-officer'], {
      purpose: 'HCOMPL',
      role: 'privacy-officer',
      disclosed: { resources: [], patients, elementsRemoved: 0, resourcesWithheld: 0 },
      details: { action: 'approve', ...about, minutes, expiresAt: new Date(expiresAt).toISOString(), narrowed, decideSeconds, note: undefined },
    });
    out.push(approve);
    if (rnd() < 0.08) {
      // Another approver decided at the same moment: audited, then superseded (the store kept the first).
      const late = base(tDec + 900, `po-${(i + 1) % 3}`, ['privacy-officer'], { purpose: 'HCOMPL', details: { ...approve.details, decideSeconds: decideSeconds + 0.9 } });
      out.push(late, supersede(late, tDec + 1_000));
    }
    const revoked = rnd() < 0.35;
    const tEnd = revoked ? tDec + Math.floor(rnd() * minutes * MIN) : expiresAt + Math.floor(rnd() * 15_000);
    const uses = Math.floor(rnd() * 4);
    for (let u = 0; u < uses; u++) {
      const t = tDec + Math.floor(rnd() * (tEnd - tDec));
      out.push({
        ...base(t, requester, [role], {}),
        kind: 'fhir',
        purpose,
        role,
        request: { method: 'GET', path: `/fhir/DocumentReference?patient=${patients[0]}`, interaction: 'search-type', resourceType: 'DocumentReference' },
        disclosed: { resources: ['DocumentReference/d1'], patients: [patients[0]], elementsRemoved: 0, resourcesWithheld: 0 },
        grant: { approvedBy: approver, dataSet, id, patient: patients[0] },
        details: undefined,
      });
    }
    if (rnd() < 0.2) {
      // A billing clerk trying to revoke another's grant: refused.
      out.push(base(tDec + MIN, `bill-${(i + 1) % 7}`, ['billing'], { decision: 'deny', status: 403, rule: 'approval-not-permitted', details: { action: 'revoke', ...about, why: 'no approver role' } }));
    }
    if (revoked) {
      const by = rnd() < 0.4 ? 'requester' : 'approver';
      out.push(base(tEnd, by === 'requester' ? requester : `po-${(i + 2) % 3}`, [by === 'requester' ? role : 'privacy-officer'], { details: { action: 'revoke', ...about, minutes: asked, note: 'done', by } }));
    } else {
      out.push({
        ...base(tEnd, requester, [role], {}),
        kind: 'access-grant-expired',
        purpose,
        role,
        request: { method: '-', path: `access-requests/${id}`, interaction: undefined, resourceType: undefined },
        disclosed: { resources: [], patients, elementsRemoved: 0, resourcesWithheld: 0 },
        details: { request: id, dataSet, expiresAt: new Date(expiresAt).toISOString(), uses },
      });
    }
  }
  // A grant approved before the window and revoked inside it: its time to revoke still counts.
  {
    const id = uuid(1000, 0xb);
    const tFrom = Date.parse(FROM);
    const about = { request: id, dataSet: 'compliance-chart', purpose: 'HCOMPL', requester: 'aud-9', scope: { patients: ['pat-1'] }, minutes: 480, justificationCode: 'APPEAL' };
    out.push(base(tFrom - 90 * MIN, 'aud-9', ['auditor'], { purpose: 'HCOMPL', details: { action: 'request', ...about } }));
    out.push(base(tFrom - 30 * MIN, 'po-1', ['privacy-officer'], { details: { action: 'approve', ...about, expiresAt: new Date(tFrom + 450 * MIN).toISOString(), narrowed: false, decideSeconds: 3600 } }));
    out.push(base(tFrom + 120 * MIN, 'po-2', ['privacy-officer'], { details: { action: 'revoke', ...about, by: 'approver', note: 'inquiry closed' } }));
  }
  // Noise: listings, reads, a refusal before any data set, FHIR requests without a grant.
  out.push(base(T0 + 2 * 1440 * MIN, 'po-1', ['privacy-officer'], { request: { method: 'GET', path: '/access-requests', interaction: undefined, resourceType: undefined }, details: { action: 'list', status: 'pending', count: 3 } }));
  out.push(base(T0 + 2 * 1440 * MIN + 1, 'po-1', ['privacy-officer'], { details: { action: 'get', request: uuid(5, 0xb), dataSet: 'claim-attachment' } }));
  out.push(base(T0 + 3 * 1440 * MIN, 'po-2', ['privacy-officer'], { decision: 'deny', status: 404, rule: 'access-request-not-found', details: { action: 'approve', request: uuid(9999, 0xb) } }));
  out.push({ ...base(T0 + 3 * 1440 * MIN, 'dr-a', ['clinician'], {}), kind: 'fhir', purpose: 'TREAT', details: undefined });
  // Shuffled: several writers' chains reach a report in no particular order.
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

// ---- The brute-force recount, straight from the records. ----

const median = (xs: number[]) => {
  if (xs.length === 0) return '-';
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return Math.round((s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2) * 10) / 10;
};

function recount(all: AuditRecord[]) {
  const inWin = (r: AuditRecord) => r.time >= FROM && r.time < TO;
  const superseded = new Set(all.map((r) => r.details?.supersedes).filter((x): x is string => typeof x === 'string'));
  const step = (r: AuditRecord, action: string) => r.kind === 'access-request' && r.details?.action === action;
  const valid = (r: AuditRecord) => r.decision === 'allow' && !superseded.has(r.id);
  const win = all.filter(inWin);
  const usedIds = new Set(win.filter((r) => r.kind === 'fhir' && r.grant).map((r) => r.grant!.id));
  const approvalOf = (id: string) => all.find((r) => step(r, 'approve') && valid(r) && r.details?.request === id && r.time < TO);
  const counts = (dataSet: string | undefined) => {
    const mine = (r: AuditRecord) => dataSet === undefined || (r.kind === 'fhir' ? r.grant?.dataSet : (r.details?.dataSet ?? '(not named)')) === dataSet;
    const w = win.filter(mine);
    const ok = (a: string) => w.filter((r) => step(r, a) && valid(r));
    const refused = (a: string) => w.filter((r) => step(r, a) && r.decision !== 'allow').length;
    const decisions = [...ok('approve'), ...ok('deny')];
    const decidedIds = new Set(decisions.map((r) => r.details!.request));
    const revocations = ok('revoke');
    return {
      requests: ok('request').length,
      refusedRequests: refused('request'),
      approved: ok('approve').length,
      narrowed: ok('approve').filter((r) => r.details!.narrowed === true).length,
      denied: ok('deny').length,
      refusedDecisions: refused('approve') + refused('deny'),
      undecided: ok('request').filter((r) => !decidedIds.has(r.details!.request)).length,
      decideMinutes: median(decisions.map((r) => (r.details!.decideSeconds as number) / 60)),
      expired: w.filter((r) => r.kind === 'access-grant-expired').length,
      revoked: revocations.length,
      byRequester: revocations.filter((r) => r.details!.by === 'requester').length,
      refusedRevokes: refused('revoke'),
      revokeMinutes: median(revocations.flatMap((r) => {
        const a = approvalOf(r.details!.request as string);
        return a ? [(Date.parse(r.time) - Date.parse(a.time)) / MIN] : [];
      })),
      neverUsed: ok('approve').filter((r) => !usedIds.has(r.details!.request as string)).length,
      uses: w.filter((r) => r.kind === 'fhir' && r.grant).length,
    };
  };
  return { counts, win, valid, step, usedIds, approvalOf };
}

// ---- Reading the CLI's CSV. ----

function csvLine(line: string): string[] {
  const cells: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        cur += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else cur += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      cells.push(cur);
      cur = '';
    } else cur += ch;
  }
  cells.push(cur);
  // The formula guard (render.ts) prefixes a quote to cells such as "-": the value is what follows.
  return cells.map((c) => (/^'[=+\-@]/.test(c) ? c.slice(1) : c));
}

function block(csv: string, title: string): string[][] {
  const b = csv.split('\r\n\r\n').find((x) => x.startsWith(`# ${title}\r\n`));
  expect(b, title).toBeDefined();
  return b!.split('\r\n').filter(Boolean).slice(1).map(csvLine);
}

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d) => (out += d));
  stderr.on('data', (d) => (err += d));
  const code = await reportCli(argv, { stdout, stderr, env: {}, now: () => new Date('2024-06-07T00:00:00Z') });
  return { code, out, err };
}

describe('report access: access requests from a generated trail', () => {
  let dir: string;
  let source: string;
  let records: AuditRecord[];
  let csv: string;
  let html: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'phi-access-report-'));
    source = `file:${join(dir, 'audit')}`;
    records = generate(20240602);
    const sink = await createAuditSink({ sink: 'file', path: join(dir, 'audit'), failOpen: false, rotateBytes: 1 << 20, groupCommitMs: 0 });
    for (const r of records) await sink.write(r);
    await sink.close();
    const a = await cli(['access', '--format', 'csv', '--source', source, '--from', FROM, '--to', TO]);
    expect(a.err).toBe('');
    expect(a.code).toBe(0);
    csv = a.out;
    const h = await cli(['access', '--format', 'html', '--source', source, '--from', FROM, '--to', TO]);
    expect(h.code).toBe(0);
    html = h.out;
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('the trail exercises every case', () => {
    const { counts } = recount(records);
    const c = counts(undefined);
    for (const [k, v] of Object.entries(c)) if (typeof v === 'number') expect(v, k).toBeGreaterThan(0);
    expect(records.some((r) => typeof r.details?.supersedes === 'string' && r.details.action === 'approve')).toBe(true);
    expect(records.some((r) => typeof r.details?.supersedes === 'string' && r.details.action === 'request')).toBe(true);
    // Revocations in the window of grants approved before it.
    const { win, approvalOf, step, valid } = recount(records);
    expect(win.filter((r) => step(r, 'revoke') && valid(r) && (approvalOf(r.details!.request as string)?.time ?? TO) < FROM).length).toBeGreaterThan(0);
  });

  it('summary: every measure equals the recount', () => {
    const c = recount(records).counts(undefined);
    const rows = new Map(block(csv, 'Access requests').slice(1).map(([k, v]) => [k, v]));
    const expected: Array<[string, number | string]> = [
      ['requests', c.requests],
      ['requests refused (invalid, not permitted)', c.refusedRequests],
      ['approved', c.approved],
      ['approved narrower than asked', c.narrowed],
      ['denied', c.denied],
      ['decisions refused (own request, no approver role, approver holding a request for the data set, already decided)', c.refusedDecisions],
      ['undecided (asked in the window, no decision in it)', c.undecided],
      ['median minutes to decide', c.decideMinutes],
      ['grants expired', c.expired],
      ['grants revoked early', c.revoked],
      ['revoked early by the requester', c.byRequester],
      ['revocations refused', c.refusedRevokes],
      ['median minutes from approval to revocation', c.revokeMinutes],
      ['grants never used after approval', c.neverUsed],
      ['FHIR requests using a grant', c.uses],
    ];
    expect([...rows.keys()]).toEqual(expected.map(([k]) => k));
    for (const [k, v] of expected) expect(rows.get(k), k).toBe(String(v));
  });

  it('per data set: every column equals the recount, and the rows add up to the summary', () => {
    const { counts } = recount(records);
    const rows = block(csv, 'Access requests per data set');
    expect(rows[0]).toEqual([
      'data set',
      'requests',
      'requests refused',
      'approved',
      'narrowed',
      'denied',
      'decisions refused',
      'median minutes to decide',
      'expired',
      'revoked early',
      'median minutes to revoke',
      'never used',
      'FHIR requests using a grant',
    ]);
    const names = rows.slice(1).map((r) => r[0]);
    expect(names.sort()).toEqual(['(not named)', ...DATA_SETS].sort());
    for (const row of rows.slice(1)) {
      const c = counts(row[0]);
      expect(row.slice(1), row[0]).toEqual(
        [c.requests, c.refusedRequests, c.approved, c.narrowed, c.denied, c.refusedDecisions, c.decideMinutes, c.expired, c.revoked, c.revokeMinutes, c.neverUsed, c.uses].map(String),
      );
    }
    const total = counts(undefined);
    const sum = (i: number) => rows.slice(1).reduce((n, r) => n + Number(r[i]), 0);
    expect([sum(1), sum(3), sum(5), sum(8), sum(9), sum(12)]).toEqual([total.requests, total.approved, total.denied, total.expired, total.revoked, total.uses]);
  });

  it('per grant: one row per request with a step in the window, its decision, end and uses as recorded', () => {
    const { win, valid, step, usedIds, approvalOf } = recount(records);
    const ids = new Set(
      win
        .filter((r) => (r.kind === 'access-request' && ['request', 'approve', 'deny', 'revoke'].includes(String(r.details?.action)) && valid(r)) || r.kind === 'access-grant-expired')
        .map((r) => r.details!.request as string),
    );
    const rows = block(csv, 'Access grants');
    expect(rows[0]).toEqual(['request', 'data set', 'requester', 'requested', 'decision', 'decided by', 'minutes to decide', 'ended', 'minutes from approval to revocation', 'FHIR requests using it']);
    expect(new Set(rows.slice(1).map((r) => r[0]))).toEqual(ids);
    expect(rows.length - 1).toBe(ids.size);
    for (const [id, dataSet, requester, requested, decision, decidedBy, toDecide, ended, toRevoke, uses] of rows.slice(1)) {
      const mine = win.filter((r) => r.details?.request === id || r.grant?.id === id);
      const req = mine.find((r) => step(r, 'request') && valid(r));
      const dec = mine.find((r) => (step(r, 'approve') || step(r, 'deny')) && valid(r));
      const rev = mine.find((r) => step(r, 'revoke') && valid(r));
      const exp = mine.find((r) => r.kind === 'access-grant-expired');
      expect(dataSet).toBe(mine.find((r) => r.details?.dataSet)?.details?.dataSet);
      if (req) expect(requester).toBe(req.actor.sub);
      expect(requested).toBe(req ? req.time : '-');
      const want = dec ? (step(dec, 'deny') ? 'denied' : dec.details!.narrowed ? 'approved (narrowed)' : 'approved') : req ? 'undecided' : '-';
      expect(decision, id).toBe(want);
      expect(decidedBy).toBe(dec ? dec.actor.sub : '-');
      expect(toDecide).toBe(dec ? String(Math.round(((dec.details!.decideSeconds as number) / 60) * 10) / 10) : '-');
      expect(ended).toBe(rev ? `revoked by ${rev.details!.by}` : exp ? 'expired' : '-');
      const approval = rev ? approvalOf(id) : undefined;
      expect(toRevoke).toBe(rev && approval ? String(Math.round(((Date.parse(rev.time) - Date.parse(approval.time)) / MIN) * 10) / 10) : '-');
      expect(Number(uses)).toBe(win.filter((r) => r.kind === 'fhir' && r.grant?.id === id).length);
      expect(Number(uses) > 0).toBe(usedIds.has(id));
    }
  });

  it('html: the per-data-set bars and the time-to-decide histogram carry the recounted numbers', () => {
    const { counts, win, valid, step } = recount(records);
    expect(html).not.toMatch(/<script|https?:\/\/(?!www\.w3\.org)/i);
    const chart = (id: string) => {
      const m = new RegExp(`<svg id="${id}"[^>]*>(.*?)</svg>`, 's').exec(html);
      expect(m, id).not.toBeNull();
      return m![1];
    };
    const grouped = [...chart('access-requests-by-data-set').matchAll(/data-label="([^"]+)" data-series="([^"]+)" data-value="(\d+)"/g)].map((m) => `${m[1]} ${m[2]} ${m[3]}`);
    const expected = DATA_SETS.flatMap((ds) => {
      const c = counts(ds);
      return [`${ds} requests ${c.requests}`, `${ds} approved ${c.approved}`, `${ds} denied ${c.denied}`];
    });
    expect(grouped.sort()).toEqual(expected.sort());
    const bins = [...chart('access-decision-times').matchAll(/data-label="([^"]+)" data-value="(\d+)" data-part="(\d+)"/g)].map((m) => [m[1], Number(m[2]), Number(m[3])] as const);
    const decisions = win.filter((r) => (step(r, 'approve') || step(r, 'deny')) && valid(r));
    const bounds = [5, 15, 60, 240, 1440, 4320, Number.POSITIVE_INFINITY];
    const want = bounds.map((max, i) => {
      const inBin = decisions.filter((r) => {
        const m = (r.details!.decideSeconds as number) / 60;
        return m < max && (i === 0 || m >= bounds[i - 1]);
      });
      return [inBin.length, inBin.filter((r) => step(r, 'deny')).length];
    });
    expect(bins.map(([, v, p]) => [v, p])).toEqual(want);
    expect(bins.reduce((n, [, v]) => n + v, 0)).toBe(decisions.length);
  });

  it('the same records in any order give the same tables, and nothing but the access report carries the charts', () => {
    const forward = new AuditDigest({ from: FROM, to: TO });
    const backward = new AuditDigest({ from: FROM, to: TO });
    const sorted = [...records].sort((a, b) => a.time.localeCompare(b.time));
    for (const r of sorted) forward.add(r);
    for (const r of sorted.reverse()) backward.add(r);
    const now = new Date('2024-06-07T00:00:00Z');
    const a = forward.report('access', { now });
    expect(toCsv(a)).toBe(toCsv(backward.report('access', { now })));
    expect(a.charts.accessRequests?.byDataSet.length).toBe(2);
    expect(forward.report('break-glass', { now }).charts.accessRequests).toBeUndefined();
  });

  it('an empty window: zero counts, "-" for the medians, no bars', () => {
    const d = new AuditDigest({ from: '2030-01-01T00:00:00Z', to: '2030-01-02T00:00:00Z' });
    for (const r of records) d.add(r);
    const r = d.report('access', { now: new Date('2030-01-03T00:00:00Z') });
    const summary = r.tables.find((t) => t.title === 'Access requests')!;
    expect(summary.rows.find(([k]) => k === 'requests')?.[1]).toBe(0);
    expect(summary.rows.find(([k]) => k === 'median minutes to decide')?.[1]).toBe('-');
    expect(r.tables.find((t) => t.title === 'Access grants')!.rows).toEqual([]);
    expect(r.charts.accessRequests).toEqual({ byDataSet: [], keys: ['requests', 'approved', 'denied'], decisionTimes: [] });
  });
});

describe('report access: the records the access-request service writes', () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'phi-access-svc-report-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('request, refused self-approval, narrowed approval, denial, revocation by the requester, use, expiry', async () => {
    const clock = new Clock(Date.parse('2025-03-01T10:00:00Z'));
    const policy = shippedPolicy();
    const { logger } = capturingLogger();
    const sink = await FileAuditSink.open({ dir: join(dir, 'audit'), rotateBytes: 1 << 20, groupCommitMs: 0, writerId: 'svc' });
    const alerter = new Alerter({
      outbox: await FileOutbox.open(join(dir, 'alerts')),
      audit: sink,
      logger,
      webhook: 'http://127.0.0.1:9/alerts',
      policyVersion: () => policy.version,
      now: clock.now,
      newId: randomUUID,
      baseDelayMs: 3_600_000,
      pollMs: 3_600_000,
    });
    const svc = createAccessService({
      store: await FileAccessStore.open(join(dir, 'access-requests')),
      alerter,
      audit: sink,
      logger,
      policy: () => policy,
      publicBaseUrl: 'https://gw.example/fhir',
      now: clock.now,
      sweepMs: 0,
    });
    const ctx = (purpose: string): CallContext => ({ auditId: randomUUID(), via: 'http', client: { address: '10.0.0.7' }, method: 'POST', path: '/access-requests', purpose });
    const bill1 = principal('bill-1', ['billing']);
    const aud1 = principal('aud-1', ['auditor']);
    const po1 = principal('po-1', ['privacy-officer']);
    const justification = 'Payer asked for the discharge summary as a claim attachment';
    const at = (minutes: number) => {
      clock.t = Date.parse('2025-03-01T10:00:00Z') + minutes * MIN;
    };

    const a = await svc.request(bill1, 'HPAYMT', { dataSet: 'claim-attachment', patients: ['p1'], justification, minutes: 60 }, ctx('HPAYMT'));
    at(1);
    const b = await svc.request(aud1, 'HCOMPL', { dataSet: 'compliance-chart', patients: ['p2'], justification, minutes: 120 }, ctx('HCOMPL'));
    at(2);
    const c = await svc.request(principal('bill-2', ['billing']), 'HPAYMT', { dataSet: 'claim-attachment', patients: ['p3'], justification, minutes: 60 }, ctx('HPAYMT'));
    at(10);
    await expect(svc.decide(principal('bill-1', ['billing', 'privacy-officer']), a.id, { outcome: 'approved' }, ctx('HCOMPL'))).rejects.toMatchObject({ code: 'approval-not-permitted' });
    at(12);
    await svc.decide(po1, a.id, { outcome: 'approved', minutes: 30 }, ctx('HCOMPL'));
    at(20);
    await svc.decide(po1, c.id, { outcome: 'denied', note: 'the payer withdrew the request' }, ctx('HCOMPL'));
    at(30);
    await svc.decide(po1, b.id, { outcome: 'approved' }, ctx('HCOMPL'));
    at(40);
    await svc.revoke(bill1, a.id, {}, ctx('HPAYMT'));
    at(45);
    // A use of B, as the pipeline records it (the gate's answer becomes the record's grant).
    const g = await svc.use({ principal: aud1, purpose: 'HCOMPL', request: classified('/DocumentReference?patient=p2'), header: b.id, requestId: randomUUID() });
    await sink.write({
      id: randomUUID(),
      time: clock.now().toISOString(),
      kind: 'fhir',
      actor: { iss: aud1.iss, sub: aud1.sub, roles: [...aud1.roles] },
      purpose: 'HCOMPL',
      role: 'auditor',
      grant: { approvedBy: g.approvedBy, dataSet: g.dataSet, id: g.id, patient: g.patient },
      client: { address: '10.0.0.7' },
      request: { method: 'GET', path: '/DocumentReference?patient=p2', interaction: 'search-type', resourceType: 'DocumentReference' },
      decision: 'allow',
      rule: 'r',
      disclosed: { resources: ['DocumentReference/d2'], patients: ['p2'], elementsRemoved: 0, resourcesWithheld: 0 },
      status: 200,
      upstreamStatus: 200,
      durations: { totalMs: 1 },
      policyVersion: policy.version,
    });
    at(30 + 121);
    await svc.sweep();
    await svc.close();
    await alerter.close?.();
    await sink.close();

    const r = await cli(['access', '--format', 'csv', '--source', `file:${join(dir, 'audit')}`]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const summary = new Map(block(r.out, 'Access requests').slice(1).map(([k, v]) => [k, v]));
    expect(Object.fromEntries(summary)).toEqual({
      requests: '3',
      'requests refused (invalid, not permitted)': '0',
      approved: '2',
      'approved narrower than asked': '1',
      denied: '1',
      'decisions refused (own request, no approver role, approver holding a request for the data set, already decided)': '1',
      'undecided (asked in the window, no decision in it)': '0',
      // 12 (A), 18 (C), 29 (B) minutes.
      'median minutes to decide': '18',
      'grants expired': '1',
      'grants revoked early': '1',
      'revoked early by the requester': '1',
      'revocations refused': '0',
      'median minutes from approval to revocation': '28',
      'grants never used after approval': '1',
      'FHIR requests using a grant': '1',
    });
    const perSet = block(r.out, 'Access requests per data set');
    expect(perSet.slice(1).sort()).toEqual([
      ['claim-attachment', '2', '0', '1', '1', '1', '1', '15', '0', '1', '28', '1', '0'],
      ['compliance-chart', '1', '0', '1', '0', '0', '0', '29', '1', '0', '-', '0', '1'],
    ]);
    const grants = new Map(block(r.out, 'Access grants').slice(1).map((row) => [row[0], row]));
    expect(grants.get(a.id)?.slice(1)).toEqual(['claim-attachment', 'bill-1', '2025-03-01T10:00:00.000Z', 'approved (narrowed)', 'po-1', '12', 'revoked by requester', '28', '0']);
    expect(grants.get(b.id)?.slice(1)).toEqual(['compliance-chart', 'aud-1', '2025-03-01T10:01:00.000Z', 'approved', 'po-1', '29', 'expired', '-', '1']);
    expect(grants.get(c.id)?.slice(1)).toEqual(['claim-attachment', 'bill-2', '2025-03-01T10:02:00.000Z', 'denied', 'po-1', '18', '-', '-', '0']);
  });
});
