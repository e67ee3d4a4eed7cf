/**
 * Anthropic as a channel (outbound): OpenAI chat -> Anthropic Messages for requests, and Anthropic's JSON
 * answers and SSE streams -> OpenAI chat. The other direction (Anthropic as a client dialect) is inbound.ts.
 *
 * Policy: a request field either has a faithful translation or the request is refused with a 400
 * `unsupported_parameter` naming it. Nothing that changes what the model does is silently dropped.
 * The only things dropped are pure hints with no effect on output (caching hints, `stream_options`,
 * `service_tier`, image `detail`), each noted where it happens. The walks that refuse are shared with the
 * other outbound translators (../outbound-refusals.ts); this file declares Anthropic's answers and wording.
 * The OpenAI completion and chunks are built by ../response-builders.ts from what this file reads.
 */
import { GatewayError } from '../../core/errors.js';
import { type Usage } from '../../core/usage.js';
import { type ChatCompletion, type ChatCompletionChunk, type ChatRequest } from '../openai/wire.js';
import { ChatRefusals, REFUSE } from '../outbound-refusals.js';
import { ChunkWriter, chatCompletion, finishFrom } from '../response-builders.js';
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
import { eventData, given, invalid, isObj, nowSeconds, toAnthropic } from './common.js';

// =====================================================================================================
// OpenAI request -> Anthropic request
// =====================================================================================================

/** What an Anthropic channel does with each OpenAI field, and how its refusals read. */
const ANTHROPIC = new ChatRefusals({
  channel: 'an Anthropic channel',
  wire: 'Anthropic',
  systemFirst: 'Anthropic takes one system prompt before all turns',
  functionRole: 'refuse',
  params: {
    model: 'translate', // replaced by the channel's upstream model
    messages: 'translate',
    max_completion_tokens: 'translate',
    max_tokens: 'translate',
    temperature: 'translate',
    top_p: 'translate',
    stop: 'translate',
    stream: 'translate',
    stream_options: 'drop', // Anthropic streams always carry usage; the stream translator honours include_usage
    tools: 'translate',
    tool_choice: 'translate',
    parallel_tool_calls: 'translate',
    user: 'translate',
    safety_identifier: 'translate',
    service_tier: 'drop', // a capacity hint
    prompt_cache_key: 'drop', // caching hints (Anthropic caches by cache_control breakpoints)
    prompt_cache_retention: 'drop',
    prompt_cache_options: 'drop',
    n: { refuse: 'Anthropic returns exactly one choice' },
    logprobs: { refuse: 'Anthropic does not return log probabilities' },
    top_logprobs: { refuse: 'Anthropic does not return log probabilities' },
    response_format: REFUSE.response_format,
    audio: { refuse: 'Anthropic models do not produce audio' },
    modalities: REFUSE.modalities,
    prediction: { refuse: 'Anthropic has no predicted outputs' },
    logit_bias: { refuse: 'Anthropic has no logit bias' },
    presence_penalty: { refuse: 'Anthropic has no presence penalty' },
    frequency_penalty: { refuse: 'Anthropic has no frequency penalty' },
    seed: { refuse: 'Anthropic has no deterministic sampling seed' },
    store: { refuse: 'Anthropic does not store completions' },
    web_search_options: { refuse: 'use an OpenAI channel for web search' },
    functions: REFUSE.functions,
    function_call: REFUSE.function_call,
    reasoning_effort: {
      refuse:
        'Anthropic configures extended thinking differently; call the model through the Anthropic Messages endpoint to use it',
    },
    // Anthropic's metadata holds only user_id, so arbitrary tags would be lost.
    metadata: { refuse: 'Anthropic metadata only carries a user id (send `user` instead)' },
  },
});

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

const textBlock = (text: string): TextBlockParam => ({ type: 'text', text });

function userBlocks(content: unknown, path: string): string | ContentBlockParam[] {
  if (typeof content === 'string') return content;
  return ANTHROPIC.parts<ContentBlockParam>(content, path, {
    text: (p) => textBlock(String(p['text'] ?? '')),
    // `detail` is dropped: a resolution/cost hint; Anthropic sizes images itself.
    image_url: (p, at) => imageBlock(isObj(p['image_url']) ? p['image_url']['url'] : undefined, at),
  });
}

function translateOpenAIMessages(msgs: unknown): { system: TextBlockParam[]; messages: MessageParam[] } {
  const system: TextBlockParam[] = [];
  const messages: MessageParam[] = [];
  // Anthropic wants alternating turns: consecutive same-role turns (e.g. several tool results) merge.
  const push = (role: 'user' | 'assistant', content: string | ContentBlockParam[]): void => {
    const last = messages[messages.length - 1];
    if (last?.role !== role) return void messages.push({ role, content });
    const asBlocks = (c: string | ContentBlockParam[]): ContentBlockParam[] =>
      typeof c === 'string' ? [textBlock(c)] : c;
    last.content = [...asBlocks(last.content), ...asBlocks(content)];
  };

  ANTHROPIC.messages(msgs, {
    started: () => messages.length > 0,
    system: (content, path) => void system.push(...ANTHROPIC.texts(content, path).map(textBlock)),
    user: (content, path) => push('user', userBlocks(content, path)),
    assistant: (texts, calls) => {
      // Anthropic rejects empty text blocks; an assistant turn with tool calls often has content "".
      const blocks: ContentBlockParam[] = texts.filter((t) => t !== '').map(textBlock);
      for (const c of calls) blocks.push({ type: 'tool_use', id: c.id, name: c.name, input: c.args });
      push('assistant', blocks.length === 0 ? '' : blocks);
    },
    tool: (m, at) => {
      const c = m['content'];
      const content = typeof c === 'string' ? c : ANTHROPIC.texts(c, `${at}.content`).map(textBlock);
      push('user', [{ type: 'tool_result', tool_use_id: String(m['tool_call_id'] ?? ''), content }]);
    },
  });
  return { system, messages };
}

function anthropicTools(tools: unknown): CustomTool[] {
  return ANTHROPIC.tools(tools, (f): CustomTool => {
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

const anthropicToolChoice = (tc: unknown): AnthropicToolChoice | undefined =>
  ANTHROPIC.toolChoice<AnthropicToolChoice>(tc, {
    none: { type: 'none' },
    auto: { type: 'auto' },
    required: { type: 'any' },
    named: (name) => ({ type: 'tool', name }),
  });

/**
 * An OpenAI chat request as an Anthropic Messages request for `upstreamModel`.
 * Throws a 400 GatewayError for anything without a faithful translation (see the policy above).
 */
export function openaiToAnthropicRequest(
  req: ChatRequest,
  upstreamModel: string,
  opts: { defaultMaxTokens: number },
): MessagesRequest {
  ANTHROPIC.params(req);
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

const finishFromStop = finishFrom<StopReason>({
  end_turn: 'stop',
  stop_sequence: 'stop',
  pause_turn: 'stop',
  max_tokens: 'length',
  model_context_window_exceeded: 'length',
  tool_use: 'tool_calls',
  refusal: 'content_filter',
});

/** An Anthropic Message as an OpenAI chat completion reported under `model`. */
export function anthropicToOpenAIResponse(msg: Message, model: string): ChatCompletion {
  return chatCompletion(
    msg.content ?? [],
    (b) => {
      if (b.type === 'text') return b.text;
      if (b.type === 'tool_use') return { id: b.id, name: b.name, input: b.input };
      return undefined; // thinking / redacted_thinking: OpenAI chat completions have no place for them.
    },
    {
      id: `chatcmpl-${msg.id}`,
      model,
      finish: finishFromStop(msg.stop_reason),
      usage: anthropicUsage(msg.usage),
    },
  );
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
  private readonly out: ChunkWriter;
  private raw: {
    input_tokens: number;
    output_tokens: number;
    cache_read_input_tokens: number;
    cache_creation_input_tokens: number;
  } = { input_tokens: 0, output_tokens: 0, cache_read_input_tokens: 0, cache_creation_input_tokens: 0 };
  private stopped = false;

  constructor(opts: { model: string; includeUsage: boolean; created?: number }) {
    this.out = new ChunkWriter(opts.model, opts.includeUsage, 'chatcmpl-', opts.created ?? nowSeconds());
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
        if (typeof m.id === 'string') this.out.id = `chatcmpl-${m.id}`;
        this.absorb(m.usage);
        return [this.out.chunk({ role: 'assistant', content: '' })];
      }
      case 'content_block_start': {
        const b = d.content_block ?? {};
        if (b.type === 'tool_use') return this.out.toolStart(d.index, b.id, b.name);
        if (b.type === 'text' && typeof b.text === 'string' && b.text !== '')
          return [this.out.chunk({ content: b.text })];
        return [];
      }
      case 'content_block_delta': {
        const delta = d.delta ?? {};
        if (delta.type === 'text_delta') return [this.out.chunk({ content: delta.text })];
        if (delta.type === 'input_json_delta') return this.out.toolArgs(d.index, delta.partial_json);
        return []; // thinking_delta, signature_delta, citations_delta
      }
      case 'message_delta':
        this.absorb(d.usage);
        return [this.out.chunk({}, finishFromStop(d.delta?.stop_reason))];
      case 'message_stop':
        this.stopped = true;
        return this.out.usage(this.usage());
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
}
