/**
 * The gateway's own entity tags (RFC 9110 8.8.3, 13.1.2). Every 200 answer to a GET or HEAD that
 * the gateway releases carries a strong ETag computed over exactly the bytes it releases, and a
 * matching `If-None-Match` is answered 304 with no body.
 *
 * Never the upstream's ETag, and never compared with it: an upstream ETag is the version of the
 * whole stored resource, which changes when elements or labels the caller may not see change
 * (comparing against it, or releasing it, is an oracle on the withheld parts), and it is the same
 * for every caller while the gateway releases different bytes to each (a client would be told
 * "not modified" for content the gateway now redacts differently, after a policy change or under
 * another purpose). A hash of the released bytes changes exactly when what this caller gets does.
 */
import { createHash } from 'node:crypto';
import type { ResourcePlan } from '../policy/plan.js';
import { redactWith } from '../redact/apply.js';
import type { RedactContext } from '../redact/types.js';

/** `"` + base64url(sha256(payload)) cut to 27 characters (162 bits) + `"`. */
export function gatewayEtag(payload: Uint8Array): string {
  return `"${createHash('sha256').update(payload).digest('base64url').slice(0, 27)}"`;
}

/** The opaque tag without a weak prefix (`W/"x"` -> `"x"`). */
function opaque(tag: string): string {
  return tag.startsWith('W/') ? tag.slice(2) : tag;
}

/**
 * Whether `If-None-Match` matches `etag` by the weak comparison GET and HEAD use: `*` (the
 * resource exists, which a 200 says), or one of a comma list of entity tags equal to it when weak
 * prefixes are ignored. A malformed list matches nothing (the full answer is sent).
 */
export function ifNoneMatchHits(header: string | string[] | undefined, etag: string): boolean {
  if (header === undefined) return false;
  const text = Array.isArray(header) ? header.join(',') : header;
  if (text.trim() === '*') return true;
  const want = opaque(etag);
  for (const raw of text.split(',')) {
    const tag = raw.trim();
    if (!/^(?:W\/)?"[\x21\x23-\x7e]*"$/.test(tag)) continue;
    if (opaque(tag) === want) return true;
  }
  return false;
}

const versionShownCache = new WeakMap<ResourcePlan, boolean>();

/**
 * Whether a caller under `typePlan` is shown versions of the type (its plan keeps `meta.versionId`
 * and does not de-identify): only then may a write's answer carry the upstream's `W/"version"`,
 * which is that same version. Probed once per plan, on a resource that holds nothing else.
 */
export function versionShown(typePlan: ResourcePlan | undefined, ctx: RedactContext): boolean {
  if (typePlan === undefined || typePlan.deidentify !== undefined) return false;
  let shown = versionShownCache.get(typePlan);
  if (shown === undefined) {
    const probe = redactWith({ resourceType: typePlan.resourceType, id: 'probe', meta: { versionId: '1' } }, typePlan.elements, ctx, {}).resource as {
      meta?: { versionId?: unknown };
    };
    shown = probe.meta?.versionId === '1';
    versionShownCache.set(typePlan, shown);
  }
  return shown;
}

/** The upstream's version tag of a write, when it is one (`W/"<FHIR id>"`); anything else is dropped. */
export function upstreamVersionTag(etag: string | undefined): string | undefined {
  return etag !== undefined && /^W\/"[A-Za-z0-9\-.]{1,64}"$/.test(etag) ? etag : undefined;
}
