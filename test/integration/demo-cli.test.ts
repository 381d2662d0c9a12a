/**
 * `npm start` is the first thing anyone tries: run the built `phi-gateway demo` as a process, take the
 * curl commands it prints, and run each one (URL and headers as printed, tokens from the printed
 * exports). Each must answer as its comment says: the status it names (403, 404), else 200.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { OperationOutcome } from 'fhir/r4.js';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { ERROR_SYSTEM } from '../../src/errors.js';
import { freePort } from '../helpers/gateway.js';

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
});
