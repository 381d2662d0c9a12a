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
  const explained = new Set<string>();
  for (const e of [...doc.errors, ...doc.warnings]) {
    const lp = e.linePos?.[0];
    const x = explainYamlError(text, e.code, firstLine(e.message), e.pos[0], lp ? { line: lp.line, col: lp.col } : { line: 1, col: 1 });
    // One mistake often trips the parser twice (an indented line is both a bad key and a bad value).
    const key = `${x.pos.line}:${x.kind}`;
    if (explained.has(key)) continue;
    explained.add(key);
    problems.push(formatProblem(file, x.pos, `YAML syntax: ${x.message}`));
  }
  let data: unknown;
  if (doc.errors.length === 0) {
    try {
      // maxAliasCount bounds "billion laughs" alias expansion.
      data = doc.toJS({ maxAliasCount: 100 });
    } catch (e) {
      problems.push(formatProblem(file, { line: 1, col: 1 }, `YAML syntax: ${firstLine((e as Error).message)}`));
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

/**
 * A YAML parser error said in plain words, at the line and column to fix. The parser reports where
 * it gave up (often column 1 of a later line, in its own jargon); the admin needs the line that is
 * wrong and what YAML made of it.
 */
interface Explained {
  readonly pos: Position;
  readonly message: string;
  /** Errors of one kind on one line are one mistake. */
  readonly kind: string;
}

export function explainYamlError(text: string, code: string, message: string, offset: number, at: Position): Explained {
  const lines = text.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  const L = at.line - 1;
  const line = lines[L] ?? '';
  const firstCol = (i: number): number => indentOf(lines[i] ?? '') + 1;
  switch (code) {
    case 'TAB_AS_INDENT': {
      const tab = line.indexOf('\t');
      return {
        pos: { line: at.line, col: tab < 0 ? at.col : tab + 1 },
        message: 'this line is indented with a tab; YAML indentation must be spaces only (replace the tab with spaces)',
        kind: 'tab',
      };
    }
    case 'DUPLICATE_KEY': {
      const key = /^["']?([^:,}\]"']*)/.exec(text.slice(offset))?.[1]?.trim() ?? '';
      const first = findEarlierKey(lines, L, at.col - 1, key);
      return {
        pos: at,
        message: `the key '${key}' appears twice in the same block${first === undefined ? '' : ` (first on line ${first + 1})`}; YAML cannot tell which one is meant: keep one`,
        kind: 'duplicate',
      };
    }
    case 'MULTIPLE_DOCS':
      return { pos: at, message: "a second YAML document starts here ('---'); a configuration file holds exactly one", kind: 'docs' };
    case 'BAD_DQ_ESCAPE':
      return { pos: at, message: `${message} inside a "double-quoted" value; use 'single quotes' to keep backslashes as they are`, kind: 'escape' };
  }
  const unclosed = scanUnclosed(text, offset);
  if (code === 'MISSING_CHAR' && /quote/.test(message) && unclosed.quote !== undefined) {
    const q = unclosed.quote;
    return {
      pos: q.pos,
      message: `this ${q.char === '"' ? 'double' : 'single'}-quoted value is never closed: add the closing ${q.char} (YAML read on to line ${at.line} looking for it)`,
      kind: 'quote',
    };
  }
  if (/^Flow (sequence|map)/.test(message) && unclosed.flow !== undefined) {
    const f = unclosed.flow;
    const close = f.char === '[' ? ']' : '}';
    const what = f.char === '[' ? 'list' : 'mapping';
    return {
      pos: f.pos,
      message: `this '${f.char}' ${what} is never closed: add '${close}' at its end (a ${what} written in ${f.char} ${close} must close before line ${at.line})`,
      kind: 'flow',
    };
  }
  if (code === 'BAD_INDENT' || code === 'BLOCK_AS_IMPLICIT_KEY' || code === 'MULTILINE_IMPLICIT_KEY' || code === 'UNEXPECTED_TOKEN') {
    const indent = explainIndent(lines, L);
    if (indent !== undefined) return indent;
    if (code === 'BLOCK_AS_IMPLICIT_KEY') {
      return {
        pos: at,
        message: "this value contains ': ', so YAML reads it as a second key on the same line; put the value in quotes",
        kind: 'indent',
      };
    }
    if (code === 'MULTILINE_IMPLICIT_KEY') {
      return {
        pos: { line: at.line, col: firstCol(L) },
        message: "this line is neither 'key: value' nor a list item '- ...' (a ':' missing?)",
        kind: 'indent',
      };
    }
  }
  return { pos: at.col === 1 && line.trim() !== '' ? { line: at.line, col: firstCol(L) } : at, message, kind: code };
}

function indentOf(line: string): number {
  return /^ */.exec(line)![0].length;
}

function isContent(line: string | undefined): line is string {
  if (line === undefined) return false;
  const t = line.trim();
  return t !== '' && !t.startsWith('#');
}

/** `key: value` on one line (value present, not a block scalar or the start of a flow collection). */
function keyWithValue(line: string): { key: string; keyCol: number; value: string; flow: boolean } | undefined {
  const m = /^( *)(- +)?([^\s#'"][^:#]*?|'[^']*'|"[^"]*"):[ ]+(.+)$/.exec(line);
  if (m === null) return undefined;
  const value = m[4]!.replace(/\s+#.*$/, '').trim();
  if (value === '' || value.startsWith('#') || /^[|>][-+0-9]*$/.test(value) || /^[&*!]/.test(value)) return undefined;
  // A [list] or {mapping} closed on the same line is complete; one left open continues below.
  const flow = /^[[{]/.test(value);
  if (flow && !/^(\[.*\]|\{.*\})$/.test(value)) return undefined;
  return { key: m[3]!, keyCol: m[1]!.length + (m[2]?.length ?? 0) + 1, value, flow };
}

/** Indentation mistakes around line `L` (0-based): which line is wrong, and what YAML reads. */
function explainIndent(lines: readonly string[], L: number): Explained | undefined {
  const prevOf = (i: number): number => {
    for (let j = i - 1; j >= 0; j--) if (isContent(lines[j])) return j;
    return -1;
  };
  // The line after a `key: value` indented deeper: YAML makes it part of that value.
  for (const cand of [L, L + 1, L + 2]) {
    if (!isContent(lines[cand])) continue;
    const p = prevOf(cand);
    if (p < 0) continue;
    const kv = keyWithValue(lines[p]!);
    const ind = indentOf(lines[cand]!);
    if (kv !== undefined && ind >= kv.keyCol) {
      return {
        pos: { line: cand + 1, col: ind + 1 },
        message: kv.flow
          ? `this line is indented more than line ${p + 1}, but '${kv.key}' there already has its whole value ` +
            `(${kv.value}), so YAML cannot place it; if it is a new key, start it in column ${kv.keyCol} like '${kv.key}'`
          : `this line is indented more than line ${p + 1}, so YAML reads it as part of the value of '${kv.key}' ` +
            `('${kv.value}') on that line; if it is a new key, start it in column ${kv.keyCol} like '${kv.key}'`,
        kind: 'indent',
      };
    }
  }
  const line = lines[L];
  if (!isContent(line)) return undefined;
  const ind = indentOf(line);
  const p = prevOf(L);
  if (p < 0) return undefined;
  // The columns an outdented line may start at: those of the blocks it could close back to.
  const levels: number[] = [];
  let limit = Number.POSITIVE_INFINITY;
  for (let j = p; j >= 0; j--) {
    if (!isContent(lines[j])) continue;
    const i = indentOf(lines[j]!);
    if (i < limit) {
      levels.push(i);
      const dash = /^ *- +/.exec(lines[j]!);
      if (dash) levels.push(dash[0].length);
      limit = i;
    }
    if (i === 0) break;
  }
  const listAbove = lines.slice(0, L).findLastIndex((l, j) => j >= 0 && isContent(l) && indentOf(l) === ind && /^ *- /.test(l));
  if (!line.trimStart().startsWith('- ') && listAbove >= 0 && listAbove >= p - 50 && levels.includes(ind)) {
    return {
      pos: { line: L + 1, col: ind + 1 },
      message: `this key starts in the same column as the list items ('- ...') above it (line ${listAbove + 1}); one block holds either list items or keys: indent it under an item, or start it with '- '`,
      kind: 'indent',
    };
  }
  if (!levels.includes(ind)) {
    const cols = [...new Set(levels)].sort((a, b) => a - b).map((c) => c + 1);
    return {
      pos: { line: L + 1, col: ind + 1 },
      message:
        ind > indentOf(lines[p]!)
          ? `this line is indented more than line ${p + 1} above it, which cannot hold it; align it with the block it belongs to (column ${cols.join(', ')})`
          : `this line is indented less than line ${p + 1} but lines up with no block above it, so YAML cannot tell where it belongs; start it in column ${cols.join(' or ')}`,
      kind: 'indent',
    };
  }
  return undefined;
}

/** The earlier line (0-based) holding `key` at column `col0` in the same block as line `L`. */
function findEarlierKey(lines: readonly string[], L: number, col0: number, key: string): number | undefined {
  for (let j = L - 1; j >= 0; j--) {
    const l = lines[j]!;
    if (!isContent(l)) continue;
    if (indentOf(l) < col0 && !/^ *- /.test(l)) return undefined;
    const rest = l.slice(col0);
    if (rest.startsWith(`${key}:`) || rest.startsWith(`'${key}':`) || rest.startsWith(`"${key}":`)) return j;
  }
  return undefined;
}

/**
 * The quote and the flow bracket still open at `offset`, found by a small scan that knows comments,
 * quoting rules ('' inside single quotes, \\ escapes inside double quotes) and where tokens start.
 */
function scanUnclosed(text: string, offset: number): {
  quote?: { char: string; pos: Position };
  flow?: { char: string; pos: Position };
} {
  let line = 1;
  let col = 1;
  let quote: { char: string; pos: Position } | undefined;
  const flows: Array<{ char: string; pos: Position }> = [];
  let prev = '\n';
  let comment = false;
  const end = Math.min(offset, text.length);
  for (let i = 0; i < end; i++) {
    const c = text[i]!;
    if (c === '\n') {
      line++;
      col = 1;
      prev = c;
      comment = false;
      continue;
    }
    if (comment) {
      col++;
      continue;
    }
    if (quote !== undefined) {
      if (quote.char === "'" && c === "'") {
        if (text[i + 1] === "'") {
          i++;
          col += 2;
          continue;
        }
        quote = undefined;
      } else if (quote.char === '"' && c === '\\') {
        i++;
        col += 2;
        continue;
      } else if (quote.char === '"' && c === '"') {
        quote = undefined;
      }
    } else {
      const tokenStart = /[\s[{,:-]/.test(prev);
      if (c === '#' && /\s/.test(prev)) comment = true;
      else if ((c === "'" || c === '"') && tokenStart) quote = { char: c, pos: { line, col } };
      else if ((c === '[' || c === '{') && (tokenStart || flows.length > 0)) flows.push({ char: c, pos: { line, col } });
      else if ((c === ']' || c === '}') && flows.length > 0) flows.pop();
    }
    prev = c;
    col++;
  }
  return { quote, flow: flows.at(-1) };
}
