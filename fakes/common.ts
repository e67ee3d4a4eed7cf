/**
 * Shared machinery for the fake upstream providers: an HTTP server on 127.0.0.1 with stats, a bounded request
 * log, fault injection (per-request header, server-level, or HTTP control routes) and an SSE writer that
 * honours the streaming faults. Provider files only describe their routes and their error format.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Fault {
  latencyMs?: number; // wait before sending response headers
  chunkDelayMs?: number; // wait between SSE chunks
  status?: number; // answer this HTTP status with an error body in the provider's own error format
  errorCode?: string; // OpenAI error.code (e.g. 'insufficient_quota') / Anthropic error.type override
  errorMessage?: string;
  retryAfter?: number; // seconds, sent as `retry-after` header with the status
  hang?: boolean; // accept the request, never answer (until the client goes away)
  hangAfterChunks?: number; // streaming: send N chunks then stall forever
  cutAfterChunks?: number; // streaming: send N SSE events then destroy the socket (no terminator)
  malformed?: boolean; // 200 with a garbage body (invalid JSON, or garbage SSE lines when streaming)
  reset?: boolean; // destroy the socket immediately without any response
  chunks?: number; // number of content chunks in a stream (default 5)
  times?: number; // apply this fault to the next N requests only, then clear it (undefined = until changed)
  rate?: number; // server-level only: apply to this fraction (0..1) of requests, at random
  failRate?: number; // `status` applies to this fraction (0..1) of requests; latency and the rest to all
  failFast?: boolean; // with failRate: the failing requests get their status at once, without the latency
}

export interface FakeStats {
  requests: number;
  inFlight: number;
  maxInFlight: number;
  aborted: number;
  completed: number;
  /** Completed with a 2xx status: answers the upstream "served" (and would bill). */
  ok: number;
  byPath: Record<string, number>;
}

export interface RecordedRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
  /** A JSON body's text as it arrived (up to 64 KiB; longer ones are not kept), for byte-level checks. */
  text?: string;
  /** Arrival time (ms since epoch), when the request line reached the fake. */
  at: number;
}

export interface FakeUpstream {
  readonly url: string; // e.g. http://127.0.0.1:43123 (no trailing slash)
  readonly port: number;
  readonly stats: FakeStats;
  readonly requests: RecordedRequest[]; // last 100 requests (bounded)
  setFault(f: Fault | null): void;
  resetStats(): void; // zero the counters and clear `requests` (inFlight stays true to reality)
  close(): Promise<void>; // closes server and destroys open sockets
}

export interface FakeOptions {
  port?: number;
  apiKey?: string;
  name?: string;
}

export interface AuthFailure {
  status: number;
  message: string;
  code?: string;
}

/** Everything a provider route needs to answer one request. */
export interface FakeContext {
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  path: string;
  /** Query string of the request URL (Gemini's `?key=` and `?alt=sse`). */
  query: URLSearchParams;
  /**
   * Parsed JSON body; for multipart/form-data, a summary object (see `multipartSummary`); otherwise the body as
   * text (cut to 2,000 chars), or undefined when empty.
   */
  body: unknown;
  bodyIsJson: boolean;
  /** The body's bytes as received (needed for binary uploads). */
  rawBody: Buffer;
  /** The parsed multipart/form-data body, or null when the request was not multipart. */
  form: MultipartForm | null;
  fault: Fault | null;
  /** Display name used in replies ("Hello from <name>: ..."). */
  name: string;
  /** True once the client went away or we destroyed the socket ourselves. */
  closed(): boolean;
  /** Resolves when the response closes (client gone, socket destroyed, or finished). */
  whenClosed: Promise<void>;
  /** Destroy the socket on purpose (not counted as `aborted`). */
  destroy(): void;
  /** Header name/value for the provider's request id, set on every response. */
  requestIdHeader: [string, string];
}

export interface ProviderSpec {
  defaultName: string;
  /** Response header carrying a request id ('x-request-id' for OpenAI, 'request-id' for Anthropic). */
  requestIdHeader: string;
  /** Error body in the provider's format. `code` is Fault.errorCode when the error comes from a fault. */
  errorBody(status: number, message: string, code?: string): unknown;
  /** Headers an error carries besides its body (Bedrock names the exception in `x-amzn-ErrorType`). */
  errorHeaders?(status: number, code?: string): Record<string, string>;
  /**
   * Null when the credentials are acceptable, otherwise the 401 message (or the status, message and error code,
   * for providers that answer a bad key with something else, e.g. Google's 400 API_KEY_INVALID). `expected` is
   * opts.apiKey.
   */
  checkAuth(req: IncomingMessage, expected: string | undefined): string | AuthFailure | null;
  /** Whether the request asks for a stream (decides the `malformed` garbage); default: body `stream: true`. */
  isStream?(ctx: FakeContext): boolean;
  /** Answers one (authenticated, fault-free) request; returns false when no route matches. */
  route(ctx: FakeContext, spec: ProviderSpec): Promise<boolean> | boolean;
}

const MAX_BODY = 16 * 1024 * 1024;
const EMPTY = Buffer.alloc(0);
const MAX_RECORDED = 100;

// ---------- small helpers shared by both providers ----------

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
/** Cheap random id suffix (not cryptographic; these are fake ids). */
export function rid(len = 24): string {
  let s = '';
  for (let i = 0; i < len; i++) s += ALNUM[(Math.random() * ALNUM.length) | 0];
  return s;
}

export const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** First `n` UTF-16 units without leaving half a surrogate pair at the end. */
export function head(s: string, n: number): string {
  const h = s.slice(0, n);
  const last = h.charCodeAt(h.length - 1);
  return last >= 0xd800 && last <= 0xdbff ? h.slice(0, -1) : h;
}

export function wordCount(text: string): number {
  let n = 0;
  for (const w of text.split(/\s+/)) if (w) n++;
  return n;
}

/** Words with their trailing whitespace, so that joining them gives back `text` exactly. */
export function splitWords(text: string): string[] {
  const lead = /^\s*/.exec(text)?.[0] ?? '';
  const words = text.slice(lead.length).match(/\S+\s*/g) ?? [];
  if (lead && words.length) words[0] = lead + words[0];
  return words;
}

/** Split `text` into exactly `n` pieces on word boundaries, padding with " lorem" words when it has fewer than `n`. */
export function chunkText(text: string, n: number, pad = true): string[] {
  if (n <= 0) return [];
  const words = splitWords(text);
  if (words.length < n && pad) {
    if (words.length && !/\s$/.test(words[words.length - 1]!)) words[words.length - 1] += ' ';
    while (words.length < n) words.push(words.length === n - 1 ? 'lorem' : 'lorem ');
  }
  if (words.length <= n) return words;
  const out: string[] = [];
  for (let i = 0; i < n; i++)
    out.push(
      words.slice(Math.floor((i * words.length) / n), Math.floor(((i + 1) * words.length) / n)).join(''),
    );
  return out;
}

/** Split a string into `n` roughly equal pieces by code point (used for tool-call argument fragments). */
export function splitEven(s: string, n = 3): string[] {
  const cps = Array.from(s);
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const piece = cps
      .slice(Math.floor((i * cps.length) / n), Math.floor(((i + 1) * cps.length) / n))
      .join('');
    if (piece) out.push(piece);
  }
  return out;
}

/** Cut `text` at the first stop sequence (the sequence itself is not part of the output). */
export function applyStop(text: string, stops: unknown): { text: string; matched: string | null } {
  const list =
    typeof stops === 'string'
      ? [stops]
      : Array.isArray(stops)
        ? stops.filter((s): s is string => typeof s === 'string' && s !== '')
        : [];
  let at = -1;
  let matched: string | null = null;
  for (const s of list) {
    const i = text.indexOf(s);
    if (i >= 0 && (at < 0 || i < at)) [at, matched] = [i, s];
  }
  return at < 0 ? { text, matched: null } : { text: text.slice(0, at), matched };
}

/** Keep at most `max` words (a stand-in for a token limit). */
export function truncateWords(text: string, max: unknown): { text: string; truncated: boolean } {
  if (typeof max !== 'number' || !Number.isFinite(max) || max < 0) return { text, truncated: false };
  const words = splitWords(text);
  if (words.length <= max) return { text, truncated: false };
  return { text: words.slice(0, max).join('').trimEnd(), truncated: true };
}

export function sendJson(
  ctx: FakeContext,
  status: number,
  body: unknown,
  headers?: Record<string, string>,
): void {
  if (ctx.closed()) return;
  const data = JSON.stringify(body);
  ctx.res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(data),
    [ctx.requestIdHeader[0]]: ctx.requestIdHeader[1],
    ...headers,
  });
  ctx.res.end(data);
}

export function sendError(
  ctx: FakeContext,
  spec: ProviderSpec,
  status: number,
  message: string,
  code?: string,
  headers?: Record<string, string>,
): void {
  const own = spec.errorHeaders?.(status, code);
  sendJson(ctx, status, spec.errorBody(status, message, code), own ? { ...own, ...headers } : headers);
}

/** Waits `ms` or until the response closes, whichever comes first. */
function wait(ms: number, ctx: FakeContext): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    void ctx.whenClosed.then(() => {
      clearTimeout(t);
      resolve();
    });
  });
}

/**
 * Streamed response writer honouring chunkDelayMs / hangAfterChunks / cutAfterChunks. Every `send` is one chunk
 * (an SSE event, or a piece of a binary body sent with `Transfer-Encoding: chunked`); `end` writes the last
 * piece (a terminator such as `data: [DONE]`, or nothing). When a cut or hang fault is set, `end` never
 * completes the response, even if the stream is shorter than N.
 */
export class ChunkWriter {
  private sent = 0;
  private corked: boolean;
  constructor(
    protected readonly ctx: FakeContext,
    headers: Record<string, string>,
  ) {
    ctx.res.writeHead(200, { ...headers, [ctx.requestIdHeader[0]]: ctx.requestIdHeader[1] });
    // Without chunkDelayMs there is no timing to preserve: coalesce the whole stream into one socket write
    // (a benchmark baseline must not be slowed down by one syscall per event).
    this.corked = !ctx.fault?.chunkDelayMs;
    if (this.corked) ctx.res.cork();
  }

  private uncork(): void {
    if (this.corked) {
      this.corked = false;
      this.ctx.res.uncork();
    }
  }

  /** Writes one chunk; false once the stream must stop (client gone, cut, or stalled). */
  async send(chunk: string | Buffer): Promise<boolean> {
    if (!(await this.gate(false))) return false;
    this.ctx.res.write(chunk);
    this.sent++;
    return true;
  }

  async end(last: string | Buffer = ''): Promise<void> {
    if (!(await this.gate(true))) return;
    this.ctx.res.end(last);
    this.uncork();
  }

  private async gate(terminal: boolean): Promise<boolean> {
    const { ctx } = this;
    const f = ctx.fault;
    if (ctx.closed()) return false;
    if (f?.cutAfterChunks !== undefined && (terminal || this.sent >= f.cutAfterChunks)) {
      this.uncork();
      ctx.res.flushHeaders();
      // Let the chunks already written reach the client (http uncorks on nextTick) before the socket goes away.
      setImmediate(() => {
        const s = ctx.req.socket;
        if (s.writableLength > 0) s.once('drain', () => ctx.destroy());
        else ctx.destroy();
      });
      return false;
    }
    if (f?.hangAfterChunks !== undefined && (terminal || this.sent >= f.hangAfterChunks)) {
      this.uncork();
      ctx.res.flushHeaders();
      await ctx.whenClosed;
      return false;
    }
    if (this.sent > 0 && f?.chunkDelayMs) {
      await wait(f.chunkDelayMs, ctx);
      if (ctx.closed()) return false;
    }
    return true;
  }
}

/**
 * SSE writer: a ChunkWriter with the event-stream headers. Every `send` is one SSE event; `end` writes the
 * terminator (`data: [DONE]`, Anthropic's `message_stop`, or nothing for the Responses API and Gemini).
 */
export class SseWriter extends ChunkWriter {
  constructor(ctx: FakeContext) {
    super(ctx, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
    });
  }
}

// ---------- multipart/form-data ----------

/** One file part of a multipart/form-data body. */
export interface MultipartFile {
  field: string;
  filename: string;
  contentType: string;
  data: Buffer;
}

/** A parsed multipart/form-data body: the text fields in order (a name may repeat) and the file parts. */
export class MultipartForm {
  readonly fields: Array<[string, string]> = [];
  readonly files: MultipartFile[] = [];

  /** The first value of a text field. */
  get(name: string): string | undefined {
    return this.fields.find(([k]) => k === name)?.[1];
  }

  /** Every value of a text field sent as `name` or `name[]` (how the openai client sends arrays). */
  getAll(name: string): string[] {
    return this.fields.filter(([k]) => k === name || k === name + '[]').map(([, v]) => v);
  }

  /** Every file sent as `name` or `name[]`. */
  filesOf(name: string): MultipartFile[] {
    return this.files.filter((f) => f.field === name || f.field === name + '[]');
  }
}

/** Parses a multipart/form-data body; null when the content type has no boundary or the body is not multipart. */
export function parseMultipart(raw: Buffer, contentType: string | undefined): MultipartForm | null {
  const m = /^multipart\/form-data\s*;.*?boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType ?? '');
  const boundary = m?.[1] ?? m?.[2];
  if (!boundary) return null;
  const delim = Buffer.from('--' + boundary);
  const next = Buffer.from('\r\n--' + boundary);
  const form = new MultipartForm();
  let at = raw.indexOf(delim);
  if (at < 0) return null;
  at += delim.length;
  while (at < raw.length) {
    if (raw[at] === 0x2d && raw[at + 1] === 0x2d) break; // "--": the closing delimiter
    if (raw[at] === 0x0d && raw[at + 1] === 0x0a) at += 2;
    const headEnd = raw.indexOf('\r\n\r\n', at);
    if (headEnd < 0) return null;
    const end = raw.indexOf(next, headEnd + 4);
    if (end < 0) return null;
    const head = raw.subarray(at, headEnd).toString('utf8');
    const data = raw.subarray(headEnd + 4, end);
    at = end + next.length;
    const disp = /^content-disposition:(.*)$/im.exec(head)?.[1] ?? '';
    const name = /\bname="([^"]*)"/i.exec(disp)?.[1];
    if (name === undefined) continue;
    const filename = /\bfilename="([^"]*)"/i.exec(disp)?.[1];
    if (filename === undefined) form.fields.push([name, data.toString('utf8')]);
    else
      form.files.push({
        field: name,
        filename,
        contentType: /^content-type:\s*(.*?)\s*$/im.exec(head)?.[1] ?? 'application/octet-stream',
        data: Buffer.from(data),
      });
  }
  return form;
}

/**
 * What a multipart request looks like in `requests` and `ctx.body`: each text field by name, each file as
 * {filename, contentType, size} (no bytes); a name sent more than once maps to an array.
 */
export function multipartSummary(form: MultipartForm): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const add = (k: string, v: unknown): void => {
    const prev = out[k];
    if (prev === undefined) out[k] = v;
    else if (Array.isArray(prev)) prev.push(v);
    else out[k] = [prev, v];
  };
  for (const [k, v] of form.fields) add(k, v);
  for (const f of form.files)
    add(f.field, { filename: f.filename, contentType: f.contentType, size: f.data.length });
  return out;
}

function parseFault(v: unknown): Fault | null | undefined {
  if (v === null) return null;
  return isObject(v) ? (v as Fault) : undefined;
}

/** The request body's bytes; null when it is larger than MAX_BODY. */
function readBody(req: IncomingMessage): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let size = 0;
    req.on('data', (b: Buffer) => {
      size += b.length;
      if (size <= MAX_BODY) parts.push(b);
    });
    req.on('end', () => resolve(size > MAX_BODY ? null : Buffer.concat(parts)));
    req.on('error', () => resolve(Buffer.alloc(0)));
  });
}

/** Starts a fake provider server on 127.0.0.1. */
export async function startFakeServer(spec: ProviderSpec, opts: FakeOptions = {}): Promise<FakeUpstream> {
  const name = opts.name ?? spec.defaultName;
  const stats: FakeStats = {
    requests: 0,
    inFlight: 0,
    maxInFlight: 0,
    aborted: 0,
    completed: 0,
    ok: 0,
    byPath: {},
  };
  const requests: RecordedRequest[] = [];
  let serverFault: Fault | null = null;
  let reqSeq = 0;
  const reqPrefix = rid(8);

  const setFault = (f: Fault | null): void => {
    serverFault = f && (f.times === undefined || f.times > 0) ? { ...f } : null;
  };
  const resetStats = (): void => {
    Object.assign(stats, { requests: 0, maxInFlight: stats.inFlight, aborted: 0, completed: 0, ok: 0 });
    for (const k of Object.keys(stats.byPath)) delete stats.byPath[k];
    requests.length = 0;
  };
  /** The server-level fault for one request; consumes one use of a `times`-limited fault. */
  const takeServerFault = (): Fault | null => {
    const f = serverFault;
    if (f?.rate !== undefined && Math.random() >= f.rate) return null;
    if (f?.times !== undefined && --f.times <= 0) serverFault = null;
    return f;
  };

  async function control(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const reply = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method === 'GET' && path === '/_fake/stats') return reply(200, { stats, requests });
    if (req.method === 'POST' && path === '/_fake/reset') {
      resetStats();
      serverFault = null;
      return reply(200, { ok: true });
    }
    if (req.method === 'POST' && path === '/_fake/fault') {
      let f: Fault | null | undefined;
      try {
        f = parseFault(JSON.parse((await readBody(req))?.toString('utf8') || 'null'));
      } catch {
        f = undefined;
      }
      if (f === undefined) return reply(400, { error: 'body must be a JSON Fault object or null' });
      setFault(f);
      return reply(200, { ok: true, fault: serverFault });
    }
    reply(404, { error: 'unknown control route' });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const arrivedAt = Date.now();
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (path.startsWith('/_fake/')) return control(req, res, path);

    // Count on arrival, before any fault applies.
    stats.requests++;
    stats.byPath[path] = (stats.byPath[path] ?? 0) + 1;
    stats.inFlight++;
    if (stats.inFlight > stats.maxInFlight) stats.maxInFlight = stats.inFlight;
    // A request ends exactly once: 'finish' (whole response handed to the OS) => completed; 'close' before
    // that => aborted by the client, unless we destroyed the socket ourselves (reset / cutAfterChunks).
    let done = false;
    let selfDestroyed = false;
    let resolveClosed!: () => void;
    const whenClosed = new Promise<void>((r) => (resolveClosed = r));
    res.once('finish', () => {
      if (done) return;
      done = true;
      stats.inFlight--;
      stats.completed++;
      if (res.statusCode >= 200 && res.statusCode < 300) stats.ok++;
    });
    res.once('close', () => {
      if (!done) {
        done = true;
        stats.inFlight--;
        if (!selfDestroyed) stats.aborted++;
      }
      resolveClosed();
    });

    const recorded: RecordedRequest = {
      method: req.method ?? 'GET',
      path,
      headers: req.headers,
      body: undefined,
      at: arrivedAt,
    };
    const ctx: FakeContext = {
      req,
      res,
      method: recorded.method,
      path,
      query: new URLSearchParams(q < 0 ? '' : url.slice(q + 1)),
      body: undefined,
      bodyIsJson: false,
      rawBody: EMPTY,
      form: null,
      fault: null,
      name,
      closed: () => done || res.destroyed,
      whenClosed,
      destroy: () => {
        selfDestroyed = true;
        req.socket.destroy();
      },
      requestIdHeader: [spec.requestIdHeader, `req_${reqPrefix}${(++reqSeq).toString(36)}`],
    };

    const raw = await readBody(req);
    if (raw?.length) {
      ctx.rawBody = raw;
      const contentType = req.headers['content-type'];
      ctx.form = /^multipart\/form-data/i.test(contentType ?? '') ? parseMultipart(raw, contentType) : null;
      if (ctx.form) ctx.body = multipartSummary(ctx.form);
      else {
        const text = raw.toString('utf8');
        try {
          ctx.body = JSON.parse(text);
          ctx.bodyIsJson = true;
          if (text.length <= 65_536) recorded.text = text;
        } catch {
          ctx.body = text.length > 2000 ? text.slice(0, 2000) : text;
        }
      }
    }
    recorded.body = ctx.body;
    requests.push(recorded);
    if (requests.length > MAX_RECORDED) requests.shift();
    if (raw === null) return sendError(ctx, spec, 413, 'request body too large');

    // Fault: per-request header first, then the server-level fault.
    const header = req.headers['x-fake-fault'];
    if (typeof header === 'string' && header) {
      let f: Fault | null | undefined;
      try {
        f = parseFault(JSON.parse(header));
      } catch {
        f = undefined;
      }
      if (f === undefined)
        return sendError(ctx, spec, 400, 'x-fake-fault header must be a JSON Fault object');
      ctx.fault = f;
    } else {
      ctx.fault = takeServerFault();
    }
    const f = ctx.fault;

    if (f?.reset) return ctx.destroy();
    if (f?.hang) return whenClosed;
    const failStatus = f?.status && (f.failRate === undefined || Math.random() < f.failRate) ? f.status : 0;
    if (f?.latencyMs && !(failStatus && f.failFast)) {
      await wait(f.latencyMs, ctx);
      if (ctx.closed()) return;
    }
    if (f && failStatus) {
      const headers: Record<string, string> =
        f.retryAfter !== undefined ? { 'retry-after': String(f.retryAfter) } : {};
      return sendError(
        ctx,
        spec,
        failStatus,
        f.errorMessage ?? `fake upstream error (HTTP ${failStatus})`,
        f.errorCode,
        headers,
      );
    }
    if (f?.malformed) {
      const streaming = spec.isStream ? spec.isStream(ctx) : isObject(ctx.body) && ctx.body.stream === true;
      if (streaming) {
        res.writeHead(200, {
          'content-type': 'text/event-stream; charset=utf-8',
          [spec.requestIdHeader]: ctx.requestIdHeader[1],
        });
        res.end(
          'data: {"id":"broken","choices":[{"delta":\n\nevent: ???\ndata: not json at all\n\n:::garbage:::\n\n',
        );
      } else {
        res.writeHead(200, {
          'content-type': 'application/json',
          [spec.requestIdHeader]: ctx.requestIdHeader[1],
        });
        res.end('{"id":"broken","object":"chat.completion","choices":[{"message":');
      }
      return;
    }

    const authError = spec.checkAuth(req, opts.apiKey);
    if (typeof authError === 'string') return sendError(ctx, spec, 401, authError);
    if (authError) return sendError(ctx, spec, authError.status, authError.message, authError.code);
    if (!(await spec.route(ctx, spec)))
      return sendError(ctx, spec, 404, `Invalid URL (${ctx.method} ${path})`);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      // A bug in a fake must be loud but must not kill the process running the tests.
      if (!res.headersSent && !res.destroyed) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify(spec.errorBody(500, `fake crashed: ${String(err)}`)));
      } else res.destroy();
    });
  });
  server.keepAliveTimeout = 30_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    stats,
    requests,
    setFault,
    resetStats,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
