/**
 * The refusals the outbound chat translators share (src/providers/outbound-refusals.ts), as tables run
 * against every vendor: which parameter values each refuses and with which words, and the walks over
 * messages, parts, tool calls and tools. Each text is the vendor's, byte for byte.
 */
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/core/errors.js';
import { openaiToAnthropicRequest } from '../../src/providers/anthropic/outbound.js';
import { openaiToConverseRequest } from '../../src/providers/bedrock/outbound.js';
import { chatToGeminiRequest } from '../../src/providers/gemini/outbound.js';
import type { ChatRequest } from '../../src/providers/openai/wire.js';
import { ASKS, type ChatParam } from '../../src/providers/outbound-refusals.js';

const VENDORS = {
  anthropic: (r: ChatRequest) => openaiToAnthropicRequest(r, 'claude-up', { defaultMaxTokens: 1024 }),
  bedrock: (r: ChatRequest) => openaiToConverseRequest(r),
  gemini: (r: ChatRequest) => chatToGeminiRequest(r),
};
type Vendor = keyof typeof VENDORS;
const CHANNEL: Record<Vendor, string> = {
  anthropic: 'an Anthropic channel',
  bedrock: 'a Bedrock channel',
  gemini: 'a Gemini channel',
};
const WIRE: Record<Vendor, string> = { anthropic: 'Anthropic', bedrock: 'Converse', gemini: 'Gemini' };

const req = (extra: Record<string, unknown> = {}): ChatRequest => ({
  model: 'alias',
  messages: [{ role: 'user', content: 'hi' }],
  ...extra,
});

/** What a vendor does with `r`: null when it translates it, else the error's fields. */
function outcome(
  v: Vendor,
  r: ChatRequest,
): { status: number; code: string; param: string | null; message: string } | null {
  try {
    VENDORS[v](r);
    return null;
  } catch (e) {
    expect(e).toBeInstanceOf(GatewayError);
    const g = e as GatewayError;
    return { status: g.status, code: g.code, param: g.param, message: g.message };
  }
}
const refusal = (v: Vendor, param: string, why?: string) => ({
  status: 400,
  code: 'unsupported_parameter',
  param,
  message: `${param} cannot be translated for ${CHANNEL[v]}${why ? `: ${why}` : ''}`,
});
const invalidRequest = (param: string, message: string) => ({
  status: 400,
  code: 'invalid_request',
  param,
  message,
});

describe('a refused parameter', () => {
  /** A value of each refusable field that asks for something. */
  const ASKING: Partial<Record<ChatParam, unknown>> = {
    n: 2,
    logprobs: true,
    top_logprobs: 3,
    response_format: { type: 'json_object' },
    audio: { voice: 'alloy', format: 'wav' },
    modalities: ['text', 'audio'],
    prediction: { type: 'content', content: 'x' },
    logit_bias: { '42': 5 },
    presence_penalty: 0.5,
    frequency_penalty: 0.5,
    seed: 7,
    store: true,
    web_search_options: {},
    functions: [],
    function_call: 'auto',
    reasoning_effort: 'low',
    metadata: { team: 'a' },
    parallel_tool_calls: false,
  };
  /** Each vendor's reason for refusing such a value; a field a vendor does not list it translates or drops. */
  const REASONS: Record<Vendor, Partial<Record<ChatParam, string>>> = {
    anthropic: {
      n: 'Anthropic returns exactly one choice',
      logprobs: 'Anthropic does not return log probabilities',
      top_logprobs: 'Anthropic does not return log probabilities',
      response_format: 'only {"type":"text"} is supported',
      audio: 'Anthropic models do not produce audio',
      modalities: 'only the text modality is supported',
      prediction: 'Anthropic has no predicted outputs',
      logit_bias: 'Anthropic has no logit bias',
      presence_penalty: 'Anthropic has no presence penalty',
      frequency_penalty: 'Anthropic has no frequency penalty',
      seed: 'Anthropic has no deterministic sampling seed',
      store: 'Anthropic does not store completions',
      web_search_options: 'use an OpenAI channel for web search',
      functions: 'legacy function calling is not supported; use tools',
      function_call: 'legacy function calling is not supported; use tool_choice',
      reasoning_effort:
        'Anthropic configures extended thinking differently; call the model through the Anthropic Messages endpoint to use it',
      metadata: 'Anthropic metadata only carries a user id (send `user` instead)',
    },
    bedrock: {
      n: 'Converse returns exactly one choice',
      logprobs: 'Converse does not return log probabilities',
      top_logprobs: 'Converse does not return log probabilities',
      response_format: 'only {"type":"text"} is supported',
      audio: 'Converse chat models do not produce audio',
      modalities: 'only the text modality is supported',
      prediction: 'Converse has no predicted outputs',
      logit_bias: 'Converse has no logit bias',
      presence_penalty: 'Converse has no presence penalty',
      frequency_penalty: 'Converse has no frequency penalty',
      seed: 'Converse has no sampling seed',
      store: 'Bedrock does not store completions',
      web_search_options: 'use an OpenAI channel for web search',
      functions: 'legacy function calling is not supported; use tools',
      function_call: 'legacy function calling is not supported; use tool_choice',
      reasoning_effort: 'Converse configures reasoning per model family',
      metadata: 'Converse has no completion metadata',
      parallel_tool_calls: 'Converse cannot disable parallel tool calls',
    },
    gemini: {
      logprobs: 'log probabilities are not translated',
      top_logprobs: 'log probabilities are not translated',
      logit_bias: 'Gemini has no logit bias',
      audio: 'audio output is not translated',
      modalities: 'only the text modality is supported',
      prediction: 'Gemini has no predicted outputs',
      web_search_options: 'call the model through the Gemini endpoint to use Google Search grounding',
      functions: 'legacy function calling is not supported; use tools',
      function_call: 'legacy function calling is not supported; use tool_choice',
    },
  };

  for (const v of Object.keys(VENDORS) as Vendor[]) {
    it.each(Object.keys(ASKING) as ChatParam[])(`${v}: %s`, (param) => {
      const why = REASONS[v][param];
      const expected = why === undefined ? null : refusal(v, param, why);
      expect(outcome(v, req({ [param]: ASKING[param] }))).toEqual(expected);
    });
  }

  // Values that ask for nothing: every vendor takes them, whether it refuses the field or not.
  const INERT: Partial<Record<ChatParam, unknown[]>> = {
    n: [null, 1],
    logprobs: [null, false],
    top_logprobs: [null, 0],
    response_format: [null, { type: 'text' }],
    modalities: [null, ['text']],
    logit_bias: [null, {}],
    presence_penalty: [null, 0],
    frequency_penalty: [null, 0],
    store: [null, false],
    metadata: [null, {}],
    parallel_tool_calls: [true],
  };
  it.each(Object.keys(ASKS) as ChatParam[])(
    '%s: the values that ask for nothing pass everywhere',
    (param) => {
      const values = INERT[param];
      expect(values, `an INERT row for ${param}`).toBeDefined();
      for (const v of Object.keys(VENDORS) as Vendor[])
        for (const value of values!) expect(outcome(v, req({ [param]: value }))).toBeNull();
    },
  );
  it('a field ASKS does not list passes as null (and is refused when given: ASKING)', () => {
    for (const v of Object.keys(VENDORS) as Vendor[]) {
      expect(outcome(v, req({ prediction: null }))).toBeNull();
      expect(outcome(v, req({ functions: null }))).toBeNull();
    }
  });

  it('an unknown field is refused by name, Object.prototype names included', () => {
    for (const v of Object.keys(VENDORS) as Vendor[])
      for (const param of ['top_k', 'toString', 'constructor'])
        expect(outcome(v, req({ [param]: 1 }))).toEqual(refusal(v, param, 'unknown parameter'));
  });

  it('names the first refused field in the request order', () => {
    expect(outcome('anthropic', req({ seed: 1, n: 2 }))?.param).toBe('seed');
    expect(outcome('anthropic', req({ n: 2, seed: 1 }))?.param).toBe('n');
  });

  it('spells out the full text', () => {
    expect(outcome('bedrock', req({ n: 3 }))?.message).toBe(
      'n cannot be translated for a Bedrock channel: Converse returns exactly one choice',
    );
  });
});

describe('the walks over messages, parts, tool calls and tools', () => {
  const call = (args: string) => ({ id: 'c1', type: 'function', function: { name: 'f', arguments: args } });
  type Expect = ReturnType<typeof refusal> | ReturnType<typeof invalidRequest>;
  // [what, request fields, each vendor's error]
  const ROWS: Array<[string, Record<string, unknown>, (v: Vendor) => Expect]> = [
    [
      'a participant name',
      { messages: [{ role: 'user', content: 'hi', name: 'bob' }] },
      (v) => refusal(v, 'messages[0].name', `${WIRE[v]} messages have no participant name`),
    ],
    [
      'a system message after the first turn',
      {
        messages: [
          { role: 'user', content: 'hi' },
          { role: 'developer', content: 's' },
        ],
      },
      (v) => ({
        status: 400,
        code: 'unsupported_parameter',
        param: 'messages',
        message: {
          anthropic:
            'a developer message after the conversation has started (messages[1]) cannot be translated for an Anthropic channel: Anthropic takes one system prompt before all turns',
          bedrock:
            'a developer message after the conversation has started (messages[1]) cannot be translated for a Bedrock channel: Converse takes its system prompt before all turns',
          gemini:
            'a developer message after the conversation has started (messages[1]) cannot be translated for a Gemini channel: Gemini takes one system instruction before all turns',
        }[v],
      }),
    ],
    [
      'a content part type the vendor lacks',
      { messages: [{ role: 'user', content: [{ type: 'video_url' }] }] },
      (v) => refusal(v, 'messages[0].content[0]', `video_url content parts have no ${WIRE[v]} equivalent`),
    ],
    [
      'a part that is not text where only text goes',
      { messages: [{ role: 'system', content: [{ type: 'image_url' }] }] },
      (v) => refusal(v, 'messages[0].content[0]', 'image_url parts are not supported here'),
    ],
    [
      'assistant audio',
      { messages: [{ role: 'assistant', content: 'x', audio: { id: 'a' } }] },
      (v) => refusal(v, 'messages[0].audio'),
    ],
    [
      'a legacy assistant function_call',
      { messages: [{ role: 'assistant', content: 'x', function_call: { name: 'f' } }] },
      (v) => refusal(v, 'messages[0].function_call', 'legacy function calling'),
    ],
    [
      'tool_calls that are not an array',
      { messages: [{ role: 'assistant', content: 'x', tool_calls: {} }] },
      () => invalidRequest('messages[0].tool_calls', 'tool_calls must be an array'),
    ],
    [
      'a tool call that is not a function',
      { messages: [{ role: 'assistant', content: 'x', tool_calls: [{ type: 'custom' }] }] },
      (v) => refusal(v, 'messages[0].tool_calls[0]', 'only function tool calls are supported'),
    ],
    [
      'tool call arguments that are not a JSON object',
      { messages: [{ role: 'assistant', content: 'x', tool_calls: [call('[1]')] }] },
      (v) =>
        refusal(
          v,
          'messages[0].tool_calls[0].function.arguments',
          'tool call arguments must be a JSON object',
        ),
    ],
    [
      'a tool that is not a function',
      { tools: [{ type: 'web_search' }] },
      (v) => refusal(v, 'tools[0]', 'only function tools are supported'),
    ],
    [
      'an unknown tool_choice',
      { tool_choice: 'any' },
      (v) =>
        refusal(
          v,
          'tool_choice',
          v === 'gemini'
            ? 'only "none", "auto", "required", a named function or allowed function tools are supported'
            : 'only "none", "auto", "required" or a named function are supported',
        ),
    ],
    [
      'messages that are not an array',
      { messages: {} },
      () => invalidRequest('messages', 'messages must be an array'),
    ],
    [
      'a message that is not an object',
      { messages: ['hi'] },
      () => invalidRequest('messages[0]', 'messages[0] must be an object'),
    ],
    [
      'an unknown role',
      { messages: [{ role: 'robot', content: 'x' }] },
      () => invalidRequest('messages[0].role', 'unknown message role "robot"'),
    ],
    // Bedrock leaves the legacy role to be an unknown one.
    [
      'a legacy function message',
      { messages: [{ role: 'function', content: 'x' }] },
      (v) =>
        v === 'bedrock'
          ? invalidRequest('messages[0].role', 'unknown message role "function"')
          : refusal(v, 'messages[0].role', 'legacy function messages are not supported; use tool messages'),
    ],
  ];

  for (const [what, extra, expected] of ROWS) {
    it.each(Object.keys(VENDORS) as Vendor[])(`${what}: %s`, (v) => {
      expect(outcome(v, req(extra))).toEqual(expected(v));
    });
  }

  it('checks an assistant turn in order: content, then tool_calls, each call whole before the next', () => {
    const m = { role: 'assistant', content: [{ type: 'image_url' }], tool_calls: {} };
    for (const v of Object.keys(VENDORS) as Vendor[]) {
      expect(outcome(v, req({ messages: [m] }))?.param).toBe('messages[0].content[0]');
      const calls = [{ ...call('{'), id: 'c0' }, { type: 'custom' }];
      expect(
        outcome(v, req({ messages: [{ role: 'assistant', content: '', tool_calls: calls }] }))?.param,
      ).toBe('messages[0].tool_calls[0].function.arguments');
    }
  });
});
