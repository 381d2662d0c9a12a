import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { moduleOf, summarizeProfile } from '../lib/profile.mjs';

const frame = (functionName, url, lineNumber = 0) => ({ functionName, url, lineNumber, columnNumber: 0, scriptId: '0' });

describe('summarizeProfile', () => {
  const profile = {
    nodes: [
      { id: 1, callFrame: frame('(root)', '') },
      { id: 2, callFrame: frame('(idle)', '') },
      { id: 3, callFrame: frame('filterResponse', 'file:///x/dist/redact/response.js', 382) },
      { id: 4, callFrame: frame('parse', 'file:///x/node_modules/@fastify/reply-from/index.js', 9) },
      // Same function seen under two call paths: one row.
      { id: 5, callFrame: frame('filterResponse', 'file:///x/dist/redact/response.js', 382) },
    ],
    samples: [3, 3, 2, 4, 5, 2],
    timeDeltas: [1000, 1000, 5000, 2000, 1000, 5000],
  };
  const s = summarizeProfile(profile);
  it('sums self time per function across call paths and leaves idle out of the percentages', () => {
    assert.equal(s.totalMs, 5);
    assert.equal(s.idleMs, 10);
    assert.deepEqual(
      s.functions.map((f) => [f.name, f.module, f.line, f.pct]),
      [
        ['filterResponse', 'dist/redact/response.js', 383, 60],
        ['parse', '@fastify/reply-from', 10, 40],
      ],
    );
  });
  it('groups by module', () => {
    assert.deepEqual(
      s.modules.map((m) => [m.module, m.pct]),
      [
        ['dist/redact/response.js', 60],
        ['@fastify/reply-from', 40],
      ],
    );
  });
});

describe('moduleOf', () => {
  it('names packages, dist files, node internals and native frames', () => {
    assert.equal(moduleOf('file:///a/node_modules/undici/lib/x.js'), 'undici');
    assert.equal(moduleOf('file:///a/node_modules/x/node_modules/@pinojs/redact/index.js'), '@pinojs/redact');
    assert.equal(moduleOf('file:///work/main/dist/audit/chain.js'), 'dist/audit/chain.js');
    assert.equal(moduleOf('node:internal/streams/readable'), 'node:internal/streams');
    assert.equal(moduleOf(''), '(native / V8)');
  });
});
