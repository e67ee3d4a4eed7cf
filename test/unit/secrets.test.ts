/**
 * Secrets at rest: key ids, previous keys for reading, values from before key ids, and the production
 * rule (no key: refused unless allowed, then warned).
 */
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { secretsAtRest } from '../../src/app/security.js';
import { settingsFromEnv } from '../../src/app/settings.js';
import {
  currentKeyId,
  isSealed,
  keyIdOf,
  openSecret,
  sealSecret,
  sealedWith,
  setSecretKey,
} from '../../src/config/secrets.js';

afterEach(() => setSecretKey(undefined));

/** A value as the gateway wrote it before key ids (enc:v1). */
function sealV1(secret: string, plain: string): string {
  const key = createHash('sha256').update(secret).digest();
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv);
  const ct = Buffer.concat([c.update(plain, 'utf8'), c.final()]);
  return 'enc:v1:' + Buffer.concat([iv, c.getAuthTag(), ct]).toString('base64');
}

describe('sealed values', () => {
  it('carry the id of the key that sealed them; a previous key still opens them, an unknown one is named', () => {
    setSecretKey('key-one');
    const s1 = sealSecret('sk-upstream-1');
    expect(sealedWith(s1)).toBe(keyIdOf('key-one'));
    expect(s1).not.toContain('upstream');
    setSecretKey('key-two', ['key-one']);
    expect(currentKeyId()).toBe(keyIdOf('key-two'));
    expect(openSecret(s1)).toBe('sk-upstream-1');
    const s2 = sealSecret('sk-upstream-2');
    expect(sealedWith(s2)).toBe(keyIdOf('key-two'));
    setSecretKey('key-two');
    expect(() => openSecret(s1)).toThrow(new RegExp(`key id ${keyIdOf('key-one')}`));
    expect(openSecret(s2)).toBe('sk-upstream-2');
  });

  it('opens enc:v1 values with whichever configured key fits, and leaves clear text and empty values alone', () => {
    const v1 = sealV1('old-key', 'sk-legacy');
    setSecretKey('new-key', ['other', 'old-key']);
    expect(openSecret(v1)).toBe('sk-legacy');
    expect(sealedWith(v1)).toBe('v1');
    setSecretKey('new-key');
    expect(() => openSecret(v1)).toThrow();
    expect(openSecret('sk-clear')).toBe('sk-clear');
    expect(sealSecret('')).toBe('');
    expect(isSealed(sealSecret('x'))).toBe(true);
    expect(sealSecret(v1)).toBe(v1); // never sealed twice
  });

  it('a tampered value fails to open (GCM authenticates)', () => {
    setSecretKey('k');
    const s = sealSecret('sk-upstream');
    const body = Buffer.from(s.split(':')[3]!, 'base64');
    body[body.length - 1]! ^= 1;
    expect(() => openSecret(s.split(':').slice(0, 3).join(':') + ':' + body.toString('base64'))).toThrow();
  });
});

describe('production mode without ANIMA_SECRET_KEY', () => {
  it('is refused, allowed with ANIMA_ALLOW_PLAINTEXT_CREDENTIALS=1 (with a warning); the embedded default needs no key', () => {
    const prod = { DATABASE_URL: 'postgres://x@db/anima' };
    expect(secretsAtRest(settingsFromEnv(prod)).refuse).toMatch(/ANIMA_SECRET_KEY/);
    const allowed = secretsAtRest(settingsFromEnv({ ...prod, ANIMA_ALLOW_PLAINTEXT_CREDENTIALS: '1' }));
    expect(allowed.refuse).toBeUndefined();
    expect(allowed.warn).toMatch(/CLEAR TEXT/);
    expect(secretsAtRest(settingsFromEnv({ ...prod, ANIMA_SECRET_KEY: 'k' }))).toEqual({});
    expect(secretsAtRest(settingsFromEnv({}))).toEqual({});
    expect(settingsFromEnv({ ANIMA_SECRET_KEY_PREVIOUS: ' a, b ,,' }).secretKeyPrevious).toEqual(['a', 'b']);
  });
});
