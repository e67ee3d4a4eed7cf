/**
 * The OpenAI Responses API (`POST /v1/responses`), stateless.
 *
 *  - OpenAI channels serve it natively (the request passes through, `model` rewritten; typed SSE events
 *    pass through with the model renamed), unless the channel says `settings.native_responses: false`
 *    (an OpenAI-compatible vendor with chat completions only).
 *  - Every other channel serves it through the chat pivot: the request becomes an OpenAI chat request
 *    (instructions, input items, function tools, text format, reasoning effort), the chat answer becomes a
 *    `response` object, and the chat stream becomes the typed event stream (`response.created`,
 *    `response.output_item.added`, `response.output_text.delta`, … `response.completed`).
 *
 * What has no stateless translation is refused with a 400: `previous_response_id`, `conversation`,
 * `item_reference` inputs, and built-in tools (web search, file search, computer use, …).
 */
import { GatewayError } from '../../core/errors.js';
import { redactSecrets } from '../../core/render.js';
import { randomId } from '../../core/ids.js';
import type { Usage } from '../../core/usage.js';
import { bodyWithModel } from '../../lib/json-text.js';
import type { SseEvent } from '../../lib/sse.js';
import type { ChatPivot, PivotStream } from '../pivot.js';
import { withUsage } from '../pivot.js';
import { parseJsonObject, TextTally } from '../shared.js';
import { type Frame, FrameStream } from '../stream.js';
import type { Exchange, JsonResult, PreparedCall, StreamTranslator } from '../types.js';
import type { ChatCompletion, ChatCompletionChunk, ChatMessage, FinishReason } from './wire.js';

type Obj = Record<string, any>;
const isObj = (v: unknown): v is Obj => !!v && typeof v === 'object' && !Array.isArray(v);
const bad = (param: string, why: string) =>
  new GatewayError('invalid_request', `${param}: ${why}`, { param });

// ---------------------------------------------------------------- usage

export function responsesUsage(u: unknown): Usage | null {
  if (!isObj(u)) return null;
  const n = (x: unknown) => (typeof x === 'number' && Number.isFinite(x) && x > 0 ? x : 0);
  return {
    inputTokens: n(u.input_tokens),
    outputTokens: n(u.output_tokens),
    cachedTokens: n(u.input_tokens_details?.cached_tokens),
    cacheWriteTokens: n(u.input_tokens_details?.cache_write_tokens),
  };
}

function toResponsesUsage(u: Usage | null, reasoning = 0): Obj | null {
  if (!u) return null;
  return {
    input_tokens: u.inputTokens,
    input_tokens_details: { cached_tokens: u.cachedTokens, cache_write_tokens: u.cacheWriteTokens },
    output_tokens: u.outputTokens,
    output_tokens_details: { reasoning_tokens: reasoning },
    total_tokens: u.inputTokens + u.outputTokens,
  };
}

// ---------------------------------------------------------------- request: responses -> chat

const IGNORED = new Set([
  'model',
  'stream',
  'store',
  'metadata',
  'background',
  'include',
  'truncation',
  'service_tier',
  'prompt_cache_key',
  'prompt_cache_retention',
  'stream_options',
]);

function textOf(content: unknown, param: string): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw bad(param, 'must be a string or an array of content parts');
  let s = '';
  for (const p of content) {
    if (
      isObj(p) &&
      (p.type === 'input_text' || p.type === 'output_text' || p.type === 'text') &&
      typeof p.text === 'string'
    )
      s += p.text;
    else if (isObj(p) && p.type === 'refusal' && typeof p.refusal === 'string') s += p.refusal;
    else
      throw bad(
        param,
        `content part of type '${String(isObj(p) ? p.type : typeof p)}' has no translation here`,
      );
  }
  return s;
}

function userParts(content: unknown, param: string): string | Obj[] {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw bad(param, 'must be a string or an array of content parts');
  return content.map((p, i) => {
    if (!isObj(p)) throw bad(`${param}[${i}]`, 'must be an object');
    switch (p.type) {
      case 'input_text':
      case 'output_text':
        return { type: 'text', text: String(p.text ?? '') };
      case 'input_image':
        if (typeof p.image_url !== 'string')
          throw bad(`${param}[${i}]`, 'input_image needs image_url (file_id has no stateless translation)');
        return {
          type: 'image_url',
          image_url: { url: p.image_url, ...(p.detail ? { detail: p.detail } : {}) },
        };
      case 'input_file':
        if (typeof p.file_data !== 'string')
          throw bad(
            `${param}[${i}]`,
            'input_file needs file_data (file_id and file_url have no stateless translation)',
          );
        return {
          type: 'file',
          file: { file_data: p.file_data, ...(p.filename ? { filename: p.filename } : {}) },
        };
      default:
        throw bad(`${param}[${i}]`, `content part of type '${String(p.type)}' has no translation here`);
    }
  });
}

/** A Responses request as an OpenAI chat request (model left as the client's). */
export function responsesToChat(body: Obj): Obj {
  if (body.previous_response_id != null)
    throw bad(
      'previous_response_id',
      'stored conversations are not available on this channel (Anima is stateless here); send the whole input',
    );
  if (body.conversation != null)
    throw bad('conversation', 'stored conversations are not available on this channel; send the whole input');
  if (body.prompt != null) throw bad('prompt', 'stored prompt templates are not available on this channel');
  const messages: ChatMessage[] = [];
  if (body.instructions != null) {
    if (typeof body.instructions !== 'string') throw bad('instructions', 'must be a string');
    messages.push({ role: 'system', content: body.instructions });
  }
  const input = body.input;
  if (typeof input === 'string') messages.push({ role: 'user', content: input });
  else if (Array.isArray(input)) {
    let pendingCalls: Obj[] | null = null;
    const flush = () => {
      if (pendingCalls)
        messages.push({ role: 'assistant', content: null, tool_calls: pendingCalls } as ChatMessage);
      pendingCalls = null;
    };
    input.forEach((it: unknown, i: number) => {
      const param = `input[${i}]`;
      if (!isObj(it)) throw bad(param, 'must be an object');
      const type = it.type ?? 'message';
      if (type === 'function_call') {
        if (typeof it.name !== 'string' || typeof it.call_id !== 'string')
          throw bad(param, 'function_call needs name and call_id');
        (pendingCalls ??= []).push({
          id: it.call_id,
          type: 'function',
          function: { name: it.name, arguments: typeof it.arguments === 'string' ? it.arguments : '{}' },
        });
        return;
      }
      flush();
      switch (type) {
        case 'message': {
          const role = it.role;
          if (role === 'user')
            messages.push({
              role: 'user',
              content: userParts(it.content, `${param}.content`),
            } as ChatMessage);
          else if (role === 'system' || role === 'developer')
            messages.push({ role, content: textOf(it.content, `${param}.content`) } as ChatMessage);
          else if (role === 'assistant')
            messages.push({
              role: 'assistant',
              content: textOf(it.content, `${param}.content`),
            } as ChatMessage);
          else throw bad(`${param}.role`, "must be 'user', 'assistant', 'system' or 'developer'");
          break;
        }
        case 'function_call_output': {
          if (typeof it.call_id !== 'string') throw bad(param, 'function_call_output needs call_id');
          const out = typeof it.output === 'string' ? it.output : textOf(it.output, `${param}.output`);
          messages.push({ role: 'tool', tool_call_id: it.call_id, content: out } as ChatMessage);
          break;
        }
        case 'reasoning':
          break; // a model's earlier reasoning summary: nothing a chat model can take back in
        case 'item_reference':
          throw bad(param, 'item_reference needs stored responses, which this channel does not have');
        default:
          throw bad(
            `${param}.type`,
            `input items of type '${String(type)}' have no translation to this channel`,
          );
      }
    });
    flush();
  } else throw bad('input', 'must be a string or an array of input items');
  if (!messages.some((m) => m.role !== 'system')) throw bad('input', 'must hold at least one message');

  const chat: Obj = { model: body.model, messages, stream: body.stream === true };
  for (const k of Object.keys(body)) {
    if (IGNORED.has(k) || k === 'input' || k === 'instructions') continue;
    const v = body[k];
    if (v === null || v === undefined) continue;
    switch (k) {
      case 'max_output_tokens':
        chat.max_completion_tokens = v;
        break;
      case 'temperature':
      case 'top_p':
      case 'parallel_tool_calls':
      case 'user':
      case 'safety_identifier':
      case 'top_logprobs':
        chat[k] = v;
        break;
      case 'reasoning':
        if (isObj(v) && typeof v.effort === 'string') chat.reasoning_effort = v.effort;
        break;
      case 'text': {
        const f = isObj(v) ? v.format : undefined;
        if (!f || f.type === 'text') break;
        if (f.type === 'json_object') chat.response_format = { type: 'json_object' };
        else if (f.type === 'json_schema')
          chat.response_format = {
            type: 'json_schema',
            json_schema: {
              name: f.name,
              schema: f.schema,
              ...(f.strict != null ? { strict: f.strict } : {}),
              ...(f.description ? { description: f.description } : {}),
            },
          };
        else throw bad('text.format.type', `'${String(f.type)}' has no translation`);
        break;
      }
      case 'tools':
        if (!Array.isArray(v)) throw bad('tools', 'must be an array');
        if (v.length === 0) break;
        chat.tools = v.map((t: unknown, i: number) => {
          if (!isObj(t) || t.type !== 'function')
            throw bad(
              `tools[${i}]`,
              `built-in tools ('${String(isObj(t) ? t.type : t)}') are not available through this channel; only function tools translate`,
            );
          if (typeof t.name !== 'string') throw bad(`tools[${i}].name`, 'is required');
          return {
            type: 'function',
            function: {
              name: t.name,
              ...(t.description ? { description: t.description } : {}),
              parameters: t.parameters ?? { type: 'object', properties: {} },
              ...(t.strict != null ? { strict: t.strict } : {}),
            },
          };
        });
        break;
      case 'tool_choice':
        if (v === 'auto' || v === 'none' || v === 'required') chat.tool_choice = v;
        else if (isObj(v) && v.type === 'function' && typeof v.name === 'string')
          chat.tool_choice = { type: 'function', function: { name: v.name } };
        else throw bad('tool_choice', 'only auto, none, required and a function choice translate');
        break;
      default:
        throw bad(k, 'has no translation to this channel');
    }
  }
  return withUsage(chat);
}

// ---------------------------------------------------------------- answer: chat -> responses

function baseResponse(body: Obj, alias: string, id: string, createdAt: number): Obj {
  return {
    id,
    object: 'response',
    created_at: createdAt,
    status: 'in_progress',
    background: false,
    error: null,
    incomplete_details: null,
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    metadata: body.metadata ?? {},
    model: alias,
    output: [],
    parallel_tool_calls: body.parallel_tool_calls ?? true,
    previous_response_id: null,
    reasoning: { effort: body.reasoning?.effort ?? null, summary: null },
    store: false,
    temperature: body.temperature ?? 1,
    text: body.text ?? { format: { type: 'text' } },
    tool_choice: body.tool_choice ?? 'auto',
    tools: Array.isArray(body.tools) ? body.tools : [],
    top_p: body.top_p ?? 1,
    truncation: 'disabled',
    usage: null,
    user: body.user ?? null,
  };
}

function finishStatus(reason: FinishReason | null | undefined): {
  status: string;
  incomplete_details: Obj | null;
} {
  if (reason === 'length')
    return { status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' } };
  if (reason === 'content_filter')
    return { status: 'incomplete', incomplete_details: { reason: 'content_filter' } };
  return { status: 'completed', incomplete_details: null };
}

const messageItem = (id: string, text: string, refusal: string | null): Obj => ({
  type: 'message',
  id,
  status: 'completed',
  role: 'assistant',
  content:
    refusal !== null
      ? [{ type: 'refusal', refusal }]
      : [{ type: 'output_text', text, annotations: [], logprobs: [] }],
});

export function chatToResponse(body: Obj, c: ChatCompletion, usage: Usage | null, alias: string): Obj {
  const r = baseResponse(body, alias, `resp_${randomId(24)}`, c.created ?? Math.floor(Date.now() / 1000));
  const choice = c.choices[0];
  const m = choice?.message;
  const out: Obj[] = [];
  if (m) {
    if ((typeof m.content === 'string' && m.content !== '') || m.refusal)
      out.push(messageItem(`msg_${randomId(24)}`, m.content ?? '', m.refusal ?? null));
    for (const tc of m.tool_calls ?? []) {
      if (tc.type !== 'function') continue;
      out.push({
        type: 'function_call',
        id: `fc_${randomId(24)}`,
        call_id: tc.id,
        name: tc.function.name,
        arguments: tc.function.arguments,
        status: 'completed',
      });
    }
  }
  const fin = finishStatus(choice?.finish_reason);
  return {
    ...r,
    ...fin,
    output: out,
    usage: toResponsesUsage(usage, c.usage?.completion_tokens_details?.reasoning_tokens ?? 0),
    completed_at: Math.floor(Date.now() / 1000),
  };
}

/** Writes the typed Responses event stream from chat chunks. */
class ResponsesStreamWriter implements PivotStream {
  private seq = 0;
  private readonly resp: Obj;
  private started = false;
  private text: { id: string; index: number; buf: string } | null = null;
  private readonly calls = new Map<
    number,
    { id: string; callId: string; name: string; args: string; index: number }
  >();
  private readonly items: Obj[] = [];
  private nextIndex = 0;
  private finishReason: FinishReason | null = null;
  private reasoning = 0;
  private readonly tally = new TextTally();

  constructor(body: Obj, alias: string) {
    this.resp = baseResponse(body, alias, `resp_${randomId(24)}`, Math.floor(Date.now() / 1000));
  }
  get emittedText() {
    return this.tally.text;
  }

  private ev(s: Frame[], type: string, data: Obj): void {
    s.push({ event: type, data: { type, sequence_number: this.seq++, ...data } });
  }

  private start(s: Frame[]): void {
    if (this.started) return;
    this.started = true;
    this.ev(s, 'response.created', { response: this.resp });
    this.ev(s, 'response.in_progress', { response: this.resp });
  }

  private closeText(s: Frame[]): void {
    const t = this.text;
    if (!t) return;
    this.text = null;
    const part = { type: 'output_text', text: t.buf, annotations: [], logprobs: [] };
    const item = messageItem(t.id, t.buf, null);
    this.items[t.index] = item;
    this.ev(s, 'response.output_text.done', {
      item_id: t.id,
      output_index: t.index,
      content_index: 0,
      text: t.buf,
      logprobs: [],
    });
    this.ev(s, 'response.content_part.done', {
      item_id: t.id,
      output_index: t.index,
      content_index: 0,
      part,
    });
    this.ev(s, 'response.output_item.done', { output_index: t.index, item });
  }

  push(chunk: ChatCompletionChunk): readonly Frame[] {
    const s: Frame[] = [];
    this.start(s);
    if (chunk.usage?.completion_tokens_details?.reasoning_tokens)
      this.reasoning = chunk.usage.completion_tokens_details.reasoning_tokens;
    const ch = chunk.choices?.[0];
    if (!ch) return s;
    const d = ch.delta ?? {};
    const piece = typeof d.content === 'string' ? d.content : typeof d.refusal === 'string' ? d.refusal : '';
    if (piece !== '') {
      if (!this.text) {
        this.text = { id: `msg_${randomId(24)}`, index: this.nextIndex++, buf: '' };
        this.ev(s, 'response.output_item.added', {
          output_index: this.text.index,
          item: { type: 'message', id: this.text.id, status: 'in_progress', role: 'assistant', content: [] },
        });
        this.ev(s, 'response.content_part.added', {
          item_id: this.text.id,
          output_index: this.text.index,
          content_index: 0,
          part: { type: 'output_text', text: '', annotations: [], logprobs: [] },
        });
      }
      this.text.buf += piece;
      this.tally.add(piece);
      this.ev(s, 'response.output_text.delta', {
        item_id: this.text.id,
        output_index: this.text.index,
        content_index: 0,
        delta: piece,
        logprobs: [],
      });
    }
    for (const tc of d.tool_calls ?? []) {
      let c = this.calls.get(tc.index);
      if (!c) {
        this.closeText(s);
        c = {
          id: `fc_${randomId(24)}`,
          callId: tc.id ?? `call_${randomId(24)}`,
          name: tc.function?.name ?? '',
          args: '',
          index: this.nextIndex++,
        };
        this.calls.set(tc.index, c);
        this.ev(s, 'response.output_item.added', {
          output_index: c.index,
          item: {
            type: 'function_call',
            id: c.id,
            call_id: c.callId,
            name: c.name,
            arguments: '',
            status: 'in_progress',
          },
        });
      }
      const a = tc.function?.arguments ?? '';
      if (a) {
        c.args += a;
        this.tally.add(a);
        this.ev(s, 'response.function_call_arguments.delta', {
          item_id: c.id,
          output_index: c.index,
          delta: a,
        });
      }
    }
    if (ch.finish_reason) this.finishReason = ch.finish_reason;
    return s;
  }

  finish(usage: Usage | null): readonly Frame[] {
    const s: Frame[] = [];
    this.start(s);
    this.closeText(s);
    for (const c of [...this.calls.values()].sort((a, b) => a.index - b.index)) {
      const item = {
        type: 'function_call',
        id: c.id,
        call_id: c.callId,
        name: c.name,
        arguments: c.args,
        status: 'completed',
      };
      this.items[c.index] = item;
      this.ev(s, 'response.function_call_arguments.done', {
        item_id: c.id,
        output_index: c.index,
        arguments: c.args,
      });
      this.ev(s, 'response.output_item.done', { output_index: c.index, item });
    }
    const fin = finishStatus(this.finishReason);
    const final = {
      ...this.resp,
      ...fin,
      output: this.items.filter(Boolean),
      usage: toResponsesUsage(usage, this.reasoning),
      completed_at: Math.floor(Date.now() / 1000),
    };
    this.ev(s, fin.status === 'completed' ? 'response.completed' : 'response.incomplete', {
      response: final,
    });
    return s;
  }
}

/** The Responses dialect's side of the chat pivot. */
export function responsesPivot(body: Obj, alias: string): ChatPivot {
  return {
    chat: responsesToChat(body),
    fromChat: (c, usage) => chatToResponse(body, c, usage, alias),
    stream: () => new ResponsesStreamWriter(body, alias),
  };
}

// ---------------------------------------------------------------- native passthrough (OpenAI channels)

const TERMINAL = new Set(['response.completed', 'response.incomplete', 'response.failed']);

/** Responses in, served by an OpenAI channel's own /responses. */
export class ResponsesPassthrough implements Exchange {
  readonly call: PreparedCall;
  constructor(
    body: Obj,
    upstreamModel: string,
    private readonly alias: string,
    headers: Record<string, string>,
  ) {
    this.call = {
      path: '/responses',
      headers,
      body: bodyWithModel(body, upstreamModel),
      stream: body.stream === true,
    };
  }
  decodeJson(text: string): JsonResult {
    const j = parseJsonObject(text);
    if (j.object !== 'response' || !Array.isArray(j.output))
      throw new GatewayError('upstream_bad_response', 'upstream answer is not a response object');
    j.model = this.alias;
    return { body: j, usage: responsesUsage(j.usage) };
  }
  streamTranslator(): StreamTranslator {
    return new ResponsesStream(this.alias);
  }
}

/** Typed Responses events relayed with the model renamed; done at the terminal event. */
class ResponsesStream extends FrameStream {
  constructor(private readonly alias: string) {
    super();
  }
  items(ev: SseEvent): readonly Frame[] {
    const data = parseJsonObject(ev.data);
    const type = ev.event || String(data.type ?? '');
    if (type === 'error')
      throw new GatewayError(
        'upstream_stream_interrupted',
        redactSecrets(String(data.message ?? data.error?.message ?? 'upstream stream error')),
      );
    if (type === 'response.failed' && !this.finished) {
      const e = data.response?.error;
      throw new GatewayError(
        'upstream_stream_interrupted',
        redactSecrets(String(e?.message ?? 'the upstream response failed')),
      );
    }
    if (isObj(data.response)) {
      data.response.model = this.alias;
      const u = responsesUsage(data.response.usage);
      if (u) this.seen = u;
    }
    if (type === 'response.output_text.delta' && typeof data.delta === 'string') this.tally.add(data.delta);
    if (TERMINAL.has(type)) this.finished = true;
    return [{ event: type, data }];
  }
}
