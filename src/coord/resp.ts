import net from 'node:net';
import tls from 'node:tls';
import type { RedisOptions } from 'ioredis';

/**
 * A lean Redis connection for the hot path's script calls (TickPipeline): the caller hands it a whole
 * pipeline already encoded as RESP and one callback per reply. No command objects, no per-argument
 * encoding pass, no promise per command: in a profile of the governed JSON path, ioredis's command
 * handling and the UTF-8 encoding of the rope strings it builds were most of what three script calls
 * per request added over the bare gateway (measured by bench/overhead.ts --only json --twin-bare and
 * bench/profile-diff.ts; figures in bench/HISTORY.md).
 *
 * Behaves as the main ioredis connection is configured to: a command fails rather than waits when the
 * connection is down (after the first connect), a reply not arriving within `commandTimeoutMs` fails
 * everything in flight (the connection is dropped and made again), and it reconnects on its own with a
 * capped backoff. Standalone Redis only (Cluster calls stay on ioredis, one slot per call), over TCP, TLS
 * or a unix socket; built from the ioredis client's options by respOptionsFor, which refuses what it
 * can't follow.
 */
export interface RespOptions {
  host: string;
  port: number;
  /** A unix socket: host and port are then not used. */
  path?: string | undefined;
  /** The address family to resolve host to (4 or 6; unset = either). */
  family?: number | undefined;
  username?: string | undefined;
  password?: string | undefined;
  db?: number | undefined;
  tls?: tls.ConnectionOptions | undefined;
  connectTimeoutMs?: number;
  commandTimeoutMs?: number;
}

export type Reply = string | number | null | ReplyError | Reply[];
export type ReplyCallback = (err: Error | null, value?: Reply) => void;

/** An error reply from Redis (the command ran, or was refused; the connection is fine). */
export class ReplyError extends Error {
  override name = 'ReplyError';
}

const INCOMPLETE = Symbol('incomplete');

/** The parser's cursor into the buffer being parsed (parsing is synchronous: one buffer at a time). */
let at = 0;

/** A decimal integer from bytes (RESP lengths and integer replies), without making a string of it. */
function intAt(buf: Buffer, from: number, to: number): number {
  let i = from;
  const neg = buf[i] === 45; // '-'
  if (neg) i++;
  let v = 0;
  for (; i < to; i++) v = v * 10 + (buf[i]! - 48);
  return neg ? -v : v;
}

/** One RESP2 reply from `buf` at the cursor, advancing it; INCOMPLETE (cursor unspecified) when more bytes are needed. */
function parseOne(buf: Buffer): Reply | typeof INCOMPLETE {
  const pos = at;
  if (pos >= buf.length) return INCOMPLETE;
  const eol = buf.indexOf(13, pos + 1); // '\r'
  if (eol < 0 || eol + 1 >= buf.length) return INCOMPLETE;
  const next = eol + 2;
  switch (buf[pos]) {
    case 43: // '+'
      at = next;
      return buf.toString('latin1', pos + 1, eol);
    case 45: // '-'
      at = next;
      return new ReplyError(buf.toString('utf8', pos + 1, eol));
    case 58: // ':'
      at = next;
      return intAt(buf, pos + 1, eol);
    case 36: {
      // '$'
      const len = intAt(buf, pos + 1, eol);
      if (len < 0) {
        at = next;
        return null;
      }
      if (next + len + 2 > buf.length) return INCOMPLETE;
      at = next + len + 2;
      return buf.toString('utf8', next, next + len);
    }
    case 42: {
      // '*'
      const n = intAt(buf, pos + 1, eol);
      at = next;
      if (n < 0) return null;
      const out: Reply[] = new Array(n);
      for (let i = 0; i < n; i++) {
        const r = parseOne(buf);
        if (r === INCOMPLETE) return INCOMPLETE;
        out[i] = r;
      }
      return out;
    }
    default:
      throw new Error(`Redis protocol error: unexpected byte ${buf[pos]} in a reply`);
  }
}

function digitCount(v: number): number {
  let n = 1;
  while (v >= 10) {
    v = Math.floor(v / 10);
    n++;
  }
  return n;
}

/**
 * Encodes commands straight into bytes: no string per argument or length, no joined string to convert
 * again on the socket write. One writer is reused; `take()` copies out what was written.
 */
export class RespWriter {
  private buf = Buffer.allocUnsafe(16_384);
  private len = 0;

  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const b = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(b, 0, 0, this.len);
    this.buf = b;
  }

  /** A non-negative integer's digits (it has room: callers ensure 20 bytes). */
  private digits(v: number): void {
    if (v < 10) {
      this.buf[this.len++] = 48 + v;
      return;
    }
    const n = digitCount(v);
    for (let i = this.len + n - 1; i >= this.len; i--) {
      this.buf[i] = 48 + (v % 10);
      v = Math.floor(v / 10);
    }
    this.len += n;
  }

  private crlf(): void {
    this.buf[this.len++] = 13;
    this.buf[this.len++] = 10;
  }

  /** The header of a command of `n` arguments. */
  command(n: number): this {
    this.ensure(24);
    this.buf[this.len++] = 42; // '*'
    this.digits(n);
    this.crlf();
    return this;
  }

  /** One argument. Numbers are sent as their decimal text. */
  arg(a: string | number): this {
    if (typeof a === 'number' && Number.isSafeInteger(a) && a >= 0) {
      this.ensure(48);
      this.buf[this.len++] = 36; // '$'
      this.digits(digitCount(a));
      this.crlf();
      this.digits(a);
      this.crlf();
      return this;
    }
    const s = typeof a === 'string' ? a : String(a);
    const n = Buffer.byteLength(s);
    this.ensure(n + 24);
    this.buf[this.len++] = 36; // '$'
    this.digits(n);
    this.crlf();
    this.len += this.buf.write(s, this.len, n === s.length ? 'latin1' : 'utf8');
    this.crlf();
    return this;
  }

  /** What was written since the last take(), as its own buffer; the writer starts empty again. */
  take(): Buffer {
    const out = Buffer.allocUnsafe(this.len);
    this.buf.copy(out, 0, 0, this.len);
    this.len = 0;
    return out;
  }
}

/** RESP for one command: `*n $len arg ...`. Numbers are sent as their decimal text. */
export function encodeCommand(args: ReadonlyArray<string | number>, out: string[] = []): string[] {
  out.push('*', String(args.length), '\r\n');
  for (const a of args) {
    const s = typeof a === 'string' ? a : String(a);
    out.push('$', String(Buffer.byteLength(s)), '\r\n', s, '\r\n');
  }
  return out;
}

export class RespConnection {
  private sock: net.Socket | null = null;
  private ready = false;
  private everReady = false;
  private closed = false;
  private attempt = 0;
  private rest: Buffer | null = null;
  /** One callback per reply awaited, in the order the commands were written. */
  private readonly pending: ReplyCallback[] = [];
  private pendingHead = 0;
  /** Writes issued before the first connection was ready (after that, a write while down fails). */
  private readonly early: Array<{ payload: string | Buffer; callbacks: ReplyCallback[] }> = [];
  private readonly readyWaiters: Array<() => void> = [];
  private timer: NodeJS.Timeout | null = null;
  private connectTimer: NodeJS.Timeout | null = null;
  /** Why this side dropped the connection (a timeout, a protocol error): what the commands in flight fail with. */
  private dropReason: Error | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  /** Bumped on every (re)connect: per-connection state (loaded scripts) keys on it. */
  generation = 0;

  constructor(private readonly opts: RespOptions) {
    this.connect();
  }

  /** Resolves when the connection is up (immediately when it is). */
  whenReady(): Promise<void> {
    if (this.ready) return Promise.resolve();
    return new Promise((resolve) => this.readyWaiters.push(resolve));
  }

  isReady(): boolean {
    return this.ready;
  }

  /** The local port of the current socket (tests pick this connection's commands out of MONITOR). */
  localPort(): number | undefined {
    return this.sock?.localPort;
  }

  /**
   * Writes `payload` (RESP, one or more commands) and calls each of `callbacks`, in order, with the
   * replies. Fails every callback at once when the connection is down.
   */
  write(payload: string | Buffer, callbacks: ReplyCallback[]): void {
    if (this.closed) {
      fail(callbacks, new Error('Redis connection is closed'));
      return;
    }
    if (!this.ready) {
      if (this.everReady) fail(callbacks, new Error('Redis connection is down; not sent'));
      else this.early.push({ payload, callbacks });
      return;
    }
    this.send(payload, callbacks);
  }

  close(): void {
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.sock?.destroy();
    const err = new Error('Redis connection is closed');
    for (const e of this.early.splice(0)) fail(e.callbacks, err);
  }

  private send(payload: string | Buffer, callbacks: ReplyCallback[]): void {
    for (const cb of callbacks) this.pending.push(cb);
    this.sock!.write(payload);
    if (!this.timer) this.timer = setTimeout(() => this.timedOut(), this.opts.commandTimeoutMs ?? 5_000);
  }

  private timedOut(): void {
    this.timer = null;
    if (this.pendingHead < this.pending.length)
      this.drop(new Error(`Redis did not answer within ${this.opts.commandTimeoutMs ?? 5_000} ms`));
  }

  private drop(reason: Error): void {
    this.dropReason ??= reason;
    this.sock?.destroy();
  }

  private connect(): void {
    const o = this.opts;
    const where: net.NetConnectOpts = o.path
      ? { path: o.path }
      : { host: o.host, port: o.port, ...(o.family ? { family: o.family } : {}) };
    const sock = o.tls ? tls.connect({ ...where, ...o.tls }) : net.connect(where);
    this.sock = sock;
    sock.setNoDelay(true);
    // Covers the handshake too: connected means Redis answered (cleared by onReady or onClose).
    this.connectTimer = setTimeout(
      () => this.drop(new Error('Redis connect timed out')),
      o.connectTimeoutMs ?? 2_000,
    );
    sock.once(o.tls ? 'secureConnect' : 'connect', () => this.handshake());
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('error', () => {}); // 'close' follows; its handler fails what was in flight
    sock.on('close', () => this.onClose());
  }

  /**
   * AUTH and SELECT when configured, then PING: ready only once Redis has answered, not when a TCP
   * connection opens (a proxy or a server going away may accept and then drop it at once).
   */
  private handshake(): void {
    const o = this.opts;
    const cmds: Array<Array<string | number>> = [];
    if (o.password) cmds.push(o.username ? ['AUTH', o.username, o.password] : ['AUTH', o.password]);
    if (o.db) cmds.push(['SELECT', o.db]);
    cmds.push(['PING']);
    let left = cmds.length;
    const out: string[] = [];
    for (const c of cmds) encodeCommand(c, out);
    const cbs = cmds.map(() => (err: Error | null, v?: Reply) => {
      if (err || v instanceof ReplyError) {
        this.drop(err ?? (v as ReplyError));
        return;
      }
      if (--left === 0) this.onReady();
    });
    for (const cb of cbs) this.pending.push(cb);
    this.sock!.write(out.join(''));
  }

  private onReady(): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.ready = true;
    this.everReady = true;
    this.attempt = 0;
    this.generation++;
    for (const e of this.early.splice(0)) this.send(e.payload, e.callbacks);
    for (const w of this.readyWaiters.splice(0)) w();
  }

  private onData(chunk: Buffer): void {
    const buf = this.rest ? Buffer.concat([this.rest, chunk]) : chunk;
    let pos = 0;
    for (;;) {
      let r: Reply | typeof INCOMPLETE;
      at = pos;
      try {
        r = parseOne(buf);
      } catch (e) {
        this.drop(e as Error);
        return;
      }
      if (r === INCOMPLETE) break;
      pos = at;
      const cb = this.pending[this.pendingHead];
      if (cb === undefined) {
        this.drop(new Error('Redis sent a reply nobody asked for'));
        return;
      }
      this.pending[this.pendingHead++] = undefined as unknown as ReplyCallback;
      if (this.pendingHead > 1024 && this.pendingHead * 2 > this.pending.length) {
        this.pending.splice(0, this.pendingHead);
        this.pendingHead = 0;
      }
      cb(null, r);
    }
    this.rest = pos < buf.length ? buf.subarray(pos) : null;
    if (this.timer) {
      if (this.pendingHead < this.pending.length) this.timer.refresh();
      else {
        clearTimeout(this.timer);
        this.timer = null;
      }
    }
  }

  private onClose(): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    const wasReady = this.ready;
    this.ready = false;
    this.rest = null;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const inFlight = this.pending.splice(this.pendingHead);
    this.pending.length = 0;
    this.pendingHead = 0;
    fail(
      inFlight,
      this.dropReason ??
        new Error(
          wasReady ? 'Redis connection lost; the command may or may not have run' : 'Redis connection failed',
        ),
    );
    this.dropReason = null;
    // Before the first connection, writes wait for it, but not through endless failed attempts.
    if (!this.everReady && this.attempt >= 2)
      for (const e of this.early.splice(0)) fail(e.callbacks, new Error('Redis is not reachable'));
    if (this.closed) return;
    const delay = Math.min(50 * 2 ** Math.min(this.attempt++, 6), 2_000);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (!this.closed) this.connect();
    }, delay);
    this.reconnectTimer.unref();
  }
}

/**
 * The RespConnection that goes where an ioredis client goes, with the same credentials, TLS options and
 * limits. An option that would take ioredis somewhere else, or change how it talks to the server, and that
 * this connection can't follow is refused by name, before anything connects: falling back to a default
 * address would put the hot path's scripts on another server than the rest of the state.
 */
export function respOptionsFor(o: RedisOptions): RespOptions {
  const refuse = (option: string, why: string): never => {
    throw new Error(
      `Redis option '${option}' is not supported by the hot-path connection (src/coord/resp.ts): ${why}`,
    );
  };
  if (o.sentinels?.length) refuse('sentinels', 'Redis Sentinel is not supported; connect to the master');
  if (o.Connector) refuse('Connector', 'a custom connector is not supported');
  if (o.connectionName) refuse('connectionName', 'this connection does not name itself');
  if (o.readOnly) refuse('readOnly', 'the hot path writes');
  if (o.family !== undefined && o.family !== 0 && o.family !== 4 && o.family !== 6)
    refuse('family', `must be 4 or 6, got ${String(o.family)}`);
  return {
    host: o.host ?? 'localhost',
    port: o.port ?? 6379,
    path: o.path || undefined,
    family: o.family || undefined,
    username: o.username ?? undefined,
    password: o.password ?? undefined,
    db: o.db,
    tls: o.tls,
    connectTimeoutMs: o.connectTimeout ?? 2_000,
    commandTimeoutMs: o.commandTimeout ?? 5_000,
  };
}

function fail(callbacks: ReplyCallback[], err: Error): void {
  for (const cb of callbacks) cb(err);
}
