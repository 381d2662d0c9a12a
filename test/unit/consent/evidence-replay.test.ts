// `policy diff` and shadow mode replaying consent effects from the records' consent evidence: a
// candidate without a consent section (or exempting the purpose) releases what consents withheld;
// one whose break-glass no longer overrides them withholds what was overridden; one applying consents
// where (or otherwise than) the running policy did is "not replayable for consent" and makes the
// diff exit 3. Exact counts per line; a file trail for the CLI.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditRecord, ConsentEvidence } from '../../../src/audit/record.js';
import { createAuditSink } from '../../../src/audit/index.js';
import { run as policyCli } from '../../../src/cli/policy.js';
import { createShadowObserver } from '../../../src/monitor/shadow.js';
import type { CompiledPolicy } from '../../../src/policy/plan.js';
import type { Exchange } from '../../../src/proxy/record.js';
import { PolicyDiff } from '../../../src/report/policy-diff.js';
import { principal, request } from '../breakglass/helpers.js';
import { btgRecord, consentPolicy, consentPolicyYaml, consentRecord, NEVER, OVERRIDE } from './evidence-fixtures.js';

const none = consentPolicy(undefined);
const override = consentPolicy(OVERRIDE);
const never = consentPolicy(NEVER);
const denied: ConsentEvidence = { restricted: ['Consent/c-deny'], withheld: 1 };

describe('policy diff: consent', () => {
  it('a candidate without a consent section: what consents withheld would be released, break-glass included', () => {
    const diff = new PolicyDiff(override, none);
    diff.add(consentRecord('/Observation/o-1', denied, { decision: 'deny', status: 404 }));
    diff.add(consentRecord('/Observation?patient=pat-1', { restricted: ['Consent/c-deny'], withheld: 2 }, { released: ['pat-1'] }));
    diff.add(consentRecord('/Patient/pat-4', { unevaluable: ['pat-4'], withheld: 1 }, { decision: 'deny', status: 404 }));
    // Consents released Part 2 data under a permit, withheld nothing: the candidate releases no more.
    diff.add(consentRecord('/Observation/o-9', { part2: 1, permitted: ['Consent/c-part2'], withheld: 0 }, { released: ['pat-2'] }));
    diff.add(consentRecord('/Patient/pat-2', undefined, { released: ['pat-2'] }));
    // Break-glass withheld Part 2 data (no override for it): replayed for consent alone.
    diff.add(btgRecord('/Observation?patient=pat-3', 'bg-1', { restricted: ['Consent/c-part2'], withheld: 1 }, ['pat-3']));
    diff.add(btgRecord('/Patient/pat-3', 'bg-1', undefined, ['pat-3']));
    expect(diff.result()).toEqual([
      { role: 'clinician', purpose: 'BTG', change: 'would be released: consent-restricted', what: 'search-type Observation (no consent section)', requests: 1 },
      { role: 'clinician', purpose: 'TREAT', change: 'would be released: consent-restricted', what: 'read Observation (no consent section)', requests: 1 },
      { role: 'clinician', purpose: 'TREAT', change: 'would be released: consent-restricted', what: 'read Patient (no consent section)', requests: 1 },
      { role: 'clinician', purpose: 'TREAT', change: 'would be released: consent-restricted', what: 'search-type Observation (no consent section)', requests: 1 },
    ]);
    expect([diff.replayed, diff.changed, diff.notLookedUp, diff.notReplayableConsent, diff.skipped]).toEqual([6, 4, 0, 0, 1]);
  });

  it('a candidate exempting the purpose: released for that purpose only', () => {
    const diff = new PolicyDiff(override, consentPolicy('{ exemptPurposes: [PATRQT, TREAT], breakGlass: override }'));
    diff.add(consentRecord('/Observation/o-1', denied, { decision: 'deny', status: 404 }));
    diff.add(btgRecord('/Observation/o-1', 'bg-1', { restricted: ['Consent/c-part2'], withheld: 1 }, []));
    expect(diff.result()).toEqual([{ role: 'clinician', purpose: 'TREAT', change: 'would be released: consent-restricted', what: 'read Observation (consent.exemptPurposes)', requests: 1 }]);
  });

  it('break-glass no longer overriding: what it overrode would be withheld; newly overriding cannot be replayed', () => {
    const off = new PolicyDiff(override, never);
    off.add(btgRecord('/Observation?patient=pat-1', 'bg-1', { overridden: ['Consent/c-deny'], withheld: 0 }, ['pat-1']));
    off.add(btgRecord('/Observation/o-2', 'bg-1', { overridden: ['Consent/c-deny'], withheld: 0 }, ['pat-1']));
    off.add(btgRecord('/Patient/pat-1', 'bg-1', undefined, ['pat-1']));
    // Not break-glass: the override does not concern it.
    off.add(consentRecord('/Observation/o-1', denied, { decision: 'deny', status: 404 }));
    expect(off.result()).toEqual([
      { role: 'clinician', purpose: 'BTG', change: 'would be withheld: consent overridden', what: 'read Observation (consent.breakGlass)', requests: 1 },
      { role: 'clinician', purpose: 'BTG', change: 'would be withheld: consent overridden', what: 'search-type Observation (consent.breakGlass)', requests: 1 },
    ]);
    expect([off.replayed, off.changed, off.notReplayableConsent, off.skipped]).toEqual([3, 2, 0, 1]);

    const on = new PolicyDiff(never, override);
    on.add(btgRecord('/Observation/o-2', 'bg-1', { restricted: ['Consent/c-deny'], withheld: 1 }, []));
    on.add(btgRecord('/Patient/pat-1', 'bg-1', { overridden: ['Consent/c-x'], withheld: 0 }, ['pat-1']));
    expect(on.result()).toEqual([{ role: 'clinician', purpose: 'BTG', change: 'not replayable for consent', what: 'read Observation (consent.breakGlass)', requests: 1 }]);
    expect([on.changed, on.notReplayableConsent, on.skipped]).toEqual([0, 1, 1]);
  });

  it('a consent section added: requests that released patient data for a non-exempt purpose are not replayable', () => {
    const diff = new PolicyDiff(none, override);
    diff.add(consentRecord('/Patient/pat-1', undefined, { released: ['pat-1'] }));
    diff.add(consentRecord('/Observation?patient=pat-1', undefined, { released: ['pat-1'] }));
    // Nothing of a patient released; the patient's own access (exempt).
    diff.add(consentRecord('/Observation?code=1', undefined, {}));
    diff.add(consentRecord('/Patient/pat-1', undefined, { released: ['pat-1'], purpose: 'PATRQT' }));
    expect(diff.result()).toEqual([
      { role: 'clinician', purpose: 'TREAT', change: 'not replayable for consent', what: 'read Patient (consent)', requests: 1 },
      { role: 'clinician', purpose: 'TREAT', change: 'not replayable for consent', what: 'search-type Observation (consent)', requests: 1 },
    ]);
    expect([diff.replayed, diff.changed, diff.notReplayableConsent]).toEqual([4, 0, 2]);
    expect(diff.tables()[0]!.note).toContain(', 2 not replayable for consent (the candidate applies patients\' consents where, or otherwise than, the running policy did');
  });

  it("an authorization requirement added: the marketer's releases are not replayable; otherwise the same policy changes nothing", () => {
    const diff = new PolicyDiff(override, consentPolicy(OVERRIDE, { authorization: true }));
    diff.add(consentRecord('/Patient/pat-1', undefined, { released: ['pat-1'], role: 'marketer', purpose: 'HMARKT' }));
    diff.add(consentRecord('/Patient/pat-1', denied, { released: ['pat-1'] }));
    expect(diff.result()).toEqual([{ role: 'marketer', purpose: 'HMARKT', change: 'not replayable for consent', what: 'read Patient (dataSets.marketing.consent)', requests: 1 }]);
    const same = new PolicyDiff(override, override);
    same.add(consentRecord('/Patient/pat-1', denied, { released: ['pat-1'] }));
    same.add(btgRecord('/Observation/o-2', 'bg-1', { overridden: ['Consent/c-deny'], withheld: 0 }, ['pat-1']));
    expect(same.result()).toEqual([]);
    expect(same.changed + same.notReplayableConsent).toBe(0);
    expect(same.tables()[0]!.note).toContain('0 not replayable for consent');
  });

  describe('through the CLI on a file trail', () => {
    let dir: string;
    const file = (name: string, consent: string | undefined) => {
      const f = join(dir, name);
      writeFileSync(f, consentPolicyYaml(consent));
      return f;
    };
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'phi-consent-trail-'));
      const sink = await createAuditSink({ sink: 'file', path: join(dir, 'audit'), failOpen: false, rotateBytes: 1 << 20, groupCommitMs: 0 });
      await sink.write(consentRecord('/Patient/pat-1', undefined, { released: ['pat-1'] }));
      await sink.write(btgRecord('/Observation/o-2', 'bg-1', { overridden: ['Consent/c-deny'], withheld: 0 }, ['pat-1']));
      await sink.close();
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    async function diffCli(current: string, candidate: string): Promise<{ code: number; out: string; err: string }> {
      const stdout = new PassThrough();
      const stderr = new PassThrough();
      let out = '';
      let err = '';
      stdout.on('data', (d) => (out += d));
      stderr.on('data', (d) => (err += d));
      const code = await policyCli(['diff', '--policy', current, '--candidate', candidate, '--source', `file:${join(dir, 'audit')}`, '--format', 'csv'], { stdout, stderr, env: {} });
      return { code, out, err };
    }

    it('a consent section added: exit 3, the read not replayable for consent', async () => {
      const r = await diffCli(file('none.yaml', undefined), file('override.yaml', OVERRIDE));
      expect(r.err).toBe('');
      expect(r.code).toBe(3);
      expect(r.out).toContain('clinician,TREAT,not replayable for consent,read Patient (consent),1\r\n');
    });

    it('break-glass no longer overriding: exit 3; the same policy: exit 0', async () => {
      const off = await diffCli(file('override.yaml', OVERRIDE), file('never.yaml', NEVER));
      expect(off.code).toBe(3);
      expect(off.out).toContain('clinician,BTG,would be withheld: consent overridden,read Observation (consent.breakGlass),1\r\n');
      const same = await diffCli(file('override.yaml', OVERRIDE), file('override2.yaml', OVERRIDE));
      expect(same.err).toBe('');
      expect(same.code).toBe(0);
    });
  });
});

const silent = { warn() {}, error() {}, info() {}, debug() {} } as never;
let seq = 0;

function exchange(url: string, consent: ConsentEvidence | undefined, released: string[], policyVersion: string, o: { purpose?: string; session?: string } = {}): Exchange {
  seq++;
  return {
    id: `req-${seq}`,
    time: new Date('2024-06-03T15:00:00Z'),
    started: 0n,
    method: 'GET',
    url,
    clientAddress: '127.0.0.1',
    userAgent: undefined,
    policyVersion,
    principal: principal('dr-a', ['clinician']),
    purpose: o.purpose ?? 'TREAT',
    role: 'clinician',
    request: request(url),
    ...(o.session === undefined ? {} : { breakGlass: { session: o.session, reason: 'ED: unconscious', patient: 'pat-1' } }),
    ...(consent === undefined ? {} : { consent }),
    stats: { elementsRemoved: 0, resourcesWithheld: consent?.withheld ?? 0, resources: released.map((p) => `Patient/${p}`), patients: new Set(released) },
  };
}

function shadow(current: CompiledPolicy, candidate: CompiledPolicy) {
  const records: AuditRecord[] = [];
  const observer = createShadowObserver({
    audit: { write: async (r: AuditRecord) => void records.push(r) } as never,
    logger: silent,
    current: (v) => (v === current.version ? current : undefined),
    candidate,
    candidateFile: 'candidate.yaml',
  });
  return { observer, records };
}

describe('shadow mode: consent', () => {
  it('a candidate without a consent section: a read a consent withheld (answered 404) is recorded as released', async () => {
    const { observer, records } = shadow(override, none);
    observer.observe(exchange('/Observation/o-1', denied, [], override.version), { status: 404, decision: 'deny', rule: 'g: withheld (consent)' });
    observer.observe(exchange('/Patient/pat-2', undefined, ['pat-2'], override.version), { status: 200, decision: 'allow', rule: 'g' });
    await observer.idle();
    expect(records.map((r) => [r.request.path, r.decision, r.details?.consent, r.details?.consentRule])).toEqual([['/Observation/o-1', 'allow', 'consent-released', 'no consent section']]);
    expect(records[0]!.rule).toMatch(/^shadow .*: roles\.clinician\.purposes\.TREAT .* -> no consent section: consent-restricted would be released$/);
    expect(records[0]!.disclosed.patients).toEqual([]);
  });

  it("break-glass no longer overriding: the session's override recorded as withheld, with the consents", async () => {
    const { observer, records } = shadow(override, never);
    observer.observe(exchange('/Observation?patient=pat-1', { overridden: ['Consent/c-deny'], withheld: 0 }, ['pat-1'], override.version, { purpose: 'BTG', session: 'bg-1' }), {
      status: 200,
      decision: 'allow',
      rule: 'bg',
    });
    await observer.idle();
    expect(records.map((r) => [r.details?.consent, r.details?.consentRule, r.details?.overridden])).toEqual([['consent-withheld', 'consent.breakGlass', ['Consent/c-deny']]]);
  });

  it('a consent section added: a release of patient data is recorded as not replayable', async () => {
    const { observer, records } = shadow(none, override);
    observer.observe(exchange('/Patient/pat-1', undefined, ['pat-1'], none.version), { status: 200, decision: 'allow', rule: 'g' });
    observer.observe(exchange('/Observation?code=1', undefined, [], none.version), { status: 200, decision: 'allow', rule: 'g' });
    await observer.idle();
    expect(records.map((r) => [r.request.path, r.details?.consent, r.details?.consentRule])).toEqual([['/Patient/pat-1', 'consent-not-replayable', 'consent']]);
  });
});
