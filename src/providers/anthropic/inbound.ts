/**
 * Anthropic Messages as a client dialect (inbound): an Anthropic-format request -> OpenAI chat, and OpenAI
 * chat answers and streams -> Anthropic's wire. Same refusal policy as outbound.ts.
 */
import { GatewayError } from '../../core/errors.js';
import { emptyUsage, type Usage } from '../../core/usage.js';
import {
  openaiUsage,
  type ChatCompletion,
  type ChatRequest,
  type FunctionToolCall,
  type ImagePart,
  type TextPart,
  type Tool as OpenAITool,
  type ToolChoice as OpenAIToolChoice,
} from '../openai/wire.js';
import {
  type AnthropicUsage,
  type ContentBlock,
  type Message,
  type MessagesRequest,
  type StopReason,
  type StreamEvent,
} from './wire.js';
import { eventData, given, invalid, isObj, toOpenAI, type Obj } from './common.js';
import { type ChatPivot, withUsage } from '../pivot.js';
import { TextTally } from '../shared.js';

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

// =====================================================================================================
// The pivot
// =====================================================================================================

/** An Anthropic Messages request served by any chat channel (pivot.ts): the chat request and the way back. */
export function anthropicPivot(body: Record<string, unknown>, alias: string): ChatPivot {
  const chat = anthropicToOpenAIRequest(
    body as unknown as MessagesRequest,
    String(body.model),
  ) as unknown as Record<string, unknown>;
  return {
    chat: withUsage(chat),
    fromChat: (c) => openaiToAnthropicResponse(c, alias),
    stream: () => {
      const t = new OpenAIToAnthropicStream({ model: alias });
      const tally = new TextTally();
      const counted = (evs: AnthropicSse[]): AnthropicSse[] => {
        for (const e of evs)
          if (e.data.type === 'content_block_delta' && e.data.delta.type === 'text_delta')
            tally.add(e.data.delta.text);
        return evs;
      };
      return {
        push: (chunk) => counted(t.push(chunk)),
        finish: () => counted(t.finish()),
        get emittedText() {
          return tally.text;
        },
      };
    },
  };
}
