/**
 * Exact-match response cache, opt-in per alias (`cache_ttl_s`) or per request (`x-anima-cache: <seconds>`
 * or `on`), skipped with `Cache-Control: no-cache` (or `no-store`, or `x-anima-cache: off`).
 *
 * The key is a SHA-256 of the app, the wire dialect, the alias and the request body in canonical form
 * (object keys sorted, so field order doesn't matter): never shared across apps. A streamed request and a
 * JSON one are different entries; a stream is stored as the exact SSE text the client received and
 * replayed as a stream. Only complete, successful answers are stored. Values live in Redis (shared by
 * every instance) with the TTL, or in process memory on the embedded default.
 */
import { createHash } from 'node:crypto';
import { DIALECTS, type InboundDialect } from '../core/dialects.js';

export interface KeyValue {
  getValue(key: string): Promise<string | null>;
  setValue(key: string, value: string, ttlMs: number): Promise<void>;
}

export interface CachedAnswer {
  /** Content type of the answer. */
  t: string;
  /** The answer's body as the client received it (JSON text or SSE text). */
  p: string;
  /** The channel that produced it. */
  c: string;
  /** When it was stored (ms). */
  at: number;
}

/** At most this much of an answer is stored (larger ones are served, not cached). */
export const MAX_CACHED_BYTES = 4 * 1024 * 1024;

type Headers = Record<string, string | string[] | undefined>;

/** Seconds to keep this request's answer, or 0 when the cache is off for it. */
export function cacheTtlFor(dialect: InboundDialect, aliasTtlS: number, h: Headers): number {
  if (!DIALECTS[dialect].cacheable) return 0;
  const cc = h['cache-control'];
  if (typeof cc === 'string' && /\b(no-cache|no-store)\b/i.test(cc)) return 0;
  const x = h['x-anima-cache'];
  if (typeof x === 'string') {
    const v = x.trim().toLowerCase();
    if (v === 'off' || v === 'false' || v === '0') return 0;
    if (v === 'on' || v === 'true') return aliasTtlS > 0 ? aliasTtlS : 300;
    const n = Number(v);
    if (Number.isInteger(n) && n > 0) return Math.min(n, 30 * 86_400);
  }
  return aliasTtlS;
}

function canonical(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']';
  const o = v as Record<string, unknown>;
  return (
    '{' +
    Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => JSON.stringify(k) + ':' + canonical(o[k]))
      .join(',') +
    '}'
  );
}

export function cacheKey(
  appId: string,
  dialect: InboundDialect,
  alias: string,
  body: Record<string, unknown>,
): string {
  const h = createHash('sha256')
    .update(appId)
    .update('\0')
    .update(dialect)
    .update('\0')
    .update(alias)
    .update('\0')
    .update(canonical(body))
    .digest('hex');
  return `rc:${appId}:${h}`;
}

export class ResponseCache {
  constructor(private readonly kv: KeyValue) {}

  async get(key: string): Promise<CachedAnswer | null> {
    const v = await this.kv.getValue(key);
    if (!v) return null;
    try {
      const a = JSON.parse(v) as CachedAnswer;
      return typeof a.p === 'string' && typeof a.t === 'string' ? a : null;
    } catch {
      return null;
    }
  }

  async put(key: string, a: CachedAnswer, ttlS: number): Promise<void> {
    if (a.p.length > MAX_CACHED_BYTES) return;
    await this.kv.setValue(key, JSON.stringify(a), ttlS * 1000);
  }
}
