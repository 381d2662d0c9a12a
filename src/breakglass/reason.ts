/**
 * The X-Break-Glass-Reason header (pure). The reason is an attestation the privacy office reviews,
 * so it must be one header, printable, long enough to say something, and (when the policy lists
 * reason codes) start with one of them: `CODE: text`.
 */
import type { CompiledBreakGlass } from '../policy/plan.js';

/** Longer reasons are refused, not truncated: an attestation is recorded as given or not at all. */
export const MAX_REASON_LENGTH = 1000;

export type ReasonParse =
  | { readonly ok: true; readonly reason: string; readonly code: string | undefined }
  | { readonly ok: false; readonly why: string };

// C0 controls other than tab, DEL and C1 controls: they would let a reason forge lines in a report.
// biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to match control characters
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/;

export function parseReason(raw: string | readonly string[] | undefined, bg: Pick<CompiledBreakGlass, 'minReasonLength' | 'reasons'>): ReasonParse {
  if (raw === undefined) return { ok: false, why: 'missing' };
  if (typeof raw !== 'string') return { ok: false, why: 'repeated header' };
  const reason = raw.trim().replace(/\s+/g, ' ');
  if (reason.length > MAX_REASON_LENGTH) return { ok: false, why: 'too long' };
  if (CONTROL.test(reason)) return { ok: false, why: 'control characters' };
  let text = reason;
  let code: string | undefined;
  if (bg.reasons !== undefined && bg.reasons.length > 0) {
    const m = /^([^:\s]+)\s*:\s*(.*)$/.exec(reason);
    const given = m?.[1]?.toUpperCase();
    code = bg.reasons.find((c) => c.toUpperCase() === given);
    if (code === undefined || m === null) return { ok: false, why: 'no listed reason code' };
    text = m[2];
  }
  // Counted in code points so that non-Latin reasons are not penalized by UTF-16 surrogates.
  if ([...text].length < bg.minReasonLength) return { ok: false, why: 'too short' };
  return { ok: true, reason: code === undefined ? reason : `${code}: ${text}`, code };
}
