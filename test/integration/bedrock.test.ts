/**
 * AWS Bedrock channels through a gateway on real PostgreSQL and Redis, against a fake Bedrock runtime that
 * checks every SigV4 signature and answers Converse JSON and ConverseStream binary event streams: chat
 * JSON and stream (an Anthropic model id with its `:` in the path), a tool round trip, usage billed in a
 * balanced journal with the upstream's token counts (cache reads included), an Anthropic client pivoted
 * onto the binary stream; failures classified: throttling (HTTP and inside the stream) falls back without
 * a breaker failure, a ValidationException is the client's 400 with the breaker untouched, a 503 falls
 * back to OpenAI and an OpenAI 500 falls back to Bedrock, a wrong secret is refused by the signature check
 * and takes the credential out, a cut or corrupt stream is a channel failure.
 */
import OpenAI from 'openai';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { FAKE_AWS, type FakeBedrockUpstream, startFakeBedrock, startFakeOpenAI } from '../../fakes/index.js';
import { adminApi, saleJournalOf, waitFor } from '../helpers.js';
import {
  LENIENT_BREAKER,
  ServiceSuite,
  TOKEN_PRICES,
  type TestGateway,
  chainAlias,
  expectFallbackBothWays,
  newAppKey,
  openaiChannel,
  resetChannels,
} from '../helpers-suite.js';

let S: ServiceSuite;
let G: TestGateway;
let br: FakeBedrockUpstream;
let oa: FakeUpstream;
let db: pg.Pool;
let sk: string;
const admin = adminApi(() => G.url);

const MODEL = 'anthropic.claude-3-5-sonnet-20240620-v1:0';
const PROFILE = 'us.anthropic.claude-3-7-sonnet-20250219-v1:0';
const CHANNELS = ['br', 'br-text', 'br-bad', 'oa'];

const openai = () => new OpenAI({ baseURL: G.url + '/v1', apiKey: sk, maxRetries: 0 });

const journalOf = (requestId: string | null) => saleJournalOf(G, db, requestId);

beforeAll(async () => {
  S = await ServiceSuite.open();
  [br, oa] = await Promise.all([startFakeBedrock({ name: 'br' }), startFakeOpenAI({ name: 'oa' })]);
  G = await S.gateway();
  db = S.pool();
  const settings = { breaker: LENIENT_BREAKER };
  // The fake's address names no region: the JSON credential carries it.
  const json = JSON.stringify({ ...FAKE_AWS });
  await admin('POST', '/channels', {
    code: 'br',
    provider: 'bedrock',
    base_url: br.url,
    credential: json,
    settings,
  });
  await admin('POST', '/channels', {
    code: 'br-text',
    provider: 'bedrock',
    base_url: br.url,
    credential: `${FAKE_AWS.accessKeyId}:${FAKE_AWS.secretAccessKey}:session-token-1`,
    settings,
  });
  await admin('POST', '/channels', {
    code: 'br-bad',
    provider: 'bedrock',
    base_url: br.url,
    credential: JSON.stringify({ ...FAKE_AWS, secretAccessKey: 'not-the-secret' }),
    settings,
  });
  await openaiChannel(admin, 'oa', oa, settings);
  const alias = (name: string, ...tiers: Array<[string, string]>) => chainAlias(admin, name, ...tiers);
  await alias('br', ['br', MODEL]);
  await alias('br-profile', ['br-text', PROFILE]);
  await alias('br-then-oa', ['br', MODEL], ['oa', 'gpt-4o-mini']);
  await alias('oa-then-br', ['oa', 'gpt-4o-mini'], ['br', MODEL]);
  await alias('bad-then-oa', ['br-bad', MODEL], ['oa', 'gpt-4o-mini']);
  for (const a of ['br', 'br-profile', 'br-then-oa', 'oa-then-br', 'bad-then-oa'])
    await admin('POST', '/prices', { alias: a, ...TOKEN_PRICES });
  sk = (await newAppKey(admin, { name: 'bedrock' })).sk;
  await waitFor(() => G.config.alias('bad-then-oa') && G.config.price('bad-then-oa', null), 3_000, 5);
}, 60_000);

afterEach(async () => {
  br.setFault(null);
  oa.setFault(null);
  Object.assign(br.bedrock, { streamException: null, corruptFrame: null, cacheReadTokens: 0 });
  await resetChannels(G, CHANNELS);
});

afterAll(() => S?.close(br, oa));

describe('bedrock channels', () => {
  it('chat JSON: a signed Converse call, the model id encoded in the path, billed', async () => {
    br.resetStats();
    const { data, response } = await openai()
      .chat.completions.create({
        model: 'br',
        messages: [
          { role: 'system', content: 'be brief' },
          { role: 'user', content: 'hello bedrock' },
        ],
        max_tokens: 50,
        temperature: 0.3,
      })
      .withResponse();
    expect(data.model).toBe('br');
    expect(data.choices[0]!.message.content).toBe('Hello from br: hello bedrock');
    expect(data.choices[0]!.finish_reason).toBe('stop');
    const rec = br.requests.at(-1)!;
    expect(rec.path).toBe('/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse');
    expect(rec.headers.authorization).toMatch(
      new RegExp(
        `^AWS4-HMAC-SHA256 Credential=${FAKE_AWS.accessKeyId}/\\d{8}/us-east-1/bedrock/aws4_request`,
      ),
    );
    expect(rec.body).toEqual({
      messages: [{ role: 'user', content: [{ text: 'hello bedrock' }] }],
      system: [{ text: 'be brief' }],
      inferenceConfig: { maxTokens: 50, temperature: 0.3 },
    });
    expect(br.stats.ok).toBe(1); // the signature verified
    const j = await journalOf(response.headers.get('x-request-id'));
    expect(j.channel).toBe('br');
    expect(j.usage.input_tokens).toBe(data.usage!.prompt_tokens);
    expect(j.usage.output_tokens).toBe(data.usage!.completion_tokens);
    expect(j.usage.output_tokens).toBe(5); // "Hello from br: hello bedrock": five words, the fake's tokens
  });

  it('stream: the binary event stream as OpenAI chunks; usage from the metadata event billed, cache reads included', async () => {
    br.bedrock.cacheReadTokens = 30;
    const { data: stream, response } = await openai()
      .chat.completions.create({
        model: 'br',
        messages: [{ role: 'user', content: 'stream from bedrock please' }],
        stream: true,
        stream_options: { include_usage: true },
      })
      .withResponse();
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    expect(br.requests.at(-1)!.path).toBe(
      '/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream',
    );
    expect(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('')).toBe(
      'Hello from br: stream from bedrock please',
    );
    expect(chunks.find((c) => c.choices[0]?.finish_reason)?.choices[0]!.finish_reason).toBe('stop');
    const usage = chunks.at(-1)!.usage!;
    expect(usage.prompt_tokens_details?.cached_tokens).toBe(30);
    const j = await journalOf(response.headers.get('x-request-id'));
    expect(j.usage.input_tokens).toBe(usage.prompt_tokens);
    expect(j.usage.input_tokens).toBeGreaterThan(30);
    expect(j.usage.cached_tokens).toBe(30);
    expect(j.usage.output_tokens).toBe(usage.completion_tokens);
    expect(j.usage.output_tokens).toBeGreaterThan(0);
  });

  it('an inference profile over the AKID:SECRET:TOKEN credential, the region from AWS_REGION (the session token signed in)', async () => {
    const had = process.env.AWS_REGION;
    process.env.AWS_REGION = FAKE_AWS.region; // the gateway runs in this process
    let r;
    try {
      r = await openai()
        .chat.completions.create({ model: 'br-profile', messages: [{ role: 'user', content: 'profile' }] })
        .withResponse();
    } finally {
      if (had === undefined) delete process.env.AWS_REGION;
      else process.env.AWS_REGION = had;
    }
    const { data, response } = r;
    expect(data.choices[0]!.message.content).toBe('Hello from br: profile');
    const rec = br.requests.at(-1)!;
    expect(rec.path).toBe('/model/us.anthropic.claude-3-7-sonnet-20250219-v1%3A0/converse');
    expect(rec.headers['x-amz-security-token']).toBe('session-token-1');
    expect(rec.headers.authorization).toMatch(/SignedHeaders=[^,]*x-amz-security-token/);
    expect((await journalOf(response.headers.get('x-request-id'))).channel).toBe('br-text');
  });

  it('a tool call round trip, JSON and streamed', async () => {
    const tools = [
      {
        type: 'function' as const,
        function: {
          name: 'lookup',
          description: 'search',
          parameters: { type: 'object', properties: { query: { type: 'string' } } },
        },
      },
    ];
    const first = await openai().chat.completions.create({
      model: 'br',
      messages: [{ role: 'user', content: 'find gateways' }],
      tools,
    });
    expect(first.choices[0]!.finish_reason).toBe('tool_calls');
    const call = first.choices[0]!.message.tool_calls![0]!;
    expect(call).toMatchObject({ type: 'function', function: { name: 'lookup' } });
    if (call.type !== 'function') throw new Error('not a function call');
    expect(JSON.parse(call.function.arguments)).toEqual({ query: 'find gateways' });
    expect(br.requests.at(-1)!.body).toMatchObject({
      toolConfig: { tools: [{ toolSpec: { name: 'lookup', inputSchema: { json: { type: 'object' } } } }] },
    });

    const second = await openai().chat.completions.create({
      model: 'br',
      messages: [
        { role: 'user', content: 'find gateways' },
        first.choices[0]!.message,
        { role: 'tool', tool_call_id: call.id, content: 'anima is one' },
      ],
      tools,
    });
    expect(second.choices[0]!.message.content).toBe('Tool said: anima is one');
    expect(br.requests.at(-1)!.body).toMatchObject({
      messages: [
        { role: 'user' },
        {
          role: 'assistant',
          content: [{ toolUse: { toolUseId: call.id, name: 'lookup', input: { query: 'find gateways' } } }],
        },
        {
          role: 'user',
          content: [{ toolResult: { toolUseId: call.id, content: [{ text: 'anima is one' }] } }],
        },
      ],
    });

    const s = await openai().chat.completions.create({
      model: 'br',
      messages: [{ role: 'user', content: 'find gateways' }],
      tools,
      stream: true,
    });
    let args = '';
    let finish: string | null = null;
    for await (const c of s) {
      for (const t of c.choices[0]?.delta?.tool_calls ?? []) args += t.function?.arguments ?? '';
      finish ??= c.choices[0]?.finish_reason ?? null;
    }
    expect(JSON.parse(args)).toEqual({ query: 'find gateways' });
    expect(finish).toBe('tool_calls');
  });

  it('an Anthropic Messages client streams from Bedrock (the chat pivot over the binary stream)', async () => {
    const res = await fetch(G.url + '/v1/messages', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': sk, 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({
        model: 'br',
        max_tokens: 64,
        stream: true,
        messages: [{ role: 'user', content: 'pivot to bedrock' }],
      }),
    });
    expect(res.status).toBe(200);
    const text = await res.text();
    const types = [...text.matchAll(/^event: (\S+)$/gm)].map((m) => m[1]);
    expect(types[0]).toBe('message_start');
    expect(types.at(-1)).toBe('message_stop');
    const said = [...text.matchAll(/"text_delta","text":"([^"]*)"/g)].map((m) => m[1]).join('');
    expect(said).toBe('Hello from br: pivot to bedrock');
    expect((await journalOf(res.headers.get('x-request-id'))).usage.output_tokens).toBeGreaterThan(0);
  });
});

describe('bedrock failures', () => {
  it('ThrottlingException (HTTP 429): falls back to OpenAI, the channel cools down, no breaker failure', async () => {
    br.setFault({ status: 429, times: 1, retryAfter: 20 });
    const { data, response } = await openai()
      .chat.completions.create({ model: 'br-then-oa', messages: [{ role: 'user', content: 'busy' }] })
      .withResponse();
    expect(data.choices[0]!.message.content).toBe('Hello from oa: busy');
    expect(br.requests.at(-1)!.path).toContain('/converse');
    expect(G.breakers.windowCounts('br').failures).toBe(0);
    expect(G.health.refusesNow('br')).toBe('cooldown');
    expect(response.headers.get('x-anima-route')).toContain('rate_limited');
  });

  it('throttlingException inside the stream, before any output: falls back, no breaker failure', async () => {
    br.bedrock.streamException = { afterEvents: 0, type: 'throttlingException', message: 'Too many tokens' };
    const s = await openai().chat.completions.create({
      model: 'br-then-oa',
      messages: [{ role: 'user', content: 'stream busy' }],
      stream: true,
    });
    let text = '';
    for await (const c of s) text += c.choices[0]?.delta?.content ?? '';
    expect(text).toBe('Hello from oa: stream busy');
    expect(G.breakers.windowCounts('br').failures).toBe(0);
    expect(G.health.refusesNow('br')).toBe('cooldown');
  });

  it('ValidationException: the client gets a 400 with the words, no fallback, breaker untouched', async () => {
    oa.resetStats();
    const calls = br.stats.requests;
    // Converse refuses a conversation that starts with the assistant: the fake answers as Bedrock does.
    const err = (await openai()
      .chat.completions.create({
        model: 'br-then-oa',
        messages: [
          { role: 'assistant', content: 'I speak first' },
          { role: 'user', content: 'hm' },
        ],
      })
      .catch((e: unknown) => e)) as { status: number; message: string; type: string };
    expect(err).toMatchObject({ status: 400, type: 'invalid_request_error' });
    expect(err.message).toContain('must start with a user message');
    expect(br.stats.requests).toBe(calls + 1);
    expect(oa.stats.requests).toBe(0);
    expect(G.breakers.windowCounts('br').failures).toBe(0);
    expect(G.health.refusesNow('br')).toBeNull();
  });

  it('ServiceUnavailableException falls back to OpenAI (a breaker failure); an OpenAI 500 falls back to Bedrock', async () => {
    await expectFallbackBothWays({
      g: G,
      openai,
      journalOf,
      provider: { fake: br, name: 'br' },
      oa: { fake: oa, name: 'oa' },
      status: 503,
      channel: 'br',
      there: 'br-then-oa',
      back: 'oa-then-br',
    });
  });

  it('a wrong secret: the fake refuses the signature (403 InvalidSignatureException), the credential goes out, OpenAI serves', async () => {
    const before = br.stats.requests;
    const r = await openai().chat.completions.create({
      model: 'bad-then-oa',
      messages: [{ role: 'user', content: 'signed wrong' }],
    });
    expect(r.choices[0]!.message.content).toBe('Hello from oa: signed wrong');
    expect(br.stats.requests).toBe(before + 1);
    expect(br.stats.ok).toBeLessThan(br.stats.completed); // the fake answered an error
    expect(G.health.refusesNow('br-bad')).toBe('credential_invalid');
    expect(G.breakers.windowCounts('br-bad').failures).toBe(0);
    // The next request skips the channel without calling it.
    await openai().chat.completions.create({
      model: 'bad-then-oa',
      messages: [{ role: 'user', content: 'again' }],
    });
    expect(br.stats.requests).toBe(before + 1);
  });

  it('a stream cut mid-way reaches the client as an error; a corrupt first frame falls back', async () => {
    br.setFault({ cutAfterChunks: 3, times: 1 });
    const s = await openai().chat.completions.create({
      model: 'br-then-oa',
      messages: [{ role: 'user', content: 'cut me off' }],
      stream: true,
    });
    const failed = await (async () => {
      for await (const _c of s) {
        /* drain */
      }
    })().catch((e: unknown) => e as Error);
    expect(failed).toBeInstanceOf(Error);
    expect(G.breakers.windowCounts('br').failures).toBe(1);

    br.bedrock.corruptFrame = { afterEvents: 0 };
    const t = await openai().chat.completions.create({
      model: 'br-then-oa',
      messages: [{ role: 'user', content: 'garbled stream' }],
      stream: true,
    });
    let text = '';
    for await (const c of t) text += c.choices[0]?.delta?.content ?? '';
    expect(text).toBe('Hello from oa: garbled stream');
    expect(G.breakers.windowCounts('br').failures).toBe(2);
  });
});
