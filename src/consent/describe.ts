/**
 * A patient's consents as the gateway reads them, for `explain --patient`: one line per consent
 * (in force or not, its base decision and where it came from), its provisions indented beneath
 * it, nested ones deeper; unevaluable consents with the reason and what it does. Periods are
 * shown inclusive (`2025-01-01..2025-12-31`), in UTC.
 */
import { ACT_CODE, CONFIDENTIALITY } from '../policy/labels.js';
import type { ConsentProvision, Interval, ParsedConsent, PatientConsents } from './types.js';

const DAY = 86_400_000;

/** Human-readable lines for `explain --patient`: each consent as the gateway reads it. */
export function describeConsents(p: PatientConsents, now: number): string[] {
  const lines: string[] = [];
  for (const c of p.consents) describeConsent(c, now, lines);
  for (const u of p.unevaluable) lines.push(`${u.id}  UNEVALUABLE: ${u.reason} -> patient's data withheld from every caller but break-glass`);
  return lines;
}

function describeConsent(c: ParsedConsent, now: number, lines: string[]): void {
  const period = c.period;
  if (period?.end !== undefined && now >= period.end) {
    lines.push(`${c.id}  expired ${lastInstant(period.end)}: no effect`);
    return;
  }
  if (period?.start !== undefined && now < period.start) {
    lines.push(`${c.id}  not yet in force (from ${instant(period.start)}): no effect`);
    return;
  }
  const head = [c.id, `active, in force${period === undefined ? '' : ` (period ${range(period)})`}`];
  head.push(c.base === undefined ? 'no base decision' : `base ${c.base} (${c.policyRule ?? 'provision.type'})`);
  if (c.dateTime !== undefined) head.push(`dated ${instant(c.dateTime)}`);
  lines.push(head.join('  '));
  const root = c.root;
  const conditions = conditionsOf(root, now);
  let depth = 1;
  if (conditions.length > 0 || root.type !== undefined) {
    const decides = root.type ?? c.base ?? 'no opinion';
    lines.push(`  where it applies: ${decides}${conditions.length > 0 ? `  ${conditions.join('  ')}` : ''}  (elsewhere: ${c.base ?? 'no opinion'})`);
    depth = 2;
  }
  for (const child of root.provisions) describeProvision(child, depth, now, lines);
}

function describeProvision(p: ConsentProvision, depth: number, now: number, lines: string[]): void {
  const conditions = conditionsOf(p, now);
  lines.push(`${'  '.repeat(depth)}${p.type ?? '(no type)'}${conditions.length > 0 ? `  ${conditions.join('  ')}` : '  (always)'}`);
  for (const child of p.provisions) describeProvision(child, depth + 1, now, lines);
}

function conditionsOf(p: ConsentProvision, now: number): string[] {
  const out: string[] = [];
  if (p.period !== undefined) {
    const inForce = (p.period.start === undefined || now >= p.period.start) && (p.period.end === undefined || now < p.period.end);
    out.push(`period ${range(p.period)}${inForce ? '' : ' (not now)'}`);
  }
  if (p.actors !== undefined) out.push(`actor ${p.actors.join(',')}`);
  if (p.purposes !== undefined) out.push(`purpose ${p.purposes.join(',')}`);
  if (p.classes !== undefined) out.push(`class ${p.classes.join(',')}`);
  if (p.codes !== undefined) out.push(`code ${p.codes.map(shortKey).join(',')}`);
  if (p.labels !== undefined) out.push(`label ${p.labels.map(shortKey).join(',')}`);
  if (p.data !== undefined) out.push(`data ${p.data.map((d) => `${d.meaning} ${d.reference}`).join(',')}`);
  return out;
}

/** `system|code` as shown: HL7 v3 label systems by their code alone; a system-less key marked. */
function shortKey(key: string): string {
  const bar = key.indexOf('|');
  const system = key.slice(0, bar);
  const code = key.slice(bar + 1);
  if (system === '') return `${code} (any system)`;
  return system === ACT_CODE || system === CONFIDENTIALITY ? code : key;
}

function range(i: Interval): string {
  return `${i.start === undefined ? '' : instant(i.start)}..${i.end === undefined ? '' : lastInstant(i.end)}`;
}

/** An instant as a date when it is a UTC midnight, else to the second (or millisecond). */
function instant(ms: number): string {
  const iso = new Date(ms).toISOString();
  if (ms % DAY === 0) return iso.slice(0, 10);
  return ms % 1000 === 0 ? `${iso.slice(0, 19)}Z` : iso;
}

/** The last instant before an exclusive end, at the precision the end suggests. */
function lastInstant(end: number): string {
  if (end % DAY === 0) return new Date(end - DAY).toISOString().slice(0, 10);
  return end % 1000 === 0 ? `${new Date(end - 1000).toISOString().slice(0, 19)}Z` : new Date(end - 1).toISOString();
}
