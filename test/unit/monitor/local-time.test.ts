import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { localTime } from '../../../src/monitor/rules.js';

/** The judgement localTime memoizes per minute, made afresh for every instant. */
function reference(t: Date, timeZone: string): { day: string; minutes: number } {
  const f = new Intl.DateTimeFormat('en-US', { timeZone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
  const parts = Object.fromEntries(f.formatToParts(t).map((p) => [p.type, p.value]));
  return { day: parts.weekday.slice(0, 3).toLowerCase(), minutes: Number(parts.hour) * 60 + Number(parts.minute) };
}

// Africa/Monrovia kept an offset of -0:44:30 until 1972 and Europe/Amsterdam +0:19:32 until 1937:
// there a UTC minute straddles two local minutes, so one answer per UTC minute would be wrong.
const ZONES = ['America/New_York', 'Asia/Kolkata', 'Australia/Lord_Howe', 'Africa/Monrovia', 'Europe/Amsterdam', 'UTC'];

describe('localTime', () => {
  it('agrees with a fresh Intl judgement at any instant, in any order of zones and times', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            zone: fc.constantFrom(...ZONES),
            // 1900..2100, and often several instants inside one minute to exercise the memo.
            t: fc.oneof(fc.integer({ min: -2_208_988_800_000, max: 4_102_444_800_000 }), fc.integer({ min: 0, max: 59_999 }).map((s) => 1_717_430_400_000 + s)),
          }),
          { minLength: 1, maxLength: 30 },
        ),
        (calls) => {
          for (const { zone, t } of calls) expect(localTime(new Date(t), zone)).toEqual(reference(new Date(t), zone));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('follows the seconds of a historic offset inside one UTC minute', () => {
    // 1960-06-01T12:00Z in Monrovia (UTC-0:44:30) is 11:15:30 local; 30 s later it is 11:16:00.
    const at = Date.parse('1960-06-01T12:00:00Z');
    expect(localTime(new Date(at + 29_000), 'Africa/Monrovia')).toEqual({ day: 'wed', minutes: 11 * 60 + 15 });
    expect(localTime(new Date(at + 30_000), 'Africa/Monrovia')).toEqual({ day: 'wed', minutes: 11 * 60 + 16 });
    expect(localTime(new Date(at + 29_999), 'Africa/Monrovia')).toEqual({ day: 'wed', minutes: 11 * 60 + 15 });
  });

  it('crosses a daylight-saving change on the minute', () => {
    // 2024-03-10 07:00Z: New York jumps from 01:59 EST to 03:00 EDT.
    const jump = Date.parse('2024-03-10T07:00:00Z');
    expect(localTime(new Date(jump - 1), 'America/New_York')).toEqual({ day: 'sun', minutes: 60 + 59 });
    expect(localTime(new Date(jump), 'America/New_York')).toEqual({ day: 'sun', minutes: 3 * 60 });
  });

  it('refuses an invalid date, as Intl does', () => {
    expect(() => localTime(new Date(Number.NaN), 'UTC')).toThrow(RangeError);
  });
});
