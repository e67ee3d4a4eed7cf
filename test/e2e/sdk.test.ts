/**
 * The official `openai` and `@anthropic-ai/sdk` clients against a gateway on the embedded default
 * (PGlite + in-process coordination), served by the fake OpenAI and Anthropic upstreams.
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertAlias, insertApp, insertChannel, insertKey } from '../../src/config/repo.js';
import { startFakeAnthropic, startFakeOpenAI } from '../../fakes/index.js';
import type { FakeUpstream } from '../../fakes/common.js';
import { openTestDb, startTestGateway } from '../helpers.js';

let fo: FakeUpstream;
let fa: FakeUpstream;
let gw: Awaited<ReturnType<typeof startTestGateway>>;
let sk: string;
let openai: OpenAI;
let anthropic: Anthropic;

const weatherTool = {
  type: 'function' as const,
  function: {
    name: 'get_weather',
    description: 'Weather for a city',
    parameters: { type: 'object', properties: { query: { type: 'string' } }, required: ['query'] },
  },
};

beforeAll(async () => {
  fo = await startFakeOpenAI({ name: 'fake-openai', apiKey: 'up-openai-secret' });
  fa = await startFakeAnthropic({ name: 'fake-anthropic', apiKey: 'up-anthropic-secret' });
  const dbh = await openTestDb(undefined);
  await insertChannel(dbh.db, {
    code: 'oai',
    provider: 'openai',
    baseUrl: fo.url + '/v1',
    credential: 'up-openai-secret',
  });
  await insertChannel(dbh.db, {
    code: 'ant',
    provider: 'anthropic',
    baseUrl: fa.url,
    credential: 'up-anthropic-secret',
  });
  await insertAlias(dbh.db, { name: 'gpt', tiers: [[{ channel: 'oai', model: 'gpt-4o-mini' }]] });
  await insertAlias(dbh.db, { name: 'claude', tiers: [[{ channel: 'ant', model: 'claude-3-5-haiku' }]] });
  await insertAlias(dbh.db, { name: 'emb', tiers: [[{ channel: 'oai', model: 'text-embedding-3-small' }]] });
  await insertAlias(dbh.db, { name: 'hidden', tiers: [[{ channel: 'oai', model: 'x' }]] });
  const app = await insertApp(dbh.db, 'e2e');
  ({ sk } = await insertKey(dbh.db, app, { allowedAliases: ['gpt', 'claude', 'emb'] }));
  gw = await startTestGateway({}, { dbh });
  openai = new OpenAI({ apiKey: sk, baseURL: gw.url + '/v1', maxRetries: 0 });
  anthropic = new Anthropic({ apiKey: sk, baseURL: gw.url, maxRetries: 0 });
}, 60_000);

afterAll(async () => {
  await gw?.close();
  await gw?.dbh.close();
  await fo?.close();
  await fa?.close();
});

describe('openai client', () => {
  it('chat completion (JSON) through an OpenAI channel', async () => {
    const { data: r, response } = await openai.chat.completions
      .create({ model: 'gpt', messages: [{ role: 'user', content: 'Hello there' }] })
      .withResponse();
    expect(r.model).toBe('gpt');
    expect(r.choices[0]!.message.content).toBe('Hello from fake-openai: Hello there');
    expect(r.usage!.prompt_tokens).toBeGreaterThan(0);
    expect(response.headers.get('x-anima-channel')).toBe('oai');
    expect(response.headers.get('x-request-id')).toMatch(/^req_/);
    const up = fo.requests.at(-1)!;
    expect((up.body as { model: string }).model).toBe('gpt-4o-mini');
    expect(up.headers.authorization).toBe('Bearer up-openai-secret');
  });

  it('chat completion streamed, with include_usage', async () => {
    const stream = await openai.chat.completions.create({
      model: 'gpt',
      messages: [{ role: 'user', content: 'Stream please' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      expect(chunk.model).toBe('gpt');
      text += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe('Hello from fake-openai: Stream please');
    expect(usage?.completion_tokens).toBeGreaterThan(0);
  });

  it('streams without usage chunks when the client did not ask, yet the upstream was asked for usage', async () => {
    const stream = await openai.chat.completions.create({
      model: 'gpt',
      messages: [{ role: 'user', content: 'x' }],
      stream: true,
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    expect(chunks.every((c) => c.usage === undefined)).toBe(true);
    expect((fo.requests.at(-1)!.body as { stream_options: unknown }).stream_options).toEqual({
      include_usage: true,
    });
  });

  it('passes every field through unchanged to an OpenAI-compatible channel (wire fidelity)', async () => {
    const body = {
      model: 'gpt',
      messages: [
        { role: 'system' as const, content: 'be brief' },
        {
          role: 'user' as const,
          content: [
            { type: 'text' as const, text: 'look' },
            { type: 'image_url' as const, image_url: { url: 'data:image/png;base64,AAAA' } },
          ],
        },
      ],
      tools: [weatherTool],
      tool_choice: 'none' as const,
      parallel_tool_calls: false,
      response_format: {
        type: 'json_schema' as const,
        json_schema: { name: 'x', schema: { type: 'object' }, strict: true },
      },
      n: 2,
      logprobs: true,
      top_logprobs: 2,
      seed: 42,
      user: 'u-1',
      metadata: { team: 'a' },
      temperature: 1.5,
      frequency_penalty: 0.1,
      some_future_field: { nested: [1, 2, 3] },
    };
    const r = await openai.chat.completions.create(body as never);
    expect((r as OpenAI.ChatCompletion).choices).toHaveLength(2);
    const sent = fo.requests.at(-1)!.body as Record<string, unknown>;
    expect(sent).toEqual({ ...body, model: 'gpt-4o-mini' });
  });

  it('tool calling through an OpenAI channel, JSON and streamed', async () => {
    const r = await openai.chat.completions.create({
      model: 'gpt',
      messages: [{ role: 'user', content: 'Paris?' }],
      tools: [weatherTool],
    });
    const call = r.choices[0]!.message.tool_calls![0]!;
    expect(r.choices[0]!.finish_reason).toBe('tool_calls');
    expect(call.type === 'function' && call.function.name).toBe('get_weather');
    expect(JSON.parse(call.type === 'function' ? call.function.arguments : '{}')).toEqual({
      query: 'Paris?',
    });

    const runner = openai.chat.completions.stream({
      model: 'gpt',
      messages: [{ role: 'user', content: 'Rome?' }],
      tools: [weatherTool],
    });
    const final = await runner.finalChatCompletion();
    const sc = final.choices[0]!.message.tool_calls![0]!;
    expect(sc.type === 'function' && JSON.parse(sc.function.arguments)).toEqual({ query: 'Rome?' });
  });

  it('chat and tools through an Anthropic channel (translated both ways), JSON and streamed', async () => {
    const r = await openai.chat.completions.create({
      model: 'claude',
      messages: [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: 'Hi Claude' },
      ],
      max_tokens: 100,
    });
    expect(r.model).toBe('claude');
    expect(r.choices[0]!.message.content).toBe('Hello from fake-anthropic: Hi Claude');
    expect(r.choices[0]!.finish_reason).toBe('stop');
    expect(r.usage!.prompt_tokens).toBeGreaterThan(0);
    const sent = fa.requests.at(-1)!;
    expect(sent.body).toMatchObject({ model: 'claude-3-5-haiku', system: 'You are terse.', max_tokens: 100 });
    expect(sent.headers['x-api-key']).toBe('up-anthropic-secret');

    const stream = await openai.chat.completions.create({
      model: 'claude',
      messages: [{ role: 'user', content: 'Stream Claude' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | undefined;
    let finish: string | null | undefined;
    for await (const c of stream) {
      text += c.choices[0]?.delta?.content ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
      if (c.usage) usage = c.usage;
    }
    expect(text).toBe('Hello from fake-anthropic: Stream Claude');
    expect(finish).toBe('stop');
    expect(usage!.prompt_tokens).toBeGreaterThan(0);
    expect(usage!.completion_tokens).toBeGreaterThan(0);

    const tr = await openai.chat.completions.create({
      model: 'claude',
      messages: [{ role: 'user', content: 'Oslo?' }],
      tools: [weatherTool],
    });
    const tc = tr.choices[0]!.message.tool_calls![0]!;
    expect(tr.choices[0]!.finish_reason).toBe('tool_calls');
    expect(tc.type === 'function' && JSON.parse(tc.function.arguments)).toEqual({ query: 'Oslo?' });

    const sr = await openai.chat.completions
      .stream({ model: 'claude', messages: [{ role: 'user', content: 'Lima?' }], tools: [weatherTool] })
      .finalChatCompletion();
    const stc = sr.choices[0]!.message.tool_calls![0]!;
    expect(stc.type === 'function' && stc.function.name).toBe('get_weather');
    expect(stc.type === 'function' && JSON.parse(stc.function.arguments)).toEqual({ query: 'Lima?' });

    // the tool result goes back as a tool_result block
    const follow = await openai.chat.completions.create({
      model: 'claude',
      messages: [
        { role: 'user', content: 'Oslo?' },
        {
          role: 'assistant',
          content: null,
          tool_calls: [
            { id: tc.id, type: 'function', function: { name: 'get_weather', arguments: '{"query":"Oslo"}' } },
          ],
        },
        { role: 'tool', tool_call_id: tc.id, content: 'sunny' },
      ],
      tools: [weatherTool],
    });
    expect(follow.choices[0]!.message.content).toBe('Tool said: sunny');
  });

  it('refuses what cannot be translated to Anthropic with a clear 400', async () => {
    const err = await openai.chat.completions
      .create({ model: 'claude', messages: [{ role: 'user', content: 'x' }], n: 2 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).code).toBe('unsupported_parameter');
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).param).toBe('n');
  });

  it('embeddings, float and base64', async () => {
    const r = await openai.embeddings.create({ model: 'emb', input: ['a', 'b'] });
    expect(r.data).toHaveLength(2);
    expect(r.model).toBe('emb');
    expect(r.data[0]!.embedding.length).toBeGreaterThan(0);
    const b = await openai.embeddings.create({ model: 'emb', input: 'a', encoding_format: 'base64' });
    expect(typeof b.data[0]!.embedding).toBe('string');
  });

  it('embeddings on an alias that only has Anthropic channels is a 400 unsupported_operation', async () => {
    const err = await openai.embeddings.create({ model: 'claude', input: 'a' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as { code: string }).code).toBe('unsupported_operation');
  });

  it('models list shows the aliases this key may use, and only those', async () => {
    const ids = [];
    for await (const m of openai.models.list()) ids.push(m.id);
    expect(ids.sort()).toEqual(['claude', 'emb', 'gpt']);
    const hidden = await openai.chat.completions
      .create({ model: 'hidden', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(hidden).toBeInstanceOf(OpenAI.NotFoundError);
  });
});

describe('anthropic client on /v1/messages', () => {
  it('messages JSON and streamed through an Anthropic channel (passthrough)', async () => {
    const m = await anthropic.messages.create({
      model: 'claude',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'Hey' }],
    });
    expect(m.model).toBe('claude');
    expect(m.content[0]).toMatchObject({ type: 'text', text: 'Hello from fake-anthropic: Hey' });
    expect(m.usage.input_tokens).toBeGreaterThan(0);

    const s = anthropic.messages.stream({
      model: 'claude',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'Stream hey' }],
    });
    const texts: string[] = [];
    s.on('text', (t) => texts.push(t));
    const fin = await s.finalMessage();
    expect(texts.join('')).toBe('Hello from fake-anthropic: Stream hey');
    expect(fin.usage.input_tokens).toBeGreaterThan(0);
    expect(fin.usage.output_tokens).toBeGreaterThan(0);
  });

  it('messages served by an OpenAI channel (translated), JSON, streamed and tools', async () => {
    const m = await anthropic.messages.create({
      model: 'gpt',
      max_tokens: 64,
      system: 'sys',
      messages: [{ role: 'user', content: 'Hola' }],
    });
    expect(m.content[0]).toMatchObject({ type: 'text', text: 'Hello from fake-openai: Hola' });
    expect(m.stop_reason).toBe('end_turn');
    const sent = fo.requests.at(-1)!.body as { messages: Array<{ role: string }>; model: string };
    expect(sent.model).toBe('gpt-4o-mini');
    expect(sent.messages[0]!.role).toBe('system');

    const s = anthropic.messages.stream({
      model: 'gpt',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'Stream hola' }],
    });
    const fin = await s.finalMessage();
    expect(fin.content[0]).toMatchObject({ type: 'text', text: 'Hello from fake-openai: Stream hola' });
    expect(fin.usage.output_tokens).toBeGreaterThan(0);

    const tools = [
      {
        name: 'get_weather',
        description: 'w',
        input_schema: { type: 'object' as const, properties: { query: { type: 'string' } } },
      },
    ];
    const t = await anthropic.messages.create({
      model: 'gpt',
      max_tokens: 64,
      tools,
      messages: [{ role: 'user', content: 'Kyiv?' }],
    });
    expect(t.stop_reason).toBe('tool_use');
    expect(t.content.find((b) => b.type === 'tool_use')).toMatchObject({
      name: 'get_weather',
      input: { query: 'Kyiv?' },
    });
    const st = await anthropic.messages
      .stream({ model: 'gpt', max_tokens: 64, tools, messages: [{ role: 'user', content: 'Baku?' }] })
      .finalMessage();
    expect(st.content.find((b) => b.type === 'tool_use')).toMatchObject({
      name: 'get_weather',
      input: { query: 'Baku?' },
    });
  });

  it('errors come back in Anthropic shape', async () => {
    const err = await anthropic.messages
      .create({ model: 'nope', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.NotFoundError);
    expect((err as { error: { type: string; error: { type: string } } }).error.error.type).toBe(
      'not_found_error',
    );
  });
});

describe('secrets', () => {
  it('no sk and no upstream credential ever appears in the logs', () => {
    const all = gw.logs.lines.join('\n');
    expect(all.length).toBeGreaterThan(0);
    expect(all).not.toContain(sk);
    expect(all).not.toContain('up-openai-secret');
    expect(all).not.toContain('up-anthropic-secret');
  });
});
