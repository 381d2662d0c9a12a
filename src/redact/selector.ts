/**
 * Element selector parsing (grammar at the top of src/policy/model.ts). Parsing is syntax only;
 * src/redact/compile.ts resolves the result against the R4 types table.
 */

/** A selector that does not parse or names nothing on the resource type. */
export class SelectorError extends Error {
  readonly code = 'invalid-selector' as const;
  /** Where in the policy, e.g. `dataSets.billing.rules[0].remove[1]`. */
  readonly where: string;
  /** The selector as written. */
  readonly selector: string;
  constructor(where: string, selector: string, reason: string) {
    super(`${where}: selector "${selector}": ${reason}`);
    this.name = 'SelectorError';
    this.where = where;
    this.selector = selector;
  }
}

export interface SelectorFilter {
  /** Child element of the filtered item, e.g. `system`, `type`. */
  readonly key: string;
  readonly value: string;
}

export interface SelectorSegment {
  /** Element name as written; `value[x]` keeps its `[x]`. */
  readonly name: string;
  readonly filter: SelectorFilter | undefined;
}

export type ParsedSelector =
  | { readonly kind: 'all' }
  | { readonly kind: 'path'; readonly segments: readonly SelectorSegment[] }
  | { readonly kind: 'type'; readonly type: string; readonly segments: readonly SelectorSegment[] };

function isNameStart(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}

function isNameChar(c: number): boolean {
  return isNameStart(c) || (c >= 48 && c <= 57) || c === 95;
}

/** Parses one selector; throws SelectorError with `reason` on bad syntax. */
export function parseSelector(raw: string, where: string): ParsedSelector {
  if (typeof raw !== 'string' || raw.length === 0) throw new SelectorError(where, String(raw), 'empty selector');
  if (raw === '*') return { kind: 'all' };
  let i = 0;
  let typeName: string | undefined;
  const fail = (reason: string): never => {
    throw new SelectorError(where, raw, reason);
  };
  const readName = (): string => {
    const start = i;
    if (i >= raw.length || !isNameStart(raw.charCodeAt(i))) fail(`expected an element name at offset ${i}`);
    while (i < raw.length && isNameChar(raw.charCodeAt(i))) i++;
    return raw.slice(start, i);
  };
  if (raw.charCodeAt(0) === 64 /* @ */) {
    i = 1;
    typeName = readName();
    if (i < raw.length) {
      if (raw[i] !== '.') fail('a type selector continues only with `.element`');
      i++;
    }
    if (i >= raw.length) {
      if (raw.endsWith('.')) fail('trailing `.`');
      return { kind: 'type', type: typeName, segments: [] };
    }
  }
  const segments: SelectorSegment[] = [];
  for (;;) {
    let name = readName();
    let filter: SelectorFilter | undefined;
    if (raw[i] === '[') {
      const close = raw.indexOf(']', i);
      if (close < 0) fail('unclosed `[`');
      const inner = raw.slice(i + 1, close);
      if (inner === 'x') {
        name += '[x]';
      } else {
        const eq = inner.indexOf('=');
        if (eq <= 0 || eq === inner.length - 1) fail('a filter is `[element=value]`');
        const key = inner.slice(0, eq);
        for (let k = 0; k < key.length; k++) if (!isNameChar(key.charCodeAt(k))) fail('bad filter element name');
        filter = { key, value: inner.slice(eq + 1) };
      }
      i = close + 1;
    }
    segments.push({ name, filter });
    if (i >= raw.length) break;
    if (raw[i] !== '.') fail(`unexpected "${raw[i]}" at offset ${i}`);
    i++;
    if (i >= raw.length) fail('trailing `.`');
  }
  return typeName === undefined ? { kind: 'path', segments } : { kind: 'type', type: typeName, segments };
}
