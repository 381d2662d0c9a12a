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
  url: string;
  headers: Record<string, string>;
}

/** Parses the printed tour: `export X_TOKEN=...` lines and `curl -s 'URL' -H "K: V" ...` lines. */
function parseTour(text: string): Curl[] {
  const tokens = new Map<string, string>();
  for (const m of text.matchAll(/^export (\w+)=(\S+)$/gm)) tokens.set(m[1], m[2]);
  const out: Curl[] = [];
  let comment = '';
  for (const line of text.split('\n')) {
    if (line.startsWith('#   ') || line.startsWith('# break')) comment = line;
    if (!line.startsWith('curl ')) continue;
    const url = /curl -s '([^']+)'/.exec(line)?.[1];
    if (!url) throw new Error(`unparsable curl line: ${line}`);
    const headers: Record<string, string> = {};
    for (const h of line.matchAll(/-H (?:"([^"]+)"|'([^']+)')/g)) {
      const raw = (h[1] ?? h[2]).replace(/\$(\w+)/g, (_, name: string) => tokens.get(name) ?? `<missing ${name}>`);
      const i = raw.indexOf(':');
      headers[raw.slice(0, i).trim()] = raw.slice(i + 1).trim();
    }
    out.push({ comment, url, headers });
  }
  return out;
}

describe('npm start (phi-gateway demo)', () => {
  it('prints a token for each demo role and curl commands that work as described', async () => {
    const tour = parseTour(output);
    expect(tour.length).toBeGreaterThanOrEqual(14);
    for (const c of tour) {
      const res = await fetch(c.url, { headers: c.headers });
      const body = await res.text();
      const expected = c.comment.includes('403') ? 403 : c.comment.includes('404') ? 404 : 200;
      expect(res.status, `${c.comment}\n${c.url}\n${body.slice(0, 300)}`).toBe(expected);
      expect(res.headers.get('x-request-id')).toBeTruthy();
    }
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
