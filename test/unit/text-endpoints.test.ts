/**
 * The conversions behind /v1/completions, /v1/moderations, /v1/rerank and /v1/messages/count_tokens, next
 * to the code they prove: the completion <-> chat pivot (JSON and stream), the passthrough stream's usage
 * handling, Cohere v2's document and return_documents handling, the usage each one books, the local token
 * count, inbound validation, and the markup settings.
 */
import { describe, expect, it } from 'vitest';
import { settingsFromEnv } from '../../src/app/settings.js';
import { defaultMarkupBp } from '../../src/config/catalogue.js';
import { GatewayError } from '../../src/core/errors.js';
import { validateMore } from '../../src/http/validate-more.js';
import { estimateInputTokens } from '../../src/providers/anthropic/count-tokens.js';
import { createExchange } from '../../src/providers/index.js';
import {
  chatToCompletion,
  completionsPivot,
  completionsToChat,
} from '../../src/providers/openai/completions.js';
import type { ChatCompletion, ChatCompletionChunk } from '../../src/providers/openai/wire.js';
import { RerankExchange } from '../../src/providers/rerank.js';
import type { UpstreamEndpoint } from '../../src/providers/types.js';

const ep = (provider: string): UpstreamEndpoint =>
  ({ code: 'c', provider, baseUrl: 'http://x/v1', credential: 'k', headers: {} }) as UpstreamEndpoint;
const thrown = (f: () => unknown): GatewayError => {
  try {
    f();
  } catch (e) {
    return e as GatewayError;
  }
  throw new Error('did not throw');
};
const ev = (data: string) => ({ event: undefined, data }) as never;

describe('completions through the chat pivot', () => {
  it('the prompt becomes one user message; sampling parameters carry over; a stream asks for usage', () => {
    const chat = completionsToChat({
      model: 'a',
      prompt: ['Say hi'],
      max_tokens: 7,
      temperature: 0.2,
      stop: ['\n'],
      stream: true,
    });
    expect(chat).toEqual({
      model: 'a',
      messages: [{ role: 'user', content: 'Say hi' }],
      max_tokens: 7,
      temperature: 0.2,
      stop: ['\n'],
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it.each([
    [{ prompt: ['a', 'b'] }, 'prompt'],
    [{ prompt: [1, 2, 3] }, 'prompt'],
    [{ prompt: 'x', echo: true }, 'echo'],
    [{ prompt: 'x', suffix: 'end' }, 'suffix'],
    [{ prompt: 'x', logprobs: 2 }, 'logprobs'],
    [{ prompt: 'x', best_of: 3 }, 'best_of'],
  ])('refuses %j by name', (extra, param) => {
    const e = thrown(() => completionsToChat({ model: 'a', ...extra }));
    expect(e.code).toBe('unsupported_parameter');
    expect(e.param).toBe(param);
  });

  it('a chat answer comes back as a text_completion', () => {
    const c = {
      id: 'chatcmpl-abc',
      object: 'chat.completion',
      created: 5,
      model: 'up',
      choices: [{ index: 0, message: { role: 'assistant', content: 'Hello' }, finish_reason: 'length' }],
    } as unknown as ChatCompletion;
    expect(
      chatToCompletion(c, { inputTokens: 3, outputTokens: 1, cachedTokens: 0, cacheWriteTokens: 0 }, 'al'),
    ).toMatchObject({
      id: 'cmpl-abc',
      object: 'text_completion',
      created: 5,
      model: 'al',
      choices: [{ text: 'Hello', index: 0, logprobs: null, finish_reason: 'length' }],
      usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 },
    });
  });

  it('chat chunks stream as completion chunks; the usage chunk only when the client asked, then [DONE]', () => {
    const chunk = (delta: object, finish: string | null = null) =>
      ({
        id: 'chatcmpl-x',
        object: 'chat.completion.chunk',
        created: 9,
        model: 'up',
        choices: [{ index: 0, delta, finish_reason: finish }],
      }) as unknown as ChatCompletionChunk;
    const usage = { inputTokens: 2, outputTokens: 2, cachedTokens: 0, cacheWriteTokens: 0 };
    for (const wants of [false, true]) {
      const s = completionsPivot(
        {
          model: 'a',
          prompt: 'p',
          stream: true,
          ...(wants ? { stream_options: { include_usage: true } } : {}),
        },
        'al',
      ).stream();
      expect(s.push(chunk({ role: 'assistant', content: '' }))).toEqual([]);
      const f = s.push(chunk({ content: 'Hi' }));
      expect(f[0]!.data).toMatchObject({
        id: 'cmpl-x',
        object: 'text_completion',
        model: 'al',
        choices: [{ text: 'Hi', index: 0, logprobs: null, finish_reason: null }],
      });
      expect(s.push(chunk({}, 'stop'))[0]!.data).toMatchObject({
        choices: [{ text: '', finish_reason: 'stop' }],
      });
      const end = s.finish(usage);
      expect(end.at(-1)!.data).toBe('[DONE]');
      expect(end).toHaveLength(wants ? 2 : 1);
      if (wants) expect(end[0]!.data).toMatchObject({ choices: [], usage: { total_tokens: 4 } });
      expect(s.emittedText).toBe('Hi');
    }
  });
});

describe('completions passthrough (OpenAI channels)', () => {
  it('forces include_usage upstream, withholds the usage chunk from a client that did not ask, renames the model', () => {
    const ex = createExchange(
      'openai_completions',
      { model: 'al', prompt: 'p', stream: true },
      ep('openai'),
      'up',
      'al',
    );
    expect(ex.call.path).toBe('/completions');
    expect(JSON.parse(String(ex.call.body))).toMatchObject({
      model: 'up',
      stream_options: { include_usage: true },
    });
    const tr = ex.streamTranslator();
    const out = tr.onEvent(
      ev(
        '{"id":"c","object":"text_completion","model":"up","choices":[{"text":"He","index":0}],"usage":null}',
      ),
    );
    expect(out).toContain('"model":"al"');
    expect(out).not.toContain('usage');
    expect(
      tr.onEvent(
        ev('{"id":"c","model":"up","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}'),
      ),
    ).toBe('');
    expect(tr.onEvent(ev('[DONE]'))).toBe('data: [DONE]\n\n');
    expect(tr.done).toBe(true);
    expect(tr.usage()).toMatchObject({ inputTokens: 3, outputTokens: 1 });
    expect(tr.emittedText).toBe('He');
  });

  it('an Anthropic channel serves completions through its chat exchange', () => {
    const ex = createExchange(
      'openai_completions',
      { model: 'al', prompt: 'p' },
      ep('anthropic'),
      'claude',
      'al',
    );
    expect(ex.call.path).toBe('/v1/messages');
  });
});

describe('moderations: usage counted locally and marked estimated', () => {
  it('text tokens of the input, images not counted', () => {
    const ex = createExchange(
      'openai_moderations',
      {
        model: 'al',
        input: [
          { type: 'text', text: 'hello world' },
          { type: 'image_url', image_url: { url: 'data:image/png;base64,' + 'A'.repeat(5000) } },
        ],
      },
      ep('openai'),
      'omni-moderation-latest',
      'al',
    );
    const r = ex.decodeJson('{"id":"m","model":"omni-moderation-latest","results":[{"flagged":false}]}');
    expect(r.estimated).toBe(true);
    expect(r.usage!.inputTokens).toBe(2);
    expect((r.body as { model: string }).model).toBe('al');
  });
});

describe('rerank exchanges', () => {
  const body = {
    model: 'al',
    query: 'q',
    documents: ['one', { text: 'two' }],
    top_n: 1,
    return_documents: true,
  };

  it('Cohere v2: documents as strings, return_documents not sent but honoured; tokens estimated (Cohere reports search units)', () => {
    const ex = new RerankExchange(body, ep('cohere'), 'rerank-v3.5', 'al');
    expect(JSON.parse(String(ex.call.body))).toEqual({
      model: 'rerank-v3.5',
      query: 'q',
      documents: ['one', 'two'],
      top_n: 1,
    });
    const r = ex.decodeJson(
      '{"id":"x","results":[{"index":1,"relevance_score":0.9}],"meta":{"billed_units":{"search_units":1}}}',
    );
    expect((r.body as any).results[0]).toEqual({ index: 1, relevance_score: 0.9, document: { text: 'two' } });
    expect(r.estimated).toBe(true);
    expect(r.usage!.inputTokens).toBeGreaterThan(0);
  });

  it("Jina-style: passthrough with the model renamed, the upstream's token count booked", () => {
    const ex = new RerankExchange(body, ep('openai_compatible'), 'jina-reranker', 'al');
    expect(JSON.parse(String(ex.call.body))).toEqual({ ...body, model: 'jina-reranker' });
    const r = ex.decodeJson('{"model":"jina-reranker","usage":{"total_tokens":12},"results":[]}');
    expect(r.estimated).toBe(false);
    expect(r.usage!.inputTokens).toBe(12);
    expect((r.body as any).model).toBe('al');
  });

  it('an answer without results is a bad upstream response', () => {
    const ex = new RerankExchange(body, ep('openai_compatible'), 'm', 'al');
    expect(thrown(() => ex.decodeJson('{"data":[]}')).code).toBe('upstream_bad_response');
  });
});

describe('count_tokens', () => {
  it('on a non-Anthropic chat channel: a local exchange, answered as an estimate with no usage', () => {
    const b = { model: 'al', messages: [{ role: 'user', content: 'Count me please' }] };
    const ex = createExchange('anthropic_count_tokens', b, ep('openai'), 'gpt', 'al');
    expect(ex.local).toBe(true);
    const r = ex.decodeJson('');
    expect(r.usage).toBeNull();
    expect(r.headers).toEqual({ 'anima-estimate': 'true' });
    expect((r.body as { input_tokens: number }).input_tokens).toBe(estimateInputTokens(b));
  });

  it('on an Anthropic channel: the native endpoint', () => {
    const ex = createExchange(
      'anthropic_count_tokens',
      { model: 'al', messages: [] },
      ep('anthropic'),
      'c',
      'al',
    );
    expect(ex.local).toBeUndefined();
    expect(ex.call.path).toBe('/v1/messages/count_tokens');
  });

  it('counts system, messages and tools', () => {
    const base = { messages: [{ role: 'user', content: 'hello there' }] };
    const n = estimateInputTokens(base);
    expect(estimateInputTokens({ ...base, system: 'be brief' })).toBeGreaterThan(n);
    expect(
      estimateInputTokens({ ...base, tools: [{ name: 'get_weather', input_schema: {} }] }),
    ).toBeGreaterThan(n);
  });
});

describe('inbound validation', () => {
  const modelOf = (b: Record<string, unknown>) => {
    if (typeof b.model !== 'string') throw new GatewayError('missing_model', 'model', { param: 'model' });
    return b.model;
  };
  const streamOf = (b: Record<string, unknown>) => b.stream === true;
  const count = (v: unknown, param: string, min = 0) => {
    if (v !== undefined && v !== null && (!Number.isInteger(v) || (v as number) < min))
      throw new GatewayError('invalid_request', param, { param });
  };
  const check = (d: Parameters<typeof validateMore>[0], body: Record<string, unknown>) =>
    validateMore(d, body, modelOf, streamOf, count);

  it.each([
    ['openai_completions', { model: 'a' }, 'prompt'],
    ['openai_completions', { model: 'a', prompt: [] }, 'prompt'],
    ['openai_completions', { model: 'a', prompt: 'x', max_tokens: -1 }, 'max_tokens'],
    ['openai_moderations', { input: 3 }, 'input'],
    ['openai_moderations', { input: [{ type: 'audio' }] }, 'input'],
    ['rerank', { model: 'a', query: '', documents: ['x'] }, 'query'],
    ['rerank', { model: 'a', query: 'q', documents: [{ title: 'x' }] }, 'documents'],
    ['rerank', { model: 'a', query: 'q', documents: ['x'], return_documents: 'yes' }, 'return_documents'],
    ['anthropic_count_tokens', { model: 'a', messages: [] }, 'messages'],
  ] as const)('%s %j: a 400 naming %s', (d, body, param) => {
    const e = thrown(() => check(d, { ...body }));
    expect(e.code).toBe('invalid_request');
    expect(e.param).toBe(param);
  });

  it("moderations default to OpenAI's default model", () => {
    expect(check('openai_moderations', { input: 'x' }).model).toBe('omni-moderation-latest');
  });
});

describe('markup settings', () => {
  it('ANIMA_DEFAULT_SALE_MARKUP is read with the settings and checked at start', () => {
    expect(settingsFromEnv({ ANIMA_DEFAULT_SALE_MARKUP: ' 1.2 ' }).defaultSaleMarkup).toBe('1.2');
    expect(settingsFromEnv({}).defaultSaleMarkup).toBeUndefined();
    expect(() => settingsFromEnv({ ANIMA_DEFAULT_SALE_MARKUP: 'x1.2' })).toThrow();
  });

  it('the setting wins over the environment value, which wins over x1', () => {
    expect(defaultMarkupBp('1.25', '1.5')).toBe(12_500n);
    expect(defaultMarkupBp(undefined, '1.5')).toBe(15_000n);
    expect(defaultMarkupBp('not a number', '1.5')).toBe(15_000n);
    expect(defaultMarkupBp(undefined)).toBe(10_000n);
  });
});
