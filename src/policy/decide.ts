/**
 * The access decision (pure): from a principal, a declared purpose and a classified request to
 * allow (with the plan that filters the response) or deny (with a stable error code). Checks run
 * in a fixed order, pinned by test/unit/policy/decide.test.ts:
 *
 *   1. token purposes   2. break-glass / role selection   3. interaction and type
 *   4. search parameters, then includes   5. patient compartment   6. SMART scopes
 *
 * Batch and transaction Bundles: every entry goes through 3-6; the first denied entry denies all.
 *
 * An allowed decision may narrow the request (src/policy/includes.ts, src/policy/narrow.ts):
 * untargeted includes become one per granted target type, and a patient-context search becomes a
 * compartment search. The narrowed request is returned as `request`; it, not the classified one, is
 * what must be forwarded.
 *
 * A data set that de-identifies is addressed by pseudonyms: at step 4 its requests are judged and
 * translated to real ids (src/policy/deid-request.ts), and steps 5-6 judge the translated request.
 */
import type { Principal, SmartScope } from '../auth/principal.js';
import type { ErrorCode } from '../errors.js';
import type { PolicyInteraction } from './model.js';
import type { AccessPlan, CompiledPolicy, CompiledRole, ResourcePlan } from './plan.js';
import { patientReferencePaths } from '../fhir/tables.js';
import { compartmentViolation, isCompartmentType } from './compartment.js';
import { type PseudonymContext, translateDeidRequest } from './deid-request.js';
import { narrowIncludes } from './includes.js';
import { isPathSafeId, narrowToPatient, paramNamingOtherPatient, rebuild, rebuildBatch } from './narrow.js';
import { isCoveredBy } from './purpose.js';
import type { ClassifiedRequest, Interaction } from './request.js';

export type Decision =
  | {
      readonly allow: true;
      readonly plan: AccessPlan;
      readonly typePlan: ResourcePlan | undefined;
      readonly rule: string;
      /** The request to forward when the decision narrowed it; absent when it is the input unchanged. */
      readonly request?: ClassifiedRequest;
    }
  | { readonly allow: false; readonly code: ErrorCode; readonly rule: string };

export interface DecideInput {
  readonly policy: CompiledPolicy;
  readonly principal: Principal;
  /** The declared purpose (already parsed by parsePurposeHeader). */
  readonly purpose: string;
  /** X-Role, when the client chose among its roles. */
  readonly requestedRole?: string | undefined;
  readonly request: ClassifiedRequest;
  /** Keys and public base to resolve pseudonyms with (de-identified data sets); none: nothing resolves. */
  readonly pseudonyms?: PseudonymContext | undefined;
}

export const BREAK_GLASS = 'BTG';

/** Parameters of instance/type history beyond the search controls. */
const HISTORY_PARAMS: ReadonlySet<string> = new Set(['_count', '_since', '_at']);

/** Parameters an operation may take when the operation itself is granted. */
const OPERATION_PARAMS: Readonly<Record<string, ReadonlySet<string>>> = Object.assign(Object.create(null), {
  $everything: new Set(['start', 'end', '_since', '_type', '_count']),
});

const deny = (code: ErrorCode, rule: string): Decision => ({ allow: false, code, rule });

export function decide(input: DecideInput): Decision {
  const { policy, principal, purpose, request } = input;

  // Unknown purposes never get this far (parsePurposeHeader), but a hand-built call must not pass.
  if (!policy.purposes.has(purpose)) return deny('purpose-unknown', `purposes.${purpose}`);

  // 1. The header is only trustworthy when the token itself allows that purpose.
  if (principal.tokenPurposes !== undefined) {
    const covered = principal.tokenPurposes.some((tp) => isCoveredBy(purpose, tp, policy.purposes));
    if (!covered) return deny('purpose-not-in-token', `token.purpose_of_use does not cover ${purpose}`);
  }

  // 2. Which role (and so which data set) applies.
  const selected = purpose === BREAK_GLASS ? selectBreakGlass(input) : selectRole(input);
  if (!selected.ok) return selected.decision;
  const { plan, grant } = selected;

  // 3-6, once for a plain request, per entry for batch/transaction.
  if (request.interaction === 'batch' || request.interaction === 'transaction') {
    const entries = request.entries;
    if (entries === undefined) return deny('request-unclassified', `${grant} -> ${request.interaction} without entries`);
    const forwarded: ClassifiedRequest[] = [];
    for (let i = 0; i < entries.length; i++) {
      const d = decideOne(plan, grant, principal, entries[i], true, input.pseudonyms);
      if (!d.allow) return deny(d.code, `${request.interaction}.entry[${i}]: ${d.rule}`);
      forwarded.push(d.request ?? entries[i]);
    }
    const rule = `${grant} -> ${request.interaction} of ${entries.length} entries`;
    if (forwarded.every((e, i) => e === entries[i])) return { allow: true, plan, typePlan: undefined, rule };
    const narrowed = rebuildBatch(request, forwarded);
    if (narrowed === undefined) return deny('request-unclassified', `${rule}: Bundle body does not match its entries`);
    return { allow: true, plan, typePlan: undefined, rule, request: narrowed };
  }
  return decideOne(plan, grant, principal, request, false, input.pseudonyms);
}

type Selection =
  | { readonly ok: true; readonly plan: AccessPlan; readonly grant: string }
  | { readonly ok: false; readonly decision: Decision };

function heldRoles(input: DecideInput): CompiledRole[] {
  const out: CompiledRole[] = [];
  const seen = new Set<string>();
  for (const name of input.principal.roles) {
    if (seen.has(name)) continue;
    seen.add(name);
    const role = input.policy.roles.get(name);
    if (role) out.push(role);
  }
  return out;
}

function selectRole(input: DecideInput): Selection {
  const { purpose, requestedRole, principal } = input;
  if (requestedRole !== undefined && !principal.roles.includes(requestedRole)) {
    return { ok: false, decision: deny('role-not-held', `X-Role ${requestedRole} is not held`) };
  }
  let candidates = heldRoles(input).filter((r) => r.plans.has(purpose));
  if (requestedRole !== undefined) candidates = candidates.filter((r) => r.name === requestedRole);
  if (candidates.length === 0) {
    const who = requestedRole !== undefined ? `role ${requestedRole}` : 'no role held';
    return { ok: false, decision: deny('purpose-not-permitted', `${who} grants purpose ${purpose}`) };
  }
  const first = candidates[0].plans.get(purpose)!;
  // Roles that grant the same data set the same way are interchangeable; anything else must be chosen.
  const ambiguous = candidates.some((r) => {
    const p = r.plans.get(purpose)!;
    return p.dataSet !== first.dataSet || p.compartment !== first.compartment;
  });
  if (ambiguous) {
    const names = candidates.map((r) => r.name).join(', ');
    return { ok: false, decision: deny('role-ambiguous', `roles ${names} grant ${purpose} with different data sets`) };
  }
  return { ok: true, plan: first, grant: first.grantedBy };
}

function selectBreakGlass(input: DecideInput): Selection {
  const { policy, requestedRole, principal } = input;
  if (requestedRole !== undefined && !principal.roles.includes(requestedRole)) {
    return { ok: false, decision: deny('role-not-held', `X-Role ${requestedRole} is not held`) };
  }
  const bg = policy.breakGlass;
  let eligible = heldRoles(input).filter((r) => r.breakGlass);
  if (requestedRole !== undefined) eligible = eligible.filter((r) => r.name === requestedRole);
  if (bg === undefined || eligible.length === 0) {
    return { ok: false, decision: deny('break-glass-not-eligible', 'no break-glass eligible role held') };
  }
  return { ok: true, plan: bg.plan, grant: `roles.${eligible[0].name}.breakGlass -> breakGlass.dataSet ${bg.dataSet}` };
}

const NEEDS: Partial<Record<Interaction, PolicyInteraction>> = {
  read: 'read',
  vread: 'read',
  'search-type': 'search',
  'search-compartment': 'search',
  'history-instance': 'history',
  'history-type': 'history',
  create: 'create',
  update: 'update',
  patch: 'patch',
  delete: 'delete',
};

function decideOne(
  plan: AccessPlan,
  grant: string,
  principal: Principal,
  classified: ClassifiedRequest,
  inBatch: boolean,
  pseudonyms: PseudonymContext | undefined,
): Decision {
  let req = classified;
  const interaction = req.interaction;

  // 3. Interaction and type.
  if (interaction === 'capabilities') {
    if (req.params.length > 0) {
      // /metadata takes no filtering parameters worth forwarding; mode= is harmless but not needed.
      for (const [name] of req.params) if (name !== 'mode') return deny('search-param-denied', `${grant} -> capabilities: parameter ${name}`);
    }
    return { allow: true, plan, typePlan: undefined, rule: `${grant} -> capabilities` };
  }
  if (interaction === 'search-system' || interaction === 'history-system') {
    return deny('interaction-denied', `${grant} -> ${interaction} is never granted`);
  }
  if (interaction === 'batch' || interaction === 'transaction') {
    // Nested Bundles would hide entries from this check.
    return deny('interaction-denied', `${grant} -> ${interaction} nested in ${inBatch ? 'a batch' : 'a request'}`);
  }
  const type = req.resourceType;
  if (type === undefined) {
    if (interaction === 'operation') return deny('interaction-denied', `${grant} -> system operation ${req.operation ?? ''}`.trim());
    return deny('request-unclassified', `${grant} -> ${interaction} without a resource type`);
  }
  const typePlan = plan.types.get(type);
  if (typePlan === undefined) return deny('type-denied', `${grant} -> dataSets.${plan.dataSet}: type ${type} not granted`);
  const where = `${grant} -> ${typePlan.rule}`;

  if (interaction === 'operation') {
    if (req.operation === undefined || !typePlan.operations.has(req.operation)) {
      return deny('interaction-denied', `${where}: operation ${req.operation ?? '(none)'} not granted`);
    }
  } else {
    const needed = NEEDS[interaction];
    if (needed === undefined) return deny('request-unclassified', `${where}: interaction ${interaction}`);
    if (!typePlan.interactions.has(needed)) return deny('interaction-denied', `${where}: ${needed} not granted`);
  }
  // A conditional create (its If-None-Exist criteria are its params, see classify) is a create plus
  // a search: 200 or 201 tells whether something matches, so it needs the search grant too, and its
  // criteria go through step 4 exactly as a search's parameters would.
  const conditionalCreate = interaction === 'create' && req.params.length > 0;
  if (conditionalCreate && !typePlan.interactions.has('search')) return deny('interaction-denied', `${where}: conditional create needs search`);
  if (interaction === 'search-compartment') {
    const owner = req.compartment;
    if (owner === undefined) return deny('request-unclassified', `${where}: compartment search without a compartment`);
    const ownerPlan = plan.types.get(owner.type);
    if (ownerPlan === undefined) return deny('type-denied', `${grant} -> dataSets.${plan.dataSet}: compartment type ${owner.type} not granted`);
    if (!ownerPlan.interactions.has('read')) return deny('interaction-denied', `${grant} -> ${ownerPlan.rule}: read of compartment owner not granted`);
  }

  // 4. Search parameters: searching on what the role cannot see is an oracle.
  const mayWithhold = typePlan.withhold.labels.length > 0 || principal.patient !== undefined || plan.compartment !== undefined;
  const bad = deniedParam(req, typePlan, mayWithhold);
  if (bad !== undefined) return deny('search-param-denied', `${where}: parameter ${bad} not allowed`);
  if (typePlan.deidentify !== undefined) {
    // Pseudonyms in, real ids out: what follows judges (and forwards) the translated request.
    const t = translateDeidRequest(req, typePlan, plan.types, pseudonyms);
    if (!t.ok) return deny(t.code, `${where}: ${t.why}`);
    req = t.request;
  }
  // Includes reach other types: judged (and narrowed) against the plan before the upstream is asked.
  let inc = narrowIncludes(req.params, type, plan.types);
  if (!inc.ok) return deny('type-denied', `${where}: ${inc.param} ${inc.why}`);
  if (principal.scopes !== undefined) {
    // An included resource is a read of its type: the token's scopes must cover it as well as the
    // plan (step 6 judges the searched type itself).
    const scopes = principal.scopes;
    const asRead: ClassifiedRequest = { ...req, interaction: 'read', params: [] };
    inc = narrowIncludes(req.params, type, plan.types, (t) => scopesAllow(scopes, principal.patient !== undefined, asRead, t));
    if (!inc.ok) return deny('scope-denied', `${where}: ${inc.param} ${inc.why} by the token's scopes`);
  }
  let forward = inc.params === req.params ? req : rebuild(req, { params: inc.params });

  // 5. Patient compartment.
  const patient = principal.patient;
  if (plan.compartment === 'patient' && patient === undefined) {
    return deny('compartment-denied', `${grant}: compartment role without a patient claim`);
  }
  if (patient !== undefined) {
    if (type === 'Patient' && req.id !== undefined && req.id !== patient) {
      return deny('compartment-denied', `${where}: Patient outside the token's compartment`);
    }
    if (interaction === 'search-compartment') {
      const owner = req.compartment!;
      // Another kind of compartment (Practitioner/...) would reach other patients' records.
      if (owner.type !== 'Patient' || owner.id !== patient) {
        return deny('compartment-denied', `${where}: compartment outside the token's patient`);
      }
    }
    const write = writeInCompartment(req, type, patient);
    if (write !== undefined) return deny('compartment-denied', `${where}: ${write}`);
    // Its criteria would match other patients' resources too (which the filter then withholds, an
    // answer that depends on them); If-None-Exist cannot be narrowed to a compartment path.
    if (conditionalCreate) return deny('compartment-denied', `${where}: conditional create under a patient compartment`);
    // The upstream cannot narrow a type history to one patient, and filtering it afterwards would
    // still show how many versions others have.
    if (interaction === 'history-type' && isCompartmentType(type)) {
      return deny('compartment-denied', `${where}: type history under a patient compartment`);
    }
    if (interaction === 'search-type' || interaction === 'search-compartment') {
      // Refused by the value named alone, so the answer never depends on what that patient has.
      const other = paramNamingOtherPatient(type, req.params, patient);
      if (other !== undefined) return deny('compartment-denied', `${where}: parameter ${other} names a patient outside the token's compartment`);
    }
    if (interaction === 'search-type' && isCompartmentType(type)) {
      if (!isPathSafeId(patient)) return deny('compartment-denied', `${where}: patient claim is not a FHIR id`);
      forward = narrowToPatient(req, forward.params, patient);
    }
  }

  // 6. SMART scopes narrow, never widen, what the role grants.
  if (principal.scopes !== undefined && !scopesAllow(principal.scopes, principal.patient !== undefined, req, type)) {
    return deny('scope-denied', `${where}: no scope covers ${interaction} of ${type}`);
  }
  if (principal.scopes !== undefined && conditionalCreate && !scopesAllow(principal.scopes, principal.patient !== undefined, { ...req, interaction: 'search-type' }, type)) {
    return deny('scope-denied', `${where}: no scope covers the search of a conditional create of ${type}`);
  }

  if (forward === classified) return { allow: true, plan, typePlan, rule: where };
  return { allow: true, plan, typePlan, rule: where, request: forward };
}

/**
 * Writes under a patient compartment (BYPASSES 11): a create or update may neither move a resource
 * out of the compartment nor create one outside it, so every patient reference on the type's
 * compartment paths in the body must be exactly `Patient/<patient>`, and there must be one
 * (src/policy/compartment.ts). What an update, patch or delete replaces is not in the request: the
 * pipeline reads the stored resource and refuses unless it is in the compartment too
 * (src/proxy/pipeline.ts), so only id-addressed ones pass here. A patch must also leave the
 * compartment references and the id alone: JSON Patch paths are checked, FHIRPath Patch (whose
 * paths are expressions) is refused. Returns why, or undefined when the write stays inside.
 */
function writeInCompartment(req: ClassifiedRequest, type: string, patient: string): string | undefined {
  const i = req.interaction;
  if (i !== 'create' && i !== 'update' && i !== 'patch' && i !== 'delete') return undefined;
  if (!isCompartmentType(type)) return undefined; // not patient data (Practitioner, Organization...)
  if (type === 'Patient') {
    // Update, patch and delete of the token's own Patient were checked by id above; a new Patient
    // is by definition someone else.
    if (i === 'create') return 'create of a Patient under a patient compartment';
    if (req.id === undefined) return `conditional ${i} of Patient under a patient compartment`;
    if (i === 'update') return compartmentViolation(req.body, type, patient);
    if (i === 'patch') return patchTouches(req.body, type);
    return undefined;
  }
  if (i !== 'create' && req.id === undefined) return `conditional ${i} of ${type} under a patient compartment`;
  if (i === 'delete') return undefined;
  if (i === 'patch') return patchTouches(req.body, type);
  return compartmentViolation(req.body, type, patient);
}

/** Unescapes one JSON Pointer token (RFC 6901). */
function pointerToken(t: string): string {
  return t.replace(/~1/g, '/').replace(/~0/g, '~');
}

/** Why a patch could move its target between compartments (or re-id it), or undefined. */
function patchTouches(body: unknown, type: string): string | undefined {
  if (!Array.isArray(body)) return `FHIRPath Patch of ${type} cannot be checked against the compartment`;
  const guarded = new Set(['id', ...patientReferencePaths(type).map((p) => p.split('.')[0]!)]);
  for (const op of body as Array<Record<string, unknown>>) {
    for (const ptr of [op.path, op.from]) {
      if (typeof ptr !== 'string') continue;
      // '' is the whole document; otherwise the first token names the top-level element.
      const first = ptr === '' ? '' : pointerToken(ptr.split('/')[1] ?? '');
      if (first === '' || guarded.has(first)) return `patch of ${type} touches ${first === '' ? 'the whole resource' : first}`;
    }
  }
  return undefined;
}

const idHiddenCache = new WeakMap<ResourcePlan, boolean>();
export function idHidden(typePlan: ResourcePlan): boolean {
  let hidden = idHiddenCache.get(typePlan);
  if (hidden === undefined) {
    const idElement = `${typePlan.resourceType}.id`;
    hidden = typePlan.elements.describe().some((l) => l.element === idElement && l.action !== 'keep');
    idHiddenCache.set(typePlan, hidden);
  }
  return hidden;
}

/**
 * Whether the caller may search (or sort) on `code`: granted by the plan, and not the real id of
 * a resource whose id is pseudonymized or removed (searching or ordering by it links the two).
 */
function searchable(code: string, typePlan: ResourcePlan): boolean {
  if (!typePlan.searchParams.has(code)) return false;
  return !(code === '_id' && idHidden(typePlan));
}

/**
 * The first parameter (by name) that the type plan does not allow, or undefined. Where the plan
 * de-identifies, which parameters and sort keys it allows is judged with the pseudonyms instead
 * (src/policy/deid-request.ts); the checks on shape and counts here still apply.
 */
function deniedParam(req: ClassifiedRequest, typePlan: ResourcePlan, mayWithhold: boolean): string | undefined {
  const allowed = typePlan.searchParams;
  const deid = typePlan.deidentify !== undefined;
  const interaction = req.interaction;
  const extra =
    interaction === 'history-instance' || interaction === 'history-type'
      ? HISTORY_PARAMS
      : interaction === 'operation' && req.operation !== undefined
        ? OPERATION_PARAMS[req.operation]
        : undefined;
  for (const [name, value] of req.params) {
    if (name === '') return '(empty)';
    if (extra?.has(name)) continue;
    // Chains and reverse chains are oracles on other resources: only if granted word for word.
    if (name.includes('.') || name === '_has' || name.startsWith('_has:')) {
      if (allowed.has(name) && !deid) continue;
      return name;
    }
    const colon = name.indexOf(':');
    const base = colon < 0 ? name : name.slice(0, colon);
    // An upstream offset counts resources the gateway then withholds (BYPASSES 16); the gateway pages.
    if (base === '_offset') return name;
    // `_elements:exclude=meta` (R5, honoured by some servers) would drop the labels withholding reads.
    if (base === '_elements' && colon >= 0) return name;
    if (!deid && !searchable(base, typePlan)) return name;
    if (base === '_sort' && !deid) {
      // Ordering by a value is an oracle on it as much as searching on it: the same judgement.
      for (const raw of value.split(',')) {
        const key = raw.trim().replace(/^-/, '');
        if (key === '' || key.includes('.') || !searchable(key, typePlan)) return `_sort=${key}`;
      }
    }
    // `_summary=text` returns the narrative alone: it repeats what the plan removes.
    if (base === '_summary' && value === 'text' && !typePlan.elements.keepsAll) return '_summary=text';
    // A bare count counts what the caller may not see (BYPASSES 3): when resources of this type
    // can be withheld, `_summary=count` and `_count=0` answer "how many exist", not "how many you see".
    if (mayWithhold && ((base === '_summary' && value === 'count') || (base === '_count' && /^0+$/.test(value.trim())))) return `${base}=${value}`;
  }
  return undefined;
}

const PERMISSION: Partial<Record<Interaction, 'c' | 'r' | 'u' | 'd' | 's'>> = {
  read: 'r',
  vread: 'r',
  'search-type': 's',
  'search-compartment': 's',
  'history-instance': 'r',
  'history-type': 's',
  create: 'c',
  update: 'u',
  patch: 'u',
  delete: 'd',
  operation: 'r',
};

function scopesAllow(scopes: readonly SmartScope[], hasPatient: boolean, req: ClassifiedRequest, type: string): boolean {
  const perm = PERMISSION[req.interaction];
  if (perm === undefined) return false;
  const usable = scopes.filter((s) => s.context !== 'patient' || hasPatient);
  const covers = (s: SmartScope, t: string, p: 'c' | 'r' | 'u' | 'd' | 's') => {
    if (s.resourceType !== '*' && s.resourceType !== t) return false;
    if (!s.permissions.has(p)) return false;
    if (s.params.length === 0) return true;
    // A scope limited by parameters only covers searches that carry exactly those filters.
    if (p !== 's') return false;
    return s.params.every(([k, v]) => req.params.some(([rk, rv]) => rk === k && rv === v));
  };
  if (!usable.some((s) => covers(s, type, perm))) return false;
  // $everything returns every type in the compartment: it needs a wildcard search scope too.
  if (req.interaction === 'operation' && req.operation === '$everything') {
    return usable.some((s) => s.resourceType === '*' && s.params.length === 0 && s.permissions.has('r') && s.permissions.has('s'));
  }
  return true;
}
