/** Reading an audit store back in tests: every item of a source (file dir or Redis URL), and the records among them. */
import { openAuditSource, type ReadItem } from '../../src/audit/index.js';
import type { ChainedRecord } from '../../src/audit/record.js';

/** All items of the audit source at `url` (`file:DIR`, `redis://…[?stream=…]`), in stored order. */
export async function readAll(url: string): Promise<ReadItem[]> {
  const src = openAuditSource(url);
  const out: ReadItem[] = [];
  try {
    for await (const i of src) out.push(i);
  } finally {
    await src.close();
  }
  return out;
}

/** The Redis stream `stream` of the server at `url`. */
export function readStream(url: string, stream: string): Promise<ReadItem[]> {
  return readAll(`${url}?stream=${encodeURIComponent(stream)}`);
}

/** The records among read items (skipping the reader's reports of unreadable entries). */
export function recordsOf(items: readonly ReadItem[]): ChainedRecord[] {
  return items.flatMap((i) => ('record' in i ? [i.record] : []));
}
