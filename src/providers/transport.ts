import { type Dispatcher, Pool } from 'undici';
import type { PreparedCall } from './types.js';
import type { Abort } from '../lib/abort.js';
import type { OutboundPolicy } from '../lib/outbound.js';

export interface TransportTimeouts {
  connectMs: number;
  firstByteMs: number;
  idleMs: number;
}

/** A transport error with a stable code (classified by classifyTransport). */
export class TransportTimeoutError extends Error {
  constructor(readonly code: 'ANIMA_FIRST_BYTE_TIMEOUT' | 'ANIMA_IDLE_TIMEOUT') {
    super(
      code === 'ANIMA_FIRST_BYTE_TIMEOUT'
        ? 'no response headers within the first-byte timeout'
        : 'upstream went silent past the idle timeout',
    );
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

  /**
   * `outbound`: the operator URL policy (SSRF), enforced by each pool's connector when it opens a
   * connection (resolve, check, connect to the checked address); a request on a kept-alive connection
   * pays nothing for it. Absent: no policy (unit tests).
   */
  constructor(private readonly outbound?: OutboundPolicy) {}

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
      connect: this.outbound
        ? this.outbound.connector('operator', { timeout: t.connectMs })
        : { timeout: t.connectMs },
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 600_000,
    });
    this.pools.set(channel, { pool, key });
    return pool;
  }

  /**
   * Sends one call under the caller's `ac` (one per attempt): aborting it cancels the call,
   * and the transport aborts it itself when a first-byte or idle timeout fires. Rejects with undici's
   * coded errors or a TransportTimeoutError.
   *
   * Through undici's dispatch API rather than `request`: no Readable body stream, no AbortSignal wiring
   * inside undici (cancellation is an Abort, src/lib/abort.ts), no async iterator per chunk for a JSON
   * answer (the body is collected in the handler). On the hot path that is a measurable share of a
   * proxy's per-request work (bench/README.md).
   *
   * `extraHeaders`: headers added to the call's own (a trace context: `traceparent`), null for none.
   */
  send(
    channel: string,
    baseUrl: string,
    call: PreparedCall,
    t: TransportTimeouts,
    ac: Abort,
    connections = 256,
    extraHeaders: Record<string, string> | null = null,
  ): Promise<SendResult> {
    const path = this.base(baseUrl).path + call.path;
    const pool = this.pool(channel, baseUrl, t, connections);
    return new Promise<SendResult>((resolve, reject) => {
      const h = new UpstreamCall(t, ac, resolve, reject);
      try {
        pool.dispatch(
          {
            method: 'POST',
            path,
            headers: extraHeaders ? { ...call.headers, ...extraHeaders } : call.headers,
            body: call.body,
            headersTimeout: t.firstByteMs + 1_000,
            bodyTimeout: t.idleMs + 1_000,
          },
          h,
        );
      } catch (e) {
        h.onResponseError(null, e as Error); // invalid options or a closed pool: settle, drop the timers
      }
    });
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((p) => p.pool.close().catch(() => {})));
    this.pools.clear();
  }
}

/** Above this many bytes received and not yet consumed, the upstream socket is paused (backpressure). */
const HIGH_WATER = 64 * 1024;

/**
 * One upstream call, as an undici dispatch handler (the controller API: undici hands each callback the
 * request's controller, which aborts, pauses and resumes it): collects the status and headers, then
 * hands the body on either whole (`bytes`/`text`) or chunk by chunk (`chunks`), pausing the socket while
 * more than HIGH_WATER bytes wait for a slow consumer. undici 7's core still calls the older callbacks and
 * adapts this API to them (parsing the headers on the way); undici 8's core calls it directly.
 * bench/micro/transport.ts measures the handler's cost per call.
 */
export class UpstreamCall implements Dispatcher.DispatchHandler {
  /** Set when undici starts the request on a socket (again, if undici retries it on another one). */
  private controller: Dispatcher.DispatchController | null = null;
  private settled = false;
  private timeout: TransportTimeoutError | null = null;
  private firstByte: NodeJS.Timeout | null;
  private idle: NodeJS.Timeout | null = null;
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private ended = false;
  private error: unknown = null;
  /** The consumer waiting for the next chunk, the end or an error. */
  private wake: (() => void) | null = null;
  /** bytes() reads the whole body (up to its max): no pausing. */
  private collecting = false;
  private readonly onAbort = () => this.controller?.abort(asError(this.ac.reason));

  constructor(
    private readonly t: TransportTimeouts,
    private readonly ac: Abort,
    private readonly resolve: (r: SendResult) => void,
    private readonly reject: (e: unknown) => void,
  ) {
    this.firstByte = setTimeout(() => {
      this.timeout = new TransportTimeoutError('ANIMA_FIRST_BYTE_TIMEOUT');
      ac.abort(this.timeout);
    }, t.firstByteMs);
    ac.on(this.onAbort);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    // An abort that came before the request had a socket: nothing could stop it until now.
    if (this.ac.aborted) controller.abort(asError(this.ac.reason));
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    status: number,
    headers: SendResult['headers'],
  ): void {
    if (status < 200) return; // 1xx informational: the real answer follows
    if (this.firstByte) clearTimeout(this.firstByte);
    this.firstByte = null;
    this.settled = true;
    this.armIdle();
    this.resolve({
      status,
      headers, // undici's: names lower-cased, a repeated header as a list
      chunks: () => this.chunks(),
      bytes: (max) => this.bytes(max),
      text: async (max) => (await this.bytes(max)).toString('utf8'),
    });
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.armIdle();
    this.queue.push(chunk);
    this.queued += chunk.length;
    this.notify();
    // Paused until the consumer takes what is queued. The idle timer keeps running: a consumer that
    // takes nothing for the idle timeout (or never reads the body at all) ends the call.
    if (!this.collecting && this.queued > HIGH_WATER) controller.pause();
  }

  onResponseEnd(): void {
    this.ended = true;
    this.finish();
  }

  /** Also called with no controller when undici refuses the dispatch itself (see `send`). */
  onResponseError(_controller: Dispatcher.DispatchController | null, err: Error): void {
    const e = this.timeout ?? err;
    this.finish();
    if (!this.settled) {
      this.settled = true;
      this.reject(e);
      return;
    }
    this.error = e;
  }

  private finish(): void {
    if (this.firstByte) clearTimeout(this.firstByte);
    this.firstByte = null;
    this.clearIdle();
    this.ac.off(this.onAbort);
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    if (w) {
      this.wake = null;
      w();
    }
  }

  private armIdle(): void {
    if (this.ended || this.error) return;
    if (this.idle) this.idle.refresh();
    else
      this.idle = setTimeout(() => {
        this.timeout = new TransportTimeoutError('ANIMA_IDLE_TIMEOUT');
        this.ac.abort(this.timeout);
      }, this.t.idleMs);
  }

  private clearIdle(): void {
    if (this.idle) clearTimeout(this.idle);
    this.idle = null;
  }

  private resume(): void {
    const c = this.controller;
    if (c?.paused) c.resume();
  }

  private next(): Promise<void> {
    return new Promise<void>((r) => (this.wake = r));
  }

  /** Stops the call if the body wasn't read to its end (the consumer broke off). */
  private stop(): void {
    if (!this.ended && !this.error) {
      this.error = new Error('body not consumed');
      this.finish();
      this.controller?.abort(new Error('upstream body abandoned'));
    }
  }

  private async *chunks(): AsyncGenerator<Buffer> {
    try {
      for (;;) {
        if (this.queue.length > 0) {
          // Everything that has arrived, as one chunk: the consumer then writes it to its client in one
          // socket write, not one per upstream chunk that came in the same read.
          const c = this.queue.length === 1 ? this.queue[0]! : Buffer.concat(this.queue);
          this.queue.length = 0;
          this.queued = 0;
          this.armIdle(); // the consumer's pace counts as activity, as the upstream's does
          this.resume();
          yield c;
          continue;
        }
        if (this.error) throw this.error;
        if (this.ended) return;
        await this.next();
      }
    } finally {
      this.stop();
    }
  }

  private async bytes(max = Number.MAX_SAFE_INTEGER): Promise<Buffer> {
    this.collecting = true;
    this.resume();
    try {
      while (!this.ended && !this.error && this.queued < max) await this.next();
      if (this.error && this.queued < max) throw this.error;
      const all = this.queue.length === 1 ? this.queue[0]! : Buffer.concat(this.queue);
      return all.length > max ? all.subarray(0, max) : all;
    } finally {
      this.stop();
    }
  }
}

function asError(reason: unknown): Error {
  if (reason instanceof Error) return reason;
  const e = new Error('This operation was aborted');
  e.name = 'AbortError';
  return e;
}
