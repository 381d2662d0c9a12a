/**
 * Starting and stopping a whole gateway from a GatewayConfig: policy, token verifier, audit sink,
 * the proxy app and the admin listener. Used by `serve`, `demo` and the integration tests.
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { createAuditSink } from '../audit/index.js';
import type { AuditSink } from '../audit/record.js';
import { createTokenVerifier } from '../auth/verify.js';
import { openBreakGlass } from '../breakglass/index.js';
import { loadPolicy } from '../config/load.js';
import type { GatewayConfig } from '../config/types.js';
import { isR4ResourceType } from '../fhir/resource-types.js';
import { classify } from '../policy/classify.js';
import { decide } from '../policy/decide.js';
import { parsePurposeHeader } from '../policy/purpose.js';
import type { BreakGlassGate, PipelineDeps, PipelineSteps, PolicyRuntime } from '../proxy/pipeline.js';
import { createUpstreamAuthorization } from '../proxy/upstream-auth.js';
import { filterResponse } from '../redact/response.js';
import { buildAdminApp } from './admin.js';
import { buildApp } from './app.js';
import { createLogger } from './logger.js';

export function defaultSteps(maxBodyBytes: number): PipelineSteps {
  return {
    parsePurpose: (raw, policy) => parsePurposeHeader(raw, policy.purposes),
    classify: (raw) => classify(raw, { isResourceType: isR4ResourceType, maxBodyBytes }),
    decide,
    filterResponse,
  };
}

export function policyRuntime(config: GatewayConfig, now: () => Date = () => new Date()): PolicyRuntime {
  const loaded = loadPolicy(config.policyFile, { pseudonymKey: config.pseudonymKey, now });
  return { policy: loaded.policy, redact: loaded.context };
}

export interface RunningGateway {
  readonly app: FastifyInstance;
  readonly admin: FastifyInstance | undefined;
  /** Base URL of the FHIR API, e.g. http://127.0.0.1:8080/fhir */
  readonly url: string;
  readonly audit: AuditSink;
  readonly logger: Logger;
  /** The break-glass gate in use (the full service unless the caller injected another): stats, sweep. */
  readonly breakGlass: BreakGlassGate | undefined;
  /** Re-reads the policy file; throws (keeping the running policy) if it is invalid. */
  reload(): string;
  close(): Promise<void>;
}

export interface StartOptions {
  readonly logger?: Logger;
  readonly audit?: AuditSink;
  readonly breakGlass?: BreakGlassGate;
  readonly now?: () => Date;
  /** Listen on the admin port too (default true). */
  readonly admin?: boolean;
  /** Extra per-request gates / observers (tests, embedding). Added to the built-in ones. */
  readonly gates?: readonly Gate[];
  readonly observers?: readonly Observer[];
}

export type Gate = NonNullable<PipelineDeps['gate']>;
export type Observer = NonNullable<PipelineDeps['observe']>;

/** Runs gates in order (the first refusal wins) and every observer (one failing does not stop the rest). */
function composeHooks(gates: readonly Gate[], observers: readonly Observer[], logger: Logger): Pick<PipelineDeps, 'gate' | 'observe'> {
  return {
    gate:
      gates.length === 0
        ? undefined
        : async (ex) => {
            for (const g of gates) await g(ex);
          },
    observe:
      observers.length === 0
        ? undefined
        : (ex, outcome) => {
            for (const o of observers) {
              try {
                o(ex, outcome);
              } catch (e) {
                logger.error({ reqId: ex.id, err: e }, 'observer failed');
              }
            }
          },
  };
}

export async function startGateway(config: GatewayConfig, opts: StartOptions = {}): Promise<RunningGateway> {
  const logger = opts.logger ?? createLogger(config.logLevel);
  const now = opts.now ?? (() => new Date());
  let runtime = policyRuntime(config, now);
  const audit = opts.audit ?? (await createAuditSink(config.audit, { logger }));
  const verifier = createTokenVerifier(config.auth);
  // Built from the config unless the caller brings its own; closed with the gateway only if built here.
  const breakGlass = opts.breakGlass ?? (await openBreakGlass(config, { audit, logger, policy: () => runtime.policy, now }));
  // Built-in hooks (metrics, monitoring) register here, each from its own module.
  const gates: Gate[] = [...(opts.gates ?? [])];
  const observers: Observer[] = [...(opts.observers ?? [])];
  const app = await buildApp({
    ...composeHooks(gates, observers, logger),
    config,
    policy: () => runtime,
    verifier,
    audit,
    logger,
    steps: defaultSteps(config.limits.requestBodyBytes),
    breakGlass,
    upstreamAuthorization: createUpstreamAuthorization(config.upstream.auth),
    now,
  });
  await app.listen({ host: config.listen.host, port: config.listen.port });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.listen.port;
  let admin: FastifyInstance | undefined;
  if (opts.admin !== false) {
    admin = await buildAdminApp({ logger, audit, upstreamUrl: config.upstream.url, policyVersion: () => runtime.policy.version });
    await admin.listen({ host: config.admin.host, port: config.admin.port });
  }
  logger.info({ port, policyVersion: runtime.policy.version }, 'phi-gateway listening');
  return {
    app,
    admin,
    url: `http://${config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host}:${port}/fhir`,
    audit,
    logger,
    breakGlass,
    async close() {
      await app.close();
      await admin?.close();
      if (breakGlass !== opts.breakGlass) await (breakGlass as { close?: () => Promise<void> }).close?.();
      await audit.close();
    },
    reload() {
      runtime = policyRuntime(config, now);
      return runtime.policy.version;
    },
  };
}
