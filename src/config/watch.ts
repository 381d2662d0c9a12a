/**
 * Watches configuration files and calls back (debounced) when one of them changed. Robust to the
 * ways files get replaced: editors that write a temp file and rename it over the original (the
 * watched inode disappears), Kubernetes ConfigMap symlink swaps (`..data`), and plain in-place
 * writes. It watches the *directories* and, after the debounce, compares the files' contents with
 * what it last saw, so only real changes trigger and a burst of events triggers once.
 */
import { createHash } from 'node:crypto';
import { type FSWatcher, readFileSync, watch } from 'node:fs';
import { dirname, resolve } from 'node:path';

export interface ConfigWatcher {
  /** Replace the set of files (the policy path may change on reload). */
  setFiles(files: readonly string[]): void;
  /** Forget what was seen and take the current contents as the baseline (after a reload). */
  rebaseline(): void;
  close(): void;
}

export interface WatchOptions {
  readonly debounceMs?: number;
  /** Watch errors (a directory removed): reported, the watcher keeps the others. */
  readonly onError?: (e: unknown) => void;
}

function fingerprint(file: string): string {
  try {
    return createHash('sha256').update(readFileSync(file)).digest('hex');
  } catch (e) {
    // A file that vanished mid-replace reads as missing; the next event will read it again.
    return `missing:${(e as NodeJS.ErrnoException).code ?? 'error'}`;
  }
}

export function watchConfigFiles(files: readonly string[], onChange: (changed: readonly string[]) => void, opts: WatchOptions = {}): ConfigWatcher {
  const debounceMs = opts.debounceMs ?? 250;
  let current: string[] = [];
  let seen = new Map<string, string>();
  const watchers = new Map<string, FSWatcher>();
  let timer: NodeJS.Timeout | undefined;
  let closed = false;

  const check = () => {
    timer = undefined;
    if (closed) return;
    const changed: string[] = [];
    for (const f of current) {
      const fp = fingerprint(f);
      if (seen.get(f) !== fp) {
        seen.set(f, fp);
        changed.push(f);
      }
    }
    if (changed.length > 0) onChange(changed);
  };
  const schedule = () => {
    if (closed) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(check, debounceMs);
    timer.unref();
  };

  const setFiles = (next: readonly string[]) => {
    current = [...new Set(next.map((f) => resolve(f)))];
    seen = new Map(current.map((f) => [f, fingerprint(f)]));
    const dirs = new Set(current.map((f) => dirname(f)));
    for (const [dir, w] of watchers) {
      if (!dirs.has(dir)) {
        w.close();
        watchers.delete(dir);
      }
    }
    for (const dir of dirs) {
      if (watchers.has(dir)) continue;
      try {
        // Any event in the directory schedules a content check: the event's filename is unreliable
        // (null on some platforms, `..data` for ConfigMaps, the temp name for atomic saves).
        const w = watch(dir, { persistent: false }, () => schedule());
        w.on('error', (e) => opts.onError?.(e));
        watchers.set(dir, w);
      } catch (e) {
        opts.onError?.(e);
      }
    }
  };
  setFiles(files);

  return {
    setFiles,
    rebaseline() {
      seen = new Map(current.map((f) => [f, fingerprint(f)]));
    },
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      for (const w of watchers.values()) w.close();
      watchers.clear();
    },
  };
}
