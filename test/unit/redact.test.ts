/**
 * The one redactor (src/core/redact.ts): a channel's own credential, whole, cut or quoted with a mask,
 * and credential-shaped tokens of anyone's, never survive it; ordinary text does.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { REDACTED, redact, redactJsonText, redactSecrets, secretsOf } from '../../src/core/redact.js';
import { classifyHttp, redactFailure } from '../../src/providers/classify.js';

const SEED = Number(process.env.ANIMA_PROPERTY_SEED ?? 20_240_611);

/** Every run of `n` characters of `secret` (ASCII case-insensitive) absent from `text`. */
function noRunOf(text: string, secret: string, n = 6): string | null {
  const t = text.toLowerCase();
  const s = secret.toLowerCase();
  for (let i = 0; i + n <= s.length; i++) if (t.includes(s.slice(i, i + n))) return s.slice(i, i + n);
  return null;
}

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
/** Random-looking credentials, as vendors issue them (varied prefixes, 16..64 random characters). */
const credential = fc
  .tuple(
    fc.constantFrom('sk-', 'sk-proj-', 'sk-ant-api03-', 'AIza', 'AKIA', 'gsk_', '', 'key-'),
    fc.array(fc.constantFrom(...ALNUM.split('')), { minLength: 16, maxLength: 64 }),
  )
  .map(([p, cs]) => p + cs.join(''));

describe('redact', () => {
  it("masks the channel's credential, whatever its case", () => {
    const cred = 'sk-live-9f8e7d6c5b4a3210ZYXW';
    const msg = `Incorrect API key provided: ${cred}. You can find your API key at https://x.`;
    expect(redact(msg, [cred])).not.toContain(cred);
    expect(redact(msg.toUpperCase(), [cred]).toLowerCase()).not.toContain(cred.toLowerCase());
    expect(redact(msg, [cred])).toContain('Incorrect API key provided:');
    expect(redact(msg, [cred])).toContain(REDACTED);
  });

  it('masks a part of it: a prefix, a suffix, a fragment, a masked quote (prefix...suffix)', () => {
    const cred = 'zq81Kx0PlmN3vb7TTy2wQ9xyzw';
    for (const quoted of [
      cred.slice(0, 10),
      cred.slice(-10),
      cred.slice(5, 14),
      `${cred.slice(0, 6)}...${cred.slice(-4)}`,
      `${cred.slice(0, 4)}****************${cred.slice(-4)}`,
      `********${cred.slice(-4)}`,
      `${cred.slice(0, 5)}…`,
    ]) {
      const out = redact(`Incorrect API key provided: ${quoted}.`, [cred]);
      expect(out, quoted).not.toContain(cred.slice(-4));
      expect(noRunOf(out, cred), quoted).toBeNull();
    }
  });

  it('masks credential-shaped tokens of anyone: sk-, sk-proj-, sk-ant-, AIza, Bearer, AWS, ?key=', () => {
    const cases = [
      'sk-abcdefghijklmnop1234',
      'sk-proj-AbCdEfGhIjKlMnOpQrSt_-1234',
      'sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123',
      'AIzaSyA1234567890abcdefghijklmnopqrstu',
      'AKIAIOSFODNN7EXAMPLE',
      'ASIAY34FZKBOKMUTVV7A',
    ];
    for (const tok of cases) {
      const out = redactSecrets(`the key ${tok} is wrong`);
      expect(out, tok).not.toContain(tok);
      expect(out.slice(-9), tok).toBe(' is wrong');
    }
    expect(redactSecrets('Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.x9')).not.toContain('eyJhbG');
    expect(redactSecrets('GET https://g.example/v1beta/models?key=AIzaXYZ123&alt=sse')).toBe(
      `GET https://g.example/v1beta/models?key=${REDACTED}&alt=sse`,
    );
    expect(redactSecrets('x-goog-api-key: abc123def456ghi')).not.toContain('abc123def456ghi');
  });

  it('leaves ordinary text alone, and short credentials (a test placeholder) unmatched', () => {
    const t = 'The model `gpt-4o` does not exist or you do not have access to it. Bearer token required.';
    expect(redactSecrets(t)).toBe(t);
    expect(redact(t, ['k'])).toBe(t);
    expect(redact('Loading... done', ['sk-abcdefghijkl'])).toBe('Loading... done');
  });

  it('a JSON body stays JSON, every string (and key) redacted', () => {
    const cred = 'cred-ABCDEFGH12345678';
    const body = JSON.stringify({
      error: { message: `bad key ${cred}`, [cred]: 1, list: [`x ${cred.slice(2, 12)} y`, 3, null] },
    });
    const out = redactJsonText(body, [cred]);
    expect(() => JSON.parse(out)).not.toThrow();
    expect(noRunOf(out, cred)).toBeNull();
    expect(redactJsonText('not json ' + cred, [cred])).not.toContain(cred);
  });

  it('secretsOf: the credential and secret-looking header values', () => {
    expect(
      secretsOf({
        credential: 'c1',
        headers: { 'api-key': 'h1', 'x-trace': 't', Authorization: 'Bearer zz' },
      }),
    ).toEqual(['c1', 'h1', 'Bearer zz']);
    const out = redact(
      'token zzzzzzzzzz9 refused',
      secretsOf({ credential: '', headers: { auth: 'Bearer zzzzzzzzzz9' } }),
    );
    expect(out).not.toContain('zzzzzzzzzz9');
  });

  it('redactFailure: message and body of a classified upstream error', () => {
    const cred = 'sk-zz9ABCDEFGHIJKLmnop';
    const body = JSON.stringify({
      error: { message: `Incorrect API key provided: ${cred}`, code: 'invalid_api_key' },
    });
    const f = redactFailure(classifyHttp('openai', 401, {}, body), [cred]);
    expect(f.kind).toBe('auth_failed');
    expect(f.message).not.toContain(cred);
    expect(f.body).not.toContain(cred);
    expect(f.upstreamCode).toBe('invalid_api_key');
  });

  it('property: a random credential in random text never survives, whole or as a 6-character run', () => {
    fc.assert(
      fc.property(
        credential,
        fc.string({ maxLength: 80 }),
        fc.string({ maxLength: 80 }),
        fc.integer({ min: 0, max: 4 }),
        (cred, pre, post, how) => {
          const quoted = [
            cred,
            cred.toUpperCase(),
            cred.slice(0, Math.max(6, cred.length >> 1)),
            `${cred.slice(0, 6)}...${cred.slice(-4)}`,
            `${cred.slice(0, 3)}${'*'.repeat(20)}${cred.slice(-4)}`,
          ][how]!;
          const out = redact(pre + quoted + post, [cred]);
          expect(out.toLowerCase()).not.toContain(cred.toLowerCase());
          expect(noRunOf(out, cred)).toBeNull();
          if (how >= 3) expect(out).not.toContain(cred.slice(-4));
          const json = redactJsonText(JSON.stringify({ error: { message: pre + quoted + post } }), [cred]);
          expect(noRunOf(JSON.parse(json).error.message, cred)).toBeNull();
        },
      ),
      { seed: SEED, numRuns: 500 },
    );
  });
});
