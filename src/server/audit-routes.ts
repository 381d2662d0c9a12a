/**
 * `GET /audit/export` on the proxy port (SPEC 5): for tokens whose role has the `audit-export`
 * capability, declaring purpose HCOMPL. The export itself is an audited event, recorded (durably)
 * before the first exported byte is sent; refusals are audited like any other request.
 */
import { PassThrough } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { openAuditSource } from '../audit/index.js';
import { EXPORT_FORMATS, type ExportFilter, type ExportFormat, exportRecords, parseTimeBound } from '../audit/export.js';
import { authorizationFromRawHeaders } from '../auth/header.js';
import type { AuditConfig } from '../config/types.js';
import { GatewayError } from '../errors.js';
import { type createPipeline, declaredPurpose, type PipelineDeps } from '../proxy/pipeline.js';
import { toAuditRecord } from '../proxy/record.js';

const CONTENT_TYPES: Record<ExportFormat, string> = {
  ndjson: 'application/x-ndjson',
  csv: 'text/csv; charset=utf-8; header=present',
  fhir: 'application/fhir+ndjson',
};

type Pipeline = ReturnType<typeof createPipeline>;

function one(q: Record<string, unknown>, name: string): string | undefined {
  const v = q[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new GatewayError('bad-request', `repeated ${name}`);
  return v;
}

/** Parses and validates the filters; an unparsable filter is an error, never "export everything". */
export function parseExportQuery(q: Record<string, unknown>): { format: ExportFormat; filter: ExportFilter } {
  const known = new Set(['from', 'to', 'actor', 'patient', 'purpose', 'breakGlass', 'decision', 'format']);
  for (const k of Object.keys(q)) if (!known.has(k)) throw new GatewayError('bad-request', 'unknown export parameter');
  const format = (one(q, 'format') ?? 'ndjson') as ExportFormat;
  if (!EXPORT_FORMATS.includes(format)) throw new GatewayError('bad-request', 'unknown export format');
  const from = one(q, 'from');
  const to = one(q, 'to');
  try {
    if (from) parseTimeBound(from, 'from');
    if (to) parseTimeBound(to, 'to');
  } catch {
    throw new GatewayError('bad-request', 'unparsable time bound');
  }
  const decision = one(q, 'decision');
  if (decision !== undefined && decision !== 'allow' && decision !== 'deny' && decision !== 'error') throw new GatewayError('bad-request', 'bad decision filter');
  const bg = one(q, 'breakGlass');
  if (bg !== undefined && bg !== 'true' && bg !== 'false') throw new GatewayError('bad-request', 'bad breakGlass filter');
  return {
    format,
    filter: {
      from,
      to,
      actor: one(q, 'actor'),
      patient: one(q, 'patient'),
      purpose: one(q, 'purpose'),
      decision,
      breakGlass: bg === undefined ? undefined : bg === 'true',
    },
  };
}

export function registerAuditRoutes(app: FastifyInstance, deps: PipelineDeps, pipeline: Pipeline, auditConfig: AuditConfig): void {
  app.get('/audit/export', async (request: FastifyRequest, reply: FastifyReply) => {
    const rt = deps.policy();
    const ex = pipeline.exchange(request, rt);
    ex.kind = 'export';
    let format: ExportFormat;
    let filter: ExportFilter;
    try {
      ex.principal = await deps.verifier.verify(authorizationFromRawHeaders(request.raw.rawHeaders));
      const purpose = deps.steps.parsePurpose(declaredPurpose(request.headers['x-purpose-of-use'], ex.principal), rt.policy);
      if (!purpose.ok) throw new GatewayError(purpose.code);
      ex.purpose = purpose.code;
      const role = ex.principal.roles.find((r) => {
        const compiled = rt.policy.roles.get(r);
        return compiled?.capabilities.has('audit-export') && compiled.plans.has('HCOMPL');
      });
      if (!role || purpose.code !== 'HCOMPL') throw new GatewayError('export-denied');
      ex.role = role;
      ex.rule = `roles.${role}.capabilities.audit-export`;
      ({ format, filter } = parseExportQuery(request.query as Record<string, unknown>));
      ex.details = { format, filter: Object.fromEntries(Object.entries(filter).filter(([, v]) => v !== undefined)) };
    } catch (e) {
      return pipeline.fail(ex, reply, e, 'deny');
    }
    // The export is recorded before anything is released: no record, no export.
    try {
      await deps.audit.write(toAuditRecord(ex, { status: 200, decision: 'allow', rule: ex.rule ?? '' }));
    } catch {
      return pipeline.fail(ex, reply, new GatewayError('audit-unavailable'), 'error');
    }
    const out = new PassThrough();
    const source = openAuditSource(auditConfig);
    reply
      .code(200)
      .headers({ 'content-type': CONTENT_TYPES[format], 'cache-control': 'no-store', 'x-request-id': ex.id })
      .send(out);
    exportRecords(source, out, { format, filter })
      .then(
        (p) => {
          deps.logger.info({ reqId: ex.id, exported: p.exported, scanned: p.scanned }, 'audit export completed');
          out.end();
        },
        (e: unknown) => {
          deps.logger.error({ reqId: ex.id, err: e }, 'audit export failed midway');
          out.destroy(e as Error);
        },
      )
      .finally(() => void source.close());
    return reply;
  });
}
