import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/core/errors.js';
import { errorFrame } from '../../src/core/render.js';
import { SseParser } from '../../src/lib/sse.js';
import { classifyHttp } from '../../src/providers/classify.js';
import { geminiExchange, geminiPath } from '../../src/providers/gemini/exchange.js';
import {
  ChatToGeminiStream,
  chatToGeminiResponse,
  geminiPivot,
  geminiToChatRequest,
  jsonSchemaOf,
} from '../../src/providers/gemini/inbound.js';
import {
  GeminiToChatStream,
  SKIP_THOUGHT_SIGNATURE,
  chatToGeminiRequest,
  geminiToChatCompletion,
  guessImageMime,
} from '../../src/providers/gemini/outbound.js';
import { geminiUsage, toGeminiUsage, type GenerateContentResponse } from '../../src/providers/gemini/wire.js';
import { openaiExchange } from '../../src/providers/openai/exchange.js';
import type { ChatCompletion, ChatCompletionChunk, ChatRequest } from '../../src/providers/openai/wire.js';
import { PivotExchange } from '../../src/providers/pivot.js';
import { type Frame, writeGemini } from '../../src/providers/stream.js';
import type { UpstreamEndpoint } from '../../src/providers/types.js';
import { PNG, chatRequestOf, expectRefused, thrown } from '../helpers-translate.js';

const base = (extra: Partial<ChatRequest> = {}) => chatRequestOf('gem-alias', extra);
const toG = (extra: Partial<ChatRequest> = {}) => chatToGeminiRequest(base(extra));
const gbase = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  model: 'alias',
  contents: [{ role: 'user', parts: [{ text: 'hi' }] }],
  ...extra,
});
const toC = (extra: Record<string, unknown> = {}, stream = false) =>
  geminiToChatRequest(gbase(extra), stream);

function expectInvalid(fn: () => unknown, param: string): void {
  const e = thrown(fn);
  expect({ status: e.status, code: e.code, param: e.param }).toEqual({
    status: 400,
    code: 'invalid_request',
    param,
  });
}

/** The JSON payloads of Gemini-style SSE text (CRLF framed). */
function geminiEvents(out: string | readonly Frame[]): any[] {
  const text = typeof out === 'string' ? out : out.map(writeGemini).join('');
  expect(text === '' || text.endsWith('\r\n\r\n')).toBe(true);
  return new SseParser().push(text).map((e) => JSON.parse(e.data));
}
/** The payloads of OpenAI SSE text ([DONE] kept as the string). */
function chatEvents(text: string): any[] {
  return new SseParser().push(text).map((e) => (e.data === '[DONE]' ? '[DONE]' : JSON.parse(e.data)));
}

const EP: UpstreamEndpoint = {
  code: 'gem1',
  provider: 'gemini',
  baseUrl: 'https://generativelanguage.googleapis.com/v1beta',
  credential: 'AIzaTESTKEY',
  headers: { 'x-extra': '1' },
};

// ----------------------------------------------------------------------------------------- usage

describe('Gemini usage', () => {
  it('geminiUsage: prompt -> input, candidates + thoughts -> output, cached content -> cached', () => {
    expect(
      geminiUsage({
        promptTokenCount: 100,
        candidatesTokenCount: 20,
        thoughtsTokenCount: 30,
        cachedContentTokenCount: 40,
        totalTokenCount: 150,
      }),
    ).toEqual({ inputTokens: 100, outputTokens: 50, cachedTokens: 40, cacheWriteTokens: 0 });
  });
  it('geminiUsage: server-tool prompt tokens are input; nothing known -> null', () => {
    expect(geminiUsage({ promptTokenCount: 10, toolUsePromptTokenCount: 5 })).toEqual({
      inputTokens: 15,
      outputTokens: 0,
      cachedTokens: 0,
      cacheWriteTokens: 0,
    });
    expect(geminiUsage(undefined)).toBeNull();
    expect(geminiUsage(null)).toBeNull();
    expect(geminiUsage({ totalTokenCount: 3 })).toBeNull();
  });
  it('toGeminiUsage inverts geminiUsage', () => {
    const meta = toGeminiUsage(
      { inputTokens: 100, outputTokens: 50, cachedTokens: 40, cacheWriteTokens: 0 },
      30,
    );
    expect(meta).toEqual({
      promptTokenCount: 100,
      candidatesTokenCount: 20,
      thoughtsTokenCount: 30,
      cachedContentTokenCount: 40,
      totalTokenCount: 150,
    });
    expect(geminiUsage(meta)).toEqual({
      inputTokens: 100,
      outputTokens: 50,
      cachedTokens: 40,
      cacheWriteTokens: 0,
    });
    expect(toGeminiUsage({ inputTokens: 1, outputTokens: 2, cachedTokens: 0, cacheWriteTokens: 0 })).toEqual({
      promptTokenCount: 1,
      candidatesTokenCount: 2,
      totalTokenCount: 3,
    });
  });
});

// ----------------------------------------------------------------------------------------- chat request -> Gemini

describe('chatToGeminiRequest', () => {
  it('maps system/developer to systemInstruction and the sampling fields to generationConfig', () => {
    const g = toG({
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'developer', content: [{ type: 'text', text: 'no emojis' }] },
        { role: 'user', content: 'hi' },
      ],
      max_completion_tokens: 200,
      max_tokens: 999,
      temperature: 0.3,
      top_p: 0.9,
      stop: 'END',
      n: 2,
      seed: 7,
      presence_penalty: 0.5,
      frequency_penalty: -0.5,
      stream: true,
      stream_options: { include_usage: true },
      user: 'u1',
      safety_identifier: 's',
      store: false,
      metadata: { a: 'b' },
      parallel_tool_calls: true,
      service_tier: 'auto',
    });
    expect(g).toEqual({
      contents: [{ role: 'user', parts: [{ text: 'hi' }] }],
      systemInstruction: { parts: [{ text: 'be brief' }, { text: 'no emojis' }] },
      generationConfig: {
        maxOutputTokens: 200,
        temperature: 0.3,
        topP: 0.9,
        stopSequences: ['END'],
        candidateCount: 2,
        seed: 7,
        presencePenalty: 0.5,
        frequencyPenalty: -0.5,
      },
    });
    expect('model' in g).toBe(false);
  });

  it('max_tokens is used without max_completion_tokens; stop arrays pass; zero penalties and nulls are not sent', () => {
    const g = toG({
      max_tokens: 50,
      stop: ['a', 'b'],
      presence_penalty: 0,
      frequency_penalty: 0,
      temperature: null,
      seed: null,
    });
    expect(g.generationConfig).toEqual({ maxOutputTokens: 50, stopSequences: ['a', 'b'] });
    expect(toG().generationConfig).toBeUndefined();
  });

  it('user images: data URLs inline, http(s) URLs as fileData with a guessed type', () => {
    const g = toG({
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'what is this' },
            { type: 'image_url', image_url: { url: `data:image/PNG;base64,${PNG}`, detail: 'high' } },
            { type: 'image_url', image_url: { url: 'https://x.test/cat.webp?v=1' } },
            { type: 'image_url', image_url: { url: 'https://x.test/render' } },
          ],
        },
      ],
    });
    expect(g.contents[0]!.parts).toEqual([
      { text: 'what is this' },
      { inlineData: { mimeType: 'image/png', data: PNG } },
      { fileData: { fileUri: 'https://x.test/cat.webp?v=1', mimeType: 'image/webp' } },
      { fileData: { fileUri: 'https://x.test/render', mimeType: 'image/jpeg' } },
    ]);
    expect(guessImageMime('https://a.b/c.JPG')).toBe('image/jpeg');
    expect(guessImageMime('https://a.b/c.gif#x')).toBe('image/gif');
    expectRefused(
      () =>
        toG({
          messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'ftp://x/y.png' } }] }],
        }),
      'messages[0].content[0]',
    );
    expectRefused(
      () =>
        toG({
          messages: [
            { role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png,raw' } }] },
          ],
        }),
      'messages[0].content[0]',
    );
  });

  it('user audio (wav/mp3) and inline files map to inlineData; other audio and file ids are refused', () => {
    const g = toG({
      messages: [
        {
          role: 'user',
          content: [
            { type: 'input_audio', input_audio: { data: 'QUJD', format: 'wav' } },
            { type: 'input_audio', input_audio: { data: 'REVG', format: 'mp3' } },
            { type: 'file', file: { file_data: 'data:application/pdf;base64,JVBER', filename: 'a.pdf' } },
          ],
        },
      ],
    });
    expect(g.contents[0]!.parts).toEqual([
      { inlineData: { mimeType: 'audio/wav', data: 'QUJD' } },
      { inlineData: { mimeType: 'audio/mp3', data: 'REVG' } },
      { inlineData: { mimeType: 'application/pdf', data: 'JVBER' } },
    ]);
    expectRefused(
      () =>
        toG({
          messages: [
            {
              role: 'user',
              content: [{ type: 'input_audio', input_audio: { data: 'x', format: 'flac' as 'wav' } }],
            },
          ],
        }),
      'messages[0].content[0]',
    );
    expectRefused(
      () => toG({ messages: [{ role: 'user', content: [{ type: 'file', file: { file_id: 'file-1' } }] }] }),
      'messages[0].content[0]',
    );
  });

  it('assistant tool calls become functionCall parts (placeholder signature on the first) and tool results functionResponse parts', () => {
    const g = toG({
      messages: [
        { role: 'user', content: 'weather in Paris and Rome?' },
        {
          role: 'assistant',
          content: '',
          tool_calls: [
            { id: 'call_a', type: 'function', function: { name: 'weather', arguments: '{"city":"Paris"}' } },
            { id: 'call_b', type: 'function', function: { name: 'weather', arguments: '{"city":"Rome"}' } },
            { id: 'call_c', type: 'function', function: { name: 'now', arguments: '' } },
          ],
        },
        { role: 'tool', tool_call_id: 'call_b', content: '{"temp":25}' },
        { role: 'tool', tool_call_id: 'call_a', content: 'sunny, 20C' },
        { role: 'tool', tool_call_id: 'call_c', content: [{ type: 'text', text: '12:00' }] },
        { role: 'user', content: 'thanks' },
      ],
    });
    expect(g.contents).toEqual([
      { role: 'user', parts: [{ text: 'weather in Paris and Rome?' }] },
      {
        role: 'model',
        parts: [
          {
            functionCall: { name: 'weather', args: { city: 'Paris' } },
            thoughtSignature: SKIP_THOUGHT_SIGNATURE,
          },
          { functionCall: { name: 'weather', args: { city: 'Rome' } } },
          { functionCall: { name: 'now', args: {} } },
        ],
      },
      {
        role: 'user',
        parts: [
          { functionResponse: { name: 'weather', response: { temp: 25 } } },
          { functionResponse: { name: 'weather', response: { output: 'sunny, 20C' } } },
          { functionResponse: { name: 'now', response: { output: '12:00' } } },
          { text: 'thanks' },
        ],
      },
    ]);
  });

  it('a thought signature carried in extra_content goes back on its call; text and refusals stay in the model turn', () => {
    const g = toG({
      messages: [
        { role: 'user', content: 'go' },
        {
          role: 'assistant',
          content: [
            { type: 'text', text: 'calling' },
            { type: 'refusal', refusal: 'partly' },
          ],
          tool_calls: [
            {
              id: 'c1',
              type: 'function',
              function: { name: 'f', arguments: '{}' },
              extra_content: { google: { thought_signature: 'SIG' } },
            } as any,
          ],
        },
        { role: 'tool', tool_call_id: 'c1', content: '[1,2]' },
      ],
    });
    expect(g.contents[1]).toEqual({
      role: 'model',
      parts: [
        { text: 'calling' },
        { text: 'partly' },
        { functionCall: { name: 'f', args: {} }, thoughtSignature: 'SIG' },
      ],
    });
    // A JSON value that is not an object is text.
    expect(g.contents[2]!.parts).toEqual([
      { functionResponse: { name: 'f', response: { output: '[1,2]' } } },
    ]);
  });

  it('consecutive same-role messages merge; empty messages are skipped', () => {
    const g = toG({
      messages: [
        { role: 'user', content: 'a' },
        { role: 'user', content: '' },
        { role: 'user', content: [{ type: 'text', text: 'b' }] },
        { role: 'assistant', content: 'x' },
        { role: 'assistant', content: null },
        { role: 'assistant', content: 'y' },
      ],
    });
    expect(g.contents).toEqual([
      { role: 'user', parts: [{ text: 'a' }, { text: 'b' }] },
      { role: 'model', parts: [{ text: 'x' }, { text: 'y' }] },
    ]);
  });

  it('response_format: json_object and json_schema set the MIME type (and schema); text sets nothing', () => {
    expect(toG({ response_format: { type: 'json_object' } }).generationConfig).toEqual({
      responseMimeType: 'application/json',
    });
    const schema = { type: 'object', properties: { a: { type: 'string' } }, required: ['a'] };
    expect(
      toG({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema, strict: true } } })
        .generationConfig,
    ).toEqual({
      responseMimeType: 'application/json',
      responseJsonSchema: schema,
    });
    expect(toG({ response_format: { type: 'text' } }).generationConfig).toBeUndefined();
    expectRefused(() => toG({ response_format: { type: 'grammar' } as any }), 'response_format');
  });

  it('function tools become one functionDeclarations tool; a no-argument schema is left out', () => {
    const params = { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] };
    const g = toG({
      tools: [
        {
          type: 'function',
          function: { name: 'weather', description: 'Weather now', parameters: params, strict: true },
        },
        { type: 'function', function: { name: 'now', parameters: { type: 'object', properties: {} } } },
        { type: 'function', function: { name: 'bare' } },
      ],
    });
    expect(g.tools).toEqual([
      {
        functionDeclarations: [
          { name: 'weather', description: 'Weather now', parametersJsonSchema: params },
          { name: 'now' },
          { name: 'bare' },
        ],
      },
    ]);
    expect(toG({ tools: [] }).tools).toBeUndefined();
    expectRefused(() => toG({ tools: [{ type: 'custom', custom: { name: 'x' } }] }), 'tools[0]');
  });

  it('tool_choice maps to functionCallingConfig', () => {
    const tools: ChatRequest['tools'] = [
      { type: 'function', function: { name: 'f' } },
      { type: 'function', function: { name: 'g' } },
    ];
    const tc = (tool_choice: ChatRequest['tool_choice']) => toG({ tools, tool_choice }).toolConfig;
    expect(tc('none')).toEqual({ functionCallingConfig: { mode: 'NONE' } });
    expect(tc('auto')).toEqual({ functionCallingConfig: { mode: 'AUTO' } });
    expect(tc('required')).toEqual({ functionCallingConfig: { mode: 'ANY' } });
    expect(tc({ type: 'function', function: { name: 'g' } })).toEqual({
      functionCallingConfig: { mode: 'ANY', allowedFunctionNames: ['g'] },
    });
    expect(
      tc({
        type: 'allowed_tools',
        allowed_tools: {
          mode: 'required',
          tools: [
            { type: 'function', function: { name: 'f' } },
            { type: 'function', function: { name: 'g' } },
          ],
        },
      }),
    ).toEqual({ functionCallingConfig: { mode: 'ANY', allowedFunctionNames: ['f', 'g'] } });
    expectRefused(
      () => tc({ type: 'allowed_tools', allowed_tools: { mode: 'auto', tools: [] } }),
      'tool_choice',
    );
    expectRefused(() => tc({ type: 'custom', custom: { name: 'x' } }), 'tool_choice');
    expect(tc(undefined)).toBeUndefined();
    // Without tools a tool choice has nothing to act on.
    expect(toG({ tool_choice: 'none' }).toolConfig).toBeUndefined();
  });

  it('reasoning_effort becomes a thinking budget', () => {
    expect(toG({ reasoning_effort: 'high' }).generationConfig).toEqual({
      thinkingConfig: { thinkingBudget: 24576 },
    });
    expect(toG({ reasoning_effort: 'none' }).generationConfig).toEqual({
      thinkingConfig: { thinkingBudget: 0 },
    });
    expectRefused(() => toG({ reasoning_effort: 'extreme' }), 'reasoning_effort');
  });

  it.each([
    ['logprobs', { logprobs: true }],
    ['top_logprobs', { top_logprobs: 2 }],
    ['logit_bias', { logit_bias: { '50256': -100 } }],
    ['audio', { audio: { voice: 'alloy', format: 'wav' } }],
    ['modalities', { modalities: ['text', 'audio'] }],
    ['prediction', { prediction: { type: 'content', content: 'x' } }],
    ['web_search_options', { web_search_options: {} }],
    ['functions', { functions: [{ name: 'f' }] }],
    ['function_call', { function_call: 'auto' }],
    ['verbosity', { verbosity: 'low' }],
  ] as Array<[string, Partial<ChatRequest>]>)('refuses %s', (param, extra) => {
    expectRefused(() => toG(extra), param);
  });

  it('harmless defaults of refused fields pass', () => {
    expect(() =>
      toG({ logprobs: false, logit_bias: {}, modalities: ['text'], top_logprobs: 0 }),
    ).not.toThrow();
  });

  it('refuses message shapes without a translation', () => {
    expectRefused(() => toG({ messages: [{ role: 'user', content: 'a', name: 'bob' }] }), 'messages[0].name');
    expectRefused(
      () => toG({ messages: [{ role: 'function', content: 'x', name: 'f' }] }),
      'messages[0].role',
    );
    expectRefused(
      () =>
        toG({
          messages: [
            { role: 'user', content: 'a' },
            { role: 'system', content: 'late' },
          ],
        }),
      'messages',
    );
    expectRefused(
      () =>
        toG({
          messages: [
            { role: 'user', content: 'a' },
            {
              role: 'assistant',
              content: null,
              tool_calls: [{ id: 'x', type: 'function', function: { name: 'f', arguments: '[1]' } }],
            },
          ],
        }),
      'messages[1].tool_calls[0].function.arguments',
    );
    expectRefused(
      () =>
        toG({
          messages: [
            {
              role: 'assistant',
              content: null,
              tool_calls: [{ id: 'x', type: 'custom', custom: { name: 'f', input: '' } }],
            },
          ],
        }),
      'messages[0].tool_calls[0]',
    );
    expectRefused(
      () => toG({ messages: [{ role: 'user', content: [{ type: 'video' } as any] }] }),
      'messages[0].content[0]',
    );
  });

  it('rejects malformed input with invalid_request', () => {
    expectInvalid(() => toG({ messages: 'hi' as any }), 'messages');
    expectInvalid(() => toG({ messages: [{ role: 'robot', content: 'x' } as any] }), 'messages[0].role');
    expectInvalid(
      () => toG({ messages: [{ role: 'tool', tool_call_id: 'nope', content: 'x' }] }),
      'messages[0].tool_call_id',
    );
  });
});

// ----------------------------------------------------------------------------------------- Gemini answer -> chat

const answer = (extra: Partial<GenerateContentResponse> = {}): GenerateContentResponse => ({
  candidates: [
    { content: { role: 'model', parts: [{ text: 'Hello' }, { text: ' world' }] }, finishReason: 'STOP' },
  ],
  usageMetadata: { promptTokenCount: 10, candidatesTokenCount: 5, totalTokenCount: 15 },
  modelVersion: 'gemini-2.5-flash',
  responseId: 'resp1',
  ...extra,
});

describe('geminiToChatCompletion', () => {
  it('joins text parts, reports the alias and usage', () => {
    const c = geminiToChatCompletion(answer(), 'my-alias');
    expect(c).toMatchObject({
      id: 'chatcmpl-resp1',
      object: 'chat.completion',
      model: 'my-alias',
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: 'Hello world', refusal: null },
          finish_reason: 'stop',
          logprobs: null,
        },
      ],
      usage: {
        prompt_tokens: 10,
        completion_tokens: 5,
        total_tokens: 15,
        prompt_tokens_details: { cached_tokens: 0 },
      },
    });
    expect(typeof c.created).toBe('number');
    expect(c.choices[0]!.message.tool_calls).toBeUndefined();
  });

  it('skips thought parts and counts thinking tokens as reasoning output', () => {
    const c = geminiToChatCompletion(
      answer({
        candidates: [
          {
            content: { role: 'model', parts: [{ text: 'hmm', thought: true }, { text: 'Answer' }] },
            finishReason: 'STOP',
          },
        ],
        usageMetadata: {
          promptTokenCount: 10,
          candidatesTokenCount: 5,
          thoughtsTokenCount: 7,
          cachedContentTokenCount: 4,
        },
      }),
      'a',
    );
    expect(c.choices[0]!.message.content).toBe('Answer');
    expect(c.usage).toEqual({
      prompt_tokens: 10,
      completion_tokens: 12,
      total_tokens: 22,
      prompt_tokens_details: { cached_tokens: 4 },
      completion_tokens_details: { reasoning_tokens: 7 },
    });
  });

  it('function calls become tool calls (ids from the call id or random; signature in extra_content)', () => {
    const c = geminiToChatCompletion(
      answer({
        candidates: [
          {
            content: {
              role: 'model',
              parts: [
                { functionCall: { name: 'weather', args: { city: 'Paris' } }, thoughtSignature: 'SIG' },
                { functionCall: { id: 'abc', name: 'now' } },
              ],
            },
            finishReason: 'STOP',
          },
        ],
      }),
      'a',
    );
    const ch = c.choices[0]!;
    expect(ch.finish_reason).toBe('tool_calls');
    expect(ch.message.content).toBeNull();
    const [t1, t2] = ch.message.tool_calls as any[];
    expect(t1).toMatchObject({
      type: 'function',
      function: { name: 'weather', arguments: '{"city":"Paris"}' },
      extra_content: { google: { thought_signature: 'SIG' } },
    });
    expect(t1.id).toMatch(/^call_[0-9a-f]{24}$/);
    expect(t2).toEqual({ id: 'call_abc', type: 'function', function: { name: 'now', arguments: '{}' } });
  });

  it.each([
    ['STOP', 'stop'],
    ['MAX_TOKENS', 'length'],
    ['SAFETY', 'content_filter'],
    ['RECITATION', 'content_filter'],
    ['BLOCKLIST', 'content_filter'],
    ['PROHIBITED_CONTENT', 'content_filter'],
    ['SPII', 'content_filter'],
    ['IMAGE_SAFETY', 'content_filter'],
    ['OTHER', 'stop'],
    ['MALFORMED_FUNCTION_CALL', 'stop'],
    ['LANGUAGE', 'stop'],
    [undefined, 'stop'],
  ])('finishReason %s -> %s', (reason, finish) => {
    const c = geminiToChatCompletion(
      answer({ candidates: [{ content: { parts: [{ text: 'x' }] }, finishReason: reason }] }),
      'a',
    );
    expect(c.choices[0]!.finish_reason).toBe(finish);
  });

  it('a candidate filtered without content is an empty content_filter choice; several candidates are several choices', () => {
    const c = geminiToChatCompletion(
      answer({
        candidates: [
          { content: { role: 'model', parts: [{ text: 'one' }] }, finishReason: 'STOP' },
          { finishReason: 'SAFETY', index: 1 },
        ],
      }),
      'a',
    );
    expect(c.choices.map((x) => [x.index, x.message.content, x.finish_reason])).toEqual([
      [0, 'one', 'stop'],
      [1, '', 'content_filter'],
    ]);
  });

  it('a blocked prompt is one empty content_filter choice; no candidates at all is a bad answer', () => {
    const c = geminiToChatCompletion(
      {
        promptFeedback: { blockReason: 'SAFETY' },
        usageMetadata: { promptTokenCount: 8, totalTokenCount: 8 },
      },
      'a',
    );
    expect(c.choices).toEqual([
      {
        index: 0,
        message: { role: 'assistant', content: '', refusal: null },
        finish_reason: 'content_filter',
        logprobs: null,
      },
    ]);
    expect(c.usage?.prompt_tokens).toBe(8);
    expect(thrown(() => geminiToChatCompletion({ modelVersion: 'x' }, 'a')).code).toBe(
      'upstream_bad_response',
    );
  });
});

// ----------------------------------------------------------------------------------------- Gemini stream -> chat stream

describe('GeminiToChatStream', () => {
  it('text stream: role chunk, deltas, finish chunk, then the usage chunk on request', () => {
    const s = new GeminiToChatStream({ model: 'alias', created: 1 });
    const c1 = s.push({
      candidates: [{ content: { role: 'model', parts: [{ text: 'Hel' }] } }],
      usageMetadata: { promptTokenCount: 4, totalTokenCount: 4 },
      responseId: 'r1',
      modelVersion: 'g',
    });
    expect(c1).toEqual([
      {
        id: 'chatcmpl-r1',
        object: 'chat.completion.chunk',
        created: 1,
        model: 'alias',
        choices: [
          { index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null },
        ],
      },
      {
        id: 'chatcmpl-r1',
        object: 'chat.completion.chunk',
        created: 1,
        model: 'alias',
        choices: [{ index: 0, delta: { content: 'Hel' }, logprobs: null, finish_reason: null }],
      },
    ]);
    expect(s.done).toBe(false);
    expect(s.usage()).toEqual({ inputTokens: 4, outputTokens: 0, cachedTokens: 0, cacheWriteTokens: 0 });
    const c2 = s.push({
      candidates: [{ content: { role: 'model', parts: [{ text: 'lo' }] }, finishReason: 'STOP' }],
      usageMetadata: { promptTokenCount: 4, candidatesTokenCount: 2, totalTokenCount: 6 },
      responseId: 'r1',
    });
    expect(c2.map((c) => c.choices[0])).toEqual([
      { index: 0, delta: { content: 'lo' }, logprobs: null, finish_reason: null },
      { index: 0, delta: {}, logprobs: null, finish_reason: 'stop' },
    ]);
    expect(s.done).toBe(true);
    expect(s.usage()).toEqual({ inputTokens: 4, outputTokens: 2, cachedTokens: 0, cacheWriteTokens: 0 });
    expect(s.finish(false)).toEqual([]);
    expect(s.finish(true)).toEqual([
      {
        id: 'chatcmpl-r1',
        object: 'chat.completion.chunk',
        created: 1,
        model: 'alias',
        choices: [],
        usage: {
          prompt_tokens: 4,
          completion_tokens: 2,
          total_tokens: 6,
          prompt_tokens_details: { cached_tokens: 0 },
        },
      },
    ]);
  });

  it('function calls arrive as whole tool_calls deltas with running indices; finish is tool_calls', () => {
    const s = new GeminiToChatStream({ model: 'alias' });
    const a = s.push({
      candidates: [
        {
          content: {
            role: 'model',
            parts: [
              { text: 'Checking.' },
              { functionCall: { name: 'weather', args: { city: 'Paris' } }, thoughtSignature: 'S' },
            ],
          },
        },
      ],
    });
    expect(a.map((c) => c.choices[0]!.delta)).toEqual([
      { role: 'assistant', content: '' },
      { content: 'Checking.' },
      {
        tool_calls: [
          {
            index: 0,
            id: expect.stringMatching(/^call_/),
            type: 'function',
            function: { name: 'weather', arguments: '{"city":"Paris"}' },
            extra_content: { google: { thought_signature: 'S' } },
          },
        ],
      },
    ]);
    const b = s.push({
      candidates: [
        {
          content: { role: 'model', parts: [{ functionCall: { id: 'x', name: 'now', args: {} } }] },
          finishReason: 'STOP',
        },
      ],
    });
    expect(b.map((c) => c.choices[0])).toEqual([
      {
        index: 0,
        delta: {
          tool_calls: [
            { index: 1, id: 'call_x', type: 'function', function: { name: 'now', arguments: '{}' } },
          ],
        },
        logprobs: null,
        finish_reason: null,
      },
      { index: 0, delta: {}, logprobs: null, finish_reason: 'tool_calls' },
    ]);
    expect(s.done).toBe(true);
  });

  it('thought parts are skipped; chunks after the finish are ignored', () => {
    const s = new GeminiToChatStream({ model: 'alias' });
    const a = s.push({ candidates: [{ content: { parts: [{ text: 'thinking...', thought: true }] } }] });
    expect(a.map((c) => c.choices[0]!.delta)).toEqual([{ role: 'assistant', content: '' }]);
    s.push({ candidates: [{ content: { parts: [{ text: '' }] }, finishReason: 'MAX_TOKENS' }] });
    expect(s.push({ candidates: [{ content: { parts: [{ text: 'late' }] } }] })).toEqual([]);
  });

  it('a blocked prompt ends the stream with content_filter', () => {
    const s = new GeminiToChatStream({ model: 'alias' });
    const out = s.push({
      promptFeedback: { blockReason: 'PROHIBITED_CONTENT' },
      usageMetadata: { promptTokenCount: 3, totalTokenCount: 3 },
    });
    expect(out.map((c) => c.choices[0])).toEqual([
      { index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null },
      { index: 0, delta: {}, logprobs: null, finish_reason: 'content_filter' },
    ]);
    expect(s.done).toBe(true);
    expect(s.finish(true)[0]!.usage?.prompt_tokens).toBe(3);
  });

  it('with several candidates the stream is done only when each has finished', () => {
    const s = new GeminiToChatStream({ model: 'alias', candidates: 2 });
    s.push({ candidates: [{ content: { parts: [{ text: 'a' }] }, finishReason: 'STOP' }] });
    expect(s.done).toBe(false);
    const out = s.push({
      candidates: [{ index: 1, content: { parts: [{ text: 'b' }] }, finishReason: 'STOP' }],
    });
    expect(out.map((c) => [c.choices[0]!.index, c.choices[0]!.delta, c.choices[0]!.finish_reason])).toEqual([
      [1, { role: 'assistant', content: '' }, null],
      [1, { content: 'b' }, null],
      [1, {}, 'stop'],
    ]);
    expect(s.done).toBe(true);
  });

  it('no usage seen: no usage chunk even when asked', () => {
    const s = new GeminiToChatStream({ model: 'alias' });
    s.push({ candidates: [{ content: { parts: [{ text: 'a' }] }, finishReason: 'STOP' }] });
    expect(s.finish(true)).toEqual([]);
    expect(s.usage()).toBeNull();
  });
});

// ----------------------------------------------------------------------------------------- Gemini request -> chat

describe('geminiToChatRequest', () => {
  it('maps contents, systemInstruction and generationConfig; keeps the model; sets stream', () => {
    const c = toC({
      systemInstruction: { parts: [{ text: 'be brief' }] },
      generationConfig: {
        maxOutputTokens: 100,
        temperature: 0.2,
        topP: 0.8,
        candidateCount: 1,
        seed: 3,
        stopSequences: ['X'],
        presencePenalty: 0.1,
        frequencyPenalty: 0.2,
        responseMimeType: 'text/plain',
        responseModalities: ['TEXT'],
        thinkingConfig: { includeThoughts: true, thinkingLevel: 'LOW' },
      },
      safetySettings: [{ category: 'HARM_CATEGORY_HARASSMENT', threshold: 'BLOCK_NONE' }],
    });
    expect(c).toEqual({
      model: 'alias',
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'hi' },
      ],
      max_tokens: 100,
      temperature: 0.2,
      top_p: 0.8,
      n: 1,
      seed: 3,
      stop: ['X'],
      presence_penalty: 0.1,
      frequency_penalty: 0.2,
      reasoning_effort: 'low',
      stream: false,
    });
    expect(toC({}, true).stream).toBe(true);
  });

  it('accepts the snake_case spellings the REST API also takes', () => {
    const c = geminiToChatRequest(
      {
        system_instruction: { parts: [{ text: 'sys' }] },
        contents: [{ role: 'user', parts: [{ inline_data: { mime_type: 'image/png', data: PNG } }] }],
        generation_config: { max_output_tokens: 5, response_mime_type: 'application/json' },
        tool_config: { function_calling_config: { mode: 'ANY', allowed_function_names: ['f'] } },
        tools: [
          {
            function_declarations: [
              {
                name: 'f',
                parameters_json_schema: { type: 'object', properties: { a_b: { type: 'string' } } },
              },
            ],
          },
        ],
      },
      false,
    );
    expect(c).toEqual({
      messages: [
        { role: 'system', content: 'sys' },
        {
          role: 'user',
          content: [{ type: 'image_url', image_url: { url: `data:image/png;base64,${PNG}` } }],
        },
      ],
      max_tokens: 5,
      response_format: { type: 'json_object' },
      tools: [
        {
          type: 'function',
          function: { name: 'f', parameters: { type: 'object', properties: { a_b: { type: 'string' } } } },
        },
      ],
      tool_choice: { type: 'function', function: { name: 'f' } },
      stream: false,
    });
  });

  it('function calls get ids in order; responses match the oldest unanswered call of their name, tool messages first', () => {
    const c = toC({
      contents: [
        { role: 'user', parts: [{ text: 'weather?' }] },
        {
          role: 'model',
          parts: [
            { text: 'thinking', thought: true },
            { text: 'Let me check.', thoughtSignature: 'zz' },
            { thoughtSignature: 'only-a-signature' },
            { functionCall: { name: 'weather', args: { city: 'Paris' } }, thoughtSignature: 'S' },
            { functionCall: { name: 'weather', args: { city: 'Rome' } } },
            { functionCall: { name: 'now' } },
          ],
        },
        {
          role: 'user',
          parts: [
            { text: 'also, hurry' },
            { functionResponse: { name: 'now', response: { output: '12:00' } } },
            { functionResponse: { name: 'weather', response: { temp: 20 } } },
            { functionResponse: { name: 'weather', response: { result: 'hot' } } },
          ],
        },
      ],
    });
    expect(c['messages']).toEqual([
      { role: 'user', content: 'weather?' },
      {
        role: 'assistant',
        content: 'Let me check.',
        tool_calls: [
          { id: 'call_0', type: 'function', function: { name: 'weather', arguments: '{"city":"Paris"}' } },
          { id: 'call_1', type: 'function', function: { name: 'weather', arguments: '{"city":"Rome"}' } },
          { id: 'call_2', type: 'function', function: { name: 'now', arguments: '{}' } },
        ],
      },
      { role: 'tool', tool_call_id: 'call_2', content: '12:00' },
      { role: 'tool', tool_call_id: 'call_0', content: '{"temp":20}' },
      { role: 'tool', tool_call_id: 'call_1', content: 'hot' },
      { role: 'user', content: 'also, hurry' },
    ]);
  });

  it('a functionResponse naming its call id answers that call', () => {
    const c = toC({
      contents: [
        { role: 'user', parts: [{ text: 'go' }] },
        {
          role: 'model',
          parts: [
            { functionCall: { id: 'A', name: 'f', args: {} } },
            { functionCall: { id: 'B', name: 'f', args: { x: 1 } } },
          ],
        },
        {
          role: 'user',
          parts: [
            { functionResponse: { id: 'B', name: 'f', response: { output: 'b' } } },
            { functionResponse: { id: 'A', name: 'f', response: { output: 'a' } } },
          ],
        },
      ],
    });
    expect((c['messages'] as any[]).slice(2)).toEqual([
      { role: 'tool', tool_call_id: 'call_1', content: 'b' },
      { role: 'tool', tool_call_id: 'call_0', content: 'a' },
    ]);
  });

  it('inline media: images, wav/mp3 audio and PDFs; public image URLs', () => {
    const c = toC({
      contents: [
        {
          parts: [
            { inlineData: { mimeType: 'audio/mpeg', data: 'AAA' } },
            { inlineData: { mimeType: 'audio/wav', data: 'BBB' } },
            { inlineData: { mimeType: 'application/pdf', data: 'CCC' } },
            { fileData: { mimeType: 'image/png', fileUri: 'https://x.test/a.png' } },
            { text: 'describe' },
          ],
        },
      ],
    });
    expect(c['messages']).toEqual([
      {
        role: 'user',
        content: [
          { type: 'input_audio', input_audio: { data: 'AAA', format: 'mp3' } },
          { type: 'input_audio', input_audio: { data: 'BBB', format: 'wav' } },
          { type: 'file', file: { file_data: 'data:application/pdf;base64,CCC', filename: 'document.pdf' } },
          { type: 'image_url', image_url: { url: 'https://x.test/a.png' } },
          { type: 'text', text: 'describe' },
        ],
      },
    ]);
  });

  it('response schemas become json_schema response formats (OpenAPI Schema converted)', () => {
    const c = toC({
      generationConfig: {
        responseMimeType: 'application/json',
        responseSchema: {
          type: 'OBJECT',
          properties: {
            name: { type: 'STRING', nullable: true },
            tags: { type: 'ARRAY', items: { type: 'STRING' }, maxItems: '3' },
          },
          required: ['name'],
          propertyOrdering: ['name', 'tags'],
        },
      },
    });
    expect(c['response_format']).toEqual({
      type: 'json_schema',
      json_schema: {
        name: 'response',
        schema: {
          type: 'object',
          properties: {
            name: { type: ['string', 'null'] },
            tags: { type: 'array', items: { type: 'string' }, maxItems: 3 },
          },
          required: ['name'],
        },
      },
    });
    const js = { type: 'object', properties: { a: { type: 'integer' } } };
    expect(
      toC({ generationConfig: { responseMimeType: 'application/json', responseJsonSchema: js } })[
        'response_format'
      ],
    ).toEqual({
      type: 'json_schema',
      json_schema: { name: 'response', schema: js },
    });
    expect(jsonSchemaOf({ type: 'TYPE_UNSPECIFIED', any_of: [{ type: 'INTEGER' }] })).toEqual({
      anyOf: [{ type: 'integer' }],
    });
  });

  it('function declarations with an OpenAPI schema; toolConfig modes', () => {
    const tools = [
      {
        functionDeclarations: [
          {
            name: 'f',
            description: 'F',
            parameters: { type: 'OBJECT', properties: { q: { type: 'STRING' } } },
          },
          { name: 'g' },
        ],
      },
    ];
    const c = toC({ tools });
    expect(c['tools']).toEqual([
      {
        type: 'function',
        function: {
          name: 'f',
          description: 'F',
          parameters: { type: 'object', properties: { q: { type: 'string' } } },
        },
      },
      { type: 'function', function: { name: 'g' } },
    ]);
    expect(c['tool_choice']).toBeUndefined();
    const choice = (functionCallingConfig: unknown) =>
      toC({ tools, toolConfig: { functionCallingConfig } })['tool_choice'];
    expect(choice({ mode: 'AUTO' })).toBe('auto');
    expect(choice({ mode: 'NONE' })).toBe('none');
    expect(choice({ mode: 'ANY' })).toBe('required');
    expect(choice({ mode: 'ANY', allowedFunctionNames: ['f', 'g'] })).toEqual({
      type: 'allowed_tools',
      allowed_tools: {
        mode: 'required',
        tools: [
          { type: 'function', function: { name: 'f' } },
          { type: 'function', function: { name: 'g' } },
        ],
      },
    });
    expectRefused(() => choice({ mode: 'VALIDATED' }), 'toolConfig.functionCallingConfig.mode');
  });

  it.each([
    ['cachedContent', { cachedContent: 'cachedContents/abc' }],
    ['tools[0].googleSearch', { tools: [{ googleSearch: {} }] }],
    ['tools[0].codeExecution', { tools: [{ codeExecution: {} }] }],
    ['tools[1].urlContext', { tools: [{ functionDeclarations: [{ name: 'f' }] }, { url_context: {} }] }],
    ['generationConfig.topK', { generationConfig: { topK: 40 } }],
    ['generationConfig.responseLogprobs', { generationConfig: { responseLogprobs: true } }],
    ['generationConfig.speechConfig', { generationConfig: { speechConfig: {} } }],
    ['generationConfig.responseModalities', { generationConfig: { responseModalities: ['TEXT', 'IMAGE'] } }],
    ['generationConfig.responseMimeType', { generationConfig: { responseMimeType: 'text/x.enum' } }],
    [
      'generationConfig.thinkingConfig.thinkingBudget',
      { generationConfig: { thinkingConfig: { thinkingBudget: 1024 } } },
    ],
    ['toolConfig.retrievalConfig', { toolConfig: { retrievalConfig: {} } }],
    ['labels', { labels: { a: 'b' } }],
    [
      'contents[0].parts[0].executableCode',
      { contents: [{ role: 'user', parts: [{ executableCode: { code: 'x' } }] }] },
    ],
    ['contents[0].parts[0].videoMetadata', { contents: [{ role: 'user', parts: [{ videoMetadata: {} }] }] }],
    [
      'contents[0].parts[0].inlineData',
      { contents: [{ role: 'user', parts: [{ inlineData: { mimeType: 'video/mp4', data: 'x' } }] }] },
    ],
    [
      'contents[0].parts[0].fileData',
      {
        contents: [
          {
            role: 'user',
            parts: [
              {
                fileData: {
                  fileUri: 'https://generativelanguage.googleapis.com/v1beta/files/abc',
                  mimeType: 'image/png',
                },
              },
            ],
          },
        ],
      },
    ],
    [
      'contents[0].parts[0].inlineData',
      { contents: [{ role: 'model', parts: [{ inlineData: { mimeType: 'image/png', data: 'x' } }] }] },
    ],
    [
      'systemInstruction.parts[0]',
      { systemInstruction: { parts: [{ inlineData: { mimeType: 'image/png', data: 'x' } }] } },
    ],
  ])('refuses %s', (param, extra) => {
    expectRefused(() => toC(extra), param);
  });

  it('harmless settings pass: thinkingBudget -1, includeThoughts, safetySettings, false logprobs', () => {
    expect(() =>
      toC({
        generationConfig: {
          thinkingConfig: { thinkingBudget: -1, includeThoughts: false },
          responseLogprobs: false,
        },
        safetySettings: [],
      }),
    ).not.toThrow();
  });

  it('rejects malformed input with invalid_request', () => {
    expectInvalid(() => toC({ contents: 'hi' }), 'contents');
    expectInvalid(() => toC({ contents: [{ role: 'system', parts: [{ text: 'x' }] }] }), 'contents[0].role');
    expectInvalid(
      () => toC({ contents: [{ role: 'user', parts: [{ functionResponse: { name: 'f', response: {} } }] }] }),
      'contents[0].parts[0].functionResponse',
    );
    expectInvalid(() => toC({ contents: [{ role: 'user', parts: [{}] }] }), 'contents[0].parts[0]');
    expectInvalid(
      () => toC({ generationConfig: { responseSchema: { type: 'OBJECT' } } }),
      'generationConfig.responseMimeType',
    );
    expectInvalid(() => toC({ generationConfig: { temperature: 'hot' } }), 'generationConfig.temperature');
  });
});

// ----------------------------------------------------------------------------------------- chat answer -> Gemini

const completion = (extra: Partial<ChatCompletion> = {}): ChatCompletion => ({
  id: 'chatcmpl-xyz',
  object: 'chat.completion',
  created: 1,
  model: 'gpt-up',
  choices: [
    {
      index: 0,
      message: { role: 'assistant', content: 'Hi there', refusal: null },
      finish_reason: 'stop',
      logprobs: null,
    },
  ],
  usage: {
    prompt_tokens: 9,
    completion_tokens: 3,
    total_tokens: 12,
    prompt_tokens_details: { cached_tokens: 4 },
  },
  ...extra,
});

describe('chatToGeminiResponse', () => {
  it('text answer with usage under the alias', () => {
    expect(chatToGeminiResponse(completion(), null, 'alias')).toEqual({
      candidates: [
        { content: { role: 'model', parts: [{ text: 'Hi there' }] }, finishReason: 'STOP', index: 0 },
      ],
      modelVersion: 'alias',
      responseId: 'xyz',
      usageMetadata: {
        promptTokenCount: 9,
        candidatesTokenCount: 3,
        totalTokenCount: 12,
        cachedContentTokenCount: 4,
      },
    });
  });

  it('tool calls become functionCall parts; reasoning tokens become thoughtsTokenCount; the usage argument wins', () => {
    const r = chatToGeminiResponse(
      completion({
        choices: [
          {
            index: 0,
            message: {
              role: 'assistant',
              content: null,
              refusal: null,
              tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{"a":1}' } }],
            },
            finish_reason: 'tool_calls',
            logprobs: null,
          },
        ],
        usage: {
          prompt_tokens: 9,
          completion_tokens: 30,
          total_tokens: 39,
          completion_tokens_details: { reasoning_tokens: 20 },
        },
      }),
      { inputTokens: 9, outputTokens: 30, cachedTokens: 0, cacheWriteTokens: 0 },
      'alias',
    );
    expect(r.candidates).toEqual([
      {
        content: { role: 'model', parts: [{ functionCall: { name: 'f', args: { a: 1 } } }] },
        finishReason: 'STOP',
        index: 0,
      },
    ]);
    expect(r.usageMetadata).toEqual({
      promptTokenCount: 9,
      candidatesTokenCount: 10,
      thoughtsTokenCount: 20,
      totalTokenCount: 39,
    });
    expect(geminiUsage(r.usageMetadata)?.outputTokens).toBe(30);
  });

  it.each([
    ['stop', 'STOP'],
    ['length', 'MAX_TOKENS'],
    ['tool_calls', 'STOP'],
    ['content_filter', 'SAFETY'],
  ] as const)('finish_reason %s -> %s', (finish, reason) => {
    const r = chatToGeminiResponse(
      completion({
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: '', refusal: null },
            finish_reason: finish,
            logprobs: null,
          },
        ],
      }),
      null,
      'a',
    );
    expect(r.candidates![0]!.finishReason).toBe(reason);
    expect(r.candidates![0]!.content).toEqual({ role: 'model', parts: [{ text: '' }] });
  });

  it('unparseable tool arguments are a bad upstream answer', () => {
    const bad = completion({
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: null,
            refusal: null,
            tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{oops' } }],
          },
          finish_reason: 'tool_calls',
          logprobs: null,
        },
      ],
    });
    expect(thrown(() => chatToGeminiResponse(bad, null, 'a')).code).toBe('upstream_bad_response');
  });
});

// ----------------------------------------------------------------------------------------- chat stream -> Gemini stream

const chunk = (
  choices: ChatCompletionChunk['choices'],
  extra: Partial<ChatCompletionChunk> = {},
): ChatCompletionChunk => ({
  id: 'chatcmpl-s1',
  object: 'chat.completion.chunk',
  created: 1,
  model: 'gpt-up',
  choices,
  ...extra,
});

describe('ChatToGeminiStream', () => {
  it('text deltas are chunks; tool calls come whole in the final chunk with finishReason and usage', () => {
    const s = new ChatToGeminiStream('alias');
    expect(
      s.push(chunk([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }])),
    ).toEqual([]);
    expect(
      geminiEvents(s.push(chunk([{ index: 0, delta: { content: 'Let me ' }, finish_reason: null }]))),
    ).toEqual([
      {
        candidates: [{ content: { role: 'model', parts: [{ text: 'Let me ' }] }, index: 0 }],
        modelVersion: 'alias',
        responseId: 's1',
      },
    ]);
    s.push(chunk([{ index: 0, delta: { content: 'check.' }, finish_reason: null }]));
    expect(
      s.push(
        chunk([
          {
            index: 0,
            delta: {
              tool_calls: [
                { index: 0, id: 'c1', type: 'function', function: { name: 'weather', arguments: '' } },
              ],
            },
            finish_reason: null,
          },
        ]),
      ),
    ).toEqual([]);
    s.push(
      chunk([
        {
          index: 0,
          delta: { tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] },
          finish_reason: null,
        },
      ]),
    );
    s.push(
      chunk([
        {
          index: 0,
          delta: {
            tool_calls: [
              { index: 0, function: { arguments: '"Paris"}' } },
              { index: 1, id: 'c2', function: { name: 'now', arguments: '' } },
            ],
          },
          finish_reason: null,
        },
      ]),
    );
    expect(s.push(chunk([{ index: 0, delta: {}, finish_reason: 'tool_calls' }]))).toEqual([]);
    expect(
      s.push(chunk([], { usage: { prompt_tokens: 5, completion_tokens: 7, total_tokens: 12 } })),
    ).toEqual([]);
    const end = geminiEvents(
      s.finish({ inputTokens: 5, outputTokens: 7, cachedTokens: 0, cacheWriteTokens: 0 }),
    );
    expect(end).toEqual([
      {
        candidates: [
          {
            content: {
              role: 'model',
              parts: [
                { functionCall: { name: 'weather', args: { city: 'Paris' } } },
                { functionCall: { name: 'now', args: {} } },
              ],
            },
            finishReason: 'STOP',
            index: 0,
          },
        ],
        modelVersion: 'alias',
        responseId: 's1',
        usageMetadata: { promptTokenCount: 5, candidatesTokenCount: 7, totalTokenCount: 12 },
      },
    ]);
    expect(s.emittedText).toBe('Let me check.');
    expect(s.finish(null)).toEqual([]);
  });

  it('a plain stream ends with an empty text part, the finish reason and no usage when unknown', () => {
    const s = new ChatToGeminiStream('alias');
    s.push(chunk([{ index: 0, delta: { content: 'x' }, finish_reason: 'length' }]));
    expect(geminiEvents(s.finish(null))).toEqual([
      {
        candidates: [
          { content: { role: 'model', parts: [{ text: '' }] }, finishReason: 'MAX_TOKENS', index: 0 },
        ],
        modelVersion: 'alias',
        responseId: 's1',
      },
    ]);
  });

  it("errorFrame is Google's envelope", () => {
    const f = errorFrame('gemini', new GatewayError('upstream_stream_interrupted', 'boom'));
    expect(f.startsWith('data: ')).toBe(true);
    expect(geminiEvents(f)[0].error).toMatchObject({ code: 502, message: 'boom', status: 'UNAVAILABLE' });
  });
});

describe('geminiPivot', () => {
  it('the chat request carries the model from the body (else the alias) and asks for usage on streams', () => {
    const p = geminiPivot(gbase({ model: 'from-body' }), true, 'alias');
    expect(p.chat).toMatchObject({
      model: 'from-body',
      stream: true,
      stream_options: { include_usage: true },
    });
    const q = geminiPivot({ contents: [{ parts: [{ text: 'x' }] }] }, false, 'alias');
    expect(q.chat).toEqual({ model: 'alias', messages: [{ role: 'user', content: 'x' }], stream: false });
    expect(q.fromChat(completion(), null)).toMatchObject({
      modelVersion: 'alias',
      candidates: [{ content: { parts: [{ text: 'Hi there' }] } }],
    });
  });

  it('a Gemini client served by an OpenAI channel: stream end to end through PivotExchange', () => {
    const body = gbase({
      contents: [{ role: 'user', parts: [{ text: 'weather?' }] }],
      tools: [
        {
          functionDeclarations: [
            { name: 'weather', parameters: { type: 'OBJECT', properties: { city: { type: 'STRING' } } } },
          ],
        },
      ],
    });
    const pivot = geminiPivot(body, true, 'alias');
    const oep: UpstreamEndpoint = {
      code: 'o',
      provider: 'openai',
      baseUrl: 'https://api.openai.test/v1',
      credential: 'sk-x',
      headers: {},
    };
    const inner = openaiExchange('openai_chat', pivot.chat, oep, 'gpt-up', 'alias');
    const ex = new PivotExchange(pivot, inner);
    const sent = JSON.parse(ex.call.body as string);
    expect(sent).toMatchObject({ model: 'gpt-up', stream: true, stream_options: { include_usage: true } });
    expect(sent.tools[0].function.parameters).toEqual({
      type: 'object',
      properties: { city: { type: 'string' } },
    });
    const tr = ex.streamTranslator();
    const ev = (o: unknown) => ({ event: '', data: typeof o === 'string' ? o : JSON.stringify(o) });
    let out = '';
    out += tr.onEvent(
      ev(chunk([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }])),
    );
    out += tr.onEvent(ev(chunk([{ index: 0, delta: { content: 'Sure.' }, finish_reason: null }])));
    out += tr.onEvent(
      ev(
        chunk([
          {
            index: 0,
            delta: {
              tool_calls: [
                {
                  index: 0,
                  id: 'c',
                  type: 'function',
                  function: { name: 'weather', arguments: '{"city":"Oslo"}' },
                },
              ],
            },
            finish_reason: null,
          },
        ]),
      ),
    );
    out += tr.onEvent(ev(chunk([{ index: 0, delta: {}, finish_reason: 'tool_calls' }])));
    out += tr.onEvent(
      ev(chunk([], { usage: { prompt_tokens: 11, completion_tokens: 4, total_tokens: 15 } })),
    );
    expect(tr.done).toBe(false);
    out += tr.onEvent(ev('[DONE]'));
    expect(tr.done).toBe(true);
    out += tr.end();
    const events = geminiEvents(out);
    expect(events).toHaveLength(2);
    expect(events[0].candidates[0].content.parts).toEqual([{ text: 'Sure.' }]);
    expect(events[1]).toMatchObject({
      candidates: [
        {
          content: { role: 'model', parts: [{ functionCall: { name: 'weather', args: { city: 'Oslo' } } }] },
          finishReason: 'STOP',
          index: 0,
        },
      ],
      modelVersion: 'alias',
      usageMetadata: { promptTokenCount: 11, candidatesTokenCount: 4, totalTokenCount: 15 },
    });
    expect(tr.emittedText).toBe('Sure.');
    expect(tr.usage()).toEqual({ inputTokens: 11, outputTokens: 4, cachedTokens: 0, cacheWriteTokens: 0 });
  });
});

// ----------------------------------------------------------------------------------------- round trips

describe('round trips', () => {
  it('Gemini request -> chat -> Gemini keeps the conversation (plus the placeholder signature)', () => {
    const g = {
      systemInstruction: { parts: [{ text: 'sys' }] },
      contents: [
        { role: 'user', parts: [{ text: 'q' }, { inlineData: { mimeType: 'image/png', data: PNG } }] },
        {
          role: 'model',
          parts: [
            { text: 'calling' },
            { functionCall: { name: 'f', args: { a: [1, { b: null }] } } },
            { functionCall: { name: 'f', args: {} } },
          ],
        },
        {
          role: 'user',
          parts: [
            { functionResponse: { name: 'f', response: { output: 'one' } } },
            { functionResponse: { name: 'f', response: { n: 2 } } },
          ],
        },
        { role: 'model', parts: [{ text: 'done' }] },
      ],
      generationConfig: {
        maxOutputTokens: 10,
        temperature: 1,
        stopSequences: ['s'],
        responseMimeType: 'application/json',
      },
      tools: [
        {
          functionDeclarations: [
            {
              name: 'f',
              description: 'd',
              parametersJsonSchema: { type: 'object', properties: { a: { type: 'array' } } },
            },
          ],
        },
      ],
      toolConfig: { functionCallingConfig: { mode: 'ANY', allowedFunctionNames: ['f'] } },
    };
    const back = chatToGeminiRequest(
      geminiToChatRequest({ ...g, model: 'alias' }, false) as unknown as ChatRequest,
    );
    const expected = structuredClone(g) as any;
    expected.contents[1].parts[1].thoughtSignature = SKIP_THOUGHT_SIGNATURE;
    expect(back).toEqual(expected);
  });

  it('chat request -> Gemini -> chat keeps the conversation (ids renumbered)', () => {
    const chat: ChatRequest = {
      model: 'alias',
      messages: [
        { role: 'system', content: 'sys' },
        { role: 'user', content: 'q' },
        {
          role: 'assistant',
          content: 'calling',
          tool_calls: [{ id: 'x', type: 'function', function: { name: 'f', arguments: '{"a":1}' } }],
        },
        { role: 'tool', tool_call_id: 'x', content: 'r' },
        { role: 'assistant', content: 'done' },
      ],
      max_tokens: 10,
      tools: [
        {
          type: 'function',
          function: { name: 'f', parameters: { type: 'object', properties: { a: { type: 'number' } } } },
        },
      ],
      tool_choice: 'required',
      stream: false,
    };
    const back = geminiToChatRequest({ ...chatToGeminiRequest(chat), model: 'alias' }, false);
    const expected = structuredClone(chat) as any;
    expected.messages[2].tool_calls[0].id = 'call_0';
    expected.messages[3].tool_call_id = 'call_0';
    expect(back).toEqual(expected);
  });

  it('chat answer -> Gemini -> chat keeps content, tool calls, finish reason and usage', () => {
    const c = completion({
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: 'hi',
            refusal: null,
            tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{"a":1}' } }],
          },
          finish_reason: 'tool_calls',
          logprobs: null,
        },
      ],
    });
    const back = geminiToChatCompletion(chatToGeminiResponse(c, null, 'alias'), 'alias');
    expect(back.choices[0]).toMatchObject({
      message: {
        content: 'hi',
        tool_calls: [{ type: 'function', function: { name: 'f', arguments: '{"a":1}' } }],
      },
      finish_reason: 'tool_calls',
    });
    expect(back.usage).toEqual(c.usage);
    expect(back.id).toBe('chatcmpl-xyz');
  });
});

// ----------------------------------------------------------------------------------------- the exchange

describe('geminiExchange', () => {
  it('openai_chat: the call goes to generateContent with the key header', () => {
    const ex = geminiExchange(
      'openai_chat',
      { model: 'alias', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 },
      EP,
      'gemini-2.5-flash',
      'alias',
    );
    expect(ex.call.path).toBe('/models/gemini-2.5-flash:generateContent');
    expect(ex.call.stream).toBe(false);
    expect(ex.call.headers).toEqual({
      'content-type': 'application/json',
      'x-extra': '1',
      'x-goog-api-key': 'AIzaTESTKEY',
    });
    expect(JSON.parse(ex.call.body as string)).toEqual({
      contents: [{ role: 'user', parts: [{ text: 'hi' }] }],
      generationConfig: { maxOutputTokens: 5 },
    });
    const r = ex.decodeJson(JSON.stringify(answer()));
    expect(r.usage).toEqual({ inputTokens: 10, outputTokens: 5, cachedTokens: 0, cacheWriteTokens: 0 });
    expect(r.body).toMatchObject({ model: 'alias', choices: [{ message: { content: 'Hello world' } }] });
    expect(thrown(() => ex.decodeJson('{"foo":1}')).code).toBe('upstream_bad_response');
    expect(thrown(() => ex.decodeJson('nope')).code).toBe('upstream_bad_response');
    expect(errorFrame('openai_chat', new GatewayError('upstream_error', 'x'))).toMatch(
      /^data: \{"error":\{"message":"x"/,
    );
  });

  it('paths: streamGenerateContent with alt=sse; a models/ prefix is not doubled; names are encoded', () => {
    expect(geminiPath('models/gemini-2.5-pro', true)).toBe(
      '/models/gemini-2.5-pro:streamGenerateContent?alt=sse',
    );
    expect(geminiPath('tuned/x y', false)).toBe('/models/tuned%2Fx%20y:generateContent');
  });

  const streamed = (includeUsage: boolean) => {
    const body: Record<string, unknown> = {
      model: 'alias',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
    };
    if (includeUsage) body.stream_options = { include_usage: true };
    return geminiExchange('openai_chat', body, EP, 'gemini-2.5-flash', 'alias');
  };
  const g1 = {
    candidates: [{ content: { role: 'model', parts: [{ text: 'Hel' }] } }],
    usageMetadata: { promptTokenCount: 3, totalTokenCount: 3 },
    responseId: 'r',
  };
  const g2 = {
    candidates: [{ content: { role: 'model', parts: [{ text: 'lo' }] }, finishReason: 'STOP' }],
    usageMetadata: { promptTokenCount: 3, candidatesTokenCount: 2, totalTokenCount: 5 },
    responseId: 'r',
  };

  it('openai_chat stream: OpenAI chunks, [DONE] at the finish; the usage chunk only when asked', () => {
    const ex = streamed(false);
    expect(ex.call.path).toBe('/models/gemini-2.5-flash:streamGenerateContent?alt=sse');
    expect(ex.call.stream).toBe(true);
    const tr = ex.streamTranslator();
    const a = chatEvents(tr.onEvent({ event: '', data: JSON.stringify(g1) }));
    expect(a.map((c) => c.choices[0].delta)).toEqual([
      { role: 'assistant', content: '' },
      { content: 'Hel' },
    ]);
    expect(a[0]).toMatchObject({ id: 'chatcmpl-r', object: 'chat.completion.chunk', model: 'alias' });
    expect(tr.done).toBe(false);
    const b = chatEvents(tr.onEvent({ event: '', data: JSON.stringify(g2) }));
    expect(b).toEqual([
      expect.objectContaining({ choices: [expect.objectContaining({ delta: { content: 'lo' } })] }),
      expect.objectContaining({ choices: [expect.objectContaining({ finish_reason: 'stop' })] }),
      '[DONE]',
    ]);
    expect(tr.done).toBe(true);
    expect(tr.emittedText).toBe('Hello');
    expect(tr.usage()).toEqual({ inputTokens: 3, outputTokens: 2, cachedTokens: 0, cacheWriteTokens: 0 });
    expect(tr.end()).toBe('');

    const tu = streamed(true).streamTranslator();
    tu.onEvent({ event: '', data: JSON.stringify(g1) });
    const c = chatEvents(tu.onEvent({ event: '', data: JSON.stringify(g2) }));
    expect(c.slice(-2)).toEqual([
      expect.objectContaining({
        choices: [],
        usage: expect.objectContaining({ prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 }),
      }),
      '[DONE]',
    ]);
  });

  it('openai_chat stream: an error event interrupts, garbage is a bad response', () => {
    const tr = streamed(false).streamTranslator();
    const e = thrown(() =>
      tr.onEvent({
        event: '',
        data: JSON.stringify({
          error: {
            code: 503,
            message: 'The model is overloaded. key AIzaSyA-1234567890abcdefghijklmno',
            status: 'UNAVAILABLE',
          },
        }),
      }),
    );
    expect(e.code).toBe('upstream_stream_interrupted');
    expect(e.message).not.toContain('1234567890abcdefghijklmno');
    expect(
      thrown(() => streamed(false).streamTranslator().onEvent({ event: '', data: '{not json' })).code,
    ).toBe('upstream_bad_response');
    expect(thrown(() => streamed(false).streamTranslator().onEvent({ event: '', data: '42' })).code).toBe(
      'upstream_bad_response',
    );
  });

  it("gemini: native passthrough without the gateway's model/stream fields", () => {
    const body = {
      model: 'alias',
      contents: [{ parts: [{ text: 'hi' }] }],
      generationConfig: { temperature: 0 },
      safetySettings: [],
    };
    const ex = geminiExchange('gemini', body, EP, 'gemini-2.5-flash', 'alias');
    expect(ex.call.path).toBe('/models/gemini-2.5-flash:generateContent');
    expect(JSON.parse(ex.call.body as string)).toEqual({
      contents: [{ parts: [{ text: 'hi' }] }],
      generationConfig: { temperature: 0 },
      safetySettings: [],
    });
    const r = ex.decodeJson(JSON.stringify(answer()));
    expect(r.body).toEqual({ ...answer(), modelVersion: 'alias' });
    expect(r.usage).toEqual({ inputTokens: 10, outputTokens: 5, cachedTokens: 0, cacheWriteTokens: 0 });
    const blocked = ex.decodeJson(JSON.stringify({ promptFeedback: { blockReason: 'SAFETY' } }));
    expect(blocked.body).toMatchObject({ promptFeedback: { blockReason: 'SAFETY' }, modelVersion: 'alias' });
    expect(thrown(() => ex.decodeJson('[]')).code).toBe('upstream_bad_response');
    expect(
      geminiEvents(errorFrame('gemini', new GatewayError('upstream_timeout', 't')))[0].error,
    ).toMatchObject({
      code: 504,
      status: 'DEADLINE_EXCEEDED',
    });
  });

  it('gemini stream: events re-emitted with the alias as modelVersion; done at the finishReason; last usage wins', () => {
    const ex = geminiExchange(
      'gemini',
      { model: 'alias', stream: true, contents: [] },
      EP,
      'gemini-2.5-flash',
      'alias',
    );
    expect(ex.call.path).toBe('/models/gemini-2.5-flash:streamGenerateContent?alt=sse');
    expect(JSON.parse(ex.call.body as string)).toEqual({ contents: [] });
    const tr = ex.streamTranslator();
    const a = tr.onEvent({
      event: '',
      data: JSON.stringify({ ...g1, modelVersion: 'gemini-2.5-flash-001' }),
    });
    expect(geminiEvents(a)).toEqual([{ ...g1, modelVersion: 'alias' }]);
    expect(tr.done).toBe(false);
    expect(tr.usage()).toEqual({ inputTokens: 3, outputTokens: 0, cachedTokens: 0, cacheWriteTokens: 0 });
    tr.onEvent({
      event: '',
      data: JSON.stringify({ candidates: [{ content: { parts: [{ text: 'ignored', thought: true }] } }] }),
    });
    tr.onEvent({ event: '', data: JSON.stringify(g2) });
    expect(tr.done).toBe(true);
    expect(tr.usage()).toEqual({ inputTokens: 3, outputTokens: 2, cachedTokens: 0, cacheWriteTokens: 0 });
    expect(tr.emittedText).toBe('Hello');
    expect(tr.end()).toBe('');
    expect(
      thrown(() =>
        tr.onEvent({ event: '', data: '[{"error":{"code":500,"message":"oops","status":"INTERNAL"}}]' }),
      ).code,
    ).toBe('upstream_stream_interrupted');
  });

  it('gemini stream: a blocked prompt ends it; several candidates end when all have finished', () => {
    const t1 = geminiExchange('gemini', { stream: true, contents: [] }, EP, 'm', 'alias').streamTranslator();
    t1.onEvent({ event: '', data: JSON.stringify({ promptFeedback: { blockReason: 'OTHER' } }) });
    expect(t1.done).toBe(true);
    const t2 = geminiExchange(
      'gemini',
      { stream: true, contents: [], generationConfig: { candidateCount: 2 } },
      EP,
      'm',
      'alias',
    ).streamTranslator();
    t2.onEvent({ event: '', data: JSON.stringify({ candidates: [{ finishReason: 'STOP' }] }) });
    expect(t2.done).toBe(false);
    t2.onEvent({ event: '', data: JSON.stringify({ candidates: [{ index: 1, finishReason: 'STOP' }] }) });
    expect(t2.done).toBe(true);
  });

  it('other dialects are not served directly', () => {
    for (const d of ['anthropic_messages', 'openai_responses', 'openai_embeddings'] as const) {
      expect(thrown(() => geminiExchange(d, {}, EP, 'm', 'alias')).code).toBe('unsupported_operation');
    }
  });

  it('translation refusals surface when the exchange is built', () => {
    expectRefused(
      () =>
        geminiExchange(
          'openai_chat',
          { model: 'a', messages: [{ role: 'user', content: 'x' }], logprobs: true },
          EP,
          'm',
          'alias',
        ),
      'logprobs',
    );
  });
});

// ----------------------------------------------------------------------------------------- error classification

const gerr = (code: number, status: string, message = 'm', details: unknown[] = []) =>
  JSON.stringify({ error: { code, message, status, details } });

describe('Gemini HTTP failure classification', () => {
  it.each([
    [
      '429 with RetryInfo',
      429,
      {},
      gerr(429, 'RESOURCE_EXHAUSTED', 'quota', [
        { '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: '38s' },
      ]),
      'rate_limited',
      { cooldownMs: 38_000 },
    ],
    [
      '429 Retry-After wins',
      429,
      { 'retry-after': '2' },
      gerr(429, 'RESOURCE_EXHAUSTED', 'quota', [{ retryDelay: '38s' }]),
      'rate_limited',
      { cooldownMs: 2000 },
    ],
    ['429 no delay', 429, {}, gerr(429, 'RESOURCE_EXHAUSTED'), 'rate_limited', { cooldownMs: 1000 }],
    [
      '429 credits depleted',
      429,
      {},
      gerr(429, 'RESOURCE_EXHAUSTED', 'Your prepayment credits are depleted.'),
      'quota_exhausted',
      { credential: 'exhausted' },
    ],
    [
      '400 API_KEY_INVALID',
      400,
      {},
      gerr(400, 'INVALID_ARGUMENT', 'API key not valid. Please pass a valid API key.', [
        {
          '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
          reason: 'API_KEY_INVALID',
          domain: 'googleapis.com',
        },
      ]),
      'auth_failed',
      { credential: 'invalid' },
    ],
    [
      '400 expired key by message',
      400,
      {},
      gerr(400, 'INVALID_ARGUMENT', 'API key expired. Please renew the API key.'),
      'auth_failed',
      { credential: 'invalid' },
    ],
    [
      '403 PERMISSION_DENIED',
      403,
      {},
      gerr(403, 'PERMISSION_DENIED'),
      'auth_failed',
      { credential: 'invalid' },
    ],
    ['401 UNAUTHENTICATED', 401, {}, gerr(401, 'UNAUTHENTICATED'), 'auth_failed', { credential: 'invalid' }],
    [
      '400 INVALID_ARGUMENT',
      400,
      {},
      gerr(400, 'INVALID_ARGUMENT', 'Invalid JSON payload received.'),
      'client_error',
      {},
    ],
    ['404 NOT_FOUND', 404, {}, gerr(404, 'NOT_FOUND', 'models/x is not found'), 'client_error', {}],
    [
      '400 context length',
      400,
      {},
      gerr(
        400,
        'INVALID_ARGUMENT',
        'The input token count (2000000) exceeds the maximum number of tokens allowed (1048576).',
      ),
      'context_length',
      {},
    ],
    ['503 UNAVAILABLE', 503, {}, gerr(503, 'UNAVAILABLE', 'The model is overloaded.'), 'server_error', {}],
    ['500 INTERNAL', 500, {}, gerr(500, 'INTERNAL'), 'server_error', {}],
    [
      'list-wrapped 429',
      429,
      {},
      `[${gerr(429, 'RESOURCE_EXHAUSTED', 'q', [{ retryDelay: '1.5s' }])}]`,
      'rate_limited',
      { cooldownMs: 1500 },
    ],
    ['502 HTML', 502, {}, '<html>bad gateway</html>', 'server_error', {}],
  ] as Array<[string, number, Record<string, string>, string, string, Record<string, unknown>]>)(
    '%s',
    (_n, status, headers, body, kind, extra) => {
      const f = classifyHttp('gemini', status, headers, body);
      expect(f.kind).toBe(kind);
      expect(f.status).toBe(status);
      for (const [k, v] of Object.entries(extra))
        expect((f as unknown as Record<string, unknown>)[k]).toEqual(v);
      if (!extra.credential) expect(f.credential).toBeUndefined();
      expect(f.upstreamCode).toBeUndefined();
    },
  );

  it('other providers are classified as before', () => {
    expect(classifyHttp('openai', 400, {}, gerr(400, 'INVALID_ARGUMENT', 'API key not valid')).kind).toBe(
      'client_error',
    );
    expect(
      classifyHttp('openai', 429, {}, gerr(429, 'RESOURCE_EXHAUSTED', 'q', [{ retryDelay: '38s' }]))
        .cooldownMs,
    ).toBe(1000);
  });
});
