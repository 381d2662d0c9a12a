/**
 * Issue 3 / SPEC 5: logs carry the request id but never a token or PHI. A workload of allowed,
 * redacted, denied, failed and export requests (plus break-glass) runs through the real stack at
 * the most verbose log level, with PHI and tokens planted everywhere a careless logger would pick
 * them up (paths, query values, bodies, headers); then no captured log line may contain any token,
 * any demo SSN / name / phone / MRN / patient id, or any path or query value of the workload.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { isR4ResourceType } from '../../src/fhir/resource-types.js';
import { pseudonymize } from '../../src/redact/pseudonym.js';
import { type Stack, startStack } from '../helpers/gateway.js';

interface Call {
  readonly role?: string;
  readonly token?: string;
  readonly purpose?: string;
  readonly method?: string;
  /** Relative to the proxy origin (includes /fhir for FHIR calls). */
  readonly path: string;
  readonly body?: string;
  readonly contentType?: string;
  readonly headers?: Record<string, string>;
  /** What kind of answer this call must get, so the workload provably covers each kind. */
  readonly expect: 'allow' | 'deny' | 'error';
}

const P = DEMO.patients;
const BREAK_GLASS_REASON = `Unconscious in ED, chart of ${DEMO.names.vip} needed, MRN ${DEMO.mrn.vip}`;

let stack: Stack;
let origin: string;
const tokens: string[] = [];
const requestIds: string[] = [];
const workload: Call[] = [];

beforeAll(async () => {
  stack = await startStack({ env: { LOG_LEVEL: 'trace' } });
  origin = stack.url.replace(/\/fhir$/, '');
  const tokenOf = async (role: string): Promise<string> => {
    const t = await stack.token(role);
    tokens.push(t);
    return t;
  };
  const clinician = await tokenOf('clinician');
  const billing = await tokenOf('billing');
  const frontDesk = await tokenOf('front-desk');
  const auditor = await tokenOf('auditor');
  const researcher = await tokenOf('researcher');
  // Signed by the real IdP but for another audience: refused, and must not be logged either.
  const wrongAudience = await stack.idp.tokenFor('clinician', { aud: 'someone-else' });
  tokens.push(wrongAudience);

  workload.push(
    // allowed (and redacted)
    { token: clinician, purpose: 'TREAT', path: `/fhir/Patient/${P.alice}`, expect: 'allow' },
    { token: clinician, purpose: 'TREAT', path: `/fhir/Observation?patient=${P.alice}`, expect: 'allow' },
    { token: billing, purpose: 'HPAYMT', path: `/fhir/Patient/${P.brian}`, expect: 'allow' },
    { token: frontDesk, purpose: 'HOPERAT', path: `/fhir/Patient?family=${DEMO.families[0]}&birthdate=${DEMO.birthDates.alice}`, expect: 'allow' },
    { token: researcher, purpose: 'HRESCH', path: `/fhir/Patient/${pseudonymize(new TextEncoder().encode(stack.config.pseudonymKey!), 'Patient', P.elder)}`, expect: 'allow' },
    { token: researcher, purpose: 'HRESCH', path: `/fhir/Patient/${P.elder}`, expect: 'deny' },
    // denied
    { token: billing, purpose: 'HPAYMT', path: '/fhir/Observation/obs-alice-bp', expect: 'deny' },
    { token: billing, purpose: 'HPAYMT', path: `/fhir/Patient?telecom=${DEMO.phones.alice}`, expect: 'deny' },
    { token: billing, purpose: 'HPAYMT', path: `/fhir/Patient?identifier=${encodeURIComponent(`http://hl7.org/fhir/sid/us-ssn|${DEMO.ssn.david}`)}`, expect: 'deny' },
    { token: clinician, purpose: 'TREAT', path: `/fhir/Patient/${P.vip}`, expect: 'deny' },
    { token: clinician, purpose: 'HPAYMT', path: `/fhir/Patient/${P.henry}`, expect: 'deny' },
    { token: wrongAudience, purpose: 'TREAT', path: `/fhir/Patient/${P.paula}`, expect: 'deny' },
    { token: 'not.a.jwt', purpose: 'TREAT', path: `/fhir/Patient/${P.grace}`, expect: 'deny' },
    { token: clinician, path: `/fhir/Patient/${P.grace}`, expect: 'deny' },
    // errors: unknown ids, malformed bodies, unknown routes, a token smuggled into the query
    { token: clinician, purpose: 'TREAT', path: '/fhir/Patient/pat-nobody-4242', expect: 'deny' },
    {
      token: clinician,
      purpose: 'TREAT',
      method: 'POST',
      path: '/fhir/Patient',
      contentType: 'application/fhir+json',
      body: `{"resourceType":"Patient","name":[{"family":"${DEMO.families[4]}"}],"identifier":[{"value":"${DEMO.ssn.david}"}],`,
      expect: 'deny',
    },
    { token: clinician, purpose: 'TREAT', path: `/fhir/Patient/${P.alice}?access_token=${clinician}`, expect: 'deny' },
    { token: clinician, purpose: 'TREAT', path: `/not-fhir/${P.david}?ssn=${DEMO.ssn.david}`, expect: 'deny' },
    { token: clinician, purpose: 'TREAT', path: `/fhir/Patient/${P.alice}/$graphql?query=${DEMO.mrn.alice}`, expect: 'deny' },
    // break-glass: the reason text holds a name and an MRN
    {
      token: clinician,
      purpose: 'BTG',
      path: `/fhir/Patient/${P.vip}`,
      headers: { 'x-break-glass-reason': BREAK_GLASS_REASON },
      expect: 'allow',
    },
    // exports (their bodies are full of ids), allowed and refused
    { token: auditor, purpose: 'HCOMPL', path: `/audit/export?format=ndjson&patient=${P.alice}`, expect: 'allow' },
    { token: auditor, purpose: 'HCOMPL', path: `/audit/export?format=fhir&actor=dr-${DEMO.families[1].toLowerCase()}-7731`, expect: 'allow' },
    { token: auditor, purpose: 'HCOMPL', path: `/audit/export?format=csv&patient=${P.brian}&bogus=${DEMO.ssn.brian}`, expect: 'deny' },
    { token: billing, purpose: 'HPAYMT', path: `/audit/export?format=csv&patient=${P.brian}`, expect: 'deny' },
  );

  for (const c of workload) {
    const headers: Record<string, string> = { ...c.headers };
    if (c.token) headers.authorization = `Bearer ${c.token}`;
    if (c.purpose) headers['x-purpose-of-use'] = c.purpose;
    if (c.contentType) headers['content-type'] = c.contentType;
    const res = await fetch(`${origin}${c.path}`, { method: c.method ?? 'GET', headers, body: c.body });
    await res.arrayBuffer();
    const ok = res.status >= 200 && res.status < 300;
    expect(ok, `${c.method ?? 'GET'} ${c.path} -> ${res.status}`).toBe(c.expect === 'allow');
    requestIds.push(res.headers.get('x-request-id') ?? '');
  }
  // Let the last log lines (written after the responses) land.
  await new Promise((r) => setImmediate(r));
});

afterAll(async () => {
  await stack?.close();
});

/** Every id and value a request carried in its path or query (resource type names excluded). */
function pathAndQueryValues(path: string): string[] {
  const u = new URL(path, 'http://x');
  const out = [decodeURIComponent(u.pathname) + u.search];
  for (const seg of u.pathname.split('/')) {
    const s = decodeURIComponent(seg);
    if (s && !isR4ResourceType(s) && !['fhir', 'audit', 'export', 'not-fhir'].includes(s) && !s.startsWith('$')) out.push(s);
  }
  for (const [, v] of u.searchParams) if (!['ndjson', 'csv', 'fhir', 'json'].includes(v)) out.push(v);
  return out;
}

describe('logs', () => {
  it('carry the request id of every request of the workload', () => {
    const text = stack.logs.join('');
    expect(stack.logs.length).toBeGreaterThan(workload.length);
    expect(requestIds.filter((id) => id === '')).toEqual([]);
    const unlogged = requestIds.filter((id) => !text.includes(id));
    expect(unlogged).toEqual([]);
  });

  it('never hold a token, a demo identifier, or any path or query value of the workload', () => {
    expect(leaksIn(stack.logs)).toEqual([]);
  });

  it('break-glass warn lines name the session, never the patient', () => {
    const bg = stack.logs.filter((l) => l.includes('BREAK-GLASS'));
    expect(bg.length).toBeGreaterThan(0);
    expect(bg.every((l) => l.includes('"session"'))).toBe(true);
    expect(leaksIn(bg)).toEqual([]);
  });
});

function leaksIn(lines: readonly string[]): string[] {
  const secrets = new Map<string, string>();
  for (const t of tokens) {
    secrets.set(t, 'a token');
    secrets.set(t.split('.')[2], 'a token signature');
  }
  const plant = (what: string, values: Iterable<string>): void => {
    for (const v of values) secrets.set(v, what);
  };
  plant('an SSN', Object.values(DEMO.ssn));
  plant('a patient name', [...Object.values(DEMO.names), ...DEMO.families, ...Object.values(DEMO.relatives)]);
  plant('a phone number', Object.values(DEMO.phones));
  plant('an MRN', Object.values(DEMO.mrn));
  plant('a patient id', Object.values(DEMO.patients));
  plant('an email', Object.values(DEMO.emails));
  plant('the break-glass reason', [BREAK_GLASS_REASON]);
  for (const c of workload) plant(`a path/query value of ${c.path.slice(0, 40)}`, pathAndQueryValues(c.path));
  expect(secrets.size).toBeGreaterThan(60);
  const leaks: string[] = [];
  for (const line of lines) {
    for (const [s, what] of secrets) if (line.includes(s)) leaks.push(`${what} (${JSON.stringify(s.slice(0, 24))}) in: ${line.slice(0, 300)}`);
  }
  return leaks;
}
