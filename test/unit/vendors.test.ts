/**
 * The OpenAI-compatible vendor kinds (src/providers/vendors.ts), table-driven: for each kind a chat request,
 * as JSON and as a stream, goes through the kind's exchange to the fake OpenAI upstream, which records what
 * arrived. Each row states what that vendor's upstream must receive (auth header, renamed, dropped and
 * defaulted fields) and which parameter it refuses (a 400 naming it, before any call). The admin API lists
 * every vendor kind with its quirks.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import { GatewayError } from '../../src/core/errors.js';
import { createExchange } from '../../src/providers/index.js';
import {
  CAPABILITIES,
  openAICompatible,
  PROVIDER_KINDS,
  providerDeclaration,
} from '../../src/providers/registry.js';
import type { PreparedCall, UpstreamEndpoint } from '../../src/providers/types.js';
import type { VendorKind } from '../../src/core/model.js';
import { vendorDeclarations } from '../../src/providers/vendors.js';
import { adminApi, startTestGateway } from '../helpers.js';

let oa: FakeUpstream;
let G: Awaited<ReturnType<typeof startTestGateway>>;
const admin = adminApi(() => G.url);

beforeAll(async () => {
  oa = await startFakeOpenAI({ name: 'oa-vendors' });
  G = await startTestGateway();
}, 60_000);
afterAll(async () => {
  await G?.close();
  await oa?.close();
});

const ep = (provider: VendorKind): UpstreamEndpoint => ({
  code: 'c',
  provider,
  baseUrl: oa.url + '/v1',
  credential: 'sk-vendor',
  headers: {},
});

async function send(e: UpstreamEndpoint, call: PreparedCall) {
  const r = await fetch(e.baseUrl + call.path, { method: 'POST', headers: call.headers, body: call.body });
  const text = await r.text();
  const recorded = oa.requests.at(-1)!;
  return { status: r.status, text, recorded, body: JSON.parse(recorded.text!) as Record<string, unknown> };
}

/** Every row's request carries these; each vendor's row says what its upstream receives instead. */
const REQUEST = {
  model: 'alias',
  messages: [{ role: 'user', content: 'hello there' }],
  max_completion_tokens: 7,
  seed: 42,
  store: false,
  temperature: 0.5,
};

interface Row {
  kind: VendorKind;
  /** Fields the upstream must receive with these values. */
  sent: Record<string, unknown>;
  /** Fields the upstream must not receive. */
  absent: string[];
  /** Whether a stream goes out with stream_options.include_usage (false: the vendor rejects the field). */
  streamUsage: boolean;
  /** A parameter the kind refuses, with a value. */
  refused?: [string, unknown];
}

const AS_SENT = { max_completion_tokens: 7, seed: 42, store: false, temperature: 0.5 };

const ROWS: Row[] = [
  {
    kind: 'mistral',
    sent: { max_tokens: 7, random_seed: 42, temperature: 0.5 },
    absent: ['max_completion_tokens', 'seed', 'store'],
    streamUsage: false,
  },
  { kind: 'groq', sent: AS_SENT, absent: [], streamUsage: true, refused: ['logprobs', true] },
  { kind: 'deepseek', sent: AS_SENT, absent: [], streamUsage: true },
  { kind: 'xai', sent: AS_SENT, absent: [], streamUsage: true },
  { kind: 'together', sent: AS_SENT, absent: [], streamUsage: true },
  {
    kind: 'fireworks',
    sent: { ...AS_SENT, context_length_exceeded_behavior: 'error' },
    absent: [],
    streamUsage: true,
  },
  { kind: 'openrouter', sent: AS_SENT, absent: [], streamUsage: true },
  { kind: 'perplexity', sent: AS_SENT, absent: [], streamUsage: true },
  { kind: 'cohere', sent: AS_SENT, absent: [], streamUsage: false },
  {
    kind: 'ollama',
    sent: { max_tokens: 7, seed: 42, store: false, temperature: 0.5 },
    absent: ['max_completion_tokens'],
    streamUsage: true,
  },
  { kind: 'vllm', sent: AS_SENT, absent: [], streamUsage: true },
  {
    kind: 'lmstudio',
    sent: { max_tokens: 7, seed: 42, store: false, temperature: 0.5 },
    absent: ['max_completion_tokens'],
    streamUsage: true,
  },
];

describe('each vendor kind, as its upstream receives a chat request', () => {
  it('the table covers every vendor kind, and each is registered and serves chat', () => {
    const vendors = Object.keys(vendorDeclarations(openAICompatible));
    expect(ROWS.map((r) => r.kind).sort()).toEqual(vendors.sort());
    expect(PROVIDER_KINDS).toEqual(expect.arrayContaining(vendors));
    for (const { kind } of ROWS) {
      expect(providerDeclaration(kind).kind).toBe(kind);
      expect(providerDeclaration(kind).auth).toBe('bearer');
      expect(CAPABILITIES[kind].has('openai_chat')).toBe(true);
      expect(CAPABILITIES[kind].has('anthropic_messages')).toBe(true); // through the chat pivot
    }
  });

  for (const row of ROWS) {
    it(`${row.kind}: JSON — bearer auth, the body with its quirks applied`, async () => {
      const e = ep(row.kind);
      const ex = createExchange('openai_chat', { ...REQUEST }, e, 'm-1', 'alias');
      const { status, recorded, body, text } = await send(e, ex.call);
      expect(status).toBe(200);
      expect(JSON.parse(text).choices[0].message.content).toMatch(/^Hello from oa-vendors/);
      expect(recorded.path).toBe('/v1/chat/completions');
      expect(recorded.headers.authorization).toBe('Bearer sk-vendor');
      expect(body).toMatchObject({ model: 'm-1', messages: REQUEST.messages, ...row.sent });
      for (const f of row.absent) expect(body).not.toHaveProperty(f);
      expect(body).not.toHaveProperty('stream_options');
    });

    it(`${row.kind}: stream — the same quirks, stream_options only where the vendor takes it`, async () => {
      const e = ep(row.kind);
      const ex = createExchange('openai_chat', { ...REQUEST, stream: true }, e, 'm-1', 'alias');
      const { status, body, text } = await send(e, ex.call);
      expect(status).toBe(200);
      expect(text).toContain('data: [DONE]');
      expect(body).toMatchObject({ model: 'm-1', stream: true, ...row.sent });
      for (const f of row.absent) expect(body).not.toHaveProperty(f);
      if (row.streamUsage) expect(body.stream_options).toEqual({ include_usage: true });
      else expect(body).not.toHaveProperty('stream_options');
    });

    if (row.refused) {
      const [param, value] = row.refused;
      it(`${row.kind}: ${param} is refused with a 400 naming it, before any call`, () => {
        const n = oa.requests.length;
        try {
          createExchange('openai_chat', { ...REQUEST, [param]: value }, ep(row.kind), 'm-1', 'alias');
          expect.unreachable();
        } catch (err) {
          expect(err).toBeInstanceOf(GatewayError);
          expect((err as GatewayError).status).toBe(400);
          expect((err as GatewayError).param).toBe(param);
        }
        expect(oa.requests.length).toBe(n);
      });
    }
  }

  it('groq refuses each documented parameter; a kind without the refusal passes it on', async () => {
    for (const [p, v] of [
      ['logprobs', true],
      ['top_logprobs', 3],
      ['logit_bias', { '50256': -100 }],
    ] as const)
      expect(() => createExchange('openai_chat', { ...REQUEST, [p]: v }, ep('groq'), 'm', 'a')).toThrow(
        GatewayError,
      );
    const e = ep('deepseek');
    const { body } = await send(
      e,
      createExchange('openai_chat', { ...REQUEST, logprobs: true }, e, 'm-1', 'alias').call,
    );
    expect(body.logprobs).toBe(true);
  });

  it('a vendor without stream_options: usage read from its final chunk, else the sent text for an estimate', () => {
    for (const kind of ['mistral', 'cohere'] as const) {
      const ex = createExchange('openai_chat', { ...REQUEST, stream: true }, ep(kind), 'm-1', 'alias');
      const t = ex.streamTranslator();
      const delta = (content: string, extra: Record<string, unknown> = {}) => ({
        event: '',
        data: JSON.stringify({
          id: 'x',
          object: 'chat.completion.chunk',
          model: 'm-1',
          choices: [{ index: 0, delta: { content }, finish_reason: null }],
          ...extra,
        }),
      });
      t.onEvent(delta('Hello '));
      // The final chunk carries both the last delta and the totals, as these vendors send it unasked.
      const last = t.onEvent(delta('world', { usage: { prompt_tokens: 11, completion_tokens: 2 } }));
      t.onEvent({ event: '', data: '[DONE]' });
      expect(t.usage()).toMatchObject({ inputTokens: 11, outputTokens: 2 });
      // The client didn't ask for usage: the totals are billed but not relayed.
      expect(last).not.toContain('prompt_tokens');
      expect(last).toContain('world');

      const bare = createExchange('openai_chat', { ...REQUEST, stream: true }, ep(kind), 'm-1', 'alias');
      const u = bare.streamTranslator();
      u.onEvent(delta('no totals here'));
      u.onEvent({ event: '', data: '[DONE]' });
      expect(u.usage()).toBeNull();
      expect(u.emittedText).toContain('no totals here');
    }
  });

  it('fireworks: a client that sets context_length_exceeded_behavior keeps its own value', async () => {
    const e = ep('fireworks');
    const ex = createExchange(
      'openai_chat',
      { ...REQUEST, context_length_exceeded_behavior: 'truncate' },
      e,
      'm-1',
      'alias',
    );
    expect((await send(e, ex.call)).body.context_length_exceeded_behavior).toBe('truncate');
  });

  it('mistral: a pivoted Anthropic Messages stream gets the quirks too', async () => {
    const e = ep('mistral');
    const ex = createExchange(
      'anthropic_messages',
      { model: 'alias', max_tokens: 9, stream: true, messages: [{ role: 'user', content: 'hi' }] },
      e,
      'm-1',
      'alias',
    );
    const { body } = await send(e, ex.call);
    expect(body).not.toHaveProperty('max_completion_tokens');
    expect(body).not.toHaveProperty('stream_options');
    expect(body.max_tokens).toBe(9);
  });
});

describe('GET /api/admin/v1/provider-kinds', () => {
  it('lists every vendor kind with its quirks as declared', async () => {
    const { data } = await admin('GET', '/provider-kinds');
    const byKind = new Map<string, any>(data.map((d: { kind: string }) => [d.kind, d]));
    for (const { kind } of ROWS) {
      const v = byKind.get(kind);
      expect(v, kind).toBeDefined();
      expect(v.auth).toBe('bearer');
      expect(v.error_shape).toBe('openai');
      expect(v.native_dialects).toContain('openai_chat');
      expect(v.description.length).toBeGreaterThan(10);
    }
    expect(byKind.get('mistral').quirks).toEqual({
      rename: { max_completion_tokens: 'max_tokens', seed: 'random_seed' },
      refuse: [],
      drop: ['stream_options', 'store'],
      defaults: {},
    });
    expect(byKind.get('groq').quirks.refuse).toEqual(['logprobs', 'top_logprobs', 'logit_bias']);
    expect(byKind.get('groq').native_dialects).toContain('openai_transcription');
    expect(byKind.get('cohere').quirks.drop).toEqual(['stream_options']);
    expect(byKind.get('fireworks').quirks.defaults).toEqual({ context_length_exceeded_behavior: 'error' });
    expect(byKind.get('ollama').quirks.rename).toEqual({ max_completion_tokens: 'max_tokens' });
    expect(byKind.get('deepseek').quirks).toEqual({ rename: {}, refuse: [], drop: [], defaults: {} });
  });
});
