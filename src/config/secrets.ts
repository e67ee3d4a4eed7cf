import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

/**
 * Upstream credentials and webhook secrets at rest: AES-256-GCM with a key from ANIMA_SECRET_KEY (any
 * string; its SHA-256 is the key). Stored as `enc:v2:<key id>:<base64(iv | tag | ciphertext)>`; the key
 * id (8 hex characters derived from the key, not the key itself) says which key opens it, so a value can
 * be opened while keys are being rotated: ANIMA_SECRET_KEY seals, ANIMA_SECRET_KEY_PREVIOUS keys only
 * open. `enc:v1:` values (before key ids) are opened by trying each key. Without a key, values are stored
 * as given (the embedded demo; production refuses to start that way unless told to, see app/security.ts);
 * with one, every write is sealed and older clear values still read (`anima secrets rotate` seals them).
 */
const V1 = 'enc:v1:';
const V2 = 'enc:v2:';

interface SealKey {
  id: string;
  key: Buffer;
}

let current: SealKey | null = null;
let previous: SealKey[] = [];

function deriveKey(secret: string): SealKey {
  const key = createHash('sha256').update(secret).digest();
  // A separate hash of the key: the id names the key without helping anyone guess it.
  const id = createHash('sha256').update('anima-secret-key-id\0').update(key).digest('hex').slice(0, 8);
  return { id, key };
}

/** Sets the sealing key and the older keys that may still open values (process-wide). */
export function setSecretKey(secret: string | undefined, previousSecrets: readonly string[] = []): void {
  current = secret ? deriveKey(secret) : null;
  const seen = new Set(current ? [current.id] : []);
  previous = [];
  for (const s of previousSecrets) {
    if (!s) continue;
    const k = deriveKey(s);
    if (seen.has(k.id)) continue;
    seen.add(k.id);
    previous.push(k);
  }
}

/** The id of the key new values are sealed with (null: no key, values are stored as given). */
export function currentKeyId(): string | null {
  return current?.id ?? null;
}

/** The id a secret string would get as a key (tests, operator tooling). */
export function keyIdOf(secret: string): string {
  return deriveKey(secret).id;
}

export function sealSecret(plain: string): string {
  if (!current || plain === '' || isSealed(plain)) return plain;
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', current.key, iv);
  const ct = Buffer.concat([c.update(plain, 'utf8'), c.final()]);
  return `${V2}${current.id}:${Buffer.concat([iv, c.getAuthTag(), ct]).toString('base64')}`;
}

function open(k: SealKey, b64: string): string {
  const raw = Buffer.from(b64, 'base64');
  const d = createDecipheriv('aes-256-gcm', k.key, raw.subarray(0, 12));
  d.setAuthTag(raw.subarray(12, 28));
  return Buffer.concat([d.update(raw.subarray(28)), d.final()]).toString('utf8');
}

export function openSecret(stored: string): string {
  if (stored.startsWith(V2)) {
    const rest = stored.slice(V2.length);
    const colon = rest.indexOf(':');
    const id = rest.slice(0, colon);
    const k = current?.id === id ? current : previous.find((p) => p.id === id);
    if (!k)
      throw new Error(
        `a stored secret is sealed with key id ${id}, which is neither ANIMA_SECRET_KEY${current ? ` (${current.id})` : ' (unset)'} nor in ANIMA_SECRET_KEY_PREVIOUS`,
      );
    return open(k, rest.slice(colon + 1));
  }
  if (stored.startsWith(V1)) {
    const keys = current ? [current, ...previous] : previous;
    if (!keys.length) throw new Error('a stored secret is encrypted but ANIMA_SECRET_KEY is not set');
    for (const k of keys) {
      try {
        return open(k, stored.slice(V1.length));
      } catch {
        // GCM authenticates: a wrong key fails here; try the next
      }
    }
    throw new Error(
      'a stored secret (enc:v1) opens with none of ANIMA_SECRET_KEY / ANIMA_SECRET_KEY_PREVIOUS',
    );
  }
  return stored;
}

export function isSealed(stored: string): boolean {
  return stored.startsWith(V2) || stored.startsWith(V1);
}

/** Which key sealed a stored value: its id, 'v1' (a value from before key ids), or null (stored in clear). */
export function sealedWith(stored: string): string | null {
  if (stored.startsWith(V2)) return stored.slice(V2.length, stored.indexOf(':', V2.length));
  if (stored.startsWith(V1)) return 'v1';
  return null;
}

/** The stored form every value sealed under the current key starts with (for a SQL `LIKE` filter). */
export function currentSealPrefix(): string | null {
  return current ? `${V2}${current.id}:` : null;
}
