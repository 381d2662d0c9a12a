/**
 * What can be checked of the Docker deliverables without a Docker engine (issue 7): the compose file
 * parses strictly, has the gateway, Redis (AOF, appendfsync always), HAPI and the seed job with
 * healthchecks and dependency conditions that exist; every environment variable given to the gateway
 * is one the config loader reads, and with them the shipped config validates; the Dockerfile is
 * multi-stage on Node 24 slim, non-root, production dependencies only, every COPY source exists and
 * survives the .dockerignore; the HEALTHCHECK script answers for a live and a dead admin listener.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import { loadGatewayConfig } from '../../src/config/load.js';
import { REPO_ROOT } from '../helpers/gateway-process.js';

const root = (p: string) => join(REPO_ROOT, p);
const composeText = readFileSync(root('docker-compose.yml'), 'utf8');
const doc = parseDocument(composeText, { uniqueKeys: true, strict: true });
type Service = {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string>;
  healthcheck?: { test: string[] };
  depends_on?: Record<string, { condition: string }> | string[];
  networks?: string[];
  ports?: string[];
  read_only?: boolean;
  stop_grace_period?: string;
};
const compose = doc.toJS() as { services: Record<string, Service>; networks: Record<string, { internal?: boolean }>; volumes: Record<string, unknown> };
const dockerfile = readFileSync(root('docker/Dockerfile'), 'utf8');

/** `${VAR:-default}` -> default (what compose substitutes when VAR is unset). */
function withDefaults(value: string): string {
  return value.replace(/\$\{[A-Z0-9_]+:-([^}]*)\}/g, '$1');
}

/** Every PHI_GATEWAY_* / LOG_LEVEL name the config loader reads. */
function loaderEnvNames(): Set<string> {
  const names = new Set<string>();
  for (const f of readdirSync(root('src/config'))) {
    if (!f.endsWith('.ts')) continue;
    for (const m of readFileSync(root(`src/config/${f}`), 'utf8').matchAll(/\b(PHI_GATEWAY_[A-Z_]+|LOG_LEVEL)\b/g)) names.add(m[1]);
  }
  return names;
}

describe('docker-compose.yml', () => {
  it('parses without YAML errors or warnings', () => {
    expect(doc.errors).toEqual([]);
    expect(doc.warnings).toEqual([]);
    expect(Object.keys(compose.services).sort()).toEqual(['gateway', 'hapi', 'redis', 'seed']);
  });

  it('builds the gateway from docker/Dockerfile and runs HAPI and Redis with AOF fsync always', () => {
    const { gateway, redis, hapi, seed } = compose.services;
    expect(gateway.build).toEqual({ context: '.', dockerfile: 'docker/Dockerfile' });
    expect(existsSync(root(gateway.build!.dockerfile))).toBe(true);
    expect(hapi.image).toBe('hapiproject/hapi:latest');
    expect(redis.image).toMatch(/^redis:\d/);
    const cmd = redis.command!.join(' ');
    expect(cmd).toContain('--appendonly yes');
    expect(cmd).toContain('--appendfsync always');
    expect(seed.image).toBe(gateway.image);
    expect(seed.entrypoint).toEqual(['node', 'dist/cli/seed.js']);
    expect(existsSync(root('src/cli/seed.ts'))).toBe(true);
    expect(seed.command).toEqual(['--upstream', 'http://hapi:8080/fhir', '--wait', '600']);
  });

  it('has healthchecks where dependencies wait on them, and dependencies that exist', () => {
    const { services } = compose;
    expect(services.gateway.healthcheck?.test).toEqual(['CMD', 'node', 'docker/healthcheck.mjs']);
    expect(services.redis.healthcheck?.test).toEqual(['CMD', 'redis-cli', 'ping']);
    for (const [name, s] of Object.entries(services)) {
      const deps = Array.isArray(s.depends_on) ? Object.fromEntries(s.depends_on.map((d) => [d, { condition: 'service_started' }])) : (s.depends_on ?? {});
      for (const [dep, { condition }] of Object.entries(deps)) {
        expect(services[dep], `${name} depends on ${dep}`).toBeDefined();
        if (condition === 'service_healthy') expect(services[dep].healthcheck, `${dep} healthcheck`).toBeDefined();
      }
    }
    expect(services.gateway.depends_on).toMatchObject({ redis: { condition: 'service_healthy' }, seed: { condition: 'service_completed_successfully' } });
  });

  it('keeps HAPI and Redis on an internal network and publishes the gateway on loopback only', () => {
    expect(compose.networks.backend.internal).toBe(true);
    expect(compose.services.hapi.networks).toEqual(['backend']);
    expect(compose.services.redis.networks).toEqual(['backend']);
    expect(compose.services.hapi.ports).toBeUndefined();
    expect(compose.services.redis.ports).toBeUndefined();
    for (const p of compose.services.gateway.ports ?? []) expect(p.startsWith('127.0.0.1:')).toBe(true);
    expect(compose.services.gateway.read_only).toBe(true);
    // Longer than the 10 s shutdown grace period, so the audit sink is flushed before SIGKILL.
    expect(Number.parseInt(compose.services.gateway.stop_grace_period ?? '0', 10)).toBeGreaterThan(10);
  });

  it('wires the gateway by environment variables the loader reads, and the result validates', () => {
    const env = compose.services.gateway.environment!;
    const known = loaderEnvNames();
    expect(known.has('PHI_GATEWAY_UPSTREAM')).toBe(true);
    for (const name of Object.keys(env)) expect(known.has(name), `${name} is not read by the config loader`).toBe(true);
    const resolved = Object.fromEntries(Object.entries(env).map(([k, v]) => [k, withDefaults(v)]));
    expect(resolved.PHI_GATEWAY_AUDIT).toBe('redis://redis:6379');
    expect(resolved.PHI_GATEWAY_UPSTREAM).toBe('http://hapi:8080/fhir');
    const config = loadGatewayConfig(root('config/gateway.yaml'), resolved);
    expect(config.audit).toMatchObject({ sink: 'redis', url: 'redis://redis:6379' });
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(config.admin).toEqual({ host: '0.0.0.0', port: 9090 });
    expect(config.upstream.url).toBe('http://hapi:8080/fhir');
  });
});

describe('docker/Dockerfile', () => {
  const stages = dockerfile.split(/^FROM /m).slice(1);
  const instructions = (stage: string, op: string) =>
    stage
      .split('\n')
      .filter((l) => l.startsWith(`${op} `))
      .map((l) => l.slice(op.length + 1).trim());

  it('is multi-stage on Node 24 slim, runs as a non-root user, production dependencies only', () => {
    expect(stages.length).toBe(2);
    for (const s of stages) expect(s.split('\n')[0]).toMatch(/^node:24-slim AS \w+$/);
    const runtime = stages[1];
    expect(instructions(runtime, 'RUN').join('\n')).toMatch(/npm ci --omit=dev --ignore-scripts/);
    expect(instructions(runtime, 'USER')).toEqual(['node']);
    expect(instructions(runtime, 'ENTRYPOINT')).toEqual(['["node", "dist/cli/main.js", "serve"]']);
    expect(instructions(runtime, 'HEALTHCHECK')[0]).toMatch(/CMD \["node", "docker\/healthcheck\.mjs"\]$/);
    // Only the build output, config and the healthcheck reach the runtime image.
    const copies = instructions(runtime, 'COPY').map((c) => c.replace(/^--from=\w+ /, ''));
    expect(copies).toEqual(['package.json package-lock.json ./', '/src/dist ./dist', 'config ./config', 'docker/healthcheck.mjs ./docker/healthcheck.mjs']);
  });

  it('COPYs only sources that exist and that the .dockerignore lets through', () => {
    const ignore = readFileSync(root('docker/Dockerfile.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    expect(ignore[0]).toBe('*');
    const allowed = ignore.filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/$/, ''));
    for (const stage of stages) {
      for (const c of instructions(stage, 'COPY')) {
        if (c.startsWith('--from=')) continue;
        const sources = c.split(/\s+/).slice(0, -1);
        for (const src of sources) {
          expect(existsSync(root(src)), `COPY source ${src}`).toBe(true);
          expect(allowed, `${src} excluded by .dockerignore`).toContain(src);
        }
      }
    }
    // The build stage compiles with what `npm run build` needs.
    expect(readFileSync(root('package.json'), 'utf8')).toContain('"build": "tsc -p tsconfig.build.json && node scripts/copy-assets.mjs"');
  });

  it('HEALTHCHECK script: exit 0 for a live admin listener, 1 for none', async () => {
    const srv = createServer((req, res) => {
      res.writeHead(req.url === '/healthz' ? 200 : 404).end();
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as AddressInfo).port;
    const script = root('docker/healthcheck.mjs');
    const ok = await promisify(execFile)(process.execPath, [script], { env: { PHI_GATEWAY_ADMIN_LISTEN: `0.0.0.0:${port}` } }).then(
      () => 0,
      (e: { code: number }) => e.code,
    );
    await new Promise((r) => srv.close(r));
    const dead = await promisify(execFile)(process.execPath, [script], { env: { PHI_GATEWAY_ADMIN_LISTEN: `127.0.0.1:${port}` } }).then(
      () => 0,
      (e: { code: number }) => e.code,
    );
    expect(ok).toBe(0);
    expect(dead).toBe(1);
  });
});
