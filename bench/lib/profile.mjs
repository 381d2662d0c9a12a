/**
 * Summarizes a V8 .cpuprofile (from `node --cpu-prof`): self time per function and per module,
 * pure. Self time of a node = the sum of the sampling intervals whose sample landed in it.
 */

/** Shortens a script URL to something readable: `dist/redact/response.js`, `fastify`, `node:internal/...`. */
export function moduleOf(url) {
  if (!url) return '(native / V8)';
  const u = url.replace(/^file:\/\//, '');
  const nm = u.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = u.slice(nm + '/node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  const d = u.lastIndexOf('/dist/');
  if (d >= 0) return u.slice(d + 1);
  if (u.startsWith('node:')) return u.split('/').slice(0, 2).join('/');
  return u;
}

export function summarizeProfile(profile, top = 25) {
  const byId = new Map();
  for (const n of profile.nodes) byId.set(n.id, n);
  const selfUs = new Map();
  const { samples, timeDeltas } = profile;
  // timeDeltas[i] is the time before sample i; attribute it to the sample (the usual convention).
  for (let i = 0; i < samples.length; i++) selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + Math.max(0, timeDeltas[i] ?? 0));
  let total = 0;
  let idle = 0;
  const fns = new Map();
  const mods = new Map();
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (!n) continue;
    const cf = n.callFrame;
    const name = cf.functionName || '(anonymous)';
    // Idle = waiting for I/O (or for the load generator): not cost, so not in the percentages.
    if (name === '(idle)') {
      idle += us;
      continue;
    }
    total += us;
    const mod = moduleOf(cf.url);
    const key = `${name} ${mod}:${cf.lineNumber + 1}`;
    const f = fns.get(key) ?? { name, module: mod, line: cf.lineNumber + 1, us: 0 };
    f.us += us;
    fns.set(key, f);
    mods.set(mod, (mods.get(mod) ?? 0) + us);
  }
  const pct = (us) => (total > 0 ? (100 * us) / total : 0);
  return {
    totalMs: total / 1000,
    idleMs: idle / 1000,
    functions: [...fns.values()].sort((a, b) => b.us - a.us).slice(0, top).map((f) => ({ ...f, pct: pct(f.us) })),
    modules: [...mods.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map(([module, us]) => ({ module, us, pct: pct(us) })),
  };
}

export function profileMarkdown(title, s) {
  const lines = [
    `### ${title}`,
    '',
    `${s.totalMs.toFixed(0)} ms busy, ${s.idleMs.toFixed(0)} ms idle; percentages are of busy time.`,
    '',
    '| self % | function | where |',
    '|---:|---|---|',
  ];
  for (const f of s.functions) lines.push(`| ${f.pct.toFixed(1)} | ${f.name} | ${f.module}:${f.line} |`);
  lines.push('', '| self % | module |', '|---:|---|');
  for (const m of s.modules) lines.push(`| ${m.pct.toFixed(1)} | ${m.module} |`);
  return lines.join('\n');
}
