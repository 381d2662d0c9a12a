/**
 * `phi-gateway explain --role R --purpose P [--resource T] [--config F]`: what a role may do and
 * see for a purpose, type by type and element by element, with the policy lines that grant it, and
 * whose records: the care-relationship requirement, its sources, and what a caller without one gets.
 */
import { describeProfile } from '../redact/deidentify.js';
import { parseArgs } from 'node:util';
import { resolveConfigPath } from '../config/env.js';
import { ConfigError, type LoadedPolicy, loadGatewayConfig, loadPolicy } from '../config/load.js';
import { BREAK_GLASS } from '../policy/decide.js';
import type { AccessPlan, CompiledPolicy, CompiledRole, RelationshipSource, ResourcePlan } from '../policy/plan.js';
import { parsePurposeHeader } from '../policy/purpose.js';
import type { Io } from './check-config.js';

export const USAGE = `usage: phi-gateway explain --role R --purpose P [--resource T] [--config F]
  What role R may do and see when it declares purpose P (a purpose code, or BTG for break-glass):
  resource types, interactions, search parameters, withheld labels and each element kept, masked
  or removed, with the policy lines that grant it; and the care relationship it needs with a patient
  (required or recorded only, its sources, what a caller without one gets). --resource T: one FHIR resource type only
  (exit 1 when it is not granted). --config F, else PHI_GATEWAY_CONFIG, else config/gateway.yaml.
`;

export async function run(argv: string[], io: Io): Promise<number> {
  let values: { role?: string; purpose?: string; resource?: string; config?: string };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { role: { type: 'string' }, purpose: { type: 'string' }, resource: { type: 'string' }, config: { type: 'string' } },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    io.stderr.write(`explain: ${(e as Error).message}\n${USAGE}`);
    return 1;
  }
  if (values.role === undefined || values.purpose === undefined) {
    io.stderr.write(`explain: --role and --purpose are required\n${USAGE}`);
    return 1;
  }
  let loaded: LoadedPolicy;
  let fhirUserClaim: string;
  try {
    const config = loadGatewayConfig(resolveConfigPath(values.config, io.env), io.env);
    loaded = loadPolicy(config.policyFile, { pseudonymKey: config.pseudonymKey });
    fhirUserClaim = config.auth.fhirUserClaim ?? 'fhirUser';
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    for (const p of e.problems) io.stderr.write(`${p}\n`);
    return 1;
  }
  const { policy } = loaded;
  const roleName = values.role;
  const role = policy.roles.get(roleName);
  if (!role) {
    io.stderr.write(`explain: unknown role '${roleName}' (roles: ${[...policy.roles.keys()].join(', ')})\n`);
    return 1;
  }
  const parsed = parsePurposeHeader(values.purpose, policy.purposes);
  if (!parsed.ok) {
    io.stderr.write(`explain: '${values.purpose}' is not a purpose of this policy (${parsed.code})\n`);
    return 1;
  }
  const purpose = parsed.code;
  let plan: AccessPlan | undefined;
  let grant: string;
  if (purpose === BREAK_GLASS) {
    if (!role.breakGlass || !policy.breakGlass) {
      io.stderr.write(`explain: role ${roleName} may not break the glass\n`);
      return 1;
    }
    plan = policy.breakGlass.plan;
    grant = `${at(loaded, `roles.${roleName}.breakGlass`)} -> ${at(loaded, 'breakGlass.dataSet')}`;
  } else {
    plan = role.plans.get(purpose);
    if (!plan) {
      const can = [...role.plans.keys()].join(', ') || 'none';
      io.stderr.write(`explain: role ${roleName} cannot declare purpose ${purpose} (it may declare: ${can})\n`);
      return 1;
    }
    grant = at(loaded, plan.grantedBy);
  }
  const info = policy.purposes.get(purpose)!;
  const out: string[] = [];
  out.push(`role ${roleName}, purpose ${purpose} (${info.display})${info.minimumNecessary ? '' : ' - minimum necessary does not apply'}`);
  out.push(`policy ${loaded.file} version ${policy.version}`);
  out.push(`granted by ${grant} -> data set ${plan.dataSet}`);
  if (plan.compartment === 'patient') out.push("limited to the patient compartment of the token's patient claim");
  if (role.capabilities.size > 0) out.push(`capabilities: ${[...role.capabilities].join(', ')}`);
  if (purpose === BREAK_GLASS && policy.breakGlass) {
    const bg = policy.breakGlass;
    out.push(`break-glass: sessions of ${bg.sessionMs / 60_000} min, reason of at least ${bg.minReasonLength} characters, ${bg.maxSessionsPerDay} sessions per day; alerted and reviewed`);
  }
  out.push(...describeRelationship(loaded, role, plan, fhirUserClaim));
  let types = [...plan.types.values()];
  if (values.resource !== undefined) {
    const one = plan.types.get(values.resource);
    if (!one) {
      out.push(`${values.resource}: not granted (type-denied)`);
      io.stdout.write(`${out.join('\n')}\n`);
      return 1;
    }
    types = [one];
  }
  if (types.length === 0) out.push('no FHIR resource types are granted');
  for (const t of types) out.push('', ...describeType(loaded, grant, t));
  io.stdout.write(`${out.join('\n')}\n`);
  return 0;
}

/** `path (file:line)` for a policy path, or the path alone when it cannot be located. */
function at(loaded: LoadedPolicy, path: string): string {
  const pos = loaded.locate(path);
  return pos ? `${path} (${loaded.file}:${pos.line})` : path;
}

/** What each kind of source reads upstream (for the caller named by the token) and the patient it yields. */
function sourceReads(s: RelationshipSource): string {
  switch (s.kind) {
    case 'CareTeam':
      return 'active CareTeams listing the caller as a participant member -> CareTeam.subject';
    case 'Encounter':
      return `Encounters the caller takes part in (participant.individual), current or ended within ${s.days ?? 30} days -> Encounter.subject`;
    case 'EpisodeOfCare':
      return 'active EpisodesOfCare with the caller as care manager -> EpisodeOfCare.patient';
    case 'PractitionerRole':
      return "the caller's active PractitionerRoles -> in-progress Encounters at their locations or organizations -> Encounter.subject";
    case 'Task':
      return 'open Tasks owned by the caller (not completed, cancelled, failed, rejected or entered-in-error) -> Task.for, or the patient of Task.focus';
  }
}

/** The plan's care-relationship requirement: required or recorded only, sources, cache, and the answer without one. */
function describeRelationship(loaded: LoadedPolicy, role: CompiledRole, plan: AccessPlan, fhirUserClaim: string): string[] {
  const policy: CompiledPolicy = loaded.policy;
  const rels = policy.relationships;
  if (rels === undefined) return [];
  if (plan.purpose === BREAK_GLASS) {
    return ["care relationships: break-glass is never narrowed; its audit records say whether the patient was related (what the glass was needed for)"];
  }
  const req = plan.relationship;
  if (req === undefined) return ['care relationships: not required for this purpose'];
  const lines = [
    req.required
      ? `care relationship required by ${at(loaded, req.rule)}: only patients the caller is related to`
      : `care relationships recorded only (required: false) by ${at(loaded, req.rule)}: looked up and written to each audit record, nothing refused or narrowed`,
    `  the caller: the token's ${fhirUserClaim} claim (a token without one is related to no patient)`,
    `  read from the FHIR server with the gateway's own credentials, cached ${rels.ttlMs / 1000} s (a change upstream takes effect within it), from:`,
  ];
  const sources = req.sources.map((name) => ({ name, source: rels.sources.get(name) }));
  const w = Math.max(0, ...sources.map((s) => s.name.length));
  const kinds = sources.map((s) => (s.source ? `${s.source.kind}${s.source.kind === 'Encounter' ? ` (${s.source.days ?? 30} days)` : ''}` : '?'));
  const kw = Math.max(0, ...kinds.map((k) => k.length));
  sources.forEach((s, i) => {
    const pos = loaded.locate(`relationships.sources.${s.name}`);
    const where = pos ? `  (${loaded.file}:${pos.line})` : '';
    lines.push(`    ${s.name.padEnd(w)}  ${kinds[i]!.padEnd(kw)}  ${s.source ? sourceReads(s.source) : 'not declared'}${where}`);
  });
  if (!req.required) {
    lines.push('  without a relationship: answered as usual; the record lists the patient as unrelated');
    return lines;
  }
  lines.push(
    role.breakGlass
      ? '  without a relationship: 403 relationship-required (this role may break the glass: purpose BTG with a reason; alerted and reviewed)'
      : '  without a relationship: answered as if the patient did not exist (404 not-found for a read, an empty searchset for a search naming the patient)',
    `  a search naming no patient is narrowed to the related patients (at most ${rels.searchPatients}; more: 400 relationship-search-too-broad); resources of unrelated patients in an answer are withheld`,
  );
  return lines;
}

function describeType(loaded: LoadedPolicy, grant: string, t: ResourcePlan): string[] {
  const lines = [t.resourceType, `  granted by ${grant} -> ${at(loaded, t.rule)}`];
  lines.push(`  interactions: ${[...t.interactions].join(', ') || 'none'}`);
  lines.push(`  operations: ${[...t.operations].join(', ') || 'none'}`);
  lines.push(`  search parameters: ${[...t.searchParams].sort().join(', ')}`);
  lines.push(`  withheld labels: ${t.withhold.labels.join(', ') || 'none'}`);
  lines.push(`  elements:${t.elements.keepsAll ? ' all kept unchanged' : ''}`);
  const described = t.elements.describe();
  const width = Math.max(0, ...described.map((l) => l.element.length));
  for (const l of described) lines.push(`    ${l.action.padEnd(9)} ${l.element.padEnd(width)}  by ${l.selector}`);
  if (t.deidentify !== undefined) {
    // What the profile then does, by data type, to each element the rules keep.
    const kept = [...new Set(described.filter((l) => l.action !== 'remove' && !l.element.slice(t.resourceType.length + 1).includes('.')).map((l) => l.element.slice(t.resourceType.length + 1)))];
    const actions = describeProfile(t.deidentify, t.resourceType, kept);
    const w = Math.max(0, ...actions.map(([e]) => e.length));
    lines.push(`  de-identification (${t.deidentify}), applied after the rules to every element by data type:`);
    for (const [e, a] of actions) lines.push(`    ${e.padEnd(w)}  ${a}`);
  }
  return lines;
}
