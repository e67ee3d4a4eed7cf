import { Pool } from 'undici';
import type { PreparedCall } from './types.js';

export interface TransportTimeouts {
  connectMs: number;
  firstByteMs: number;
  idleMs: number;
}

/** A transport error with a stable code (classified by classifyTransport). */
export class TransportTimeoutError extends Error {
  constructor(readonly code: 'ANIMA_FIRST_BYTE_TIMEOUT' | 'ANIMA_IDLE_TIMEOUT') {
    super(code === 'ANIMA_FIRST_BYTE_TIMEOUT' ? 'no response headers within the first-byte timeout' : 'upstream went silent past the idle timeout');
    this.name = 'TransportTimeoutError';
  }
}

export interface SendResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** The body, chunk by chunk; each chunk re-arms the idle timer. */
  chunks(): AsyncGenerator<Buffer>;
  /** The whole body as text, at most `max` bytes (the rest is discarded). */
  text(max?: number): Promise<string>;
  /** The whole body as bytes, at most `max`. */
  bytes(max?: number): Promise<Buffer>;
}

/**
 * One undici Pool per (channel, origin, connect timeout), kept warm across requests. A channel whose
 * address or settings change gets a new pool; the old one is closed once idle.
 *
 * First-byte and idle timeouts are native timers here rather than undici's headersTimeout/bodyTimeout:
 * undici runs those on a coarse (~1 s) timer wheel, too coarse for a 400 ms probe budget. undici's own
 * timeouts stay on as a backstop one second later.
 */
export class Transport {
  private readonly pools = new Map<string, { pool: Pool; key: string }>();
  /** baseUrl -> origin and path prefix (parsing a URL per request is measurable on the hot path). */
  private readonly bases = new Map<string, { origin: string; path: string }>();

  private base(baseUrl: string): { origin: string; path: string } {
    let b = this.bases.get(baseUrl);
    if (!b) {
      const u = new URL(baseUrl);
      b = { origin: u.origin, path: u.pathname.replace(/\/+$/, '') };
      if (this.bases.size > 10_000) this.bases.clear();
      this.bases.set(baseUrl, b);
    }
    return b;
  }

  private pool(channel: string, baseUrl: string, t: TransportTimeouts, connections: number): Pool {
    const origin = this.base(baseUrl).origin;
    const key = `${origin}|${t.connectMs}|${connections}`;
    const cur = this.pools.get(channel);
    if (cur && cur.key === key) return cur.pool;
    if (cur) void cur.pool.close().catch(() => {});
    const pool = new Pool(origin, {
      connections,
      pipelining: 1,
      connect: { timeout: t.connectMs },
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 600_000,
    });
    this.pools.set(channel, { pool, key });
    return pool;
  }

  /**
   * Sends one call under the caller's controller `ac` (one per attempt): aborting it cancels the call,
   * and the transport aborts it itself when a first-byte or idle timeout fires. Rejects with undici's
   * coded errors or a TransportTimeoutError.
   */
  async send(channel: string, baseUrl: string, call: PreparedCall, t: TransportTimeouts, ac: AbortController, connections = 256): Promise<SendResult> {
    const path = this.base(baseUrl).path + call.path;
    let timeout: TransportTimeoutError | null = null;
    const timer = setTimeout(() => {
      timeout = new TransportTimeoutError('ANIMA_FIRST_BYTE_TIMEOUT');
      ac.abort(timeout);
    }, t.firstByteMs);
    let res;
    try {
      res = await this.pool(channel, baseUrl, t, connections).request({
        method: 'POST',
        path,
        headers: call.headers,
        body: call.body,
        signal: ac.signal,
        headersTimeout: t.firstByteMs + 1_000,
        bodyTimeout: t.idleMs + 1_000,
      });
    } catch (e) {
      clearTimeout(timer);
      throw timeout ?? e;
    }
    // Headers are in: the same timer now guards the gap between body chunks.
    timer.refresh();
    clearTimeout(timer);
    let idle: NodeJS.Timeout | null = null;
    const armIdle = () => {
      if (idle) idle.refresh();
      else
        idle = setTimeout(() => {
          timeout = new TransportTimeoutError('ANIMA_IDLE_TIMEOUT');
          ac.abort(timeout);
        }, t.idleMs);
    };
    const body = res.body;
    async function* chunks(): AsyncGenerator<Buffer> {
      armIdle();
      try {
        for await (const c of body) {
          armIdle();
          yield c as Buffer;
        }
      } catch (e) {
        throw timeout ?? e;
      } finally {
        if (idle) clearTimeout(idle);
        if (!body.destroyed) body.destroy();
      }
    }
    const bytes = async (max = Number.MAX_SAFE_INTEGER): Promise<Buffer> => {
      const parts: Buffer[] = [];
      let n = 0;
      for await (const c of chunks()) {
        parts.push(c);
        n += c.length;
        if (n >= max) break;
      }
      const all = Buffer.concat(parts);
      return all.length > max ? all.subarray(0, max) : all;
    };
    return {
      status: res.statusCode,
      headers: res.headers,
      chunks,
      bytes,
      text: async (max = Number.MAX_SAFE_INTEGER) => (await bytes(max)).toString('utf8'),
    };
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((p) => p.pool.close().catch(() => {})));
    this.pools.clear();
  }
}
