/** `audit.checkpoint` in gateway.yaml, its environment override, and what the sink factory makes of it. */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NO_CHECKPOINT_KEY_WARNING } from '../../../src/audit/checkpoint.js';
import { createAuditSink } from '../../../src/audit/index.js';
import { readGatewayConfig } from '../../../src/config/gateway.js';
import { sampleRecord } from './fixtures.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'phi-cp-config-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const BASE = `upstream:
  url: http://127.0.0.1:8103/fhir
auth:
  issuer: https://idp.example.org
  audience: phi-gateway
  jwksUri: https://idp.example.org/jwks
`;

function config(audit: string): string {
  const file = join(dir, 'gateway.yaml');
  writeFileSync(file, `${BASE}${audit}`);
  return file;
}
function key(name: string, type: 'ed25519' | 'ec' = 'ed25519'): string {
  const pair = type === 'ed25519' ? generateKeyPairSync('ed25519') : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const path = join(dir, name);
  writeFileSync(path, pair.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  return path;
}

describe('audit.checkpoint', () => {
  it('absent: no checkpoint config', () => {
    const r = readGatewayConfig(config(''), {});
    expect(r.problems).toEqual([]);
    expect(r.config!.audit.checkpoint).toBeUndefined();
  });

  it('keyFile resolves against the config file; defaults 1000 records / 60 s', () => {
    key('signing.pem');
    const r = readGatewayConfig(config('audit:\n  sink: file\n  checkpoint:\n    keyFile: signing.pem\n'), {});
    expect(r.problems).toEqual([]);
    expect(r.config!.audit.checkpoint).toEqual({ keyFile: join(dir, 'signing.pem'), everyRecords: 1000, everySeconds: 60 });
    const redis = readGatewayConfig(
      config('audit:\n  sink: redis\n  url: redis://127.0.0.1:6379\n  checkpoint:\n    keyFile: signing.pem\n    everyRecords: 50\n    everySeconds: 5\n'),
      {},
    );
    expect(redis.problems).toEqual([]);
    expect(redis.config!.audit).toMatchObject({ sink: 'redis', checkpoint: { everyRecords: 50, everySeconds: 5 } });
  });

  it('PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE sets or overrides the key (a path)', () => {
    const envKey = key('env.pem');
    const r = readGatewayConfig(config(''), { PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE: envKey });
    expect(r.config!.audit.checkpoint).toEqual({ keyFile: envKey, everyRecords: 1000, everySeconds: 60 });
    key('file.pem');
    const both = readGatewayConfig(config('audit:\n  sink: file\n  checkpoint:\n    keyFile: file.pem\n    everySeconds: 9\n'), { PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE: envKey });
    expect(both.config!.audit.checkpoint).toEqual({ keyFile: envKey, everyRecords: 1000, everySeconds: 9 });
  });

  it('a missing, non-PEM or non-Ed25519 key, a section without keyFile, or an unknown field: located problems', () => {
    const missing = readGatewayConfig(config('audit:\n  sink: file\n  checkpoint:\n    keyFile: nope.pem\n'), {});
    expect(missing.problems).toEqual([expect.stringMatching(/gateway\.yaml:\d+:\d+ audit\.checkpoint\.keyFile: cannot read the audit signing key \(ENOENT\)$/)]);
    writeFileSync(join(dir, 'junk.pem'), 'not a key\n');
    const junk = readGatewayConfig(config('audit:\n  sink: file\n  checkpoint:\n    keyFile: junk.pem\n'), {});
    expect(junk.problems).toEqual([expect.stringMatching(/audit\.checkpoint\.keyFile: audit signing key: not a PEM private key/)]);
    // The problem never shows key material.
    expect(junk.problems[0]).not.toContain('not a key');
    key('ec.pem', 'ec');
    const ec = readGatewayConfig(config('audit:\n  sink: file\n  checkpoint:\n    keyFile: ec.pem\n'), {});
    expect(ec.problems).toEqual([expect.stringMatching(/must be Ed25519/)]);
    const noKey = readGatewayConfig(config('audit:\n  sink: file\n  checkpoint:\n    everyRecords: 10\n'), {});
    expect(noKey.problems).toEqual([expect.stringMatching(/audit\.checkpoint: signed checkpoints need 'keyFile'/)]);
    const env = readGatewayConfig(config(''), { PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE: join(dir, 'nope.pem') });
    expect(env.problems).toEqual(['PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE: cannot read the audit signing key (ENOENT)']);
    key('ok.pem');
    const typo = readGatewayConfig(config('audit:\n  sink: file\n  checkpoint:\n    keyFile: ok.pem\n    everyRecord: 10\n'), {});
    expect(typo.problems.join('\n')).toMatch(/everyRecord/);
    const zero = readGatewayConfig(config('audit:\n  sink: file\n  checkpoint:\n    keyFile: ok.pem\n    everySeconds: 0\n'), {});
    expect(zero.problems).toHaveLength(1);
  });
});

describe('createAuditSink', () => {
  it('signs with the configured key; without one it warns when asked to (serve)', async () => {
    const keyFile = key('k.pem');
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    const path = join(dir, 'trail');
    const signed = await createAuditSink(
      { sink: 'file', path, failOpen: false, rotateBytes: 1 << 20, groupCommitMs: 0, checkpoint: { keyFile, everyRecords: 1, everySeconds: 60 } },
      { logger, warnUnsigned: true },
    );
    await signed.write(sampleRecord(1));
    await signed.close();
    expect(lines.join('')).not.toContain(NO_CHECKPOINT_KEY_WARNING);
    const [file] = (await import('node:fs')).readdirSync(path);
    expect(readFileSync(join(path, file), 'utf8')).toContain('"kind":"writer-checkpoint"');

    const plain = await createAuditSink({ sink: 'file', path: join(dir, 'plain'), failOpen: false, rotateBytes: 1 << 20, groupCommitMs: 0 }, { logger, warnUnsigned: true });
    await plain.close();
    const warned = lines.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.msg === NO_CHECKPOINT_KEY_WARNING);
    expect(warned).toEqual([expect.objectContaining({ level: 40 })]);
  });
});
