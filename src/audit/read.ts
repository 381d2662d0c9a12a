/**
 * Streaming readers over stored audit records, in stored order, in constant memory. They never
 * throw on a bad line: an unparsable line is yielded as `{ corrupt }` so verify can name it and
 * export can skip it.
 */
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import type { Redis } from 'ioredis';
import { listAuditFiles } from './files.js';
import type { ChainedRecord } from './record.js';

export type ReadItem =
  /** `raw`: the stored JSON text, when the reader has it (lets an ndjson export copy it verbatim). */
  | { readonly position: string; readonly record: ChainedRecord; readonly raw?: string }
  /** `torn`: the last line of the last file has no newline (an unacknowledged write cut by a crash). */
  | { readonly position: string; readonly corrupt: string; readonly torn?: boolean };

export const DEFAULT_STREAM = 'phi-gateway:audit';

function parseLine(line: string, position: string): ReadItem {
  try {
    const v: unknown = JSON.parse(line);
    if (v && typeof v === 'object' && !Array.isArray(v)) return { position, record: v as ChainedRecord, raw: line };
    return { position, corrupt: 'not a JSON object' };
  } catch {
    // Never echo the line: it may hold identifiers; the position is enough to find it.
    return { position, corrupt: 'unparsable JSON' };
  }
}

/** Every record of a file sink directory, files in chain order, positions `file:line`. */
export async function* readFileRecords(dir: string): AsyncGenerator<ReadItem> {
  const files = await listAuditFiles(dir);
  // The gateway's own last file, and any command-line writer's file, may end torn by a crash.
  const lastMain = files.findLastIndex((x) => x.sidecar === undefined);
  for (let f = 0; f < files.length; f++) {
    const name = files[f].name;
    const decoder = new StringDecoder('utf8');
    let rest = '';
    let n = 0;
    // One generator level, lines split in place: this loop runs millions of times in an export.
    for await (const chunk of createReadStream(join(dir, name), { highWaterMark: 256 * 1024 })) {
      const text = rest + decoder.write(chunk as Buffer);
      let start = 0;
      for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', start)) {
        n++;
        const line = text.slice(start, i);
        start = i + 1;
        yield line.length === 0 ? { position: `${name}:${n}`, corrupt: 'empty line' } : parseLine(line, `${name}:${n}`);
      }
      rest = text.slice(start);
    }
    rest += decoder.end();
    if (rest.length > 0) {
      // Even a complete JSON object without its newline is a torn write: it was never fsynced as
      // a line, so never acknowledged. Only a writer's last file may legitimately end so (a crash).
      yield { position: `${name}:${n + 1}`, corrupt: 'line without trailing newline', torn: f === lastMain || files[f].sidecar !== undefined };
    }
  }
}

/** Every record of a Redis stream, paged with XRANGE, positions `stream@id`. */
export async function* readRedisRecords(client: Redis, stream: string = DEFAULT_STREAM, pageSize = 1000): AsyncGenerator<ReadItem> {
  let start = '-';
  for (;;) {
    const page = (await client.xrange(stream, start, '+', 'COUNT', pageSize)) as Array<[string, string[]]>;
    for (const [id, fields] of page) {
      const position = `${stream}@${id}`;
      let value: string | undefined;
      for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === 'r') value = fields[i + 1];
      yield value === undefined ? { position, corrupt: 'entry without field r' } : parseLine(value, position);
    }
    if (page.length < pageSize) return;
    start = '(' + page[page.length - 1][0];
  }
}
