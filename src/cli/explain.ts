/**
 * `phi-gateway explain --role R --purpose P [--resource T] [--patient ID [--actor REF]] [--config F]`:
 * what a role may do and see for a purpose, type by type and element by element, with the policy
 * lines that grant it, and whose records: the care-relationship requirement, its sources, and what
 * a caller without one gets; the patients' consents the policy enforces.
 *
 * `explain --patient ID`: the policy's consent section as compiled and that patient's consent
 * directives as the gateway reads them (from the FHIR server, with its own upstream credentials,
 * dispatcher and limits, as it would for a request); with a role and purpose, what each consent
 * does to that role's access to the patient. Reading a patient's consents is recorded in the audit
 * trail (kind `audit-export`, cli-audit.ts), and nothing is shown when that record cannot be written.
 */
import { describeProfile } from '../redact/deidentify.js';
import { parseArgs } from 'node:util';
import type { Dispatcher } from 'undici';
import { resolveConfigPath } from '../config/env.js';
import { ConfigError, type LoadedPolicy, loadGatewayConfig, loadPolicy } from '../config/load.js';
import type { GatewayConfig } from '../config/types.js';
import { describeConsents } from '../consent/describe.js';
import { decideConsent, judgeResource } from '../consent/evaluate.js';
import type { CompiledConsent, ConsentAccess, ConsentVerdict, ParsedConsent, PatientConsents } from '../consent/types.js';
import { isGatewayError } from '../errors.js';
import { tailTypeId } from '../fhir/reference.js';
import { BREAK_GLASS } from '../policy/decide.js';
import { ACT_CODE, CONFIDENTIALITY } from '../policy/labels.js';
import type { AccessPlan, CompiledPolicy, CompiledRole, RelationshipSource, ResourcePlan } from '../policy/plan.js';
import { parsePurposeHeader } from '../policy/purpose.js';
import type { Io } from './check-config.js';

export const USAGE = `usage: phi-gateway explain --role R --purpose P [--resource T] [--patient ID [--actor REF]] [--config F]
       phi-gateway explain --patient ID [--config F]
  What role R may do and see when it declares purpose P (a purpose code, or BTG for break-glass):
  resource types, interactions, search parameters, withheld labels and each element kept, masked
  or removed, with the policy lines that grant it; the care relationship it needs with a patient
  (required or recorded only, its sources, what a caller without one gets); and how patients'
  consents apply to it (the consent section, an authorization the purpose needs). --resource T:
  one FHIR resource type only (exit 1 when it is not granted).
  --patient ID: the consent section as compiled and that patient's consent directives as the
  gateway reads them from the FHIR server (its own credentials; the read is recorded in the audit
  trail); with --role and --purpose, what each consent does to that role's access to the patient.
  --actor REF: the caller as consents name their actors (the token's fhirUser, e.g.
  Practitioner/p1); without it, a caller no consent names.
  --config F, else PHI_GATEWAY_CONFIG, else config/gateway.yaml.
`;

export async function run(argv: string[], io: Io): Promise<number> {
  let values: { role?: string; purpose?: string; resource?: string; config?: string; patient?: string; actor?: string };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        role: { type: 'string' },
        purpose: { type: 'string' },
        resource: { type: 'string' },
        config: { type: 'string' },
        patient: { type: 'string' },
        actor: { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    io.stderr.write(`explain: ${(e as Error).message}\n${USAGE}`);
    return 1;
  }
  const forRole = values.role !== undefined || values.purpose !== undefined;
  if ((forRole || values.patient === undefined) && (values.role === undefined || values.purpose === undefined)) {
    io.stderr.write(`explain: --role and --purpose are required (or --patient alone)\n${USAGE}`);
    return 1;
  }
  let patient: string | undefined;
  if (values.patient !== undefined) {
    patient = values.patient.startsWith('Patient/') ? values.patient.slice('Patient/'.length) : values.patient;
    if (!FHIR_ID.test(patient)) {
      io.stderr.write('explain: --patient must be a FHIR id (or Patient/id)\n');
      return 1;
    }
  }
  let actor: string | undefined;
  if (values.actor !== undefined && patient === undefined) {
    io.stderr.write(`explain: --actor is for --patient (what the patient's consents do to that caller)\n${USAGE}`);
    return 1;
  }
  if (values.actor !== undefined) {
    const ref = tailTypeId(values.actor);
    if (ref === undefined) {
      io.stderr.write('explain: --actor must be a reference such as Practitioner/p1\n');
      return 1;
    }
    actor = `${ref.type}/${ref.id}`;
  }
  let loaded: LoadedPolicy;
  let fhirUserClaim: string;
  let config: GatewayConfig;
  try {
    config = loadGatewayConfig(resolveConfigPath(values.config, io.env), io.env);
    loaded = loadPolicy(config.policyFile, { pseudonymKey: config.pseudonymKey });
    fhirUserClaim = config.auth.fhirUserClaim ?? 'fhirUser';
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    for (const p of e.problems) io.stderr.write(`${p}\n`);
    return 1;
  }
  if (values.role === undefined || values.purpose === undefined) {
    const out = [`policy ${loaded.file} version ${loaded.policy.version}`];
    return explainPatient(out, { loaded, config, patient: patient!, actor, fhirUserClaim }, io);
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
  if (plan.authorization !== undefined) {
    out.push(
      `authorization required by ${at(loaded, plan.authorization)}: patient data is released for ${purpose} only under a consent of the patient permitting it (HIPAA 164.508)`,
    );
  }
  if (plan.compartment === 'patient') out.push("limited to the patient compartment of the token's patient claim");
  if (role.capabilities.size > 0) out.push(`capabilities: ${[...role.capabilities].join(', ')}`);
  if (purpose === BREAK_GLASS && policy.breakGlass) {
    const bg = policy.breakGlass;
    out.push(`break-glass: sessions of ${bg.sessionMs / 60_000} min, reason of at least ${bg.minReasonLength} characters, ${bg.maxSessionsPerDay} sessions per day; alerted and reviewed`);
  }
  out.push(...describeRelationship(loaded, role, plan, fhirUserClaim));
  if (policy.consent !== undefined) out.push(...describeConsentSection(loaded, policy.consent, plan));
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
  if (patient !== undefined) {
    out.push('');
    return explainPatient(out, { loaded, config, patient, actor, fhirUserClaim, access: { role: roleName, plan, types: types.map((t) => t.resourceType) } }, io);
  }
  io.stdout.write(`${out.join('\n')}\n`);
  return 0;
}

/** A FHIR id (what `--patient` may name). */
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
/** How much of the Part 2 notice is shown. */
const NOTICE_SHOWN = 80;

interface PatientQuery {
  readonly loaded: LoadedPolicy;
  readonly config: GatewayConfig;
  readonly patient: string;
  readonly actor: string | undefined;
  readonly fhirUserClaim: string;
  /** With --role and --purpose: the plan, and the resource types explained. */
  readonly access?: { readonly role: string; readonly plan: AccessPlan; readonly types: readonly string[] };
}

/**
 * `--patient`: the consent section (unless shown with the role), then the patient's consents read from the upstream (the read
 * recorded in the audit trail first: nothing is shown unless it was), then, for a role and purpose,
 * what each consent does to it. Writes `out` and what follows; exit 0, or 1 when they cannot be read.
 */
async function explainPatient(out: string[], q: PatientQuery, io: Io): Promise<number> {
  const { loaded, patient } = q;
  const consent = loaded.policy.consent;
  if (consent === undefined) {
    out.push('the consent section is off: consents are not enforced');
    io.stdout.write(`${out.join('\n')}\n`);
    return 0;
  }
  // With a role and purpose the section was shown with them.
  if (q.access === undefined) out.push(...describeConsentSection(loaded, consent, undefined));
  let found: PatientConsents;
  try {
    found = await readConsents(q, io);
  } catch (e) {
    const why = isGatewayError(e) ? `${e.code}${e.detail ? `: ${e.detail}` : ''}` : (e as Error).message.split('\n')[0];
    io.stderr.write(`explain: the consents of patient ${patient} could not be read: ${why}\n`);
    return 1;
  }
  const now = Date.now();
  out.push('');
  if (found.consents.length === 0 && found.unevaluable.length === 0) out.push(`patient ${patient}: no consent directives`);
  else {
    out.push(`patient ${patient}: consent directives as the gateway reads them (active, scope patient-privacy):`);
    for (const line of describeConsents(found, now)) out.push(`  ${line}`);
  }
  if (q.access !== undefined) out.push(...describeConsentAccess(q, consent, found, now));
  io.stdout.write(`${out.join('\n')}\n`);
  return 0;
}

/** The patient's consents from the upstream as a request would read them, the read recorded first. */
async function readConsents(q: PatientQuery, io: Io): Promise<PatientConsents> {
  const { config } = q;
  const [{ Agent }, { pino }, { upstreamTlsOptions }, { createUpstreamAuthorization }, { consentResolverOptions, fetchPatientConsents }, { withCliAuditRecord }] = await Promise.all([
    import('undici'),
    import('pino'),
    import('../server/app.js'),
    import('../proxy/upstream-auth.js'),
    import('../consent/resolver.js'),
    import('./cli-audit.js'),
  ]);
  // The upstream is reached the way the gateway reaches it: its CA, client certificate, timeouts and credentials.
  const dispatcher: Dispatcher = new Agent({
    connect: { ...upstreamTlsOptions(config.upstream), timeout: config.upstream.connectTimeoutMs },
    headersTimeout: config.upstream.headersTimeoutMs,
    bodyTimeout: config.upstream.bodyTimeoutMs,
  });
  try {
    // Unevaluable consents are shown below; the resolver's warnings would only repeat them.
    const options = consentResolverOptions(config, { logger: pino({ level: 'silent' }), dispatcher, upstreamAuthorization: createUpstreamAuthorization(config.upstream.auth) });
    const { value } = await withCliAuditRecord(
      config.audit,
      {
        command: 'explain --patient',
        details: { role: q.access?.role, purpose: q.access?.plan.purpose },
        patients: [q.patient],
        policyVersion: q.loaded.policy.version,
      },
      io,
      async () => {
        const found = await fetchPatientConsents(q.patient, options);
        return { value: found, details: { consents: found.consents.map((c) => c.id), unevaluable: found.unevaluable.map((u) => u.id) } };
      },
    );
    return value;
  } finally {
    await dispatcher.close();
  }
}

/** `system|code` as shown: the HL7 code system by its name. */
function shortLabel(key: string): string {
  const bar = key.indexOf('|');
  const system = key.slice(0, bar);
  return system === ACT_CODE || system === CONFIDENTIALITY ? `${system.slice(system.lastIndexOf('/') + 1)}|${key.slice(bar + 1)}` : key;
}

/** The policy's consent section as compiled, and (with a plan) whether it applies to the plan's purpose. */
function describeConsentSection(loaded: LoadedPolicy, c: CompiledConsent, plan: AccessPlan | undefined): string[] {
  const notice = c.part2.notice.length > NOTICE_SHOWN ? `${c.part2.notice.slice(0, NOTICE_SHOWN)}…` : c.part2.notice;
  const exempt = [...c.exemptPurposes].sort();
  const lines = [
    `consent: patients' consent directives enforced on every answer, by ${at(loaded, 'consent')}`,
    `  read from the FHIR server with the gateway's own credentials, cached ${c.ttlMs / 1000} s (a consent created or revoked upstream takes effect within it)`,
    c.overlap === 'deny-wins'
      ? '  overlapping consents: deny-wins (any consent that denies withholds)'
      : '  overlapping consents: latest (the newest consent, by dateTime, that has an opinion decides)',
    `  exempt purposes (the patient's own access; consents not applied): ${exempt.join(', ') || 'none'}`,
    c.breakGlassOverrides
      ? '  break-glass: releases what a consent denies (override; each overridden consent recorded)'
      : '  break-glass: never overrides a consent that denies',
    `  42 CFR Part 2 labels: ${c.part2.labels.map(shortLabel).join(', ')}: released only under a consent permitting the caller and the purpose, with the notice "${notice}"`,
    c.part2.breakGlass
      ? '  42 CFR Part 2 under break-glass: released without a consent (medical emergency, 42 CFR 2.51), recorded as overridden'
      : '  42 CFR Part 2 under break-glass: withheld without a consent permitting the caller and the purpose',
  ];
  if (plan !== undefined) {
    lines.push(
      c.exemptPurposes.has(plan.purpose)
        ? `  purpose ${plan.purpose}: exempt, consents are not applied`
        : `  purpose ${plan.purpose}: consents applied; what a consent withholds is answered as if it did not exist`,
    );
  }
  return lines;
}

/** One stand-in resource of `type` about `patient`: what the type and the patient decide, not its content. */
function standIn(type: string, patient: string, part2Label?: string): Record<string, unknown> {
  const about = type === 'Patient' ? { id: patient } : { subject: { reference: `Patient/${patient}` }, patient: { reference: `Patient/${patient}` } };
  if (part2Label === undefined) return { resourceType: type, ...about };
  const bar = part2Label.indexOf('|');
  return { resourceType: type, ...about, meta: { security: [{ system: part2Label.slice(0, bar), code: part2Label.slice(bar + 1) }] } };
}

/** Whether a provision (or one nested) decides on a resource's content: codes, labels or particular records. */
function decidesByContent(c: ParsedConsent): boolean {
  const walk = (p: ParsedConsent['root']): boolean => p.codes !== undefined || p.labels !== undefined || p.data !== undefined || p.provisions.some(walk);
  return walk(c.root);
}

/** `a: T1, T2; b: T3`, the types grouped by what they get, in the order first seen. */
function grouped(types: readonly string[], outcome: (type: string) => string): string {
  const by = new Map<string, string[]>();
  for (const t of types) {
    const o = outcome(t);
    by.set(o, [...(by.get(o) ?? []), t]);
  }
  return [...by].map(([o, ts]) => `${o}: ${ts.join(', ')}`).join('; ');
}

function verdictText(v: ConsentVerdict): string {
  if (v.release) {
    const notes = [v.part2 ? 'with the 42 CFR Part 2 notice' : '', v.permitted?.length ? `permitted by ${v.permitted.join(', ')}` : '', v.overridden?.length ? `break-glass overriding ${v.overridden.join(', ')}` : ''];
    const n = notes.filter(Boolean).join(', ');
    return n ? `released (${n})` : 'released';
  }
  const ids = v.restricted?.length ? ` (${v.restricted.join(', ')})` : '';
  switch (v.why) {
    case 'denied':
      return `withheld: denied${ids}`;
    case 'part2-without-consent':
      return `withheld: no consent permits this caller and purpose (42 CFR Part 2)${ids}`;
    case 'authorization-missing':
      return `withheld: no consent authorizes this purpose${ids}`;
    case 'unevaluable':
      return `withheld: consents unevaluable${v.unevaluable?.length ? ` (${v.unevaluable.join(', ')})` : ''}`;
  }
}

/**
 * With --role and --purpose: one line per consent saying what it decides for each type explained,
 * then what the role gets altogether (the consents combined as the policy combines them), for
 * ordinary and for 42 CFR Part 2 data.
 */
function describeConsentAccess(q: PatientQuery, c: CompiledConsent, found: PatientConsents, now: number): string[] {
  const { plan, role, types } = q.access!;
  const policy = q.loaded.policy;
  const caller = q.actor ?? `a caller no consent names as an actor (--actor REF: the token's ${q.fhirUserClaim})`;
  const lines = ['', `role ${role}, purpose ${plan.purpose}, caller ${caller}:`];
  if (c.exemptPurposes.has(plan.purpose)) {
    lines.push(`  purpose ${plan.purpose} is exempt: consents are not applied`);
    return lines;
  }
  if (types.length === 0) {
    lines.push('  no FHIR resource types are granted');
    return lines;
  }
  const purposes = new Set<string>();
  for (let p: string | undefined = plan.purpose; p !== undefined && !purposes.has(p); p = policy.purposes.get(p)?.parent) purposes.add(p);
  const access: ConsentAccess = {
    purpose: plan.purpose,
    purposes,
    actors: q.actor === undefined ? [] : [q.actor],
    now,
    breakGlass: plan.purpose === BREAK_GLASS,
    authorizationRequired: plan.authorization !== undefined,
  };
  const part2Label = c.part2.labels[0];
  for (const consent of found.consents) {
    if (consent.period !== undefined && ((consent.period.start !== undefined && now < consent.period.start) || (consent.period.end !== undefined && now >= consent.period.end))) {
      lines.push(`  ${consent.id}: not in force: no effect`);
      continue;
    }
    const decided = (t: string, label?: string) => decideConsent(consent, standIn(t, q.patient, label), access);
    let line = `  ${consent.id}: ${grouped(types, (t) => decided(t).decision ?? 'no opinion')}`;
    // A permit releases Part 2 data (or an authorized purpose) only where its path names the caller and purpose.
    if (part2Label !== undefined && types.some((t) => releasesPart2(decided(t, part2Label)))) {
      line += `; Part 2 data permitted to this caller and purpose: ${types.filter((t) => releasesPart2(decided(t, part2Label))).join(', ')}`;
    }
    if (plan.authorization !== undefined && types.some((t) => decided(t).decision === 'permit' && decided(t).namesPurpose)) line += `; authorizes ${plan.purpose}`;
    if (decidesByContent(consent)) line += ' (and provisions on codes, labels or particular records, decided resource by resource)';
    lines.push(line);
  }
  for (const u of found.unevaluable) lines.push(`  ${u.id}: unevaluable: ${access.breakGlass ? 'released under break-glass, recorded as overridden' : "the patient's data withheld"}`);
  const judge = (t: string, label?: string) => verdictText(judgeResource(standIn(t, q.patient, label), [q.patient], (p) => (p === q.patient ? found : undefined), access, c));
  lines.push(`  altogether (${c.overlap}): ${grouped(types, (t) => judge(t))}`);
  if (part2Label !== undefined) lines.push(`  altogether, 42 CFR Part 2 data: ${grouped(types, (t) => judge(t, part2Label))}`);
  return lines;
}

function releasesPart2(d: { decision: 'permit' | 'deny' | undefined; namesActor: boolean; namesPurpose: boolean }): boolean {
  return d.decision === 'permit' && d.namesActor && d.namesPurpose;
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
