import { isResourceType } from './tables.js';

/** True when `name` is an R4 resource type, exactly as spelled in the specification. */
export function isR4ResourceType(name: string): boolean {
  return typeof name === 'string' && isResourceType(name);
}
