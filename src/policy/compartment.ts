/**
 * Patient-compartment membership for writes (pure). A write under a patient-limited token must
 * stay inside that patient's compartment, both for the body it sends (decide) and for the stored
 * resource it replaces, patches or deletes (the pipeline reads it first and asks here).
 *
 * The rule is stricter than R4 compartment membership ("any compartment reference names the
 * patient"): every patient reference on the type's compartment paths must be exactly
 * `Patient/<patient>`, and there must be at least one. An Observation about pat-12 that merely
 * lists pat-1 as performer is pat-12's record, and pat-1's token must not rewrite it.
 */
import { patientReferencePaths } from '../fhir/tables.js';

/** Whether resources of `type` can belong to a patient compartment (Patient itself included). */
export function isCompartmentType(type: string): boolean {
  return type === 'Patient' || patientReferencePaths(type).length > 0;
}

function collectReferences(v: unknown, path: readonly string[], i: number, out: string[]): void {
  if (Array.isArray(v)) {
    for (const x of v) collectReferences(x, path, i, out);
    return;
  }
  if (typeof v !== 'object' || v === null) return;
  const o = v as Record<string, unknown>;
  if (i === path.length) {
    // A Reference without a `reference` string (identifier or display only) cannot be checked.
    out.push(typeof o.reference === 'string' ? o.reference : '');
    return;
  }
  if (Object.hasOwn(o, path[i]!)) collectReferences(o[path[i]!], path, i + 1, out);
}

/**
 * The references on `type`'s compartment paths that may name a patient: relative `Patient/x`,
 * absolute `.../Patient/x`, bare or unresolvable ones (an empty string for a Reference without
 * `reference`). References to other types (a Practitioner performer) are left out.
 */
export function patientReferences(resource: unknown, type: string): string[] {
  const refs: string[] = [];
  for (const p of patientReferencePaths(type)) collectReferences(resource, p.split('.'), 0, refs);
  return refs.filter((r) => r.startsWith('Patient/') || r.includes('/Patient/') || !r.includes('/'));
}

/**
 * Why `resource` (of `type`) is not wholly inside `patient`'s compartment, or undefined when it
 * is. Patient resources belong by id only (`link.other` is about merges, not ownership). Types
 * outside every patient compartment (Practitioner, Organization...) are never refused here.
 */
export function compartmentViolation(resource: unknown, type: string, patient: string): string | undefined {
  if (type === 'Patient') {
    return (resource as { id?: unknown } | undefined)?.id === patient ? undefined : 'Patient outside the compartment';
  }
  if (patientReferencePaths(type).length === 0) return undefined;
  const patients = patientReferences(resource, type);
  if (patients.length === 0) return `${type} names no patient of the compartment`;
  // Exact match only: Patient/12 is not Patient/123, and an absolute or contained reference is not the token's patient.
  if (patients.some((r) => r !== `Patient/${patient}`)) return `${type} references a patient outside the compartment`;
  return undefined;
}
