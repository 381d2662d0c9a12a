/**
 * config/gateway.yaml: read, validate (schema + semantics), apply defaults and the environment
 * overrides of SPEC 2, freeze. Every problem is reported, located: `file:line:col message` for the
 * file, `VARIABLE: message` for the environment.
 */
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import {
  formatHostPort,
  isRedisUrl,
  MIN_PSEUDONYM_KEY_LENGTH,
  nonEmpty,
  parseAuditTarget,
  parseHostPort,
  parseHttpUrl,
  withSecretFiles,
} from './env.js';
import { DEFAULT_CHECKPOINT_RECORDS, DEFAULT_CHECKPOINT_SECONDS, loadSigningKey, NO_CHECKPOINT_KEY_WARNING } from '../audit/checkpoint.js';
import { DEFAULT_REDIS_COMMAND_TIMEOUT_MS } from '../audit/redis-options.js';
import { ConfigError, deepFreeze } from './errors.js';
import { ASYMMETRIC_ALGORITHMS, gatewaySchema, LOG_LEVELS, validateSchema } from './schema.js';
import type { FhirTargetConfig, SiemConfig, SyslogTargetConfig, TargetConfig } from '../siem/types.js';
import type { AuditCheckpointConfig, AuditConfig, CorsConfig, GatewayConfig, HostPort, SmartConfig, UpstreamConfig } from './types.js';
import { formatPath, formatProblem, type ParsedYaml, type PathSegment, parseYaml, sortProblems } from './yaml.js';

export const DEFAULTS = Object.freeze({
  listen: '127.0.0.1:8080',
  adminListen: '127.0.0.1:9090',
  policy: './policy.yaml',
  algorithms: ['RS256', 'PS256', 'ES256', 'EdDSA'] as readonly string[],
  rolesClaim: 'roles',
  clockToleranceSec: 30,
  tokenCacheSize: 10_000,
  requestBodyBytes: 1024 * 1024,
  pagingDefaultCount: 20,
  pagingMaxCount: 200,
  pagingMaxUpstreamPages: 10,
  pagingMinUpstreamCount: 50,
  pagingTokenTtlSeconds: 3600,
  responseBodyBytes: 16 * 1024 * 1024,
  decompressedBytes: 32 * 1024 * 1024,
  auditPath: './data/audit',
  auditRotateBytes: 256 * 1024 * 1024,
  auditGroupCommitMs: 0,
  auditStream: 'phi-gateway:audit',
  connectTimeoutMs: 5_000,
  headersTimeoutMs: 30_000,
  bodyTimeoutMs: 30_000,
  totalTimeoutMs: 60_000,
  connections: 64,
  logLevel: 'info',
  shutdownGraceMs: 10_000,
});

const SMART_ENDPOINTS = [
  'authorizationEndpoint',
  'tokenEndpoint',
  'revocationEndpoint',
  'introspectionEndpoint',
  'managementEndpoint',
  'registrationEndpoint',
] as const;

/** Why `o` is not an origin as a browser sends it, or undefined. */
export function originProblem(o: string): string | undefined {
  if (o === '*' || o === 'null') return `'${o}' is not allowed: list each origin exactly (scheme://host[:port])`;
  let u: URL;
  try {
    u = new URL(o);
  } catch {
    return `'${o}' is not an origin (scheme://host[:port])`;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return `'${o}' must be an http or https origin`;
  if (u.username !== '' || u.password !== '') return 'an origin must not contain credentials';
  if (u.origin !== o) return `'${o}' is not written as browsers send it: use '${u.origin}'`;
  return undefined;
}

/** How a path is shown in problem lines: relative to the working directory when below it. */
export function displayPath(file: string): string {
  const abs = resolve(file);
  const rel = relative(process.cwd(), abs);
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel) ? rel : abs;
}

export interface GatewayLoad {
  readonly config: GatewayConfig | undefined;
  readonly problems: readonly string[];
  /** The policy file this configuration names (even when the rest is invalid), if it can tell. */
  readonly policyFile: string | undefined;
}

/** Loads the gateway file; never throws (for check-config, which reports everything at once). */
export function readGatewayConfig(file: string, processEnv: NodeJS.ProcessEnv): GatewayLoad {
  // PHI_GATEWAY_<SECRET>_FILE read into PHI_GATEWAY_<SECRET>: everything below sees one value.
  const secrets = withSecretFiles(processEnv);
  const r = readGatewayFile(file, secrets.env);
  if (secrets.problems.length === 0) return r;
  return { ...r, config: undefined, problems: [...r.problems, ...secrets.problems] };
}

function readGatewayFile(file: string, env: NodeJS.ProcessEnv): GatewayLoad {
  const shown = displayPath(file);
  const abs = resolve(file);
  const envPolicy = nonEmpty(env.PHI_GATEWAY_POLICY);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (e) {
    return {
      config: undefined,
      problems: [formatProblem(shown, { line: 1, col: 1 }, `cannot read gateway config (${(e as NodeJS.ErrnoException).code ?? 'error'})`)],
      policyFile: envPolicy ? resolve(envPolicy) : undefined,
    };
  }
  const yaml = parseYaml(shown, text);
  if (yaml.problems.length > 0) {
    return { config: undefined, problems: yaml.problems, policyFile: envPolicy ? resolve(envPolicy) : undefined };
  }
  const b = new Builder(yaml, abs, env);
  const config = b.build();
  return { config: b.problems.length === 0 ? config : undefined, problems: sortProblems(b.problems), policyFile: b.policyFile };
}

export function loadGatewayConfig(file: string, env: NodeJS.ProcessEnv): GatewayConfig {
  const r = readGatewayConfig(file, env);
  if (!r.config) throw new ConfigError(r.problems);
  return r.config;
}

type Raw = Record<string, unknown>;

class Builder {
  readonly problems: string[] = [];
  policyFile: string | undefined;
  private readonly data: Raw;
  private readonly dir: string;
  private readonly broken = new Set<string>();

  constructor(
    private readonly yaml: ParsedYaml,
    private readonly absFile: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {
    this.data = (yaml.data ?? {}) as Raw;
    this.dir = dirname(absFile);
  }

  private at(path: readonly PathSegment[], message: string, key = false): void {
    const pos = key ? this.yaml.locateKey(path) : this.yaml.locate(path);
    const where = formatPath(path);
    this.problems.push(formatProblem(this.yaml.file, pos, where === '' ? message : `${where}: ${message}`));
  }

  private envProblem(variable: string, message: string): void {
    this.problems.push(`${variable}: ${message}`);
  }

  private obj(key: string): Raw {
    const v = this.data[key];
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Raw) : {};
  }

  private file(value: string): string {
    return resolve(this.dir, value);
  }

  /** Reads a secret from a file named in the config; the secret itself never appears in messages. */
  private secretFile(path: readonly PathSegment[], value: string): string | undefined {
    try {
      const s = readFileSync(this.file(value), 'utf8').trim();
      if (s === '') this.at(path, 'secret file is empty');
      return s;
    } catch (e) {
      this.at(path, `cannot read secret file (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
      return undefined;
    }
  }

  private mustExist(path: readonly PathSegment[], value: string): string {
    const abs = this.file(value);
    if (!existsSync(abs)) this.at(path, `file not found: ${value}`);
    return abs;
  }

  build(): GatewayConfig | undefined {
    const schemaProblems = validateSchema(gatewaySchema, this.yaml.data ?? {});
    for (const p of schemaProblems) {
      const pos = p.at === 'key' ? this.yaml.locateKey(p.path) : this.yaml.locate(p.path);
      this.problems.push(formatProblem(this.yaml.file, pos, p.message));
    }
    // Semantic checks below assume the shapes the schema guarantees; with shape errors, stop here,
    // but still say which policy file was meant.
    const envPolicy = nonEmpty(this.env.PHI_GATEWAY_POLICY);
    const filePolicy = typeof this.data.policy === 'string' ? this.data.policy : DEFAULTS.policy;
    this.policyFile = envPolicy ? resolve(envPolicy) : resolve(this.dir, filePolicy);
    // Sections with shape errors are skipped; the others are still checked so that one run
    // reports every problem.
    for (const p of schemaProblems) this.broken.add(p.path.length === 0 ? '' : String(p.path[0]));
    if (this.broken.has('')) return undefined;

    const env = this.env;
    const listen = this.broken.has('listen')
      ? undefined
      : this.hostPort(['listen'], (this.data.listen as string) ?? DEFAULTS.listen, 'PHI_GATEWAY_LISTEN');
    const admin = this.broken.has('adminListen')
      ? undefined
      : this.hostPort(['adminListen'], (this.data.adminListen as string) ?? DEFAULTS.adminListen, 'PHI_GATEWAY_ADMIN_LISTEN');
    if (listen && admin && listen.port !== 0 && listen.port === admin.port && listen.host === admin.host) {
      this.at(['adminListen'], 'admin listener must not share the proxy listener');
    }

    let publicBaseUrl: string | undefined;
    if (this.broken.has('publicBaseUrl')) {
      // reported by the schema
    } else if (typeof this.data.publicBaseUrl === 'string') {
      const u = parseHttpUrl(this.data.publicBaseUrl);
      if (u.ok) publicBaseUrl = u.value;
      else this.at(['publicBaseUrl'], u.message);
    } else if (listen) {
      // A wildcard bind address is not somewhere a client can be sent back to.
      const host = listen.host === '0.0.0.0' || listen.host === '::' ? 'localhost' : listen.host;
      const scheme = this.data.tls !== undefined ? 'https' : 'http';
      publicBaseUrl = `${scheme}://${formatHostPort({ host, port: listen.port })}/fhir`;
    }

    let tls: GatewayConfig['tls'];
    if (this.data.tls !== undefined && !this.broken.has('tls')) {
      const t = this.obj('tls');
      tls = { cert: this.mustExist(['tls', 'cert'], t.cert as string), key: this.mustExist(['tls', 'key'], t.key as string) };
    }

    const upstream = this.broken.has('upstream') ? undefined : this.upstream();
    const auth = this.broken.has('auth') ? undefined : this.auth();
    const audit = this.broken.has('audit') ? undefined : this.audit();

    const alertsRaw = this.obj('alerts');
    let webhook = typeof alertsRaw.webhook === 'string' ? alertsRaw.webhook : undefined;
    if (webhook !== undefined && !this.broken.has('alerts')) {
      const u = parseHttpUrl(webhook, { httpsUnlessLoopback: true });
      if (u.ok) webhook = u.value;
      else this.at(['alerts', 'webhook'], u.message);
    }
    const envWebhook = nonEmpty(env.PHI_GATEWAY_ALERT_WEBHOOK);
    if (envWebhook !== undefined) {
      const u = parseHttpUrl(envWebhook, { httpsUnlessLoopback: true });
      if (u.ok) webhook = u.value;
      else this.envProblem('PHI_GATEWAY_ALERT_WEBHOOK', u.message);
    }
    // HMAC key for the X-Phi-Gateway-Signature header (src/breakglass/alerts.ts): a short one could
    // be guessed offline from one captured alert, and then alerts forged.
    let webhookSecret: string | undefined;
    if (typeof alertsRaw.webhookSecretFile === 'string' && !this.broken.has('alerts')) {
      webhookSecret = this.secretFile(['alerts', 'webhookSecretFile'], alertsRaw.webhookSecretFile);
      if (webhookSecret !== undefined && webhookSecret.length < MIN_PSEUDONYM_KEY_LENGTH) {
        this.at(['alerts', 'webhookSecretFile'], `webhook secret must be at least ${MIN_PSEUDONYM_KEY_LENGTH} characters`);
      }
    }
    const envWebhookSecret = nonEmpty(env.PHI_GATEWAY_ALERT_WEBHOOK_SECRET);
    if (envWebhookSecret !== undefined) {
      if (envWebhookSecret.length < MIN_PSEUDONYM_KEY_LENGTH) {
        this.envProblem('PHI_GATEWAY_ALERT_WEBHOOK_SECRET', `must be at least ${MIN_PSEUDONYM_KEY_LENGTH} characters`);
      }
      webhookSecret = envWebhookSecret;
    }

    const limitsRaw = this.obj('limits');
    const limits = {
      requestBodyBytes: (limitsRaw.requestBodyBytes as number) ?? DEFAULTS.requestBodyBytes,
      responseBodyBytes: (limitsRaw.responseBodyBytes as number) ?? DEFAULTS.responseBodyBytes,
      decompressedBytes: (limitsRaw.decompressedBytes as number) ?? DEFAULTS.decompressedBytes,
      // Unset = the pipeline's defaults (256 requests, 256 MiB).
      maxInflightRequests: limitsRaw.maxInflightRequests as number | undefined,
      bufferBytes: limitsRaw.bufferBytes as number | undefined,
      bundleEntries: limitsRaw.bundleEntries as number | undefined,
    };
    if (!this.broken.has('limits') && limits.decompressedBytes < limits.responseBodyBytes) {
      this.at(['limits', 'decompressedBytes'], 'decompressedBytes must be at least responseBodyBytes');
    }
    // Otherwise an answer within responseBodyBytes could never be buffered: always 503.
    if (!this.broken.has('limits') && limits.bufferBytes !== undefined && limits.bufferBytes < limits.responseBodyBytes) {
      this.at(['limits', 'bufferBytes'], 'bufferBytes must be at least responseBodyBytes');
    }

    const pagingRaw = this.obj('paging');
    let pagingKey: string | undefined;
    if (typeof pagingRaw.key === 'string' && typeof pagingRaw.keyFile === 'string') {
      this.at(['paging', 'keyFile'], 'set key or keyFile, not both', true);
    } else if (typeof pagingRaw.key === 'string') {
      pagingKey = pagingRaw.key;
      if (pagingKey.length < MIN_PSEUDONYM_KEY_LENGTH) this.at(['paging', 'key'], `paging key must be at least ${MIN_PSEUDONYM_KEY_LENGTH} characters`);
    } else if (typeof pagingRaw.keyFile === 'string') {
      pagingKey = this.secretFile(['paging', 'keyFile'], pagingRaw.keyFile);
      if (pagingKey !== undefined && pagingKey.length < MIN_PSEUDONYM_KEY_LENGTH) {
        this.at(['paging', 'keyFile'], `paging key must be at least ${MIN_PSEUDONYM_KEY_LENGTH} characters`);
      }
    }
    const envPagingKey = nonEmpty(env.PHI_GATEWAY_PAGING_KEY);
    if (envPagingKey !== undefined) {
      if (envPagingKey.length < MIN_PSEUDONYM_KEY_LENGTH) this.envProblem('PHI_GATEWAY_PAGING_KEY', `must be at least ${MIN_PSEUDONYM_KEY_LENGTH} characters`);
      pagingKey = envPagingKey;
    }
    const paging = {
      defaultCount: (pagingRaw.defaultCount as number | undefined) ?? DEFAULTS.pagingDefaultCount,
      maxCount: (pagingRaw.maxCount as number | undefined) ?? DEFAULTS.pagingMaxCount,
      maxUpstreamPages: (pagingRaw.maxUpstreamPages as number | undefined) ?? DEFAULTS.pagingMaxUpstreamPages,
      minUpstreamCount: (pagingRaw.minUpstreamCount as number | undefined) ?? DEFAULTS.pagingMinUpstreamCount,
      tokenTtlSeconds: (pagingRaw.tokenTtlSeconds as number | undefined) ?? DEFAULTS.pagingTokenTtlSeconds,
      key: pagingKey,
    };
    if (!this.broken.has('paging') && paging.defaultCount > paging.maxCount) this.at(['paging', 'defaultCount'], 'defaultCount must not exceed maxCount');

    let pseudonymKey: string | undefined;
    if (typeof this.data.pseudonymKey === 'string' && typeof this.data.pseudonymKeyFile === 'string') {
      this.at(['pseudonymKeyFile'], 'set pseudonymKey or pseudonymKeyFile, not both', true);
    } else if (typeof this.data.pseudonymKey === 'string') {
      pseudonymKey = this.data.pseudonymKey;
      if (pseudonymKey.length < MIN_PSEUDONYM_KEY_LENGTH) this.at(['pseudonymKey'], `pseudonym key must be at least ${MIN_PSEUDONYM_KEY_LENGTH} characters`);
    } else if (typeof this.data.pseudonymKeyFile === 'string') {
      pseudonymKey = this.secretFile(['pseudonymKeyFile'], this.data.pseudonymKeyFile);
      if (pseudonymKey !== undefined && pseudonymKey.length < MIN_PSEUDONYM_KEY_LENGTH) {
        this.at(['pseudonymKeyFile'], `pseudonym key must be at least ${MIN_PSEUDONYM_KEY_LENGTH} characters`);
      }
    }
    const envKey = nonEmpty(env.PHI_GATEWAY_PSEUDONYM_KEY);
    if (envKey !== undefined) {
      if (envKey.length < MIN_PSEUDONYM_KEY_LENGTH) {
        this.envProblem('PHI_GATEWAY_PSEUDONYM_KEY', `must be at least ${MIN_PSEUDONYM_KEY_LENGTH} characters`);
      }
      pseudonymKey = envKey;
    }

    // Keys pseudonyms were issued under before a rotation: still resolved, never used to issue.
    let pseudonymPreviousKeys: string[] | undefined;
    if (typeof this.data.pseudonymPreviousKeysFile === 'string') {
      const text = this.secretFile(['pseudonymPreviousKeysFile'], this.data.pseudonymPreviousKeysFile);
      if (text !== undefined) {
        pseudonymPreviousKeys = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
        if (pseudonymPreviousKeys.some((k) => k.length < MIN_PSEUDONYM_KEY_LENGTH)) {
          this.at(['pseudonymPreviousKeysFile'], `every previous pseudonym key must be at least ${MIN_PSEUDONYM_KEY_LENGTH} characters`);
        }
        if (pseudonymKey === undefined && pseudonymPreviousKeys.length > 0) this.at(['pseudonymPreviousKeysFile'], 'previous pseudonym keys need a current one');
      }
    }

    let logLevel = (this.data.logLevel as string) ?? DEFAULTS.logLevel;
    const envLevel = nonEmpty(env.LOG_LEVEL);
    if (envLevel !== undefined) {
      if ((LOG_LEVELS as readonly string[]).includes(envLevel)) logLevel = envLevel;
      else this.envProblem('LOG_LEVEL', `must be one of: ${LOG_LEVELS.join(', ')}`);
    }

    const shadowPolicy = typeof this.data.shadowPolicy === 'string' ? this.mustExist(['shadowPolicy'], this.data.shadowPolicy) : undefined;
    const cors = this.broken.has('cors') ? undefined : this.cors();
    const smart = this.broken.has('smart') ? undefined : this.smart();
    const trustedProxies = this.broken.has('trustedProxies') ? undefined : this.trustedProxies();
    const siem = this.broken.has('siem') || this.data.siem === undefined ? undefined : this.siem();

    if (this.problems.length > 0 || this.broken.size > 0 || !listen || !admin || !publicBaseUrl || !upstream || !auth || !audit) return undefined;
    return deepFreeze({
      file: this.absFile,
      policyFile: this.policyFile,
      listen,
      admin,
      publicBaseUrl,
      upstream,
      auth,
      audit,
      alerts: {
        webhook,
        ...(webhookSecret !== undefined ? { webhookSecret } : {}),
        redisChannel: typeof alertsRaw.redisChannel === 'string' ? alertsRaw.redisChannel : undefined,
      },
      limits,
      paging,
      pseudonymKey,
      ...(pseudonymPreviousKeys !== undefined && pseudonymPreviousKeys.length > 0 ? { pseudonymPreviousKeys } : {}),
      logLevel,
      ...(tls ? { tls } : {}),
      shutdownGraceMs: (this.data.shutdownGraceMs as number | undefined) ?? DEFAULTS.shutdownGraceMs,
      ...(shadowPolicy ? { shadowPolicy } : {}),
      cors: cors ?? { origins: [] },
      ...(smart ? { smart } : {}),
      ...(trustedProxies !== undefined && trustedProxies.length > 0 ? { trustedProxies } : {}),
      ...(siem ? { siem } : {}),
    }) as GatewayConfig;
  }

  /**
   * `cors.origins`, or PHI_GATEWAY_CORS_ORIGINS (comma list) instead. Each must be written exactly
   * as browsers send Origin (scheme://host[:port], lower case, no default port, no path): the
   * header is compared byte for byte, so any other spelling would silently never match.
   */
  private cors(): CorsConfig {
    const envOrigins = this.env.PHI_GATEWAY_CORS_ORIGINS;
    if (envOrigins !== undefined && envOrigins.trim() !== '') {
      const origins: string[] = [];
      for (const o of envOrigins.split(',').map((x) => x.trim()).filter((x) => x !== '')) {
        const why = originProblem(o);
        if (why !== undefined) this.envProblem('PHI_GATEWAY_CORS_ORIGINS', why);
        else if (!origins.includes(o)) origins.push(o);
      }
      return { origins };
    }
    const raw = this.obj('cors');
    const list = Array.isArray(raw.origins) ? (raw.origins as string[]) : [];
    list.forEach((o, i) => {
      const why = originProblem(o);
      if (why !== undefined) this.at(['cors', 'origins', i], why);
    });
    return { origins: [...list] };
  }

  /** `smart`: every endpoint an absolute http(s) URL (https unless loopback). */
  private smart(): SmartConfig | undefined {
    if (this.data.smart === undefined) return undefined;
    const raw = this.obj('smart');
    const out: Record<string, unknown> = {};
    for (const k of SMART_ENDPOINTS) {
      if (typeof raw[k] !== 'string') continue;
      const u = parseHttpUrl(raw[k] as string, { httpsUnlessLoopback: true });
      if (u.ok) out[k] = u.value;
      else this.at(['smart', k], u.message);
    }
    if (Array.isArray(raw.scopesSupported)) out.scopesSupported = [...(raw.scopesSupported as string[])];
    if (Array.isArray(raw.capabilities)) out.capabilities = [...(raw.capabilities as string[])];
    return out as SmartConfig;
  }

  private hostPort(path: readonly PathSegment[], fileValue: string, variable: string): HostPort | undefined {
    const envValue = nonEmpty(this.env[variable]);
    if (envValue !== undefined) {
      const p = parseHostPort(envValue);
      if (p.ok) return p.value;
      this.envProblem(variable, p.message);
      return undefined;
    }
    const p = parseHostPort(fileValue);
    if (p.ok) return p.value;
    this.at(path, p.message);
    return undefined;
  }

  private upstream(): UpstreamConfig | undefined {
    const raw = this.obj('upstream');
    let url: string | undefined;
    const envUrl = nonEmpty(this.env.PHI_GATEWAY_UPSTREAM);
    if (envUrl !== undefined) {
      const u = parseHttpUrl(envUrl);
      if (u.ok) url = u.value;
      else this.envProblem('PHI_GATEWAY_UPSTREAM', u.message);
    } else {
      const u = parseHttpUrl(raw.url as string);
      if (u.ok) url = u.value;
      else this.at(['upstream', 'url'], u.message);
    }
    const authRaw = (raw.auth ?? { type: 'none' }) as Raw;
    const p = (k: string): PathSegment[] => ['upstream', 'auth', k];
    const allowed: Record<string, readonly string[]> = {
      none: ['type'],
      bearer: ['type', 'token', 'tokenFile'],
      'client-credentials': ['type', 'tokenUrl', 'clientId', 'clientSecret', 'clientSecretFile', 'scope'],
    };
    const type = authRaw.type as string;
    for (const k of Object.keys(authRaw)) {
      if (!allowed[type].includes(k)) this.at(p(k), `'${k}' does not apply to upstream auth type ${type}`, true);
    }
    let auth: UpstreamConfig['auth'] | undefined;
    if (type === 'none') auth = { type: 'none' };
    else if (type === 'bearer') {
      const token = this.oneSecret(authRaw, 'token', 'tokenFile', p);
      if (token !== undefined) auth = { type: 'bearer', token };
    } else {
      const clientSecret = this.oneSecret(authRaw, 'clientSecret', 'clientSecretFile', p);
      const tokenUrl = parseHttpUrl(authRaw.tokenUrl as string, { httpsUnlessLoopback: true });
      if (!tokenUrl.ok) this.at(p('tokenUrl'), tokenUrl.message);
      if (authRaw.clientId === undefined) this.at(['upstream', 'auth'], "client-credentials needs 'clientId'");
      if (authRaw.tokenUrl === undefined) this.at(['upstream', 'auth'], "client-credentials needs 'tokenUrl'");
      if (clientSecret !== undefined && tokenUrl.ok && typeof authRaw.clientId === 'string') {
        auth = {
          type: 'client-credentials',
          tokenUrl: tokenUrl.value,
          clientId: authRaw.clientId,
          clientSecret,
          ...(typeof authRaw.scope === 'string' ? { scope: authRaw.scope } : {}),
        };
      }
    }
    let tls: UpstreamConfig['tls'];
    if (raw.tls !== undefined) {
      const t = raw.tls as Raw;
      const files: Record<string, string> = {};
      for (const k of ['ca', 'cert', 'key'] as const) {
        if (typeof t[k] === 'string') files[k] = this.mustExist(['upstream', 'tls', k], t[k] as string);
      }
      if ((files.cert === undefined) !== (files.key === undefined)) this.at(['upstream', 'tls'], 'tls cert and key go together');
      tls = files;
    }
    const linkBases = this.linkBases(raw);
    if (!url || !auth) return undefined;
    return {
      url,
      ...(linkBases.length > 0 ? { linkBases } : {}),
      connectTimeoutMs: (raw.connectTimeoutMs as number) ?? DEFAULTS.connectTimeoutMs,
      headersTimeoutMs: (raw.headersTimeoutMs as number) ?? DEFAULTS.headersTimeoutMs,
      bodyTimeoutMs: (raw.bodyTimeoutMs as number) ?? DEFAULTS.bodyTimeoutMs,
      totalTimeoutMs: (raw.totalTimeoutMs as number) ?? DEFAULTS.totalTimeoutMs,
      connections: (raw.connections as number) ?? DEFAULTS.connections,
      errorText: raw.errorText === true,
      auth,
      ...(tls ? { tls } : {}),
    };
  }

  /**
   * `upstream.linkBases`, or PHI_GATEWAY_UPSTREAM_LINK_BASES (comma list) instead: each an http(s)
   * base without query, fragment or credentials. Paging links under them are followed on
   * `upstream.url`, so each must name the same server: a wrong entry sends nothing elsewhere, but
   * a link under it is read from the configured upstream.
   */
  private linkBases(raw: Raw): string[] {
    const out: string[] = [];
    const envBases = this.env.PHI_GATEWAY_UPSTREAM_LINK_BASES;
    if (envBases !== undefined && envBases.trim() !== '') {
      for (const b of envBases.split(',').map((x) => x.trim()).filter((x) => x !== '')) {
        const u = parseHttpUrl(b);
        if (!u.ok) this.envProblem('PHI_GATEWAY_UPSTREAM_LINK_BASES', u.message);
        else if (!out.includes(u.value)) out.push(u.value);
      }
      return out;
    }
    const list = Array.isArray(raw.linkBases) ? (raw.linkBases as string[]) : [];
    list.forEach((b, i) => {
      const u = parseHttpUrl(b);
      if (!u.ok) this.at(['upstream', 'linkBases', i], u.message);
      else if (!out.includes(u.value)) out.push(u.value);
    });
    return out;
  }

  private oneSecret(raw: Raw, inline: string, fileKey: string, p: (k: string) => PathSegment[]): string | undefined {
    const hasInline = typeof raw[inline] === 'string';
    const hasFile = typeof raw[fileKey] === 'string';
    if (hasInline === hasFile) {
      this.at(hasFile ? p(fileKey) : ['upstream', 'auth'], `set exactly one of '${inline}' or '${fileKey}'`, hasFile);
      return undefined;
    }
    return hasInline ? (raw[inline] as string) : this.secretFile(p(fileKey), raw[fileKey] as string);
  }

  private auth(): GatewayConfig['auth'] | undefined {
    const raw = this.obj('auth');
    const env = this.env;
    let issuer = raw.issuer as string;
    let audience = raw.audience as string;
    let jwksUri = raw.jwksUri as string | undefined;
    let jwksFile = raw.jwksFile as string | undefined;
    const envIss = nonEmpty(env.PHI_GATEWAY_ISSUER);
    if (envIss !== undefined) issuer = envIss;
    const envAud = nonEmpty(env.PHI_GATEWAY_AUDIENCE);
    if (envAud !== undefined) audience = envAud;
    const envJwks = nonEmpty(env.PHI_GATEWAY_JWKS_URI);
    let ok = true;
    if (envJwks !== undefined) {
      const u = parseHttpUrl(envJwks, { httpsUnlessLoopback: true });
      if (u.ok) {
        jwksUri = u.value;
        jwksFile = undefined; // the override replaces whichever key source the file named
      } else {
        this.envProblem('PHI_GATEWAY_JWKS_URI', u.message);
        ok = false;
      }
    } else {
      if ((jwksUri === undefined) === (jwksFile === undefined)) {
        this.at(jwksFile !== undefined ? ['auth', 'jwksFile'] : ['auth'], "set exactly one of 'jwksUri' or 'jwksFile'", jwksFile !== undefined);
        ok = false;
      } else if (jwksUri !== undefined) {
        const u = parseHttpUrl(jwksUri, { httpsUnlessLoopback: true });
        if (u.ok) jwksUri = u.value;
        else {
          this.at(['auth', 'jwksUri'], u.message);
          ok = false;
        }
      } else if (jwksFile !== undefined) {
        jwksFile = this.mustExist(['auth', 'jwksFile'], jwksFile);
      }
    }
    const algorithms = (raw.algorithms as string[] | undefined) ?? DEFAULTS.algorithms;
    algorithms.forEach((alg, i) => {
      if (!(ASYMMETRIC_ALGORITHMS as readonly string[]).includes(alg)) {
        const why = /^(HS|none$)/i.test(alg) ? 'symmetric algorithms and none are refused' : 'unsupported algorithm';
        this.at(['auth', 'algorithms', i], `'${alg}': ${why}; allowed: ${ASYMMETRIC_ALGORITHMS.join(', ')}`);
        ok = false;
      }
    });
    const roleMap = this.roleMap(raw);
    if (!ok) return undefined;
    return {
      issuer,
      audience,
      jwksUri,
      jwksFile,
      algorithms: [...algorithms],
      rolesClaim: (raw.rolesClaim as string | string[] | undefined) ?? DEFAULTS.rolesClaim,
      ...(roleMap !== undefined ? { roleMap } : {}),
      ...(Array.isArray(raw.patientClaims) ? { patientClaims: [...(raw.patientClaims as string[])] } : {}),
      ...(raw.scopelessTokens !== undefined ? { scopelessTokens: raw.scopelessTokens as 'refuse' | 'roles-only' } : {}),
      ...(typeof raw.fhirUserClaim === 'string' ? { fhirUserClaim: raw.fhirUserClaim } : {}),
      clockToleranceSec: (raw.clockToleranceSec as number) ?? DEFAULTS.clockToleranceSec,
      tokenCacheSize: (raw.tokenCacheSize as number) ?? DEFAULTS.tokenCacheSize,
      requiredTyp: raw.requiredTyp as string | undefined,
    };
  }

  /**
   * `auth.roleMap` with every target as a list. Whether a target is a role of the policy is
   * check-config's question (src/config/load.ts); here only that it could be one.
   */
  private roleMap(raw: Raw): Record<string, readonly string[]> | undefined {
    if (raw.roleMap === undefined) return undefined;
    const out: Record<string, readonly string[]> = Object.create(null);
    for (const [name, target] of Object.entries(raw.roleMap as Record<string, string | string[]>)) {
      const roles = typeof target === 'string' ? [target] : [...target];
      roles.forEach((role, i) => {
        if (!ROLE_NAME_RE.test(role)) {
          this.at(typeof target === 'string' ? ['auth', 'roleMap', name] : ['auth', 'roleMap', name, i], `'${role}' cannot be a policy role name`);
        }
      });
      out[name] = roles;
    }
    return out;
  }

  /**
   * `trustedProxies`, or PHI_GATEWAY_TRUSTED_PROXIES (comma list) instead: IPs or CIDRs of the load
   * balancers in front of the gateway. Only their X-Forwarded-For is read; a client connecting
   * directly cannot choose the address its requests are audited under.
   */
  private trustedProxies(): string[] {
    const envList = this.env.PHI_GATEWAY_TRUSTED_PROXIES;
    if (envList !== undefined && envList.trim() !== '') {
      const out: string[] = [];
      for (const p of envList.split(',').map((x) => x.trim()).filter((x) => x !== '')) {
        const why = proxyAddressProblem(p);
        if (why !== undefined) this.envProblem('PHI_GATEWAY_TRUSTED_PROXIES', why);
        else if (!out.includes(p)) out.push(p);
      }
      return out;
    }
    const list = Array.isArray(this.data.trustedProxies) ? (this.data.trustedProxies as string[]) : [];
    list.forEach((p, i) => {
      const why = proxyAddressProblem(p);
      if (why !== undefined) this.at(['trustedProxies', i], why);
    });
    return [...list];
  }

  /**
   * `siem`: delivery targets of the audit trail. Names unique (each names a cursor and a Redis
   * consumer group); syslog at `tls://host:port`, a repository at an http(s) base (https unless
   * loopback); keys that do not apply to a target's type refused; TLS files must exist; the FHIR
   * target's secrets inline or from files, as the upstream's.
   */
  private siem(): SiemConfig | undefined {
    const raw = this.obj('siem');
    const list = Array.isArray(raw.targets) ? (raw.targets as Raw[]) : [];
    const targets: TargetConfig[] = [];
    const names = new Set<string>();
    const allowed: Record<string, readonly string[]> = {
      syslog: ['name', 'type', 'url', 'format', 'appName', 'hostname', 'tls', 'filter'],
      fhir: ['name', 'type', 'url', 'auth', 'tls', 'batchSize', 'filter'],
    };
    list.forEach((t, i) => {
      const at = (...rest: PathSegment[]): PathSegment[] => ['siem', 'targets', i, ...rest];
      const type = t.type as 'syslog' | 'fhir';
      const name = t.name as string;
      if (names.has(name)) this.at(at('name'), `duplicate target name '${name}'`);
      names.add(name);
      for (const k of Object.keys(t)) {
        if (!allowed[type].includes(k)) this.at(at(k), `'${k}' does not apply to a ${type} target`, true);
      }
      const tls = this.siemTls(t, at, type === 'syslog');
      const filter = t.filter === undefined ? undefined : (t.filter as TargetConfig['filter']);
      if (type === 'syslog') {
        const url = syslogUrlProblem(t.url as string);
        if (url !== undefined) this.at(at('url'), url);
        targets.push({
          name,
          type,
          url: t.url as string,
          format: (t.format as 'balp' | 'record' | undefined) ?? 'balp',
          ...(tls ? { tls } : {}),
          ...(typeof t.appName === 'string' ? { appName: t.appName } : {}),
          ...(typeof t.hostname === 'string' ? { hostname: t.hostname } : {}),
          ...(filter ? { filter } : {}),
        });
        return;
      }
      let url = t.url as string;
      const u = parseHttpUrl(url, { httpsUnlessLoopback: true });
      if (u.ok) url = u.value;
      else this.at(at('url'), u.message);
      const auth = this.siemAuth((t.auth ?? { type: 'none' }) as Raw, (k) => (k === undefined ? at('auth') : at('auth', k)));
      if (auth === undefined) return;
      targets.push({
        name,
        type,
        url,
        auth,
        ...(tls ? { tls } : {}),
        ...(typeof t.batchSize === 'number' ? { batchSize: t.batchSize } : {}),
        ...(filter ? { filter } : {}),
      });
    });
    const baseDelayMs = raw.baseDelayMs as number | undefined;
    const maxDelayMs = raw.maxDelayMs as number | undefined;
    if (baseDelayMs !== undefined && maxDelayMs !== undefined && baseDelayMs > maxDelayMs) this.at(['siem', 'baseDelayMs'], 'baseDelayMs must not exceed maxDelayMs');
    return {
      targets,
      ...(typeof raw.stateDir === 'string' ? { stateDir: this.file(raw.stateDir) } : {}),
      ...(typeof raw.batchSize === 'number' ? { batchSize: raw.batchSize } : {}),
      ...(baseDelayMs !== undefined ? { baseDelayMs } : {}),
      ...(maxDelayMs !== undefined ? { maxDelayMs } : {}),
      ...(typeof raw.pollMs === 'number' ? { pollMs: raw.pollMs } : {}),
    };
  }

  private siemTls(t: Raw, at: (...rest: PathSegment[]) => PathSegment[], serverName: boolean): SyslogTargetConfig['tls'] {
    if (t.tls === undefined) return undefined;
    const raw = t.tls as Raw;
    const out: { ca?: string; cert?: string; key?: string; serverName?: string } = {};
    for (const k of ['ca', 'cert', 'key'] as const) {
      if (typeof raw[k] === 'string') out[k] = this.mustExist(at('tls', k), raw[k] as string);
    }
    if ((out.cert === undefined) !== (out.key === undefined)) this.at(at('tls'), 'tls cert and key go together');
    if (typeof raw.serverName === 'string') {
      if (serverName) out.serverName = raw.serverName;
      else this.at(at('tls', 'serverName'), "'serverName' applies to syslog targets only", true);
    }
    return out;
  }

  private siemAuth(raw: Raw, p: (k?: string) => PathSegment[]): FhirTargetConfig['auth'] | undefined {
    const allowed: Record<string, readonly string[]> = {
      none: ['type'],
      bearer: ['type', 'token', 'tokenFile'],
      'client-credentials': ['type', 'tokenUrl', 'clientId', 'clientSecret', 'clientSecretFile', 'scope'],
    };
    const type = raw.type as string;
    for (const k of Object.keys(raw)) {
      if (!allowed[type].includes(k)) this.at(p(k), `'${k}' does not apply to auth type ${type}`, true);
    }
    const secret = (inline: string, fileKey: string): string | undefined => {
      const hasInline = typeof raw[inline] === 'string';
      const hasFile = typeof raw[fileKey] === 'string';
      if (hasInline === hasFile) {
        this.at(hasFile ? p(fileKey) : p(), `set exactly one of '${inline}' or '${fileKey}'`, hasFile);
        return undefined;
      }
      return hasInline ? (raw[inline] as string) : this.secretFile(p(fileKey), raw[fileKey] as string);
    };
    if (type === 'none') return { type: 'none' };
    if (type === 'bearer') {
      const token = secret('token', 'tokenFile');
      return token === undefined ? undefined : { type: 'bearer', token };
    }
    const clientSecret = secret('clientSecret', 'clientSecretFile');
    if (raw.clientId === undefined) this.at(p(), "client-credentials needs 'clientId'");
    if (raw.tokenUrl === undefined) {
      this.at(p(), "client-credentials needs 'tokenUrl'");
      return undefined;
    }
    const tokenUrl = parseHttpUrl(raw.tokenUrl as string, { httpsUnlessLoopback: true });
    if (!tokenUrl.ok) this.at(p('tokenUrl'), tokenUrl.message);
    if (clientSecret === undefined || !tokenUrl.ok || typeof raw.clientId !== 'string') return undefined;
    return {
      type: 'client-credentials',
      tokenUrl: tokenUrl.value,
      clientId: raw.clientId,
      clientSecret,
      ...(typeof raw.scope === 'string' ? { scope: raw.scope } : {}),
    };
  }

  private audit(): AuditConfig | undefined {
    const sink = this.auditSink();
    const checkpoint = this.auditCheckpoint();
    return sink && checkpoint ? { ...sink, checkpoint } : sink;
  }

  /**
   * `audit.checkpoint` (or PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE, a path, which wins): the Ed25519
   * key is read here so check-config refuses a missing, unreadable or non-Ed25519 key.
   */
  private auditCheckpoint(): AuditCheckpointConfig | undefined {
    const raw = this.obj('audit');
    const cp = raw.checkpoint !== null && typeof raw.checkpoint === 'object' ? (raw.checkpoint as Raw) : undefined;
    const envKey = nonEmpty(this.env.PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE);
    const keyFile = envKey !== undefined ? resolve(envKey) : typeof cp?.keyFile === 'string' ? this.file(cp.keyFile) : undefined;
    if (keyFile === undefined) {
      if (cp !== undefined) this.at(['audit', 'checkpoint'], "signed checkpoints need 'keyFile' (an Ed25519 private key, PKCS#8 PEM; phi-gateway audit keygen)");
      return undefined;
    }
    try {
      loadSigningKey(keyFile);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const why = code ? `cannot read the audit signing key (${code})` : `audit signing key: ${(e as Error).message}`;
      if (envKey !== undefined) this.envProblem('PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE', why);
      else this.at(['audit', 'checkpoint', 'keyFile'], why);
      return undefined;
    }
    return {
      keyFile,
      everyRecords: (cp?.everyRecords as number | undefined) ?? DEFAULT_CHECKPOINT_RECORDS,
      everySeconds: (cp?.everySeconds as number | undefined) ?? DEFAULT_CHECKPOINT_SECONDS,
    };
  }

  private auditSink(): AuditConfig | undefined {
    const raw = this.data.audit === undefined ? { sink: 'file' } : this.obj('audit');
    const failOpen = (raw.failOpen as boolean | undefined) ?? false;
    const allowed: Record<string, readonly string[]> = {
      file: ['sink', 'path', 'failOpen', 'rotateBytes', 'groupCommitMs', 'checkpoint'],
      redis: ['sink', 'url', 'stream', 'failOpen', 'checkpoint', 'commandTimeoutMs'],
    };
    for (const k of Object.keys(raw)) {
      if (!allowed[raw.sink as string].includes(k)) this.at(['audit', k], `'${k}' does not apply to the ${raw.sink} audit sink`, true);
    }
    const envAudit = nonEmpty(this.env.PHI_GATEWAY_AUDIT);
    if (envAudit !== undefined) {
      const t = parseAuditTarget(envAudit);
      if (!t.ok) {
        this.envProblem('PHI_GATEWAY_AUDIT', t.message);
        return undefined;
      }
      if (t.value.sink === 'file') return this.fileSink(resolve(t.value.path), raw, failOpen);
      return this.redisSink(t.value.url, raw, failOpen);
    }
    if (raw.sink === 'redis') {
      if (typeof raw.url !== 'string') {
        this.at(['audit'], "the redis audit sink needs 'url'");
        return undefined;
      }
      // Never echo the URL: it may hold a password.
      if (!isRedisUrl(raw.url)) {
        this.at(['audit', 'url'], 'must be a redis:// or rediss:// URL');
        return undefined;
      }
      return this.redisSink(raw.url, raw, failOpen);
    }
    return this.fileSink(resolve(this.dir, (raw.path as string) ?? DEFAULTS.auditPath), raw, failOpen);
  }

  private redisSink(url: string, raw: Raw, failOpen: boolean): AuditConfig {
    return {
      sink: 'redis',
      url,
      stream: (raw.stream as string) ?? DEFAULTS.auditStream,
      failOpen,
      commandTimeoutMs: (raw.commandTimeoutMs as number | undefined) ?? DEFAULT_REDIS_COMMAND_TIMEOUT_MS,
    };
  }

  private fileSink(path: string, raw: Raw, failOpen: boolean): AuditConfig {
    return {
      sink: 'file',
      path,
      failOpen,
      rotateBytes: (raw.rotateBytes as number) ?? DEFAULTS.auditRotateBytes,
      groupCommitMs: (raw.groupCommitMs as number) ?? DEFAULTS.auditGroupCommitMs,
    };
  }
}

/** Why `raw` is not a syslog target URL (`tls://host:port`), or undefined. Never echoes credentials. */
export function syslogUrlProblem(raw: string): string | undefined {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return `'${raw}' is not a URL (tls://host:port)`;
  }
  if (u.protocol !== 'tls:') return `a syslog target needs tls://host:port (RFC 5425), not ${u.protocol}`;
  if (u.username !== '' || u.password !== '') return 'URL must not contain credentials';
  if (u.hostname === '' || u.port === '') return 'a syslog target needs tls://host:port (6514 is the registered port)';
  if ((u.pathname !== '' && u.pathname !== '/') || u.search !== '' || u.hash !== '') return 'a syslog target URL is tls://host:port, nothing more';
  return undefined;
}

// What the policy schema accepts as a role name.
const ROLE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;

/** Why `value` is not an IP address or CIDR block a proxy may be trusted at, or undefined. */
export function proxyAddressProblem(value: string): string | undefined {
  const slash = value.indexOf('/');
  const addr = slash < 0 ? value : value.slice(0, slash);
  const family = isIP(addr);
  if (family === 0) return `'${value}' is not an IP address or CIDR block`;
  if (slash < 0) return undefined;
  const bits = value.slice(slash + 1);
  const max = family === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(bits) || Number(bits) > max) return `'${value}': the prefix length must be 0..${max}`;
  if (Number(bits) === 0) return `'${value}' trusts every address: any client could choose the address it is audited under`;
  return undefined;
}

/** Why an unsigned webhook is worth a warning, in check-config's output and serve's log alike. */
export const UNSIGNED_WEBHOOK_WARNING =
  'alerts.webhook has no secret (alerts.webhookSecretFile or PHI_GATEWAY_ALERT_WEBHOOK_SECRET): break-glass alerts carry patient ids and reasons, and the receiver cannot tell them from forged ones';

/**
 * Settings that are valid but weaken a production deployment: check-config prints each as a
 * `warning:` line (exit status unchanged) and `serve` logs them at warn.
 */
export function configWarnings(config: GatewayConfig): string[] {
  const out: string[] = [];
  if (config.alerts.webhook !== undefined && config.alerts.webhookSecret === undefined) out.push(UNSIGNED_WEBHOOK_WARNING);
  if (!config.audit.checkpoint) out.push(NO_CHECKPOINT_KEY_WARNING);
  return out;
}
