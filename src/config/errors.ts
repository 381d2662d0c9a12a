/** A configuration that cannot be used. `problems` are `file:line:col message` lines, all of them. */
export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    const n = problems.length;
    super(n === 1 ? `invalid configuration: ${problems[0]}` : `invalid configuration (${n} problems): ${problems[0]} ...`);
    this.name = 'ConfigError';
    this.problems = Object.freeze([...problems]);
  }
}

/** Freezes a freshly built value and everything under it (Maps and Sets are left usable). */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    if (value instanceof Map || value instanceof Set) return value;
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
