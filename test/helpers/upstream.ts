/**
 * The seeded demo FHIR server (src/demo/upstream.ts) for tests that need a real upstream:
 *
 *   const up = await withUpstream();
 *   afterAll(() => up.close());
 *   await fetch(`${up.url}/Patient/${DEMO.patients.alice}`);
 *
 * Each call starts its own server on a free 127.0.0.1 port with fresh data, so tests that write
 * do not disturb others. The FHIR definitions are indexed once per process (~1 s); later starts
 * take a few milliseconds.
 */
import type { Resource } from 'fhir/r4.js';
import { type DemoRepository, startFhirUpstream } from '../../src/demo/upstream.js';

export interface TestUpstream {
  /** FHIR base URL, e.g. `http://127.0.0.1:41234/fhir`. */
  readonly url: string;
  readonly repo: DemoRepository;
  /** GET `${url}/${path}` and parse the FHIR JSON answer. */
  get<T = Resource>(path: string): Promise<{ status: number; headers: Headers; body: T }>;
  close(): Promise<void>;
}

export async function withUpstream(opts: { seed?: boolean } = {}): Promise<TestUpstream> {
  const up = await startFhirUpstream({ seed: opts.seed ?? true });
  return {
    url: up.url,
    repo: up.repo,
    async get<T = Resource>(path: string) {
      const res = await fetch(`${up.url}/${path.replace(/^\//, '')}`, { headers: { accept: 'application/fhir+json' } });
      return { status: res.status, headers: res.headers, body: (await res.json()) as T };
    },
    close: () => up.close(),
  };
}
