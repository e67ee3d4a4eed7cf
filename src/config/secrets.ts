import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

/**
 * Upstream credentials at rest: AES-256-GCM with a key from ANIMA_SECRET_KEY (any string; its SHA-256 is
 * the key). Stored as `enc:v1:<base64(iv | tag | ciphertext)>`. Without a key, credentials are stored as
 * given (the embedded demo); with one, every write is encrypted and older clear values still read.
 */
const PREFIX = 'enc:v1:';
let key: Buffer | null = null;

export function setSecretKey(secret: string | undefined): void {
  key = secret ? createHash('sha256').update(secret).digest() : null;
}

export function sealSecret(plain: string): string {
  if (!key || plain === '' || plain.startsWith(PREFIX)) return plain;
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv);
  const ct = Buffer.concat([c.update(plain, 'utf8'), c.final()]);
  return PREFIX + Buffer.concat([iv, c.getAuthTag(), ct]).toString('base64');
}

export function openSecret(stored: string): string {
  if (!stored.startsWith(PREFIX)) return stored;
  if (!key) throw new Error('a channel credential is encrypted but ANIMA_SECRET_KEY is not set');
  const raw = Buffer.from(stored.slice(PREFIX.length), 'base64');
  const d = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
  d.setAuthTag(raw.subarray(12, 28));
  return Buffer.concat([d.update(raw.subarray(28)), d.final()]).toString('utf8');
}

export function isSealed(stored: string): boolean {
  return stored.startsWith(PREFIX);
}
