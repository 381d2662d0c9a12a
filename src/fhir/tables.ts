/**
 * Synchronous loaders for the generated R4 tables (scripts/build-fhir-tables.ts). Loaded once on
 * first use, deep-frozen, with null-prototype maps so that keys such as `__proto__` or
 * `constructor` coming from untrusted JSON never resolve to Object.prototype members.
 */
import { readFileSync } from 'node:fs';

export interface ElementInfo {
  readonly types: readonly string[];
  readonly array: boolean;
  /** Set on an expanded choice element (`deceasedBoolean`): its selector base name (`deceased[x]`). */
  readonly choice?: string;
}

export interface SearchParamInfo {
  readonly type: string;
  /** Plain dotted element paths from the resource root; empty when not a simple path. */
  readonly paths: readonly string[];
  readonly targets?: readonly string[];
  /** Why a parameter that searches no element path can never be enforced (set exactly when `paths` is empty). */
  readonly refused?: string;
}

type Dict<T> = Readonly<Record<string, T>>;

interface TypesFile {
  readonly resourceTypes: readonly string[];
  readonly primitiveTypes: readonly string[];
  readonly complexTypes: readonly string[];
  readonly types: Dict<Dict<ElementInfo>>;
}

function load(name: string): unknown {
  return JSON.parse(readFileSync(new URL(`./generated/${name}`, import.meta.url), 'utf8'));
}

/** Copies JSON into null-prototype objects (arrays stay arrays) and freezes everything. */
function nullProtoFreeze(value: unknown): unknown {
  if (Array.isArray(value)) return Object.freeze(value.map(nullProtoFreeze));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = Object.create(null);
    for (const [k, v] of Object.entries(value)) out[k] = nullProtoFreeze(v);
    return Object.freeze(out);
  }
  return value;
}

let typesFile: TypesFile | undefined;
let resourceTypeSet: ReadonlySet<string> | undefined;
let dataTypeSet: ReadonlySet<string> | undefined;
let searchFile: Dict<Dict<SearchParamInfo>> | undefined;
let compartmentFile: Dict<readonly string[]> | undefined;

function types(): TypesFile {
  if (!typesFile) typesFile = nullProtoFreeze(load('types.json')) as TypesFile;
  return typesFile;
}

/** Element map of a type path (`Patient`, `HumanName`, `Patient.contact`), or undefined. */
export function typeElements(typePath: string): Dict<ElementInfo> | undefined {
  return types().types[typePath];
}

export function isResourceType(t: string): boolean {
  if (!resourceTypeSet) resourceTypeSet = new Set(types().resourceTypes);
  return resourceTypeSet.has(t);
}

export function resourceTypes(): readonly string[] {
  return types().resourceTypes;
}

/** True for R4 primitive and complex data type names (`date`, `HumanName`), not resources. */
export function isDataType(t: string): boolean {
  if (!dataTypeSet) dataTypeSet = new Set([...types().primitiveTypes, ...types().complexTypes]);
  return dataTypeSet.has(t);
}

let primitiveSet: ReadonlySet<string> | undefined;

export function isPrimitiveType(t: string): boolean {
  if (!primitiveSet) primitiveSet = new Set(types().primitiveTypes);
  return primitiveSet.has(t);
}

/** The element `name` of `typePath` (choice-expanded names and `x[x]` both resolve), or undefined. */
export function elementType(typePath: string, name: string): ElementInfo | undefined {
  return types().types[typePath]?.[name];
}

function search(): Dict<Dict<SearchParamInfo>> {
  if (!searchFile) searchFile = nullProtoFreeze(load('search-params.json')) as Dict<Dict<SearchParamInfo>>;
  return searchFile;
}

/** A search parameter of `type`, falling back to the ones every resource has (`_id`, `_lastUpdated`...). */
export function searchParam(type: string, code: string): SearchParamInfo | undefined {
  const s = search();
  return s[type]?.[code] ?? s.DomainResource?.[code] ?? s.Resource?.[code];
}

/** Every search parameter code that applies to `type` (its own and the common ones). */
export function searchParamCodes(type: string): readonly string[] {
  const s = search();
  const codes = new Set<string>();
  for (const t of [type, 'DomainResource', 'Resource']) for (const c of Object.keys(s[t] ?? {})) codes.add(c);
  return [...codes];
}

/**
 * Element paths whose references put a resource of `type` in a patient's compartment
 * (e.g. Observation -> subject, performer). For Patient itself membership is by id; `link.other`
 * is listed. An empty list means the type is never in a patient compartment.
 */
export function patientReferencePaths(type: string): readonly string[] {
  if (!compartmentFile) compartmentFile = nullProtoFreeze(load('patient-compartment.json')) as Dict<readonly string[]>;
  return compartmentFile[type] ?? [];
}
