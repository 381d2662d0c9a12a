/**
 * Narrative and summaries (BYPASSES 13, list after 15): `text.div` repeats what structured fields
 * held, so any resource that lost elements loses its narrative and is marked REDACTED;
 * `_summary=text` is refused where it would return that narrative; `_elements` and other
 * `_summary` modes never replace redaction.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO } from '../../src/demo/data.js';
import { pseudonymize } from '../../src/redact/pseudonym.js';
import { type Stack, startStack } from '../helpers/gateway.js';
import { expectAbsent, expectError, receive } from './support.js';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.close();
});

const billing = { role: 'billing', purpose: 'HPAYMT' } as const;
const alice = `/Patient/${DEMO.patients.alice}`;

describe('narrative never repeats redacted values', () => {
  it.each([
    ['billing', billing, [DEMO.ssn.alice, DEMO.phones.alice, DEMO.emails.alice]],
    ['coder', { role: 'coder', purpose: 'HPAYMT' }, [DEMO.ssn.alice, DEMO.phones.alice, DEMO.names.alice, DEMO.addresses.aliceLine]],
    ['researcher', { role: 'researcher', purpose: 'HRESCH' }, [DEMO.ssn.alice, DEMO.mrn.alice, DEMO.names.alice, DEMO.addresses.aliceLine, DEMO.birthDates.alice, DEMO.patients.alice]],
    ['front-desk', { role: 'front-desk', purpose: 'HOPERAT' }, [DEMO.ssn.alice]],
  ] as const)('%s', async (_n, who, secrets) => {
    // A de-identified caller reads by pseudonym, and may not name removed elements in _elements.
    const deid = who.role === 'researcher';
    const path = deid ? `/Patient/${pseudonymize(new TextEncoder().encode(stack.config.pseudonymKey!), 'Patient', DEMO.patients.alice)}` : alice;
    if (deid) expectError(await receive(await stack.get(`${path}?_elements=text,telecom,identifier`, who)), 403, 'search-param-denied');
    for (const q of ['', '?_summary=true', '?_summary=data', ...(deid ? [] : ['?_elements=text,telecom,identifier']), '?_elements=id']) {
      const r = await receive(await stack.get(`${path}${q}`, who));
      expect(r.status, q).toBe(200);
      expectAbsent(r, [...secrets, '<div']);
      const body = r.json as { text?: unknown; meta?: { security?: Array<{ code?: string }> } };
      expect(body.text).toBeUndefined();
      expect(body.meta?.security?.some((c) => c.code === 'REDACTED')).toBe(true);
    }
  });

  it('_summary=text is refused for a redacting role', async () => {
    const r = await receive(await stack.get(`${alice}?_summary=text`, billing));
    expectError(r, 403, 'search-param-denied');
  });

  it('a searchset keeps no narrative of any entry for a redacting role', async () => {
    const r = await receive(await stack.get('/Patient?_summary=true', billing));
    expect(r.status).toBe(200);
    expect(r.text).not.toContain('<div');
    expect(r.text).not.toMatch(/\d{3}-\d{2}-\d{4}/); // no SSN-shaped value anywhere
  });

  it('history versions lose their narrative too (the old phone number stays hidden)', async () => {
    const r = await receive(await stack.get(`${alice}/_history`, { role: 'front-desk', purpose: 'HOPERAT' }));
    // front-desk has no history interaction: refused; with history granted, versions are filtered.
    if (r.status === 200) expectAbsent(r, [DEMO.ssn.alice, '<div']);
    else expect(r.status).toBe(403);
  });

  it('the clinician (nothing removed) keeps the narrative: removal is caused by redaction, not blanket', async () => {
    const r = await receive(await stack.get(alice, { role: 'clinician', purpose: 'TREAT' }));
    expect(r.status).toBe(200);
    expect(r.text).toContain('<div');
  });
});
