/**
 * Assertions shared by the security regression suite. Every check works on what the client
 * actually received: status, headers and the raw body text.
 */
import { expect } from 'vitest';
import type { ChainedRecord } from '../../src/audit/record.js';
import { ERROR_SYSTEM, type ErrorCode } from '../../src/errors.js';
import type { Stack } from '../helpers/gateway.js';

export interface Received {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  readonly json: unknown;
  readonly requestId: string;
}

/** Reads the whole answer once. */
export async function receive(res: Response): Promise<Received> {
  const text = await res.text();
  let json: unknown;
  try {
    json = text === '' ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json, requestId: res.headers.get('x-request-id') ?? '' };
}

/** The gateway's error code in an OperationOutcome body, or undefined. */
export function errorCode(json: unknown): string | undefined {
  const oo = json as { resourceType?: string; issue?: Array<{ details?: { coding?: Array<{ system?: string; code?: string }> } }> };
  if (oo?.resourceType !== 'OperationOutcome') return undefined;
  const c = oo.issue?.[0]?.details?.coding?.find((x) => x.system === ERROR_SYSTEM);
  return c?.code;
}

/** A gateway-built error: the status, FHIR JSON, an OperationOutcome with exactly this code. */
export function expectError(r: Received, status: number, code: ErrorCode): void {
  expect({ status: r.status, code: errorCode(r.json) }).toEqual({ status, code });
  expect(r.headers.get('content-type')).toMatch(/^application\/fhir\+json/);
  expect(r.requestId).not.toBe('');
}

/** The gateway's own random request id: a UUID, whose hex digits can spell a short secret by chance. */
const RANDOM_REQUEST_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * None of `secrets` appears in the body or any header value (case-insensitive). A random UUID
 * request id is left out (a 5-digit ZIP turned up in one by chance); any other value is searched.
 */
export function expectAbsent(r: Received, secrets: readonly string[]): void {
  const headers = [...r.headers.entries()].filter(([k, v]) => !(k === 'x-request-id' && RANDOM_REQUEST_ID.test(v)));
  const haystack = `${r.text}\n${headers.map(([k, v]) => `${k}: ${v}`).join('\n')}`.toLowerCase();
  for (const s of secrets) expect(haystack, `leaked ${s}`).not.toContain(s.toLowerCase());
}

/** The audit record of one request (by X-Request-Id), read back from the sink. */
export async function auditFor(stack: Stack, requestId: string): Promise<ChainedRecord> {
  const all = await stack.auditRecords();
  const mine = all.filter((r) => r.id === requestId);
  expect(mine, `exactly one audit record for ${requestId}`).toHaveLength(1);
  return mine[0]!;
}

/** Header pairs except the per-request id (and Date, which ticks): for oracle comparisons. */
export function comparableHeaders(h: Headers): Array<[string, string]> {
  return [...h.entries()].filter(([k]) => k !== 'x-request-id' && k !== 'date').sort(([a], [b]) => a.localeCompare(b));
}

/** `searchset` entries by mode. */
export function entries(json: unknown, mode?: 'match' | 'include' | 'outcome'): Array<{ resource?: { resourceType: string; id?: string } & Record<string, unknown> }> {
  const b = json as { entry?: Array<{ search?: { mode?: string }; resource?: { resourceType: string; id?: string } }> };
  return (b.entry ?? []).filter((e) => mode === undefined || e.search?.mode === mode) as never;
}

/** `Type/id` of every resource in a Bundle (any mode). */
export function refs(json: unknown): string[] {
  return entries(json)
    .map((e) => e.resource)
    .filter((r) => r !== undefined)
    .map((r) => `${r!.resourceType}/${r!.id ?? ''}`);
}
