/**
 * A whole stack for integration tests: the real FHIR upstream (medplum, seeded with the demo data),
 * a real OIDC provider issuing client-credentials access tokens, and the gateway in front with the
 * shipped example policy and a file audit sink in a temp dir. Tokens are verified through the IdP's
 * JWKS URI, exactly as in production. The shipped policy's care-relationship requirements and its
 * patient consent enforcement are left out unless a test asks for them (`relationships: true`,
 * `consent: true`): see StackOptions.relationships and StackOptions.consent.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { openAuditSource } from '../../src/audit/index.js';
import type { AuditSink, ChainedRecord } from '../../src/audit/record.js';
import { loadGatewayConfig } from '../../src/config/load.js';
import type { GatewayConfig } from '../../src/config/types.js';
import type { BreakGlassGate } from '../../src/proxy/pipeline.js';
import { createLogger } from '../../src/server/logger.js';
import { type RunningGateway, startGateway } from '../../src/server/runtime.js';
import { type Idp, startIdp } from './idp.js';
import { startFhirUpstream } from '../../src/demo/upstream.js';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface Stack {
  readonly gateway: RunningGateway;
  readonly config: GatewayConfig;
  /** Gateway FHIR base, e.g. http://127.0.0.1:41234/fhir */
  readonly url: string;
  readonly upstreamUrl: string;
  readonly idp: Idp;
  readonly auditDir: string;
  /** Everything the gateway logged (JSON lines), for "logs never hold PHI" assertions. */
  readonly logs: string[];
  /** A token from the real IdP for a demo role. */
  token(role: string, extra?: Record<string, unknown>): Promise<string>;
  /** fetch against the gateway with a token for `role` and the purpose header. */
  get(path: string, opts: RequestOpts): Promise<Response>;
  request(path: string, opts: RequestOpts & { method: string; body?: string; contentType?: string }): Promise<Response>;
  auditRecords(): Promise<ChainedRecord[]>;
  close(): Promise<void>;
}

export interface RequestOpts {
  role?: string;
  token?: string;
  purpose?: string | undefined;
  headers?: Record<string, string>;
  tokenClaims?: Record<string, unknown>;
}

export interface StackOptions {
  audit?: AuditSink;
  breakGlass?: BreakGlassGate;
  env?: Record<string, string>;
  now?: () => Date;
  /** Replace the config after loading (e.g. fail-open, limits). */
  configure?: (c: GatewayConfig) => GatewayConfig;
  /** An upstream URL to use instead of the seeded medplum server. */
  upstreamUrl?: string;
  /**
   * Changes to the shipped policy for this stack (roles, data sets): applied to a parsed copy of
   * config/policy.yaml, written to a temp file the stack removes when it closes.
   */
  policy?: (policy: ShippedPolicy) => void;
  /**
   * Keep the shipped policy's care-relationship requirements (`dataSets.*.relationship`: clinical
   * for TREAT, coding for HOPERAT). By default the stack's copy of the policy has none, so tests of
   * other features see each role as it was: their tokens name no `fhirUser`, and a requirement
   * would refuse every patient. Relationship tests opt in with `true` (and tokens carrying
   * `fhirUser`, e.g. DEMO.relationships.fhirUsers). The `relationships` section itself is kept
   * either way. Not applied when `env.PHI_GATEWAY_POLICY` names a policy file of the test's own.
   */
  relationships?: boolean;
  /**
   * Keep the shipped policy's `consent` section (patients' Consent directives enforced on every
   * answer). By default the stack's copy of the policy has none, so tests of other features see
   * the demo patients' records as they were: the demo data holds consents (DEMO.consents) that
   * withhold some of them from the researcher, billing and the coder, and Part 2 data from every
   * caller they do not name. Consent tests opt in with `true`. Not applied when
   * `env.PHI_GATEWAY_POLICY` names a policy file of the test's own.
   */
  consent?: boolean;
}

/** config/policy.yaml as parsed, for StackOptions.policy edits. */
export interface ShippedPolicy {
  roles: Record<string, unknown>;
  dataSets: Record<string, { rules: Array<{ types: string[]; interactions?: string[] } & Record<string, unknown>> } & Record<string, unknown>>;
  [key: string]: unknown;
}

/** A policy file for a test gateway, and how to remove it (a no-op for the shipped file itself). */
export interface TestPolicyFile {
  readonly file: string;
  remove(): void;
}

/**
 * The shipped policy as a test gateway runs it: config/policy.yaml itself when nothing changes
 * (`relationships: true`, `consent: true`, no edit), else a parsed copy without the
 * care-relationship requirements (unless `relationships`), without the `consent` section and the
 * data sets' consent requirements (unless `consent`), and with `edit` applied, in a temp dir that
 * `remove()` deletes.
 */
export function testPolicyFile(
  opts: { relationships?: boolean; consent?: boolean; edit?: (policy: ShippedPolicy) => void } = {},
): TestPolicyFile {
  const shipped = new URL('../../config/policy.yaml', import.meta.url);
  if (opts.relationships && opts.consent && !opts.edit) return { file: shipped.pathname, remove: () => {} };
  const policy = parseYaml(readFileSync(shipped, 'utf8')) as ShippedPolicy;
  if (!opts.relationships) {
    for (const ds of Object.values(policy.dataSets)) delete ds.relationship;
  }
  if (!opts.consent) {
    // A data set's authorization requirement needs the section: both go.
    delete policy.consent;
    for (const ds of Object.values(policy.dataSets)) delete ds.consent;
  }
  opts.edit?.(policy);
  const dir = mkdtempSync(join(tmpdir(), 'phi-policy-'));
  writeFileSync(join(dir, 'policy.yaml'), stringifyYaml(policy));
  return { file: join(dir, 'policy.yaml'), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  let policyFile: TestPolicyFile | undefined;
  if (opts.env?.PHI_GATEWAY_POLICY === undefined) {
    policyFile = testPolicyFile({ relationships: opts.relationships, consent: opts.consent, edit: opts.policy });
    opts = { ...opts, env: { PHI_GATEWAY_POLICY: policyFile.file, ...opts.env } };
  }
  const upstream = opts.upstreamUrl ? undefined : await startFhirUpstream({ seed: true });
  const upstreamUrl = opts.upstreamUrl ?? upstream!.url;
  const idp = await startIdp();
  const auditDir = mkdtempSync(join(tmpdir(), 'phi-audit-'));
  const port = await freePort();
  // Two ports asked of the OS one after the other can be the same one (each is closed again at once).
  let adminPort = await freePort();
  while (adminPort === port) adminPort = await freePort();
  const env = {
    PHI_GATEWAY_LISTEN: `127.0.0.1:${port}`,
    PHI_GATEWAY_ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
    PHI_GATEWAY_UPSTREAM: upstreamUrl,
    PHI_GATEWAY_ISSUER: idp.issuer,
    PHI_GATEWAY_AUDIENCE: idp.audience,
    PHI_GATEWAY_JWKS_URI: idp.jwksUri,
    PHI_GATEWAY_AUDIT: `file:${auditDir}`,
    PHI_GATEWAY_PSEUDONYM_KEY: 'integration-test-pseudonym-key-0123456789abcdef',
    LOG_LEVEL: 'info',
    ...opts.env,
  };
  let config = loadGatewayConfig(new URL('../../config/gateway.yaml', import.meta.url).pathname, env);
  if (opts.configure) config = opts.configure(config);
  const logs: string[] = [];
  const logger = createLogger(config.logLevel, { write: (line: string) => void logs.push(line) });
  const gateway = await startGateway(config, { logger, audit: opts.audit, breakGlass: opts.breakGlass, now: opts.now });
  const url = gateway.url;

  async function tokenFor(o: RequestOpts): Promise<string | undefined> {
    if (o.token !== undefined) return o.token;
    if (!o.role) return undefined;
    return idp.tokenFor(o.role, o.tokenClaims);
  }

  async function request(path: string, o: RequestOpts & { method: string; body?: string; contentType?: string }): Promise<Response> {
    const headers: Record<string, string> = { ...o.headers };
    const token = await tokenFor(o);
    if (token) headers.authorization = `Bearer ${token}`;
    if (o.purpose !== undefined) headers['x-purpose-of-use'] = o.purpose;
    if (o.contentType) headers['content-type'] = o.contentType;
    return fetch(`${url}${path}`, { method: o.method, headers, body: o.body });
  }

  return {
    gateway,
    config,
    url,
    upstreamUrl,
    idp,
    auditDir,
    logs,
    token: (role, extra) => idp.tokenFor(role, extra),
    get: (path, o) => request(path, { ...o, method: 'GET' }),
    request,
    async auditRecords() {
      const out: ChainedRecord[] = [];
      for await (const item of openAuditSource({ sink: 'file', path: auditDir, failOpen: false, rotateBytes: 0, groupCommitMs: 0 })) {
        if ('record' in item) out.push(item.record as ChainedRecord);
      }
      return out;
    },
    async close() {
      await gateway.close();
      await idp.close();
      await upstream?.close();
      rmSync(auditDir, { recursive: true, force: true });
      policyFile?.remove();
    },
  };
}
