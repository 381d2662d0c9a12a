/**
 * `npm start` is the first thing anyone tries: run the built `phi-gateway demo` as a process, take the
 * curl commands it prints, and run each one (URL and headers as printed, tokens from the printed
 * exports). Each must answer as its comment says: the status it names (403, 404), else 200. The
 * demo patients' consents (DEMO.consents) are enforced by the shipped policy: the tour's consent
 * commands are checked for what they release and what they withhold, and the printed `explain
 * --patient` command is run.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Bundle, Condition, OperationOutcome, Resource } from 'fhir/r4.js';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openAuditSource } from '../../src/audit/index.js';
import type { ChainedRecord } from '../../src/audit/record.js';
import { NOTICE_EXTENSION, REFRAIN_CODE, REFRAIN_SYSTEM } from '../../src/consent/types.js';
import { DEMO } from '../../src/demo/data.js';
import { ERROR_SYSTEM } from '../../src/errors.js';
import { freePort } from '../helpers/gateway.js';
import { runCli } from '../helpers/gateway-process.js';

const root = new URL('../..', import.meta.url).pathname;
let child: ChildProcess;
let output = '';
let dataDir: string;

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'phi-demo-'));
  const env = {
    ...process.env,
    PHI_GATEWAY_LISTEN: `127.0.0.1:${await freePort()}`,
    PHI_GATEWAY_ADMIN_LISTEN: `127.0.0.1:${await freePort()}`,
    LOG_LEVEL: 'warn',
  };
  child = spawn(process.execPath, ['dist/cli/main.js', 'demo', '--data', dataDir], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.on('data', (d: Buffer) => {
    output += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    output += d.toString();
  });
  const deadline = Date.now() + 45_000;
  while (!output.includes('Ctrl-C to stop')) {
    if (child.exitCode !== null) throw new Error(`demo exited early:\n${output}`);
    if (Date.now() > deadline) throw new Error(`demo did not start:\n${output}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}, 60_000);

afterAll(async () => {
  if (child && child.exitCode === null) {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  }
  rmSync(dataDir, { recursive: true, force: true });
});

interface Curl {
  comment: string;
  /** The last `# ...` line above it that is not an indented comment: which part of the tour. */
  section: string;
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string;
  /** `NAME=$(curl ... | node -pe '...id')`: the answer's `id` is kept in $NAME for later commands. */
  capture?: string;
}

/**
 * Parses the printed tour: `export X_TOKEN=...` lines and `curl -s [-X M] 'URL' -H "K: V" ... [-d 'JSON']`
 * lines, optionally as `NAME=$(curl ... | node -pe '...')`. The exported tokens are substituted;
 * variables set by earlier commands (`$GRANT`) stay in place for `run`.
 */
function parseTour(text: string): Curl[] {
  const tokens = tourVars(text);
  const out: Curl[] = [];
  let comment = '';
  let section = '';
  for (const line of text.split('\n')) {
    if (line.startsWith('#   ') || line.startsWith('# break')) comment = line;
    if (line.startsWith('# ') && !line.startsWith('#   ')) section = line;
    const m = /^(?:(\w+)=\$\()?curl -s (?:-X (\w+) )?(?:'([^']+)'|"([^"]+)")(.*)$/.exec(line);
    if (!m) {
      if (line.includes('curl ')) throw new Error(`unparsable curl line: ${line}`);
      continue;
    }
    const headers: Record<string, string> = {};
    for (const h of m[5].matchAll(/-H (?:"([^"]+)"|'([^']+)')/g)) {
      const raw = (h[1] ?? h[2]).replace(/\$(\w+)/g, (v, name: string) => tokens.get(name) ?? v);
      const i = raw.indexOf(':');
      headers[raw.slice(0, i).trim()] = raw.slice(i + 1).trim();
    }
    const body = / -d '([^']*)'/.exec(m[5])?.[1];
    if (m[1] !== undefined && !/\| node -pe '.*\.id'\)$/.test(m[5])) throw new Error(`a captured command must keep the answer's id: ${line}`);
    out.push({ comment, section, method: m[2] ?? 'GET', url: m[3] ?? m[4], headers, ...(body === undefined ? {} : { body }), ...(m[1] ? { capture: m[1] } : {}) });
  }
  return out;
}

/** Shell variables of the tour: the exported tokens, and ids captured by earlier commands. */
function tourVars(text: string): Map<string, string> {
  return new Map([...text.matchAll(/^export (\w+)=(\S+)$/gm)].map((m) => [m[1], m[2]]));
}

/** Runs one printed command as the shell would: variables expanded, the captured id kept. */
async function run(c: Curl, vars: Map<string, string>): Promise<{ status: number; headers: Headers; text: string }> {
  const expand = (s: string) => s.replace(/\$(\w+)/g, (_, name: string) => vars.get(name) ?? `<missing ${name}>`);
  const headers = Object.fromEntries(Object.entries(c.headers).map(([k, v]) => [k, expand(v)]));
  const res = await fetch(expand(c.url), { method: c.method, headers, ...(c.body === undefined ? {} : { body: c.body }) });
  const text = await res.text();
  if (c.capture !== undefined) vars.set(c.capture, String((JSON.parse(text) as { id: unknown }).id));
  return { status: res.status, headers: res.headers, text };
}

/** The status a command's comment says it answers with; 200 when it names none. */
function expectedStatus(comment: string): number {
  return comment.includes('403') ? 403 : comment.includes('404') ? 404 : comment.includes('201') ? 201 : 200;
}

function errorCode(text: string): string | undefined {
  return (JSON.parse(text) as OperationOutcome).issue?.[0]?.details?.coding?.[0]?.code;
}

describe('npm start (phi-gateway demo)', () => {
  it('prints a token for each demo role and curl commands that work as described', async () => {
    const tour = parseTour(output);
    expect(tour.length).toBeGreaterThanOrEqual(24);
    const vars = tourVars(output);
    for (const c of tour) {
      const res = await run(c, vars);
      expect(res.status, `${c.comment}\n${c.url}\n${res.text.slice(0, 300)}`).toBe(expectedStatus(c.comment));
      expect(res.headers.get('x-request-id')).toBeTruthy();
    }
  });

  it('elevated access: the printed request, approval, use and revocation work as printed, for the patient the grant names only', async () => {
    const steps = parseTour(output).filter((c) => c.section.startsWith('# elevated access on request'));
    const vars = tourVars(output);
    const at = (pattern: RegExp) => {
      const i = steps.findIndex((c) => pattern.test(c.comment));
      if (i < 0) throw new Error(`the access tour has no step ${pattern}`);
      return steps[i];
    };
    const doc = (text: string) => ((JSON.parse(text) as Bundle).entry ?? []).map((e) => `${e.resource?.resourceType}/${e.resource?.id}`);
    const documentData = Buffer.from(DEMO.documentText, 'utf8').toString('base64');
    const po = vars.get('PRIVACY_OFFICER_TOKEN');
    expect(decodeJwt(po!)).toMatchObject({ sub: 'privacy-officer-1', roles: ['privacy-officer'] });

    // Before: billing may not read documents at all.
    const before = await run(at(/without a grant/), vars);
    expect(before.status).toBe(403);
    expect(errorCode(before.text)).toBe('type-denied');
    expect(before.text).not.toContain(documentData);

    // (a) The request: pending, as asked; its id kept in $GRANT as the shell would.
    const asked = await run(at(/\(a\)/), vars);
    expect(asked.status, asked.text).toBe(201);
    const id = vars.get('GRANT')!;
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(JSON.parse(asked.text)).toMatchObject({ id, status: 'pending', dataSet: 'claim-attachment', purpose: 'HPAYMT', scope: { patients: [DEMO.patients.alice] } });

    // The requester may not approve its own request, as the tour says.
    const approve = at(/\(b\)/);
    const own = await run({ ...approve, headers: { ...approve.headers, Authorization: `Bearer ${vars.get('BILLING_TOKEN')}`, 'X-Purpose-Of-Use': 'HPAYMT' } }, vars);
    expect(own.status).toBe(403);
    expect(errorCode(own.text)).toBe('approval-not-permitted');
    // Before approval the grant opens nothing.
    const use = at(/\(c\)/);
    const early = await run(use, vars);
    expect(early.status).toBe(403);
    expect(errorCode(early.text)).toBe('grant-inactive');

    const queue = await run(at(/queue/), vars);
    expect(queue.status).toBe(200);
    expect((JSON.parse(queue.text) as { requests: { id: string }[] }).requests.map((r) => r.id)).toContain(id);

    // (b) Approved by the privacy officer.
    const approved = await run(approve, vars);
    expect(approved.status, approved.text).toBe(200);
    expect(JSON.parse(approved.text)).toMatchObject({ id, status: 'approved', decision: { outcome: 'approved', by: { sub: 'privacy-officer-1' } } });

    // (c) Billing reads Alice's documents and lab report with it; the answer names the grant.
    const used = await run(use, vars);
    expect(used.status, used.text).toBe(200);
    expect(used.headers.get('x-access-grant')).toBe(id);
    expect(doc(used.text)).toEqual([`DocumentReference/${DEMO.documentReference}`]);
    expect(used.text).toContain(documentData);
    const report = await run(at(/lab report/), vars);
    expect(report.status).toBe(200);
    expect(doc(report.text)).toContain('DiagnosticReport/dr-alice-labs');
    // Without the header the same request is refused as before: the grant widens only requests that name it.
    const { 'X-Access-Grant': _, ...withoutGrant } = use.headers;
    const plain = await run({ ...use, headers: withoutGrant }, vars);
    expect(plain.status).toBe(403);
    expect(errorCode(plain.text)).toBe('type-denied');

    // Another patient: refused and alerted.
    const other = await run(at(/does not name/), vars);
    expect(other.status).toBe(403);
    expect(errorCode(other.text)).toBe('grant-out-of-scope');
    for (const leak of ['Baker', DEMO.ssn.brian]) expect(other.text).not.toContain(leak);

    // (d) Revoked; the next use is refused.
    const revoked = await run(at(/\(d\)/), vars);
    expect(revoked.status, revoked.text).toBe(200);
    expect(JSON.parse(revoked.text)).toMatchObject({ id, active: false, revoked: { by: { sub: 'privacy-officer-1' } } });
    const after = await run(at(/next use/), vars);
    expect(after.status).toBe(403);
    expect(errorCode(after.text)).toBe('grant-inactive');
    expect(after.text).not.toContain(documentData);

    // The trail: each step of the request, and the FHIR record of the use naming the grant.
    const records: ChainedRecord[] = [];
    for await (const item of openAuditSource({ sink: 'file', path: join(dataDir, 'audit'), failOpen: false, rotateBytes: 0, groupCommitMs: 0 })) {
      if ('record' in item) records.push(item.record as ChainedRecord);
    }
    const steps2 = records.filter((r) => r.kind === 'access-request' && r.details?.request === id);
    expect(steps2.map((r) => [r.details?.action, r.decision, r.actor.sub])).toEqual(
      expect.arrayContaining([
        ['request', 'allow', 'billing-clerk-1'],
        ['approve', 'deny', 'billing-clerk-1'],
        ['approve', 'allow', 'privacy-officer-1'],
        ['revoke', 'allow', 'privacy-officer-1'],
      ]),
    );
    // The privacy office was alerted of the request and of the misuse (the demo's only target is the
    // log, flushed every second): ids, no patient.
    const alerts = () => output.split('\n').filter((l) => /"alert":\{"type":"(access-request|grant-misuse)"/.test(l));
    await expect.poll(() => alerts().map((l) => /"type":"([a-z-]+)"/.exec(l)![1]), { timeout: 5000 }).toEqual(expect.arrayContaining(['access-request', 'grant-misuse']));
    for (const l of alerts()) for (const p of [DEMO.patients.alice, DEMO.patients.brian]) expect(l).not.toContain(p);

    const read = records.find((r) => r.id === used.headers.get('x-request-id'));
    expect(read?.grant).toEqual({ approvedBy: 'privacy-officer-1', dataSet: 'claim-attachment', id, patient: DEMO.patients.alice });
    expect(records.find((r) => r.id === plain.headers.get('x-request-id'))?.grant).toBeUndefined();
  });

  it('the billing command really is redacted and the researcher one de-identified', async () => {
    const tour = parseTour(output);
    const billing = tour.find((c) => c.headers['X-Purpose-Of-Use'] === 'HPAYMT' && c.url.endsWith(`/Patient/${DEMO.patients.alice}`));
    const body = await (await fetch(billing!.url, { headers: billing!.headers })).text();
    expect(body).toContain('Anderson');
    expect(body).not.toContain(DEMO.ssn.alice);
    expect(body).not.toContain(DEMO.phones.alice);
    const research = tour.find((c) => c.headers['X-Purpose-Of-Use'] === 'HRESCH' && c.url.includes('/Patient'));
    const rbody = await (await fetch(research!.url, { headers: research!.headers })).text();
    for (const name of DEMO.families) expect(rbody).not.toContain(name);
  });

  it('mints the clinician and coder tokens for their own FHIR resource (fhirUser)', () => {
    const tokens = new Map([...output.matchAll(/^export (\w+)=(\S+)$/gm)].map((m) => [m[1], m[2]]));
    expect(decodeJwt(tokens.get('CLINICIAN_TOKEN')!)).toMatchObject({ sub: 'dr-reyes', fhirUser: DEMO.relationships.fhirUsers.clinician });
    expect(decodeJwt(tokens.get('CODER_TOKEN')!)).toMatchObject({ sub: 'coder-1', fhirUser: DEMO.relationships.fhirUsers.coder });
    expect(decodeJwt(tokens.get('BILLING_TOKEN')!)).not.toHaveProperty('fhirUser');
  });

  it("the clinician sees her own patient, is refused another with relationship-required, and break-glass opens it", async () => {
    const tour = parseTour(output).filter((c) => c.headers['X-Purpose-Of-Use'] === 'TREAT' || c.headers['X-Purpose-Of-Use'] === 'BTG');
    const related = tour.find((c) => c.headers['X-Purpose-Of-Use'] === 'TREAT' && c.url.endsWith(`/Patient/${DEMO.patients.alice}`))!;
    const res = await fetch(related.url, { headers: related.headers });
    expect(res.status).toBe(200);
    expect(await res.text()).toContain(DEMO.ssn.alice);

    const unrelated = tour.find((c) => c.headers['X-Purpose-Of-Use'] === 'TREAT' && c.url.endsWith(`/Patient/${DEMO.patients.brian}`))!;
    const refused = await fetch(unrelated.url, { headers: unrelated.headers });
    const text = await refused.text();
    expect(refused.status).toBe(403);
    expect((JSON.parse(text) as OperationOutcome).issue[0].details?.coding?.[0]).toEqual({ system: ERROR_SYSTEM, code: 'relationship-required' });
    for (const leak of [DEMO.ssn.brian, DEMO.phones.brian, 'Baker']) expect(text).not.toContain(leak);

    const glass = tour.find((c) => c.headers['X-Purpose-Of-Use'] === 'BTG' && c.url.endsWith(`/Patient/${DEMO.patients.brian}`))!;
    const opened = await fetch(glass.url, { headers: glass.headers });
    expect(opened.status).toBe(200);
    expect(await opened.text()).toContain('Baker');
  });

  it('the coder sees an account in the work queue, and one outside it exactly as a patient that does not exist', async () => {
    const coder = /^export CODER_TOKEN=(\S+)$/m.exec(output)![1];
    const tour = parseTour(output).filter((c) => c.headers['X-Purpose-Of-Use'] === 'HOPERAT' && c.headers.Authorization === `Bearer ${coder}`);
    const assigned = tour.find((c) => c.url.endsWith(`/Patient/${DEMO.patients.alice}`))!;
    const res = await fetch(assigned.url, { headers: assigned.headers });
    const body = await res.text();
    expect(res.status).toBe(200);
    expect(body).toContain(DEMO.mrn.alice);
    expect(body).not.toContain('Anderson');

    const unassigned = tour.find((c) => c.url.endsWith(`/Patient/${DEMO.patients.brian}`))!;
    const refused = await fetch(unassigned.url, { headers: unassigned.headers });
    const missing = await fetch(unassigned.url.replace(DEMO.patients.brian, 'pat-does-not-exist'), { headers: unassigned.headers });
    expect(refused.status).toBe(404);
    expect(missing.status).toBe(404);
    // The same answer as for an id that does not exist: nothing tells that Brian is a patient here.
    expect(await refused.text()).toBe(await missing.text());
  });
  it("enforces the demo patients' consents as the tour says: opt-out, payer restriction, Part 2, an expired consent", async () => {
    const tour = parseTour(output);
    const C = DEMO.consents;
    const PR = C.payerRestriction;
    const find = (purpose: string, path: string) => {
      const c = tour.find((x) => x.headers['X-Purpose-Of-Use'] === purpose && x.url.endsWith(path));
      if (!c) throw new Error(`the tour has no ${purpose} command for ${path}`);
      return c;
    };
    const run = async (c: Curl) => {
      const res = await fetch(c.url, { headers: c.headers });
      return { status: res.status, id: res.headers.get('x-request-id')!, text: await res.text() };
    };
    const resources = (text: string) => ((JSON.parse(text) as Bundle).entry ?? []).map((e) => e.resource as Resource);

    // Henry opted out of research: the one HIV diagnosis in the demo is his, and it is not there.
    const research = await run(find('HRESCH', '/Condition?code=http://snomed.info/sct|86406008'));
    expect(research.status).toBe(200);
    expect(resources(research.text).filter((r) => r.resourceType === 'Condition')).toEqual([]);

    // Brian's self-paid visit, its Condition and its Claim are not disclosed for payment; his other encounter is.
    const encounters = await run(find('HPAYMT', `/Encounter?patient=${DEMO.patients.brian}`));
    expect(encounters.status).toBe(200);
    expect(resources(encounters.text).map((r) => r.id)).toEqual([PR.otherEncounter]);
    const claims = await run(find('HPAYMT', `/Claim?patient=${DEMO.patients.brian}`));
    expect(claims.status).toBe(200);
    expect(resources(claims.text)).toEqual([]);
    for (const leak of [PR.encounter, PR.claim, PR.condition, 'Erectile']) {
      expect(encounters.text).not.toContain(leak);
      expect(claims.text).not.toContain(leak);
    }

    // Part 2: released to dr-reyes for treatment, with the refrain label and the notice.
    const treating = await run(find('TREAT', `/Condition/${C.part2.condition}`));
    expect(treating.status).toBe(200);
    const sud = JSON.parse(treating.text) as Condition;
    expect(sud.id).toBe(C.part2.condition);
    expect(treating.text).toContain(DEMO.notes.sud);
    expect(sud.meta?.security).toContainEqual(expect.objectContaining({ system: REFRAIN_SYSTEM, code: REFRAIN_CODE }));
    const notice = sud.meta?.extension?.find((e) => e.url === NOTICE_EXTENSION);
    expect(notice?.valueString).toContain('42 CFR part 2');

    // ... and to nobody the consent does not name: the coder (Paula is in its work queue) gets a missing record.
    const coding = find('HOPERAT', `/Condition/${C.part2.condition}`);
    const refused = await run(coding);
    const missing = await run({ ...coding, url: coding.url.replace(C.part2.condition, 'cond-does-not-exist') });
    expect(refused.status).toBe(404);
    expect(refused.text).toBe(missing.text);
    for (const leak of [DEMO.notes.sud, 'Opioid', 'F11.20']) expect(refused.text).not.toContain(leak);

    // Edith's consent ended in 2023: her conditions as usual.
    const elder = await run(find('TREAT', `/Condition?patient=${DEMO.patients.elder}`));
    expect(elder.status).toBe(200);
    expect(resources(elder.text).map((r) => r.id)).toContain(DEMO.elderAgeCondition);

    // The audit records name the consents that withheld and the one whose permit released.
    const records = new Map<string, ChainedRecord>();
    for await (const item of openAuditSource({ sink: 'file', path: join(dataDir, 'audit'), failOpen: false, rotateBytes: 0, groupCommitMs: 0 })) {
      if ('record' in item) records.set(item.record.id, item.record as ChainedRecord);
    }
    expect(records.get(research.id)?.consent?.restricted).toEqual([`Consent/${C.researchOptOut.id}`]);
    expect(records.get(encounters.id)?.consent?.restricted).toEqual([`Consent/${PR.id}`]);
    expect(records.get(refused.id)?.consent?.restricted).toEqual([`Consent/${C.part2.id}`]);
    expect(records.get(treating.id)?.consent).toMatchObject({ permitted: [`Consent/${C.part2.id}`], part2: 1, withheld: 0 });
    expect(records.get(elder.id)?.consent).toBeUndefined();
  });

  it("prints an explain --patient command that shows Paula's consent as the gateway reads it", async () => {
    const line = /^((?:PHI_GATEWAY_\w+=\S+ )+)npx phi-gateway (explain .*)$/m.exec(output);
    expect(line, output).not.toBeNull();
    const unquote = (w: string) => w.replace(/^'(.*)'$/, '$1');
    const env = Object.fromEntries([...line![1].matchAll(/(\w+)=(\S+) /g)].map((m) => [m[1], unquote(m[2])]));
    expect(env.PHI_GATEWAY_AUDIT).toBe(`file:${join(dataDir, 'audit')}`);
    const args = (line![2].match(/'[^']*'|\S+/g) ?? []).map(unquote);
    expect(args).toEqual(expect.arrayContaining(['--patient', DEMO.patients.paula]));
    const r = await runCli(args, env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`Consent/${DEMO.consents.part2.id}`);
    expect(r.stdout).toContain(DEMO.consents.part2.recipient);
    expect(r.stdout).toContain('SUD');
    // Identifiers and codes only: nothing of the patient's record.
    for (const leak of [DEMO.names.paula, DEMO.ssn.paula, DEMO.notes.sud]) expect(r.stdout).not.toContain(leak);
  });
});
