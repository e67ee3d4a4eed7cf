import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  OpenAIToAnthropicStream,
  anthropicToOpenAIRequest,
  openaiToAnthropicResponse,
} from '../../src/providers/anthropic/inbound.js';
import {
  AnthropicToOpenAIStream,
  anthropicToOpenAIResponse,
  openaiToAnthropicRequest,
} from '../../src/providers/anthropic/outbound.js';
import { anthropicUsage, type Message, type MessagesRequest } from '../../src/providers/anthropic/wire.js';
import { openaiUsage, type ChatCompletion, type ChatRequest } from '../../src/providers/openai/wire.js';
import { PNG, chatRequestOf, expectRefused, thrown } from '../helpers-translate.js';

const OPTS = { defaultMaxTokens: 4096 };
const base = (extra: Partial<ChatRequest> = {}) => chatRequestOf('claude-alias', extra);
const toA = (extra: Partial<ChatRequest> = {}) => openaiToAnthropicRequest(base(extra), 'claude-up', OPTS);
const abase = (extra: Partial<MessagesRequest> = {}): MessagesRequest => ({
  model: 'gpt-alias',
  max_tokens: 100,
  messages: [{ role: 'user', content: 'hi' }],
  ...extra,
});
const toO = (extra: Partial<MessagesRequest> = {}) => anthropicToOpenAIRequest(abase(extra), 'gpt-up');

// ----------------------------------------------------------------------------------------- usage

describe('usage extraction', () => {
  it('openaiUsage maps prompt/completion/cached tokens', () => {
    expect(
      openaiUsage({
        prompt_tokens: 100,
        completion_tokens: 20,
        prompt_tokens_details: { cached_tokens: 60 },
      }),
    ).toEqual({ inputTokens: 100, outputTokens: 20, cachedTokens: 60, cacheWriteTokens: 0 });
    expect(openaiUsage({ prompt_tokens: 5, completion_tokens: 1 })).toEqual({
      inputTokens: 5,
      outputTokens: 1,
      cachedTokens: 0,
      cacheWriteTokens: 0,
    });
  });
  it.each([null, undefined, 'x', {}, { total_tokens: 3 }])('openaiUsage(%j) is null', (u) => {
    expect(openaiUsage(u)).toBeNull();
  });
  it('anthropicUsage adds cache read and creation back into inputTokens', () => {
    expect(
      anthropicUsage({
        input_tokens: 10,
        output_tokens: 7,
        cache_read_input_tokens: 100,
        cache_creation_input_tokens: 50,
      }),
    ).toEqual({ inputTokens: 160, outputTokens: 7, cachedTokens: 100, cacheWriteTokens: 50 });
    expect(anthropicUsage({ input_tokens: 3, output_tokens: 1, cache_read_input_tokens: null })).toEqual({
      inputTokens: 3,
      outputTokens: 1,
      cachedTokens: 0,
      cacheWriteTokens: 0,
    });
    expect(anthropicUsage(undefined)).toEqual({
      inputTokens: 0,
      outputTokens: 0,
      cachedTokens: 0,
      cacheWriteTokens: 0,
    });
  });
});

// ----------------------------------------------------------------------- OpenAI -> Anthropic request

describe('openaiToAnthropicRequest', () => {
  it('translates a plain request', () => {
    expect(toA({ stream: true, stream_options: { include_usage: true } })).toEqual({
      model: 'claude-up',
      max_tokens: 4096,
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
    });
  });

  it.each<[string, Partial<ChatRequest>, Record<string, unknown>]>([
    ['max_completion_tokens wins', { max_completion_tokens: 10, max_tokens: 20 }, { max_tokens: 10 }],
    ['max_tokens', { max_tokens: 20 }, { max_tokens: 20 }],
    ['stop string', { stop: 'END' }, { stop_sequences: ['END'] }],
    ['stop array', { stop: ['a', 'b'] }, { stop_sequences: ['a', 'b'] }],
    ['temperature and top_p', { temperature: 0.5, top_p: 0.9 }, { temperature: 0.5, top_p: 0.9 }],
    ['temperature 1 is fine', { temperature: 1 }, { temperature: 1 }],
    ['user', { user: 'u-1' }, { metadata: { user_id: 'u-1' } }],
    ['safety_identifier', { safety_identifier: 's-1', user: 'u-1' }, { metadata: { user_id: 's-1' } }],
    ['stream false', { stream: false }, { stream: false }],
    ['tool_choice none', { tool_choice: 'none' }, { tool_choice: { type: 'none' } }],
    ['tool_choice auto', { tool_choice: 'auto' }, { tool_choice: { type: 'auto' } }],
    ['tool_choice required', { tool_choice: 'required' }, { tool_choice: { type: 'any' } }],
    [
      'tool_choice named',
      { tool_choice: { type: 'function', function: { name: 'f' } } },
      { tool_choice: { type: 'tool', name: 'f' } },
    ],
  ])('%s', (_name, extra, expected) => {
    expect(toA(extra)).toMatchObject(expected);
  });

  it.each<[string, Partial<ChatRequest>]>([
    [
      'allowed no-op values',
      {
        n: 1,
        logprobs: false,
        top_logprobs: 0,
        response_format: { type: 'text' },
        modalities: ['text'],
        presence_penalty: 0,
        frequency_penalty: 0,
        store: false,
        metadata: {},
        logit_bias: {},
        audio: null,
        seed: null,
        service_tier: 'auto',
        stream_options: { include_usage: true },
        prompt_cache_key: 'k',
      },
    ],
  ])('accepts %s and drops them', (_name, extra) => {
    const out = toA(extra);
    expect(Object.keys(out).sort()).toEqual(['max_tokens', 'messages', 'model']);
  });

  it('defaults max_tokens when neither limit is given', () => {
    expect(openaiToAnthropicRequest(base(), 'm', { defaultMaxTokens: 123 }).max_tokens).toBe(123);
  });

  it('moves leading system and developer messages to `system`', () => {
    const one = toA({
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'hi' },
      ],
    });
    expect(one.system).toBe('be brief');
    expect(one.messages).toEqual([{ role: 'user', content: 'hi' }]);
    const many = toA({
      messages: [
        { role: 'system', content: 'a' },
        { role: 'developer', content: [{ type: 'text', text: 'b' }] },
        { role: 'user', content: 'hi' },
      ],
    });
    expect(many.system).toEqual([
      { type: 'text', text: 'a' },
      { type: 'text', text: 'b' },
    ]);
  });

  it('translates user content parts, data: and http images', () => {
    const out = toA({
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'look' },
            { type: 'image_url', image_url: { url: `data:image/png;base64,${PNG}`, detail: 'high' } },
            { type: 'image_url', image_url: { url: 'https://example.com/cat.jpg' } },
          ],
        },
      ],
    });
    expect(out.messages).toEqual([
      {
        role: 'user',
        content: [
          { type: 'text', text: 'look' },
          { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG } },
          { type: 'image', source: { type: 'url', url: 'https://example.com/cat.jpg' } },
        ],
      },
    ]);
  });

  it('translates assistant tool calls and tool results, merging consecutive turns', () => {
    const out = toA({
      messages: [
        { role: 'user', content: 'weather in Paris and Rome?' },
        {
          role: 'assistant',
          content: '',
          tool_calls: [
            { id: 'call_1', type: 'function', function: { name: 'weather', arguments: '{"city":"Paris"}' } },
            { id: 'call_2', type: 'function', function: { name: 'weather', arguments: '{"city":"Rome"}' } },
          ],
        },
        { role: 'tool', tool_call_id: 'call_1', content: 'sunny' },
        { role: 'tool', tool_call_id: 'call_2', content: [{ type: 'text', text: 'rainy' }] },
        { role: 'user', content: 'thanks' },
      ],
    });
    expect(out.messages).toEqual([
      { role: 'user', content: 'weather in Paris and Rome?' },
      {
        role: 'assistant',
        content: [
          { type: 'tool_use', id: 'call_1', name: 'weather', input: { city: 'Paris' } },
          { type: 'tool_use', id: 'call_2', name: 'weather', input: { city: 'Rome' } },
        ],
      },
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: 'call_1', content: 'sunny' },
          { type: 'tool_result', tool_use_id: 'call_2', content: [{ type: 'text', text: 'rainy' }] },
          { type: 'text', text: 'thanks' },
        ],
      },
    ]);
  });

  it('merges consecutive user turns and keeps assistant text before tool calls', () => {
    const out = toA({
      messages: [
        { role: 'user', content: 'a' },
        { role: 'user', content: 'b' },
        {
          role: 'assistant',
          content: 'let me check',
          tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '' } }],
        },
      ],
    });
    expect(out.messages).toEqual([
      {
        role: 'user',
        content: [
          { type: 'text', text: 'a' },
          { type: 'text', text: 'b' },
        ],
      },
      {
        role: 'assistant',
        content: [
          { type: 'text', text: 'let me check' },
          { type: 'tool_use', id: 'c', name: 'f', input: {} },
        ],
      },
    ]);
  });

  it('translates function tools', () => {
    const params = { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] };
    const out = toA({
      tools: [
        {
          type: 'function',
          function: { name: 'weather', description: 'Get weather', parameters: params, strict: true },
        },
        { type: 'function', function: { name: 'now' } },
      ],
    });
    expect(out.tools).toEqual([
      { name: 'weather', description: 'Get weather', input_schema: params, strict: true },
      { name: 'now', input_schema: { type: 'object', properties: {} } },
    ]);
  });

  it.each<[string, Partial<ChatRequest>, unknown]>([
    ['no tool_choice', {}, { type: 'auto', disable_parallel_tool_use: true }],
    ['required', { tool_choice: 'required' }, { type: 'any', disable_parallel_tool_use: true }],
    [
      'named',
      { tool_choice: { type: 'function', function: { name: 'f' } } },
      { type: 'tool', name: 'f', disable_parallel_tool_use: true },
    ],
    ['none', { tool_choice: 'none' }, { type: 'none' }],
  ])('parallel_tool_calls: false with %s', (_n, extra, expected) => {
    const tools: ChatRequest['tools'] = [{ type: 'function', function: { name: 'f' } }];
    expect(toA({ tools, parallel_tool_calls: false, ...extra }).tool_choice).toEqual(expected);
  });

  const sysAfterUser: ChatRequest['messages'] = [
    { role: 'user', content: 'hi' },
    { role: 'system', content: 'late' },
  ];
  it.each<[string, Partial<ChatRequest>, string]>([
    ['n > 1', { n: 2 }, 'n'],
    ['logprobs', { logprobs: true }, 'logprobs'],
    ['top_logprobs', { top_logprobs: 3 }, 'top_logprobs'],
    ['response_format json_object', { response_format: { type: 'json_object' } }, 'response_format'],
    [
      'response_format json_schema',
      { response_format: { type: 'json_schema', json_schema: { name: 'x', schema: {} } } },
      'response_format',
    ],
    ['audio', { audio: { voice: 'alloy', format: 'mp3' } }, 'audio'],
    ['modalities audio', { modalities: ['text', 'audio'] }, 'modalities'],
    ['prediction', { prediction: { type: 'content', content: 'x' } }, 'prediction'],
    ['logit_bias', { logit_bias: { '50256': -100 } }, 'logit_bias'],
    ['presence_penalty', { presence_penalty: 0.5 }, 'presence_penalty'],
    ['frequency_penalty', { frequency_penalty: -0.5 }, 'frequency_penalty'],
    ['seed', { seed: 42 }, 'seed'],
    ['store', { store: true }, 'store'],
    ['web_search_options', { web_search_options: {} }, 'web_search_options'],
    ['functions', { functions: [{ name: 'f' }] }, 'functions'],
    ['function_call', { function_call: 'auto' }, 'function_call'],
    ['metadata', { metadata: { team: 'a' } }, 'metadata'],
    ['reasoning_effort', { reasoning_effort: 'high' }, 'reasoning_effort'],
    ['temperature > 1', { temperature: 1.5 }, 'temperature'],
    ['unknown field', { verbosity: 'low' }, 'verbosity'],
    ['another unknown field', { frobnicate: true }, 'frobnicate'],
    ['system after a turn', { messages: sysAfterUser }, 'messages'],
    [
      'input_audio part',
      {
        messages: [
          { role: 'user', content: [{ type: 'input_audio', input_audio: { data: 'x', format: 'wav' } }] },
        ],
      },
      'messages[0].content[0]',
    ],
    [
      'file part',
      {
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: 'a' },
              { type: 'file', file: { file_id: 'f' } },
            ],
          },
        ],
      },
      'messages[0].content[1]',
    ],
    [
      'unsupported data: image type',
      {
        messages: [
          { role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/tiff;base64,AA' } }] },
        ],
      },
      'messages[0].content[0]',
    ],
    [
      'ftp image url',
      { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'ftp://x/y.png' } }] }] },
      'messages[0].content[0]',
    ],
    [
      'tool arguments that are not JSON',
      {
        messages: [
          { role: 'user', content: 'x' },
          {
            role: 'assistant',
            tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{oops' } }],
          },
        ],
      },
      'messages[1].tool_calls[0].function.arguments',
    ],
    [
      'tool arguments that are a JSON array',
      {
        messages: [
          { role: 'user', content: 'x' },
          {
            role: 'assistant',
            tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '[1]' } }],
          },
        ],
      },
      'messages[1].tool_calls[0].function.arguments',
    ],
    [
      'custom tool call',
      {
        messages: [
          { role: 'user', content: 'x' },
          { role: 'assistant', tool_calls: [{ id: 'c', type: 'custom', custom: { name: 'f', input: 'x' } }] },
        ],
      },
      'messages[1].tool_calls[0]',
    ],
    [
      'legacy function message',
      { messages: [{ role: 'function', name: 'f', content: 'x' }] },
      'messages[0].role',
    ],
    ['message name', { messages: [{ role: 'user', content: 'x', name: 'bob' }] }, 'messages[0].name'],
    [
      'assistant audio',
      {
        messages: [
          { role: 'user', content: 'x' },
          { role: 'assistant', content: null, audio: { id: 'a' } },
        ],
      },
      'messages[1].audio',
    ],
    ['custom tool', { tools: [{ type: 'custom', custom: { name: 'c' } }] }, 'tools[0]'],
    [
      'allowed_tools tool_choice',
      { tool_choice: { type: 'allowed_tools', allowed_tools: { mode: 'auto', tools: [] } } },
      'tool_choice',
    ],
  ])('refuses %s', (_name, extra, param) => {
    expectRefused(() => toA(extra), param);
  });

  it('rejects malformed input as invalid_request, not a crash', () => {
    const e = thrown(() => openaiToAnthropicRequest({ model: 'm', messages: 'x' } as never, 'u', OPTS));
    expect(e.code).toBe('invalid_request');
    expect(e.param).toBe('messages');
  });
});

// ---------------------------------------------------------------------- Anthropic -> OpenAI response

const anthropicMessage = (extra: Partial<Message> = {}): Message => ({
  id: 'msg_01',
  type: 'message',
  role: 'assistant',
  model: 'claude-up',
  content: [{ type: 'text', text: 'Hello' }],
  stop_reason: 'end_turn',
  stop_sequence: null,
  usage: { input_tokens: 10, output_tokens: 5, cache_read_input_tokens: 30, cache_creation_input_tokens: 2 },
  ...extra,
});

describe('anthropicToOpenAIResponse', () => {
  it('translates a text message with usage', () => {
    const r = anthropicToOpenAIResponse(anthropicMessage(), 'alias');
    expect(r).toMatchObject({
      id: 'chatcmpl-msg_01',
      object: 'chat.completion',
      model: 'alias',
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: 'Hello', refusal: null },
          finish_reason: 'stop',
          logprobs: null,
        },
      ],
      usage: {
        prompt_tokens: 42,
        completion_tokens: 5,
        total_tokens: 47,
        prompt_tokens_details: { cached_tokens: 30 },
      },
    });
    expect(Number.isInteger(r.created) && Math.abs(r.created - Date.now() / 1000) < 5).toBe(true);
    expect(r.choices[0]!.message.tool_calls).toBeUndefined();
  });

  it('joins text blocks, ignores thinking, turns tool_use into tool_calls', () => {
    const r = anthropicToOpenAIResponse(
      anthropicMessage({
        content: [
          { type: 'thinking', thinking: 'hmm', signature: 's' },
          { type: 'text', text: 'a' },
          { type: 'text', text: 'b' },
          { type: 'tool_use', id: 'toolu_1', name: 'f', input: { x: 1 } },
        ],
        stop_reason: 'tool_use',
      }),
      'alias',
    );
    expect(r.choices[0]).toMatchObject({
      finish_reason: 'tool_calls',
      message: {
        content: 'ab',
        tool_calls: [{ id: 'toolu_1', type: 'function', function: { name: 'f', arguments: '{"x":1}' } }],
      },
    });
  });

  it('content is null when there are only tool calls, "" when there is nothing', () => {
    const tools = anthropicMessage({ content: [{ type: 'tool_use', id: 't', name: 'f', input: {} }] });
    expect(anthropicToOpenAIResponse(tools, 'a').choices[0]!.message.content).toBeNull();
    expect(
      anthropicToOpenAIResponse(anthropicMessage({ content: [] }), 'a').choices[0]!.message.content,
    ).toBe('');
  });

  it.each([
    ['end_turn', 'stop'],
    ['stop_sequence', 'stop'],
    ['pause_turn', 'stop'],
    ['max_tokens', 'length'],
    ['tool_use', 'tool_calls'],
    ['refusal', 'content_filter'],
  ] as const)('stop_reason %s -> finish_reason %s', (stop, finish) => {
    expect(
      anthropicToOpenAIResponse(anthropicMessage({ stop_reason: stop }), 'a').choices[0]!.finish_reason,
    ).toBe(finish);
  });
});

// ------------------------------------------------------------------------ Anthropic -> OpenAI stream

type Ev = [string, unknown];
const messageStart = (usage: Record<string, unknown>): Ev => [
  'message_start',
  {
    type: 'message_start',
    message: {
      id: 'msg_9',
      type: 'message',
      role: 'assistant',
      model: 'claude-up',
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage,
    },
  },
];
const textStream: Ev[] = [
  messageStart({
    input_tokens: 25,
    output_tokens: 1,
    cache_read_input_tokens: 100,
    cache_creation_input_tokens: 0,
  }),
  [
    'content_block_start',
    { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
  ],
  ['ping', { type: 'ping' }],
  [
    'content_block_delta',
    { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hel' } },
  ],
  [
    'content_block_delta',
    { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'lo' } },
  ],
  ['content_block_stop', { type: 'content_block_stop', index: 0 }],
  // message_delta carries only output_tokens: input tokens from message_start must survive.
  [
    'message_delta',
    {
      type: 'message_delta',
      delta: { stop_reason: 'end_turn', stop_sequence: null },
      usage: { output_tokens: 15 },
    },
  ],
  ['message_stop', { type: 'message_stop' }],
];
const toolStream: Ev[] = [
  messageStart({ input_tokens: 50, output_tokens: 1 }),
  [
    'content_block_start',
    { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
  ],
  [
    'content_block_delta',
    { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Checking.' } },
  ],
  ['content_block_stop', { type: 'content_block_stop', index: 0 }],
  [
    'content_block_start',
    {
      type: 'content_block_start',
      index: 1,
      content_block: { type: 'tool_use', id: 'toolu_a', name: 'weather', input: {} },
    },
  ],
  [
    'content_block_delta',
    { type: 'content_block_delta', index: 1, delta: { type: 'input_json_delta', partial_json: '' } },
  ],
  [
    'content_block_delta',
    {
      type: 'content_block_delta',
      index: 1,
      delta: { type: 'input_json_delta', partial_json: '{"city": "Pa' },
    },
  ],
  [
    'content_block_delta',
    { type: 'content_block_delta', index: 1, delta: { type: 'input_json_delta', partial_json: 'ris"}' } },
  ],
  ['content_block_stop', { type: 'content_block_stop', index: 1 }],
  [
    'content_block_start',
    {
      type: 'content_block_start',
      index: 2,
      content_block: { type: 'tool_use', id: 'toolu_b', name: 'time', input: {} },
    },
  ],
  [
    'content_block_delta',
    { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: '{}' } },
  ],
  ['content_block_stop', { type: 'content_block_stop', index: 2 }],
  [
    'message_delta',
    {
      type: 'message_delta',
      delta: { stop_reason: 'tool_use', stop_sequence: null },
      usage: { output_tokens: 40 },
    },
  ],
  ['message_stop', { type: 'message_stop' }],
];

function runA2O(events: Ev[], includeUsage: boolean) {
  const t = new AnthropicToOpenAIStream({ model: 'alias', includeUsage, created: 1700000000 });
  const chunks = events.flatMap(([e, d]) => t.push(e, d)) as any[];
  return { t, chunks };
}

describe('AnthropicToOpenAIStream', () => {
  it('streams text, then finish_reason, then a usage-only chunk', () => {
    const { t, chunks } = runA2O(textStream, true);
    const head = {
      id: 'chatcmpl-msg_9',
      object: 'chat.completion.chunk',
      created: 1700000000,
      model: 'alias',
    };
    const choice = (delta: object, finish: string | null = null) => ({
      ...head,
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
      usage: null,
    });
    expect(chunks).toEqual([
      choice({ role: 'assistant', content: '' }),
      choice({ content: 'Hel' }),
      choice({ content: 'lo' }),
      choice({}, 'stop'),
      {
        ...head,
        choices: [],
        usage: {
          prompt_tokens: 125,
          completion_tokens: 15,
          total_tokens: 140,
          prompt_tokens_details: { cached_tokens: 100 },
        },
      },
    ]);
    expect(t.done).toBe(true);
    expect(t.usage()).toEqual({ inputTokens: 125, outputTokens: 15, cachedTokens: 100, cacheWriteTokens: 0 });
  });

  it('without includeUsage: no usage field, no final chunk', () => {
    const { chunks } = runA2O(textStream, false);
    expect(chunks).toHaveLength(4);
    for (const c of chunks) expect(c).not.toHaveProperty('usage');
  });

  it('streams tool calls with fragmented arguments', () => {
    const { t, chunks } = runA2O(toolStream, false);
    const deltas = chunks.map((c) => c.choices[0]?.delta);
    expect(deltas).toEqual([
      { role: 'assistant', content: '' },
      { content: 'Checking.' },
      {
        tool_calls: [
          { index: 0, id: 'toolu_a', type: 'function', function: { name: 'weather', arguments: '' } },
        ],
      },
      { tool_calls: [{ index: 0, function: { arguments: '{"city": "Pa' } }] },
      { tool_calls: [{ index: 0, function: { arguments: 'ris"}' } }] },
      {
        tool_calls: [
          { index: 1, id: 'toolu_b', type: 'function', function: { name: 'time', arguments: '' } },
        ],
      },
      { tool_calls: [{ index: 1, function: { arguments: '{}' } }] },
      {},
    ]);
    expect(chunks.at(-1).choices[0].finish_reason).toBe('tool_calls');
    expect(t.usage()).toEqual({ inputTokens: 50, outputTokens: 40, cachedTokens: 0, cacheWriteTokens: 0 });
  });

  it('message_delta values override message_start values only when present', () => {
    const t = new AnthropicToOpenAIStream({ model: 'a', includeUsage: false });
    t.push(
      'message_start',
      messageStart({ input_tokens: 9, output_tokens: 1, cache_read_input_tokens: 4 })[1],
    );
    expect(t.usage()).toEqual({ inputTokens: 13, outputTokens: 1, cachedTokens: 4, cacheWriteTokens: 0 });
    t.push('message_delta', {
      delta: { stop_reason: 'end_turn', stop_sequence: null },
      usage: {
        output_tokens: 30,
        input_tokens: null,
        cache_read_input_tokens: null,
        cache_creation_input_tokens: 6,
      },
    });
    expect(t.usage()).toEqual({ inputTokens: 19, outputTokens: 30, cachedTokens: 4, cacheWriteTokens: 6 });
    expect(t.done).toBe(false);
  });

  it('ignores thinking blocks', () => {
    const t = new AnthropicToOpenAIStream({ model: 'a', includeUsage: false });
    t.push('message_start', messageStart({ input_tokens: 1, output_tokens: 1 })[1]);
    expect(
      t.push('content_block_start', { index: 0, content_block: { type: 'thinking', thinking: '' } }),
    ).toEqual([]);
    expect(
      t.push('content_block_delta', { index: 0, delta: { type: 'thinking_delta', thinking: 'hm' } }),
    ).toEqual([]);
    expect(
      t.push('content_block_delta', { index: 0, delta: { type: 'signature_delta', signature: 's' } }),
    ).toEqual([]);
  });

  it.each([
    ['overloaded_error', 'upstream_overloaded', 529],
    ['api_error', 'upstream_error', 502],
  ])('an %s event throws %s', (type, code, status) => {
    const t = new AnthropicToOpenAIStream({ model: 'a', includeUsage: true });
    t.push(...messageStart({ input_tokens: 1, output_tokens: 1 }));
    const e = thrown(() =>
      t.push('error', { type: 'error', error: { type, message: 'Overloaded right now' } }),
    );
    expect({ code: e.code, status: e.status }).toEqual({ code, status });
    expect(e.message).toContain('Overloaded right now');
  });
});

// ----------------------------------------------------------------------- Anthropic -> OpenAI request

describe('anthropicToOpenAIRequest', () => {
  it('translates a full request', () => {
    const out = toO({
      system: 'be brief',
      stop_sequences: ['END'],
      temperature: 0.3,
      top_p: 0.8,
      metadata: { user_id: 'u-7' },
      stream: true,
      thinking: { type: 'disabled' },
      cache_control: { type: 'ephemeral' },
    });
    expect(out).toEqual({
      model: 'gpt-up',
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'hi' },
      ],
      max_tokens: 100,
      temperature: 0.3,
      top_p: 0.8,
      stop: ['END'],
      user: 'u-7',
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it('system as text blocks, with cache_control dropped', () => {
    const out = toO({
      system: [
        { type: 'text', text: 'a', cache_control: { type: 'ephemeral' } },
        { type: 'text', text: 'b' },
      ],
    });
    expect(out.messages[0]).toEqual({
      role: 'system',
      content: [
        { type: 'text', text: 'a' },
        { type: 'text', text: 'b' },
      ],
    });
  });

  it('translates blocks, tool_use and tool_result (in order)', () => {
    const out = toO({
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'see', cache_control: { type: 'ephemeral' } },
            { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG } },
            { type: 'image', source: { type: 'url', url: 'https://x/y.png' } },
          ],
        },
        {
          role: 'assistant',
          content: [
            { type: 'thinking', thinking: 'hmm', signature: 'sig' },
            { type: 'text', text: 'checking' },
            { type: 'tool_use', id: 'toolu_1', name: 'f', input: { a: [1, 2] } },
          ],
        },
        {
          role: 'user',
          content: [
            {
              type: 'tool_result',
              tool_use_id: 'toolu_1',
              content: [
                { type: 'text', text: 'r1' },
                { type: 'text', text: 'r2' },
              ],
            },
            { type: 'tool_result', tool_use_id: 'toolu_2', content: 'boom', is_error: true },
            { type: 'tool_result', tool_use_id: 'toolu_3' },
            { type: 'text', text: 'go on' },
          ],
        },
        { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_4', name: 'g', input: {} }] },
      ],
    });
    expect(out.messages).toEqual([
      {
        role: 'user',
        content: [
          { type: 'text', text: 'see' },
          { type: 'image_url', image_url: { url: `data:image/png;base64,${PNG}` } },
          { type: 'image_url', image_url: { url: 'https://x/y.png' } },
        ],
      },
      {
        role: 'assistant',
        content: 'checking',
        tool_calls: [{ id: 'toolu_1', type: 'function', function: { name: 'f', arguments: '{"a":[1,2]}' } }],
      },
      { role: 'tool', tool_call_id: 'toolu_1', content: 'r1\nr2' },
      { role: 'tool', tool_call_id: 'toolu_2', content: 'boom' },
      { role: 'tool', tool_call_id: 'toolu_3', content: '' },
      { role: 'user', content: [{ type: 'text', text: 'go on' }] },
      {
        role: 'assistant',
        content: null,
        tool_calls: [{ id: 'toolu_4', type: 'function', function: { name: 'g', arguments: '{}' } }],
      },
    ]);
  });

  it('translates custom tools and tool_choice', () => {
    const schema = { type: 'object' as const, properties: { q: { type: 'string' } } };
    const out = toO({
      tools: [
        { name: 'search', description: 'Search', input_schema: schema, cache_control: { type: 'ephemeral' } },
        { type: 'custom', name: 'x', input_schema: { type: 'object' } },
      ],
      tool_choice: { type: 'any', disable_parallel_tool_use: true },
    });
    expect(out.tools).toEqual([
      { type: 'function', function: { name: 'search', description: 'Search', parameters: schema } },
      { type: 'function', function: { name: 'x', parameters: { type: 'object' } } },
    ]);
    expect(out.tool_choice).toBe('required');
    expect(out.parallel_tool_calls).toBe(false);
  });

  it.each<[MessagesRequest['tool_choice'], unknown]>([
    [{ type: 'auto' }, 'auto'],
    [{ type: 'any' }, 'required'],
    [{ type: 'none' }, 'none'],
    [
      { type: 'tool', name: 'f' },
      { type: 'function', function: { name: 'f' } },
    ],
  ])('tool_choice %j', (tc, expected) => {
    const out = toO({ tool_choice: tc });
    expect(out.tool_choice).toEqual(expected);
    expect(out).not.toHaveProperty('parallel_tool_calls');
  });

  it.each<[string, Partial<MessagesRequest>, string]>([
    ['top_k', { top_k: 5 }, 'top_k'],
    ['thinking enabled', { thinking: { type: 'enabled', budget_tokens: 2048 } }, 'thinking'],
    ['thinking adaptive', { thinking: { type: 'adaptive' } }, 'thinking'],
    ['container', { container: 'c_1' }, 'container'],
    ['mcp_servers', { mcp_servers: [{ type: 'url', url: 'https://x', name: 'x' }] }, 'mcp_servers'],
    ['unknown field', { output_config: { effort: 'low' } }, 'output_config'],
    ['server tool', { tools: [{ type: 'web_search_20250305', name: 'web_search' }] }, 'tools[0]'],
    [
      'tool field with no equivalent',
      { tools: [{ name: 'f', input_schema: { type: 'object' }, input_examples: [{}] }] },
      'tools[0].input_examples',
    ],
    ['metadata other than user_id', { metadata: { user_id: 'u', team: 'x' } as never }, 'metadata.team'],
    [
      'document block',
      {
        messages: [
          {
            role: 'user',
            content: [
              { type: 'document', source: { type: 'text', media_type: 'text/plain', data: 'x' } },
            ] as never,
          },
        ],
      },
      'messages[0].content[0]',
    ],
    [
      'pdf document block',
      {
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: 'x' },
              { type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: 'x' } },
            ] as never,
          },
        ],
      },
      'messages[0].content[1]',
    ],
    [
      'search_result block',
      {
        messages: [
          {
            role: 'user',
            content: [{ type: 'search_result', source: 's', title: 't', content: [] }] as never,
          },
        ],
      },
      'messages[0].content[0]',
    ],
    [
      'image inside tool_result',
      {
        messages: [
          {
            role: 'user',
            content: [
              {
                type: 'tool_result',
                tool_use_id: 't',
                content: [
                  { type: 'text', text: 'a' },
                  { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG } },
                ],
              },
            ],
          },
        ],
      },
      'messages[0].content[0].content[1]',
    ],
    [
      'file image source',
      { messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'file', file_id: 'f' } }] }] },
      'messages[0].content[0]',
    ],
    [
      'server_tool_use in assistant turn',
      {
        messages: [
          {
            role: 'assistant',
            content: [{ type: 'server_tool_use', id: 's', name: 'web_search', input: {} }] as never,
          },
        ],
      },
      'messages[0].content[0]',
    ],
  ])('refuses %s', (_name, extra, param) => {
    expectRefused(() => toO(extra), param);
  });
});

// ----------------------------------------------------------------------- OpenAI -> Anthropic response

const completion = (
  extra: Partial<ChatCompletion> = {},
  message: object = {},
  finish = 'stop',
): ChatCompletion => ({
  id: 'chatcmpl-abc123',
  object: 'chat.completion',
  created: 1700000000,
  model: 'gpt-up',
  choices: [
    {
      index: 0,
      message: { role: 'assistant', content: 'Hi!', refusal: null, ...message },
      logprobs: null,
      finish_reason: finish as never,
    },
  ],
  usage: {
    prompt_tokens: 100,
    completion_tokens: 9,
    total_tokens: 109,
    prompt_tokens_details: { cached_tokens: 64 },
  },
  ...extra,
});

describe('openaiToAnthropicResponse', () => {
  it('translates text and usage', () => {
    expect(openaiToAnthropicResponse(completion(), 'alias')).toEqual({
      id: 'msg_abc123',
      type: 'message',
      role: 'assistant',
      model: 'alias',
      content: [{ type: 'text', text: 'Hi!' }],
      stop_reason: 'end_turn',
      stop_sequence: null,
      usage: {
        input_tokens: 36,
        output_tokens: 9,
        cache_read_input_tokens: 64,
        cache_creation_input_tokens: 0,
      },
    });
  });

  it('usage survives the trip: anthropicUsage(translated) == openaiUsage(original)', () => {
    const c = completion();
    expect(anthropicUsage(openaiToAnthropicResponse(c, 'a').usage)).toEqual(openaiUsage(c.usage));
  });

  it('translates tool calls', () => {
    const c = completion(
      {},
      {
        content: null,
        tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'f', arguments: '{"x":"y"}' } }],
      },
      'tool_calls',
    );
    const m = openaiToAnthropicResponse(c, 'a');
    expect(m.content).toEqual([{ type: 'tool_use', id: 'call_1', name: 'f', input: { x: 'y' } }]);
    expect(m.stop_reason).toBe('tool_use');
  });

  it('rejects tool arguments that are not a JSON object as a bad upstream response', () => {
    const c = completion(
      {},
      { tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: 'nope' } }] },
      'tool_calls',
    );
    expect(thrown(() => openaiToAnthropicResponse(c, 'a')).code).toBe('upstream_bad_response');
  });

  it.each([
    ['stop', 'end_turn'],
    ['length', 'max_tokens'],
    ['tool_calls', 'tool_use'],
    ['content_filter', 'refusal'],
  ])('finish_reason %s -> stop_reason %s', (finish, stop) => {
    expect(openaiToAnthropicResponse(completion({}, {}, finish), 'a').stop_reason).toBe(stop);
  });
});

// ------------------------------------------------------------------------ OpenAI -> Anthropic stream

const oChunk = (delta: object, finish: string | null = null, extra: object = {}) => ({
  id: 'chatcmpl-xyz',
  object: 'chat.completion.chunk',
  created: 1,
  model: 'gpt-up',
  choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  usage: null,
  ...extra,
});
const usageChunk = {
  id: 'chatcmpl-xyz',
  object: 'chat.completion.chunk',
  created: 1,
  model: 'gpt-up',
  choices: [],
  usage: {
    prompt_tokens: 80,
    completion_tokens: 12,
    total_tokens: 92,
    prompt_tokens_details: { cached_tokens: 30 },
  },
};

describe('OpenAIToAnthropicStream', () => {
  it('streams text; message_delta waits for finish() and carries the usage chunk', () => {
    const t = new OpenAIToAnthropicStream({ model: 'alias' });
    const evs = [
      ...t.push(oChunk({ role: 'assistant', content: '' })),
      ...t.push(oChunk({ content: 'Hel' })),
      ...t.push(oChunk({ content: 'lo' })),
      ...t.push(oChunk({}, 'stop')),
    ];
    expect(evs.map((e) => e.event)).toEqual([
      'message_start',
      'content_block_start',
      'content_block_delta',
      'content_block_delta',
    ]);
    expect(t.push(usageChunk)).toEqual([]);
    evs.push(...t.finish());
    expect(evs).toEqual([
      {
        event: 'message_start',
        data: {
          type: 'message_start',
          message: {
            id: 'msg_xyz',
            type: 'message',
            role: 'assistant',
            model: 'alias',
            content: [],
            stop_reason: null,
            stop_sequence: null,
            usage: { input_tokens: 0, output_tokens: 0 },
          },
        },
      },
      {
        event: 'content_block_start',
        data: { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
      },
      {
        event: 'content_block_delta',
        data: { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hel' } },
      },
      {
        event: 'content_block_delta',
        data: { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'lo' } },
      },
      { event: 'content_block_stop', data: { type: 'content_block_stop', index: 0 } },
      {
        event: 'message_delta',
        data: {
          type: 'message_delta',
          delta: { stop_reason: 'end_turn', stop_sequence: null },
          usage: {
            input_tokens: 50,
            output_tokens: 12,
            cache_read_input_tokens: 30,
            cache_creation_input_tokens: 0,
          },
        },
      },
      { event: 'message_stop', data: { type: 'message_stop' } },
    ]);
    expect(t.usage()).toEqual({ inputTokens: 80, outputTokens: 12, cachedTokens: 30, cacheWriteTokens: 0 });
    expect(t.finish()).toEqual([]);
  });

  it('streams text then tool calls with fragmented arguments as separate blocks', () => {
    const t = new OpenAIToAnthropicStream({ model: 'alias' });
    const chunks = [
      oChunk({ role: 'assistant', content: 'Let me look.' }),
      oChunk({
        tool_calls: [
          { index: 0, id: 'call_a', type: 'function', function: { name: 'weather', arguments: '' } },
        ],
      }),
      oChunk({ tool_calls: [{ index: 0, function: { arguments: '{"ci' } }] }),
      oChunk({ tool_calls: [{ index: 0, function: { arguments: 'ty":"Paris"}' } }] }),
      oChunk({
        tool_calls: [
          { index: 1, id: 'call_b', type: 'function', function: { name: 'time', arguments: '{}' } },
        ],
      }),
      oChunk({}, 'tool_calls'),
    ];
    const evs = [...chunks.flatMap((c) => t.push(c)), ...t.finish()];
    expect(evs.map((e) => [e.event, (e.data as any).index ?? null])).toEqual([
      ['message_start', null],
      ['content_block_start', 0],
      ['content_block_delta', 0],
      ['content_block_stop', 0],
      ['content_block_start', 1],
      ['content_block_delta', 1],
      ['content_block_delta', 1],
      ['content_block_stop', 1],
      ['content_block_start', 2],
      ['content_block_delta', 2],
      ['content_block_stop', 2],
      ['message_delta', null],
      ['message_stop', null],
    ]);
    expect(evs[4]!.data).toEqual({
      type: 'content_block_start',
      index: 1,
      content_block: { type: 'tool_use', id: 'call_a', name: 'weather', input: {} },
    });
    expect(
      evs
        .filter((e) => (e.data as any).index === 1 && e.event === 'content_block_delta')
        .map((e) => (e.data as any).delta),
    ).toEqual([
      { type: 'input_json_delta', partial_json: '{"ci' },
      { type: 'input_json_delta', partial_json: 'ty":"Paris"}' },
    ]);
    expect((evs.at(-2)!.data as any).delta.stop_reason).toBe('tool_use');
    // No usage chunk was sent: output_tokens is a 0 placeholder and usage() is empty.
    expect((evs.at(-2)!.data as any).usage).toEqual({ output_tokens: 0 });
    expect(t.usage()).toEqual({ inputTokens: 0, outputTokens: 0, cachedTokens: 0, cacheWriteTokens: 0 });
  });

  it('an empty stream still yields a well-formed message', () => {
    const t = new OpenAIToAnthropicStream({ model: 'alias' });
    expect(t.finish().map((e) => e.event)).toEqual(['message_start', 'message_delta', 'message_stop']);
  });

  it('an error chunk throws', () => {
    const t = new OpenAIToAnthropicStream({ model: 'alias' });
    const e = thrown(() => t.push({ error: { message: 'server exploded' } }));
    expect(e.code).toBe('upstream_error');
    expect(e.message).toContain('server exploded');
  });
});

// ----------------------------------------------------------------------------------- round trips

describe('round trips', () => {
  it('Anthropic stream -> OpenAI chunks -> Anthropic stream keeps text, tool calls and usage', () => {
    const a2o = new AnthropicToOpenAIStream({ model: 'x', includeUsage: true });
    const o2a = new OpenAIToAnthropicStream({ model: 'x' });
    const out = [
      ...toolStream.flatMap(([e, d]) => a2o.push(e, d)).flatMap((c) => o2a.push(c)),
      ...o2a.finish(),
    ];
    const text = out
      .filter((e) => (e.data as any).delta?.type === 'text_delta')
      .map((e) => (e.data as any).delta.text)
      .join('');
    const json = out
      .filter((e) => (e.data as any).delta?.type === 'input_json_delta')
      .map((e) => (e.data as any).delta.partial_json)
      .join('');
    expect(text).toBe('Checking.');
    expect(json).toBe('{"city": "Paris"}{}');
    expect(o2a.usage()).toEqual(a2o.usage());
    expect((out.at(-2)!.data as any).delta.stop_reason).toBe('tool_use');
  });

  it('Anthropic Message -> OpenAI completion -> Anthropic Message', () => {
    const m = anthropicMessage({
      content: [
        { type: 'text', text: 'hi' },
        { type: 'tool_use', id: 'toolu_1', name: 'f', input: { n: 1 } },
      ],
      stop_reason: 'tool_use',
    });
    const back = openaiToAnthropicResponse(anthropicToOpenAIResponse(m, 'a'), 'a');
    expect(back.content).toEqual(m.content);
    expect(back.stop_reason).toBe('tool_use');
    expect(back.id).toBe('msg_msg_01');
    expect(anthropicUsage(back.usage)).toEqual({
      ...anthropicUsage(m.usage),
      cacheWriteTokens: 0,
      inputTokens: 42,
    });
  });
});

// ------------------------------------------------------------------------------- property

const text = fc.string({ minLength: 1, maxLength: 20 });
const toolCall = fc.record({
  id: fc.string({ minLength: 1, maxLength: 8 }).map((s) => `call_${s}`),
  name: fc.stringMatching(/^[a-zA-Z_][a-zA-Z0-9_]{0,15}$/),
  args: fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }),
});
/** One exchange: a user turn, an assistant turn (text and/or tool calls), and the tool results. */
const exchange = fc
  .record({
    user: text,
    reply: fc.option(text, { nil: null }),
    calls: fc.array(toolCall, { maxLength: 3 }),
    results: fc.array(text, { minLength: 3, maxLength: 3 }),
  })
  .filter((x) => x.reply !== null || x.calls.length > 0);

function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((p: any) => p.text ?? '').join('');
  return '';
}

describe('property: OpenAI -> Anthropic -> OpenAI', () => {
  it('preserves message text and tool call ids, names and arguments', () => {
    fc.assert(
      fc.property(
        fc.option(text, { nil: null }),
        fc.array(exchange, { minLength: 1, maxLength: 4 }),
        (system, exchanges) => {
          const messages: ChatRequest['messages'] =
            system === null ? [] : [{ role: 'system', content: system }];
          for (const x of exchanges) {
            messages.push({ role: 'user', content: x.user });
            const tool_calls = x.calls.map((c) => ({
              id: c.id,
              type: 'function' as const,
              function: { name: c.name, arguments: JSON.stringify(c.args) },
            }));
            messages.push(
              tool_calls.length > 0
                ? { role: 'assistant', content: x.reply, tool_calls }
                : { role: 'assistant', content: x.reply },
            );
            x.calls.forEach((c, i) =>
              messages.push({ role: 'tool', tool_call_id: c.id, content: x.results[i]! }),
            );
          }
          const back = anthropicToOpenAIRequest(
            openaiToAnthropicRequest({ model: 'm', messages }, 'claude', OPTS),
            'gpt',
          );
          expect(back.messages.map((m) => m.role)).toEqual(messages.map((m) => m.role));
          back.messages.forEach((m: any, i) => {
            const orig: any = messages[i];
            expect(textOf(m.content)).toBe(textOf(orig.content));
            if (m.role === 'tool') expect(m.tool_call_id).toBe(orig.tool_call_id);
            expect(
              (m.tool_calls ?? []).map((c: any) => [c.id, c.function.name, JSON.parse(c.function.arguments)]),
            ).toEqual(
              (orig.tool_calls ?? []).map((c: any) => [
                c.id,
                c.function.name,
                JSON.parse(c.function.arguments),
              ]),
            );
          });
        },
      ),
      { numRuns: 300 },
    );
  });
});
