/**
 * The official `openai` and `@anthropic-ai/sdk` clients against a gateway on the embedded default
 * (PGlite + in-process coordination), served by the fake OpenAI and Anthropic upstreams.
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertAlias, insertApp, insertChannel, insertKey } from '../../src/config/repo.js';
import { startFakeAnthropic, startFakeOpenAI, startFakeRerank } from '../../fakes/index.js';
import type { FakeUpstream } from '../../fakes/common.js';
import { openTestDb, startTestGateway } from '../helpers.js';

let fo: FakeUpstream;
let fa: FakeUpstream;
/** Rerank upstreams (Jina's format and Cohere's v2), reached with a key of their own (`skRerank`). */
let fj: FakeUpstream;
let fc: FakeUpstream;
let skRerank: string;
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
  fj = await startFakeRerank({ flavor: 'jina', apiKey: 'up-jina-secret' });
  fc = await startFakeRerank({ flavor: 'cohere', apiKey: 'up-cohere-secret' });
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
  await insertChannel(dbh.db, {
    code: 'jina',
    provider: 'openai_compatible',
    baseUrl: fj.url + '/v1',
    credential: 'up-jina-secret',
  });
  await insertChannel(dbh.db, {
    code: 'coh',
    provider: 'cohere',
    baseUrl: fc.url + '/v2',
    credential: 'up-cohere-secret',
  });
  await insertAlias(dbh.db, { name: 'rr', tiers: [[{ channel: 'jina', model: 'jina-reranker-v2' }]] });
  await insertAlias(dbh.db, { name: 'rr-cohere', tiers: [[{ channel: 'coh', model: 'rerank-v3.5' }]] });
  await insertAlias(dbh.db, { name: 'gpt', tiers: [[{ channel: 'oai', model: 'gpt-4o-mini' }]] });
  await insertAlias(dbh.db, { name: 'claude', tiers: [[{ channel: 'ant', model: 'claude-3-5-haiku' }]] });
  await insertAlias(dbh.db, { name: 'emb', tiers: [[{ channel: 'oai', model: 'text-embedding-3-small' }]] });
  await insertAlias(dbh.db, { name: 'hidden', tiers: [[{ channel: 'oai', model: 'x' }]] });
  const app = await insertApp(dbh.db, 'e2e');
  ({ sk } = await insertKey(dbh.db, app, { allowedAliases: ['gpt', 'claude', 'emb'] }));
  ({ sk: skRerank } = await insertKey(dbh.db, app, { allowedAliases: ['rr', 'rr-cohere'] }));
  gw = await startTestGateway({}, { dbh });
  openai = new OpenAI({ apiKey: sk, baseURL: gw.url + '/v1', maxRetries: 0 });
  anthropic = new Anthropic({ apiKey: sk, baseURL: gw.url, maxRetries: 0 });
}, 60_000);

afterAll(async () => {
  await gw?.close();
  await gw?.dbh.close();
  await fo?.close();
  await fa?.close();
  await fj?.close();
  await fc?.close();
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

describe('openai client: legacy completions and moderations', () => {
  it('completions.create (JSON) passes through to an OpenAI channel', async () => {
    const { data: r, response } = await openai.completions
      .create({ model: 'gpt', prompt: 'Once upon a time', max_tokens: 16 })
      .withResponse();
    expect(r.object).toBe('text_completion');
    expect(r.model).toBe('gpt');
    expect(r.choices[0]!.text).toBe('Hello from fake-openai: Once upon a time');
    expect(r.usage!.prompt_tokens).toBeGreaterThan(0);
    expect(response.headers.get('x-anima-channel')).toBe('oai');
    const up = fo.requests.at(-1)!;
    expect(up.path).toBe('/v1/completions');
    expect((up.body as { model: string }).model).toBe('gpt-4o-mini');
  });

  it('completions.create streamed: text chunks, usage only when asked (the upstream is always asked)', async () => {
    let text = '';
    const plain = await openai.completions.create({ model: 'gpt', prompt: 'Stream it', stream: true });
    const chunks = [];
    for await (const c of plain) {
      chunks.push(c);
      expect(c.model).toBe('gpt');
      text += c.choices[0]?.text ?? '';
    }
    expect(text).toBe('Hello from fake-openai: Stream it');
    expect(chunks.every((c) => c.usage === undefined)).toBe(true);
    expect((fo.requests.at(-1)!.body as { stream_options: unknown }).stream_options).toEqual({
      include_usage: true,
    });
    const withUsage = await openai.completions.create({
      model: 'gpt',
      prompt: 'Again',
      stream: true,
      stream_options: { include_usage: true },
    });
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const c of withUsage) if (c.usage) usage = c.usage;
    expect(usage?.completion_tokens).toBeGreaterThan(0);
  });

  it('completions on an Anthropic channel go through chat: JSON and streamed, as text_completion', async () => {
    const r = await openai.completions.create({ model: 'claude', prompt: 'Hi Claude', max_tokens: 32 });
    expect(r.object).toBe('text_completion');
    expect(r.model).toBe('claude');
    expect(r.choices[0]!.text).toBe('Hello from fake-anthropic: Hi Claude');
    expect(r.choices[0]!.finish_reason).toBe('stop');
    expect(r.usage!.completion_tokens).toBeGreaterThan(0);
    const up = fa.requests.at(-1)!;
    expect(up.path).toBe('/v1/messages');
    expect((up.body as { messages: unknown }).messages).toEqual([{ role: 'user', content: 'Hi Claude' }]);

    const s = await openai.completions.create({
      model: 'claude',
      prompt: 'Stream Claude',
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | undefined;
    let finish: string | null | undefined;
    for await (const c of s) {
      expect(c.object).toBe('text_completion');
      text += c.choices[0]?.text ?? '';
      finish ??= c.choices[0]?.finish_reason;
      if (c.usage) usage = c.usage;
    }
    expect(text).toBe('Hello from fake-anthropic: Stream Claude');
    expect(finish).toBe('stop');
    expect(usage?.prompt_tokens).toBeGreaterThan(0);
  });

  it('completions that chat cannot express are refused by name on an Anthropic channel', async () => {
    const err = await openai.completions
      .create({ model: 'claude', prompt: ['one', 'two'] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as { code: string; param: string }).code).toBe('unsupported_parameter');
    expect((err as { param: string }).param).toBe('prompt');
  });

  it('moderations.create on an OpenAI channel: results with categories, scores and applied input types', async () => {
    const r = await openai.moderations.create({ model: 'gpt', input: ['I will kill the process', 'hello'] });
    expect(r.results).toHaveLength(2);
    expect(r.results[0]!.flagged).toBe(true);
    expect(r.results[0]!.categories.violence).toBe(true);
    expect(r.results[1]!.flagged).toBe(false);
    expect(r.results[1]!.category_scores.violence).toBeLessThan(0.5);
    expect(r.results[0]!.category_applied_input_types.violence).toEqual(['text']);
    expect(fo.requests.at(-1)!.path).toBe('/v1/moderations');
  });

  it('bad completions and moderations bodies get OpenAI-shaped 400s naming the field', async () => {
    const bad = await openai.completions
      .create({ model: 'gpt', prompt: { x: 1 } as never })
      .catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(OpenAI.BadRequestError);
    expect((bad as { param: string }).param).toBe('prompt');
    const badMod = await openai.moderations
      .create({ model: 'gpt', input: 42 as never })
      .catch((e: unknown) => e);
    expect(badMod).toBeInstanceOf(OpenAI.BadRequestError);
    expect((badMod as { param: string }).param).toBe('input');
  });
});

describe('anthropic client: messages.countTokens', () => {
  it('on an Anthropic channel: the upstream count, not marked as an estimate', async () => {
    const { data, response } = await anthropic.messages
      .countTokens({ model: 'claude', messages: [{ role: 'user', content: 'Count me please' }] })
      .withResponse();
    expect(data.input_tokens).toBeGreaterThan(0);
    expect(response.headers.get('anima-estimate')).toBeNull();
    expect(fa.requests.at(-1)!.path).toBe('/v1/messages/count_tokens');
    expect((fa.requests.at(-1)!.body as { model: string }).model).toBe('claude-3-5-haiku');
  });

  it('on an OpenAI channel: counted locally and marked anima-estimate: true (no upstream call)', async () => {
    const before = fo.stats.requests;
    const { data, response } = await anthropic.messages
      .countTokens({
        model: 'gpt',
        system: 'You are terse.',
        messages: [{ role: 'user', content: 'Count me please' }],
      })
      .withResponse();
    expect(data.input_tokens).toBeGreaterThan(5);
    expect(response.headers.get('anima-estimate')).toBe('true');
    expect(fo.stats.requests).toBe(before);
  });

  it('a bad body gets an Anthropic-shaped 400', async () => {
    const err = await anthropic.messages
      .countTokens({ model: 'claude', messages: [] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.BadRequestError);
    expect((err as { error: { error: { type: string; message: string } } }).error.error).toMatchObject({
      type: 'invalid_request_error',
    });
  });
});

describe('rerank (no SDK method: plain fetch in Cohere/Jina shape)', () => {
  const rerank = (body: unknown) =>
    fetch(gw.url + '/v1/rerank', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${skRerank}` },
      body: JSON.stringify(body),
    });
  const docs = ['Berlin is in Germany', 'Paris is the capital of France', { text: 'France has wine' }];

  it('on a Jina-style channel: passthrough, documents returned, model renamed, tokens reported', async () => {
    const r = await rerank({ model: 'rr', query: 'capital of France', documents: docs, top_n: 2 });
    expect(r.status).toBe(200);
    const b = (await r.json()) as any;
    expect(b.model).toBe('rr');
    expect(b.results).toHaveLength(2);
    expect(b.results[0]).toMatchObject({ index: 1, document: { text: 'Paris is the capital of France' } });
    expect(b.results[0].relevance_score).toBeGreaterThan(b.results[1].relevance_score);
    expect(b.usage.total_tokens).toBeGreaterThan(0);
    expect((fj.requests.at(-1)!.body as { model: string }).model).toBe('jina-reranker-v2');
  });

  it("on Cohere's v2 API: documents sent as strings, return_documents honoured by the gateway", async () => {
    const r = await rerank({
      model: 'rr-cohere',
      query: 'capital of France',
      documents: docs,
      return_documents: true,
    });
    expect(r.status).toBe(200);
    const b = (await r.json()) as any;
    expect(b.results[0]).toMatchObject({ index: 1, document: { text: 'Paris is the capital of France' } });
    expect(b.meta.billed_units.search_units).toBe(1);
    const up = fc.requests.at(-1)!;
    expect(up.path).toBe('/v2/rerank');
    expect(up.body).toEqual({
      model: 'rerank-v3.5',
      query: 'capital of France',
      documents: ['Berlin is in Germany', 'Paris is the capital of France', 'France has wine'],
    });
  });

  it('bad input is a 400 naming the field', async () => {
    for (const [body, param] of [
      [{ model: 'rr', documents: ['a'] }, 'query'],
      [{ model: 'rr', query: 'q', documents: [] }, 'documents'],
      [{ model: 'rr', query: 'q', documents: [1] }, 'documents'],
      [{ model: 'rr', query: 'q', documents: ['a'], top_n: 0 }, 'top_n'],
    ] as const) {
      const r = await rerank(body);
      expect(r.status).toBe(400);
      expect(((await r.json()) as any).error.param).toBe(param);
    }
  });
});

describe('secrets', () => {
  it('no sk and no upstream credential ever appears in the logs', () => {
    const all = gw.logs.lines.join('\n');
    expect(all.length).toBeGreaterThan(0);
    expect(all).not.toContain(sk);
    expect(all).not.toContain('up-openai-secret');
    expect(all).not.toContain('up-anthropic-secret');
    expect(all).not.toContain('up-jina-secret');
    expect(all).not.toContain('up-cohere-secret');
  });
});
