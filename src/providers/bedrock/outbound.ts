/**
 * Bedrock as a channel: OpenAI chat -> a Converse request, and Converse's JSON answer and ConverseStream
 * events -> OpenAI chat. One translation for every model Converse serves (Anthropic, Nova, Llama, Mistral,
 * ...): Converse is Bedrock's model-neutral chat API.
 *
 * Request syntax: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html
 * Stream events:  https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStreamOutput.html
 *
 * Policy (as for Anthropic, see anthropic/outbound.ts): a request field either has a faithful translation
 * or the request is refused with a 400 naming it. Only pure hints with no effect on the output are dropped.
 * The walks that refuse are shared (../outbound-refusals.ts); this file declares Converse's answers and wording.
 * The OpenAI completion and chunks are built by ../response-builders.ts from what this file reads.
 */
import type { GatewayError } from '../../core/errors.js';
import { uniqueId } from '../../core/ids.js';
import type { Usage } from '../../core/usage.js';
import type { ChatCompletion, ChatCompletionChunk, ChatRequest } from '../openai/wire.js';
import { ChatRefusals, REFUSE, given, invalid, isObj } from '../outbound-refusals.js';
import { ChunkWriter, chatCompletion, finishFrom, nowSeconds } from '../response-builders.js';
import {
  bedrockUsage,
  type ContentBlock,
  type ConverseMessage,
  type ConverseRequest,
  type ConverseResponse,
  type ImageFormat,
  type StopReason,
  type ToolChoice,
  type ToolSpec,
} from './wire.js';

// =====================================================================================================
// OpenAI request -> Converse request
// =====================================================================================================

/** What a Bedrock channel does with each OpenAI field, and how its refusals read. */
const BEDROCK = new ChatRefusals({
  channel: 'a Bedrock channel',
  wire: 'Converse',
  systemFirst: 'Converse takes its system prompt before all turns',
  functionRole: 'unknown',
  params: {
    model: 'translate', // the model id rides the URL path
    messages: 'translate',
    max_completion_tokens: 'translate',
    max_tokens: 'translate',
    temperature: 'translate',
    top_p: 'translate',
    stop: 'translate',
    stream: 'translate', // decides the operation: converse or converse-stream
    stream_options: 'drop', // the stream's metadata event always carries usage; include_usage is honoured
    tools: 'translate',
    tool_choice: 'translate',
    user: 'drop', // an abuse-tracking hint; Converse has no such field
    safety_identifier: 'drop',
    service_tier: 'drop', // a capacity hint
    prompt_cache_key: 'drop', // caching hints
    prompt_cache_retention: 'drop',
    prompt_cache_options: 'drop',
    n: { refuse: 'Converse returns exactly one choice' },
    logprobs: { refuse: 'Converse does not return log probabilities' },
    top_logprobs: { refuse: 'Converse does not return log probabilities' },
    response_format: REFUSE.response_format,
    audio: { refuse: 'Converse chat models do not produce audio' },
    modalities: REFUSE.modalities,
    prediction: { refuse: 'Converse has no predicted outputs' },
    logit_bias: { refuse: 'Converse has no logit bias' },
    presence_penalty: { refuse: 'Converse has no presence penalty' },
    frequency_penalty: { refuse: 'Converse has no frequency penalty' },
    seed: { refuse: 'Converse has no sampling seed' },
    store: { refuse: 'Bedrock does not store completions' },
    web_search_options: { refuse: 'use an OpenAI channel for web search' },
    functions: REFUSE.functions,
    function_call: REFUSE.function_call,
    reasoning_effort: { refuse: 'Converse configures reasoning per model family' },
    metadata: { refuse: 'Converse has no completion metadata' },
    // Converse has no switch for parallel tool use: `false` could not be honoured.
    parallel_tool_calls: { refuse: 'Converse cannot disable parallel tool calls' },
  },
});
const toBedrock = (param: string, why?: string): GatewayError => BEDROCK.refuse(param, why);

const IMAGE_FORMATS: Record<string, ImageFormat> = {
  'image/png': 'png',
  'image/jpeg': 'jpeg',
  'image/jpg': 'jpeg',
  'image/gif': 'gif',
  'image/webp': 'webp',
};

/** An image part: only base64 data URLs (Converse takes bytes or an S3 location, never an http URL). */
function imageBlock(url: unknown, path: string): ContentBlock {
  if (typeof url !== 'string') throw invalid(path, `${path}.image_url.url must be a string`);
  const m = /^data:([^;,]+);base64,(.*)$/s.exec(url);
  const format = m ? IMAGE_FORMATS[m[1]!.toLowerCase()] : undefined;
  if (!m || !format) throw toBedrock(path, 'images must be base64 data URLs of type png, jpeg, gif or webp');
  return { image: { format, source: { bytes: m[2]! } } };
}

function userBlocks(content: unknown, path: string): ContentBlock[] {
  if (typeof content === 'string') return [{ text: content }];
  return BEDROCK.parts<ContentBlock>(content, path, {
    text: (p) => ({ text: String(p['text'] ?? '') }),
    // `detail` is dropped: a resolution hint; Bedrock sizes images itself.
    image_url: (p, at) => imageBlock(isObj(p['image_url']) ? p['image_url']['url'] : undefined, at),
  });
}

/** Bedrock rejects blank text blocks ("The text field in the ContentBlock object is blank"). */
const nonBlank = (b: ContentBlock): boolean => !('text' in b) || b.text.trim() !== '';

function translateMessages(msgs: unknown): { system: Array<{ text: string }>; messages: ConverseMessage[] } {
  const system: Array<{ text: string }> = [];
  const messages: ConverseMessage[] = [];
  // Converse validates strict user/assistant alternation: same-role turns (several tool results) merge.
  const push = (role: 'user' | 'assistant', content: ContentBlock[]): void => {
    const kept = content.filter(nonBlank);
    if (kept.length === 0) return;
    const last = messages[messages.length - 1];
    if (last?.role === role) last.content.push(...kept);
    else messages.push({ role, content: kept });
  };
  BEDROCK.messages(msgs, {
    started: () => messages.length > 0,
    system: (content, path) => {
      for (const text of BEDROCK.texts(content, path)) if (text !== '') system.push({ text });
    },
    user: (content, path) => push('user', userBlocks(content, path)),
    assistant: (texts, calls) => {
      const blocks: ContentBlock[] = texts.map((text) => ({ text }));
      for (const c of calls) blocks.push({ toolUse: { toolUseId: c.id, name: c.name, input: c.args } });
      push('assistant', blocks);
    },
    tool: (m, at) => {
      const text = BEDROCK.texts(m['content'], `${at}.content`).join('');
      // Tool results go back in a user turn, merged with the ones before it (one per call).
      const block: ContentBlock = {
        toolResult: { toolUseId: String(m['tool_call_id'] ?? ''), content: text === '' ? [] : [{ text }] },
      };
      const last = messages[messages.length - 1];
      if (last?.role === 'user') last.content.push(block);
      else messages.push({ role: 'user', content: [block] });
    },
  });
  return { system, messages };
}

function toolSpecs(tools: unknown): ToolSpec[] {
  return BEDROCK.tools(tools, (f): ToolSpec => {
    const spec: ToolSpec['toolSpec'] = {
      name: String(f['name'] ?? ''),
      inputSchema: { json: isObj(f['parameters']) ? f['parameters'] : { type: 'object', properties: {} } },
    };
    if (typeof f['description'] === 'string' && f['description'] !== '') spec.description = f['description'];
    return { toolSpec: spec };
  });
}

/** OpenAI tool_choice -> Converse's; 'none' is handled by the caller (Converse has no such choice). */
const toolChoice = (tc: unknown): ToolChoice | undefined =>
  BEDROCK.toolChoice<ToolChoice>(tc, {
    auto: { auto: {} },
    required: { any: {} },
    named: (name) => ({ tool: { name } }),
  });

const hasToolBlocks = (messages: ConverseMessage[]): boolean =>
  messages.some((m) => m.content.some((b) => 'toolUse' in b || 'toolResult' in b));

/**
 * An OpenAI chat request as a Converse request body (the model id goes in the path, not here). Throws a
 * 400 GatewayError for anything without a faithful translation.
 */
export function openaiToConverseRequest(req: ChatRequest): ConverseRequest {
  BEDROCK.params(req);
  const { system, messages } = translateMessages(req.messages);
  const out: ConverseRequest = { messages };
  if (system.length > 0) out.system = system;
  const max = req.max_completion_tokens ?? req.max_tokens;
  const inf: NonNullable<ConverseRequest['inferenceConfig']> = {};
  if (given(max)) inf.maxTokens = max!;
  if (given(req.temperature)) inf.temperature = req.temperature!;
  if (given(req.top_p)) inf.topP = req.top_p!;
  if (given(req.stop))
    inf.stopSequences = typeof req.stop === 'string' ? [req.stop] : [...(req.stop as string[])];
  if (Object.keys(inf).length > 0) out.inferenceConfig = inf;

  const tools = given(req.tools) ? toolSpecs(req.tools) : [];
  if (req.tool_choice === 'none') {
    // No 'none' in Converse: leaving the tools out says the same, unless the history holds tool blocks,
    // which Bedrock accepts only with a toolConfig (and then the model may call a tool).
    if (hasToolBlocks(messages))
      throw toBedrock('tool_choice', '"none" cannot be honoured when the conversation holds tool calls');
    return out;
  }
  if (tools.length > 0) {
    out.toolConfig = { tools };
    const choice = toolChoice(req.tool_choice);
    if (choice) out.toolConfig.toolChoice = choice;
  } else if (given(req.tool_choice)) toolChoice(req.tool_choice); // validated: a choice without tools is a 400 upstream anyway
  return out;
}

// =====================================================================================================
// Converse response -> OpenAI response
// =====================================================================================================

const finishOf = finishFrom<StopReason>({
  end_turn: 'stop',
  stop_sequence: 'stop',
  max_tokens: 'length',
  model_context_window_exceeded: 'length',
  tool_use: 'tool_calls',
  guardrail_intervened: 'content_filter',
  content_filtered: 'content_filter',
  malformed_model_output: 'stop',
  malformed_tool_use: 'stop',
});

export function isConverseResponse(j: Record<string, any>): j is ConverseResponse {
  return isObj(j.output) && isObj(j.output.message) && Array.isArray(j.output.message.content);
}

/** A Converse answer as an OpenAI chat completion reported under `model`. */
export function converseToOpenAIResponse(r: ConverseResponse, model: string): ChatCompletion {
  return chatCompletion(
    r.output.message.content,
    (b) => {
      if ('text' in b && typeof b.text === 'string') return b.text;
      if ('toolUse' in b && isObj(b.toolUse))
        return { id: b.toolUse.toolUseId, name: b.toolUse.name, input: b.toolUse.input };
      return undefined; // reasoningContent: OpenAI chat completions have no place for it.
    },
    { id: uniqueId('chatcmpl-'), model, finish: finishOf(r.stopReason), usage: bedrockUsage(r.usage) },
  );
}

// =====================================================================================================
// ConverseStream events -> OpenAI chunks
// =====================================================================================================

/**
 * ConverseStream events (already decoded from the binary event stream: the event type and its JSON
 * payload) as OpenAI chat chunks. The order is messageStart, content blocks, messageStop (the stop
 * reason), then metadata (usage), which is the stream's last event: only then is the answer complete.
 */
export class ConverseToOpenAIStream {
  private readonly out: ChunkWriter;
  private seen: Usage | null = null;
  private complete = false;

  constructor(model: string, includeUsage: boolean) {
    this.out = new ChunkWriter(model, includeUsage, uniqueId('chatcmpl-'), nowSeconds());
  }

  get done(): boolean {
    return this.complete;
  }
  usage(): Usage | null {
    return this.seen;
  }

  push(event: string, d: Record<string, any>): ChatCompletionChunk[] {
    switch (event) {
      case 'messageStart':
        return [this.out.chunk({ role: 'assistant', content: '' })];
      case 'contentBlockStart': {
        const tu = d.start?.toolUse;
        if (!isObj(tu)) return [];
        const block = Number(d.contentBlockIndex);
        return this.out.toolStart(block, String(tu.toolUseId ?? ''), String(tu.name ?? ''));
      }
      case 'contentBlockDelta': {
        const delta = d.delta ?? {};
        if (typeof delta.text === 'string')
          return delta.text === '' ? [] : [this.out.chunk({ content: delta.text })];
        if (isObj(delta.toolUse) && typeof delta.toolUse.input === 'string')
          return this.out.toolArgs(Number(d.contentBlockIndex), delta.toolUse.input);
        return []; // reasoningContent, citations
      }
      case 'messageStop':
        return [this.out.chunk({}, finishOf(d.stopReason))];
      case 'metadata':
        this.seen = bedrockUsage(d.usage);
        this.complete = true;
        return this.out.usage(this.seen);
      default:
        return []; // contentBlockStop, and event types added later
    }
  }
}
