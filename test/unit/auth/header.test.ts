import { createServer } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { authorizationFromRawHeaders, bearerToken, MAX_TOKEN_LENGTH } from '../../../src/auth/header.js';
import { GatewayError } from '../../../src/errors.js';

const JWT = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl';

function refusal(fn: () => unknown): GatewayError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(GatewayError);
    expect((e as GatewayError).code).toBe('invalid-token');
    return e as GatewayError;
  }
  throw new Error('expected a refusal');
}

describe('bearerToken', () => {
  it('extracts the JWT from one Bearer value', () => {
    expect(bearerToken(`Bearer ${JWT}`)).toBe(JWT);
    expect(bearerToken(`BEARER ${JWT}`)).toBe(JWT);
    expect(bearerToken([`Bearer ${JWT}`])).toBe(JWT);
  });
  it('refuses several values, a comma-joined value and an empty array', () => {
    expect(refusal(() => bearerToken([`Bearer ${JWT}`, `Bearer ${JWT}`])).detail).toMatch(/got 2/);
    expect(refusal(() => bearerToken([])).detail).toMatch(/got 0/);
    refusal(() => bearerToken(`Bearer ${JWT},Bearer ${JWT}`));
  });
  it('refuses an oversized value before looking at it', () => {
    expect(refusal(() => bearerToken(`Bearer ${'a'.repeat(MAX_TOKEN_LENGTH + 64)}.b.c`)).detail).toMatch(/too long/);
  });
  it('refuses an unsecured token (empty signature segment)', () => {
    refusal(() => bearerToken(`Bearer ${JWT.split('.').slice(0, 2).join('.')}.`));
  });
});

describe('authorizationFromRawHeaders', () => {
  it('returns every Authorization value, whatever its case, which Node would otherwise collapse to the first', () => {
    expect(authorizationFromRawHeaders(['Host', 'x', 'Authorization', 'Bearer a', 'authorization', 'Bearer b'])).toEqual(['Bearer a', 'Bearer b']);
    expect(authorizationFromRawHeaders(['AUTHORIZATION', 'Bearer a'])).toBe('Bearer a');
    expect(authorizationFromRawHeaders(['Host', 'x'])).toBeUndefined();
  });
});

describe('duplicate Authorization headers over real HTTP', () => {
  it('Node keeps only the first in headers.authorization; rawHeaders keeps both, and the pair is refused', async () => {
    const seen = await new Promise<{ parsed: string | undefined; raw: string[] }>((resolve, reject) => {
      const server = createServer((req, res) => {
        resolve({ parsed: req.headers.authorization, raw: req.rawHeaders });
        res.end();
        server.close();
      });
      server.listen(0, '127.0.0.1', () => {
        const socket = connect((server.address() as AddressInfo).port, '127.0.0.1', () => {
          socket.end(`GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${JWT}\r\nAuthorization: Bearer ${JWT}x\r\nConnection: close\r\n\r\n`);
        });
        socket.on('error', reject);
        socket.resume();
      });
    });
    expect(seen.parsed).toBe(`Bearer ${JWT}`);
    const all = authorizationFromRawHeaders(seen.raw);
    expect(all).toEqual([`Bearer ${JWT}`, `Bearer ${JWT}x`]);
    expect(refusal(() => bearerToken(all)).detail).toMatch(/got 2/);
  });
});
