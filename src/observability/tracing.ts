/**
 * OpenTelemetry traces of the data plane, off by default.
 *
 * On when `OTEL_TRACES_EXPORTER=otlp` or an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`,
 * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, unless `OTEL_SDK_DISABLED=true` or
 * `OTEL_TRACES_EXPORTER=none`. Spans are made explicitly (no auto-instrumentation: it patches http and undici
 * for every request) and leave through a batch span processor and an OTLP/HTTP exporter (protobuf, the
 * spec's default protocol, or JSON with `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/json`).
 *
 * One relayed request makes:
 *   `POST /v1/chat/completions`   SERVER, the request: parent = the client's `traceparent` when it sent one
 *     `admission`                 INTERNAL, quota admission and the wallet hold
 *     `chat gpt-4o` (per attempt) CLIENT, one upstream call; its context goes to the upstream as `traceparent`
 *     `settlement`                INTERNAL, from the booking's start (before the answer's last bytes) to its write
 *
 * Attributes: GenAI semantic conventions (gen_ai.*) and Anima's own (anima.*): ids, names, outcomes, codes,
 * token counts. Never a prompt, an answer, a header value, a credential or an upstream's error text (which
 * can quote the request).
 *
 * Off, nothing here runs: the HTTP layer checks one reference (`tracing`), and the client's own
 * `traceparent` / `tracestate`, when it sent a well-formed one, go to the upstream unchanged (`passThrough`),
 * as a proxy that doesn't trace does.
 */
import type { IncomingHttpHeaders } from 'node:http';
import {
  type Attributes,
  type Context,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  defaultTextMapGetter,
  defaultTextMapSetter,
  trace,
} from '@opentelemetry/api';
import { ExportResultCode, W3CTraceContextPropagator, parseKeyPairsIntoRecord } from '@opentelemetry/core';
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  type Sampler,
  type SpanExporter,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import { OTLPTraceExporter as ProtobufExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { OTLPTraceExporter as JsonExporter } from '@opentelemetry/exporter-trace-otlp-http';
import {
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  ATTR_SERVICE_NAME,
} from '@opentelemetry/semantic-conventions';
import type { InboundDialect } from '../core/dialects.js';
import type { Channel, ProviderKind } from '../core/model.js';
import type { RequestContext } from '../core/context.js';
import { redactSecrets } from '../core/redact.js';
import type { UpstreamFailure } from '../providers/classify.js';
import type { UpstreamCallTrace, UpstreamTracer } from '../relay/relay.js';

/**
 * GenAI attribute names. They are "development" status, published only in semantic-conventions'
 * `incubating` entry point, which its README asks applications to copy rather than import (names there may
 * change in a minor release): https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/
 * `gen_ai.provider.name` replaced `gen_ai.system` (semconv 1.37).
 */
const GEN_AI_OPERATION_NAME = 'gen_ai.operation.name';
const GEN_AI_PROVIDER_NAME = 'gen_ai.provider.name';
const GEN_AI_REQUEST_MODEL = 'gen_ai.request.model';
const GEN_AI_RESPONSE_MODEL = 'gen_ai.response.model';
const GEN_AI_USAGE_INPUT_TOKENS = 'gen_ai.usage.input_tokens';
const GEN_AI_USAGE_OUTPUT_TOKENS = 'gen_ai.usage.output_tokens';
const GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = 'gen_ai.usage.cache_read.input_tokens';
const GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = 'gen_ai.usage.cache_creation.input_tokens';

/** gen_ai.operation.name per dialect: the convention's values where one fits, the task kind otherwise. */
const OPERATION: Partial<Record<InboundDialect, string>> = {
  openai_chat: 'chat',
  anthropic_messages: 'chat',
  openai_responses: 'chat',
  openai_completions: 'text_completion',
  openai_embeddings: 'embeddings',
  gemini_embed: 'embeddings',
  gemini: 'generate_content',
  openai_speech: 'speech',
  openai_transcription: 'transcription',
  openai_translation: 'translation',
  openai_image_edit: 'image_edit',
  anthropic_count_tokens: 'count_tokens',
  openai_moderations: 'moderations',
  rerank: 'rerank',
};
const operationOf = (d: InboundDialect): string => OPERATION[d] ?? d;

/** gen_ai.provider.name per channel kind: the convention's well-known values, the kind itself otherwise. */
const PROVIDER: Partial<Record<ProviderKind, string>> = {
  openai: 'openai',
  anthropic: 'anthropic',
  gemini: 'gcp.gemini',
  vertex: 'gcp.vertex_ai',
  bedrock: 'aws.bedrock',
  azure: 'azure.ai.openai',
  mistral: 'mistral_ai',
  groq: 'groq',
  deepseek: 'deepseek',
  xai: 'x_ai',
  perplexity: 'perplexity',
  cohere: 'cohere',
};

// ---------------------------------------------------------------- settings

export interface TracingSettings {
  /** Where spans go (the traces path included). */
  url: string;
  protocol: 'http/protobuf' | 'http/json';
  /** OTEL_EXPORTER_OTLP_HEADERS, then OTEL_EXPORTER_OTLP_TRACES_HEADERS (which wins): often a credential. */
  headers: Record<string, string>;
  sampler: Sampler;
  /** For the start log line: the sampler's name and argument. */
  samplerName: string;
  serviceName: string;
  resourceAttributes: Record<string, string>;
  batch: {
    scheduledDelayMillis: number;
    exportTimeoutMillis: number;
    maxQueueSize: number;
    maxExportBatchSize: number;
  };
}

const SAMPLERS = [
  'always_on',
  'always_off',
  'traceidratio',
  'parentbased_always_on',
  'parentbased_always_off',
  'parentbased_traceidratio',
] as const;

function samplerFrom(name: string, arg: string | undefined): Sampler {
  const ratio = (): number => {
    if (arg === undefined || arg.trim() === '') return 1;
    const r = Number(arg);
    if (!Number.isFinite(r) || r < 0 || r > 1)
      throw new Error(`OTEL_TRACES_SAMPLER_ARG must be a number in [0, 1], not '${arg}'`);
    return r;
  };
  switch (name as (typeof SAMPLERS)[number]) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(ratio());
    case 'parentbased_always_on':
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio()) });
  }
  throw new Error(`OTEL_TRACES_SAMPLER '${name}' is not supported here; use one of ${SAMPLERS.join(', ')}`);
}

function positive(env: NodeJS.ProcessEnv, name: string, dflt: number): number {
  const v = env[name]?.trim();
  if (!v) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got '${v}'`);
  return n;
}

/**
 * Tracing's settings from the standard OTEL_* variables, or null when tracing is off
 * (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/,
 * https://opentelemetry.io/docs/specs/otel/protocol/exporter/). A value Anima can't honour (a gRPC
 * protocol, another exporter, an unknown sampler) fails the start rather than tracing differently than asked.
 */
export function tracingFromEnv(env: NodeJS.ProcessEnv): TracingSettings | null {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return null;
  const exporters = (env.OTEL_TRACES_EXPORTER ?? '')
    .split(',')
    .map((x) => x.trim().toLowerCase())
    .filter(Boolean);
  if (exporters.includes('none')) return null;
  const other = exporters.filter((x) => x !== 'otlp');
  if (other.length)
    throw new Error(`OTEL_TRACES_EXPORTER '${other.join(',')}' is not supported; use otlp or none`);
  const specific = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim();
  const general = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  if (!exporters.includes('otlp') && !specific && !general) return null;
  // The signal-specific endpoint is used as it is; the general one gets the signal's path appended.
  const url =
    specific || (general ? general.replace(/\/+$/, '') + '/v1/traces' : 'http://localhost:4318/v1/traces');
  try {
    new URL(url);
  } catch {
    throw new Error(`the OTLP traces endpoint is not a URL: '${url}'`);
  }
  const protocol = (
    env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ??
    env.OTEL_EXPORTER_OTLP_PROTOCOL ??
    'http/protobuf'
  ).trim();
  if (protocol !== 'http/protobuf' && protocol !== 'http/json')
    throw new Error(
      `OTLP protocol '${protocol}' is not supported; use http/protobuf (the default) or http/json`,
    );
  const resourceAttributes = parseKeyPairsIntoRecord(env.OTEL_RESOURCE_ATTRIBUTES);
  const samplerName = (env.OTEL_TRACES_SAMPLER ?? 'parentbased_always_on').trim().toLowerCase();
  const arg = env.OTEL_TRACES_SAMPLER_ARG;
  return {
    url,
    protocol,
    headers: {
      ...parseKeyPairsIntoRecord(env.OTEL_EXPORTER_OTLP_HEADERS),
      ...parseKeyPairsIntoRecord(env.OTEL_EXPORTER_OTLP_TRACES_HEADERS),
    },
    sampler: samplerFrom(samplerName, arg),
    samplerName: samplerName.endsWith('traceidratio') ? `${samplerName}(${arg ?? 1})` : samplerName,
    serviceName: env.OTEL_SERVICE_NAME?.trim() || resourceAttributes[ATTR_SERVICE_NAME] || 'anima',
    resourceAttributes,
    batch: {
      scheduledDelayMillis: positive(env, 'OTEL_BSP_SCHEDULE_DELAY', 5_000),
      exportTimeoutMillis: positive(env, 'OTEL_BSP_EXPORT_TIMEOUT', 30_000),
      maxQueueSize: positive(env, 'OTEL_BSP_MAX_QUEUE_SIZE', 2_048),
      maxExportBatchSize: positive(env, 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE', 512),
    },
  };
}

// ---------------------------------------------------------------- the request's spans

/** What the HTTP layer and governance call; `Tracing.request` and `passThrough` make one. */
export interface RequestTracer extends UpstreamTracer {
  /** Starts the admission span; the function ends it with the decision ('admitted', 'deferred', 'rejected'). */
  admission(): ((decision: string, code?: string) => void) | null;
  /** Starts the settlement span (governance's booking); the function ends it, with the error if it failed. */
  settlement(ctx: RequestContext): ((err?: unknown) => void) | null;
  /** Ends the request span with what the context says happened. Called once, after settlement. */
  end(ctx: RequestContext): void;
}

const propagator = new W3CTraceContextPropagator();

/** `host:port` of a channel's base URL, parsed once per URL (the user-info part never leaves here). */
const servers = new Map<string, { host: string; port: number }>();
function serverOf(baseUrl: string): { host: string; port: number } {
  let s = servers.get(baseUrl);
  if (!s) {
    try {
      const u = new URL(baseUrl);
      s = { host: u.hostname, port: Number(u.port) || (u.protocol === 'https:' ? 443 : 80) };
    } catch {
      s = { host: '', port: 0 };
    }
    if (servers.size > 1_000) servers.clear();
    servers.set(baseUrl, s);
  }
  return s;
}

function usageAttributes(a: Attributes, ctx: RequestContext): void {
  const u = ctx.usage;
  if (!u) return;
  a[GEN_AI_USAGE_INPUT_TOKENS] = u.inputTokens;
  a[GEN_AI_USAGE_OUTPUT_TOKENS] = u.outputTokens;
  if (u.cachedTokens) a[GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = u.cachedTokens;
  if (u.cacheWriteTokens) a[GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = u.cacheWriteTokens;
  if (ctx.usageEstimated) a['anima.usage.estimated'] = true;
}

/** One upstream call's span and the headers that carry its context to the upstream. */
class AttemptTrace implements UpstreamCallTrace {
  readonly headers: Record<string, string> = {};
  constructor(
    private readonly span: Span,
    private readonly ctx: RequestContext,
    private readonly model: string,
  ) {
    propagator.inject(trace.setSpan(ROOT_CONTEXT, span), this.headers, defaultTextMapSetter);
  }

  end(failure: UpstreamFailure | null, status: number): void {
    const span = this.span;
    if (span.isRecording()) {
      const a: Attributes = { 'anima.outcome': failure ? failure.kind : 'ok' };
      if (status) a[ATTR_HTTP_RESPONSE_STATUS_CODE] = status;
      if (failure) {
        a[ATTR_ERROR_TYPE] = failure.kind;
        if (failure.credential) a['anima.credential'] = failure.credential;
        // The kind only: the upstream's message can quote the request.
        span.setStatus({ code: SpanStatusCode.ERROR, message: failure.kind });
      } else {
        a[GEN_AI_RESPONSE_MODEL] = this.model;
        usageAttributes(a, this.ctx);
      }
      span.setAttributes(a);
    }
    span.end();
  }
}

class RequestTrace implements RequestTracer {
  private readonly parent: Context;
  private open: Span | null = null;

  constructor(
    private readonly tracer: Tracer,
    private readonly span: Span,
    private readonly operation: string,
  ) {
    this.parent = trace.setSpan(ROOT_CONTEXT, span);
  }

  admission(): ((decision: string, code?: string) => void) | null {
    if (!this.span.isRecording()) return null; // sampled out: its children would be too
    const s = this.tracer.startSpan('admission', { kind: SpanKind.INTERNAL }, this.parent);
    this.open = s;
    return (decision, code) => {
      s.setAttribute('anima.admission', decision);
      if (code) {
        s.setAttribute('anima.error.code', code);
        s.setStatus({ code: SpanStatusCode.ERROR, message: code });
      }
      s.end();
      this.open = null;
    };
  }

  attempt(ch: Channel, upstreamModel: string, ctx: RequestContext): UpstreamCallTrace {
    // Made even when sampled out (a non-recording span): its id still goes to the upstream, flags 00.
    const server = serverOf(ch.baseUrl);
    const span = this.tracer.startSpan(
      `${this.operation} ${upstreamModel}`,
      {
        kind: SpanKind.CLIENT,
        attributes: {
          [GEN_AI_OPERATION_NAME]: this.operation,
          [GEN_AI_PROVIDER_NAME]: PROVIDER[ch.provider] ?? ch.provider,
          [GEN_AI_REQUEST_MODEL]: upstreamModel,
          [ATTR_SERVER_ADDRESS]: server.host,
          [ATTR_SERVER_PORT]: server.port,
          'anima.channel': ch.code,
          'anima.attempt': ctx.attempts,
        },
      },
      this.parent,
    );
    return new AttemptTrace(span, ctx, upstreamModel);
  }

  settlement(ctx: RequestContext): ((err?: unknown) => void) | null {
    if (!this.span.isRecording()) return null;
    const s = this.tracer.startSpan('settlement', { kind: SpanKind.INTERNAL }, this.parent);
    return (err) => {
      const a: Attributes = { 'anima.billed': ctx.billed };
      // Micro-units as integers (a span attribute, not arithmetic): exact below 2^53.
      if (ctx.saleMicros !== null) a['anima.sale_micros'] = Number(ctx.saleMicros);
      if (ctx.costMicros !== null) a['anima.cost_micros'] = Number(ctx.costMicros);
      s.setAttributes(a);
      if (err !== undefined) s.setStatus({ code: SpanStatusCode.ERROR, message: 'settlement failed' });
      s.end();
    };
  }

  end(ctx: RequestContext): void {
    const span = this.span;
    if (this.open) {
      // Admission threw (an unexpected failure): its span ends with the request.
      this.open.setStatus({ code: SpanStatusCode.ERROR });
      this.open.end();
      this.open = null;
    }
    if (span.isRecording()) {
      const a: Attributes = {
        'anima.request.id': ctx.id, // the access log line's reqId and the x-request-id header
        'anima.outcome': ctx.outcome,
        'anima.attempts': ctx.attempts,
        'anima.stream': ctx.stream,
      };
      if (ctx.status) a[ATTR_HTTP_RESPONSE_STATUS_CODE] = ctx.status;
      if (ctx.aliasName) {
        a[GEN_AI_REQUEST_MODEL] = ctx.aliasName;
        a['anima.alias'] = ctx.aliasName;
      }
      if (ctx.upstreamModel && ctx.status === 200) a[GEN_AI_RESPONSE_MODEL] = ctx.upstreamModel;
      if (ctx.channel) a['anima.channel'] = ctx.channel;
      if (ctx.app) a['anima.app'] = ctx.app.id;
      if (ctx.key) a['anima.key'] = ctx.key.id; // the key's id, never the sk
      if (ctx.cacheHit) a['anima.cache_hit'] = true;
      if (ctx.clientAborted) a['anima.client_aborted'] = true;
      usageAttributes(a, ctx);
      if (ctx.error) {
        a['anima.error.code'] = ctx.error.code;
        a[ATTR_ERROR_TYPE] = ctx.error.code;
      }
      span.setAttributes(a);
      // HTTP server spans: a 5xx is the server's error, a 4xx the client's (status left unset).
      if (ctx.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR, message: ctx.error?.code });
    }
    span.end();
  }
}

// ---------------------------------------------------------------- tracing off: the client's context, unchanged

/** version-traceid-parentid-flags, lower-case hex (https://www.w3.org/TR/trace-context/#traceparent-header). */
const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(?:-[\x21-\x7e]*)?$/;
/** Printable ASCII only, bounded: it goes into the upstream call's headers as it came. */
const TRACESTATE = /^[\x20-\x7e]{1,512}$/;

const NO_END = () => {};

class PassThrough implements RequestTracer {
  private readonly call: UpstreamCallTrace;
  constructor(headers: Record<string, string>) {
    this.call = { headers, end: NO_END };
  }
  admission(): null {
    return null;
  }
  attempt(): UpstreamCallTrace {
    return this.call;
  }
  settlement(): null {
    return null;
  }
  end(): void {}
}

/**
 * Tracing off: the client's `traceparent` (and `tracestate` with it) for every upstream call, unchanged, so
 * a trace the client started continues at the provider; null when it sent none (or a malformed one, or two).
 * It carries no secret. Costs one header lookup when absent.
 */
export function passThrough(h: IncomingHttpHeaders): RequestTracer | null {
  const tp = h.traceparent;
  if (typeof tp !== 'string' || tp.length > 256 || !TRACEPARENT.test(tp) || tp.startsWith('ff')) return null;
  const headers: Record<string, string> = { traceparent: tp };
  const ts = h.tracestate;
  if (typeof ts === 'string' && TRACESTATE.test(ts)) headers.tracestate = ts;
  return new PassThrough(headers);
}

// ---------------------------------------------------------------- the tracer provider

interface Warn {
  warn(o: object, msg: string): void;
}

/** The exporter, with failed exports logged (at most once a minute; the SDK itself says nothing). */
function reporting(inner: SpanExporter, log: Warn | undefined): SpanExporter {
  let warnedAt = 0;
  return {
    export(spans, done) {
      inner.export(spans, (r) => {
        if (r.code !== ExportResultCode.SUCCESS && log && Date.now() - warnedAt > 60_000) {
          warnedAt = Date.now();
          log.warn(
            { err: { message: redactSecrets(String(r.error?.message ?? 'failed')) }, spans: spans.length },
            'trace export failed: those spans are dropped',
          );
        }
        done(r);
      });
    },
    shutdown: () => inner.shutdown(),
    forceFlush: () => inner.forceFlush?.() ?? Promise.resolve(),
  };
}

export class Tracing {
  private readonly provider: TracerProvider;
  private readonly tracer: Tracer;

  constructor(
    readonly settings: TracingSettings,
    opts: { log?: Warn; exporter?: SpanExporter } = {},
  ) {
    const s = settings;
    // url and headers given here win over the exporter's own reading of the same variables; it still reads
    // the rest itself (OTEL_EXPORTER_OTLP_*TIMEOUT, *COMPRESSION, *CERTIFICATE, *CLIENT_KEY).
    const exporter =
      opts.exporter ??
      (s.protocol === 'http/json'
        ? new JsonExporter({ url: s.url, headers: s.headers })
        : new ProtobufExporter({ url: s.url, headers: s.headers }));
    this.provider = new TracerProvider({
      resource: defaultResource().merge(
        resourceFromAttributes({ ...s.resourceAttributes, [ATTR_SERVICE_NAME]: s.serviceName }),
      ),
      sampler: s.sampler,
      spanProcessors: [new BatchSpanProcessor({ exporter: reporting(exporter, opts.log), ...s.batch })],
    });
    this.tracer = this.provider.getTracer('anima');
  }

  /**
   * Starts a relayed request's server span, the child of the client's `traceparent` when it sent a valid one
   * (its sampled flag decides under a parent-based sampler). `route` is the route's pattern, not the path.
   */
  request(
    method: string,
    route: string,
    headers: IncomingHttpHeaders,
    dialect: InboundDialect,
  ): RequestTracer {
    const parent = propagator.extract(ROOT_CONTEXT, headers, defaultTextMapGetter);
    const operation = operationOf(dialect);
    const span = this.tracer.startSpan(
      `${method} ${route}`,
      {
        kind: SpanKind.SERVER,
        attributes: {
          [ATTR_HTTP_REQUEST_METHOD]: method,
          [ATTR_HTTP_ROUTE]: route,
          [GEN_AI_OPERATION_NAME]: operation,
        },
      },
      parent,
    );
    return new RequestTrace(this.tracer, span, operation);
  }

  /** Sends what is buffered (tests; a graceful stop calls `shutdown`). */
  flush(): Promise<void> {
    return this.provider.forceFlush();
  }

  /** Exports what is left and stops. */
  shutdown(): Promise<void> {
    return this.provider.shutdown();
  }
}
