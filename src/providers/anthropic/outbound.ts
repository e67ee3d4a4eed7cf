/**
 * Anthropic as a channel (outbound): OpenAI chat -> Anthropic Messages for requests, and Anthropic's JSON
 * answers and SSE streams -> OpenAI chat. The other direction (Anthropic as a client dialect) is inbound.ts.
 *
 * Policy: a request field either has a faithful translation or the request is refused with a 400
 * `unsupported_parameter` naming it. Nothing that changes what the model does is silently dropped.
 * The only things dropped are pure hints with no effect on output (caching hints, `stream_options`,
 * `service_tier`, image `detail`), each noted where it happens.
 */
import { GatewayError, unsupported } from '../../core/errors.js';
import { type Usage } from '../../core/usage.js';
import {
  toOpenAIUsage,
  type ChatCompletion,
  type ChatCompletionChunk,
  type ChatCompletionMessage,
  type ChatRequest,
  type ChunkChoice,
  type FinishReason,
  type FunctionToolCall,
} from '../openai/wire.js';
import {
  anthropicUsage,
  type ContentBlockParam,
  type CustomTool,
  type ImageMediaType,
  type Message,
  type MessageParam,
  type MessagesRequest,
  type StopReason,
  type TextBlockParam,
  type ToolChoice as AnthropicToolChoice,
} from './wire.js';
import { eventData, given, invalid, isObj, nonEmptyObj, nowSeconds, toAnthropic } from './common.js';

// =====================================================================================================
// OpenAI request -> Anthropic request
// =====================================================================================================

/** OpenAI fields with no faithful Anthropic translation, refused when `bad(value)`. */
const OPENAI_REFUSED: Record<string, { bad: (v: unknown) => boolean; why: string }> = {
  n: { bad: (v) => given(v) && v !== 1, why: 'Anthropic returns exactly one choice' },
  logprobs: { bad: (v) => !!v, why: 'Anthropic does not return log probabilities' },
  top_logprobs: { bad: (v) => !!v, why: 'Anthropic does not return log probabilities' },
  response_format: {
    bad: (v) => given(v) && !(isObj(v) && v['type'] === 'text'),
    why: 'only {"type":"text"} is supported',
  },
  audio: { bad: given, why: 'Anthropic models do not produce audio' },
  modalities: {
    bad: (v) => given(v) && !(Array.isArray(v) && v.every((m) => m === 'text')),
    why: 'only the text modality is supported',
  },
  prediction: { bad: given, why: 'Anthropic has no predicted outputs' },
  logit_bias: { bad: nonEmptyObj, why: 'Anthropic has no logit bias' },
  presence_penalty: { bad: (v) => given(v) && v !== 0, why: 'Anthropic has no presence penalty' },
  frequency_penalty: { bad: (v) => given(v) && v !== 0, why: 'Anthropic has no frequency penalty' },
  seed: { bad: given, why: 'Anthropic has no deterministic sampling seed' },
  store: { bad: (v) => v === true, why: 'Anthropic does not store completions' },
  web_search_options: { bad: given, why: 'use an OpenAI channel for web search' },
  functions: { bad: given, why: 'legacy function calling is not supported; use tools' },
  function_call: { bad: given, why: 'legacy function calling is not supported; use tool_choice' },
  reasoning_effort: {
    bad: given,
    why: 'Anthropic configures extended thinking differently; call the model through the Anthropic Messages endpoint to use it',
  },
  // OpenAI metadata tags a stored completion; Anthropic's metadata holds only user_id, so arbitrary
  // tags would be lost. An empty object means nothing and passes.
  metadata: { bad: nonEmptyObj, why: 'Anthropic metadata only carries a user id (send `user` instead)' },
};

/** OpenAI fields translated below, or dropped because they never change the model's output. */
const OPENAI_HANDLED = new Set([
  'model', // replaced by the channel's upstream model
  'messages',
  'max_completion_tokens',
  'max_tokens',
  'temperature',
  'top_p',
  'stop',
  'stream',
  'stream_options', // dropped: Anthropic streams always carry usage; the stream translator honours include_usage
  'tools',
  'tool_choice',
  'parallel_tool_calls',
  'user',
  'safety_identifier',
  'service_tier', // dropped: a capacity hint
  'prompt_cache_key', // dropped: caching hints (Anthropic caches by cache_control breakpoints)
  'prompt_cache_retention',
  'prompt_cache_options',
]);

const IMAGE_TYPES: ReadonlySet<string> = new Set(['image/jpeg', 'image/png', 'image/gif', 'image/webp']);

function imageBlock(url: unknown, path: string): ContentBlockParam {
  if (typeof url !== 'string') throw invalid(path, `${path}.image_url.url must be a string`);
  if (url.startsWith('data:')) {
    const m = /^data:([^;,]+);base64,(.*)$/s.exec(url);
    if (!m || !IMAGE_TYPES.has(m[1]!.toLowerCase())) {
      throw toAnthropic(
        path,
        'images must be base64 data URLs of type jpeg, png, gif or webp, or http(s) URLs',
      );
    }
    return {
      type: 'image',
      source: { type: 'base64', media_type: m[1]!.toLowerCase() as ImageMediaType, data: m[2]! },
    };
  }
  if (/^https?:\/\//i.test(url)) return { type: 'image', source: { type: 'url', url } };
  throw toAnthropic(path, 'image URLs must be data: or http(s) URLs');
}

/** string | text parts (system, developer, tool, assistant content) -> Anthropic text blocks. */
function textBlocks(content: unknown, path: string, allowRefusal = false): TextBlockParam[] {
  if (typeof content === 'string') return [{ type: 'text', text: content }];
  if (!Array.isArray(content)) throw invalid(path, `${path} must be a string or an array of content parts`);
  return content.map((p: unknown, j): TextBlockParam => {
    if (isObj(p) && p['type'] === 'text' && typeof p['text'] === 'string')
      return { type: 'text', text: p['text'] };
    // A refusal in assistant history is text the model said; Anthropic has no refusal block.
    if (allowRefusal && isObj(p) && p['type'] === 'refusal' && typeof p['refusal'] === 'string') {
      return { type: 'text', text: p['refusal'] };
    }
    throw toAnthropic(
      `${path}[${j}]`,
      `${isObj(p) ? String(p['type']) : typeof p} parts are not supported here`,
    );
  });
}

function userBlocks(content: unknown, path: string): string | ContentBlockParam[] {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw invalid(path, `${path} must be a string or an array of content parts`);
  return content.map((p: unknown, j): ContentBlockParam => {
    const at = `${path}[${j}]`;
    if (!isObj(p)) throw invalid(at, `${at} must be an object`);
    switch (p['type']) {
      case 'text':
        return { type: 'text', text: String(p['text'] ?? '') };
      case 'image_url':
        // `detail` is dropped: a resolution/cost hint; Anthropic sizes images itself.
        return imageBlock(isObj(p['image_url']) ? p['image_url']['url'] : undefined, at);
      default:
        throw toAnthropic(at, `${String(p['type'])} content parts have no Anthropic equivalent`);
    }
  });
}

function toolUse(tc: unknown, path: string): ContentBlockParam {
  if (!isObj(tc) || tc['type'] !== 'function' || !isObj(tc['function'])) {
    throw toAnthropic(path, 'only function tool calls are supported');
  }
  const fn = tc['function'];
  const raw = fn['arguments'];
  let input: unknown;
  try {
    // An empty string is what some clients send for a no-argument call.
    input = raw === '' || raw === undefined ? {} : JSON.parse(String(raw));
  } catch {
    input = undefined;
  }
  if (!isObj(input))
    throw toAnthropic(`${path}.function.arguments`, 'tool call arguments must be a JSON object');
  return { type: 'tool_use', id: String(tc['id'] ?? ''), name: String(fn['name'] ?? ''), input };
}

function translateOpenAIMessages(msgs: unknown): { system: TextBlockParam[]; messages: MessageParam[] } {
  if (!Array.isArray(msgs)) throw invalid('messages', 'messages must be an array');
  const system: TextBlockParam[] = [];
  const messages: MessageParam[] = [];
  // Anthropic wants alternating turns: consecutive same-role turns (e.g. several tool results) merge.
  const push = (role: 'user' | 'assistant', content: string | ContentBlockParam[]): void => {
    const last = messages[messages.length - 1];
    if (last?.role !== role) return void messages.push({ role, content });
    const asBlocks = (c: string | ContentBlockParam[]): ContentBlockParam[] =>
      typeof c === 'string' ? [{ type: 'text', text: c }] : c;
    last.content = [...asBlocks(last.content), ...asBlocks(content)];
  };

  msgs.forEach((m: unknown, i) => {
    const at = `messages[${i}]`;
    if (!isObj(m)) throw invalid(at, `${at} must be an object`);
    if (m['role'] === 'function') {
      throw toAnthropic(`${at}.role`, 'legacy function messages are not supported; use tool messages');
    }
    // Anthropic has no per-participant name; dropping it would change who the model thinks spoke.
    if (given(m['name'])) throw toAnthropic(`${at}.name`, 'Anthropic messages have no participant name');
    const role = m['role'];
    switch (role) {
      case 'system':
      case 'developer':
        if (messages.length > 0) {
          throw unsupported(
            'messages',
            `a ${role} message after the conversation has started (${at}) cannot be translated for an Anthropic channel: Anthropic takes one system prompt before all turns`,
          );
        }
        system.push(...textBlocks(m['content'], `${at}.content`));
        return;
      case 'user':
        return push('user', userBlocks(m['content'], `${at}.content`));
      case 'assistant': {
        if (given(m['audio'])) throw toAnthropic(`${at}.audio`);
        if (given(m['function_call'])) throw toAnthropic(`${at}.function_call`, 'legacy function calling');
        const blocks: ContentBlockParam[] = [];
        if (given(m['content'])) blocks.push(...textBlocks(m['content'], `${at}.content`, true));
        if (typeof m['refusal'] === 'string' && m['refusal'] !== '')
          blocks.push({ type: 'text', text: m['refusal'] });
        const calls = m['tool_calls'];
        if (given(calls) && !Array.isArray(calls))
          throw invalid(`${at}.tool_calls`, 'tool_calls must be an array');
        (calls as unknown[] | undefined)?.forEach((tc, j) =>
          blocks.push(toolUse(tc, `${at}.tool_calls[${j}]`)),
        );
        // Anthropic rejects empty text blocks; an assistant turn with tool calls often has content "".
        const kept = blocks.filter((b) => b.type !== 'text' || b.text !== '');
        return push('assistant', kept.length === 0 ? '' : kept);
      }
      case 'tool': {
        const c = m['content'];
        const content = typeof c === 'string' ? c : textBlocks(c, `${at}.content`);
        return push('user', [{ type: 'tool_result', tool_use_id: String(m['tool_call_id'] ?? ''), content }]);
      }
      default:
        throw invalid(`${at}.role`, `unknown message role ${JSON.stringify(role)}`);
    }
  });
  return { system, messages };
}

function anthropicTools(tools: unknown): CustomTool[] {
  if (!Array.isArray(tools)) throw invalid('tools', 'tools must be an array');
  return tools.map((t: unknown, i): CustomTool => {
    if (!isObj(t) || t['type'] !== 'function' || !isObj(t['function'])) {
      throw toAnthropic(`tools[${i}]`, 'only function tools are supported');
    }
    const f = t['function'];
    const out: CustomTool = {
      name: String(f['name'] ?? ''),
      input_schema: isObj(f['parameters'])
        ? (f['parameters'] as CustomTool['input_schema'])
        : { type: 'object', properties: {} },
    };
    if (typeof f['description'] === 'string') out.description = f['description'];
    if (f['strict'] === true) out.strict = true; // Anthropic strict tool use: same guarantee
    return out;
  });
}

function anthropicToolChoice(tc: unknown): AnthropicToolChoice | undefined {
  if (!given(tc)) return undefined;
  if (tc === 'none') return { type: 'none' };
  if (tc === 'auto') return { type: 'auto' };
  if (tc === 'required') return { type: 'any' };
  if (
    isObj(tc) &&
    tc['type'] === 'function' &&
    isObj(tc['function']) &&
    typeof tc['function']['name'] === 'string'
  ) {
    return { type: 'tool', name: tc['function']['name'] };
  }
  throw toAnthropic('tool_choice', 'only "none", "auto", "required" or a named function are supported');
}

/**
 * An OpenAI chat request as an Anthropic Messages request for `upstreamModel`.
 * Throws a 400 GatewayError for anything without a faithful translation (see the policy above).
 */
export function openaiToAnthropicRequest(
  req: ChatRequest,
  upstreamModel: string,
  opts: { defaultMaxTokens: number },
): MessagesRequest {
  for (const key of Object.keys(req)) {
    const refused = OPENAI_REFUSED[key];
    if (refused) {
      if (refused.bad(req[key])) throw toAnthropic(key, refused.why);
    } else if (!OPENAI_HANDLED.has(key)) {
      throw toAnthropic(key, 'unknown parameter');
    }
  }
  if (typeof req.temperature === 'number' && req.temperature > 1) {
    throw toAnthropic('temperature', 'values above 1 have no equivalent (Anthropic accepts 0 to 1)');
  }

  const { system, messages } = translateOpenAIMessages(req.messages);
  const out: MessagesRequest = {
    model: upstreamModel,
    max_tokens: req.max_completion_tokens ?? req.max_tokens ?? opts.defaultMaxTokens,
    messages,
  };
  if (system.length === 1) out.system = system[0]!.text;
  else if (system.length > 1) out.system = system;
  if (given(req.stop))
    out.stop_sequences = typeof req.stop === 'string' ? [req.stop] : [...(req.stop as string[])];
  if (given(req.temperature)) out.temperature = req.temperature!;
  if (given(req.top_p)) out.top_p = req.top_p!;
  // safety_identifier is OpenAI's successor to `user`; both mean Anthropic's abuse-tracking user_id.
  const userId = req.safety_identifier ?? req.user;
  if (typeof userId === 'string') out.metadata = { user_id: userId };

  const hasTools = Array.isArray(req.tools) && req.tools.length > 0;
  if (given(req.tools)) out.tools = anthropicTools(req.tools);
  let choice = anthropicToolChoice(req.tool_choice);
  if (req.parallel_tool_calls === false && hasTools) {
    choice ??= { type: 'auto' };
    if (choice.type !== 'none') choice = { ...choice, disable_parallel_tool_use: true };
  }
  if (choice) out.tool_choice = choice;
  if (given(req.stream)) out.stream = !!req.stream;
  return out;
}

// =====================================================================================================
// Anthropic response -> OpenAI response
// =====================================================================================================

const FINISH_FROM_STOP: Record<StopReason, FinishReason> = {
  end_turn: 'stop',
  stop_sequence: 'stop',
  pause_turn: 'stop',
  max_tokens: 'length',
  model_context_window_exceeded: 'length',
  tool_use: 'tool_calls',
  refusal: 'content_filter',
};
const finishFromStop = (s: unknown): FinishReason => FINISH_FROM_STOP[s as StopReason] ?? 'stop';

/** An Anthropic Message as an OpenAI chat completion reported under `model`. */
export function anthropicToOpenAIResponse(msg: Message, model: string): ChatCompletion {
  let text = '';
  const toolCalls: FunctionToolCall[] = [];
  for (const b of msg.content ?? []) {
    if (b.type === 'text') text += b.text;
    else if (b.type === 'tool_use') {
      toolCalls.push({
        id: b.id,
        type: 'function',
        function: { name: b.name, arguments: JSON.stringify(b.input ?? {}) },
      });
    }
    // thinking / redacted_thinking: OpenAI chat completions have no place for them.
  }
  const message: ChatCompletionMessage = {
    role: 'assistant',
    content: text === '' && toolCalls.length > 0 ? null : text,
    refusal: null,
  };
  if (toolCalls.length > 0) message.tool_calls = toolCalls;
  return {
    id: `chatcmpl-${msg.id}`,
    object: 'chat.completion',
    created: nowSeconds(),
    model,
    choices: [{ index: 0, message, logprobs: null, finish_reason: finishFromStop(msg.stop_reason) }],
    usage: toOpenAIUsage(anthropicUsage(msg.usage)),
  };
}

// =====================================================================================================
// Anthropic stream -> OpenAI stream
// =====================================================================================================

/**
 * Turns Anthropic SSE events into OpenAI chat.completion.chunk objects, one event at a time.
 * Usage accumulates across message_start (input side) and message_delta (output side, cumulative;
 * fields it omits or nulls keep their earlier value).
 */
export class AnthropicToOpenAIStream {
  private readonly model: string;
  private readonly includeUsage: boolean;
  private readonly created: number;
  private id = 'chatcmpl-';
  private readonly toolIndex = new Map<number, number>(); // Anthropic block index -> OpenAI tool_calls index
  private raw: {
    input_tokens: number;
    output_tokens: number;
    cache_read_input_tokens: number;
    cache_creation_input_tokens: number;
  } = { input_tokens: 0, output_tokens: 0, cache_read_input_tokens: 0, cache_creation_input_tokens: 0 };
  private stopped = false;

  constructor(opts: { model: string; includeUsage: boolean; created?: number }) {
    this.model = opts.model;
    this.includeUsage = opts.includeUsage;
    this.created = opts.created ?? nowSeconds();
  }

  get done(): boolean {
    return this.stopped;
  }

  usage(): Usage {
    return anthropicUsage(this.raw);
  }

  /** The OpenAI chunks for one Anthropic event (`event` is the SSE event name; `data` its parsed JSON). */
  push(event: string, data: any): ChatCompletionChunk[] {
    const d = eventData(data);
    switch (event || d.type) {
      case 'message_start': {
        const m = d.message ?? {};
        if (typeof m.id === 'string') this.id = `chatcmpl-${m.id}`;
        this.absorb(m.usage);
        return [this.chunk({ role: 'assistant', content: '' })];
      }
      case 'content_block_start': {
        const b = d.content_block ?? {};
        if (b.type === 'tool_use') {
          const index = this.toolIndex.size;
          this.toolIndex.set(d.index, index);
          return [
            this.chunk({
              tool_calls: [{ index, id: b.id, type: 'function', function: { name: b.name, arguments: '' } }],
            }),
          ];
        }
        if (b.type === 'text' && typeof b.text === 'string' && b.text !== '')
          return [this.chunk({ content: b.text })];
        return [];
      }
      case 'content_block_delta': {
        const delta = d.delta ?? {};
        if (delta.type === 'text_delta') return [this.chunk({ content: delta.text })];
        if (delta.type === 'input_json_delta') {
          const index = this.toolIndex.get(d.index);
          if (index === undefined || !delta.partial_json) return [];
          return [this.chunk({ tool_calls: [{ index, function: { arguments: delta.partial_json } }] })];
        }
        return []; // thinking_delta, signature_delta, citations_delta
      }
      case 'message_delta':
        this.absorb(d.usage);
        return [this.chunk({}, finishFromStop(d.delta?.stop_reason))];
      case 'message_stop':
        this.stopped = true;
        if (!this.includeUsage) return [];
        return [{ ...this.base(), choices: [], usage: toOpenAIUsage(this.usage()) }];
      case 'error': {
        const err = d.error ?? {};
        const message = `upstream error: ${typeof err.message === 'string' ? err.message : 'unknown error'}`;
        throw new GatewayError(
          err.type === 'overloaded_error' ? 'upstream_overloaded' : 'upstream_error',
          message,
        );
      }
      default:
        return []; // ping, content_block_stop, and event types added later
    }
  }

  private absorb(u: unknown): void {
    if (!isObj(u)) return;
    for (const k of Object.keys(this.raw) as Array<keyof typeof this.raw>) {
      const v = u[k];
      if (typeof v === 'number') this.raw[k] = v;
    }
  }

  private base(): Omit<ChatCompletionChunk, 'choices'> {
    return { id: this.id, object: 'chat.completion.chunk', created: this.created, model: this.model };
  }

  private chunk(delta: ChunkChoice['delta'], finish: FinishReason | null = null): ChatCompletionChunk {
    const c: ChatCompletionChunk = {
      ...this.base(),
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    };
    if (this.includeUsage) c.usage = null;
    return c;
  }
}
