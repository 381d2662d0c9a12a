/**
 * `phi-gateway <verb> --help`: every verb answers it with its own usage on stdout and exit 0,
 * before it parses an option or reads a config; the usage names every option the verb accepts.
 */
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { main, USAGE, VERBS, wantsHelp } from '../../../src/cli/main.js';

/** No config file anywhere: help must not need one. */
const NO_CONFIG = { PHI_GATEWAY_CONFIG: '/nonexistent/phi-gateway/gateway.yaml' };

function buffers(env: NodeJS.ProcessEnv = NO_CONFIG) {
  const out: string[] = [];
  const err: string[] = [];
  const sink = (into: string[]) =>
    new Writable({
      write(chunk, _enc, cb) {
        into.push(String(chunk));
        cb();
      },
    });
  return { io: { stdout: sink(out), stderr: sink(err), env }, out: () => out.join(''), err: () => err.join('') };
}

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const b = buffers();
  const code = await main(argv, b.io);
  return { code, out: b.out(), err: b.err() };
}

const verbs = Object.keys(VERBS);

/** The sub-verbs each verb dispatches on; their --help must answer too. */
const SUB_VERBS: Readonly<Record<string, readonly string[]>> = {
  audit: ['export', 'verify', 'keygen'],
  'break-glass': ['list', 'review'],
  report: ['usage', 'access', 'break-glass'],
  policy: ['diff'],
};

describe('phi-gateway <verb> --help', () => {
  it.each(verbs)('%s --help and -h print its usage on stdout and exit 0', async (verb) => {
    const usage = (await VERBS[verb]()).USAGE;
    expect(usage).toContain(`phi-gateway ${verb}`);
    expect(usage).not.toBe(USAGE);
    for (const flag of ['--help', '-h']) {
      const r = await cli([verb, flag]);
      expect(r, `${verb} ${flag}`).toEqual({ code: 0, out: usage, err: '' });
    }
    expect(await cli(['help', verb])).toEqual({ code: 0, out: usage, err: '' });
  });

  it('answers for every sub-verb, wherever --help stands among the arguments', async () => {
    for (const [verb, subs] of Object.entries(SUB_VERBS)) {
      const usage = (await VERBS[verb]()).USAGE;
      for (const sub of subs) {
        expect(usage, `${verb} ${sub}`).toContain(`phi-gateway ${verb}`);
        expect(usage, `${verb} ${sub}`).toContain(sub);
        expect(await cli([verb, sub, '--help']), `${verb} ${sub} --help`).toEqual({ code: 0, out: usage, err: '' });
        expect(await cli([verb, sub, '--from', '2026-01-01T00:00:00Z', '-h'])).toEqual({ code: 0, out: usage, err: '' });
      }
    }
  });

  it('wins over options the verb would refuse and over a missing config file', async () => {
    // The same arguments without --help fail: the help answer came before parsing and loading.
    for (const argv of [['check-config'], ['check-config', '--no-such-option'], ['audit', 'verify'], ['break-glass', 'list'], ['explain', '--role', 'x', '--purpose', 'TREAT']]) {
      const failed = await cli(argv).catch((e: Error) => ({ code: -1, out: '', err: e.message }));
      expect(failed.code, argv.join(' ')).not.toBe(0);
      const r = await cli([...argv, '--help']);
      expect(r.code, argv.join(' ')).toBe(0);
      expect(r.out).toBe((await VERBS[argv[0]]()).USAGE);
      expect(r.err).toBe('');
    }
  });

  it('stops looking after --', () => {
    expect(wantsHelp(['--help'])).toBe(true);
    expect(wantsHelp(['diff', '--candidate', 'p.yaml', '-h'])).toBe(true);
    expect(wantsHelp(['--', '--help'])).toBe(false);
    expect(wantsHelp(['--helpful', '-hx', 'help'])).toBe(false);
    expect(wantsHelp([])).toBe(false);
  });
});

describe('phi-gateway with no verb, help, or an unknown verb', () => {
  it('--help, -h and help print the overview on stdout, exit 0', async () => {
    for (const argv of [['--help'], ['-h'], ['help'], ['help', '--help']]) {
      expect(await cli(argv), argv.join(' ')).toEqual({ code: 0, out: USAGE, err: '' });
    }
  });

  it('no verb: the overview on stderr, exit 1', async () => {
    expect(await cli([])).toEqual({ code: 1, out: '', err: USAGE });
  });

  it('an unknown verb, or help for one, exits 1 with the overview on stderr', async () => {
    for (const argv of [['no-such-verb'], ['no-such-verb', '--help'], ['constructor'], ['__proto__', '-h'], ['help', 'no-such-verb'], ['help', 'toString']]) {
      const r = await cli(argv);
      expect(r.code, argv.join(' ')).toBe(1);
      expect(r.out, argv.join(' ')).toBe('');
      expect(r.err, argv.join(' ')).toContain(USAGE);
    }
  });

  it('the overview names every verb and every sub-verb', () => {
    for (const verb of verbs) expect(USAGE).toMatch(new RegExp(`^  ${verb}\\b`, 'm'));
    expect(USAGE).toMatch(/^ {2}report usage\|access\|break-glass\b/m);
    for (const [verb, subs] of Object.entries(SUB_VERBS)) {
      if (verb === 'report') continue;
      for (const sub of subs) expect(USAGE).toMatch(new RegExp(`^  ${verb} ${sub}\\b`, 'm'));
    }
  });
});

describe('each usage is complete', () => {
  /** Option names a verb module declares to node:util parseArgs (`name: { type: ... }`). */
  function declaredOptions(verb: string): string[] {
    const source = readFileSync(new URL(`../../../src/cli/${verb}.ts`, import.meta.url), 'utf8');
    const names = new Set<string>();
    for (const m of source.matchAll(/['"]?([a-z][a-z-]*)['"]?\s*:\s*\{\s*type:\s*'(?:string|boolean)'/g)) names.add(m[1]);
    names.delete('help');
    return [...names];
  }

  it.each(verbs)('%s: every option it parses is in its usage', async (verb) => {
    const usage = (await VERBS[verb]()).USAGE;
    const options = declaredOptions(verb);
    for (const name of options) expect(usage, `${verb} --${name}`).toMatch(new RegExp(`--${name}(?![a-z-])`));
  });

  it('the parser of this test finds options (it would not pass on an empty list)', () => {
    expect(declaredOptions('audit')).toEqual(expect.arrayContaining(['from', 'to', 'break-glass', 'source', 'config']));
    expect(declaredOptions('token')).toEqual(expect.arrayContaining(['role', 'family-name', 'ttl', 'keys']));
    expect(declaredOptions('serve')).toEqual(['config']);
  });

  it('documents signed checkpoints, key generation and the verified reviewer', async () => {
    const audit = (await VERBS.audit()).USAGE;
    for (const s of ['audit verify', '--public-key F', '--allow-unsealed', '--anchor F', 'audit keygen --out DIR', 'audit-signing-key.pem', 'audit-signing-key.pub.pem']) {
      expect(audit).toContain(s);
    }
    const bg = (await VERBS['break-glass']()).USAGE;
    expect(bg).toContain('review ID --token-file F --outcome justified|unjustified');
    expect(bg).toContain('PHI_GATEWAY_TOKEN_FILE');
    // --reviewer is no longer a way to name the reviewer: only mentioned as refused.
    expect(bg).not.toMatch(/--reviewer SUB/);
    expect(USAGE).not.toMatch(/--reviewer/);
  });
});
