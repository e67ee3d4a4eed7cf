/**
 * The data-plane pipeline for one request, after authentication:
 *
 *   route      alias -> ordered candidates (tiers; weighted inside a tier)
 *   for each candidate, while attempts < alias.maxAttempts and the request's deadline holds:
 *     skip     channel missing/disabled, operation unsupported, breaker refusing, cooldown, credential out,
 *              request untranslatable for this provider (each skip noted with its reason)
 *     acquire  breaker permit (closed: free; half-open: one of N shared probe permits)
 *     call     provider exchange over the channel's pool, with connect / first-byte / idle / total timeouts
 *     judge    failure before the first byte reached the client + tryNext -> note it, next candidate;
 *              a client error (400-class but 429) -> returned to the client as the upstream said it;
 *              success -> answer written (streamed or whole)
 *     report   breaker outcome and channel health (cooldown, credential) for every attempt, in `finally`
 *   exhausted  502/503/504 with a code saying why, plus the route notes in `x-anima-route`
 *
 * Nothing here waits on the database. The only awaits besides the upstream are breaker transitions
 * (rare) and half-open probe permits.
 */
import { GatewayError } from '../core/errors.js';
import { redact, redactSecrets, secretsOf } from '../core/redact.js';
import { errorFrame, renderErrorFor, renderUpstreamRefusal } from '../core/render.js';
import { errorShapeOf } from '../core/dialects.js';
import type { BreakerRegistry, BreakerPermit } from '../breaker/breaker.js';
import type { ChannelHealthRegistry } from '../breaker/health.js';
import type { ConfigCache } from '../config/cache.js';
import type { Channel } from '../core/model.js';
import type { Clock } from '../lib/clock.js';
import { SseParser } from '../lib/sse.js';
import { createExchange } from '../providers/index.js';
import { providerDeclaration } from '../providers/registry.js';
import {
  type UpstreamFailure,
  UpstreamFailureError,
  classifyTransport,
  failure,
  redactFailure,
} from '../providers/classify.js';
import type { SendResult, Transport } from '../providers/transport.js';
import { CAPABILITIES, type Exchange } from '../providers/types.js';
import type { RequestContext, Routed } from '../core/context.js';
import { candidates } from './router.js';
import { Abort } from '../lib/abort.js';

/** Where the answer goes (the HTTP layer adapts node's ServerResponse). */
export interface ClientSink {
  readonly closed: boolean;
  readonly headersSent: boolean;
  head(status: number, headers: Record<string, string>): void;
  write(chunk: string | Uint8Array): boolean;
  /** Resolves true when the socket drains or closes, false if it did neither within `timeoutMs`. */
  drain(timeoutMs: number): Promise<boolean>;
  /** Drops the connection (a client that stopped reading). */
  abort(): void;
  end(chunk?: string): void;
  /** Fires once if the client goes away before the answer is complete. */
  onAbort(cb: () => void): void;
}

/**
 * Called once when an answer is complete, before its last bytes are written: the caller's settlement
 * starts here, and the last bytes wait for what it returns (its write to Redis), so no answer leaves ahead
 * of its bill.
 */
export interface CompletionHook {
  beforeEnd(): Promise<void>;
}

/**
 * Trace context for the upstream calls (src/observability/tracing.ts): absent when tracing is off and the
 * client sent no `traceparent`. Called before each upstream call; the headers it returns go with the call.
 */
export interface UpstreamTracer {
  attempt(ch: Channel, upstreamModel: string, ctx: RequestContext): UpstreamCallTrace;
}

export interface UpstreamCallTrace {
  /** `traceparent` (and `tracestate`) for this call. */
  readonly headers: Record<string, string>;
  /** The attempt's outcome (null = ok) and the upstream's HTTP status (0 when none came). */
  end(failure: UpstreamFailure | null, status: number): void;
}

export interface RelayDeps {
  config: ConfigCache;
  breakers: BreakerRegistry;
  health: ChannelHealthRegistry;
  transport: Transport;
  clock: Clock;
  /** Called for every attempt's outcome (metrics, alert logs). */
  onAttempt?: (ctx: RequestContext, channel: Channel, result: 'ok' | UpstreamFailure, ms: number) => void;
}

const MAX_ERROR_BODY = 64 * 1024;

type AttemptResult = { ok: true } | { ok: false; failure: UpstreamFailure; committed: boolean };

export class Relay {
  constructor(private readonly d: RelayDeps) {}

  /** Serves a request whose key is authenticated and whose alias is resolved. Never throws. */
  async serve(
    ctx: Routed,
    body: Record<string, unknown>,
    sink: ClientSink,
    opts: {
      anthropicBeta?: string;
      abort?: Abort;
      done?: CompletionHook;
      trace?: UpstreamTracer | null;
    } = {},
  ): Promise<void> {
    const alias = ctx.alias;
    // The caller's client-gone controller when it has one (one controller per request, not two).
    const abort = opts.abort ?? new Abort();
    sink.onAbort(() => {
      ctx.clientAborted = true;
      abort.abort();
    });
    const deadline = ctx.startedAt + alias.deadlineMs;
    let last: UpstreamFailure | null = null;
    let untranslatable: GatewayError | null = null;
    let served = false;
    try {
      for (const { target } of candidates(
        alias,
        (t) => t.weight * (this.d.config.channel(t.channel)?.weight ?? 1),
      )) {
        if (ctx.attempts >= alias.maxAttempts || abort.aborted) break;
        if (this.d.clock.now() >= deadline) {
          last = failure('total_timeout', 'the request deadline passed');
          break;
        }
        const ch = this.d.config.channel(target.channel);
        const skip = this.skipReason(ch, target.channel, ctx);
        if (skip) {
          ctx.route.push({ channel: target.channel, what: 'skipped', reason: skip });
          continue;
        }
        let ex: Exchange;
        try {
          ex = createExchange(
            ctx.dialect,
            body,
            ch!,
            target.model,
            alias.name,
            opts.anthropicBeta ? { anthropicBeta: opts.anthropicBeta } : {},
          );
        } catch (e) {
          if (!(e instanceof GatewayError)) throw e;
          untranslatable ??= e;
          ctx.route.push({ channel: target.channel, what: 'skipped', reason: 'untranslatable' });
          continue;
        }
        if (ex.local) {
          // Answered locally (a token-count estimate): no upstream call, nothing for the breaker to judge.
          ctx.attempts++;
          await this.writeJson(ctx, sink, ch!, target.model, ex, '', 'application/json', opts.done ?? null);
          served = true;
          ctx.outcome = ctx.attempts > 1 || ctx.route.length > 0 ? 'fallback' : 'ok';
          return;
        }
        const acq = await this.d.breakers.acquire(ch!.code, ch!.breaker).catch(() => {
          // Coordination backend unreachable mid-transition: decide on what this instance knows.
          const refusal = this.d.breakers.refusesNow(ch!.code);
          return refusal
            ? ({ ok: false, reason: refusal } as const)
            : ({
                ok: true,
                permit: { channel: ch!.code, gen: this.d.breakers.state(ch!.code).gen, probe: false },
              } as const);
        });
        if (!acq.ok) {
          ctx.route.push({ channel: ch!.code, what: 'skipped', reason: acq.reason });
          continue;
        }
        ctx.attempts++;
        const res = await this.attempt(
          ctx,
          ch!,
          target.model,
          ex,
          acq.permit,
          sink,
          abort,
          deadline,
          opts.done ?? null,
          opts.trace ?? null,
        );
        if (res.ok) {
          served = true;
          ctx.outcome = ctx.attempts > 1 || ctx.route.length > 0 ? 'fallback' : 'ok';
          return;
        }
        last = res.failure;
        if (res.committed || ctx.clientAborted) return; // the client already has a (broken) answer or is gone
        if (!res.failure.tryNext) {
          this.writeUpstreamClientError(ctx, sink, res.failure, ch!);
          return;
        }
      }
      if (ctx.clientAborted) return;
      this.fail(ctx, sink, this.exhausted(last, untranslatable, ctx, this.d.clock.now() >= deadline));
    } catch (e) {
      const err =
        e instanceof GatewayError ? e : new GatewayError('internal_error', 'internal error', { cause: e });
      if (!sink.headersSent) this.fail(ctx, sink, err);
      else sink.end();
    } finally {
      if (ctx.clientAborted && !served) ctx.outcome = 'cancelled';
      ctx.endedAt = this.d.clock.now();
    }
  }

  private skipReason(ch: Channel | undefined, code: string, ctx: RequestContext): string | null {
    if (!ch) return 'unknown_channel';
    if (!ch.enabled) return 'disabled';
    if (!CAPABILITIES[ch.provider].has(ctx.dialect)) return 'unsupported_operation';
    return this.d.breakers.refusesNow(code) ?? this.d.health.refusesNow(code);
  }

  /** One call to one channel. Reports the outcome to the breaker and health registries whatever happens. */
  private async attempt(
    ctx: RequestContext,
    ch: Channel,
    upstreamModel: string,
    ex: Exchange,
    permit: BreakerPermit,
    sink: ClientSink,
    clientAbort: Abort,
    deadline: number,
    done: CompletionHook | null,
    trace: UpstreamTracer | null,
  ): Promise<AttemptResult> {
    const t0 = performance.now();
    const tr = trace ? trace.attempt(ch, upstreamModel, ctx) : null;
    let upStatus = 0;
    let ttfb = 0;
    const budget = Math.max(1, Math.min(ch.timeouts.totalMs, deadline - this.d.clock.now()));
    const ac = new Abort();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, budget);
    const onClientAbort = () => ac.abort();
    clientAbort.on(onClientAbort);
    let result: AttemptResult;
    let phase: 'connect' | 'headers' | 'body' = 'connect';
    let probeReported = false;
    try {
      const firstByteMs = permit.probe
        ? Math.min(ch.timeouts.firstByteMs, ch.breaker.probeTimeoutMs)
        : ch.timeouts.firstByteMs;
      // A credential exchanged before use (Vertex's OAuth2 token); most kinds have none.
      const decl = providerDeclaration(ch.provider);
      const call = decl.authorize ? await decl.authorize(ch, ex.call, this.d.transport) : ex.call;
      const up = await this.d.transport.send(
        ch.code,
        ch.baseUrl,
        call,
        { ...ch.timeouts, firstByteMs },
        ac,
        ch.maxConnections,
        tr ? tr.headers : null,
      );
      upStatus = up.status;
      phase = 'body';
      ttfb = performance.now() - t0;
      if (permit.probe && up.status >= 200 && up.status < 300) {
        // A probe is judged at its first byte: the channel answered in time. Waiting for a long stream's
        // end would keep every other caller off the channel for as long as it streams.
        probeReported = true;
        await this.d.breakers
          .onResult(permit, ch.breaker, { failure: false, durationMs: ttfb })
          .catch(() => {});
      }
      if (up.status < 200 || up.status >= 300) {
        const text = await up.text(MAX_ERROR_BODY);
        result = {
          ok: false,
          committed: false,
          failure: decl.classify(up.status, up.headers, text),
        };
      } else if (ex.call.bytes) {
        result = await this.pipeBytes(ctx, sink, ch, upstreamModel, ex, up, done);
      } else if (!ex.call.stream) {
        const text = await up.text();
        const ct = up.headers['content-type'];
        result = await this.writeJson(
          ctx,
          sink,
          ch,
          upstreamModel,
          ex,
          text,
          typeof ct === 'string' ? ct : '',
          done,
        );
      } else {
        result = await this.pipeStream(
          ctx,
          sink,
          ch,
          upstreamModel,
          ex,
          up,
          up.headers['content-type'],
          done,
        );
      }
    } catch (e) {
      let f: UpstreamFailure;
      if (e instanceof UpstreamFailureError) f = e.failure;
      else if (e instanceof GatewayError) f = failure('bad_response', e.message);
      else if (clientAbort.aborted) f = failure('cancelled', 'client went away');
      else if (timedOut) f = failure('total_timeout', 'attempt exceeded its time budget');
      else f = classifyTransport(e, phase);
      result = { ok: false, committed: sink.headersSent, failure: f };
      if (sink.headersSent && !sink.closed) {
        const code =
          f.kind === 'idle_timeout' || f.kind === 'total_timeout'
            ? 'upstream_timeout'
            : 'upstream_stream_interrupted';
        const msg = redact(`upstream stream failed: ${f.message}`, secretsOf(ch));
        sink.end(errorFrame(ctx.dialect, new GatewayError(code, msg)));
      }
    } finally {
      clearTimeout(timer);
      clientAbort.off(onClientAbort);
    }
    // Whatever the upstream said is redacted here, once, with this channel's credential at hand: every
    // later use (the client's error, the route notes, logs, a stored task) reads the redacted failure.
    if (!result.ok) result = { ...result, failure: redactFailure(result.failure, secretsOf(ch)) };
    tr?.end(result.ok ? null : result.failure, upStatus);
    const ms = performance.now() - t0;
    ctx.upstreamMs += ms;
    await this.report(ctx, ch, probeReported ? { ...permit, probe: false } : permit, result, ttfb || ms, ms);
    return result;
  }

  private async report(
    ctx: RequestContext,
    ch: Channel,
    permit: BreakerPermit,
    r: AttemptResult,
    ttfbMs: number,
    ms: number,
  ): Promise<void> {
    const f = r.ok ? null : r.failure;
    if (f)
      ctx.route.push({
        channel: ch.code,
        what: 'failed',
        reason: f.kind,
        ...(f.status ? { status: f.status } : {}),
        ms: Math.round(ms),
      });
    this.d.onAttempt?.(ctx, ch, f ?? 'ok', ms);
    try {
      await this.d.breakers.onResult(permit, ch.breaker, {
        failure: f?.countsAsFailure ?? false,
        neutral: f !== null && !f.countsAsFailure,
        durationMs: ttfbMs,
      });
      if (f?.cooldownMs) await this.d.health.cooldown(ch.code, f.cooldownMs);
      if (f?.credential) await this.d.health.markCredential(ch.code, f.credential);
    } catch {
      // The coordination backend being down must not fail a request that already has its answer.
    }
  }

  /**
   * An answer's headers, built as one object (the per-request spreads of the rate-limit headers into
   * literals showed in the gateway's profile; measured by bench/overhead.ts --only json). The gateway's
   * own headers win over extras.
   */
  private successHeaders(
    ctx: RequestContext,
    ch: Channel,
    upstreamModel: string,
    contentType: string,
  ): Record<string, string> {
    ctx.channel = ch.code;
    ctx.upstreamModel = upstreamModel;
    const h: Record<string, string> = {};
    const extra = ctx.extraHeaders;
    for (const k in extra) h[k] = extra[k]!;
    h['content-type'] = contentType;
    h['x-request-id'] = ctx.id;
    h['x-anima-channel'] = ch.code;
    h['x-anima-attempts'] = String(ctx.attempts);
    if (ctx.route.length) h['x-anima-route'] = ctx.routeHeader();
    return h;
  }

  private async writeJson(
    ctx: RequestContext,
    sink: ClientSink,
    ch: Channel,
    upstreamModel: string,
    ex: Exchange,
    text: string,
    contentType: string,
    done: CompletionHook | null,
  ): Promise<AttemptResult> {
    // Either decoder throws upstream_bad_response -> a failure, next channel.
    let payload: string;
    let type = 'application/json';
    let extra: Record<string, string> | undefined;
    if (ex.decodeBody) {
      const r = ex.decodeBody(text, contentType);
      ctx.usage = r.usage;
      payload = r.payload;
      type = r.contentType;
    } else {
      const r = ex.decodeJson(text);
      ctx.usage = r.usage;
      if (r.estimated) ctx.usageEstimated = true;
      extra = r.headers;
      payload = r.text ?? JSON.stringify(r.body);
    }
    ctx.status = 200;
    const headers = this.successHeaders(ctx, ch, upstreamModel, type);
    if (extra) for (const k in extra) headers[k] ??= extra[k]!;
    await this.finishing(ctx, done);
    sink.head(200, headers);
    ctx.ttfbMs = ctx.elapsedMs();
    sink.end(payload);
    return { ok: true };
  }

  /**
   * Streams the upstream's events to the client through the exchange's translator. The client's headers
   * are written only when the first translated bytes exist, so a failure before that still falls back.
   */
  private async pipeStream(
    ctx: RequestContext,
    sink: ClientSink,
    ch: Channel,
    upstreamModel: string,
    ex: Exchange,
    up: SendResult,
    contentType: string | string[] | undefined,
    done: CompletionHook | null,
  ): Promise<AttemptResult> {
    // SSE, unless the exchange names another framing (Bedrock's binary event stream).
    const decoder = ex.streamDecoder?.();
    if (
      typeof contentType === 'string' &&
      !contentType.includes(decoder?.contentType ?? 'text/event-stream')
    ) {
      const text = await up.text(MAX_ERROR_BODY);
      return {
        ok: false,
        committed: false,
        failure: failure(
          'bad_response',
          `expected an event stream, got ${contentType}: ${redactSecrets(text.slice(0, 200))}`,
        ),
      };
    }
    const parser = decoder ?? new SseParser();
    const tr = ex.streamTranslator();
    const commit = () => {
      const h = this.successHeaders(ctx, ch, upstreamModel, 'text/event-stream; charset=utf-8');
      h['cache-control'] = 'no-cache';
      h['x-accel-buffering'] = 'no';
      sink.head(200, h);
      ctx.status = 200;
      ctx.ttfbMs = ctx.elapsedMs();
    };
    try {
      for await (const chunk of up.chunks()) {
        let out = '';
        for (const ev of parser.push(chunk)) out += tr.onEvent(ev);
        if (out === '') continue;
        if (!sink.headersSent) commit();
        if (tr.done && !ctx.served) {
          // The chunk carrying the terminator: settle before the client sees the end of its answer.
          ctx.usage = tr.usage();
          if (!ctx.usage) ctx.emittedText = tr.emittedText;
          await this.finishing(ctx, done);
        }
        // A client that stops reading holds the stream (and its lease) no longer than the idle timeout.
        if (!sink.write(out) && !(await sink.drain(ch.timeouts.idleMs))) {
          sink.abort();
          break;
        }
        if (sink.closed) break;
      }
    } catch (e) {
      ctx.usage = tr.usage();
      if (!ctx.usage && sink.headersSent) ctx.emittedText = tr.emittedText;
      if (e instanceof UpstreamFailureError) {
        // An exception the upstream reported inside its stream, classified by its provider (Bedrock's
        // throttlingException is a rate limit, its validationException the request's fault).
        if (sink.headersSent)
          sink.end(
            errorFrame(
              ctx.dialect,
              redactError(new GatewayError('upstream_stream_interrupted', e.message), secretsOf(ch)),
            ),
          );
        return { ok: false, committed: sink.headersSent, failure: e.failure };
      }
      if (e instanceof GatewayError && e.code === 'upstream_overloaded' && !sink.headersSent) {
        return { ok: false, committed: false, failure: failure('overloaded', e.message) };
      }
      if (e instanceof GatewayError) {
        // The upstream sent an error event or garbage mid-stream: its words reach the client redacted.
        if (sink.headersSent) sink.end(errorFrame(ctx.dialect, redactError(e, secretsOf(ch))));
        return {
          ok: false,
          committed: sink.headersSent,
          failure: failure(e.code === 'upstream_bad_response' ? 'bad_response' : 'stream_reset', e.message),
        };
      }
      throw e;
    }
    ctx.usage = tr.usage();
    if (!ctx.usage && sink.headersSent) ctx.emittedText = tr.emittedText;
    if (sink.closed)
      return { ok: false, committed: true, failure: failure('cancelled', 'client went away mid-stream') };
    if (!tr.done) {
      const f = failure('stream_reset', 'upstream stream ended without its terminator');
      if (sink.headersSent)
        sink.end(
          errorFrame(
            ctx.dialect,
            new GatewayError('upstream_stream_interrupted', 'upstream stream ended before completion'),
          ),
        );
      return { ok: false, committed: sink.headersSent, failure: f };
    }
    if (!sink.headersSent) commit();
    await this.finishing(ctx, done);
    sink.end(tr.end());
    return { ok: true };
  }

  /**
   * Relays an answer of raw bytes (audio) chunk by chunk. Committed at the first chunk; billed at what
   * the request asked for (the exchange knows it), also when the client leaves midway.
   */
  private async pipeBytes(
    ctx: RequestContext,
    sink: ClientSink,
    ch: Channel,
    upstreamModel: string,
    ex: Exchange,
    up: SendResult,
    done: CompletionHook | null,
  ): Promise<AttemptResult> {
    const ct = up.headers['content-type'];
    const type = typeof ct === 'string' && ct !== '' ? ct : 'application/octet-stream';
    const commit = () => {
      sink.head(200, this.successHeaders(ctx, ch, upstreamModel, type));
      ctx.status = 200;
      ctx.ttfbMs = ctx.elapsedMs();
      ctx.usage = ex.bytesUsage?.() ?? null;
    };
    for await (const chunk of up.chunks()) {
      if (chunk.length === 0) continue;
      if (!sink.headersSent) commit();
      if (!sink.write(chunk) && !(await sink.drain(ch.timeouts.idleMs))) {
        sink.abort();
        break;
      }
      if (sink.closed) break;
    }
    if (sink.closed)
      return { ok: false, committed: true, failure: failure('cancelled', 'client went away mid-answer') };
    if (!sink.headersSent) commit();
    await this.finishing(ctx, done);
    sink.end();
    return { ok: true };
  }

  /** The answer is complete: mark it served and let the caller settle (billing) before the last bytes go out. */
  private async finishing(ctx: RequestContext, done: CompletionHook | null): Promise<void> {
    if (ctx.served) return;
    ctx.served = true;
    if (done) await done.beforeEnd();
  }

  /** A 4xx the upstream says is the request's fault: passed through in the client's dialect. */
  private writeUpstreamClientError(
    ctx: RequestContext,
    sink: ClientSink,
    f: UpstreamFailure,
    ch: Channel,
  ): void {
    const status = f.status ?? 400;
    ctx.status = status;
    ctx.outcome = 'failed';
    ctx.channel = ch.code;
    const shape = errorShapeOf(ctx.dialect);
    // The upstream's own body when it already is in the client's shape; otherwise its words, re-shaped.
    const payload =
      shape === providerDeclaration(ch.provider).errorShape && f.body && isJson(f.body)
        ? f.body
        : JSON.stringify(
            renderUpstreamRefusal(
              shape,
              { message: f.message, code: f.upstreamCode, type: f.upstreamType, kind: f.kind },
              status,
            ),
          );
    sink.head(status, this.successHeaders(ctx, ch, ctx.upstreamModel ?? '', 'application/json'));
    sink.end(payload);
  }

  private exhausted(
    last: UpstreamFailure | null,
    untranslatable: GatewayError | null,
    ctx: RequestContext,
    pastDeadline: boolean,
  ): GatewayError {
    const route = ctx.routeHeader();
    const suffix = route ? ` (${route})` : '';
    if (!last) {
      if (untranslatable) return untranslatable;
      if (ctx.route.length > 0 && ctx.route.every((n) => n.reason === 'unsupported_operation')) {
        return new GatewayError(
          'unsupported_operation',
          `no channel of alias '${ctx.aliasName}' supports this operation`,
        );
      }
      // Every channel was passed over: when some rest only for a known while (a 429's cooldown, an open
      // breaker), the client is told when the first of them comes back.
      const wait = this.earliestReturn(ctx);
      return new GatewayError(
        'no_available_channel',
        `no channel of alias '${ctx.aliasName}' is available${suffix}`,
        wait === null ? {} : { headers: { 'retry-after': String(Math.max(1, Math.ceil(wait / 1000))) } },
      );
    }
    switch (last.kind) {
      case 'connect_timeout':
      case 'first_byte_timeout':
      case 'idle_timeout':
      case 'total_timeout':
      case 'request_timeout':
        return new GatewayError(
          pastDeadline ? 'deadline_exceeded' : 'upstream_timeout',
          `upstream timed out: ${last.message}${suffix}`,
        );
      case 'rate_limited':
        return new GatewayError('upstream_rate_limited', `every channel is rate limited${suffix}`, {
          headers: last.cooldownMs ? { 'retry-after': String(Math.ceil(last.cooldownMs / 1000)) } : {},
        });
      case 'overloaded':
        return new GatewayError('upstream_overloaded', `upstream overloaded${suffix}`, {
          headers: last.retryAfterMs
            ? { 'retry-after': String(Math.max(1, Math.ceil(last.retryAfterMs / 1000))) }
            : {},
        });
      default:
        return new GatewayError(
          'upstream_error',
          `every channel of alias '${ctx.aliasName}' failed; last: ${redactSecrets(last.message)}${suffix}`,
        );
    }
  }

  /** ms until the first channel skipped for a timed reason (cooldown, open breaker) may serve; null if none. */
  private earliestReturn(ctx: RequestContext): number | null {
    const now = this.d.clock.now();
    let best: number | null = null;
    for (const n of ctx.route) {
      if (n.what !== 'skipped') continue;
      const until =
        n.reason === 'cooldown'
          ? this.d.health.get(n.channel).cooldownUntil
          : n.reason === 'breaker_open'
            ? this.d.breakers.state(n.channel).openUntil
            : 0;
      if (until > now && (best === null || until - now < best)) best = until - now;
    }
    return best;
  }

  fail(ctx: RequestContext, sink: ClientSink, err: GatewayError): void {
    ctx.error = err;
    ctx.outcome = ctx.outcome === 'cancelled' ? 'cancelled' : 'failed';
    writeError(ctx, sink, err);
  }
}

/** Renders an error in the request's dialect. Shared with the HTTP layer's early refusals. */
export function writeError(ctx: RequestContext, sink: ClientSink, err: GatewayError): void {
  if (sink.headersSent || sink.closed) return;
  const { status, body } = renderErrorFor(ctx.dialect, err);
  ctx.status = status;
  ctx.error = err;
  const headers: Record<string, string> = {
    ...ctx.extraHeaders,
    'content-type': 'application/json',
    'x-request-id': ctx.id,
    ...err.headers,
  };
  if (ctx.route.length) headers['x-anima-route'] = ctx.routeHeader();
  if (ctx.attempts) headers['x-anima-attempts'] = String(ctx.attempts);
  sink.head(status, headers);
  sink.end(JSON.stringify(body));
}

/** The same error with its message redacted (an upstream's words inside a stream's error frame). */
function redactError(e: GatewayError, secrets: readonly string[]): GatewayError {
  const message = redact(e.message, secrets);
  return message === e.message
    ? e
    : new GatewayError(e.code, message, { param: e.param, headers: e.headers, status: e.status });
}

function isJson(s: string): boolean {
  try {
    JSON.parse(s);
    return true;
  } catch {
    return false;
  }
}
