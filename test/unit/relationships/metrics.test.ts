/**
 * The relationship resolver's counts as Prometheus series (src/server/metrics.ts): lookups by
 * result and the callers cached, read from `stats()` at each scrape.
 */
import { describe, expect, it } from 'vitest';
import type { CompiledPolicy } from '../../../src/policy/plan.js';
import type { RelationshipStats } from '../../../src/relationships/resolver.js';
import { createMetrics } from '../../../src/server/metrics.js';

const policy = { version: 'test', roles: new Map(), purposes: new Map() } as unknown as CompiledPolicy;

function value(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

describe('relationship metrics', () => {
  it('copies the resolver counts at each scrape', async () => {
    let stats: RelationshipStats | undefined = { callers: 3, hits: 10, misses: 4, refreshes: 2, failures: 1 };
    const metrics = createMetrics({ policy: () => policy, processMetrics: false, relationships: () => stats });
    let text = await metrics.render();
    expect(value(text, 'phi_gateway_relationship_lookups_total{result="hit"}')).toBe(10);
    expect(value(text, 'phi_gateway_relationship_lookups_total{result="miss"}')).toBe(4);
    expect(value(text, 'phi_gateway_relationship_lookups_total{result="refresh"}')).toBe(2);
    expect(value(text, 'phi_gateway_relationship_lookups_total{result="failure"}')).toBe(1);
    expect(value(text, 'phi_gateway_relationship_callers_cached')).toBe(3);

    stats = { callers: 5, hits: 25, misses: 6, refreshes: 2, failures: 1 };
    text = await metrics.render();
    expect(value(text, 'phi_gateway_relationship_lookups_total{result="hit"}')).toBe(25);
    expect(value(text, 'phi_gateway_relationship_callers_cached')).toBe(5);

    // No resolver running (a policy without relationships): no lookup series.
    stats = undefined;
    const none = await createMetrics({ policy: () => policy, processMetrics: false }).render();
    expect(none).not.toContain('phi_gateway_relationship_lookups_total{');
  });
});
