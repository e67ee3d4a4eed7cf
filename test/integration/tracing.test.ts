/**
 * OpenTelemetry traces end to end: gateways export to an OTLP/HTTP receiver in this file (a plain node:http
 * server). Protobuf payloads (the default protocol) are decoded with the official OTLP .proto definitions
 * (test/fixtures/otlp, loaded by protobufjs), independently of the exporter's own encoder; JSON payloads
 * (http/json) as the OTLP/JSON encoding says (ids in hex). The fake upstreams record the trace headers they
 * received.
 *
 * "Nothing exported" is checked after an event that would have sent it: the request's access line (its
 * spans end just before it) followed by a flush of the tracer, or the gateway's close.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import protobuf from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertAlias, insertApp, insertChannel, insertKey } from '../../src/config/repo.js';
import type { DbHandle } from '../../src/store/db.js';
import { tracingFromEnv } from '../../src/observability/tracing.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import type { FakeUpstream } from '../../fakes/common.js';
import { openTestDb, startTestGateway, waitFor } from '../helpers.js';

type TGateway = Awaited<ReturnType<typeof startTestGateway>>;
type Value = string | number | boolean | null;

interface RSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  status: { code: number; message: string };
  attributes: Record<string, Value>;
  resource: Record<string, Value>;
}

// ------------------------------------------------------------ the OTLP receiver

const PROTO_DIR = resolve('test/fixtures/otlp');
const protoRoot = new protobuf.Root();
protoRoot.resolvePath = (_origin, target) => join(PROTO_DIR, target);
protoRoot.loadSync('opentelemetry/proto/collector/trace/v1/trace_service.proto');
const ExportRequest = protoRoot.lookupType(
  'opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest',
);

/** An AnyValue (protobufjs object with oneofs, or OTLP/JSON) as a plain value. */
function anyValue(v: Record<string, unknown> | undefined): Value {
  if (!v) return null;
  if (v.stringValue !== undefined) return v.stringValue as string;
  if (v.boolValue !== undefined) return v.boolValue as boolean;
  if (v.intValue !== undefined) return Number(v.intValue); // a Long as a string, or a JSON string/number
  if (v.doubleValue !== undefined) return Number(v.doubleValue);
  return null;
}

function attrs(
  list: Array<{ key: string; value?: Record<string, unknown> }> | undefined,
): Record<string, Value> {
  return Object.fromEntries((list ?? []).map((a) => [a.key, anyValue(a.value)]));
}

/** ExportTraceServiceRequest (as a plain object) -> spans. `hex` turns an id field into hex. */
function spansOf(req: Record<string, any>, hex: (x: unknown) => string): RSpan[] {
  const out: RSpan[] = [];
  for (const rs of req.resourceSpans ?? []) {
    const resource = attrs(rs.resource?.attributes);
    for (const ss of rs.scopeSpans ?? [])
      for (const s of ss.spans ?? [])
        out.push({
          traceId: hex(s.traceId),
          spanId: hex(s.spanId),
          parentSpanId: s.parentSpanId ? hex(s.parentSpanId) : '',
          name: s.name,
          kind: typeof s.kind === 'number' ? s.kind : Number(s.kind ?? 0),
          status: { code: Number(s.status?.code ?? 0), message: s.status?.message ?? '' },
          attributes: attrs(s.attributes),
          resource,
        });
  }
  return out;
}

interface Receiver {
  url: string;
  spans: RSpan[];
  posts: Array<{ contentType: string; headers: IncomingMessage['headers']; raw: Buffer }>;
  close(): Promise<void>;
}

async function startReceiver(): Promise<Receiver> {
  const spans: RSpan[] = [];
  const posts: Receiver['posts'] = [];
  const server: Server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(parts);
      const contentType = String(req.headers['content-type'] ?? '');
      posts.push({ contentType, headers: req.headers, raw });
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end();
        return;
      }
      if (contentType.startsWith('application/x-protobuf')) {
        const msg = ExportRequest.toObject(ExportRequest.decode(raw), {
          longs: String,
          enums: Number,
          defaults: false,
          oneofs: true,
        });
        spans.push(...spansOf(msg, (b) => Buffer.from(b as Uint8Array).toString('hex')));
        // An empty ExportTraceServiceResponse: zero bytes in protobuf.
        res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
      } else if (contentType.startsWith('application/json')) {
        // OTLP/JSON carries trace and span ids as hex strings (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding).
        spans.push(...spansOf(JSON.parse(raw.toString('utf8')), (x) => String(x)));
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      } else res.writeHead(415).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    spans,
    posts,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

// ------------------------------------------------------------ gateways and upstreams

let dbh: DbHandle;
let pri: FakeUpstream;
let sec: FakeUpstream;
let sk: string;
let keyId: string;
let appId: string;
const PROMPT = 'the-secret-prompt-words';

let rProto: Receiver;
let rJson: Receiver;
let rRatio: Receiver;
let rOff: Receiver;
let gProto: TGateway;
let gJson: TGateway;
let gRatio: TGateway;
let gOff: TGateway;

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';

const randomHex = (n: number) =>
  Array.from({ length: n }, () => '0123456789abcdef'[Math.floor(Math.random() * 16)]).join('');

function chat(g: TGateway, model: string, headers: Record<string, string> = {}, extra = {}) {
  return fetch(g.url + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}`, ...headers },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: PROMPT }], ...extra }),
  });
}

/** Waits for a request's access line: its spans have all ended by then (see the file's header). */
async function accessLine(g: TGateway, reqId: string): Promise<void> {
  await waitFor(() => g.logs.lines.some((l) => l.includes(`"reqId":"${reqId}"`) && l.includes('"outcome"')));
}

const ofTrace = (r: Receiver, traceId: string) => r.spans.filter((s) => s.traceId === traceId);
const byName = (spans: RSpan[], name: string) => spans.filter((s) => s.name === name);
/** The upstream requests that carried this trace id in their traceparent. */
const upstreamCalls = (up: FakeUpstream, traceId: string) =>
  up.requests.filter((q) => String(q.headers.traceparent ?? '').split('-')[1] === traceId);

// SpanKind in OTLP: 1 internal, 2 server, 3 client.
const SERVER = 2;
const CLIENT = 3;
const INTERNAL = 1;

beforeAll(async () => {
  pri = await startFakeOpenAI({ name: 'primary' });
  sec = await startFakeOpenAI({ name: 'secondary' });
  dbh = await openTestDb(undefined);
  const fast = { timeouts: { connectMs: 500, firstByteMs: 2_000, idleMs: 2_000, totalMs: 5_000 } };
  await insertChannel(dbh.db, {
    code: 'pri',
    provider: 'openai',
    baseUrl: pri.url + '/v1',
    credential: 'pri-credential-secret',
    settings: fast,
  });
  await insertChannel(dbh.db, {
    code: 'sec',
    provider: 'openai',
    baseUrl: sec.url + '/v1',
    credential: 'sec-credential-secret',
    settings: fast,
  });
  await insertAlias(dbh.db, {
    name: 'main',
    tiers: [[{ channel: 'pri', model: 'gpt-up' }], [{ channel: 'sec', model: 'gpt-up-2' }]],
  });
  appId = await insertApp(dbh.db, 'traced');
  ({ sk, id: keyId } = await insertKey(dbh.db, appId));

  [rProto, rJson, rRatio, rOff] = await Promise.all([
    startReceiver(),
    startReceiver(),
    startReceiver(),
    startReceiver(),
  ]);
  const common = { OTEL_BSP_SCHEDULE_DELAY: '20' };
  gProto = await startTestGateway(
    {
      tracing: tracingFromEnv({
        ...common,
        OTEL_EXPORTER_OTLP_ENDPOINT: rProto.url,
        OTEL_SERVICE_NAME: 'anima-test',
        OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=ci,service.name=ignored',
        OTEL_EXPORTER_OTLP_HEADERS: 'x-collector-token=tok%20123',
      }),
    },
    { dbh },
  );
  gJson = await startTestGateway(
    {
      tracing: tracingFromEnv({
        ...common,
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: rJson.url + '/v1/traces',
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json',
      }),
    },
    { dbh },
  );
  gRatio = await startTestGateway(
    {
      tracing: tracingFromEnv({
        ...common,
        OTEL_EXPORTER_OTLP_ENDPOINT: rRatio.url,
        OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
        OTEL_TRACES_SAMPLER_ARG: '0',
      }),
    },
    { dbh },
  );
  // An endpoint is set, but the SDK is disabled: tracing is off.
  gOff = await startTestGateway(
    {
      tracing: tracingFromEnv({
        ...common,
        OTEL_EXPORTER_OTLP_ENDPOINT: rOff.url,
        OTEL_SDK_DISABLED: 'true',
      }),
    },
    { dbh },
  );
}, 60_000);

afterAll(async () => {
  for (const g of [gProto, gJson, gRatio, gOff]) await g?.close();
  for (const r of [rProto, rJson, rRatio, rOff]) await r?.close();
  await pri?.close();
  await sec?.close();
  await dbh?.close();
});

describe('tracing on (OTLP/HTTP protobuf)', () => {
  it('a request with a traceparent: request, admission, attempt and settlement spans in its trace; the upstream gets the attempt as parent', async () => {
    const r = await chat(gProto, 'main', {
      traceparent: `00-${TRACE}-${PARENT}-01`,
      tracestate: 'vendor=abc',
    });
    expect(r.status).toBe(200);
    const body = (await r.json()) as { usage: { prompt_tokens: number; completion_tokens: number } };
    const reqId = r.headers.get('x-request-id');
    await waitFor(() => ofTrace(rProto, TRACE).length >= 4);
    const spans = ofTrace(rProto, TRACE);

    const [request] = byName(spans, 'POST /v1/chat/completions');
    expect(request).toBeDefined();
    expect(request!.kind).toBe(SERVER);
    expect(request!.parentSpanId).toBe(PARENT); // the client's span
    expect(request!.attributes).toMatchObject({
      'http.request.method': 'POST',
      'http.route': '/v1/chat/completions',
      'http.response.status_code': 200,
      'gen_ai.operation.name': 'chat',
      'gen_ai.request.model': 'main',
      'gen_ai.response.model': 'gpt-up',
      'gen_ai.usage.input_tokens': body.usage.prompt_tokens,
      'gen_ai.usage.output_tokens': body.usage.completion_tokens,
      'anima.alias': 'main',
      'anima.channel': 'pri',
      'anima.app': appId,
      'anima.key': keyId,
      'anima.outcome': 'ok',
      'anima.attempts': 1,
      'anima.request.id': reqId,
    });
    expect(body.usage.prompt_tokens).toBeGreaterThan(0);

    const [admission] = byName(spans, 'admission');
    expect(admission!.kind).toBe(INTERNAL);
    expect(admission!.parentSpanId).toBe(request!.spanId);
    expect(admission!.attributes['anima.admission']).toBe('admitted');

    const attempts = byName(spans, 'chat gpt-up');
    expect(attempts).toHaveLength(1);
    const attempt = attempts[0]!;
    expect(attempt.kind).toBe(CLIENT);
    expect(attempt.parentSpanId).toBe(request!.spanId);
    expect(attempt.attributes).toMatchObject({
      'gen_ai.operation.name': 'chat',
      'gen_ai.provider.name': 'openai',
      'gen_ai.request.model': 'gpt-up',
      'gen_ai.response.model': 'gpt-up',
      'gen_ai.usage.input_tokens': body.usage.prompt_tokens,
      'gen_ai.usage.output_tokens': body.usage.completion_tokens,
      'anima.channel': 'pri',
      'anima.attempt': 1,
      'anima.outcome': 'ok',
      'http.response.status_code': 200,
      'server.address': '127.0.0.1',
      'server.port': pri.port,
    });

    const [settlement] = byName(spans, 'settlement');
    expect(settlement!.kind).toBe(INTERNAL);
    expect(settlement!.parentSpanId).toBe(request!.spanId);
    expect(settlement!.status.code).toBe(0);

    // The upstream got a child traceparent: same trace, the attempt span as parent, sampled; and the
    // client's tracestate.
    const calls = upstreamCalls(pri, TRACE);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.headers.traceparent).toBe(`00-${TRACE}-${attempt.spanId}-01`);
    expect(calls[0]!.headers.tracestate).toBe('vendor=abc');

    // Resource, collector header, and what is never recorded.
    expect(request!.resource).toMatchObject({
      'service.name': 'anima-test',
      'deployment.environment.name': 'ci',
    });
    const posts = rProto.posts.filter((p) => p.raw.includes(Buffer.from(TRACE, 'hex')));
    expect(posts.length).toBeGreaterThan(0);
    for (const p of posts) {
      expect(p.contentType).toBe('application/x-protobuf');
      expect(p.headers['x-collector-token']).toBe('tok 123');
      const raw = p.raw.toString('latin1');
      for (const secret of [sk, PROMPT, 'pri-credential-secret', 'Hello from'])
        expect(raw.includes(secret), secret).toBe(false);
    }
  });

  it('a fallback: two attempt spans (the failed one with its status and outcome), each upstream with its own parent', async () => {
    const trace = randomHex(32);
    pri.setFault({ status: 500, times: 1 });
    const r = await chat(gProto, 'main', { traceparent: `00-${trace}-${randomHex(16)}-01` });
    expect(r.status).toBe(200);
    expect(r.headers.get('x-anima-channel')).toBe('sec');
    await waitFor(() => ofTrace(rProto, trace).length >= 5);
    const spans = ofTrace(rProto, trace);
    const [request] = byName(spans, 'POST /v1/chat/completions');
    expect(request!.attributes).toMatchObject({
      'anima.outcome': 'fallback',
      'anima.attempts': 2,
      'anima.channel': 'sec',
      'gen_ai.response.model': 'gpt-up-2',
    });
    const [failed] = byName(spans, 'chat gpt-up');
    const [served] = byName(spans, 'chat gpt-up-2');
    expect(failed!.parentSpanId).toBe(request!.spanId);
    expect(served!.parentSpanId).toBe(request!.spanId);
    expect(failed!.attributes).toMatchObject({
      'anima.channel': 'pri',
      'anima.attempt': 1,
      'anima.outcome': 'server_error',
      'error.type': 'server_error',
      'http.response.status_code': 500,
    });
    expect(failed!.status.code).toBe(2); // ERROR
    expect(failed!.attributes['gen_ai.usage.input_tokens']).toBeUndefined();
    expect(served!.attributes).toMatchObject({
      'anima.channel': 'sec',
      'anima.attempt': 2,
      'anima.outcome': 'ok',
      'http.response.status_code': 200,
    });
    expect(upstreamCalls(pri, trace).map((q) => q.headers.traceparent)).toEqual([
      `00-${trace}-${failed!.spanId}-01`,
    ]);
    expect(upstreamCalls(sec, trace).map((q) => q.headers.traceparent)).toEqual([
      `00-${trace}-${served!.spanId}-01`,
    ]);
  });

  it('a rejected request (unknown alias) still has its request span, with the error code', async () => {
    const trace = randomHex(32);
    const r = await chat(gProto, 'no-such-alias', { traceparent: `00-${trace}-${randomHex(16)}-01` });
    expect(r.status).toBe(404);
    await waitFor(() => ofTrace(rProto, trace).length >= 1);
    const [request] = byName(ofTrace(rProto, trace), 'POST /v1/chat/completions');
    expect(request!.attributes).toMatchObject({
      'http.response.status_code': 404,
      'anima.outcome': 'rejected',
      'anima.key': keyId,
    });
    expect(typeof request!.attributes['anima.error.code']).toBe('string');
    expect(request!.status.code).toBe(0); // a 4xx is the client's error, not the server span's
  });

  it('no traceparent from the client: a new trace, still sent to the upstream', async () => {
    const before = pri.requests.length;
    const r = await chat(gProto, 'main');
    expect(r.status).toBe(200);
    const call = pri.requests.slice(before).at(-1)!;
    const [, trace, parent, flags] = String(call.headers.traceparent).split('-');
    expect(flags).toBe('01');
    await waitFor(() => ofTrace(rProto, trace!).length >= 4);
    const spans = ofTrace(rProto, trace!);
    const [request] = byName(spans, 'POST /v1/chat/completions');
    expect(request!.parentSpanId).toBe('');
    expect(byName(spans, 'chat gpt-up')[0]!.spanId).toBe(parent);
  });

  it("parent-based sampling: a client's unsampled traceparent exports nothing, and the upstream still gets the trace (flags 00)", async () => {
    const trace = randomHex(32);
    const r = await chat(gProto, 'main', { traceparent: `00-${trace}-${randomHex(16)}-00` });
    expect(r.status).toBe(200);
    await accessLine(gProto, r.headers.get('x-request-id')!);
    await gProto.tracing!.flush();
    expect(ofTrace(rProto, trace)).toEqual([]);
    const calls = upstreamCalls(pri, trace);
    expect(calls).toHaveLength(1);
    expect(String(calls[0]!.headers.traceparent)).toMatch(new RegExp(`^00-${trace}-[0-9a-f]{16}-00$`));
  });
});

describe('tracing on (OTLP/HTTP JSON)', () => {
  it('the same spans arrive as OTLP/JSON', async () => {
    const trace = randomHex(32);
    const r = await chat(gJson, 'main', { traceparent: `00-${trace}-${PARENT}-01` }, { stream: true });
    expect(r.status).toBe(200);
    await r.text();
    await waitFor(() => ofTrace(rJson, trace).length >= 4);
    const spans = ofTrace(rJson, trace);
    expect(rJson.posts.every((p) => p.contentType.startsWith('application/json'))).toBe(true);
    const [request] = byName(spans, 'POST /v1/chat/completions');
    expect(request!.parentSpanId).toBe(PARENT);
    expect(request!.resource['service.name']).toBe('anima'); // the default name
    expect(request!.attributes).toMatchObject({ 'anima.stream': true, 'anima.outcome': 'ok' });
    expect(request!.attributes['gen_ai.usage.output_tokens']).toBeGreaterThan(0);
    const [attempt] = byName(spans, 'chat gpt-up');
    expect(upstreamCalls(pri, trace)[0]!.headers.traceparent).toBe(`00-${trace}-${attempt!.spanId}-01`);
    expect(byName(spans, 'admission')).toHaveLength(1);
    expect(byName(spans, 'settlement')).toHaveLength(1);
  });
});

describe('sampler parentbased_traceidratio with ratio 0', () => {
  it('exports nothing for new traces or unsampled parents; the upstream still gets the context', async () => {
    const unsampled = randomHex(32);
    const ids: string[] = [];
    const variants: Array<Record<string, string>> = [
      {},
      {},
      { traceparent: `00-${unsampled}-${randomHex(16)}-00` },
    ];
    for (const headers of variants) {
      const r = await chat(gRatio, 'main', headers);
      expect(r.status).toBe(200);
      ids.push(r.headers.get('x-request-id')!);
    }
    for (const id of ids) await accessLine(gRatio, id);
    await gRatio.tracing!.flush();
    expect(rRatio.spans).toEqual([]);
    expect(rRatio.posts).toEqual([]);
    expect(String(upstreamCalls(pri, unsampled)[0]!.headers.traceparent)).toMatch(/-00$/);
  });

  it("follows a client's sampled parent (parent-based)", async () => {
    const trace = randomHex(32);
    const r = await chat(gRatio, 'main', { traceparent: `00-${trace}-${randomHex(16)}-01` });
    expect(r.status).toBe(200);
    await waitFor(() => ofTrace(rRatio, trace).length >= 4);
    expect(byName(ofTrace(rRatio, trace), 'chat gpt-up')).toHaveLength(1);
  });
});

describe('tracing off (OTEL_SDK_DISABLED=true)', () => {
  it("passes the client's traceparent and tracestate to the upstream unchanged, and exports nothing", async () => {
    expect(gOff.tracing).toBeNull();
    const trace = randomHex(32);
    const tp = `00-${trace}-${PARENT}-01`;
    const r = await chat(gOff, 'main', { traceparent: tp, tracestate: 'a=1,b=2' });
    expect(r.status).toBe(200);
    const calls = upstreamCalls(pri, trace);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.headers.traceparent).toBe(tp);
    expect(calls[0]!.headers.tracestate).toBe('a=1,b=2');

    // None sent when the client sent none; a malformed one is dropped (with its tracestate).
    let before = pri.requests.length;
    expect((await chat(gOff, 'main')).status).toBe(200);
    expect(pri.requests.slice(before).map((q) => q.headers.traceparent)).toEqual([undefined]);
    before = pri.requests.length;
    const bad = await chat(gOff, 'main', { traceparent: 'not-a-traceparent', tracestate: 'a=1' });
    expect(bad.status).toBe(200);
    const got = pri.requests.slice(before);
    expect(got.map((q) => [q.headers.traceparent, q.headers.tracestate])).toEqual([[undefined, undefined]]);

    // A fallback passes the same context to each upstream.
    const trace2 = randomHex(32);
    pri.setFault({ status: 500, times: 1 });
    const fb = await chat(gOff, 'main', { traceparent: `00-${trace2}-${PARENT}-01` });
    expect(fb.headers.get('x-anima-channel')).toBe('sec');
    expect(upstreamCalls(pri, trace2)[0]!.headers.traceparent).toBe(`00-${trace2}-${PARENT}-01`);
    expect(upstreamCalls(sec, trace2)[0]!.headers.traceparent).toBe(`00-${trace2}-${PARENT}-01`);

    // Closing a gateway flushes its tracer: had there been one, its spans would be at the receiver now.
    await gOff.close();
    expect(rOff.posts).toEqual([]);
  });
});
