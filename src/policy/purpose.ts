/**
 * The X-Purpose-Of-Use header and the v3-ActReason hierarchy (pure). Exactly one code, from the
 * policy's purposes, plain or qualified by the ActReason system; anything else is refused.
 */
import type { ErrorCode } from '../errors.js';
import type { PurposeInfo } from './plan.js';

export const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
export const ACT_REASON_OID = 'urn:oid:2.16.840.1.113883.5.8';

export type PurposeParse = { readonly ok: true; readonly code: string } | { readonly ok: false; readonly code: ErrorCode };

type Purposes = ReadonlyMap<string, PurposeInfo>;

export function parsePurposeHeader(raw: string | readonly string[] | undefined, purposes: Purposes): PurposeParse {
  if (raw === undefined) return { ok: false, code: 'purpose-missing' };
  let value: string;
  if (typeof raw === 'string') {
    value = raw;
  } else {
    // A repeated header is smuggling, whatever the copies say.
    if (raw.length > 1) return { ok: false, code: 'purpose-repeated' };
    if (raw.length === 0) return { ok: false, code: 'purpose-missing' };
    value = raw[0];
  }
  value = value.trim();
  if (value === '') return { ok: false, code: 'purpose-missing' };
  // Node joins repeated custom headers with ", "; a comma list is a repetition either way.
  if (value.includes(',')) return { ok: false, code: 'purpose-repeated' };
  let code = value;
  const bar = value.indexOf('|');
  if (bar >= 0) {
    const system = value.slice(0, bar);
    if (system !== ACT_REASON && system !== ACT_REASON_OID) return { ok: false, code: 'purpose-unknown' };
    code = value.slice(bar + 1);
  }
  if (!purposes.has(code)) return { ok: false, code: 'purpose-unknown' };
  return { ok: true, code };
}

/** True when `code` is a strict descendant of `ancestor` in the policy's purpose hierarchy. */
export function isDescendant(code: string, ancestor: string, purposes: Purposes): boolean {
  let current = purposes.get(code)?.parent;
  // The compiler rejects cycles; the bound keeps a hand-built map from looping forever.
  for (let depth = 0; current !== undefined && depth < 64; depth++) {
    if (current === ancestor) return true;
    current = purposes.get(current)?.parent;
  }
  return false;
}

/** `code` is `ancestor` itself or one of its descendants. */
export function isCoveredBy(code: string, ancestor: string, purposes: Purposes): boolean {
  return code === ancestor || isDescendant(code, ancestor, purposes);
}
