#!/usr/bin/env node
/**
 * The disk's own floor under the audit trail: latency of one durable 900-byte append (a file
 * opened O_APPEND | O_DSYNC, as the file sink opens it), written every GAP ms like records at a
 * steady rate, or back to back with GAP 0.
 *
 * Usage: node bench/dsync-probe.mjs [GAP_MS (2.5)] [DIR (the system temp directory)]
 */
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const gap = Number(process.argv[2] ?? 2.5);
const dir = mkdtempSync(join(process.argv[3] ?? tmpdir(), 'phi-dsync-'));
const record = Buffer.alloc(900, 0x61);
record[record.length - 1] = 0x0a;
const fd = openSync(join(dir, 'probe.ndjson'), constants.O_WRONLY | constants.O_CREAT | constants.O_APPEND | (constants.O_DSYNC ?? 0), 0o600);
const times = [];
try {
  for (let i = 0; i < 1500; i++) {
    if (gap > 0) await new Promise((r) => setTimeout(r, gap));
    const t0 = performance.now();
    writeSync(fd, record);
    times.push(performance.now() - t0);
  }
} finally {
  closeSync(fd);
  rmSync(dir, { recursive: true, force: true });
}
times.sort((a, b) => a - b);
const q = (p) => times[Math.min(times.length - 1, Math.floor(p * times.length))].toFixed(3);
console.log(`O_DSYNC append of ${record.length} bytes every ${gap} ms, ${times.length} writes: p50 ${q(0.5)} p90 ${q(0.9)} p99 ${q(0.99)} p99.9 ${q(0.999)} max ${times.at(-1).toFixed(3)} ms`);
