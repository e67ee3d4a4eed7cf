/**
 * Pure translation between OpenAI Chat Completions and Anthropic Messages, both directions, for
 * requests, JSON responses and SSE streams.
 *
 * Policy: a request field either has a faithful translation or the request is refused with a 400
 * `unsupported_parameter` naming it. Nothing that changes what the model does is silently dropped.
 * The only things dropped are pure hints with no effect on output (caching hints, `stream_options`,
 * `service_tier`, image `detail`), each noted where it happens.
 */
import { GatewayError, unsupported } from '../../core/errors.js';
import { emptyUsage, type Usage } from '../../core/usage.js';
import {
  openaiUsage,
  toOpenAIUsage,
  type ChatCompletion,
  type ChatCompletionChunk,
  type ChatCompletionMessage,
  type ChatRequest,
  type ChunkChoice,
  type FinishReason,
  type FunctionToolCall,
  type ImagePart,
  type TextPart,
  type Tool as OpenAITool,
  type ToolChoice as OpenAIToolChoice,
} from '../openai/wire.js';
import {
  anthropicUsage,
  type AnthropicUsage,
  type ContentBlock,
  type ContentBlockParam,
  type CustomTool,
  type ImageMediaType,
  type Message,
  type MessageParam,
  type MessagesRequest,
  type StopReason,
  type StreamEvent,
  type TextBlockParam,
  type ToolChoice as AnthropicToolChoice,
} from './wire.js';

type Obj = Record<string, unknown>;
const isObj = (x: unknown): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x);
/** OpenAI accepts `null` for most optional fields; null means "not given". */
const given = (x: unknown): boolean => x !== undefined && x !== null;
const nonEmptyObj = (x: unknown): boolean => given(x) && !(isObj(x) && Object.keys(x).length === 0);

function toAnthropic(param: string, why?: string): GatewayError {
  return unsupported(param, `${param} cannot be translated for an Anthropic channel${why ? `: ${why}` : ''}`);
}
function toOpenAI(param: string, why?: string): GatewayError {
  return unsupported(param, `${param} cannot be translated for an OpenAI channel${why ? `: ${why}` : ''}`);
}
function invalid(param: string, message: string): GatewayError {
  return new GatewayError('invalid_request', message, { param });
}
const nowSeconds = (): number => Math.floor(Date.now() / 1000);

/** SSE payloads arrive parsed, but a raw JSON string is accepted too. */
function eventData(data: unknown): any {
  if (typeof data !== 'string') return data ?? {};
  try {
    return JSON.parse(data);
  } catch {
    throw new GatewayError('upstream_bad_response', 'upstream sent a stream event that is not JSON');
  }
}

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

// =====================================================================================================
// Anthropic request -> OpenAI request
// =====================================================================================================

const ANTHROPIC_REFUSED: Record<string, { bad: (v: unknown) => boolean; why: string }> = {
  top_k: { bad: given, why: 'OpenAI has no top-k sampling' },
  thinking: {
    bad: (v) => given(v) && !(isObj(v) && v['type'] === 'disabled'),
    why: 'extended thinking has no OpenAI chat equivalent',
  },
  container: { bad: given, why: 'containers belong to Anthropic server tools' },
  mcp_servers: { bad: given, why: 'MCP connectors belong to Anthropic' },
};

const ANTHROPIC_HANDLED = new Set([
  'model',
  'messages',
  'max_tokens',
  'system',
  'stop_sequences',
  'stream',
  'temperature',
  'top_p',
  'metadata',
  'tools',
  'tool_choice',
  'service_tier', // dropped: a capacity hint
  'cache_control', // dropped: a caching hint only (OpenAI caches prefixes automatically)
]);

/** Fields of a custom tool that translate; cache_control / eager_input_streaming are hints, dropped. */
const TOOL_FIELDS = new Set([
  'type',
  'name',
  'description',
  'input_schema',
  'strict',
  'cache_control',
  'eager_input_streaming',
]);

function openaiImage(b: Obj, path: string): ImagePart {
  const s = isObj(b['source']) ? b['source'] : {};
  if (s['type'] === 'base64') {
    return {
      type: 'image_url',
      image_url: { url: `data:${String(s['media_type'])};base64,${String(s['data'])}` },
    };
  }
  if (s['type'] === 'url') return { type: 'image_url', image_url: { url: String(s['url']) } };
  throw toOpenAI(path, `${String(s['type'])} image sources are not supported`);
}

function toolResultText(content: unknown, path: string): string {
  if (content === undefined || content === null) return '';
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw invalid(path, `${path} must be a string or an array of blocks`);
  return content
    .map((b: unknown, k) => {
      if (isObj(b) && b['type'] === 'text') return String(b['text'] ?? '');
      const type = isObj(b) ? String(b['type']) : typeof b;
      throw toOpenAI(
        `${path}[${k}]`,
        `${type} blocks inside tool_result are not supported (OpenAI tool messages carry text only)`,
      );
    })
    .join('\n');
}

// Note: cache_control on any block is a caching hint only and is dropped throughout.
function translateAnthropicMessages(msgs: unknown): ChatRequest['messages'] {
  if (!Array.isArray(msgs)) throw invalid('messages', 'messages must be an array');
  const out: ChatRequest['messages'] = [];
  msgs.forEach((m: unknown, i) => {
    const at = `messages[${i}]`;
    if (!isObj(m)) throw invalid(at, `${at} must be an object`);
    const role = m['role'];
    const content = m['content'];
    if (role !== 'user' && role !== 'assistant' && role !== 'system') {
      throw invalid(`${at}.role`, `unknown message role ${JSON.stringify(role)}`);
    }
    if (role === 'system') {
      out.push({
        role: 'system',
        content: typeof content === 'string' ? content : textParts(content, `${at}.content`),
      });
      return;
    }
    if (typeof content === 'string') return void out.push({ role, content });
    if (!Array.isArray(content)) throw invalid(`${at}.content`, `${at}.content must be a string or an array`);

    if (role === 'user') {
      // tool_result blocks become `tool` messages; other blocks gather into user messages, in order.
      let parts: Array<TextPart | ImagePart> = [];
      const flush = (): void => {
        if (parts.length > 0) out.push({ role: 'user', content: parts });
        parts = [];
      };
      content.forEach((b: unknown, j) => {
        const bt = `${at}.content[${j}]`;
        if (!isObj(b)) throw invalid(bt, `${bt} must be an object`);
        if (b['type'] === 'text') parts.push({ type: 'text', text: String(b['text'] ?? '') });
        else if (b['type'] === 'image') parts.push(openaiImage(b, bt));
        else if (b['type'] === 'tool_result') {
          flush();
          // is_error has no OpenAI field; the content (usually the error text) is kept as is.
          const text = toolResultText(b['content'], `${bt}.content`);
          out.push({ role: 'tool', tool_call_id: String(b['tool_use_id'] ?? ''), content: text });
        } else throw toOpenAI(bt, `${String(b['type'])} blocks have no OpenAI equivalent`);
      });
      return flush();
    }

    const texts: string[] = [];
    const calls: FunctionToolCall[] = [];
    content.forEach((b: unknown, j) => {
      const bt = `${at}.content[${j}]`;
      if (!isObj(b)) throw invalid(bt, `${bt} must be an object`);
      if (b['type'] === 'text') texts.push(String(b['text'] ?? ''));
      else if (b['type'] === 'tool_use') {
        const args = JSON.stringify(b['input'] ?? {});
        calls.push({
          id: String(b['id'] ?? ''),
          type: 'function',
          function: { name: String(b['name'] ?? ''), arguments: args },
        });
      } else if (b['type'] === 'thinking' || b['type'] === 'redacted_thinking') {
        // Earlier turns' thinking is dropped: Anthropic itself strips it from the context of past turns.
      } else throw toOpenAI(bt, `${String(b['type'])} blocks have no OpenAI equivalent`);
    });
    let text: string | TextPart[] | null = texts.map((t) => ({ type: 'text', text: t }));
    if (texts.length === 1) text = texts[0]!;
    else if (texts.length === 0) text = calls.length > 0 ? null : '';
    out.push(
      calls.length > 0
        ? { role: 'assistant', content: text, tool_calls: calls }
        : { role: 'assistant', content: text },
    );
  });
  return out;
}

function textParts(content: unknown, path: string): TextPart[] {
  if (!Array.isArray(content)) throw invalid(path, `${path} must be a string or an array of text blocks`);
  return content.map((b: unknown, j): TextPart => {
    if (isObj(b) && b['type'] === 'text') return { type: 'text', text: String(b['text'] ?? '') };
    throw toOpenAI(`${path}[${j}]`, 'only text blocks are supported here');
  });
}

function openaiTools(tools: unknown): OpenAITool[] {
  if (!Array.isArray(tools)) throw invalid('tools', 'tools must be an array');
  return tools.map((t: unknown, i): OpenAITool => {
    if (!isObj(t)) throw invalid(`tools[${i}]`, `tools[${i}] must be an object`);
    if (given(t['type']) && t['type'] !== 'custom') {
      throw toOpenAI(`tools[${i}]`, `server tool ${String(t['type'])} has no OpenAI equivalent`);
    }
    for (const k of Object.keys(t)) if (!TOOL_FIELDS.has(k)) throw toOpenAI(`tools[${i}].${k}`);
    const fn: OpenAITool & { type: 'function' } = {
      type: 'function',
      function: {
        name: String(t['name'] ?? ''),
        parameters: isObj(t['input_schema']) ? t['input_schema'] : {},
      },
    };
    if (typeof t['description'] === 'string') fn.function.description = t['description'];
    if (t['strict'] === true) fn.function.strict = true;
    return fn;
  });
}

/**
 * An Anthropic Messages request as an OpenAI chat request for `upstreamModel` (an Anthropic-format
 * client served by an OpenAI channel). Throws a 400 GatewayError for anything without a faithful translation.
 */
export function anthropicToOpenAIRequest(req: MessagesRequest, upstreamModel: string): ChatRequest {
  for (const key of Object.keys(req)) {
    const refused = ANTHROPIC_REFUSED[key];
    if (refused) {
      if (refused.bad(req[key])) throw toOpenAI(key, refused.why);
    } else if (!ANTHROPIC_HANDLED.has(key)) {
      throw toOpenAI(key, 'unknown parameter');
    }
  }
  const messages: ChatRequest['messages'] = [];
  if (typeof req.system === 'string') messages.push({ role: 'system', content: req.system });
  else if (given(req.system)) messages.push({ role: 'system', content: textParts(req.system, 'system') });
  messages.push(...translateAnthropicMessages(req.messages));

  const out: ChatRequest = { model: upstreamModel, messages };
  if (given(req.max_tokens)) out.max_tokens = req.max_tokens;
  if (given(req.temperature)) out.temperature = req.temperature!;
  if (given(req.top_p)) out.top_p = req.top_p!;
  if (given(req.stop_sequences)) out.stop = [...req.stop_sequences!];
  if (given(req.metadata)) {
    const md = req.metadata as Obj;
    for (const k of Object.keys(md)) if (k !== 'user_id') throw toOpenAI(`metadata.${k}`);
    if (typeof md['user_id'] === 'string') out.user = md['user_id'];
  }
  if (given(req.tools)) out.tools = openaiTools(req.tools);
  const tc = req.tool_choice as Obj | undefined;
  if (given(tc)) {
    const map: Record<string, OpenAIToolChoice | undefined> = { auto: 'auto', any: 'required', none: 'none' };
    const choice =
      tc!['type'] === 'tool'
        ? { type: 'function' as const, function: { name: String(tc!['name']) } }
        : map[String(tc!['type'])];
    if (!choice) throw toOpenAI('tool_choice', `unknown tool_choice type ${JSON.stringify(tc!['type'])}`);
    out.tool_choice = choice;
    if (tc!['disable_parallel_tool_use'] === true) out.parallel_tool_calls = false;
  }
  if (req.stream === true) {
    out.stream = true;
    out.stream_options = { include_usage: true }; // without it OpenAI streams carry no usage at all
  } else if (req.stream === false) out.stream = false;
  return out;
}

// =====================================================================================================
// OpenAI response -> Anthropic response
// =====================================================================================================

const STOP_FROM_FINISH: Record<string, StopReason> = {
  stop: 'end_turn',
  length: 'max_tokens',
  tool_calls: 'tool_use',
  function_call: 'tool_use',
  content_filter: 'refusal',
};

/**
 * Anthropic usage for an OpenAI usage object: Anthropic's input_tokens excludes cache reads (and
 * writes), so anthropicUsage() of the result equals openaiUsage() of the input.
 */
function anthropicUsageOf(u: Usage | null): AnthropicUsage {
  const x = u ?? emptyUsage();
  return {
    input_tokens: Math.max(0, x.inputTokens - x.cachedTokens - x.cacheWriteTokens),
    output_tokens: x.outputTokens,
    cache_creation_input_tokens: x.cacheWriteTokens,
    cache_read_input_tokens: x.cachedTokens,
  };
}

/** A stable Anthropic-style id for an OpenAI completion id. */
const messageId = (openaiId: unknown): string => `msg_${String(openaiId ?? '').replace(/^chatcmpl-/, '')}`;

/** Tool call arguments from an OpenAI upstream as an Anthropic `input` object. */
function parseArguments(raw: unknown): Obj {
  try {
    const v: unknown = raw === '' || raw === undefined ? {} : JSON.parse(String(raw));
    if (isObj(v)) return v;
  } catch {
    // fall through
  }
  throw new GatewayError(
    'upstream_bad_response',
    'upstream returned tool call arguments that are not a JSON object',
  );
}

/** An OpenAI chat completion (choice 0) as an Anthropic Message reported under `model`. */
export function openaiToAnthropicResponse(res: ChatCompletion, model: string): Message {
  const choice = res.choices?.[0];
  const msg = choice?.message;
  const content: ContentBlock[] = [];
  if (typeof msg?.content === 'string' && msg.content !== '')
    content.push({ type: 'text', text: msg.content });
  if (typeof msg?.refusal === 'string' && msg.refusal !== '')
    content.push({ type: 'text', text: msg.refusal });
  for (const tc of msg?.tool_calls ?? []) {
    if (tc.type !== 'function')
      throw new GatewayError('upstream_bad_response', `upstream returned a ${tc.type} tool call`);
    content.push({
      type: 'tool_use',
      id: tc.id,
      name: tc.function.name,
      input: parseArguments(tc.function.arguments),
    });
  }
  return {
    id: messageId(res.id),
    type: 'message',
    role: 'assistant',
    model,
    content,
    stop_reason: STOP_FROM_FINISH[choice?.finish_reason ?? 'stop'] ?? 'end_turn',
    stop_sequence: null,
    usage: anthropicUsageOf(openaiUsage(res.usage)),
  };
}

// =====================================================================================================
// OpenAI stream -> Anthropic stream
// =====================================================================================================

export interface AnthropicSse {
  event: StreamEvent['type'];
  data: StreamEvent;
}

const sse = (data: StreamEvent): AnthropicSse => ({ event: data.type, data });

/**
 * Turns OpenAI chat.completion.chunk objects into the Anthropic event sequence:
 * message_start, then per text run / tool call a content_block_start, deltas and content_block_stop
 * (increasing indices), then from finish(): message_delta and message_stop.
 *
 * OpenAI sends usage in a chunk with `choices: []` AFTER the finish_reason chunk, so message_delta is
 * only emitted by finish(), which the caller invokes on `data: [DONE]`.
 */
export class OpenAIToAnthropicStream {
  private readonly model: string;
  private started = false;
  private finished = false;
  private id = 'msg_';
  private nextIndex = 0;
  /** The open content block: a text run, or the tool call with this OpenAI tool_calls index. */
  private open: { index: number; tool: number | null } | null = null;
  private readonly seenTools = new Set<number>();
  private finishReason: string | null = null;
  private seenUsage: Usage | null = null;

  constructor(opts: { model: string }) {
    this.model = opts.model;
  }

  usage(): Usage {
    return this.seenUsage ?? emptyUsage();
  }

  push(chunk: any): AnthropicSse[] {
    const c = eventData(chunk);
    if (isObj(c['error'])) {
      const e = c['error'];
      throw new GatewayError(
        'upstream_error',
        `upstream error: ${typeof e['message'] === 'string' ? e['message'] : 'unknown error'}`,
      );
    }
    const out: AnthropicSse[] = [];
    const u = openaiUsage(c.usage);
    if (u) this.seenUsage = u;
    if (!this.started) out.push(this.start(c.id));
    const choice = Array.isArray(c.choices) ? c.choices.find((ch: any) => (ch?.index ?? 0) === 0) : undefined;
    const delta = choice?.delta ?? {};
    for (const text of [delta.content, delta.refusal]) {
      if (typeof text !== 'string' || text === '') continue;
      if (this.open === null || this.open.tool !== null)
        this.openBlock(out, null, { type: 'text', text: '' });
      out.push(
        sse({ type: 'content_block_delta', index: this.open!.index, delta: { type: 'text_delta', text } }),
      );
    }
    for (const tc of Array.isArray(delta.tool_calls) ? delta.tool_calls : []) {
      const n: number = typeof tc?.index === 'number' ? tc.index : 0;
      if (!this.seenTools.has(n)) {
        this.seenTools.add(n);
        const block = {
          type: 'tool_use' as const,
          id: String(tc.id ?? `call_${n}`),
          name: String(tc.function?.name ?? ''),
          input: {},
        };
        this.openBlock(out, n, block);
      } else if (this.open?.tool !== n) {
        // Anthropic blocks cannot interleave; OpenAI streams tool calls one after another.
        throw new GatewayError(
          'upstream_bad_response',
          'upstream interleaved the arguments of parallel tool calls',
        );
      }
      const args = tc.function?.arguments;
      if (typeof args === 'string' && args !== '') {
        out.push(
          sse({
            type: 'content_block_delta',
            index: this.open!.index,
            delta: { type: 'input_json_delta', partial_json: args },
          }),
        );
      }
    }
    if (typeof choice?.finish_reason === 'string') this.finishReason = choice.finish_reason;
    return out;
  }

  /** The closing events; call once the OpenAI stream sent `[DONE]`. Later calls return nothing. */
  finish(): AnthropicSse[] {
    if (this.finished) return [];
    this.finished = true;
    const out: AnthropicSse[] = [];
    if (!this.started) out.push(this.start(''));
    this.closeBlock(out);
    const usage = this.seenUsage ? anthropicUsageOf(this.seenUsage) : { output_tokens: 0 };
    const stop_reason = STOP_FROM_FINISH[this.finishReason ?? 'stop'] ?? 'end_turn';
    out.push(sse({ type: 'message_delta', delta: { stop_reason, stop_sequence: null }, usage }));
    out.push(sse({ type: 'message_stop' }));
    return out;
  }

  private start(openaiId: unknown): AnthropicSse {
    this.started = true;
    this.id = messageId(openaiId);
    return sse({
      type: 'message_start',
      message: {
        id: this.id,
        type: 'message',
        role: 'assistant',
        model: this.model,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: this.seenUsage ? anthropicUsageOf(this.seenUsage) : { input_tokens: 0, output_tokens: 0 },
      },
    });
  }

  private openBlock(out: AnthropicSse[], tool: number | null, block: ContentBlock): void {
    this.closeBlock(out);
    this.open = { index: this.nextIndex++, tool };
    out.push(sse({ type: 'content_block_start', index: this.open.index, content_block: block }));
  }

  private closeBlock(out: AnthropicSse[]): void {
    if (this.open) out.push(sse({ type: 'content_block_stop', index: this.open.index }));
    this.open = null;
  }
}
