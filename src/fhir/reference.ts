import { isResourceType } from './tables.js';

/**
 * `Type/id` at the end of a reference or URL (a `/_history/v` suffix ignored), exact segments only:
 * `Patient/12` never matches `Patient/123`. `prefix` is what precedes the type (a base URL, or '').
 */
export function tailTypeId(ref: string): { type: string; id: string; prefix: string } | undefined {
  const h = ref.indexOf('/_history/');
  const base = h >= 0 ? ref.slice(0, h) : ref;
  const j = base.lastIndexOf('/');
  if (j <= 0 || j === base.length - 1) return undefined;
  const k = base.lastIndexOf('/', j - 1);
  const type = base.slice(k + 1, j);
  if (!isResourceType(type)) return undefined;
  return { type, id: base.slice(j + 1), prefix: base.slice(0, k + 1) };
}
