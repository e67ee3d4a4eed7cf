/**
 * Google Vertex AI as a provider kind: addressing (project, location, global host, publisher by model
 * name or setting), the Gemini and Anthropic exchanges re-addressed (Anthropic's body without `model` and
 * with `anthropic_version`), the cross-publisher pivots, both error shapes classified, the settings
 * validated and carried into the runtime channel, and the fake checked against the official
 * `@google/genai` client in Vertex mode.
 */
import { GoogleGenAI, type GoogleGenAIOptions } from '@google/genai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeVertexUpstream, startFakeVertex } from '../../fakes/index.js';
import { toChannel } from '../../src/config/repo.js';
import { validateWrite } from '../../src/config/validate.js';
import { geminiExchange } from '../../src/providers/gemini/exchange.js';
import { createExchange } from '../../src/providers/index.js';
import { PivotExchange } from '../../src/providers/pivot.js';
import { CAPABILITIES, providerDeclaration } from '../../src/providers/registry.js';
import type { UpstreamEndpoint } from '../../src/providers/types.js';
import {
  VERTEX_ANTHROPIC_VERSION,
  classifyVertex,
  locationOfHost,
  vertexPrefix,
  vertexTarget,
} from '../../src/providers/vertex/exchange.js';
import { serviceAccount, signedAssertion } from '../../src/providers/vertex/auth.js';

let fake: FakeVertexUpstream;
let sa: string;
beforeAll(async () => {
  fake = await startFakeVertex();
  sa = fake.serviceAccount();
});
afterAll(() => fake?.close());

const ep = (extra: Partial<UpstreamEndpoint> = {}): UpstreamEndpoint => ({
  code: 'vx',
  provider: 'vertex',
  baseUrl: 'https://us-east5-aiplatform.googleapis.com',
  credential: sa,
  headers: {},
  ...extra,
});

const chat = (extra: Record<string, unknown> = {}) => ({
  model: 'alias',
  messages: [{ role: 'user', content: 'hello vertex' }],
  ...extra,
});

const bodyOf = (b: unknown): Record<string, unknown> =>
  JSON.parse(typeof b === 'string' ? b : Buffer.from(b as Uint8Array).toString('utf8')) as Record<
    string,
    unknown
  >;

describe('vertex addressing', () => {
  it('picks the publisher: an explicit prefix, then the channel setting, then claude-* by name', () => {
    const rows: Array<[Partial<UpstreamEndpoint>, string, string, string]> = [
      [{}, 'claude-sonnet-4@20250514', 'anthropic', 'claude-sonnet-4@20250514'],
      [{}, 'gemini-2.5-flash', 'google', 'gemini-2.5-flash'],
      [{}, 'models/gemini-2.5-pro', 'google', 'gemini-2.5-pro'],
      [{}, 'anthropic/my-tuned-claude', 'anthropic', 'my-tuned-claude'],
      [{}, 'google/claude-lookalike', 'google', 'claude-lookalike'],
      [{ vertex: { publisher: 'anthropic' } }, 'house-model', 'anthropic', 'house-model'],
      [{ vertex: { publisher: 'google' } }, 'claude-x', 'google', 'claude-x'],
      [{ vertex: { publisher: 'google' } }, 'anthropic/claude-x', 'anthropic', 'claude-x'],
    ];
    for (const [extra, model, publisher, name] of rows)
      expect(vertexTarget(ep(extra), model), model).toEqual({ publisher, model: name });
  });

  it('project from the setting or the key file; location from the setting, the host, else us-central1', () => {
    const account = serviceAccount(sa);
    expect(account.projectId).toBe(fake.project);
    expect(vertexPrefix(ep(), account)).toBe(`/v1/projects/${fake.project}/locations/us-east5`);
    expect(locationOfHost('https://aiplatform.googleapis.com')).toBe('global');
    expect(locationOfHost('https://europe-west4-aiplatform.googleapis.com/')).toBe('europe-west4');
    expect(locationOfHost('http://127.0.0.1:9999')).toBeNull();
    expect(vertexPrefix(ep({ baseUrl: 'https://aiplatform.googleapis.com' }), account)).toBe(
      `/v1/projects/${fake.project}/locations/global`,
    );
    expect(vertexPrefix(ep({ baseUrl: 'http://10.0.0.1:8080' }), account)).toBe(
      `/v1/projects/${fake.project}/locations/us-central1`,
    );
    const set = ep({ vertex: { project: 'other', location: 'asia-east1' } });
    expect(vertexPrefix(set, account)).toBe('/v1/projects/other/locations/asia-east1');
    // A base URL naming the API version keeps it; no project anywhere: null (authorize refuses the call).
    expect(vertexPrefix(ep({ baseUrl: 'https://us-east5-aiplatform.googleapis.com/v1beta1' }), account)).toBe(
      `/projects/${fake.project}/locations/us-east5`,
    );
    expect(vertexPrefix(ep(), { ...account, projectId: undefined })).toBeNull();
  });

  it('Gemini: the Gemini exchange body, the Vertex path, no API key header', () => {
    for (const stream of [false, true]) {
      const body = chat({ stream, temperature: 0.2 });
      const ex = createExchange('openai_chat', body, ep(), 'gemini-2.5-flash', 'alias');
      const direct = geminiExchange(
        'openai_chat',
        body,
        { ...ep(), provider: 'gemini' },
        'gemini-2.5-flash',
        'alias',
      );
      expect(ex.call.path).toBe(
        `/v1/projects/${fake.project}/locations/us-east5/publishers/google/models/gemini-2.5-flash:` +
          (stream ? 'streamGenerateContent?alt=sse' : 'generateContent'),
      );
      expect(ex.call.body).toBe(direct.call.body);
      expect(ex.call.stream).toBe(stream);
      expect(Object.keys(ex.call.headers).map((k) => k.toLowerCase())).not.toContain('x-goog-api-key');
      // The key file never travels: the bearer token is added at authorize.
      expect(JSON.stringify(ex.call.headers)).not.toContain('private_key');
    }
  });

  it('Claude: Messages without model, anthropic_version in the body, rawPredict / streamRawPredict', () => {
    const msg = {
      model: 'alias',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'hi' }],
    };
    const a = createExchange('anthropic_messages', msg, ep(), 'claude-sonnet-4@20250514', 'alias', {
      anthropicBeta: 'prompt-caching-2024-07-31',
    });
    expect(a.call.path).toBe(
      `/v1/projects/${fake.project}/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict`,
    );
    const b = bodyOf(a.call.body);
    expect(b).not.toHaveProperty('model');
    expect(b.anthropic_version).toBe(VERTEX_ANTHROPIC_VERSION);
    expect(b.max_tokens).toBe(64);
    expect(a.call.headers['anthropic-beta']).toBe('prompt-caching-2024-07-31');
    const lower = Object.keys(a.call.headers).map((k) => k.toLowerCase());
    expect(lower).not.toContain('x-api-key');
    expect(lower).not.toContain('anthropic-version');

    const s = createExchange(
      'openai_chat',
      chat({ stream: true }),
      ep(),
      'claude-3-5-haiku@20241022',
      'alias',
    );
    expect(
      s.call.path.endsWith('/publishers/anthropic/models/claude-3-5-haiku@20241022:streamRawPredict'),
    ).toBe(true);
    const sb = bodyOf(s.call.body);
    expect(sb.stream).toBe(true);
    expect(sb).not.toHaveProperty('model');
    expect(sb.anthropic_version).toBe(VERTEX_ANTHROPIC_VERSION);
  });

  it('a client dialect the publisher does not speak goes through the chat pivot', () => {
    const gem = { contents: [{ role: 'user', parts: [{ text: 'hi' }] }] };
    const g = createExchange('gemini', gem, ep(), 'claude-sonnet-4@20250514', 'alias');
    expect(g).toBeInstanceOf(PivotExchange);
    expect(g.call.path).toMatch(/\/publishers\/anthropic\/models\/claude-sonnet-4@20250514:rawPredict$/);
    expect(bodyOf(g.call.body).anthropic_version).toBe(VERTEX_ANTHROPIC_VERSION);
    const msg = { model: 'alias', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] };
    const m = createExchange('anthropic_messages', msg, ep(), 'gemini-2.5-flash', 'alias');
    expect(m).toBeInstanceOf(PivotExchange);
    expect(m.call.path).toMatch(/\/publishers\/google\/models\/gemini-2\.5-flash:generateContent$/);
    expect(bodyOf(m.call.body)).toHaveProperty('contents');
    // OpenAI Responses reaches both publishers through the pivot; embeddings are not served.
    expect(CAPABILITIES.vertex.has('openai_responses')).toBe(true);
    expect(CAPABILITIES.vertex.has('openai_embeddings')).toBe(false);
  });

  it('is declared with Google error shape, bearer auth by authorize, and its settings validated', () => {
    const d = providerDeclaration('vertex');
    expect(d.errorShape).toBe('google');
    expect(d.auth).toBe('bearer');
    expect(typeof d.authorize).toBe('function');
    const write = (settings: unknown) =>
      validateWrite(
        'channel',
        { code: 'vx', provider: 'vertex', base_url: 'https://aiplatform.googleapis.com', settings },
        'create',
      );
    const vertex = { project: 'p1', location: 'global', publisher: 'anthropic' };
    const settings = JSON.parse(String(write({ vertex }).settings)) as Record<string, unknown>;
    expect(settings).toEqual({ vertex });
    const row = {
      id: 1,
      code: 'vx',
      name: 'vx',
      provider: 'vertex',
      base_url: 'https://aiplatform.googleapis.com/',
    };
    const ch = toChannel({ ...row, settings, credential: '', enabled: true, weight: 1, version_no: 1 });
    expect(ch.vertex).toEqual(vertex);
    expect(toChannel({ ...row, settings: {}, credential: '' }).vertex).toBeUndefined();
    expect(() => write({ vertex: { location: 'US East' } })).toThrow(/vertex\.location/);
    expect(() => write({ vertex: { publisher: 'meta' } })).toThrow(/vertex\.publisher/);
    expect(() => write({ vertex: { region: 'x' } })).toThrow(/vertex\.region/);
  });
});

describe('vertex failures, both shapes', () => {
  const google = (code: number, status: string, message = 'm') =>
    JSON.stringify({ error: { code, message, status } });
  const anthropic = (type: string, message = 'm') =>
    JSON.stringify({ type: 'error', error: { type, message } });
  const rows: Array<[string, number, string, Record<string, unknown>]> = [
    [
      '429 RESOURCE_EXHAUSTED',
      429,
      google(429, 'RESOURCE_EXHAUSTED', 'Quota exceeded'),
      { kind: 'rate_limited', countsAsFailure: false, tryNext: true },
    ],
    [
      '503 UNAVAILABLE',
      503,
      google(503, 'UNAVAILABLE'),
      { kind: 'server_error', countsAsFailure: true, tryNext: true },
    ],
    [
      '400 INVALID_ARGUMENT',
      400,
      google(400, 'INVALID_ARGUMENT'),
      { kind: 'client_error', countsAsFailure: false, tryNext: false },
    ],
    [
      '401 UNAUTHENTICATED',
      401,
      google(401, 'UNAUTHENTICATED'),
      { kind: 'auth_failed', credential: 'invalid', tryNext: true },
    ],
    [
      '403 PERMISSION_DENIED',
      403,
      google(403, 'PERMISSION_DENIED'),
      { kind: 'auth_failed', credential: 'invalid', tryNext: true },
    ],
    [
      'Claude 529 overloaded_error',
      529,
      anthropic('overloaded_error'),
      { kind: 'overloaded', countsAsFailure: true, tryNext: true },
    ],
    [
      'Claude 429 rate_limit_error',
      429,
      anthropic('rate_limit_error'),
      { kind: 'rate_limited', countsAsFailure: false },
    ],
    [
      'Claude 400 invalid_request_error',
      400,
      anthropic('invalid_request_error', 'max_tokens: Field required'),
      { kind: 'client_error', tryNext: false, upstreamType: 'invalid_request_error' },
    ],
    [
      'Claude 400 prompt too long',
      400,
      anthropic('invalid_request_error', 'prompt is too long: 210000 tokens > 200000 maximum'),
      { kind: 'context_length', tryNext: false },
    ],
    ['a proxy 502 in plain text', 502, 'Bad Gateway', { kind: 'server_error', countsAsFailure: true }],
  ];
  it.each(rows)('%s', (_name, status, body, want) => {
    const f = classifyVertex(status, {}, body);
    expect(f).toMatchObject({ status, ...want });
    // Google's bodies are passed on to Google-shaped clients as they are; Claude's are re-rendered.
    if (body.includes('"status"')) expect(f.body).toBe(body);
    else expect(f.body).toBeUndefined();
  });
  it('a 429 with a RetryInfo delay cools the channel down that long', () => {
    const body = JSON.stringify({
      error: {
        code: 429,
        message: 'Resource exhausted',
        status: 'RESOURCE_EXHAUSTED',
        details: [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: '7s' }],
      },
    });
    expect(classifyVertex(429, {}, body).cooldownMs).toBe(7000);
  });
});

describe('the fake against the official @google/genai client in Vertex mode', () => {
  it('generateContent and streamGenerateContent reach the same addresses the SDK builds', async () => {
    // The SDK's own token path is fixed to oauth2.googleapis.com; a token from the fake's endpoint is
    // handed to it through its auth client instead.
    const post = await fetch(`${fake.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
        assertion: signedAssertion(serviceAccount(sa), Date.now()),
      }),
    });
    expect(post.status).toBe(200);
    const { access_token } = (await post.json()) as { access_token: string };
    // google-auth-library's GoogleAuth asks its `authClient` for the request's headers, nothing else.
    type AuthClient = NonNullable<GoogleGenAIOptions['googleAuthOptions']>['authClient'];
    const authClient = {
      getRequestHeaders: () => Promise.resolve(new Headers({ authorization: `Bearer ${access_token}` })),
    } as unknown as AuthClient;
    const ai = new GoogleGenAI({
      vertexai: true,
      project: fake.project,
      location: 'us-east5',
      googleAuthOptions: { authClient },
      httpOptions: { baseUrl: fake.url },
    });
    const r = await ai.models.generateContent({ model: 'gemini-2.5-flash', contents: 'hello from the sdk' });
    expect(r.text).toContain('hello from the sdk');
    const seen = fake.requests.at(-1)!;
    expect(seen.path).toBe(
      `/v1beta1/projects/${fake.project}/locations/us-east5/publishers/google/models/gemini-2.5-flash:generateContent`,
    );
    expect(seen.headers.authorization).toBe(`Bearer ${access_token}`);
    let text = '';
    for await (const c of await ai.models.generateContentStream({
      model: 'gemini-2.5-flash',
      contents: 'stream it',
    }))
      text += c.text ?? '';
    expect(text).toContain('stream it');
    expect(fake.requests.at(-1)!.path).toMatch(/:streamGenerateContent$/);
    // The v1 API the gateway uses, through the SDK's own addressing.
    const v1 = new GoogleGenAI({
      vertexai: true,
      project: fake.project,
      location: 'us-east5',
      googleAuthOptions: { authClient },
      httpOptions: { baseUrl: fake.url, apiVersion: 'v1' },
    });
    expect((await v1.models.generateContent({ model: 'gemini-2.5-pro', contents: 'v1 too' })).text).toContain(
      'v1 too',
    );
    expect(fake.requests.at(-1)!.path).toBe(
      `/v1/projects/${fake.project}/locations/us-east5/publishers/google/models/gemini-2.5-pro:generateContent`,
    );
  });
});
