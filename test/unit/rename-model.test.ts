import { describe, expect, it } from 'vitest';
import { renameModel } from '../../src/providers/shared.js';

describe('renameModel (a passthrough answer renamed without re-serializing it)', () => {
  it('renames the one top-level model and keeps every other byte', () => {
    const text =
      '{"id":"c1","model":"gpt-4o-mini-2024","choices":[{"message":{"content":"say \\"model\\":\\"x\\""}}],"usage":{"prompt_tokens":1}}';
    const out = renameModel(text, JSON.parse(text).model, 'alias/one')!;
    expect(JSON.parse(out)).toEqual({ ...JSON.parse(text), model: 'alias/one' });
    expect(out.replace('"model":"alias/one"', '"model":"gpt-4o-mini-2024"')).toBe(text);
  });
  it('declines (null: re-serialize instead) when the field is ambiguous, spaced or not a string', () => {
    expect(renameModel('{"model":"m","meta":{"model":"m"}}', 'm', 'a')).toBeNull();
    expect(renameModel('{"model" : "m"}', 'm', 'a')).toBeNull();
    expect(renameModel('{"model":1}', 1, 'a')).toBeNull();
    expect(renameModel('{"x":1}', undefined, 'a')).toBeNull();
  });
  it('escapes an alias that needs it', () => {
    expect(JSON.parse(renameModel('{"model":"m"}', 'm', 'a"b\\c')!).model).toBe('a"b\\c');
  });
});

describe('OpenAI stream passthrough (bytes kept, model renamed, forced usage hidden)', () => {
  const ep = { code: 'c', provider: 'openai' as const, baseUrl: 'http://x', credential: 'k', headers: {} };
  const chunk = (extra: Record<string, unknown>) =>
    JSON.stringify({
      id: 'c1',
      object: 'chat.completion.chunk',
      created: 1,
      model: 'up-model',
      choices: [{ index: 0, delta: { content: 'hi' }, finish_reason: null }],
      ...extra,
    });
  const usageChunk = JSON.stringify({
    id: 'c1',
    object: 'chat.completion.chunk',
    created: 1,
    model: 'up-model',
    choices: [],
    usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
  });

  it('a client that did not ask for usage sees neither "usage":null nor the usage chunk, but it is kept for billing', async () => {
    const { openaiExchange } = await import('../../src/providers/openai/exchange.js');
    const ex = openaiExchange(
      'openai_chat',
      { model: 'a', messages: [], stream: true },
      ep,
      'up-model',
      'alias',
    );
    expect(JSON.parse(ex.call.body as string).stream_options).toEqual({ include_usage: true });
    const tr = ex.streamTranslator();
    const out = tr.onEvent({ event: '', data: chunk({ usage: null }) });
    expect(out).not.toContain('usage');
    expect(JSON.parse(out.slice(6))).toMatchObject({
      model: 'alias',
      choices: [{ delta: { content: 'hi' } }],
    });
    expect(tr.onEvent({ event: '', data: usageChunk })).toBe('');
    expect(tr.onEvent({ event: '', data: '[DONE]' })).toContain('[DONE]');
    expect(tr.usage()).toMatchObject({ inputTokens: 3, outputTokens: 2 });
    expect(tr.emittedText).toBe('hi');
  });

  it('a client that asked for usage gets the chunks as the upstream sent them, model renamed', async () => {
    const { openaiExchange } = await import('../../src/providers/openai/exchange.js');
    const ex = openaiExchange(
      'openai_chat',
      { model: 'a', messages: [], stream: true, stream_options: { include_usage: true } },
      ep,
      'up-model',
      'alias',
    );
    const tr = ex.streamTranslator();
    const data = chunk({ usage: null });
    expect(tr.onEvent({ event: '', data })).toBe(
      `data: ${data.replace('"model":"up-model"', '"model":"alias"')}\n\n`,
    );
    expect(JSON.parse(tr.onEvent({ event: '', data: usageChunk }).slice(6)).usage.total_tokens).toBe(5);
  });
});
