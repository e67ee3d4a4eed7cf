/**
 * Vertex AI channels through a gateway on real PostgreSQL and Redis, against the fake Vertex and its
 * token endpoint, for both publishers (Gemini by generateContent, Claude by rawPredict): chat JSON and
 * stream billed in a balanced journal at the tokens the upstream reported, tools there and back, the
 * native Anthropic and Gemini clients (and each pivoted onto the other publisher), the service account's
 * token fetched once for many requests and refreshed before it expires, a refused service account taking
 * the channel's credential out, and Vertex's failures classified: 429 cools the channel and falls back,
 * 503 and garbage count against the breaker and fall back, a 400 is the client's without a fallback; a
 * fallback from another provider lands on Vertex.
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { type FakeVertexUpstream, startFakeOpenAI, startFakeVertex } from '../../fakes/index.js';
import { adminApi, saleJournalOf, waitFor } from '../helpers.js';
import {
  LENIENT_BREAKER,
  ServiceSuite,
  TOKEN_PRICES,
  type TestGateway,
  chainAlias,
  newAppKey,
  openaiChannel,
  resetChannels,
} from '../helpers-suite.js';

let S: ServiceSuite;
let G: TestGateway;
let vx: FakeVertexUpstream;
let oa: FakeUpstream;
let db: pg.Pool;
let sk: string;
const admin = adminApi(() => G.url);

const GEMINI = 'gemini-2.5-flash';
const CLAUDE = 'claude-sonnet-4@20250514';
const CHANNELS = ['vx', 'vx-cold', 'vx-short', 'vx-bad', 'vx-refused', 'oa'];

const openai = () => new OpenAI({ baseURL: G.url + '/v1', apiKey: sk, maxRetries: 0 });
const anthropic = () => new Anthropic({ baseURL: G.url, apiKey: sk, maxRetries: 0 });

const journalOf = (requestId: string | null) => saleJournalOf(G, db, requestId);

/** The model calls the fake received (the token endpoint's excluded). */
const modelCalls = () => vx.requests.filter((r) => r.path !== '/token');
const modelCallCount = () =>
  Object.entries(vx.stats.byPath).reduce((n, [p, c]) => (p === '/token' ? n : n + c), 0);

beforeAll(async () => {
  S = await ServiceSuite.open();
  [vx, oa] = await Promise.all([startFakeVertex({ name: 'vx' }), startFakeOpenAI({ name: 'oa' })]);
  G = await S.gateway();
  db = S.pool();
  const settings = { breaker: LENIENT_BREAKER, vertex: { location: 'us-east5' } };
  const channel = (code: string, credential: string) =>
    admin('POST', '/channels', { code, provider: 'vertex', base_url: vx.url, credential, settings });
  await channel('vx', vx.serviceAccount());
  await channel('vx-cold', vx.serviceAccount());
  await channel('vx-short', vx.serviceAccount());
  await channel('vx-bad', vx.serviceAccount({ trusted: false }));
  await openaiChannel(admin, 'oa', oa, { breaker: LENIENT_BREAKER });
  const alias = (name: string, ...tiers: Array<[string, string]>) => chainAlias(admin, name, ...tiers);
  const aliases: Array<[string, ...Array<[string, string]>]> = [
    ['gem', ['vx', GEMINI]],
    ['claude', ['vx', CLAUDE]],
    ['gem-then-oa', ['vx', GEMINI], ['oa', 'gpt-4o-mini']],
    ['claude-then-oa', ['vx', CLAUDE], ['oa', 'gpt-4o-mini']],
    ['oa-then-gem', ['oa', 'gpt-4o-mini'], ['vx', GEMINI]],
    ['oa-then-claude', ['oa', 'gpt-4o-mini'], ['vx', CLAUDE]],
    ['cold', ['vx-cold', CLAUDE]],
    ['short', ['vx-short', GEMINI]],
    ['bad-then-oa', ['vx-bad', CLAUDE], ['oa', 'gpt-4o-mini']],
  ];
  for (const [name, ...tiers] of aliases) {
    await alias(name, ...tiers);
    await admin('POST', '/prices', { alias: name, ...TOKEN_PRICES });
  }
  sk = (await newAppKey(admin, { name: 'vertex' })).sk;
  await waitFor(() => G.config.alias('bad-then-oa') && G.config.price('bad-then-oa', null), 3_000, 5);
  // The `vx` channel's token, fetched now: the fault tests below then hit the model calls, not /token.
  await openai().chat.completions.create({ model: 'gem', messages: [{ role: 'user', content: 'warm' }] });
}, 60_000);

afterEach(async () => {
  vx.setFault(null);
  oa.setFault(null);
  vx.vertex.tokenExpiresIn = 3599;
  vx.vertex.refuseTokens = false;
  await resetChannels(G, CHANNELS);
});

afterAll(() => S?.close(vx, oa));

const PUBLISHERS: Array<[string, string, string, RegExp]> = [
  [
    'google',
    'gem',
    GEMINI,
    /\/publishers\/google\/models\/gemini-2\.5-flash:(generateContent|streamGenerateContent)$/,
  ],
  [
    'anthropic',
    'claude',
    CLAUDE,
    /\/publishers\/anthropic\/models\/claude-sonnet-4@20250514:(rawPredict|streamRawPredict)$/,
  ],
];

describe('vertex channels, both publishers', () => {
  it.each(PUBLISHERS)(
    '%s: chat JSON and stream, answered under the alias, billed at the upstream tokens',
    async (publisher, alias, _model, path) => {
      const { data, response } = await openai()
        .chat.completions.create({ model: alias, messages: [{ role: 'user', content: 'hello vertex' }] })
        .withResponse();
      expect(data.model).toBe(alias);
      expect(data.choices[0]!.message.content).toBe('Hello from vx: hello vertex');
      const rec = modelCalls().at(-1)!;
      expect(rec.path).toMatch(path);
      expect(rec.path.startsWith(`/v1/projects/${vx.project}/locations/us-east5/`)).toBe(true);
      expect(rec.headers.authorization).toMatch(/^Bearer ya29\.fake-/);
      expect(vx.issuedTokens).toContain(String(rec.headers.authorization).slice('Bearer '.length));
      expect(rec.headers['x-goog-api-key']).toBeUndefined();
      expect(rec.headers['x-api-key']).toBeUndefined();
      if (publisher === 'anthropic') {
        expect(rec.body).not.toHaveProperty('model');
        expect(rec.body).toMatchObject({ anthropic_version: 'vertex-2023-10-16' });
      }
      const j = await journalOf(response.headers.get('x-request-id'));
      expect(j.channel).toBe('vx');
      expect(j.usage.input_tokens).toBe(data.usage!.prompt_tokens);
      expect(j.usage.output_tokens).toBe(data.usage!.completion_tokens);
      expect(j.usage.output_tokens).toBeGreaterThan(0);

      const { data: stream, response: sres } = await openai()
        .chat.completions.create({
          model: alias,
          messages: [{ role: 'user', content: 'stream vertex' }],
          stream: true,
          stream_options: { include_usage: true },
        })
        .withResponse();
      let text = '';
      let usage: OpenAI.CompletionUsage | undefined;
      for await (const c of stream) {
        text += c.choices[0]?.delta?.content ?? '';
        if (c.usage) usage = c.usage;
      }
      expect(text).toBe('Hello from vx: stream vertex');
      expect(modelCalls().at(-1)!.path).toMatch(/:stream(GenerateContent|RawPredict)$/);
      const sj = await journalOf(sres.headers.get('x-request-id'));
      expect(sj.usage.input_tokens).toBe(usage!.prompt_tokens);
      expect(sj.usage.output_tokens).toBe(usage!.completion_tokens);
    },
  );

  it.each(PUBLISHERS)('%s: a tool call and its result, JSON and streamed', async (_p, alias) => {
    const tools = [
      {
        type: 'function' as const,
        function: {
          name: 'lookup',
          parameters: { type: 'object', properties: { query: { type: 'string' } } },
        },
      },
    ];
    const ask = { role: 'user' as const, content: 'find gateways' };
    const r = await openai().chat.completions.create({ model: alias, messages: [ask], tools });
    expect(r.choices[0]!.finish_reason).toBe('tool_calls');
    const call = r.choices[0]!.message.tool_calls![0]!;
    expect(call).toMatchObject({ type: 'function', function: { name: 'lookup' } });
    expect(JSON.parse((call as { function: { arguments: string } }).function.arguments)).toEqual({
      query: 'find gateways',
    });
    // The result goes back; the model answers from it.
    const back = await openai().chat.completions.create({
      model: alias,
      tools,
      messages: [ask, r.choices[0]!.message, { role: 'tool', tool_call_id: call.id, content: '{"found":3}' }],
    });
    expect(back.choices[0]!.message.content).toContain('Tool said:');
    expect(back.choices[0]!.message.content).toContain('found');

    const s = await openai().chat.completions.create({ model: alias, messages: [ask], tools, stream: true });
    let args = '';
    let finish: string | null | undefined;
    for await (const c of s) {
      for (const t of c.choices[0]?.delta?.tool_calls ?? []) args += t.function?.arguments ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    expect(JSON.parse(args)).toEqual({ query: 'find gateways' });
    expect(finish).toBe('tool_calls');
  });

  it('the Anthropic client on Claude: Messages through rawPredict, JSON and stream, billed', async () => {
    const { data, response } = await anthropic()
      .messages.create({
        model: 'claude',
        max_tokens: 64,
        messages: [{ role: 'user', content: 'native claude' }],
      })
      .withResponse();
    expect(data.model).toBe('claude');
    expect(data.content[0]).toMatchObject({ type: 'text', text: 'Hello from vx: native claude' });
    const rec = modelCalls().at(-1)!;
    expect(rec.path).toMatch(/:rawPredict$/);
    expect(rec.body).toMatchObject({ anthropic_version: 'vertex-2023-10-16', max_tokens: 64 });
    const j = await journalOf(response.headers.get('x-request-id'));
    expect(j.usage.input_tokens).toBe(data.usage.input_tokens);
    expect(j.usage.output_tokens).toBe(data.usage.output_tokens);

    const stream = anthropic().messages.stream({
      model: 'claude',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'stream claude' }],
    });
    const final = await stream.finalMessage();
    expect(final.content[0]).toMatchObject({ type: 'text', text: 'Hello from vx: stream claude' });
    expect(modelCalls().at(-1)!.path).toMatch(/:streamRawPredict$/);
    expect(final.usage.output_tokens).toBeGreaterThan(0);
  });

  it('a Gemini client on Gemini passes through; on Claude, and an Anthropic client on Gemini, pivot', async () => {
    const gen = (alias: string, stream = false) =>
      fetch(
        `${G.url}/v1beta/models/${alias}:${stream ? 'streamGenerateContent?alt=sse' : 'generateContent'}`,
        {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-goog-api-key': sk },
          body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'gemini client' }] }] }),
        },
      );
    const g = await gen('gem');
    expect(g.status).toBe(200);
    const gj = (await g.json()) as { candidates: Array<{ content: { parts: Array<{ text: string }> } }> };
    expect(gj.candidates[0]!.content.parts[0]!.text).toBe('Hello from vx: gemini client');
    expect(modelCalls().at(-1)!.path).toMatch(
      /\/publishers\/google\/models\/gemini-2\.5-flash:generateContent$/,
    );

    const onClaude = await gen('claude', true);
    expect(onClaude.status).toBe(200);
    const sse = await onClaude.text();
    const said = [...sse.matchAll(/"text":"([^"]*)"/g)].map((x) => x[1]).join('');
    expect(said).toBe('Hello from vx: gemini client');
    expect(modelCalls().at(-1)!.path).toMatch(/:streamRawPredict$/);
    expect((await journalOf(onClaude.headers.get('x-request-id'))).usage.output_tokens).toBeGreaterThan(0);

    const m = await anthropic().messages.create({
      model: 'gem',
      max_tokens: 32,
      messages: [{ role: 'user', content: 'anthropic client' }],
    });
    expect(m.content[0]).toMatchObject({ type: 'text', text: 'Hello from vx: anthropic client' });
    expect(modelCalls().at(-1)!.path).toMatch(/:generateContent$/);
  });
});

describe('vertex tokens', () => {
  it('many concurrent requests on a cold credential share one token call', async () => {
    const before = vx.tokenStats.issued;
    const tokenCalls = vx.stats.byPath['/token'] ?? 0;
    const N = 12;
    const answers = await Promise.all(
      Array.from({ length: N }, (_, i) =>
        openai().chat.completions.create({
          model: 'cold',
          messages: [{ role: 'user', content: `cold ${i}` }],
        }),
      ),
    );
    expect(answers.map((a) => a.choices[0]!.message.content)).toEqual(
      Array.from({ length: N }, (_, i) => `Hello from vx: cold ${i}`),
    );
    expect(vx.tokenStats.issued).toBe(before + 1);
    expect(vx.stats.byPath['/token']).toBe(tokenCalls + 1);
    const token = `Bearer ${vx.issuedTokens.at(-1)}`;
    expect(
      modelCalls()
        .slice(-N)
        .every((r) => r.headers.authorization === token),
    ).toBe(true);
    // And later requests keep it.
    await openai().chat.completions.create({ model: 'cold', messages: [{ role: 'user', content: 'again' }] });
    expect(vx.tokenStats.issued).toBe(before + 1);
  });

  it('a short-lived token is refreshed before it expires, and the new one is used', async () => {
    vx.vertex.tokenExpiresIn = 2; // refreshed in the background after half its life
    const ask = (content: string) =>
      openai().chat.completions.create({ model: 'short', messages: [{ role: 'user', content }] });
    const issued0 = vx.tokenStats.issued;
    await ask('first');
    expect(vx.tokenStats.issued).toBe(issued0 + 1);
    const first = `Bearer ${vx.issuedTokens.at(-1)}`;
    expect(modelCalls().at(-1)!.headers.authorization).toBe(first);
    // Requests go on until one goes out with a new token (an event, not a sleep): the old one has
    // passed half its life, a refresh ran in the background, and the requests after it use its token.
    await waitFor(
      async () => {
        await ask('tick');
        return modelCalls().at(-1)!.headers.authorization !== first;
      },
      10_000,
      50,
    );
    expect(vx.tokenStats.issued).toBeGreaterThanOrEqual(issued0 + 2);
    const used = String(modelCalls().at(-1)!.headers.authorization).slice('Bearer '.length);
    expect(vx.issuedTokens.indexOf(used)).toBeGreaterThan(vx.issuedTokens.indexOf(first.slice(7)));
    // Every request was served: none went out with an expired token (the fake would have said 401).
    expect(G.breakers.windowCounts('vx-short').failures).toBe(0);
  });

  it('a refused service account takes the credential out (like a 401) and the chain moves on', async () => {
    const refused = vx.tokenStats.refused;
    const calls = modelCallCount();
    const r = await openai().chat.completions.create({
      model: 'bad-then-oa',
      messages: [{ role: 'user', content: 'refused' }],
    });
    expect(r.choices[0]!.message.content).toBe('Hello from oa: refused');
    expect(vx.tokenStats.refused).toBe(refused + 1);
    expect(modelCallCount()).toBe(calls); // no model call went out without a token
    expect(G.health.refusesNow('vx-bad')).toBe('credential_invalid');
    expect(G.breakers.windowCounts('vx-bad').failures).toBe(0);
    // Out until an operator acts: the next request skips it without asking for a token.
    const { response } = await openai()
      .chat.completions.create({ model: 'bad-then-oa', messages: [{ role: 'user', content: 'again' }] })
      .withResponse();
    expect(vx.tokenStats.refused).toBe(refused + 1);
    expect(response.headers.get('x-anima-route')).toContain('credential_invalid');
  });

  it('a token endpoint that refuses a good account (refuseTokens) is the same credential failure', async () => {
    vx.vertex.refuseTokens = true;
    vx.vertex.tokenExpiresIn = 3599;
    // `cold` holds a cached token still: served. A fresh credential meets the refusal.
    const served = await openai().chat.completions.create({
      model: 'cold',
      messages: [{ role: 'user', content: 'cached' }],
    });
    expect(served.choices[0]!.message.content).toBe('Hello from vx: cached');
    await admin('POST', '/channels', {
      code: 'vx-refused',
      provider: 'vertex',
      base_url: vx.url,
      credential: vx.serviceAccount(),
      settings: { vertex: { location: 'us-east5' } },
    });
    await admin('POST', '/aliases', {
      name: 'refused',
      chain: [{ targets: [{ channel: 'vx-refused', model: GEMINI }] }],
    });
    await admin('POST', '/prices', { alias: 'refused', ...TOKEN_PRICES });
    await waitFor(() => G.config.alias('refused') && G.config.price('refused', null), 3_000, 5);
    const e2 = await openai()
      .chat.completions.create({ model: 'refused', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e as { status: number });
    expect(e2).toMatchObject({ status: 502 });
    expect(G.health.refusesNow('vx-refused')).toBe('credential_invalid');
  });
});

describe('vertex failures', () => {
  it.each(['gem-then-oa', 'claude-then-oa'])(
    '%s: 429 RESOURCE_EXHAUSTED cools the channel down (no breaker failure) and falls back',
    async (alias) => {
      vx.setFault({ status: 429, times: 1 });
      const r = await openai().chat.completions.create({
        model: alias,
        messages: [{ role: 'user', content: 'busy' }],
      });
      expect(r.choices[0]!.message.content).toBe('Hello from oa: busy');
      expect(G.health.refusesNow('vx')).toBe('cooldown');
      expect(G.breakers.windowCounts('vx').failures).toBe(0);
    },
  );

  it.each(['gem-then-oa', 'claude-then-oa'])(
    '%s: 503 UNAVAILABLE and a garbage answer count against the breaker and fall back',
    async (alias) => {
      vx.setFault({ status: 503, times: 1 });
      const r = await openai().chat.completions.create({
        model: alias,
        messages: [{ role: 'user', content: 'down' }],
      });
      expect(r.choices[0]!.message.content).toBe('Hello from oa: down');
      expect(G.breakers.windowCounts('vx').failures).toBe(1);
      vx.setFault({ malformed: true, times: 1 });
      const s = await openai().chat.completions.create({
        model: alias,
        messages: [{ role: 'user', content: 'garbage' }],
        stream: true,
      });
      let text = '';
      for await (const c of s) text += c.choices[0]?.delta?.content ?? '';
      expect(text).toContain('Hello from oa: garbage');
      expect(G.breakers.windowCounts('vx').failures).toBe(2);
      expect(G.health.refusesNow('vx')).toBeNull();
    },
  );

  it("Google's 400 INVALID_ARGUMENT is the client's: a 400, no fallback, breaker untouched", async () => {
    const oaCalls = oa.stats.requests;
    vx.setFault({ status: 400, errorMessage: 'Request contains an invalid argument.', times: 1 });
    const err = await openai()
      .chat.completions.create({ model: 'gem-then-oa', messages: [{ role: 'user', content: 'x' }] })
      .then(
        () => null,
        (e: unknown) => e as { status: number; message: string },
      );
    expect(err).toMatchObject({ status: 400 });
    expect(err!.message).toContain('invalid argument');
    // A Gemini client gets Google's own body.
    vx.setFault({ status: 400, errorMessage: 'Request contains an invalid argument.', times: 1 });
    const g = await fetch(`${G.url}/v1beta/models/gem-then-oa:generateContent`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-goog-api-key': sk },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'x' }] }] }),
    });
    expect(g.status).toBe(400);
    expect(await g.json()).toMatchObject({ error: { code: 400, status: 'INVALID_ARGUMENT' } });
    expect(oa.stats.requests).toBe(oaCalls);
    expect(G.breakers.windowCounts('vx').failures).toBe(0);
    expect(G.health.refusesNow('vx')).toBeNull();
  });

  it("Claude's own 400 (Anthropic's shape) is the client's too, in each client's shape", async () => {
    const oaCalls = oa.stats.requests;
    const fault = {
      status: 400,
      errorCode: 'invalid_request_error',
      errorMessage: 'messages: roles must alternate',
      times: 1,
    };
    vx.setFault(fault);
    const a = await anthropic()
      .messages.create({ model: 'claude-then-oa', max_tokens: 8, messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e as { status: number; error: unknown });
    expect(a).toMatchObject({
      status: 400,
      error: { type: 'error', error: { type: 'invalid_request_error' } },
    });
    vx.setFault(fault);
    const g = await fetch(`${G.url}/v1beta/models/claude-then-oa:generateContent`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-goog-api-key': sk },
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'x' }] }] }),
    });
    expect(g.status).toBe(400);
    const gb = (await g.json()) as { error: { message: string; status: string } };
    expect(gb.error.message).toContain('roles must alternate');
    expect(gb.error.status).toBe('INVALID_ARGUMENT');
    expect(oa.stats.requests).toBe(oaCalls);
    expect(G.breakers.windowCounts('vx').failures).toBe(0);
  });

  it.each([
    ['oa-then-gem', 'vx'],
    ['oa-then-claude', 'vx'],
  ])('%s: a 500 from OpenAI falls back to Vertex, billed to the Vertex channel', async (alias, channel) => {
    oa.setFault({ status: 500, times: 1 });
    const { data, response } = await openai()
      .chat.completions.create({ model: alias, messages: [{ role: 'user', content: 'to vertex' }] })
      .withResponse();
    expect(data.choices[0]!.message.content).toBe('Hello from vx: to vertex');
    expect(data.model).toBe(alias);
    expect((await journalOf(response.headers.get('x-request-id'))).channel).toBe(channel);
    expect(G.breakers.windowCounts('oa').failures).toBe(1);
  });
});
