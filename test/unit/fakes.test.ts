/**
 * The fake upstreams must speak the real wire formats: the official clients are pointed straight at them.
 * Fault injection is checked with plain fetch.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { type FakeUpstream, startFakeAnthropic, startFakeOpenAI } from '../../fakes/index.js';
import { waitFor } from '../wait.js';

let fo: FakeUpstream;
let fa: FakeUpstream;
let openai: OpenAI;
let anthropic: Anthropic;

beforeAll(async () => {
  fo = await startFakeOpenAI({ name: 'test-openai' });
  fa = await startFakeAnthropic();
  openai = new OpenAI({ apiKey: 'k', baseURL: fo.url + '/v1', maxRetries: 0 });
  anthropic = new Anthropic({ apiKey: 'k', baseURL: fa.url, maxRetries: 0 });
});
afterAll(async () => {
  await Promise.all([fo?.close(), fa?.close()]);
});
afterEach(() => {
  fo.setFault(null);
  fa.setFault(null);
});

/** Only for proving a stall: the absence of data can be shown by a time window alone. */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const chatBody = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi there' }], ...extra });
const post = (path: string, body: string, headers: Record<string, string> = {}, signal?: AbortSignal) =>
  fetch(fo.url + path, {
    method: 'POST',
    headers: { authorization: 'Bearer k', 'content-type': 'application/json', ...headers },
    body,
    ...(signal ? { signal } : {}),
  });

const tools = [
  {
    type: 'function' as const,
    function: { name: 'search', parameters: { type: 'object', properties: { query: { type: 'string' } } } },
  },
  {
    type: 'function' as const,
    function: { name: 'lookup', parameters: { type: 'object', properties: { query: { type: 'string' } } } },
  },
];

describe('fake OpenAI with the official client', () => {
  it('chat completion JSON', async () => {
    const r = await openai.chat.completions.create({
      model: 'gpt-x',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: [{ type: 'text', text: 'What is the capital of France?' }] },
      ],
    });
    expect(r.id).toMatch(/^chatcmpl-/);
    expect(r.model).toBe('gpt-x');
    expect(r.object).toBe('chat.completion');
    expect(r.choices[0]!.message.content).toBe('Hello from test-openai: What is the capital of France?');
    expect(r.choices[0]!.finish_reason).toBe('stop');
    const chars = 'Be brief.'.length + 'What is the capital of France?'.length;
    expect(r.usage).toMatchObject({
      prompt_tokens: Math.ceil(chars / 4) + 1,
      completion_tokens: 9,
      total_tokens: Math.ceil(chars / 4) + 10,
    });
    expect(r.usage!.prompt_tokens_details!.cached_tokens).toBe(0);
    expect(fo.requests.at(-1)).toMatchObject({
      method: 'POST',
      path: '/v1/chat/completions',
      body: { model: 'gpt-x' },
    });
  });

  it('n > 1, max_tokens and a tool reply', async () => {
    const r = await openai.chat.completions.create({
      model: 'm',
      n: 3,
      max_tokens: 2,
      messages: [{ role: 'user', content: 'hello' }],
    });
    expect(r.choices.map((c) => [c.index, c.message.content, c.finish_reason])).toEqual(
      [0, 1, 2].map((i) => [i, 'Hello from', 'length']),
    );
    const t = await openai.chat.completions.create({
      model: 'm',
      tools,
      messages: [
        { role: 'user', content: 'q' },
        {
          role: 'assistant',
          content: null,
          tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'search', arguments: '{}' } }],
        },
        { role: 'tool', tool_call_id: 'call_1', content: 'sunny' },
      ],
    });
    expect(t.choices[0]!.message.content).toBe('Tool said: sunny');
  });

  it('streaming with include_usage', async () => {
    const stream = await openai.chat.completions.create({
      model: 'm',
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'Stream please' }],
    });
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    const contentChunks = chunks.filter((c) => c.choices[0]?.delta.content);
    expect(contentChunks).toHaveLength(5);
    expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
    expect(contentChunks.map((c) => c.choices[0]!.delta.content).join('')).toBe(
      'Hello from test-openai: Stream please',
    );
    expect(chunks.at(-2)!.choices[0]!.finish_reason).toBe('stop');
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toMatchObject({ completion_tokens: 5, total_tokens: last.usage!.prompt_tokens + 5 });
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
  });

  it('pads to exactly `chunks` content chunks', async () => {
    const r = await post('/v1/chat/completions', chatBody({ stream: true }), {
      'x-fake-fault': JSON.stringify({ chunks: 8 }),
    });
    expect(r.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = (await r.text()).split('\n\n').filter(Boolean);
    expect(events.at(-1)).toBe('data: [DONE]');
    const content = events
      .slice(0, -1)
      .map((e) => JSON.parse(e.slice(6)).choices[0].delta.content)
      .filter(Boolean);
    expect(content).toHaveLength(8);
    expect(content.join('')).toBe('Hello from test-openai: hi there lorem lorem lorem');
  });

  it('streaming tool calls (parallel)', async () => {
    const stream = await openai.chat.completions.create({
      model: 'm',
      stream: true,
      tools,
      messages: [{ role: 'user', content: 'Where is Kyiv?' }],
    });
    const calls: Array<{ id?: string; name?: string; args: string }> = [];
    let finish: string | null = null;
    for await (const c of stream) {
      const ch = c.choices[0]!;
      for (const tc of ch.delta.tool_calls ?? []) {
        const call = (calls[tc.index] ??= { args: '' });
        if (tc.id) call.id = tc.id;
        if (tc.function?.name) call.name = tc.function.name;
        call.args += tc.function?.arguments ?? '';
      }
      finish = ch.finish_reason ?? finish;
    }
    expect(finish).toBe('tool_calls');
    expect(calls.map((c) => c.name)).toEqual(['search', 'lookup']);
    expect(calls.every((c) => /^call_/.test(c.id!) && JSON.parse(c.args).query === 'Where is Kyiv?')).toBe(
      true,
    );

    // forced single tool, and the SDK's stream helper assembles it
    const final = await openai.chat.completions
      .stream({
        model: 'm',
        tools,
        tool_choice: { type: 'function', function: { name: 'lookup' } },
        messages: [{ role: 'user', content: 'x' }],
      })
      .finalChatCompletion();
    const tc = final.choices[0]!.message.tool_calls!;
    expect(tc).toHaveLength(1);
    expect(
      tc[0]!.type === 'function' && [tc[0]!.function.name, JSON.parse(tc[0]!.function.arguments)],
    ).toEqual(['lookup', { query: 'x' }]);
  });

  it('embeddings, float and base64 (decoded by the SDK)', async () => {
    const f = await openai.embeddings.create({
      model: 'emb',
      input: ['alpha', 'beta'],
      encoding_format: 'float',
      dimensions: 16,
    });
    expect(f).toMatchObject({ object: 'list', model: 'emb', usage: { prompt_tokens: 3, total_tokens: 3 } }); // ceil(5/4) + ceil(4/4)
    expect(f.data.map((d) => [d.object, d.index, d.embedding.length])).toEqual([
      ['embedding', 0, 16],
      ['embedding', 1, 16],
    ]);
    expect(Math.hypot(...f.data[0]!.embedding)).toBeCloseTo(1, 5);
    expect(f.data[0]!.embedding).not.toEqual(f.data[1]!.embedding);
    const b = await openai.embeddings.create({ model: 'emb', input: ['alpha', 'beta'], dimensions: 16 });
    expect(fo.requests.at(-1)!.body).toMatchObject({ encoding_format: 'base64' });
    expect(b.data.map((d) => d.embedding)).toEqual(f.data.map((d) => d.embedding));
    const tok = await openai.embeddings.create({ model: 'emb', input: [1, 2, 3], encoding_format: 'float' });
    expect(tok.data[0]!.embedding).toHaveLength(8);
    expect(tok.usage.prompt_tokens).toBe(3);
  });

  it('models and errors in OpenAI shape', async () => {
    const ids: string[] = [];
    for await (const m of openai.models.list()) ids.push(m.id);
    expect(ids.length).toBeGreaterThan(2);
    fo.setFault({ status: 429, retryAfter: 7 });
    const e = await openai.chat.completions
      .create({ model: 'm', messages: [{ role: 'user', content: 'x' }] })
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(OpenAI.RateLimitError);
    expect(e).toMatchObject({ status: 429, type: 'rate_limit_error', code: 'rate_limit_exceeded' });
    fo.setFault({ status: 429, errorCode: 'insufficient_quota' });
    expect(await openai.models.list().catch((x: unknown) => x)).toMatchObject({
      type: 'insufficient_quota',
      code: 'insufficient_quota',
    });
    const bad = new OpenAI({
      apiKey: 'k',
      baseURL: fo.url + '/v1',
      maxRetries: 0,
      defaultHeaders: { authorization: null },
    });
    fo.setFault(null);
    expect(await bad.models.list().catch((x: unknown) => x)).toBeInstanceOf(OpenAI.AuthenticationError);
    const r = await post('/v1/chat/completions', '{"model":');
    expect(r.status).toBe(400);
    expect(await r.json()).toMatchObject({ error: { type: 'invalid_request_error', param: null } });
  });

  it('requires the configured apiKey', async () => {
    const strict = await startFakeOpenAI({ apiKey: 'secret' });
    try {
      const wrong = new OpenAI({ apiKey: 'nope', baseURL: strict.url + '/v1', maxRetries: 0 });
      expect(await wrong.models.list().catch((x: unknown) => x)).toMatchObject({
        status: 401,
        code: 'invalid_api_key',
      });
      const right = new OpenAI({ apiKey: 'secret', baseURL: strict.url + '/v1', maxRetries: 0 });
      expect((await right.models.list()).data.length).toBeGreaterThan(0);
    } finally {
      await strict.close();
    }
  });
});

describe('fake Anthropic with the official client', () => {
  const atools = [
    { name: 'search', input_schema: { type: 'object' as const, properties: { query: { type: 'string' } } } },
    { name: 'lookup', input_schema: { type: 'object' as const, properties: { query: { type: 'string' } } } },
  ];

  it('messages.create JSON', async () => {
    const m = await anthropic.messages.create({
      model: 'claude-x',
      max_tokens: 100,
      system: [{ type: 'text', text: 'Be brief.' }],
      messages: [{ role: 'user', content: 'Hi Claude' }],
    });
    expect(m).toMatchObject({
      type: 'message',
      role: 'assistant',
      model: 'claude-x',
      stop_reason: 'end_turn',
      stop_sequence: null,
    });
    expect(m.id).toMatch(/^msg_/);
    expect(m.content).toEqual([{ type: 'text', text: 'Hello from fake-anthropic: Hi Claude' }]);
    expect(m.usage).toMatchObject({
      input_tokens: Math.ceil(18 / 4) + 1,
      output_tokens: 5,
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
    });
    const c = await anthropic.messages.countTokens({
      model: 'claude-x',
      system: [{ type: 'text', text: 'Be brief.' }],
      messages: [{ role: 'user', content: 'Hi Claude' }],
    });
    expect(c.input_tokens).toBe(m.usage.input_tokens);
  });

  it('stop_sequences and max_tokens', async () => {
    const s = await anthropic.messages.create({
      model: 'c',
      max_tokens: 100,
      stop_sequences: ['from'],
      messages: [{ role: 'user', content: 'x' }],
    });
    expect([s.content[0], s.stop_reason, s.stop_sequence]).toEqual([
      { type: 'text', text: 'Hello ' },
      'stop_sequence',
      'from',
    ]);
    const t = await anthropic.messages.create({
      model: 'c',
      max_tokens: 1,
      messages: [{ role: 'user', content: 'x' }],
    });
    expect([t.content[0], t.stop_reason]).toEqual([{ type: 'text', text: 'Hello' }, 'max_tokens']);
  });

  it('messages.stream with finalMessage', async () => {
    const s = anthropic.messages.stream({
      model: 'c',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'Stream hey' }],
    });
    const texts: string[] = [];
    s.on('text', (t) => texts.push(t));
    const fin = await s.finalMessage();
    expect(texts).toHaveLength(5);
    expect(texts.join('')).toBe('Hello from fake-anthropic: Stream hey');
    expect(fin.content).toEqual([{ type: 'text', text: 'Hello from fake-anthropic: Stream hey' }]);
    expect(fin.stop_reason).toBe('end_turn');
    expect(fin.usage.input_tokens).toBe(Math.ceil('Stream hey'.length / 4) + 1);
    expect(fin.usage.output_tokens).toBe(5);
  });

  it('raw event sequence', async () => {
    const r = await fetch(fa.url + '/v1/messages', {
      method: 'POST',
      headers: { 'x-api-key': 'k', 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'c',
        max_tokens: 10,
        stream: true,
        messages: [{ role: 'user', content: 'x' }],
      }),
    });
    const names = (await r.text())
      .split('\n\n')
      .filter(Boolean)
      .map((e) => e.split('\n')[0]);
    expect(names).toEqual(
      [
        'message_start',
        'content_block_start',
        'ping',
        ...Array(5).fill('content_block_delta'),
        'content_block_stop',
        'message_delta',
        'message_stop',
      ].map((n) => `event: ${n}`),
    );
  });

  it('tool_use, JSON and streamed, then the tool result', async () => {
    const m = await anthropic.messages.create({
      model: 'c',
      max_tokens: 64,
      tools: atools,
      messages: [{ role: 'user', content: 'Kyiv?' }],
    });
    expect(m.stop_reason).toBe('tool_use');
    expect(m.content).toMatchObject([
      { type: 'tool_use', name: 'search', input: { query: 'Kyiv?' } },
      { type: 'tool_use', name: 'lookup', input: { query: 'Kyiv?' } },
    ]);
    const st = await anthropic.messages
      .stream({
        model: 'c',
        max_tokens: 64,
        tools: atools,
        tool_choice: { type: 'tool', name: 'lookup' },
        messages: [{ role: 'user', content: 'Baku?' }],
      })
      .finalMessage();
    expect(st.stop_reason).toBe('tool_use');
    expect(st.content).toMatchObject([{ type: 'tool_use', name: 'lookup', input: { query: 'Baku?' } }]);
    expect(st.usage.output_tokens).toBe(10);
    const first = m.content[0] as Anthropic.ToolUseBlock;
    const after = await anthropic.messages.create({
      model: 'c',
      max_tokens: 64,
      tools: atools,
      messages: [
        { role: 'user', content: 'Kyiv?' },
        { role: 'assistant', content: [first] },
        {
          role: 'user',
          content: [
            { type: 'tool_result', tool_use_id: first.id, content: [{ type: 'text', text: 'cold' }] },
          ],
        },
      ],
    });
    expect(after.content).toEqual([{ type: 'text', text: 'Tool said: cold' }]);
  });

  it('errors in Anthropic shape', async () => {
    fa.setFault({ status: 529 });
    const e = await anthropic.messages
      .create({ model: 'c', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] })
      .catch((x: unknown) => x);
    expect(e).toMatchObject({ status: 529, error: { type: 'error', error: { type: 'overloaded_error' } } });
    fa.setFault(null);
    const h = { 'x-api-key': 'k', 'content-type': 'application/json' };
    const body = JSON.stringify({ model: 'c', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] });
    const noVersion = await fetch(fa.url + '/v1/messages', { method: 'POST', headers: h, body });
    expect([noVersion.status, await noVersion.json()]).toMatchObject([
      400,
      { type: 'error', error: { type: 'invalid_request_error' } },
    ]);
    const noMax = await fetch(fa.url + '/v1/messages', {
      method: 'POST',
      headers: { ...h, 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: 'c', messages: [] }),
    });
    expect(noMax.status).toBe(400);
    const noKey = await fetch(fa.url + '/v1/messages', {
      method: 'POST',
      headers: { 'anthropic-version': '2023-06-01' },
      body,
    });
    expect([noKey.status, await noKey.json()]).toMatchObject([
      401,
      { error: { type: 'authentication_error' } },
    ]);
  });
});

describe('faults', () => {
  it('status + retry-after, in the provider format', async () => {
    fo.setFault({ status: 503, retryAfter: 3, errorMessage: 'busy' });
    const r = await post('/v1/chat/completions', chatBody());
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).toBe('3');
    expect(await r.json()).toEqual({
      error: { message: 'busy', type: 'server_error', param: null, code: null },
    });
  });

  it('hang: counted as aborted once the client gives up', async () => {
    fo.resetStats();
    fo.setFault({ hang: true });
    const ac = new AbortController();
    const p = post('/v1/chat/completions', chatBody(), {}, ac.signal);
    await waitFor(() => fo.stats.inFlight === 1);
    ac.abort();
    await expect(p).rejects.toThrow();
    await waitFor(() => fo.stats.aborted === 1);
    expect(fo.stats).toMatchObject({ requests: 1, inFlight: 0, completed: 0 });
  });

  it('cutAfterChunks: the stream ends without [DONE]', async () => {
    fo.setFault({ cutAfterChunks: 3, chunks: 10 });
    const r = await post('/v1/chat/completions', chatBody({ stream: true }));
    expect(r.status).toBe(200);
    let text = '';
    const dec = new TextDecoder();
    await expect(
      (async () => {
        for await (const b of r.body!) text += dec.decode(b as Uint8Array, { stream: true });
      })(),
    ).rejects.toThrow();
    expect(text.split('\n\n').filter(Boolean)).toHaveLength(3);
    expect(text).not.toContain('[DONE]');
  });

  it('hangAfterChunks stalls, chunkDelayMs spaces the chunks', async () => {
    fa.setFault({ hangAfterChunks: 2 });
    const ac = new AbortController();
    const r = await fetch(fa.url + '/v1/messages', {
      method: 'POST',
      signal: ac.signal,
      headers: { 'x-api-key': 'k', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({
        model: 'c',
        max_tokens: 10,
        stream: true,
        messages: [{ role: 'user', content: 'x' }],
      }),
    });
    const reader = r.body!.getReader();
    let got = '';
    while (got.split('\n\n').length < 3) got += new TextDecoder().decode((await reader.read()).value);
    const next = await Promise.race([reader.read().then(() => 'data'), sleep(150).then(() => 'stalled')]);
    expect(next).toBe('stalled');
    ac.abort();
    fo.setFault({ chunkDelayMs: 40, chunks: 3 });
    const t0 = Date.now();
    await (await post('/v1/chat/completions', chatBody({ stream: true }))).text();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(4 * 40 - 5); // 6 events, 5 gaps (timers may fire a little early)
  });

  it('reset: fetch rejects', async () => {
    fo.setFault({ reset: true });
    await expect(post('/v1/chat/completions', chatBody())).rejects.toThrow();
  });

  it('malformed: 200 with garbage, JSON and SSE', async () => {
    fo.setFault({ malformed: true });
    const r = await post('/v1/chat/completions', chatBody());
    expect(r.status).toBe(200);
    await expect(r.json()).rejects.toThrow();
    const s = await post('/v1/chat/completions', chatBody({ stream: true }));
    const text = await s.text();
    expect(text).not.toContain('[DONE]');
    expect(() =>
      text
        .split('\n\n')
        .filter(Boolean)
        .forEach((e) => JSON.parse(e.replace(/^data: /, ''))),
    ).toThrow();
  });

  it('times: 1 applies once; the header beats the server fault', async () => {
    fo.setFault({ status: 500, times: 1 });
    expect((await post('/v1/chat/completions', chatBody())).status).toBe(500);
    expect((await post('/v1/chat/completions', chatBody())).status).toBe(200);
    fo.setFault({ status: 500 });
    expect(
      (await post('/v1/chat/completions', chatBody(), { 'x-fake-fault': '{"status":502}' })).status,
    ).toBe(502);
    expect((await post('/v1/chat/completions', chatBody(), { 'x-fake-fault': '{}' })).status).toBe(200);
  });

  it('HTTP control routes', async () => {
    await fetch(fo.url + '/_fake/reset', { method: 'POST' });
    await fetch(fo.url + '/_fake/fault', { method: 'POST', body: JSON.stringify({ status: 418 }) });
    expect((await post('/v1/chat/completions', chatBody())).status).toBe(418);
    await fetch(fo.url + '/_fake/fault', { method: 'POST', body: 'null' });
    expect((await post('/v1/chat/completions', chatBody())).status).toBe(200);
    const s = (await (await fetch(fo.url + '/_fake/stats')).json()) as {
      stats: FakeUpstream['stats'];
      requests: unknown[];
    };
    expect(s.stats).toMatchObject({ requests: 2, completed: 2, byPath: { '/v1/chat/completions': 2 } });
    expect(s.requests).toHaveLength(2);
  });

  it('maxInFlight under 5 parallel slow requests', async () => {
    fo.resetStats();
    fo.setFault({ latencyMs: 150 });
    const rs = await Promise.all(Array.from({ length: 5 }, () => post('/v1/chat/completions', chatBody())));
    expect(rs.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    await Promise.all(rs.map((r) => r.text()));
    expect(fo.stats).toMatchObject({ requests: 5, maxInFlight: 5, completed: 5, aborted: 0 });
  });

  it('failRate fails that share of requests; with failFast their status comes at once, the rest after the latency', async () => {
    for (const failFast of [false, true]) {
      // A latency far above any scheduling stall of a loaded machine (a full suite on 2 cores once took
      // 101 ms to answer a fast failure), so "at once" and "after the latency" can't be confused.
      fo.setFault({ latencyMs: 1000, status: 500, failRate: 0.5, failFast });
      const timed = await Promise.all(
        Array.from({ length: 40 }, async () => {
          const t0 = performance.now();
          const r = await post('/v1/chat/completions', chatBody());
          await r.text();
          return { status: r.status, ms: performance.now() - t0 };
        }),
      );
      const failed = timed.filter((t) => t.status === 500);
      const ok = timed.filter((t) => t.status === 200);
      expect(failed.length).toBeGreaterThan(0);
      expect(ok.length).toBeGreaterThan(0);
      for (const t of ok) expect(t.ms).toBeGreaterThanOrEqual(990);
      for (const t of failed) {
        if (failFast) expect(t.ms).toBeLessThan(600);
        else expect(t.ms).toBeGreaterThanOrEqual(990);
      }
    }
  });
});
