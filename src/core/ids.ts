import { randomBytes } from 'node:crypto';

const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';

/** A random base62 string; 22 chars carry ~131 bits. */
export function randomId(len = 22): string {
  const bytes = randomBytes(len);
  let out = '';
  for (let i = 0; i < len; i++) out += ALPHABET[bytes[i]! % 62];
  return out;
}

/**
 * Request ids: a random per-process prefix plus a counter. Unique across instances (the prefix carries
 * ~71 bits), cheap on the hot path (no crypto call per request), and not guessable across processes.
 */
const PROCESS_PREFIX = randomId(12);
let seq = 0;
export function requestId(): string {
  return uniqueId('req_');
}

/** A unique id with a prefix, by the same scheme (for ids that need uniqueness, not secrecy: leases). */
export function uniqueId(prefix: string): string {
  seq = (seq + 1) % Number.MAX_SAFE_INTEGER;
  return prefix + PROCESS_PREFIX + seq.toString(36);
}
