/**
 * API breadth end to end on real PostgreSQL and Redis, with the official clients: the Responses API
 * (native on OpenAI channels, translated for chat-only and Anthropic channels), Gemini inbound (served by
 * a Gemini channel natively and by OpenAI and Anthropic channels through translation) and a Gemini
 * upstream for OpenAI clients, audio speech and transcription, image edits, and the exact-match response
 * cache. Every new route refuses a wrong key, enforces the key's quotas and books a balanced journal.
 */
import { GoogleGenAI } from '@google/genai';
import OpenAI, { toFile } from 'openai';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { startFakeAnthropic, startFakeGemini, startFakeOpenAI } from '../../fakes/index.js';
import { cacheKey } from '../../src/relay/response-cache.js';
import { adminApi, waitFor } from '../helpers.js';
import { ServiceSuite, TOKEN_PRICES, type TestGateway, newAppKey, openaiChannel } from '../helpers-suite.js';

let S: ServiceSuite;
let G: TestGateway;
let oa: FakeUpstream;
let an: FakeUpstream;
let gm: FakeUpstream;
let bad: FakeUpstream;
let db: pg.Pool;
let appA: { app: string; sk: string };
let appB: { app: string; sk: string };
let limited: { app: string; sk: string };
const admin = adminApi(() => G.url);

const openai = (sk = appA.sk) => new OpenAI({ baseURL: G.url + '/v1', apiKey: sk, maxRetries: 0 });
const genai = (sk = appA.sk) => new GoogleGenAI({ apiKey: sk, httpOptions: { baseUrl: G.url } });

async function journals(where: string, args: unknown[] = []) {
  const r = await db.query(
    `SELECT j.id, j.request_id, j.alias, j.channel, j.usage,
       (SELECT json_agg(json_build_object('a', a.code, 'd', e.debit::text, 'c', e.credit::text)) FROM ledger_posting e JOIN ledger_account a ON a.id = e.account_id WHERE e.journal_id = j.id) AS entries
     FROM ledger_journal j WHERE j.kind = 'sale' AND ${where} ORDER BY j.occurred_at`,
    args,
  );
  return r.rows as Array<{
    request_id: string;
    alias: string;
    channel: string;
    usage: any;
    entries: Array<{ a: string; d: string; c: string }>;
  }>;
}
const revenue = (j: { entries: Array<{ a: string; d: string; c: string }> }) =>
  j.entries.filter((e) => e.a === 'revenue').reduce((s, e) => s + BigInt(e.c) - BigInt(e.d), 0n);

async function journalOf(requestId: string | null) {
  expect(requestId).toBeTruthy();
  await G.billing!.writer.flush();
  let rows: Awaited<ReturnType<typeof journals>> = [];
  await waitFor(
    async () => {
      await G.billing!.writer.flush();
      rows = await journals('j.request_id = $1', [requestId]);
      return rows.length > 0;
    },
    5_000,
    50,
  );
  expect(rows).toHaveLength(1);
  const j = rows[0]!;
  const debit = j.entries.reduce((s, e) => s + BigInt(e.d), 0n);
  const credit = j.entries.reduce((s, e) => s + BigInt(e.c), 0n);
  expect(debit).toBe(credit);
  return j;
}

beforeAll(async () => {
  S = await ServiceSuite.open();
  [oa, an, gm, bad] = await Promise.all([
    startFakeOpenAI({ name: 'oa' }),
    startFakeAnthropic({ name: 'an' }),
    startFakeGemini({ name: 'gm' }),
    startFakeOpenAI({ name: 'bad' }),
  ]);
  bad.setFault({ status: 503 });
  G = await S.gateway();
  db = S.pool();
  await openaiChannel(admin, 'oa', oa);
  await openaiChannel(admin, 'oa-chat', oa, { nativeResponses: false });
  await admin('POST', '/channels', { code: 'an', provider: 'anthropic', base_url: an.url, credential: 'k' });
  await admin('POST', '/channels', {
    code: 'gm',
    provider: 'gemini',
    base_url: gm.url + '/v1beta',
    credential: 'gk',
  });
  await openaiChannel(admin, 'bad', bad);
  const alias = (name: string, channel: string, model: string, extra: Record<string, unknown> = {}) =>
    admin('POST', '/aliases', { name, chain: [{ targets: [{ channel, model }] }], ...extra });
  await alias('gpt', 'oa', 'gpt-4o-mini');
  await alias('gpt-viachat', 'oa-chat', 'gpt-4o-mini');
  await alias('claude', 'an', 'claude-sonnet-4');
  await alias('gem', 'gm', 'gemini-2.5-flash');
  await alias('tts', 'oa', 'gpt-4o-mini-tts');
  await alias('whisper', 'oa', 'whisper-1');
  await alias('img', 'oa', 'gpt-image-1');
  await alias('cached', 'oa', 'gpt-4o-mini', { cache_ttl_s: 2 });
  await alias('gem-embed', 'gm', 'gemini-embedding-001');
  await alias('oa-embed', 'oa', 'text-embedding-3-small');
  // A chain whose first channel answers 503: every operation must fall back to the second.
  await admin('POST', '/aliases', {
    name: 'fb',
    chain: [
      { targets: [{ channel: 'bad', model: 'x' }] },
      { targets: [{ channel: 'oa', model: 'gpt-image-1' }] },
    ],
  });
  for (const a of ['gpt', 'gpt-viachat', 'claude', 'gem', 'gem-embed', 'oa-embed'])
    await admin('POST', '/prices', { alias: a, ...TOKEN_PRICES });
  await admin('POST', '/prices', { alias: 'tts', sale_per_mchar: 30_000_000, cost_per_mchar: 15_000_000 });
  await admin('POST', '/prices', {
    alias: 'whisper',
    sale_per_audio_second: 200,
    cost_per_audio_second: 100,
  });
  await admin('POST', '/prices', { alias: 'img', sale_per_image: 50_000, cost_per_image: 40_000 });
  await admin('POST', '/prices', { alias: 'cached', ...TOKEN_PRICES, sale_per_cache_hit: 100 });
  const mk = (name: string) => newAppKey(admin, { name });
  appA = await mk('a');
  appB = await mk('b');
  const l = await mk('limited');
  await admin('POST', '/quotas', { scope: 'key', scope_id: l.keyId, qps: 0.01, qps_burst: 1 });
  limited = l;
  await waitFor(
    () =>
      G.config.alias('cached') &&
      G.config.price('img', null) &&
      G.config.channel('gm') &&
      G.config.app(l.app) &&
      G.config.quota('key', l.keyId),
    3_000,
    5,
  );
}, 60_000);

afterAll(() => S?.close(oa, an, gm, bad));

describe('Responses API', () => {
  it('JSON: native on an OpenAI channel, through chat on a chat-only and on an Anthropic channel', async () => {
    const cases: Array<[string, FakeUpstream, string]> = [
      ['gpt', oa, '/v1/responses'],
      ['gpt-viachat', oa, '/v1/chat/completions'],
      ['claude', an, '/v1/messages'],
    ];
    for (const [model, fake, path] of cases) {
      fake.resetStats();
      const { data: r, response } = await openai()
        .responses.create({
          model,
          input: 'Tell me about gateways',
          instructions: 'Be brief.',
          max_output_tokens: 64,
        })
        .withResponse();
      expect(fake.stats.byPath[path], model).toBe(1);
      expect(r.object).toBe('response');
      expect(r.status).toBe('completed');
      expect(r.model).toBe(model);
      expect(r.output_text).toContain('Tell me about gateways');
      expect(r.usage!.input_tokens).toBeGreaterThan(0);
      expect(r.usage!.output_tokens).toBeGreaterThan(0);
      const j = await journalOf(response.headers.get('x-request-id'));
      expect(j.alias).toBe(model);
      expect(j.usage.output_tokens).toBe(r.usage!.output_tokens);
    }
  });

  it('streams typed events on every channel kind, ending in response.completed with usage', async () => {
    for (const model of ['gpt', 'gpt-viachat', 'claude', 'gem']) {
      const stream = await openai().responses.create({
        model,
        input: [{ role: 'user', content: 'stream this please' }],
        stream: true,
      });
      const types: string[] = [];
      let text = '';
      let final: OpenAI.Responses.Response | null = null;
      for await (const ev of stream) {
        types.push(ev.type);
        if (ev.type === 'response.output_text.delta') text += ev.delta;
        if (ev.type === 'response.completed') final = ev.response;
      }
      expect(types[0], model).toBe('response.created');
      expect(types).toContain('response.output_item.added');
      expect(types).toContain('response.output_text.done');
      expect(types.at(-1)).toBe('response.completed');
      expect(text).toContain('stream this please');
      expect(final!.output_text ?? (final!.output[0] as any).content[0].text).toBe(text);
      expect(final!.usage!.output_tokens).toBeGreaterThan(0);
    }
  });

  it('function tools translate both ways through the pivot', async () => {
    const tools: OpenAI.Responses.Tool[] = [
      {
        type: 'function',
        name: 'lookup',
        description: 'look it up',
        parameters: { type: 'object', properties: { query: { type: 'string' } } },
        strict: false,
      },
    ];
    for (const model of ['claude', 'gem', 'gpt-viachat']) {
      const r = await openai().responses.create({ model, input: 'find anima', tools });
      const call = r.output.find((o) => o.type === 'function_call') as
        OpenAI.Responses.ResponseFunctionToolCall | undefined;
      expect(call, model).toBeDefined();
      expect(call!.name).toBe('lookup');
      expect(JSON.parse(call!.arguments)).toEqual({ query: 'find anima' });
      const r2 = await openai().responses.create({
        model,
        tools,
        input: [
          { role: 'user', content: 'find anima' },
          { type: 'function_call', call_id: call!.call_id, name: 'lookup', arguments: call!.arguments },
          { type: 'function_call_output', call_id: call!.call_id, output: 'found it' },
        ],
      });
      // (A Gemini upstream gets the text result as {"output": "found it"}, and its fake echoes that JSON.)
      expect(r2.output_text, model).toMatch(/Tool said: .*found it/);
    }
  });

  it('previous_response_id: refused with a 400 where translated, passed through where native', async () => {
    const err = await openai()
      .responses.create({ model: 'claude', input: 'again', previous_response_id: 'resp_123' })
      .catch((e: unknown) => e as InstanceType<typeof OpenAI.APIError>);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.APIError>).message).toMatch(/previous_response_id/);
    oa.resetStats();
    const ok = await openai().responses.create({
      model: 'gpt',
      input: 'again',
      previous_response_id: 'resp_123',
    });
    expect(ok.status).toBe('completed');
    expect((oa.requests.at(-1)!.body as { previous_response_id?: string }).previous_response_id).toBe(
      'resp_123',
    );
  });
});

describe('Responses are not stored', () => {
  it('retrieve, delete and cancel say so with a 404 in the OpenAI shape', async () => {
    for (const [method, path] of [
      ['GET', '/v1/responses/resp_1'],
      ['DELETE', '/v1/responses/resp_1'],
      ['POST', '/v1/responses/resp_1/cancel'],
      ['GET', '/v1/responses/resp_1/input_items'],
    ] as const) {
      const r = await fetch(G.url + path, { method, headers: { authorization: `Bearer ${appA.sk}` } });
      expect(r.status, path).toBe(404);
      expect(((await r.json()) as { error: { message: string } }).error.message).toMatch(
        /does not store responses/,
      );
    }
    const anon = await fetch(G.url + '/v1/responses/resp_1');
    expect(anon.status).toBe(401);
  });
});

describe('Gemini', () => {
  it('models.list and models.get through @google/genai name the aliases', async () => {
    const m = await genai().models.get({ model: 'gem' });
    expect(m.name).toBe('models/gem');
    const names: string[] = [];
    for await (const x of await genai().models.list()) names.push(x.name!);
    expect(names).toContain('models/claude');
  });

  it('@google/genai generateContent: native on a Gemini channel, translated on OpenAI and Anthropic channels', async () => {
    for (const [model, fake] of [
      ['gem', gm],
      ['gpt', oa],
      ['claude', an],
    ] as const) {
      fake.resetStats();
      const r = await genai().models.generateContent({
        model,
        contents: 'Hello Gemini route',
        config: { systemInstruction: 'be terse', maxOutputTokens: 64 },
      });
      expect(fake.stats.requests, model).toBe(1);
      expect(r.text).toContain('Hello Gemini route');
      expect(r.usageMetadata!.promptTokenCount).toBeGreaterThan(0);
      expect(r.usageMetadata!.candidatesTokenCount).toBeGreaterThan(0);
      expect(r.candidates![0]!.finishReason).toBe('STOP');
    }
  });

  it('@google/genai streamGenerateContent (alt=sse) on a Gemini and an OpenAI channel', async () => {
    for (const model of ['gem', 'gpt', 'claude']) {
      const stream = await genai().models.generateContentStream({ model, contents: 'stream gemini please' });
      let text = '';
      let chunks = 0;
      let last: any = null;
      for await (const c of stream) {
        chunks++;
        text += c.text ?? '';
        last = c;
      }
      expect(chunks, model).toBeGreaterThan(1);
      expect(text).toContain('stream gemini please');
      expect(last.usageMetadata.candidatesTokenCount).toBeGreaterThan(0);
    }
  });

  it('function calling through @google/genai on an OpenAI channel', async () => {
    const r = await genai().models.generateContent({
      model: 'gpt',
      contents: 'find gemini',
      config: {
        tools: [
          {
            functionDeclarations: [
              {
                name: 'lookup',
                description: 'look up',
                parametersJsonSchema: { type: 'object', properties: { query: { type: 'string' } } },
              },
            ],
          },
        ],
      },
    });
    expect(r.functionCalls?.[0]?.name).toBe('lookup');
    expect(r.functionCalls?.[0]?.args).toEqual({ query: 'find gemini' });
  });

  it('@google/genai embedContent: native on a Gemini channel, through /embeddings on an OpenAI channel, billed', async () => {
    for (const [model, fake, dims] of [
      ['gem-embed', gm, 768],
      ['oa-embed', oa, 16],
    ] as const) {
      fake.resetStats();
      const r = await genai().models.embedContent({
        model,
        contents: ['embed me', 'and me'],
        config: model === 'oa-embed' ? { outputDimensionality: 16 } : {},
      });
      expect(r.embeddings, model).toHaveLength(2);
      expect(r.embeddings![0]!.values).toHaveLength(dims);
      expect(r.embeddings![0]!.values).not.toEqual(r.embeddings![1]!.values);
      expect(fake.stats.requests).toBe(1);
    }
    // One request through plain HTTP (embedContent, single), and its balanced journal with the tokens counted.
    const one = await fetch(G.url + '/v1beta/models/oa-embed:embedContent', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-goog-api-key': appA.sk },
      body: JSON.stringify({ content: { parts: [{ text: 'just one' }] } }),
    });
    expect(one.status).toBe(200);
    expect(
      ((await one.json()) as { embedding: { values: number[] } }).embedding.values.length,
    ).toBeGreaterThan(0);
    const j = await journalOf(one.headers.get('x-request-id'));
    expect(j.usage.input_tokens).toBeGreaterThan(0);
    const nat = await fetch(G.url + '/v1beta/models/gem-embed:embedContent', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-goog-api-key': appA.sk },
      body: JSON.stringify({ content: { parts: [{ text: 'counted locally' }] } }),
    });
    expect(nat.status).toBe(200);
    expect((await journalOf(nat.headers.get('x-request-id'))).usage.input_tokens).toBeGreaterThan(0);
  });

  it('an OpenAI client is served by a Gemini channel (JSON and stream), billed from its usage', async () => {
    gm.resetStats();
    const { data: c, response } = await openai()
      .chat.completions.create({ model: 'gem', messages: [{ role: 'user', content: 'openai to gemini' }] })
      .withResponse();
    expect(c.choices[0]!.message.content).toContain('openai to gemini');
    expect(c.usage!.completion_tokens).toBeGreaterThan(0);
    const j = await journalOf(response.headers.get('x-request-id'));
    expect(j.channel).toBe('gm');
    const s = await openai().chat.completions.create({
      model: 'gem',
      messages: [{ role: 'user', content: 'stream to gemini' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | null | undefined = null;
    for await (const ch of s) {
      text += ch.choices[0]?.delta?.content ?? '';
      if (ch.usage) usage = ch.usage;
    }
    expect(text).toContain('stream to gemini');
    expect(usage!.completion_tokens).toBeGreaterThan(0);
    expect(gm.stats.requests).toBe(2);
    // The channel's credential went as x-goog-api-key, never to the client.
    expect(gm.requests.at(-1)!.headers['x-goog-api-key']).toBe('gk');
  });

  it('Gemini clients get Gemini-shaped errors: wrong key, unknown model', async () => {
    const bad = await fetch(G.url + '/v1beta/models/gem:generateContent?key=sk-wrong-key-000000', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ contents: [{ parts: [{ text: 'x' }] }] }),
    });
    expect(bad.status).toBe(401);
    const e = (await bad.json()) as { error: { code: number; status: string; message: string } };
    expect(e.error.code).toBe(401);
    expect(e.error.status).toBe('UNAUTHENTICATED');
    const nf = await fetch(G.url + '/v1beta/models/nope:generateContent', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-goog-api-key': appA.sk },
      body: JSON.stringify({ contents: [{ parts: [{ text: 'x' }] }] }),
    });
    expect(nf.status).toBe(404);
    expect(((await nf.json()) as { error: { status: string } }).error.status).toBe('NOT_FOUND');
    // An unknown route answers in the shape of the API its path belongs to, not always OpenAI's.
    const route = await fetch(G.url + '/v1beta/nowhere', { headers: { 'x-goog-api-key': appA.sk } });
    expect(route.status).toBe(404);
    expect(((await route.json()) as { error: { status: string } }).error.status).toBe('NOT_FOUND');
    const msg = await fetch(G.url + '/v1/messages/nowhere', { headers: { 'x-api-key': appA.sk } });
    expect(msg.status).toBe(404);
    expect(((await msg.json()) as { type: string }).type).toBe('error');
  });
});

describe('audio and image edits', () => {
  it('speech: bytes streamed back, billed per character', async () => {
    const input = 'Hello from Anima, spoken aloud.';
    const res = await openai().audio.speech.create({
      model: 'tts',
      input,
      voice: 'alloy',
      response_format: 'wav',
    });
    const bytes = Buffer.from(await res.arrayBuffer());
    expect(res.headers.get('content-type')).toMatch(/audio\/wav/);
    expect(bytes.subarray(0, 4).toString('latin1')).toBe('RIFF');
    const j = await journalOf(res.headers.get('x-request-id'));
    // 31 characters x 30 micro-units per character.
    expect(revenue(j)).toBe(BigInt(input.length * 30));
  });

  it('transcription and translation: multipart upload, JSON, text and srt, billed per second of audio', async () => {
    const audio = Buffer.alloc(48_000, 7); // the fake hears 16 kB per second: 3 seconds
    const c = openai();
    const { data: t, response } = await c.audio.transcriptions
      .create({ model: 'whisper', file: await toFile(audio, 'talk.wav', { type: 'audio/wav' }) })
      .withResponse();
    expect(t.text).toContain('talk.wav');
    const j = await journalOf(response.headers.get('x-request-id'));
    expect(revenue(j)).toBe(3n * 200n);
    const text = await c.audio.transcriptions.create({
      model: 'whisper',
      file: await toFile(audio, 'talk.wav'),
      response_format: 'text',
    });
    expect(typeof text === 'string' ? text : JSON.stringify(text)).toContain('talk.wav');
    const srt = await c.audio.transcriptions.create({
      model: 'whisper',
      file: await toFile(audio, 'talk.wav'),
      response_format: 'srt',
    });
    expect(String(srt)).toMatch(/^1\n00:00:00,000 --> /);
    const { data: tr, response: trRes } = await c.audio.translations
      .create({ model: 'whisper', file: await toFile(audio, 'parle.wav') })
      .withResponse();
    expect(tr.text).toContain('parle.wav');
    // Translations report no usage in json; the duration from verbose_json is what gets billed.
    expect(revenue(await journalOf(trRes.headers.get('x-request-id')))).toBe(3n * 200n);
    // What reached the upstream: the file, and the upstream model name.
    const up = oa.requests.filter((r) => r.path === '/v1/audio/transcriptions').at(-1)!;
    expect(JSON.stringify(up.body)).toContain('whisper-1');
  });

  it('a transcription without a file, or too large, is refused before any upstream call', async () => {
    oa.resetStats();
    const form = new FormData();
    form.set('model', 'whisper');
    const r = await fetch(G.url + '/v1/audio/transcriptions', {
      method: 'POST',
      headers: { authorization: `Bearer ${appA.sk}` },
      body: form,
    });
    expect(r.status).toBe(400);
    expect(((await r.json()) as { error: { param: string } }).error.param).toBe('file');
    const big = new FormData();
    big.set('model', 'whisper');
    big.set('file', new Blob([Buffer.alloc(27 * 1024 * 1024)]), 'big.wav');
    const r2 = await fetch(G.url + '/v1/audio/transcriptions', {
      method: 'POST',
      headers: { authorization: `Bearer ${appA.sk}` },
      body: big,
    });
    expect(r2.status).toBe(413);
    expect(oa.stats.requests).toBe(0);
  });

  it('image edits: images and mask uploaded, billed per image', async () => {
    const png = Buffer.from('89504e470d0a1a0a' + '00'.repeat(64), 'hex');
    const { data: r, response } = await openai()
      .images.edit({
        model: 'img',
        prompt: 'add a hat',
        image: [
          await toFile(png, 'a.png', { type: 'image/png' }),
          await toFile(png, 'b.png', { type: 'image/png' }),
        ],
        mask: await toFile(png, 'm.png', { type: 'image/png' }),
        n: 2,
      })
      .withResponse();
    expect(r.data).toHaveLength(2);
    const j = await journalOf(response.headers.get('x-request-id'));
    expect(revenue(j)).toBe(2n * 50_000n);
  });
});

describe('ASYNC mode', () => {
  it("a Responses and a Gemini request over the key's limit become tasks that complete in their own format", async () => {
    const slow = await startFakeOpenAI({ name: 'slow' });
    try {
      slow.setFault({ latencyMs: 600 });
      await openaiChannel(admin, 'slow', slow);
      await admin('POST', '/aliases', {
        name: 'slowgpt',
        chain: [{ targets: [{ channel: 'slow', model: 'm' }] }],
      });
      const k = await admin('POST', `/apps/${appA.app}/keys`, { name: 'async', queue_mode: 'ASYNC' });
      await admin('POST', '/quotas', { scope: 'key', scope_id: k.key.id, max_concurrency: 1 });
      await waitFor(() => G.config.alias('slowgpt') && G.config.quota('key', k.key.id), 3_000, 5);
      const hdr = { 'content-type': 'application/json', authorization: `Bearer ${k.sk}` };
      // One request holds the key's only slot; the next two are deferred.
      const first = fetch(G.url + '/v1/responses', {
        method: 'POST',
        headers: hdr,
        body: JSON.stringify({ model: 'slowgpt', input: 'first' }),
      });
      await waitFor(() => slow.stats.inFlight === 1, 3_000, 5);
      const deferred = [
        await fetch(G.url + '/v1/responses', {
          method: 'POST',
          headers: hdr,
          body: JSON.stringify({ model: 'slowgpt', input: 'later, please' }),
        }),
        await fetch(G.url + '/v1beta/models/slowgpt:generateContent', {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-goog-api-key': k.sk },
          body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'gemini later' }] }] }),
        }),
      ];
      expect((await first).status).toBe(200);
      const results: Array<Record<string, any>> = [];
      for (const r of deferred) {
        expect(r.status).toBe(202);
        const id = ((await r.json()) as { task_id: string }).task_id;
        let t: Record<string, any> = {};
        await waitFor(
          async () => {
            t = (await (await fetch(G.url + `/v1/tasks/${id}`, { headers: hdr })).json()) as Record<
              string,
              any
            >;
            return t.status === 'succeeded' || t.status === 'failed';
          },
          15_000,
          100,
        );
        expect(t.status).toBe('succeeded');
        results.push(t.result);
      }
      expect(results[0]!.object).toBe('response');
      expect(JSON.stringify(results[0]!.output)).toContain('later, please');
      expect(results[1]!.candidates[0].content.parts[0].text).toContain('gemini later');
    } finally {
      await slow.close();
    }
  }, 30_000);
});

describe('the new operations fall back like chat', () => {
  it('speech, transcription, image edit and Responses skip a failing first channel', async () => {
    const c = openai();
    const png = Buffer.from('89504e470d0a1a0a' + '00'.repeat(64), 'hex');
    const calls: Array<() => Promise<Response>> = [
      () => c.audio.speech.create({ model: 'fb', input: 'fall back', voice: 'alloy' }).asResponse(),
      async () =>
        c.audio.transcriptions
          .create({ model: 'fb', file: await toFile(Buffer.alloc(16_000, 1), 'a.wav') })
          .asResponse(),
      async () =>
        c.images
          .edit({ model: 'fb', prompt: 'hat', image: await toFile(png, 'a.png', { type: 'image/png' }) })
          .asResponse(),
      () => c.responses.create({ model: 'fb', input: 'fall back' }).asResponse(),
    ];
    for (const call of calls) {
      bad.resetStats();
      const r = await call();
      expect(r.status).toBe(200);
      expect(r.headers.get('x-anima-channel')).toBe('oa');
      expect(r.headers.get('x-anima-route')).toMatch(/bad;failed=server_error;status=503/);
      expect(bad.stats.requests).toBe(1);
      await r.arrayBuffer();
    }
  });
});

describe('exact-match response cache', () => {
  const ask = (sk: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}) =>
    fetch(G.url + '/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}`, ...headers },
      body: JSON.stringify({
        model: 'cached',
        messages: [{ role: 'user', content: 'cache me if you can' }],
        ...extra,
      }),
    });

  it('second identical request is served from the cache; another app misses; no-cache skips; TTL expires', async () => {
    oa.resetStats();
    const r1 = await ask(appA.sk, { temperature: 0 });
    expect(r1.headers.get('x-anima-cache')).toBe('miss');
    const b1 = await r1.text();
    // Same request, fields in another order: the same entry.
    const r2 = await fetch(G.url + '/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${appA.sk}` },
      body: JSON.stringify({
        temperature: 0,
        messages: [{ content: 'cache me if you can', role: 'user' }],
        model: 'cached',
      }),
    });
    expect(r2.headers.get('x-anima-cache')).toBe('hit');
    expect(await r2.text()).toBe(b1);
    expect(oa.stats.byPath['/v1/chat/completions']).toBe(1);
    // Billed at the cache price: 100 micro-units, no upstream cost.
    const j = await journalOf(r2.headers.get('x-request-id'));
    expect(revenue(j)).toBe(100n);
    expect(j.entries.some((e) => e.a.startsWith('payable:'))).toBe(false);
    // Another app never sees app A's answers.
    const rb = await ask(appB.sk, { temperature: 0 });
    expect(rb.headers.get('x-anima-cache')).toBe('miss');
    expect(oa.stats.byPath['/v1/chat/completions']).toBe(2);
    // Cache-Control: no-cache goes to the upstream.
    const rn = await ask(appA.sk, { temperature: 0 }, { 'cache-control': 'no-cache' });
    expect(rn.headers.get('x-anima-cache')).toBeNull();
    expect(oa.stats.byPath['/v1/chat/completions']).toBe(3);
    // After the alias's 2 s TTL, a miss again. The TTL is what is under test: the wait ends when the entry
    // is gone from the shared store (read first, so the wait can't pass on a key that was never there).
    const stored = cacheKey(appA.app, 'openai_chat', 'cached', {
      model: 'cached',
      messages: [{ role: 'user', content: 'cache me if you can' }],
      temperature: 0,
    });
    expect(await G.coord.getValue(stored)).not.toBeNull();
    await waitFor(async () => (await G.coord.getValue(stored)) === null, 5_000, 20);
    const r3 = await ask(appA.sk, { temperature: 0 });
    expect(r3.headers.get('x-anima-cache')).toBe('miss');
    expect(oa.stats.byPath['/v1/chat/completions']).toBe(4);
    // The metrics count hits and misses per alias.
    // A request's metrics are recorded once it has settled, just after its answer went out: the scrape
    // waits for r3's to land (a fresh-clone CI run scraped first and saw 2 misses), then checks exactly.
    let scrape = '';
    const misses = /anima_response_cache_total\{alias="cached",result="miss"\} 3\b/;
    await waitFor(
      async () => misses.test((scrape = await (await fetch(G.url + '/actuator/prometheus')).text())),
      3_000,
    ).catch(() => {});
    expect(scrape).toMatch(/anima_response_cache_total\{alias="cached",result="hit"\} 1\b/);
    expect(scrape).toMatch(/anima_response_cache_total\{alias="cached",result="miss"\} 3\b/);
  });

  it('a stream is replayed as the same stream', async () => {
    oa.resetStats();
    const first = await ask(appA.sk, { stream: true, seed: 7 });
    const t1 = await first.text();
    const again = await ask(appA.sk, { stream: true, seed: 7 });
    expect(again.headers.get('x-anima-cache')).toBe('hit');
    expect(again.headers.get('content-type')).toMatch(/text\/event-stream/);
    const t2 = await again.text();
    expect(t2).toBe(t1);
    expect(t2).toContain('data: [DONE]');
    expect(oa.stats.byPath['/v1/chat/completions']).toBe(1);
    // The official client reads the replay like any stream.
    const s = await openai().chat.completions.create({
      model: 'cached',
      messages: [{ role: 'user', content: 'cache me if you can' }],
      stream: true,
      seed: 7,
    });
    let text = '';
    for await (const c of s) text += c.choices[0]?.delta?.content ?? '';
    expect(text).toContain('cache me if you can');
    expect(oa.stats.byPath['/v1/chat/completions']).toBe(1);
  });

  it('opt-in per request on an alias without a cache', async () => {
    oa.resetStats();
    const body = { model: 'gpt', messages: [{ role: 'user', content: 'opt in' }] };
    const h = {
      'content-type': 'application/json',
      authorization: `Bearer ${appA.sk}`,
      'x-anima-cache': '60',
    };
    const a = await fetch(G.url + '/v1/chat/completions', {
      method: 'POST',
      headers: h,
      body: JSON.stringify(body),
    });
    const b = await fetch(G.url + '/v1/chat/completions', {
      method: 'POST',
      headers: h,
      body: JSON.stringify(body),
    });
    expect([a.headers.get('x-anima-cache'), b.headers.get('x-anima-cache')]).toEqual(['miss', 'hit']);
    const plain = await fetch(G.url + '/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${appA.sk}` },
      body: JSON.stringify(body),
    });
    expect(plain.headers.get('x-anima-cache')).toBeNull();
    expect(oa.stats.byPath['/v1/chat/completions']).toBe(2);
  });
});

describe('every new route: wrong key refused, quotas enforced, journals balanced', () => {
  const png = Buffer.from('89504e470d0a1a0a' + '00'.repeat(64), 'hex');
  const routes: Array<{ name: string; send: (sk: string) => Promise<Response> }> = [
    {
      name: 'responses',
      send: (sk) =>
        fetch(G.url + '/v1/responses', {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}` },
          body: JSON.stringify({ model: 'gpt', input: 'hi' }),
        }),
    },
    {
      name: 'gemini',
      send: (sk) =>
        fetch(G.url + '/v1beta/models/gem:generateContent', {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-goog-api-key': sk },
          body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
        }),
    },
    {
      name: 'speech',
      send: (sk) =>
        fetch(G.url + '/v1/audio/speech', {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}` },
          body: JSON.stringify({ model: 'tts', input: 'hi', voice: 'alloy' }),
        }),
    },
    {
      name: 'transcription',
      send: (sk) => {
        const f = new FormData();
        f.set('model', 'whisper');
        f.set('file', new Blob([Buffer.alloc(16_000, 1)]), 'a.wav');
        return fetch(G.url + '/v1/audio/transcriptions', {
          method: 'POST',
          headers: { authorization: `Bearer ${sk}` },
          body: f,
        });
      },
    },
    {
      name: 'image edit',
      send: (sk) => {
        const f = new FormData();
        f.set('model', 'img');
        f.set('prompt', 'hat');
        f.set('image', new Blob([png], { type: 'image/png' }), 'a.png');
        return fetch(G.url + '/v1/images/edits', {
          method: 'POST',
          headers: { authorization: `Bearer ${sk}` },
          body: f,
        });
      },
    },
  ];

  it.each(routes)('$name', async ({ name, send }) => {
    const wrong = await send('sk-anima-not-a-real-key-000000000');
    expect(wrong.status, name).toBe(401);
    expect(((await wrong.json()) as { error: unknown }).error).toBeTruthy();
    // The limited key's requests are refused with a 429 at once past its rate (REJECT mode).
    const first = await send(limited.sk);
    expect(first.status, name).toBe(200);
    await first.arrayBuffer();
    await journalOf(first.headers.get('x-request-id'));
    // GCRA at 0.01 rps with a burst of 1 (plus one interval of tolerance): refused by the third at most.
    const statuses: number[] = [];
    for (let i = 0; i < 2; i++) {
      const r = await send(limited.sk);
      statuses.push(r.status);
      await r.arrayBuffer();
    }
    expect(statuses.at(-1), name).toBe(429);
    // Let the limited key's one-per-100-s window pass for the next route: a new key each time instead.
    const k = await admin('POST', `/apps/${limited.app}/keys`, { name: `k-${name}` });
    await admin('POST', '/quotas', { scope: 'key', scope_id: k.key.id, qps: 0.01, qps_burst: 1 });
    await waitFor(
      () => G.config.quota('key', k.key.id) !== undefined && G.config.keyByHash !== undefined,
      3_000,
      5,
    );
    limited = { app: limited.app, sk: k.sk };
  });

  it('the whole ledger balances', async () => {
    await G.billing!.writer.flush();
    const tb = await admin('GET', '/billing/trial-balance');
    expect(tb.balanced).toBe(true);
    expect(tb.debits_micros).toBe(tb.credits_micros);
    expect(BigInt(tb.debits_micros)).toBeGreaterThan(0n);
  });
});

describe("passthroughs forward the client's own bytes with only the model changed", () => {
  const send = (path: string, text: string, extra: Record<string, string> = {}) =>
    fetch(G.url + path, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${appA.sk}`, ...extra },
      body: text,
    });

  it("OpenAI chat, written as Python's json.dumps writes it: the upstream gets that text, model swapped, include_usage added", async () => {
    const text =
      '{"model": "gpt", "messages": [{"role": "user", "content": "bytes, please"}], "stream": true}';
    const r = await send('/v1/chat/completions', text);
    expect(r.status).toBe(200);
    const sse = await r.text();
    expect(sse).toContain('data: [DONE]');
    expect(sse).not.toContain('"usage":{'); // the client didn't ask for the usage chunk: withheld
    expect(oa.requests.at(-1)!.text).toBe(
      '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "bytes, please"}], "stream": true,"stream_options":{"include_usage":true}}',
    );
  });

  it('a duplicate model key is not spliced (the upstream would read the last one): the body is serialized anew', async () => {
    const r = await send(
      '/v1/chat/completions',
      '{"model":"gpt","messages":[{"role":"user","content":"dup"}],"model":"gpt"}',
    );
    expect(r.status).toBe(200);
    await r.text();
    const sent = oa.requests.at(-1)!.text!;
    expect(sent.match(/"model"/g)).toHaveLength(1);
    expect(JSON.parse(sent)).toEqual({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'dup' }] });
  });

  it('Anthropic messages to an Anthropic channel: the same', async () => {
    const text = '{"model": "claude", "max_tokens": 50, "messages": [{"role": "user", "content": "bytes"}]}';
    const r = await send('/v1/messages', text, { 'anthropic-version': '2023-06-01' });
    expect(r.status).toBe(200);
    expect(((await r.json()) as { model: string }).model).toBe('claude');
    expect(an.requests.at(-1)!.text).toBe(
      '{"model": "claude-sonnet-4", "max_tokens": 50, "messages": [{"role": "user", "content": "bytes"}]}',
    );
  });
});
