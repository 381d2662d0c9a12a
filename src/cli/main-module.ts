/**
 * Whether the module at `metaUrl` is the program node was started with. `process.argv[1]` is the
 * path as invoked: through an installed bin (npx, `npm link`, a global install) that is a symlink,
 * and comparing it with `import.meta.url` as it stands made every verb print nothing and exit 0,
 * so `phi-gateway audit verify || alert` never alerted. Both sides are resolved to real paths.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export function isMainModule(metaUrl: string, argv1: string | undefined = process.argv[1]): boolean {
  if (argv1 === undefined || argv1 === '') return false;
  try {
    return realpathSync(argv1) === realpathSync(fileURLToPath(metaUrl));
  } catch {
    return false;
  }
}
