/**
 * `Prefer: return=minimal | representation | OperationOutcome` on create, update and patch
 * (FHIR R4 http.html#ops). The upstream may ignore Prefer, so the gateway always asks it for the
 * representation (src/proxy/upstream-request.ts), filters that, and then releases what the client
 * preferred: the filtered resource, nothing (headers only: Location, ETag), or an OperationOutcome
 * of the gateway's own. The audit record describes what was released, not what was filtered.
 */
import type { OperationOutcome } from 'fhir/r4.js';
import type { FilterStats } from '../redact/types.js';

export type ReturnPreference = 'minimal' | 'representation' | 'OperationOutcome';

/** The `return` preference of a Prefer header (several preferences may share it), or undefined. */
export function returnPreference(header: string | string[] | undefined): ReturnPreference | undefined {
  if (header === undefined) return undefined;
  const text = Array.isArray(header) ? header.join(',') : header;
  let found: ReturnPreference | undefined;
  for (const part of text.split(/[,;]/)) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq).trim().toLowerCase() !== 'return') continue;
    const v = part
      .slice(eq + 1)
      .trim()
      .replace(/^"(.*)"$/, '$1');
    // Values are case-sensitive tokens; an unknown one is ignored (RFC 7240 3), so is a second one.
    if (found === undefined && (v === 'minimal' || v === 'representation' || v === 'OperationOutcome')) found = v;
  }
  return found;
}

/** The OperationOutcome a write answers with under `return=OperationOutcome`: no resource content. */
export function writeOutcome(interaction: string): OperationOutcome {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'information', code: 'informational', details: { text: `The ${interaction} was executed.` } }],
  };
}

/**
 * The audit statistics of a write answer that released no resource content: the written resource
 * is still named (its Location is released) and its patients counted, no element was disclosed.
 */
export function headersOnlyStats(stats: FilterStats): FilterStats {
  return { elementsRemoved: 0, resourcesWithheld: stats.resourcesWithheld, resources: stats.resources, patients: stats.patients };
}
