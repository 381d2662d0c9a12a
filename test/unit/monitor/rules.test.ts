import { describe, expect, it } from 'vitest';
import { compileAnomalies, isOffHours, isUntargetedSearch, normalizeFamily, ruleApplies } from '../../../src/monitor/rules.js';
import { request } from '../breakglass/helpers.js';

describe('anomaly rules', () => {
  const [office] = compileAnomalies({
    timeZone: 'America/New_York',
    rules: [{ name: 'off', kind: 'off-hours', hours: { start: '07:00', end: '19:00' }, days: ['mon', 'tue', 'wed', 'thu', 'fri'] }],
  });

  it('judges office hours in the configured time zone, end exclusive, weekends off', () => {
    expect(isOffHours(office, new Date('2024-06-03T07:00:00-04:00'))).toBe(false);
    expect(isOffHours(office, new Date('2024-06-03T18:59:00-04:00'))).toBe(false);
    expect(isOffHours(office, new Date('2024-06-03T19:00:00-04:00'))).toBe(true);
    expect(isOffHours(office, new Date('2024-06-03T06:59:00-04:00'))).toBe(true);
    // 14:00 UTC on a Saturday is Saturday in New York too.
    expect(isOffHours(office, new Date('2024-06-08T14:00:00Z'))).toBe(true);
    // 02:00 UTC Tuesday is Monday 22:00 in New York: off hours because of the hour, not the day.
    expect(isOffHours(office, new Date('2024-06-04T02:00:00Z'))).toBe(true);
    // Winter time (EST, UTC-5): 12:30 UTC is 07:30 local.
    expect(isOffHours(office, new Date('2024-01-08T12:30:00Z'))).toBe(false);
  });

  it('wraps midnight for night shifts', () => {
    const [night] = compileAnomalies({ rules: [{ name: 'n', kind: 'off-hours', hours: { start: '22:00', end: '06:00' } }] });
    expect(isOffHours(night, new Date('2024-06-03T23:00:00Z'))).toBe(false);
    expect(isOffHours(night, new Date('2024-06-03T05:59:00Z'))).toBe(false);
    expect(isOffHours(night, new Date('2024-06-03T12:00:00Z'))).toBe(true);
  });

  it('refuses what the schema cannot check: unknown time zones, duplicate names, empty hour ranges', () => {
    expect(() => compileAnomalies({ timeZone: 'Mars/Olympus', rules: [{ name: 'a', kind: 'family-name' }] })).toThrow(/anomalies.rules\[0\]: unknown time zone/);
    expect(() => compileAnomalies({ rules: [{ name: 'a', kind: 'family-name' }, { name: 'a', kind: 'off-hours', hours: { start: '01:00', end: '02:00' } }] })).toThrow(/duplicate/);
    expect(() => compileAnomalies({ rules: [{ name: 'a', kind: 'off-hours', hours: { start: '08:00', end: '08:00' } }] })).toThrow(/equals/);
  });

  it('defaults: one-hour windows, a day for family-name, never blocking', () => {
    const rules = compileAnomalies({ rules: [{ name: 'b', kind: 'bulk-access', threshold: 3 }, { name: 'f', kind: 'family-name' }] });
    expect(rules.map((r) => [r.windowMs, r.block, r.timeZone])).toEqual([
      [3_600_000, false, 'UTC'],
      [86_400_000, false, 'UTC'],
    ]);
  });

  it('a search naming a patient (any modifier or chain) is targeted; others are not', () => {
    expect(isUntargetedSearch(request('/Patient?gender=male'))).toBe(true);
    expect(isUntargetedSearch(request('/Observation?code=8867-4'))).toBe(true);
    expect(isUntargetedSearch(request('/Observation?patient=pat-1'))).toBe(false);
    expect(isUntargetedSearch(request('/Observation?subject:Patient=pat-1'))).toBe(false);
    expect(isUntargetedSearch(request('/Patient?_id=pat-1'))).toBe(false);
    expect(isUntargetedSearch(request('/Patient/pat-1/Observation'))).toBe(false);
    expect(isUntargetedSearch(request('/Patient/pat-1'))).toBe(false);
  });

  it('role filters use the applied role, else any held role', () => {
    const [r] = compileAnomalies({ rules: [{ name: 'a', kind: 'family-name', roles: ['coder'] }] });
    expect(ruleApplies(r, 'coder', ['billing', 'coder'])).toBe(true);
    expect(ruleApplies(r, 'billing', ['billing', 'coder'])).toBe(false);
    expect(ruleApplies(r, undefined, ['billing', 'coder'])).toBe(true);
    expect(ruleApplies(r, undefined, ['billing'])).toBe(false);
  });

  it('compares family names without case, accents or extra space', () => {
    expect(normalizeFamily('  Müller ')).toBe(normalizeFamily('MULLER'));
    expect(normalizeFamily('García  López')).toBe('garcia lopez');
    expect(normalizeFamily('Baker')).not.toBe(normalizeFamily('Bakker'));
  });
});
