/**
 * The OpenAI shapes the Anthropic and Converse translators build from their vendor's answers
 * (src/providers/response-builders.ts), and the two translators agreeing on the same answer.
 */
import { describe, expect, it } from 'vitest';
import { emptyUsage, type Usage } from '../../src/core/usage.js';
import {
  AnthropicToOpenAIStream,
  anthropicToOpenAIResponse,
} from '../../src/providers/anthropic/outbound.js';
import type { Message } from '../../src/providers/anthropic/wire.js';
import { ConverseToOpenAIStream, converseToOpenAIResponse } from '../../src/providers/bedrock/outbound.js';
import type { ConverseResponse } from '../../src/providers/bedrock/wire.js';
import {
  ChunkWriter,
  chatCompletion,
  finishFrom,
  type AnswerPart,
} from '../../src/providers/response-builders.js';

const usage: Usage = { ...emptyUsage(), inputTokens: 7, outputTokens: 3, cachedTokens: 2 };
const head = { id: 'chatcmpl-x', model: 'm', finish: 'stop' as const, usage };
const ident = (p: AnswerPart): AnswerPart => p;

describe('chatCompletion', () => {
  it('joins text, lists tool calls in order, and skips what OpenAI has no place for', () => {
    const c = chatCompletion(['a', undefined, { id: 't1', name: 'f', input: undefined }, 'b'], ident, head);
    expect(c.choices[0]!.message).toEqual({
      role: 'assistant',
      content: 'ab',
      refusal: null,
      tool_calls: [{ id: 't1', type: 'function', function: { name: 'f', arguments: '{}' } }],
    });
    expect(c.usage).toEqual({
      prompt_tokens: 7,
      completion_tokens: 3,
      total_tokens: 10,
      prompt_tokens_details: { cached_tokens: 2 },
    });
  });

  it('content is null only for a tool-calls-only answer', () => {
    expect(chatCompletion([{ id: 't', name: 'f', input: {} }], ident, head).choices[0]!.message.content).toBe(
      null,
    );
    expect(chatCompletion([], ident, head).choices[0]!.message).toEqual({
      role: 'assistant',
      content: '',
      refusal: null,
    });
  });
});

it('finishFrom reads an unknown stop reason as stop', () => {
  const f = finishFrom<'a' | 'b'>({ a: 'length', b: 'tool_calls' });
  expect([f('a'), f('b'), f('zzz'), f(undefined)]).toEqual(['length', 'tool_calls', 'stop', 'stop']);
});

describe('ChunkWriter', () => {
  it('marks content chunks usage: null and sends the usage chunk only when usage was asked for', () => {
    const asked = new ChunkWriter('m', true, 'id1', 5);
    expect(asked.chunk({ content: 'x' })).toEqual({
      id: 'id1',
      object: 'chat.completion.chunk',
      created: 5,
      model: 'm',
      choices: [{ index: 0, delta: { content: 'x' }, logprobs: null, finish_reason: null }],
      usage: null,
    });
    expect(asked.usage(usage)[0]!.choices).toEqual([]);
    const silent = new ChunkWriter('m', false, 'id1', 5);
    expect('usage' in silent.chunk({})).toBe(false);
    expect(silent.usage(usage)).toEqual([]);
  });

  it('numbers tool calls from 0 and routes argument pieces by the vendor block index', () => {
    const w = new ChunkWriter('m', false, 'id', 1);
    w.toolStart(4, 'a', 'f');
    expect(w.toolStart(9, 'b', 'g')[0]!.choices[0]!.delta.tool_calls![0]).toMatchObject({
      index: 1,
      id: 'b',
    });
    expect(w.toolArgs(4, '{"x"')[0]!.choices[0]!.delta.tool_calls).toEqual([
      { index: 0, function: { arguments: '{"x"' } },
    ]);
    expect(w.toolArgs(4, '')).toEqual([]);
    expect(w.toolArgs(5, '{}')).toEqual([]);
  });
});

describe('Anthropic and Converse agree on the same answer', () => {
  const noId = (c: object): object => ({ ...c, id: undefined });

  it('completions', () => {
    const a = anthropicToOpenAIResponse(
      {
        id: 'msg_1',
        content: [
          { type: 'text', text: 'hi' },
          { type: 'tool_use', id: 't', name: 'f', input: { q: 1 } },
        ],
        stop_reason: 'tool_use',
        usage: { input_tokens: 5, output_tokens: 2 },
      } as Message,
      'm',
    );
    const b = converseToOpenAIResponse(
      {
        output: {
          message: {
            role: 'assistant',
            content: [{ text: 'hi' }, { toolUse: { toolUseId: 't', name: 'f', input: { q: 1 } } }],
          },
        },
        stopReason: 'tool_use',
        usage: { inputTokens: 5, outputTokens: 2, totalTokens: 7 },
      } as ConverseResponse,
      'm',
    );
    expect(a.id).toBe('chatcmpl-msg_1');
    expect(b.id).toMatch(/^chatcmpl-/);
    expect(noId(b)).toEqual(noId(a));
  });

  it('streams, with input tokens from message_start kept when message_delta carries only output', () => {
    const a = new AnthropicToOpenAIStream({ model: 'm', includeUsage: true, created: 1 });
    const b = new ConverseToOpenAIStream('m', true);
    const fromA = [
      ['message_start', { message: { id: 'x', usage: { input_tokens: 5, output_tokens: 1 } } }],
      ['content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'hi' } }],
      ['content_block_start', { index: 1, content_block: { type: 'tool_use', id: 't', name: 'f' } }],
      ['content_block_delta', { index: 1, delta: { type: 'input_json_delta', partial_json: '{}' } }],
      ['message_delta', { delta: { stop_reason: 'tool_use' }, usage: { output_tokens: 2 } }],
      ['message_stop', {}],
    ].flatMap(([e, d]) => a.push(e as string, d));
    const fromB = [
      ['messageStart', { role: 'assistant' }],
      ['contentBlockDelta', { contentBlockIndex: 0, delta: { text: 'hi' } }],
      ['contentBlockStart', { contentBlockIndex: 1, start: { toolUse: { toolUseId: 't', name: 'f' } } }],
      ['contentBlockDelta', { contentBlockIndex: 1, delta: { toolUse: { input: '{}' } } }],
      ['messageStop', { stopReason: 'tool_use' }],
      ['metadata', { usage: { inputTokens: 5, outputTokens: 2, totalTokens: 7 } }],
    ].flatMap(([e, d]) => b.push(e as string, d as Record<string, unknown>));
    const strip = (c: object): object => ({ ...c, id: undefined, created: undefined });
    expect(fromB.map(strip)).toEqual(fromA.map(strip));
    expect(fromA.at(-1)!.usage).toMatchObject({ prompt_tokens: 5, completion_tokens: 2 });
    expect(a.usage()).toEqual(b.usage());
  });
});
