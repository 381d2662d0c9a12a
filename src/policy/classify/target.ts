/**
 * Path shapes of the FHIR R4 REST API: decoded segments + method -> what the request is. A shape
 * that is known but not for this method answers `method-not-allowed`; anything else is
 * `request-unclassified`. Pure.
 */
import { GatewayError } from '../../errors.js';
import type { HttpMethod, Interaction } from '../request.js';

/** What body the shape takes, checked by classify(). */
export type BodyKind =
  | 'none' // no body allowed
  | 'form' // POST _search: optional form body merged into the params
  | 'resource' // create / update: the resource of the path's type
  | 'patch' // JSON Patch or FHIRPath Patch (Parameters)
  | 'bundle' // POST to the root: a batch or transaction Bundle
  | 'operation'; // POST $op: optional Parameters or form body

export interface Target {
  readonly interaction: Interaction;
  readonly resourceType: string | undefined;
  readonly id: string | undefined;
  readonly versionId: string | undefined;
  readonly operation: string | undefined;
  readonly compartment: { readonly type: string; readonly id: string } | undefined;
  readonly upstreamPath: string;
  readonly body: BodyKind;
  /** Conditional update/patch/delete (`PUT Type?criteria`): needs at least one parameter. */
  readonly conditional: boolean;
}

/** FHIR R4 id (and version id) grammar. Dot segments also match it; pathSegments() refuses those. */
export const ID = /^[A-Za-z0-9\-.]{1,64}$/;
/** Operation names as FHIR defines them (`$everything`, `$meta-add`, `$evaluate-measure`). */
const OPERATION = /^\$[A-Za-z][A-Za-z0-9_-]{0,63}$/;
/** Shape of an R4 resource type name; checked before asking the predicate, which may be a table lookup. */
const TYPE_NAME = /^[A-Z][A-Za-z]{1,63}$/;

function unclassified(detail: string): GatewayError {
  return new GatewayError('request-unclassified', detail);
}

function notAllowed(detail: string): GatewayError {
  return new GatewayError('method-not-allowed', detail);
}

function target(interaction: Interaction, upstreamPath: string, body: BodyKind, fields: Partial<Target> = {}): Target {
  return {
    interaction,
    resourceType: fields.resourceType,
    id: fields.id,
    versionId: fields.versionId,
    operation: fields.operation,
    compartment: fields.compartment,
    upstreamPath,
    body,
    conditional: fields.conditional ?? false,
  };
}

/**
 * Resolves decoded path segments (see pathSegments) for `method`. Every segment that lands in
 * `upstreamPath` has passed a grammar whose characters need no percent-encoding, so the path is
 * canonical by construction. The root is `/`.
 */
export function resolveTarget(method: HttpMethod, segs: readonly string[], isResourceType: (name: string) => boolean): Target {
  const read = method === 'GET' || method === 'HEAD';
  const isType = (s: string): boolean => TYPE_NAME.test(s) && isResourceType(s) === true;
  const n = segs.length;

  if (n === 0) {
    if (read) return target('search-system', '/', 'none');
    // batch or transaction: the Bundle's type decides; classify() sets the interaction.
    if (method === 'POST') return target('batch', '/', 'bundle');
    throw notAllowed('root');
  }

  const s0 = segs[0]!;
  if (n === 1) {
    if (s0 === 'metadata') {
      if (read) return target('capabilities', '/metadata', 'none');
      throw notAllowed('metadata');
    }
    if (s0 === '_search') {
      if (read) return target('search-system', '/', 'none');
      if (method === 'POST') return target('search-system', '/', 'form');
      throw notAllowed('_search');
    }
    if (s0 === '_history') {
      if (read) return target('history-system', '/_history', 'none');
      throw notAllowed('_history');
    }
    if (OPERATION.test(s0)) {
      if (read) return target('operation', `/${s0}`, 'none', { operation: s0 });
      if (method === 'POST') return target('operation', `/${s0}`, 'operation', { operation: s0 });
      throw notAllowed('system operation');
    }
    if (!isType(s0)) throw unclassified('unknown root segment or resource type');
    const resourceType = s0;
    const path = `/${s0}`;
    switch (method) {
      case 'GET':
      case 'HEAD':
        return target('search-type', path, 'none', { resourceType });
      case 'POST':
        return target('create', path, 'resource', { resourceType });
      case 'PUT':
        return target('update', path, 'resource', { resourceType, conditional: true });
      case 'PATCH':
        return target('patch', path, 'patch', { resourceType, conditional: true });
      case 'DELETE':
        return target('delete', path, 'none', { resourceType, conditional: true });
    }
  }

  if (!isType(s0)) throw unclassified('unknown resource type');
  const resourceType = s0;
  const s1 = segs[1]!;

  if (n === 2) {
    if (s1 === '_search') {
      if (read) return target('search-type', `/${resourceType}`, 'none', { resourceType });
      if (method === 'POST') return target('search-type', `/${resourceType}`, 'form', { resourceType });
      throw notAllowed('_search');
    }
    if (s1 === '_history') {
      if (read) return target('history-type', `/${resourceType}/_history`, 'none', { resourceType });
      throw notAllowed('_history');
    }
    if (OPERATION.test(s1)) {
      const fields = { resourceType, operation: s1 };
      if (read) return target('operation', `/${resourceType}/${s1}`, 'none', fields);
      if (method === 'POST') return target('operation', `/${resourceType}/${s1}`, 'operation', fields);
      throw notAllowed('type operation');
    }
    if (!ID.test(s1)) throw unclassified('invalid id');
    const path = `/${resourceType}/${s1}`;
    const fields = { resourceType, id: s1 };
    switch (method) {
      case 'GET':
      case 'HEAD':
        return target('read', path, 'none', fields);
      case 'PUT':
        return target('update', path, 'resource', fields);
      case 'PATCH':
        return target('patch', path, 'patch', fields);
      case 'DELETE':
        return target('delete', path, 'none', fields);
      case 'POST':
        throw notAllowed('instance');
    }
  }

  if (!ID.test(s1)) throw unclassified('invalid id');
  const id = s1;
  const s2 = segs[2]!;

  if (n === 3) {
    if (s2 === '_history') {
      if (read) return target('history-instance', `/${resourceType}/${id}/_history`, 'none', { resourceType, id });
      throw notAllowed('_history');
    }
    if (OPERATION.test(s2)) {
      const fields = { resourceType, id, operation: s2 };
      const path = `/${resourceType}/${id}/${s2}`;
      if (read) return target('operation', path, 'none', fields);
      if (method === 'POST') return target('operation', path, 'operation', fields);
      throw notAllowed('instance operation');
    }
    // Only the Patient compartment is classified: it is the one the policy reasons about.
    if (resourceType === 'Patient' && isType(s2)) {
      if (read) {
        return target('search-compartment', `/Patient/${id}/${s2}`, 'none', {
          resourceType: s2,
          compartment: { type: 'Patient', id },
        });
      }
      throw notAllowed('compartment search');
    }
    throw unclassified('unknown instance sub-path');
  }

  if (n === 4 && s2 === '_history') {
    const vid = segs[3]!;
    if (!ID.test(vid)) throw unclassified('invalid version id');
    if (read) return target('vread', `/${resourceType}/${id}/_history/${vid}`, 'none', { resourceType, id, versionId: vid });
    throw notAllowed('vread');
  }
  throw unclassified('unknown path shape');
}
