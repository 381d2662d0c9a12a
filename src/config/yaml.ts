/**
 * YAML parsing that keeps source positions, so every configuration problem can be reported as
 * `file:line:col message` (1-based) pointing at the node a security admin has to fix.
 */
import { isMap, isScalar, isSeq, LineCounter, type Document, type Node, parseDocument } from 'yaml';

export type PathSegment = string | number;

export interface Position {
  readonly line: number;
  readonly col: number;
}

export interface ParsedYaml {
  readonly file: string;
  readonly data: unknown;
  /** Syntax errors (and warnings: a config file with surprises is not trusted), already formatted. */
  readonly problems: readonly string[];
  /** Position of the value at `path`, or of the nearest existing ancestor. */
  locate(path: readonly PathSegment[]): Position;
  /** Position of the key of the last segment (for unknown properties); falls back to locate(). */
  locateKey(path: readonly PathSegment[]): Position;
}

export function formatProblem(file: string, pos: Position, message: string): string {
  return `${file}:${pos.line}:${pos.col} ${message}`;
}

/** `dataSets.billing.rules[0].types[1]` -> ['dataSets', 'billing', 'rules', 0, 'types', 1]. */
export function parsePath(path: string): PathSegment[] {
  const out: PathSegment[] = [];
  for (const part of path.split('.')) {
    if (part === '') continue;
    const m = /^([^[\]]*)((?:\[\d+\])*)$/.exec(part);
    if (m === null) {
      out.push(part);
      continue;
    }
    if (m[1] !== '') out.push(m[1]);
    for (const idx of m[2].matchAll(/\[(\d+)\]/g)) out.push(Number(idx[1]));
  }
  return out;
}

export function formatPath(path: readonly PathSegment[]): string {
  let s = '';
  for (const seg of path) s += typeof seg === 'number' ? `[${seg}]` : s === '' ? seg : `.${seg}`;
  return s;
}

export function parseYaml(file: string, text: string): ParsedYaml {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true, strict: true });
  const problems: string[] = [];
  for (const e of [...doc.errors, ...doc.warnings]) {
    const lp = e.linePos?.[0];
    const pos = lp ? { line: lp.line, col: lp.col } : { line: 1, col: 1 };
    problems.push(formatProblem(file, pos, `YAML: ${firstLine(e.message)}`));
  }
  let data: unknown;
  if (doc.errors.length === 0) {
    try {
      // maxAliasCount bounds "billion laughs" alias expansion.
      data = doc.toJS({ maxAliasCount: 100 });
    } catch (e) {
      problems.push(formatProblem(file, { line: 1, col: 1 }, `YAML: ${firstLine((e as Error).message)}`));
    }
  }
  const posOf = (offset: number | undefined): Position => {
    if (offset === undefined) return { line: 1, col: 1 };
    const lp = lineCounter.linePos(offset);
    return { line: lp.line, col: lp.col };
  };
  const walk = (path: readonly PathSegment[]): { node: Node | null; keyNode: Node | null } => {
    let node: Node | null = (doc as Document.Parsed).contents;
    let keyNode: Node | null = null;
    for (const seg of path) {
      if (isMap(node)) {
        const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
        if (!pair) return { node, keyNode: null };
        keyNode = pair.key as Node;
        // `key:` with nothing after it: point at the key.
        node = (pair.value as Node | null) ?? keyNode;
      } else if (isSeq(node) && typeof seg === 'number' && seg < node.items.length) {
        keyNode = null;
        node = node.items[seg] as Node;
      } else {
        return { node, keyNode: null };
      }
    }
    return { node, keyNode };
  };
  return {
    file,
    data,
    problems,
    locate(path) {
      return posOf(walk(path).node?.range?.[0]);
    },
    locateKey(path) {
      const { node, keyNode } = walk(path);
      return posOf((keyNode ?? node)?.range?.[0]);
    },
  };
}

function firstLine(message: string): string {
  const nl = message.indexOf('\n');
  return (nl < 0 ? message : message.slice(0, nl)).replace(/ at line \d+, column \d+:?$/, '').trim();
}

/** Orders `file:line:col` lines by position (stable); other lines (environment) keep their order after them. */
export function sortProblems(problems: readonly string[]): string[] {
  const key = (p: string): [number, number] => {
    const m = /^.*?:(\d+):(\d+) /.exec(p);
    return m ? [Number(m[1]), Number(m[2])] : [Number.MAX_SAFE_INTEGER, 0];
  };
  return problems
    .map((p, i) => ({ p, i, k: key(p) }))
    .sort((a, b) => a.k[0] - b.k[0] || a.k[1] - b.k[1] || a.i - b.i)
    .map((x) => x.p);
}
