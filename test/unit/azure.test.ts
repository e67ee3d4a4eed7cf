/**
 * Azure OpenAI as a provider kind: the addressing (deployments with api-version, or the v1 API), the auth
 * (api-key, or a channel's Entra ID bearer header instead), the fake Azure checked against the official
 * `AzureOpenAI` client, Azure's error bodies classified, and streams that open with Azure's
 * `prompt_filter_results` chunk relayed to OpenAI clients and translated for Anthropic ones.
 */
import OpenAI, { AzureOpenAI } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AZURE_CONTENT_FILTER_TRIGGER, type FakeAzureUpstream, startFakeAzure } from '../../fakes/index.js';
import { contentFilterBody } from '../../fakes/azure.js';
import { toChannel } from '../../src/config/repo.js';
import { validateWrite } from '../../src/config/validate.js';
import { GatewayError } from '../../src/core/errors.js';
import { SseParser } from '../../src/lib/sse.js';
import { AZURE_GA_API_VERSION, azureHeaders, azurePath } from '../../src/providers/azure.js';
import { createExchange } from '../../src/providers/index.js';
import { CAPABILITIES, providerDeclaration } from '../../src/providers/registry.js';
import type { Exchange, UpstreamEndpoint } from '../../src/providers/types.js';

let az: FakeAzureUpstream;
beforeAll(async () => {
  az = await startFakeAzure({ apiKey: 'az-key', entraToken: 'entra-token' });
});
afterAll(() => az?.close());

const ep = (baseUrl: string, extra: Partial<UpstreamEndpoint> = {}): UpstreamEndpoint => ({
  code: 'az',
  provider: 'azure',
  baseUrl,
  credential: 'az-key',
  headers: {},
  ...extra,
});

const chat = (extra: Record<string, unknown> = {}) => ({
  model: 'alias',
  messages: [{ role: 'user', content: 'hello azure' }],
  ...extra,
});

/** Sends an exchange's call to the fake as the transport does (base URL + path). */
async function send(e: UpstreamEndpoint, ex: Exchange) {
  const c = ex.call;
  const r = await fetch(e.baseUrl + c.path, {
    method: 'POST',
    headers: c.headers,
    body: c.body as string,
  });
  return { status: r.status, text: await r.text(), recorded: az.requests.at(-1)! };
}

/** Runs an SSE answer through the exchange's stream translator: what the client would receive. */
function translate(ex: Exchange, sse: string): { out: string; tr: ReturnType<Exchange['streamTranslator']> } {
  const tr = ex.streamTranslator();
  let out = '';
  for (const ev of new SseParser().push(sse)) out += tr.onEvent(ev);
  out += tr.end();
  return { out, tr };
}

describe('azure addressing and auth', () => {
  it('deployments mode: the deployment in the path, api-version from the setting or the GA default', () => {
    const base = 'https://res.openai.azure.com';
    expect(azurePath(ep(base), '/chat/completions', 'gpt4o-prod')).toBe(
      `/openai/deployments/gpt4o-prod/chat/completions?api-version=${AZURE_GA_API_VERSION}`,
    );
    expect(AZURE_GA_API_VERSION).toBe('2024-10-21');
    expect(azurePath(ep(base, { apiVersion: '2025-04-01-preview' }), '/embeddings', 'emb')).toBe(
      '/openai/deployments/emb/embeddings?api-version=2025-04-01-preview',
    );
    // A base URL that already names /openai is not doubled; Responses is resource-scoped.
    expect(azurePath(ep(base + '/openai'), '/audio/speech', 'tts')).toBe(
      `/deployments/tts/audio/speech?api-version=${AZURE_GA_API_VERSION}`,
    );
    expect(azurePath(ep(base), '/responses', 'x')).toBe(
      `/openai/responses?api-version=${AZURE_GA_API_VERSION}`,
    );
    for (const p of ['/audio/transcriptions', '/audio/translations', '/images/edits'])
      expect(azurePath(ep(base), p, 'd')).toBe(
        `/openai/deployments/d${p}?api-version=${AZURE_GA_API_VERSION}`,
      );
    expect(() => azurePath(ep(base), '/videos', 'd')).toThrow(GatewayError);
  });

  it('v1 mode: OpenAI paths unchanged, no api-version', () => {
    const e = ep('https://res.openai.azure.com/openai/v1', { apiVersion: '2024-10-21' });
    expect(azurePath(e, '/chat/completions', 'd')).toBe('/chat/completions');
    expect(azurePath(e, '/responses', 'd')).toBe('/responses');
  });

  it('api-key carries the credential; a channel Authorization header (Entra ID) replaces it', () => {
    const h = { 'content-type': 'application/json', authorization: 'Bearer az-key', 'x-team': 'a' };
    expect(azureHeaders(h, ep('https://x'))).toEqual({
      'content-type': 'application/json',
      'x-team': 'a',
      'api-key': 'az-key',
    });
    const entra = ep('https://x', { headers: { Authorization: 'Bearer entra-token' } });
    const out = azureHeaders(h, entra);
    expect(out.Authorization).toBe('Bearer entra-token');
    expect(out).not.toHaveProperty('api-key');
    expect(out).not.toHaveProperty('authorization');
    // Entra ID only: no credential stored at all.
    expect(azureHeaders(h, { ...entra, credential: '' })).not.toHaveProperty('api-key');
  });

  it('is declared: every OpenAI-native dialect, api-key auth, apiVersion validated as a setting', () => {
    const d = providerDeclaration('azure');
    expect(d.auth).toBe('api-key');
    for (const dl of ['openai_chat', 'openai_embeddings', 'openai_responses', 'openai_speech'] as const)
      expect(d.native.has(dl)).toBe(true);
    expect(CAPABILITIES.azure.has('anthropic_messages')).toBe(true);
    const write = (settings: unknown) =>
      validateWrite(
        'channel',
        { code: 'az', provider: 'azure', base_url: 'https://res.openai.azure.com', settings },
        'create',
      );
    const stored = write({ apiVersion: '2025-04-01-preview' }).settings;
    const settings = JSON.parse(String(stored));
    expect(settings).toEqual({ apiVersion: '2025-04-01-preview' });
    // Carried into the runtime channel (which is the UpstreamEndpoint the exchange reads).
    const row = { id: 1, code: 'az', name: 'az', provider: 'azure', base_url: 'https://r.openai.azure.com/' };
    const ch = toChannel({ ...row, settings, credential: '', enabled: true, weight: 1, version_no: 1 });
    expect(ch.apiVersion).toBe('2025-04-01-preview');
    expect(ch.baseUrl).toBe('https://r.openai.azure.com');
    expect(toChannel({ ...row, settings: {}, credential: '' }).apiVersion).toBeUndefined();
    expect(() => write({ apiVersion: 'yesterday' })).toThrow(/apiVersion/);
    expect(() => write({ apiVersion: 20241021 })).toThrow(/apiVersion/);
  });
});

describe('the fake against the official AzureOpenAI client', () => {
  const client = (extra: Record<string, unknown> = {}) =>
    new AzureOpenAI({
      endpoint: az.url,
      apiVersion: AZURE_GA_API_VERSION,
      maxRetries: 0,
      ...(extra.azureADTokenProvider ? {} : { apiKey: 'az-key' }),
      ...extra,
    });

  it('chat JSON and stream, with api-key and with an Entra ID token', async () => {
    const r = await client().chat.completions.create({
      model: 'my-deployment',
      messages: [{ role: 'user', content: 'hi there' }],
    });
    expect(r.choices[0]!.message.content).toContain('hi there');
    expect(r.model).toBe('my-deployment');
    const rec = az.requests.at(-1)!;
    expect(rec.path).toBe('/openai/deployments/my-deployment/chat/completions');
    expect(rec.headers['api-key']).toBe('az-key');

    const stream = await client({ azureADTokenProvider: async () => 'entra-token' }).chat.completions.create({
      model: 'my-deployment',
      messages: [{ role: 'user', content: 'stream please' }],
      stream: true,
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    expect(az.requests.at(-1)!.headers.authorization).toBe('Bearer entra-token');
    // Azure's first chunk: prompt filter results and no choices.
    expect(chunks[0]!.choices).toEqual([]);
    expect(chunks[0]).toHaveProperty('prompt_filter_results');
    expect(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('')).toContain('stream please');
  });

  it('embeddings through the deployment; the v1 API through the plain OpenAI client', async () => {
    const e = await client().embeddings.create({ model: 'emb-deploy', input: 'vector me' });
    expect(e.data[0]!.embedding.length).toBeGreaterThan(0);
    expect(az.requests.at(-1)!.path).toBe('/openai/deployments/emb-deploy/embeddings');
    const v1 = new OpenAI({ baseURL: az.url + '/openai/v1', apiKey: 'entra-token', maxRetries: 0 });
    const r = await v1.chat.completions.create({
      model: 'v1-deployment',
      messages: [{ role: 'user', content: 'v1 hello' }],
    });
    expect(r.choices[0]!.message.content).toContain('v1 hello');
    expect(az.requests.at(-1)!.path).toBe('/openai/v1/chat/completions');
  });

  it("answers Azure's errors: a wrong key, no api-version, the content filter", async () => {
    const bad = new AzureOpenAI({
      endpoint: az.url,
      apiVersion: AZURE_GA_API_VERSION,
      apiKey: 'nope',
      maxRetries: 0,
    });
    await expect(
      bad.chat.completions.create({ model: 'd', messages: [{ role: 'user', content: 'x' }] }),
    ).rejects.toMatchObject({ status: 401 });
    const noVersion = await fetch(az.url + '/openai/deployments/d/chat/completions', {
      method: 'POST',
      headers: { 'api-key': 'az-key', 'content-type': 'application/json' },
      body: JSON.stringify(chat()),
    });
    expect(noVersion.status).toBe(404);
    expect(await noVersion.json()).toEqual({ error: { code: '404', message: 'Resource not found' } });
    await expect(
      client().chat.completions.create({
        model: 'd',
        messages: [{ role: 'user', content: `please ${AZURE_CONTENT_FILTER_TRIGGER}` }],
      }),
    ).rejects.toMatchObject({ status: 400, code: 'content_filter' });
  });
});

describe('azure exchanges against the fake', () => {
  it('deployments and v1: chat JSON goes to the right path with api-key, usage read', async () => {
    for (const [base, path] of [
      [az.url, `/openai/deployments/gpt-dep/chat/completions`],
      [az.url + '/openai/v1', '/openai/v1/chat/completions'],
    ] as const) {
      const e = ep(base, { apiVersion: '2024-10-21' });
      const ex = createExchange('openai_chat', chat(), e, 'gpt-dep', 'alias');
      const { status, text, recorded } = await send(e, ex);
      expect(status).toBe(200);
      expect(recorded.path).toBe(path);
      expect(recorded.headers['api-key']).toBe('az-key');
      expect(recorded.headers.authorization).toBeUndefined();
      const j = ex.decodeJson(text);
      expect((j.body as { model: string }).model).toBe('alias');
      expect(j.usage!.inputTokens).toBeGreaterThan(0);
    }
  });

  it('an Entra ID channel header reaches Azure as the bearer, with no api-key', async () => {
    const e = ep(az.url, { credential: '', headers: { authorization: 'Bearer entra-token' } });
    const { status, recorded } = await send(e, createExchange('openai_chat', chat(), e, 'd', 'alias'));
    expect(status).toBe(200);
    expect(recorded.headers.authorization).toBe('Bearer entra-token');
    expect(recorded.headers['api-key']).toBeUndefined();
  });

  it('a stream opening with prompt_filter_results: relayed to an OpenAI client, billed from usage', async () => {
    const e = ep(az.url);
    const ex = createExchange('openai_chat', chat({ stream: true }), e, 'd', 'alias');
    const { text } = await send(e, ex);
    expect(text.startsWith('data: {"choices":[],"created":0,"id":"","model":""')).toBe(true);
    const { out, tr } = translate(ex, text);
    expect(tr.done).toBe(true);
    expect(tr.usage()!.outputTokens).toBeGreaterThan(0);
    const events = out
      .split('\n\n')
      .filter((s) => s.startsWith('data: {'))
      .map((s) => JSON.parse(s.slice(6)));
    // The leading chunk reaches the client (an Azure client expects it), with the model renamed.
    expect(events[0].choices).toEqual([]);
    expect(events.map((c) => c.choices[0]?.delta?.content ?? '').join('')).toContain('hello azure');
    expect(out.trimEnd().endsWith('data: [DONE]')).toBe(true);
  });

  it('the same stream translated for an Anthropic Messages client (the chat pivot)', async () => {
    const e = ep(az.url);
    const ex = createExchange(
      'anthropic_messages',
      { model: 'alias', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'pivot me' }] },
      e,
      'd',
      'alias',
    );
    const { text } = await send(e, ex);
    expect(text).toContain('prompt_filter_results');
    const { out, tr } = translate(ex, text);
    const types = [...out.matchAll(/^event: (\S+)$/gm)].map((m) => m[1]);
    expect(types[0]).toBe('message_start');
    expect(types.at(-1)).toBe('message_stop');
    const deltas = [...out.matchAll(/"text_delta","text":"([^"]*)"/g)].map((m) => m[1]).join('');
    expect(deltas).toContain('pivot me');
    expect(tr.usage()!.inputTokens).toBeGreaterThan(0);
  });
});

describe('the prompt_filter_results chunk through the other pivots', () => {
  it('a Gemini client and a Responses client (through chat) read the stream whole', async () => {
    const e = ep(az.url, { nativeResponses: false });
    const gem = createExchange(
      'gemini',
      { stream: true, contents: [{ role: 'user', parts: [{ text: 'gemini via azure' }] }] },
      e,
      'd',
      'alias',
    );
    const g = translate(gem, (await send(e, gem)).text);
    const said = (out: string, re: RegExp) => [...out.matchAll(re)].map((m) => m[1]).join('');
    expect(said(g.out, /"text":"([^"]*)"/g)).toContain('gemini via azure');
    expect(g.tr.usage()!.outputTokens).toBeGreaterThan(0);
    const rsp = createExchange(
      'openai_responses',
      { model: 'alias', input: 'responses via azure', stream: true },
      e,
      'd',
      'alias',
    );
    const { text, recorded } = await send(e, rsp);
    expect(recorded.path).toBe('/openai/deployments/d/chat/completions');
    const r = translate(rsp, text);
    expect(said(r.out, /"type":"response\.output_text\.delta"[^}]*"delta":"([^"]*)"/g)).toContain(
      'responses via azure',
    );
    expect(r.out).toContain('response.completed');
    expect(r.out).not.toMatch(/^event: (error|response\.failed)$/m);
  });
});

describe("Azure's error bodies classified", () => {
  const classify = providerDeclaration('azure').classify;

  it('the content filter 400 is the request’s fault (content_policy: no breaker failure, no fallback)', () => {
    const f = classify(400, {}, JSON.stringify(contentFilterBody()));
    expect(f.kind).toBe('content_policy');
    expect(f.countsAsFailure).toBe(false);
    expect(f.tryNext).toBe(false);
    // Told apart by innererror alone, whatever the outer code says.
    const inner = classify(
      400,
      {},
      '{"error":{"code":"BadRequest","message":"blocked","innererror":{"code":"ResponsibleAIPolicyViolation"}}}',
    );
    expect(inner.kind).toBe('content_policy');
    // Azure's image refusal spells its code in camel case.
    expect(classify(400, {}, '{"error":{"code":"contentFilter","message":"x"}}').kind).toBe('content_policy');
  });

  it('429 with retry-after-ms or retry-after cools the channel down; 401 takes the key out; 500 falls back', () => {
    const body = '{"error":{"code":"429","message":"Requests ... have exceeded token rate limit"}}';
    expect(classify(429, { 'retry-after-ms': '1500', 'retry-after': '2' }, body)).toMatchObject({
      kind: 'rate_limited',
      cooldownMs: 1500,
      countsAsFailure: false,
    });
    expect(classify(429, { 'retry-after': '3' }, body).cooldownMs).toBe(3000);
    const denied = classify(
      401,
      {},
      '{"error":{"code":"401","message":"Access denied due to invalid subscription key"}}',
    );
    expect(denied).toMatchObject({ kind: 'auth_failed', credential: 'invalid' });
    const s = classify(500, {}, '{"error":{"code":"InternalServerError","message":"oops"}}');
    expect(s).toMatchObject({ kind: 'server_error', countsAsFailure: true, tryNext: true });
  });
});
