/** Drives one target with autocannon and checks a single request first (a broken target is reported, not timed). */
import autocannon from 'autocannon';
import { Pool } from 'undici';
import { fromAutocannon, percentile } from './report.mjs';

/**
 * `amount` (total requests) replaces `duration` when set; `overallRate` caps requests per second
 * over all connections (fixed-rate latency); `timeout` is per request, in seconds.
 */
export async function runLoad(url, headers, { connections, duration, amount, overallRate, timeout = 30 }) {
  const r = await autocannon({
    url,
    headers,
    connections,
    pipelining: 1,
    timeout,
    ...(amount ? { amount } : { duration }),
    ...(overallRate ? { overallRate } : {}),
  });
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

/**
 * Open-loop load at a constant rate: request i is due at start + i/rate whatever happened to the
 * earlier ones, and its latency counts from when it was due (so a stalled server is not excused
 * by the generator waiting for it). autocannon's rate limit sends each second's quota in a burst,
 * which measures burst queueing rather than the latency a proxy adds.
 */
export async function runPaced(url, headers, { rate, duration, connections }) {
  const u = new URL(url);
  const pool = new Pool(u.origin, { connections });
  const path = u.pathname + u.search;
  const latencies = [];
  let ok = 0;
  let non2xx = 0;
  let errors = 0;
  const total = Math.round(rate * duration);
  const start = performance.now();
  const inflight = [];
  const fire = (due) =>
    pool
      .request({ method: 'GET', path, headers })
      .then(async (res) => {
        await res.body.dump({ limit: Number.POSITIVE_INFINITY }).catch(() => res.body.arrayBuffer());
        latencies.push(performance.now() - due);
        if (res.statusCode >= 200 && res.statusCode < 300) ok++;
        else non2xx++;
      })
      .catch(() => {
        errors++;
      });
  let sent = 0;
  await new Promise((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (sent < total && start + (sent * 1000) / rate <= now) {
        inflight.push(fire(start + (sent * 1000) / rate));
        sent++;
      }
      if (sent >= total) resolve();
      else setTimeout(tick, Math.max(0, start + (sent * 1000) / rate - performance.now()));
    };
    tick();
  });
  await Promise.all(inflight);
  const seconds = (performance.now() - start) / 1000;
  await pool.close();
  const sorted = latencies.sort((a, b) => a - b);
  return { ok, seconds, non2xx, errors, p50: percentile(sorted, 50), p99: percentile(sorted, 99), latencies: sorted };
}
