/** Drives one target with autocannon and checks a single request first (a broken target is reported, not timed). */
import autocannon from 'autocannon';
import { fromAutocannon } from './report.mjs';

/** `amount` (total requests) replaces `duration` when set; `timeout` is per request, in seconds. */
export async function runLoad(url, headers, { connections, duration, amount, timeout = 30 }) {
  const r = await autocannon({ url, headers, connections, pipelining: 1, timeout, ...(amount ? { amount } : { duration }) });
  return fromAutocannon(r);
}

/**
 * One request. Resolves `{ status, code, bytes, text }` where `code` is the gateway's stable error
 * code from an OperationOutcome (if any).
 */
export async function probe(url, headers) {
  const res = await fetch(url, { headers });
  const text = await res.text();
  let code;
  try {
    const body = JSON.parse(text);
    if (body?.resourceType === 'OperationOutcome') code = body.issue?.[0]?.details?.coding?.[0]?.code ?? body.issue?.[0]?.code;
  } catch {
    code = 'non-json';
  }
  return { status: res.status, code, bytes: Buffer.byteLength(text), text };
}
