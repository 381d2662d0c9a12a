/**
 * Writes under a patient compartment: the stored resource must be in it too (BYPASSES 11).
 * decide() judges the new body; this reads what the write would replace, with the gateway's own
 * credentials, limits and strict JSON, and refuses the write unless it belongs to the token's patient.
 */
import { Agent, type Dispatcher, request as undiciRequest } from 'undici';
import type { GatewayConfig } from '../config/types.js';
import { GatewayError } from '../errors.js';
import { compartmentViolation, isCompartmentType } from '../policy/compartment.js';
import type { ClassifiedRequest } from '../policy/request.js';
import { type Exchange, elapsedMs } from './record.js';
import { readUpstreamBody } from './upstream-body.js';
import { buildUpstreamCall } from './upstream-request.js';

export interface CompartmentWriteDeps {
  readonly config: GatewayConfig;
  upstreamAuthorization(): Promise<string | undefined>;
  readonly upstreamDispatcher?: Dispatcher | undefined;
}

export type CompartmentWriteCheck = (ex: Exchange, req: ClassifiedRequest, patient: string) => Promise<{ req: ClassifiedRequest; ifMatch: string | undefined }>;

export function createCompartmentWriteCheck(deps: CompartmentWriteDeps): CompartmentWriteCheck {
  const { config } = deps;
  const upstreamUrl = new URL(config.upstream.url);
  const upstreamBasePath = upstreamUrl.pathname.replace(/\/+$/, '');

  // The gateway's upstream dispatcher (the proxy's CA, client certificate and timeouts), else one
  // of its own with those timeouts and the system CAs; `reset` on every request so no keep-alive
  // socket outlives the check (this check has no close hook of its own).
  let checkAgent: Agent | undefined;
  const agent = (): Dispatcher => {
    if (deps.upstreamDispatcher !== undefined) return deps.upstreamDispatcher;
    checkAgent ??= new Agent({
      connect: { timeout: config.upstream.connectTimeoutMs },
      headersTimeout: config.upstream.headersTimeoutMs,
      bodyTimeout: config.upstream.bodyTimeoutMs,
    });
    return checkAgent;
  };

  /** Reads `Type/id` from the upstream with the gateway's credentials, limits and strict JSON. */
  async function readStored(ex: Exchange, type: string, id: string): Promise<{ status: number; value: unknown }> {
    const read: ClassifiedRequest = {
      method: 'GET',
      interaction: 'read',
      resourceType: type,
      id,
      versionId: undefined,
      operation: undefined,
      compartment: undefined,
      params: [],
      // type and id passed the classifier's grammars: nothing here needs encoding.
      upstreamPath: `/${type}/${id}`,
      upstreamQuery: '',
      body: undefined,
      entries: undefined,
    };
    const call = buildUpstreamCall(read, {}, { basePath: upstreamBasePath, requestId: ex.id, authorization: await deps.upstreamAuthorization() });
    const sentAt = process.hrtime.bigint();
    let res: Awaited<ReturnType<typeof undiciRequest>>;
    try {
      res = await undiciRequest(`${upstreamUrl.origin}${call.path}`, { method: 'GET', headers: call.headers, dispatcher: agent(), reset: true });
    } catch (e) {
      const code = String((e as { code?: unknown }).code ?? '');
      throw code.includes('TIMEOUT') ? new GatewayError('upstream-timeout', `compartment check: ${code}`) : new GatewayError('upstream-unavailable', `compartment check: ${code}`, { cause: e });
    } finally {
      ex.upstreamMs = (ex.upstreamMs ?? 0) + elapsedMs(sentAt);
    }
    try {
      const body = await readUpstreamBody(res.body, res.headers, config.limits);
      return { status: res.statusCode, value: body.kind === 'json' ? body.value : undefined };
    } catch (e) {
      res.body.destroy();
      throw e;
    }
  }

  /**
   * An update, patch or delete under a patient compartment replaces what is stored, which the
   * request does not show: decide() judged the new body, this judges the old resource (BYPASSES 11:
   * a token for pat-1 must not overwrite pat-12's Observation, even with a body naming pat-1).
   * Each such write (the request's, or a batch/transaction entry's) is read first and refused
   * unless every patient it references is the token's. The version read becomes the write's
   * If-Match, so the upstream refuses it if the resource changed in between.
   * Returns the request to forward (a batch/transaction body copy carries each entry's If-Match)
   * and the If-Match for a single write.
   */
  async function storedInCompartment(ex: Exchange, req: ClassifiedRequest, patient: string): Promise<{ req: ClassifiedRequest; ifMatch: string | undefined }> {
    const nested = req.interaction === 'batch' || req.interaction === 'transaction';
    const targets = nested ? (req.entries ?? []) : [req];
    const versions: Array<string | undefined> = [];
    let any = false;
    for (const t of targets) {
      versions.push(undefined);
      const i = t.interaction;
      if (i !== 'update' && i !== 'patch' && i !== 'delete') continue;
      const type = t.resourceType;
      // decide() refuses conditional writes under a compartment; a Patient is its own by id (decided).
      if (type === undefined || t.id === undefined) throw new GatewayError('compartment-denied', `${i} without an id under a compartment`);
      if (type === 'Patient' || !isCompartmentType(type)) continue;
      const stored = await readStored(ex, type, t.id);
      if (stored.status === 404 || stored.status === 410) {
        // Nothing stored: an update creates (its body was judged); nothing to patch or delete.
        if (i === 'update') continue;
        throw new GatewayError('not-found', `compartment check: upstream ${stored.status}`);
      }
      if (stored.status >= 500) throw new GatewayError('upstream-error', `compartment check: upstream ${stored.status}`);
      if (stored.status !== 200) throw new GatewayError('upstream-bad-response', `compartment check: upstream ${stored.status}`);
      const value = stored.value as { resourceType?: unknown; id?: unknown; meta?: { versionId?: unknown } } | undefined;
      if (value?.resourceType !== type || value.id !== t.id) throw new GatewayError('upstream-bad-response', 'compartment check: not the resource asked for');
      const why = compartmentViolation(value, type, patient);
      if (why !== undefined) throw new GatewayError('compartment-denied', `stored ${why}`);
      const v = value.meta?.versionId;
      if (typeof v === 'string' && /^[A-Za-z0-9\-.]{1,64}$/.test(v)) {
        versions[versions.length - 1] = v;
        any = true;
      }
    }
    if (!any) return { req, ifMatch: undefined };
    if (!nested) return { req, ifMatch: `W/"${versions[0]}"` };
    const body = req.body as { entry?: Array<{ request?: Record<string, unknown> }> };
    const entry = (body.entry ?? []).map((e, k) => (versions[k] === undefined ? e : { ...e, request: { ...e.request, ifMatch: `W/"${versions[k]}"` } }));
    return { req: { ...req, body: { ...body, entry } }, ifMatch: undefined };
  }

  return storedInCompartment;
}
