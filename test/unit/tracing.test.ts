/**
 * Tracing's settings from the OTEL_* variables, the pass-through of a client's trace context when tracing
 * is off, and the spans one request makes (to an in-memory exporter).
 */
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace';
import { SpanKind } from '@opentelemetry/api';
import { describe, expect, it } from 'vitest';
import { Tracing, passThrough, tracingFromEnv } from '../../src/observability/tracing.js';
import { settingsFromEnv } from '../../src/app/settings.js';
import { RequestContext } from '../../src/core/context.js';
import type { Channel } from '../../src/core/model.js';
import { failure } from '../../src/providers/classify.js';

describe('tracingFromEnv', () => {
  it('is off by default, with OTEL_SDK_DISABLED=true, or with OTEL_TRACES_EXPORTER=none', () => {
    expect(tracingFromEnv({})).toBeNull();
    expect(tracingFromEnv({ OTEL_SERVICE_NAME: 'x', OTEL_TRACES_SAMPLER: 'always_on' })).toBeNull();
    const ep = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' };
    expect(tracingFromEnv({ ...ep, OTEL_SDK_DISABLED: 'true' })).toBeNull();
    expect(tracingFromEnv({ ...ep, OTEL_SDK_DISABLED: 'TRUE' })).toBeNull();
    expect(tracingFromEnv({ ...ep, OTEL_TRACES_EXPORTER: 'none' })).toBeNull();
    expect(tracingFromEnv({ ...ep, OTEL_SDK_DISABLED: 'false' })).not.toBeNull();
  });

  it('turns on with OTEL_TRACES_EXPORTER=otlp (default endpoint) or an endpoint', () => {
    expect(tracingFromEnv({ OTEL_TRACES_EXPORTER: 'otlp' })!.url).toBe('http://localhost:4318/v1/traces');
    // The general endpoint gets the signal's path; the traces endpoint is used as it is.
    expect(tracingFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318/' })!.url).toBe(
      'http://c:4318/v1/traces',
    );
    expect(
      tracingFromEnv({
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318',
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://t.example/custom/path',
      })!.url,
    ).toBe('https://t.example/custom/path');
  });

  it('reads protocol, headers, service name and resource attributes', () => {
    const s = tracingFromEnv({
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318',
      OTEL_EXPORTER_OTLP_HEADERS: 'authorization=Basic%20abc,x-a=1',
      OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'x-a=2',
      OTEL_RESOURCE_ATTRIBUTES: 'service.name=from-attrs,deployment.environment.name=prod',
    })!;
    expect(s.protocol).toBe('http/protobuf');
    expect(s.headers).toEqual({ authorization: 'Basic abc', 'x-a': '2' });
    expect(s.serviceName).toBe('from-attrs');
    expect(s.resourceAttributes['deployment.environment.name']).toBe('prod');
    expect(s.samplerName).toBe('parentbased_always_on');
    const j = tracingFromEnv({
      OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_SERVICE_NAME: 'svc',
    })!;
    expect(j.protocol).toBe('http/json');
    expect(j.serviceName).toBe('svc');
    expect(tracingFromEnv({ OTEL_TRACES_EXPORTER: 'otlp' })!.serviceName).toBe('anima');
  });

  it("is the gateway's `tracing` setting", () => {
    expect(settingsFromEnv({}).tracing).toBeNull();
    expect(settingsFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }).tracing!.url).toBe(
      'http://c:4318/v1/traces',
    );
    expect(() => settingsFromEnv({ OTEL_TRACES_EXPORTER: 'zipkin' })).toThrow(/not supported/);
  });

  it('builds the standard samplers and refuses what it cannot honour', () => {
    const on = { OTEL_TRACES_EXPORTER: 'otlp' };
    expect(String(tracingFromEnv({ ...on, OTEL_TRACES_SAMPLER: 'always_off' })!.sampler)).toBe(
      'AlwaysOffSampler',
    );
    const pr = tracingFromEnv({
      ...on,
      OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
      OTEL_TRACES_SAMPLER_ARG: '0.25',
    })!;
    expect(String(pr.sampler)).toContain('TraceIdRatioBased{0.25}');
    expect(String(pr.sampler)).toContain('ParentBased');
    expect(pr.samplerName).toBe('parentbased_traceidratio(0.25)');
    expect(() => tracingFromEnv({ ...on, OTEL_TRACES_SAMPLER: 'jaeger_remote' })).toThrow(/not supported/);
    expect(() =>
      tracingFromEnv({ ...on, OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '2' }),
    ).toThrow(/\[0, 1\]/);
    expect(() => tracingFromEnv({ ...on, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' })).toThrow(/not supported/);
    expect(() => tracingFromEnv({ OTEL_TRACES_EXPORTER: 'console' })).toThrow(/not supported/);
    expect(() => tracingFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'not a url' })).toThrow(/not a URL/);
    expect(() => tracingFromEnv({ ...on, OTEL_BSP_SCHEDULE_DELAY: 'soon' })).toThrow(/positive integer/);
  });
});

describe('passThrough (tracing off)', () => {
  const TP = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

  it('hands a well-formed traceparent (and its tracestate) to every attempt, unchanged', () => {
    const t = passThrough({ traceparent: TP, tracestate: 'a=1' })!;
    const call = t.attempt({} as Channel, 'm', new RequestContext('r', 'openai_chat', 0));
    expect(call.headers).toEqual({ traceparent: TP, tracestate: 'a=1' });
    expect(t.admission()).toBeNull();
    expect(t.settlement(new RequestContext('r', 'openai_chat', 0))).toBeNull();
  });

  it('sends nothing when the client sent none, a malformed one, or two', () => {
    expect(passThrough({})).toBeNull();
    expect(passThrough({ tracestate: 'a=1' })).toBeNull();
    expect(passThrough({ traceparent: 'garbage' })).toBeNull();
    expect(passThrough({ traceparent: TP.toUpperCase() })).toBeNull();
    expect(passThrough({ traceparent: 'ff' + TP.slice(2) })).toBeNull();
    expect(passThrough({ traceparent: [TP, TP] as unknown as string })).toBeNull();
    // A tracestate that isn't printable ASCII is dropped; the traceparent still goes.
    expect(
      passThrough({ traceparent: TP, tracestate: 'a=\u00e9' })!.attempt(
        {} as Channel,
        'm',
        {} as RequestContext,
      ).headers,
    ).toEqual({
      traceparent: TP,
    });
  });
});

describe('Tracing (in-memory exporter)', () => {
  const channel = {
    code: 'ch1',
    provider: 'anthropic',
    baseUrl: 'https://user:pw@api.example.com/v1',
  } as Channel;

  function setup(env: Record<string, string> = {}) {
    const exporter = new InMemorySpanExporter();
    const t = new Tracing(tracingFromEnv({ OTEL_TRACES_EXPORTER: 'otlp', ...env })!, { exporter });
    return { t, exporter };
  }

  it('a request: server span under the client parent, a client span per attempt whose id goes upstream', async () => {
    const { t, exporter } = setup();
    const ctx = new RequestContext('req1', 'anthropic_messages', 0);
    const tr = t.request(
      'POST',
      '/v1/messages',
      { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' },
      'anthropic_messages',
    );
    ctx.attempts = 1;
    const a1 = tr.attempt(channel, 'claude-x', ctx);
    a1.end(failure('server_error', 'boom with the prompt in it'), 503);
    ctx.attempts = 2;
    const a2 = tr.attempt(channel, 'claude-x', ctx);
    ctx.usage = { inputTokens: 7, outputTokens: 3, cachedTokens: 2, cacheWriteTokens: 0 };
    a2.end(null, 200);
    ctx.status = 200;
    ctx.outcome = 'fallback';
    tr.end(ctx);
    await t.flush();
    const spans = exporter.getFinishedSpans();
    expect(spans.map((s) => s.name)).toEqual(['chat claude-x', 'chat claude-x', 'POST /v1/messages']);
    const [f, ok, req] = spans;
    expect(req!.kind).toBe(SpanKind.SERVER);
    expect(req!.spanContext().traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(req!.parentSpanContext?.spanId).toBe('00f067aa0ba902b7');
    expect(f!.kind).toBe(SpanKind.CLIENT);
    expect(f!.parentSpanContext?.spanId).toBe(req!.spanContext().spanId);
    expect(a1.headers.traceparent).toBe(`00-4bf92f3577b34da6a3ce929d0e0e4736-${f!.spanContext().spanId}-01`);
    expect(a2.headers.traceparent).toBe(`00-4bf92f3577b34da6a3ce929d0e0e4736-${ok!.spanContext().spanId}-01`);
    expect(f!.attributes).toMatchObject({
      'gen_ai.provider.name': 'anthropic',
      'anima.outcome': 'server_error',
      'http.response.status_code': 503,
      'server.address': 'api.example.com',
      'server.port': 443,
    });
    expect(f!.status.message).toBe('server_error'); // the kind, never the upstream's words
    expect(ok!.attributes).toMatchObject({
      'gen_ai.usage.input_tokens': 7,
      'gen_ai.usage.output_tokens': 3,
      'gen_ai.usage.cache_read.input_tokens': 2,
    });
    expect(req!.attributes).toMatchObject({ 'anima.outcome': 'fallback', 'gen_ai.operation.name': 'chat' });
    expect(JSON.stringify(spans.map((s) => s.attributes))).not.toMatch(/prompt|pw|user/);
    await t.shutdown();
  });

  it('sampled out: nothing exported, the context still propagates with flags 00', async () => {
    const { t, exporter } = setup({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '0' });
    const ctx = new RequestContext('req2', 'openai_chat', 0);
    const tr = t.request('POST', '/v1/chat/completions', {}, 'openai_chat');
    expect(tr.admission()).toBeNull();
    expect(tr.settlement(ctx)).toBeNull();
    const a = tr.attempt({ ...channel, provider: 'openai' } as Channel, 'm', ctx);
    expect(a.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
    a.end(null, 200);
    tr.end(ctx);
    await t.flush();
    expect(exporter.getFinishedSpans()).toEqual([]);
    await t.shutdown();
  });

  it('an admission span left open by a failure ends with the request', async () => {
    const { t, exporter } = setup();
    const ctx = new RequestContext('req3', 'openai_chat', 0);
    const tr = t.request('POST', '/v1/chat/completions', {}, 'openai_chat');
    tr.admission();
    ctx.status = 500;
    tr.end(ctx);
    await t.flush();
    const names = exporter.getFinishedSpans().map((s) => [s.name, s.status.code]);
    expect(names).toEqual([
      ['admission', 2],
      ['POST /v1/chat/completions', 2],
    ]);
    await t.shutdown();
  });
});
