/**
 * Azure OpenAI channels through a gateway on real PostgreSQL and Redis, in both addressing modes
 * (deployments with api-version, and the v1 API): chat JSON and stream, tools, embeddings, each billed in
 * a balanced journal; an Anthropic client pivoted onto Azure's streams; the content-filter 400 answered
 * to the client as a 400 without a breaker failure or a fallback; a 500 falling back to another
 * provider's channel and back; a 429's Retry-After cooling the channel down.
 */
import OpenAI from 'openai';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import {
  AZURE_CONTENT_FILTER_TRIGGER,
  type FakeAzureUpstream,
  startFakeAzure,
  startFakeOpenAI,
} from '../../fakes/index.js';
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
let az: FakeAzureUpstream;
let oa: FakeUpstream;
let db: pg.Pool;
let sk: string;
const admin = adminApi(() => G.url);

const openai = () => new OpenAI({ baseURL: G.url + '/v1', apiKey: sk, maxRetries: 0 });

const journalOf = (requestId: string | null) => saleJournalOf(G, db, requestId);

beforeAll(async () => {
  S = await ServiceSuite.open();
  [az, oa] = await Promise.all([
    startFakeAzure({ name: 'az', apiKey: 'az-key' }),
    startFakeOpenAI({ name: 'oa' }),
  ]);
  G = await S.gateway();
  db = S.pool();
  const settings = { breaker: LENIENT_BREAKER };
  await admin('POST', '/channels', {
    code: 'az-dep',
    provider: 'azure',
    base_url: az.url,
    credential: 'az-key',
    settings: { ...settings, apiVersion: '2024-10-21' },
  });
  await admin('POST', '/channels', {
    code: 'az-v1',
    provider: 'azure',
    base_url: az.url + '/openai/v1/',
    credential: 'az-key',
    settings,
  });
  await openaiChannel(admin, 'oa', oa, settings);
  const alias = (name: string, ...tiers: Array<[string, string]>) => chainAlias(admin, name, ...tiers);
  await alias('az', ['az-dep', 'gpt4o-dep']);
  await alias('az1', ['az-v1', 'gpt4o-dep']);
  await alias('az-emb', ['az-dep', 'emb-dep']);
  await alias('az1-emb', ['az-v1', 'emb-dep']);
  await alias('az-then-oa', ['az-dep', 'gpt4o-dep'], ['oa', 'gpt-4o-mini']);
  await alias('oa-then-az', ['oa', 'gpt-4o-mini'], ['az-dep', 'gpt4o-dep']);
  for (const a of ['az', 'az1', 'az-emb', 'az1-emb', 'az-then-oa', 'oa-then-az'])
    await admin('POST', '/prices', { alias: a, ...TOKEN_PRICES });
  sk = (await newAppKey(admin, { name: 'azure' })).sk;
  await waitFor(() => G.config.alias('oa-then-az') && G.config.price('oa-then-az', null), 3_000, 5);
}, 60_000);

afterEach(async () => {
  az.setFault(null);
  oa.setFault(null);
  az.azure.contentFilter = false;
  await resetChannels(G, ['az-dep', 'az-v1', 'oa']);
});

afterAll(() => S?.close(az, oa));

const MODES: Array<[string, string, string]> = [
  ['deployments', 'az', '/openai/deployments/gpt4o-dep/chat/completions'],
  ['v1', 'az1', '/openai/v1/chat/completions'],
];

describe('azure channels, both modes', () => {
  it.each(MODES)(
    '%s: chat JSON and stream reach Azure, answered under the alias, billed',
    async (_m, alias, path) => {
      az.resetStats();
      const { data, response } = await openai()
        .chat.completions.create({ model: alias, messages: [{ role: 'user', content: 'hello azure' }] })
        .withResponse();
      expect(data.model).toBe(alias);
      expect(data.choices[0]!.message.content).toBe('Hello from az: hello azure');
      const rec = az.requests.at(-1)!;
      expect(rec.path).toBe(path);
      expect(rec.headers['api-key']).toBe('az-key');
      expect(rec.headers.authorization).toBeUndefined();
      const j = await journalOf(response.headers.get('x-request-id'));
      expect(j.channel).toBe(alias === 'az' ? 'az-dep' : 'az-v1');
      expect(j.usage.input_tokens).toBeGreaterThan(0);
      expect(j.usage.output_tokens).toBeGreaterThan(0);

      const { data: stream, response: sres } = await openai()
        .chat.completions.create({
          model: alias,
          messages: [{ role: 'user', content: 'stream azure' }],
          stream: true,
        })
        .withResponse();
      const chunks = [];
      for await (const c of stream) chunks.push(c);
      // Azure's leading prompt_filter_results chunk (no choices) passes through; the text is intact.
      expect(chunks.some((c) => c.choices.length === 0)).toBe(true);
      expect(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('')).toContain('stream azure');
      const sj = await journalOf(sres.headers.get('x-request-id'));
      expect(sj.usage.output_tokens).toBeGreaterThan(0);
    },
  );

  it.each(MODES)('%s: tool calls, JSON and streamed', async (_m, alias) => {
    const tools = [
      {
        type: 'function' as const,
        function: { name: 'lookup', parameters: { type: 'object', properties: {} } },
      },
    ];
    const r = await openai().chat.completions.create({
      model: alias,
      messages: [{ role: 'user', content: 'find gateways' }],
      tools,
    });
    expect(r.choices[0]!.finish_reason).toBe('tool_calls');
    expect(r.choices[0]!.message.tool_calls![0]).toMatchObject({ function: { name: 'lookup' } });
    const s = await openai().chat.completions.create({
      model: alias,
      messages: [{ role: 'user', content: 'find gateways' }],
      tools,
      stream: true,
    });
    let args = '';
    for await (const c of s)
      for (const t of c.choices[0]?.delta?.tool_calls ?? []) args += t.function?.arguments ?? '';
    expect(JSON.parse(args)).toEqual({ query: 'find gateways' });
  });

  it.each([
    ['deployments', 'az-emb', '/openai/deployments/emb-dep/embeddings'],
    ['v1', 'az1-emb', '/openai/v1/embeddings'],
  ])('%s: embeddings, billed', async (_m, alias, path) => {
    const { data, response } = await openai()
      .embeddings.create({ model: alias, input: ['one', 'two'] })
      .withResponse();
    expect(data.data).toHaveLength(2);
    expect(data.model).toBe(alias);
    expect(az.requests.at(-1)!.path).toBe(path);
    expect((await journalOf(response.headers.get('x-request-id'))).usage.input_tokens).toBeGreaterThan(0);
  });

  it('v1: the Responses API goes to Azure natively, billed', async () => {
    const { data, response } = await openai()
      .responses.create({ model: 'az1', input: 'respond from azure' })
      .withResponse();
    expect(data.output_text).toContain('respond from azure');
    expect(az.requests.at(-1)!.path).toBe('/openai/v1/responses');
    expect((await journalOf(response.headers.get('x-request-id'))).usage.input_tokens).toBeGreaterThan(0);
  });

  it('an Anthropic Messages client streams from an Azure deployment (the chat pivot)', async () => {
    const res = await fetch(G.url + '/v1/messages', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': sk, 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({
        model: 'az',
        max_tokens: 64,
        stream: true,
        messages: [{ role: 'user', content: 'pivot through azure' }],
      }),
    });
    expect(res.status).toBe(200);
    const text = await res.text();
    const types = [...text.matchAll(/^event: (\S+)$/gm)].map((m) => m[1]);
    expect(types[0]).toBe('message_start');
    expect(types.at(-1)).toBe('message_stop');
    expect(types).not.toContain('error');
    const said = [...text.matchAll(/"text_delta","text":"([^"]*)"/g)].map((m) => m[1]).join('');
    expect(said).toContain('pivot through azure');
    expect((await journalOf(res.headers.get('x-request-id'))).usage.output_tokens).toBeGreaterThan(0);
  });
});

describe('azure failures', () => {
  it("the content filter's 400 reaches the client as a 400: no breaker failure, no fallback", async () => {
    oa.resetStats();
    const calls = az.stats.requests;
    const err = await openai()
      .chat.completions.create({
        model: 'az-then-oa',
        messages: [{ role: 'user', content: `tell me ${AZURE_CONTENT_FILTER_TRIGGER}` }],
      })
      .catch((e: unknown) => e as { status: number; code: string });
    // An OpenAI client reads Azure's own code (the same error shape), as an Azure client would.
    expect(err).toMatchObject({ status: 400, code: 'content_filter' });
    expect(az.stats.requests).toBe(calls + 1);
    expect(oa.stats.requests).toBe(0);
    expect(G.breakers.windowCounts('az-dep').failures).toBe(0);
    expect(G.health.refusesNow('az-dep')).toBeNull();
    // The switch refuses a stream up front the same way.
    az.azure.contentFilter = true;
    const streamed = await openai()
      .chat.completions.create({
        model: 'az-then-oa',
        messages: [{ role: 'user', content: 'hi' }],
        stream: true,
      })
      .catch((e: unknown) => e as { status: number });
    expect(streamed).toMatchObject({ status: 400 });
    expect(oa.stats.requests).toBe(0);
    // An Anthropic client gets a 400 in its own shape.
    const an = await fetch(G.url + '/v1/messages', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': sk, 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({
        model: 'az-then-oa',
        max_tokens: 16,
        messages: [{ role: 'user', content: 'x' }],
      }),
    });
    expect(an.status).toBe(400);
    expect(await an.json()).toMatchObject({ type: 'error', error: { type: 'invalid_request_error' } });
    expect(oa.stats.requests).toBe(0);
    expect(G.breakers.windowCounts('az-dep').failures).toBe(0);
  });

  it('a 500 from Azure falls back to the OpenAI channel, and a 500 from OpenAI falls back to Azure', async () => {
    await expectFallbackBothWays({
      g: G,
      openai,
      journalOf,
      provider: { fake: az, name: 'az' },
      oa: { fake: oa, name: 'oa' },
      status: 500,
      channel: 'az-dep',
      there: 'az-then-oa',
      back: 'oa-then-az',
    });
  });

  it('a 429 with Retry-After cools the Azure channel down (not a breaker failure); the chain moves on', async () => {
    az.setFault({ status: 429, retryAfter: 30, times: 1 });
    const r = await openai().chat.completions.create({
      model: 'az-then-oa',
      messages: [{ role: 'user', content: 'busy' }],
    });
    expect(r.choices[0]!.message.content).toBe('Hello from oa: busy');
    expect(G.health.refusesNow('az-dep')).toBe('cooldown');
    expect(G.breakers.windowCounts('az-dep').failures).toBe(0);
  });
});
