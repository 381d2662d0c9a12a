// Shared fixtures for the break-glass unit tests: the shipped policy, principals, a recording sink.
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { AuditRecord, AuditSink } from '../../../src/audit/record.js';
import type { Principal } from '../../../src/auth/principal.js';
import { loadPolicy } from '../../../src/config/load.js';
import { isR4ResourceType } from '../../../src/fhir/resource-types.js';
import { classify } from '../../../src/policy/classify.js';
import type { CompiledBreakGlass, CompiledPolicy } from '../../../src/policy/plan.js';
import type { ClassifiedRequest } from '../../../src/policy/request.js';
import { createLogger } from '../../../src/server/logger.js';

export function shippedPolicy(over: Partial<Omit<CompiledBreakGlass, 'plan'>> = {}): CompiledPolicy {
  const { policy } = loadPolicy(fileURLToPath(new URL('../../../config/policy.yaml', import.meta.url)));
  return { ...policy, breakGlass: { ...policy.breakGlass!, ...over } };
}

export function principal(sub: string, roles: string[] = ['clinician'], over: Partial<Principal> = {}): Principal {
  return {
    iss: 'https://idp.test',
    sub,
    clientId: 'ehr-app',
    jti: `jti-${sub}`,
    roles,
    tokenPurposes: undefined,
    patient: undefined,
    scopes: undefined,
    familyName: undefined,
    exp: 4_000_000_000,
    ...over,
  };
}

export function request(url: string): ClassifiedRequest {
  return classify({ method: 'GET', url, headers: {}, body: undefined }, { isResourceType: isR4ResourceType, maxBodyBytes: 1 << 20 });
}

/** Keeps what it is given; `failing = true` makes writes reject (an audit outage). */
export class MemorySink implements AuditSink {
  readonly records: AuditRecord[] = [];
  failing = false;
  async write(r: AuditRecord): Promise<void> {
    if (this.failing) throw new Error('audit down');
    this.records.push(structuredClone(r));
  }
  async ready(): Promise<boolean> {
    return !this.failing;
  }
  async close(): Promise<void> {}
  kinds(): string[] {
    return this.records.map((r) => r.kind);
  }
}

export class Clock {
  constructor(public t: number = Date.parse('2025-03-01T10:00:00Z')) {}
  readonly now = (): Date => new Date(this.t);
  advance(ms: number): void {
    this.t += ms;
  }
}

/** A real gateway logger writing into `lines`, for "no reason text in logs" assertions. */
export function capturingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return { logger: createLogger('debug', { write: (l: string) => void lines.push(l) }), lines };
}
