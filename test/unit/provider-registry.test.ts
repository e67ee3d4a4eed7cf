/**
 * The provider registry: every kind is fully declared and accepted by config validation; the admin API
 * refuses an unknown kind with a 400 naming the field; a quirk declaration on the OpenAI base changes
 * exactly what the upstream receives (headers and body, as the fake OpenAI recorded them).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import { validateWrite } from '../../src/config/validate.js';
import { GatewayError } from '../../src/core/errors.js';
import { createExchange } from '../../src/providers/index.js';
import {
  CAPABILITIES,
  PROVIDER_KINDS,
  isProviderKind,
  openAICompatible,
  providerDeclaration,
} from '../../src/providers/registry.js';
import type { PreparedCall, UpstreamEndpoint } from '../../src/providers/types.js';
import { adminApi, startTestGateway } from '../helpers.js';

let oa: FakeUpstream;
let G: Awaited<ReturnType<typeof startTestGateway>>;
const admin = adminApi(() => G.url);

beforeAll(async () => {
  oa = await startFakeOpenAI({ name: 'oa-quirks' });
  G = await startTestGateway();
}, 60_000);
afterAll(async () => {
  await G?.close();
  await oa?.close();
});

const ep = (
  provider: UpstreamEndpoint['provider'],
  extra: Partial<UpstreamEndpoint> = {},
): UpstreamEndpoint => ({
  code: 'c',
  provider,
  baseUrl: oa.url + '/v1',
  credential: 'sk-upstream',
  headers: {},
  ...extra,
});

/** Sends a prepared call to the fake as the transport would (path under the base URL). */
async function send(e: UpstreamEndpoint, call: PreparedCall) {
  const r = await fetch(e.baseUrl + call.path, { method: 'POST', headers: call.headers, body: call.body });
  await r.text();
  return { status: r.status, recorded: oa.requests.at(-1)! };
}

const chat = (extra: Record<string, unknown> = {}) => ({
  model: 'alias',
  messages: [{ role: 'user', content: 'hello there' }],
  ...extra,
});

describe('the registry', () => {
  it('declares every kind fully, and config validation accepts each one', () => {
    expect(PROVIDER_KINDS).toEqual(expect.arrayContaining(['openai', 'anthropic', 'gemini', 'jobs']));
    for (const k of PROVIDER_KINDS) {
      const d = providerDeclaration(k);
      expect(d.kind).toBe(k);
      expect(typeof d.exchange).toBe('function');
      expect(typeof d.classify).toBe('function');
      expect(d.classify(429, {}, '{"error":{"message":"slow down"}}').kind).toBe('rate_limited');
      expect(CAPABILITIES[k]).toBeDefined();
      for (const kinds of [undefined, PROVIDER_KINDS])
        expect(
          validateWrite(
            'channel',
            { code: 'x', provider: k, base_url: 'https://api.example.com/v1' },
            'create',
            undefined,
            kinds,
          ).provider,
        ).toBe(k);
    }
    expect(isProviderKind('nope')).toBe(false);
    expect(() => validateWrite('channel', { provider: 'nope' }, 'patch', undefined, PROVIDER_KINDS)).toThrow(
      /unknown provider kind "nope"/,
    );
  });

  it('the admin API lists the kinds, and refuses an unknown one with a 400 naming provider', async () => {
    const { data } = await admin('GET', '/provider-kinds');
    expect(data.map((d: { kind: string }) => d.kind)).toEqual([...PROVIDER_KINDS]);
    const oc = data.find((d: { kind: string }) => d.kind === 'openai_compatible');
    expect(oc.quirks.rename).toEqual({ max_completion_tokens: 'max_tokens' });

    const r = await fetch(`${G.url}/api/admin/v1/channels`, {
      method: 'POST',
      headers: { authorization: 'Bearer ak-test-admin-token-0123456789', 'content-type': 'application/json' },
      body: JSON.stringify({
        code: 'x',
        provider: 'no_such_kind',
        base_url: 'https://api.example.com',
        credential: 'k',
      }),
    });
    expect(r.status).toBe(400);
    const err = (await r.json()) as { error: { param: string; message: string } };
    expect(err.error.param).toBe('provider');
    expect(err.error.message).toMatch(/unknown provider kind "no_such_kind"; known: openai, /);

    // A registered kind the old CHECK constraint didn't list is stored (the migration dropped it).
    const row = await admin('POST', '/channels', {
      code: 'compat',
      provider: 'openai_compatible',
      base_url: oa.url + '/v1',
      credential: 'k',
    });
    expect(row.provider).toBe('openai_compatible');
  });
});

describe('a quirk declaration on the OpenAI base, as the upstream receives it', () => {
  it('openai_compatible: max_completion_tokens goes out as max_tokens, bearer auth, the rest untouched', async () => {
    const e = ep('openai_compatible');
    const ex = createExchange(
      'openai_chat',
      chat({ max_completion_tokens: 7, temperature: 0.5 }),
      e,
      'm-1',
      'alias',
    );
    const { status, recorded } = await send(e, ex.call);
    expect(status).toBe(200);
    expect(recorded.headers.authorization).toBe('Bearer sk-upstream');
    const body = JSON.parse(recorded.text!);
    expect(body).toMatchObject({ model: 'm-1', max_tokens: 7, temperature: 0.5 });
    expect(body).not.toHaveProperty('max_completion_tokens');
  });

  it('openai_compatible: a parameter it refuses is a 400 naming it, before any call', () => {
    const n = oa.requests.length;
    try {
      createExchange('openai_chat', chat({ logprobs: true }), ep('openai_compatible'), 'm-1', 'alias');
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(GatewayError);
      expect((err as GatewayError).param).toBe('logprobs');
    }
    expect(oa.requests.length).toBe(n);
  });

  it('pivoted dialects get the quirks too (Anthropic Messages client -> openai_compatible channel)', async () => {
    const e = ep('openai_compatible');
    const ex = createExchange(
      'anthropic_messages',
      { model: 'alias', max_tokens: 9, messages: [{ role: 'user', content: 'hi' }] },
      e,
      'm-1',
      'alias',
    );
    const { recorded } = await send(e, ex.call);
    const body = JSON.parse(recorded.text!);
    expect(body).not.toHaveProperty('max_completion_tokens');
    expect(body.max_tokens).toBe(9);
  });

  it('an api-key auth variant: the credential travels in `api-key`, never as a bearer token', async () => {
    const decl = openAICompatible({
      kind: 'openai_compatible',
      description: 'api-key variant (test only)',
      auth: 'api-key',
      quirks: { rename: { max_completion_tokens: 'max_tokens' }, headers: { 'x-vendor-feature': 'on' } },
    });
    const e = ep('openai_compatible');
    const ex = decl.exchange('openai_chat', chat({ max_completion_tokens: 5 }), e, 'm-2', 'alias', {});
    const { status, recorded } = await send(e, ex.call);
    // The fake knows only OpenAI's bearer auth: it records the request, then answers 401.
    expect(status).toBe(401);
    expect(recorded.headers['api-key']).toBe('sk-upstream');
    expect(recorded.headers.authorization).toBeUndefined();
    expect(recorded.headers['x-vendor-feature']).toBe('on');
    expect(JSON.parse(recorded.text!)).toMatchObject({ model: 'm-2', max_tokens: 5 });
  });

  it('a plain openai channel is unchanged: max_completion_tokens passes as the client wrote it', async () => {
    const e = ep('openai');
    const ex = createExchange('openai_chat', chat({ max_completion_tokens: 7 }), e, 'm-1', 'alias');
    const { recorded } = await send(e, ex.call);
    expect(JSON.parse(recorded.text!).max_completion_tokens).toBe(7);
  });
});
