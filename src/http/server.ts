import { type ServerResponse, createServer as createHttpServer } from 'node:http';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import type { Logger } from 'pino';
import { lazyChildLogger, logAccess } from '../observability/log.js';
import { GatewayError } from '../core/errors.js';
import { requestId } from '../core/ids.js';
import { redactSecrets } from '../core/redact.js';
import type { ConfigCache } from '../config/cache.js';
import type { Clock } from '../lib/clock.js';
import type { Metrics } from '../observability/metrics.js';
import { type Tracing, passThrough } from '../observability/tracing.js';
import { DIALECT_NAMES, DIALECTS, type InboundDialect } from '../core/dialects.js';
import { resolveAlias } from '../relay/auth.js';
import { RequestContext, type Routed } from '../core/context.js';
import { type ClientSink, type Relay, writeError } from '../relay/relay.js';
import { type AdminDeps, registerAdmin } from './admin.js';
import { type MediaHttpDeps, registerMedia } from './media.js';
import { type ActuatorAccess, registerActuator } from './management.js';
import { rateLimitHeaders } from '../quota/admission.js';
import type { Admitted, Governance } from '../governance/pipeline.js';
import { type TaskRow, type TaskStore, taskView } from '../tasks/store.js';

import { type Inbound, googleKey, inboundFor, isGeminiEmbed } from './validate.js';
import { parseMultipart } from '../lib/multipart.js';
import {
  type CachedAnswer,
  MAX_CACHED_BYTES,
  type ResponseCache,
  cacheKey,
  cacheTtlFor,
} from '../relay/response-cache.js';
import { emptyUsage } from '../core/usage.js';
import { Abort } from '../lib/abort.js';
import { MAX_JSON_DEPTH, parseJsonBody } from './json-body.js';
import { type RouteEntry, authed, authFirstOnRoute, shapeOf } from './auth-first.js';
import { renderError } from '../core/render.js';

export interface HttpDeps {
  config: ConfigCache;
  relay: Relay;
  clock: Clock;
  log: Logger;
  metrics: Metrics;
  bodyLimit: number;
  /** A client must have sent its whole request within this (slow-loris guard); 0 = no limit. */
  requestTimeoutMs?: number;
  /** True while both shared dependencies (Redis and the database) are unreachable: data plane answers 503. */
  bothDown?: () => boolean;
  /** Readiness: the gateway's dependencies, for /actuator/health/readiness. */
  /** The ASYNC task store (absent = no ASYNC mode). */
  tasks?: { store: TaskStore; wake: () => void; deadlineMs: number; onQueued?: (kind: string) => void };
  /** Admission, wallet holds, settlement and request metrics (src/governance). */
  governance: Governance;
  /** OpenTelemetry traces (absent = off: only the client's own traceparent is passed upstream). */
  tracing?: Tracing | null;
  /** Media generation routes (images, videos, music, new-api compatibility). */
  media?: MediaHttpDeps;
  /** The admin API (absent = not served). */
  admin?: AdminDeps;
  /** The request log (absent = off): each request's row, handed over as it ends. */
  requestLog?: { record(ctx: RequestContext): void } | null;
  /** Exact-match response cache store (absent = no response cache). */
  responseCache?: ResponseCache;
  /** Largest multipart upload accepted (audio to transcribe, images to edit), bytes. */
  uploadLimit?: number;
  /** What this listener serves of metrics and readiness details, and the bearer it asks (default: all, open). */
  actuator?: ActuatorAccess;
  readiness: () => Promise<{
    up: boolean;
    degraded?: boolean;
    components: Record<string, { status: string; details?: unknown }>;
  }>;
}

/** At close, how long the server waits for relayed handlers whose connections the drain cut. */
const CLOSE_WAIT_MS = 10_000;

/** How long, with both shared dependencies down, reads may still be answered from the in-memory config. */
const L1_TTL_MS = 30_000;

function nodeSink(res: ServerResponse): ClientSink {
  let aborted = false;
  const cbs: Array<() => void> = [];
  res.on('close', () => {
    if (!res.writableFinished) {
      aborted = true;
      for (const cb of cbs) cb();
    }
  });
  return {
    get closed() {
      return aborted || res.destroyed;
    },
    get headersSent() {
      return res.headersSent;
    },
    head: (status, headers) => void res.writeHead(status, headers),
    write: (c) => res.write(c),
    drain: (timeoutMs) =>
      new Promise<boolean>((resolve) => {
        const done = (ok: boolean) => {
          clearTimeout(t);
          res.off('drain', onDrain);
          res.off('close', onDrain);
          resolve(ok);
        };
        const onDrain = () => done(true);
        const t = setTimeout(() => done(false), timeoutMs);
        res.on('drain', onDrain);
        res.on('close', onDrain);
      }),
    abort: () => void res.destroy(),
    end: (c) => void (c ? res.end(c) : res.end()),
    onAbort: (cb) => void cbs.push(cb),
  };
}

/** A sink that also keeps what it was sent (for the response cache), handed over when the answer ends. */
function capturing(inner: ClientSink, onDone: (a: { t: string; p: string }) => void): ClientSink {
  let status = 0;
  let type = '';
  let parts: string[] | null = [];
  let size = 0;
  const keep = (c: string | Uint8Array) => {
    if (!parts) return;
    const s = typeof c === 'string' ? c : Buffer.from(c).toString('utf8');
    size += s.length;
    if (size > MAX_CACHED_BYTES) parts = null;
    else parts.push(s);
  };
  return {
    get closed() {
      return inner.closed;
    },
    get headersSent() {
      return inner.headersSent;
    },
    head(s, h) {
      status = s;
      type = h['content-type'] ?? '';
      inner.head(s, h);
    },
    write(c) {
      keep(c);
      return inner.write(c);
    },
    drain: (ms) => inner.drain(ms),
    abort: () => inner.abort(),
    end(c) {
      if (c) keep(c);
      inner.end(c);
      if (status === 200 && parts && !inner.closed) onDone({ t: type, p: parts.join('') });
    },
    onAbort: (cb) => inner.onAbort(cb),
  };
}

/** A request's path without its query string (which may carry a key: Gemini's `?key=`), for logs. */
export function pathOf(url: string): string {
  const q = url.indexOf('?');
  return (q < 0 ? url : url.slice(0, q)).slice(0, 200);
}

/** Maps Fastify's own errors (body parsing, limits) to Anima's. */
function toGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  const e = err as { code?: string; statusCode?: number; message?: string; validation?: unknown };
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new GatewayError('body_too_large', 'Request body is larger than the gateway accepts.');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new GatewayError('invalid_json', 'We could not parse the JSON body of your request.');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new GatewayError('unsupported_media_type', 'Send the request body as application/json.');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new GatewayError('invalid_request', 'Content-Length does not match the body.');
  }
  if (err instanceof SyntaxError || e.statusCode === 400)
    return new GatewayError('invalid_json', 'We could not parse the JSON body of your request.');
  if (e.statusCode === 413)
    return new GatewayError('body_too_large', 'Request body is larger than the gateway accepts.');
  if (e.statusCode === 415)
    return new GatewayError('unsupported_media_type', 'Send the request body as application/json.');
  return new GatewayError('internal_error', 'internal error', { cause: err });
}

export function buildServer(d: HttpDeps): FastifyInstance {
  const gov = d.governance;
  const app = Fastify({
    loggerInstance: d.log as unknown as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    // Each request's child logger (req.log, unused by Anima's handlers) is made only if something logs with it.
    childLoggerFactory: lazyChildLogger as never,
    bodyLimit: d.bodyLimit,
    requestTimeout: d.requestTimeoutMs ?? 60_000,
    // Node checks request and header timeouts every connectionsCheckingInterval (30 s by default): a
    // slow-loris client would hold its socket that long past the limit. Check every second.
    serverFactory: (handler) =>
      createHttpServer(
        {
          connectionsCheckingInterval: 1_000,
          requestTimeout: d.requestTimeoutMs ?? 60_000,
          headersTimeout: Math.min(d.requestTimeoutMs ?? 60_000, 60_000),
        },
        handler,
      ),
    genReqId: () => requestId(),
    return503OnClosing: true,
    // A path Fastify can't decode (a malformed %-escape in a route parameter) gets the dialect's error
    // shape like any bad input, not Fastify's own body.
    frameworkErrors: (err, req, reply) => {
      const ge = new GatewayError(
        'invalid_request',
        err.code === 'FST_ERR_BAD_URL'
          ? 'The request path is not a valid URL (a malformed %-escape).'
          : 'The request could not be routed.',
      );
      const { status, body } = renderError(shapeOf(req.method, req.url), ge);
      void (reply as FastifyReply).code(status).header('x-request-id', req.id).send(body);
    },
    forceCloseConnections: 'idle',
    keepAliveTimeout: 65_000,
    onProtoPoisoning: 'remove',
    onConstructorPoisoning: 'remove',
  });

  // Authentication first (auth-first.ts): declared before any route, so every route gets its hooks.
  app.decorateRequest('animaAuth', null);
  const routes: RouteEntry[] = [];
  app.decorate('animaRoutes', routes);
  app.addHook(
    'onRoute',
    authFirstOnRoute({
      config: d.config,
      clock: d.clock,
      routes,
      onRefused: (ctx) => {
        d.metrics.request(ctx);
        logRequest(d.log, ctx);
        d.requestLog?.record(ctx);
      },
    }),
  );

  // Relayed requests still running. At shutdown the drain cuts their connections; the server's close
  // then waits (bounded) for their handlers to finish, so each one's settlement and access line are
  // written before the process goes on to stop billing and exit.
  let inflight = 0;
  let idle: (() => void) | null = null;
  app.addHook('onClose', async () => {
    if (inflight === 0) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, CLOSE_WAIT_MS);
      idle = () => {
        clearTimeout(t);
        resolve();
      };
    });
  });

  // JSON only: a text/plain body is a 415, not a string to guess at.
  app.removeContentTypeParser('text/plain');
  // An empty JSON body is "no body" (e.g. POST /circuits/x/open with a content-type and nothing else);
  // the data plane still refuses it because it needs an object.
  const json = app.getDefaultJsonParser('remove', 'remove');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    const bytes = body as Buffer;
    if (bytes.length === 0) return done(null, undefined);
    const r = parseJsonBody(bytes);
    if (r.ok) done(null, r.value);
    else if (r.why === 'too_deep')
      done(
        new GatewayError(
          'invalid_request',
          `The JSON body is nested deeper than ${MAX_JSON_DEPTH} levels.`,
        ) as unknown as Error,
        undefined,
      );
    else if (r.why === 'nul' || r.why === 'lone_surrogate')
      done(
        new GatewayError(
          'invalid_request',
          r.why === 'nul'
            ? 'The JSON body holds a NUL character (\\u0000), which is not accepted.'
            : 'The JSON body holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is not text.',
        ) as unknown as Error,
        undefined,
      );
    else json(req, bytes.toString('utf8'), done); // not JSON: Fastify's parser fails it with its own error, as before
  });

  app.setErrorHandler((err, req, reply) => {
    const ge = toGatewayError(err);
    if (ge.code === 'internal_error')
      d.log.error({ err: safeErr(err), reqId: req.id, path: pathOf(req.url) }, 'unhandled error');
    const { status, body } = renderError(shapeOf(req.method, req.url), ge);
    void reply.code(status).header('x-request-id', req.id).headers(ge.headers).send(body);
  });

  // Uploads (audio to transcribe, images to edit, a video's reference): text fields become the body's
  // properties, files ride along under a symbol (see lib/multipart.ts).
  app.addContentTypeParser(
    /^multipart\/form-data/,
    { parseAs: 'buffer', bodyLimit: d.uploadLimit ?? 26 * 1024 * 1024 },
    (req, buf, done) => {
      parseMultipart(buf as Buffer, String(req.headers['content-type']))
        .then((b) => {
          // Text fields can be stored (a video's prompt, a callback URL): no NUL, as in JSON bodies.
          for (const k in b)
            if (k.includes('\0') || b[k]!.includes('\0'))
              return done(
                new GatewayError(
                  'invalid_request',
                  'A form field holds a NUL character, which is not accepted.',
                  {
                    param: k.replace(/\0/g, ''),
                  },
                ) as unknown as Error,
                undefined,
              );
          done(null, b);
        })
        .catch(() =>
          done(
            new GatewayError(
              'invalid_request',
              'The multipart body could not be parsed.',
            ) as unknown as Error,
            undefined,
          ),
        );
    },
  );

  app.setNotFoundHandler((req, reply) => {
    const ge = new GatewayError(
      'not_found',
      `Unknown route: ${req.method} ${req.url.split('?')[0]!.slice(0, 200)}`,
    );
    // In the shape of the API the path belongs to: a Gemini client on /v1beta/… reads Google's shape.
    const { status, body } = renderError(shapeOf(req.method, req.url), ge);
    void reply.code(status).header('x-request-id', req.id).send(body);
  });

  /** A cache hit: the stored answer as it was sent (a stream replayed as a stream), settled at the cache price. */
  const serveCached = async (ctx: RequestContext, sink: ClientSink, hit: CachedAnswer, done: Admitted) => {
    ctx.cacheHit = true;
    ctx.channel = hit.c;
    ctx.usage = emptyUsage();
    ctx.status = 200;
    ctx.outcome = 'ok';
    ctx.served = true;
    await done.beforeEnd();
    sink.head(200, {
      ...ctx.extraHeaders,
      'content-type': hit.t,
      'x-request-id': ctx.id,
      'x-anima-cache': 'hit',
      'x-anima-cache-age': String(Math.max(0, Math.floor((Date.now() - hit.at) / 1000))),
    });
    ctx.ttfbMs = ctx.elapsedMs();
    sink.end(hit.p);
    ctx.endedAt = d.clock.now();
  };

  /** Queues a request of an ASYNC-mode key that is over its limits as a task (answered 202 by the route). */
  const deferAs =
    (dialect: InboundDialect) =>
    async (ctx: Routed, body: Record<string, unknown>, retryAfterMs: number): Promise<TaskRow> => {
      if (ctx.stream)
        throw new GatewayError(
          'invalid_request',
          'This key runs over-limit requests asynchronously (ASYNC mode), which cannot stream: retry without stream, or later.',
          { param: 'stream' },
        );
      if (!DIALECTS[dialect].deferrable)
        throw new GatewayError(
          'rate_limit_exceeded',
          'This key is over its limits and this operation cannot be deferred as a task: retry later.',
          { headers: { 'retry-after': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) } },
        );
      if (!d.tasks)
        throw new GatewayError(
          'service_unavailable',
          'Asynchronous tasks are not available on this gateway.',
        );
      const task = await d.tasks.store.create({
        kind: DIALECTS[dialect].taskKind,
        appId: ctx.key.appId,
        keyId: ctx.key.id,
        request: body,
        deadline: new Date(Date.now() + d.tasks.deadlineMs),
        notBefore: new Date(Date.now() + Math.min(retryAfterMs, 1_000)),
      });
      d.tasks.wake();
      d.tasks.onQueued?.(task.kind);
      return task;
    };

  const tracing = d.tracing ?? null;
  const dataPlane = (dialect: InboundDialect, inbound: Inbound = inboundFor(dialect)) => {
    const defer = deferAs(dialect);
    return async (req: FastifyRequest, reply: FastifyReply) => {
      const now = d.clock.now();
      const ctx = new RequestContext(req.id, dialect, now);
      const trace = tracing
        ? tracing.request(req.method, req.routeOptions.url ?? '', req.headers, dialect)
        : passThrough(req.headers);
      reply.hijack();
      inflight++;
      let sink = nodeSink(reply.raw);
      let admitted: Admitted | null = null;
      try {
        const ks = d.config.killSwitch();
        if (ks)
          throw new GatewayError(
            'gateway_disabled',
            `The gateway is disabled by an operator${ks.reason ? `: ${ks.reason}` : ''}.`,
          );
        if (d.bothDown?.())
          throw new GatewayError(
            'service_unavailable',
            'Redis and the database are both unreachable: requests are refused until one returns (nothing is served unbilled).',
            { headers: { 'retry-after': '1' } },
          );
        // The key was checked before the body was read (auth-first.ts); only then is the body validated.
        const who = await authed(
          d.config,
          req,
          ctx,
          now,
          DIALECTS[dialect].googleKey ? googleKey(req) : undefined,
        );
        const { body, model, stream } = inbound(req);
        ctx.stream = stream;
        const routed = resolveAlias(d.config, who, model, now);
        const gone = new Abort();
        sink.onAbort(() => gone.abort());
        // Response cache (opt-in): looked up first, so a hit is admitted for what it uses (no tokens) and
        // reserves only its cache price; it still passes the key's rate and concurrency limits.
        const cacheTtl = d.responseCache ? cacheTtlFor(dialect, routed.alias.cacheTtlS, req.headers) : 0;
        const ck = cacheTtl > 0 ? cacheKey(routed.app.id, dialect, routed.aliasName, body) : null;
        const hit = ck ? await d.responseCache!.get(ck).catch(() => null) : null;
        const admitSpan = trace ? trace.admission() : null;
        const decision = await gov.admit({
          ctx: routed,
          body,
          abort: gone,
          now,
          cachedFrom: hit ? hit.c : null,
          defer,
        });
        admitSpan?.(decision.kind, decision.kind === 'rejected' ? decision.code : undefined);
        if (decision.kind === 'rejected') throw decision.error;
        if (decision.kind === 'deferred') {
          // ASYNC mode and no room now: the request is a task; answer 202 at once.
          const task = decision.task;
          ctx.status = 202;
          ctx.outcome = 'queued';
          sink.head(202, {
            'content-type': 'application/json',
            'x-request-id': ctx.id,
            location: `/v1/tasks/${task.id}`,
          });
          sink.end(JSON.stringify({ ...taskView(task), task_id: task.id }));
          return;
        }
        admitted = decision;
        if (trace) admitted.trace = trace;
        if (admitted.lease) ctx.extraHeaders = rateLimitHeaders(admitted.lease.remaining);
        if (hit) {
          await serveCached(ctx, sink, hit, admitted);
          return;
        }
        if (ck) {
          sink = capturing(sink, (a) => {
            if (ctx.served && !ctx.clientAborted && ctx.status === 200 && ctx.channel) {
              void d
                .responseCache!.put(ck!, { ...a, c: ctx.channel, at: Date.now() }, cacheTtl)
                .catch(() => {});
            }
          });
          ctx.extraHeaders['x-anima-cache'] = 'miss';
        }
        const beta = req.headers['anthropic-beta'];
        await d.relay.serve(
          routed,
          body,
          sink,
          typeof beta === 'string'
            ? { anthropicBeta: beta, abort: gone, done: admitted, trace }
            : { abort: gone, done: admitted, trace },
        );
      } catch (e) {
        const ge = e instanceof GatewayError ? e : toGatewayError(e);
        if (ge.code === 'internal_error') d.log.error({ err: safeErr(e), reqId: ctx.id }, 'unhandled error');
        ctx.outcome = ctx.attempts > 0 ? 'failed' : 'rejected'; // rejected: refused before any upstream call
        if (!sink.headersSent) writeError(ctx, sink, ge);
        else sink.end();
      } finally {
        try {
          // Exactly once, whatever happened: books what was served (or releases the hold), trues up the
          // lease, counts the request.
          if (admitted) await gov.settle(admitted);
          else gov.record(ctx);
        } catch (e) {
          d.log.error({ err: safeErr(e), reqId: ctx.id }, 'settling a request failed');
        } finally {
          // Every request gets its access line, whatever happened to its settlement.
          trace?.end(ctx);
          logRequest(d.log, ctx);
          d.requestLog?.record(ctx);
          if (--inflight === 0 && idle) idle();
        }
      }
    };
  };

  /** Route options of a relayed route: its dialect, for the access line of a request refused before it. */
  const relayed = (dialect: InboundDialect) => ({ config: { animaAccess: dialect } });

  if (d.admin) registerAdmin(app, d.admin);
  if (d.media) registerMedia(app, d.media);

  // The relayed routes, from the dialect registry. Gemini's two dialects share their routes:
  // POST /v1beta/models/{model}:{method} carries the method after a colon in the last path segment, which
  // the router can't split, so one route dispatches by method to the generation or the embedding dialect.
  const geminiGenerate = dataPlane('gemini');
  const geminiEmbed = dataPlane('gemini_embed');
  const geminiRoute = (req: FastifyRequest, reply: FastifyReply) =>
    isGeminiEmbed(req) ? geminiEmbed(req, reply) : geminiGenerate(req, reply);
  for (const dl of DIALECT_NAMES) {
    if (dl === 'gemini_embed') continue;
    const handler = dl === 'gemini' ? geminiRoute : dataPlane(dl);
    for (const path of DIALECTS[dl].paths) app.post(path, relayed(dl), handler);
  }
  /** With Redis and the database both gone, reads answer from L1 only while it is fresher than 30 s. */
  const refuseIfL1Expired = () => {
    if (d.bothDown?.() && d.clock.now() - d.config.loadedAt > L1_TTL_MS) {
      throw new GatewayError(
        'service_unavailable',
        'Redis and the database are both unreachable and the in-memory configuration is older than 30 s.',
        { headers: { 'retry-after': '1' } },
      );
    }
  };
  const geminiModel = (id: string, now: number) => ({
    name: `models/${id}`,
    baseModelId: id,
    version: '1',
    displayName: id,
    description: d.config.alias(id, now)?.description ?? '',
    supportedGenerationMethods: ['generateContent', 'streamGenerateContent'],
  });
  app.get('/v1beta/models', async (req, reply) => {
    const now = d.clock.now();
    refuseIfL1Expired();
    const who = await authed(d.config, req, new RequestContext(req.id, 'gemini', now), now, googleKey(req));
    const allowed = who.key.allowedAliases;
    const models = d.config
      .aliasNames(now)
      .filter((n) => !allowed || allowed.has(n))
      .map((id) => geminiModel(id, now));
    void reply.header('x-request-id', req.id).send({ models });
  });
  app.get('/v1beta/models/:model', async (req, reply) => {
    const now = d.clock.now();
    refuseIfL1Expired();
    const who = await authed(d.config, req, new RequestContext(req.id, 'gemini', now), now, googleKey(req));
    const id = (req.params as { model: string }).model.replace(/^models\//, '');
    resolveAlias(d.config, who, id, now);
    void reply.header('x-request-id', req.id).send(geminiModel(id, now));
  });

  // Responses are not stored (stateless): retrieval, deletion, cancellation and input-item listing say
  // so plainly instead of a bare unknown-route 404.
  const notStored = async (req: FastifyRequest) => {
    const now = d.clock.now();
    await authed(d.config, req, new RequestContext(req.id, 'openai_responses', now), now);
    throw new GatewayError(
      'not_found',
      'Anima does not store responses (requests are stateless, as with store: false): there is nothing to retrieve, cancel or list. Keep the response the create call returned.',
    );
  };
  app.get('/v1/responses/:id', notStored);
  app.delete('/v1/responses/:id', notStored);
  app.post('/v1/responses/:id/cancel', notStored);
  app.get('/v1/responses/:id/input_items', notStored);

  app.get('/v1/models', async (req, reply) => {
    const now = d.clock.now();
    if (d.config.killSwitch())
      throw new GatewayError('gateway_disabled', 'The gateway is disabled by an operator.');
    refuseIfL1Expired();
    const who = await authed(d.config, req, new RequestContext(req.id, 'openai_chat', now), now);
    const allowed = who.key.allowedAliases;
    const data = d.config
      .aliasNames(now)
      .filter((n) => !allowed || allowed.has(n))
      .map((id) => ({
        id,
        object: 'model',
        created: Math.floor((d.config.alias(id, now)?.effectiveFrom ?? now) / 1000),
        owned_by: 'anima',
      }));
    void reply.header('x-request-id', req.id).send({ object: 'list', data });
  });

  app.get('/v1/models/:model', async (req, reply) => {
    const now = d.clock.now();
    refuseIfL1Expired();
    const who = await authed(d.config, req, new RequestContext(req.id, 'openai_chat', now), now);
    const id = (req.params as { model: string }).model;
    const routed = resolveAlias(d.config, who, id, now);
    void reply.send({
      id,
      object: 'model',
      created: Math.floor(routed.alias.effectiveFrom / 1000),
      owned_by: 'anima',
    });
  });

  app.get('/v1/tasks/:id', async (req, reply) => {
    const now = d.clock.now();
    const who = await authed(d.config, req, new RequestContext(req.id, 'openai_chat', now), now);
    const t = d.tasks ? await d.tasks.store.get((req.params as { id: string }).id, who.key.appId) : undefined;
    if (!t) throw new GatewayError('not_found', 'No such task.');
    void reply.header('x-request-id', req.id).send(taskView(t));
  });
  app.get('/v1/tasks', async (req, reply) => {
    const now = d.clock.now();
    const who = await authed(d.config, req, new RequestContext(req.id, 'openai_chat', now), now);
    const q = req.query as Record<string, string>;
    const rows = d.tasks
      ? await d.tasks.store.list(who.key.appId, {
          status: q.status,
          limit: q.limit ? Number(q.limit) : undefined,
        })
      : [];
    void reply.header('x-request-id', req.id).send({ object: 'list', data: rows.map(taskView) });
  });

  registerActuator(
    app,
    {
      scrape: async () => ({
        contentType: d.metrics.registry.contentType,
        text: await d.metrics.registry.metrics(),
      }),
      readiness: d.readiness,
    },
    d.actuator ?? { prometheus: true, details: true, authorize: null },
  );

  return app;
}

/**
 * What of an unexpected error may be logged: message, code and stack. Never the whole object: database
 * driver errors carry the query's parameters, which can hold credentials.
 */
function safeErr(e: unknown): { message: string; code?: string; stack?: string } {
  const x = e as { message?: unknown; code?: unknown; stack?: unknown };
  return {
    message: redactSecrets(String(x?.message ?? e)),
    ...(typeof x?.code === 'string' ? { code: x.code } : {}),
    ...(typeof x?.stack === 'string' ? { stack: redactSecrets(x.stack) } : {}),
  };
}

function logRequest(log: Logger, ctx: RequestContext): void {
  logAccess(log, {
    reqId: ctx.id,
    dialect: ctx.dialect,
    app: ctx.app?.id,
    key: ctx.key?.id,
    alias: ctx.aliasName,
    channel: ctx.channel,
    upstreamModel: ctx.upstreamModel,
    stream: ctx.stream,
    attempts: ctx.attempts,
    route: ctx.route.length ? ctx.route : undefined,
    status: ctx.status,
    outcome: ctx.outcome,
    code: ctx.error?.code,
    ms: Math.round(ctx.elapsedMs() * 10) / 10,
    ttfbMs: ctx.ttfbMs === null ? undefined : Math.round(ctx.ttfbMs * 10) / 10,
    upstreamMs: Math.round(ctx.upstreamMs * 10) / 10,
    tokensIn: ctx.usage?.inputTokens,
    tokensOut: ctx.usage?.outputTokens,
    costMicros: ctx.costMicros === null ? undefined : String(ctx.costMicros),
    saleMicros: ctx.saleMicros === null ? undefined : String(ctx.saleMicros),
    aborted: ctx.clientAborted || undefined,
  });
}
