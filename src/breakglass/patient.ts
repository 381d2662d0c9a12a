/**
 * Which patient a break-glass request is about (pure). Break-glass opens one patient's chart, so a
 * request that does not name exactly one patient unambiguously is refused rather than guessed at.
 */
import type { ClassifiedRequest } from '../policy/request.js';

/** FHIR id syntax: anything else (commas, slashes, modifiers) could name several patients. */
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** Search parameters that name the patient a resource belongs to. */
const PATIENT_PARAMS: ReadonlySet<string> = new Set(['patient', 'subject', 'beneficiary']);

function patientFromValue(value: string): string | undefined {
  const id = value.startsWith('Patient/') ? value.slice('Patient/'.length) : value;
  return FHIR_ID.test(id) ? id : undefined;
}

/**
 * The patient id, or undefined when the request does not name exactly one:
 * - `Patient/X` read, vread, instance history, `Patient/X/$everything`;
 * - `Patient/X/Type` compartment search;
 * - a type search with exactly one `patient` / `subject` / `beneficiary` parameter (no modifier)
 *   whose value is `X` or `Patient/X`.
 */
export function resolvePatient(req: ClassifiedRequest): string | undefined {
  const i = req.interaction;
  if (req.resourceType === 'Patient' && req.id !== undefined) {
    const byId = i === 'read' || i === 'vread' || i === 'history-instance' || (i === 'operation' && req.operation === '$everything');
    return byId && FHIR_ID.test(req.id) ? req.id : undefined;
  }
  if (i === 'search-compartment') {
    const c = req.compartment;
    return c?.type === 'Patient' && FHIR_ID.test(c.id) ? c.id : undefined;
  }
  if (i === 'search-type' && req.resourceType !== undefined && req.resourceType !== 'Patient') {
    let found: string | undefined;
    let count = 0;
    for (const [name, value] of req.params) {
      const base = name.split(':', 1)[0];
      if (!PATIENT_PARAMS.has(base)) continue;
      count++;
      // `subject:Patient`, `patient:missing`, chains: not a plain reference to one patient.
      if (name !== base) return undefined;
      found = patientFromValue(value);
    }
    return count === 1 ? found : undefined;
  }
  return undefined;
}
