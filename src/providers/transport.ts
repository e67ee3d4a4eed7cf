import { Pool, type Dispatcher } from 'undici';
import type { PreparedCall } from './types.js';

export interface TransportTimeouts {
  connectMs: number;
  firstByteMs: number;
  idleMs: number;
}

export interface SendResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
}

/**
 * One undici Pool per (channel, origin, connect timeout), kept warm across requests. A channel whose
 * address or timeouts change gets a new pool; the old one is closed once idle.
 */
export class Transport {
  private readonly pools = new Map<string, { pool: Pool; key: string }>();

  private pool(channel: string, baseUrl: string, t: TransportTimeouts, connections: number): Pool {
    const origin = new URL(baseUrl).origin;
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

  /** Sends one call. Rejects with undici's coded errors (classified by classifyTransport). */
  async send(
    channel: string,
    baseUrl: string,
    call: PreparedCall,
    t: TransportTimeouts,
    signal: AbortSignal,
    connections = 256,
  ): Promise<SendResult> {
    const base = new URL(baseUrl);
    const path = base.pathname.replace(/\/+$/, '') + call.path;
    const res = await this.pool(channel, baseUrl, t, connections).request({
      method: 'POST',
      path,
      headers: call.headers,
      body: call.body,
      signal,
      headersTimeout: t.firstByteMs,
      bodyTimeout: t.idleMs,
    });
    return { status: res.statusCode, headers: res.headers, body: res.body };
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((p) => p.pool.close().catch(() => {})));
    this.pools.clear();
  }
}
