/**
 * A Gemini channel (Generative Language API; base_url like https://generativelanguage.googleapis.com/v1beta).
 * Gemini-format requests pass through untouched (the model is in the path); OpenAI chat requests are
 * translated both ways (streams included). Anthropic Messages and OpenAI Responses clients reach a Gemini
 * channel through the chat pivot, on top of the OpenAI chat exchange here.
 */
import { GatewayError } from '../../core/errors.js';
import { redactSecrets } from '../../core/render.js';
import type { Usage } from '../../core/usage.js';
import type { SseEvent } from '../../lib/sse.js';
import type { ChatCompletionChunk, ChatRequest } from '../openai/wire.js';
import { parseJsonObject } from '../shared.js';
import { ChatStream, type Frame, FrameStream, writeGemini } from '../stream.js';
import type {
  Exchange,
  InboundDialect,
  JsonResult,
  PreparedCall,
  StreamTranslator,
  UpstreamEndpoint,
} from '../types.js';
import { GeminiToChatStream, chatToGeminiRequest, geminiToChatCompletion } from './outbound.js';
import { type GenerateContentResponse, geminiHeaders, geminiUsage } from './wire.js';
import { GeminiEmbedPassthrough } from './embed.js';

/** The call's path: `models/` is accepted on the configured model name and not doubled. */
export function geminiPath(upstreamModel: string, stream: boolean): string {
  const model = encodeURIComponent(upstreamModel.replace(/^models\//, ''));
  return `/models/${model}:${stream ? 'streamGenerateContent?alt=sse' : 'generateContent'}`;
}

/** A 2xx body must be a GenerateContentResponse: candidates, or a prompt Gemini blocked. */
function answer(text: string): GenerateContentResponse {
  const j = parseJsonObject(text);
  if (!Array.isArray(j.candidates) && !j.promptFeedback)
    throw new GatewayError('upstream_bad_response', 'upstream answer has no candidates');
  return j as GenerateContentResponse;
}

/** A stream event; an `{error}` event (Google's envelope, or a list of one) ends the stream. */
function streamChunk(data: string): Record<string, any> {
  let j: unknown;
  try {
    j = JSON.parse(data);
  } catch {
    throw new GatewayError('upstream_bad_response', 'upstream stream carried a chunk that is not JSON');
  }
  if (Array.isArray(j) && j.length === 1) j = j[0];
  if (!j || typeof j !== 'object' || Array.isArray(j))
    throw new GatewayError('upstream_bad_response', 'upstream stream carried a chunk that is not an object');
  const o = j as Record<string, any>;
  if (o.error) {
    const e = (typeof o.error === 'object' ? o.error : {}) as { message?: unknown };
    throw new GatewayError(
      'upstream_stream_interrupted',
      redactSecrets(String(e.message ?? 'upstream stream error')),
    );
  }
  return o;
}

function candidateCount(n: unknown): number {
  return typeof n === 'number' && Number.isInteger(n) && n > 1 ? n : 1;
}

/** OpenAI chat in, served by a Gemini channel. */
class ChatViaGemini implements Exchange {
  readonly call: PreparedCall;
  private readonly includeUsage: boolean;
  private readonly candidates: number;
  constructor(
    body: Record<string, unknown>,
    ep: UpstreamEndpoint,
    upstreamModel: string,
    private readonly alias: string,
  ) {
    const req = chatToGeminiRequest(body as ChatRequest);
    const stream = body.stream === true;
    this.includeUsage =
      (body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true;
    this.candidates = candidateCount(body.n);
    this.call = {
      path: geminiPath(upstreamModel, stream),
      headers: geminiHeaders(ep),
      body: JSON.stringify(req),
      stream,
    };
  }
  decodeJson(text: string): JsonResult {
    const j = answer(text);
    return { body: geminiToChatCompletion(j, this.alias), usage: geminiUsage(j.usageMetadata) };
  }
  streamTranslator(): StreamTranslator {
    return new ChatFromGeminiStream(this.alias, this.candidates, this.includeUsage);
  }
}

/** Gemini chunks as OpenAI chat chunks. */
class ChatFromGeminiStream extends ChatStream {
  private readonly t: GeminiToChatStream;
  constructor(
    alias: string,
    candidates: number,
    private readonly includeUsage: boolean,
  ) {
    super();
    this.t = new GeminiToChatStream({ model: alias, candidates });
  }
  items(ev: SseEvent): readonly ChatCompletionChunk[] {
    if (this.finished) return [];
    const chunks = this.t.push(streamChunk(ev.data));
    if (this.t.done) {
      // Gemini has no end-of-stream event: the chunk that finishes the last candidate is the end.
      this.finished = true;
      chunks.push(...this.t.finish(this.includeUsage));
    }
    return chunks;
  }
  override usage(): Usage | null {
    return this.t.usage();
  }
}

/** Gemini in, Gemini out. The gateway marks a streamGenerateContent call with `stream: true` in the body. */
class GeminiPassthrough implements Exchange {
  readonly call: PreparedCall;
  private readonly candidates: number;
  constructor(
    body: Record<string, unknown>,
    ep: UpstreamEndpoint,
    upstreamModel: string,
    private readonly alias: string,
  ) {
    const stream = body.stream === true;
    // `model` (the alias) and `stream` are the gateway's; the API takes both from the path.
    const { model: _model, stream: _stream, ...rest } = body;
    const gc = (rest.generationConfig ?? rest.generation_config) as
      { candidateCount?: unknown; candidate_count?: unknown } | undefined;
    this.candidates = candidateCount(gc?.candidateCount ?? gc?.candidate_count);
    this.call = {
      path: geminiPath(upstreamModel, stream),
      headers: geminiHeaders(ep),
      body: JSON.stringify(rest),
      stream,
    };
  }
  decodeJson(text: string): JsonResult {
    const j = answer(text);
    j.modelVersion = this.alias;
    return { body: j, usage: geminiUsage(j.usageMetadata) };
  }
  streamTranslator(): StreamTranslator {
    return new GeminiStream(this.alias, this.candidates);
  }
}

/** Gemini chunks relayed with the model renamed; done when every candidate has finished (or the prompt was blocked). */
class GeminiStream extends FrameStream {
  private readonly ended = new Set<number>();
  private blocked = false;
  constructor(
    private readonly alias: string,
    private readonly expected: number,
  ) {
    super(writeGemini);
  }
  override get done(): boolean {
    return this.blocked || this.ended.size >= this.expected;
  }
  items(ev: SseEvent): readonly Frame[] {
    const chunk = streamChunk(ev.data);
    const u = geminiUsage(chunk.usageMetadata);
    if (u) this.seen = u;
    if ('modelVersion' in chunk) chunk.modelVersion = this.alias;
    const candidates: unknown[] = Array.isArray(chunk.candidates) ? chunk.candidates : [];
    if (candidates.length === 0 && chunk.promptFeedback?.blockReason) this.blocked = true;
    candidates.forEach((c: any, i) => {
      for (const p of Array.isArray(c?.content?.parts) ? c.content.parts : []) {
        if (typeof p?.text === 'string' && p.thought !== true) this.tally.add(p.text);
      }
      if (typeof c?.finishReason === 'string' && c.finishReason !== 'FINISH_REASON_UNSPECIFIED') {
        this.ended.add(typeof c.index === 'number' ? c.index : i);
      }
    });
    return [{ data: chunk }];
  }
}

export function geminiExchange(
  dialect: InboundDialect,
  body: Record<string, unknown>,
  ep: UpstreamEndpoint,
  upstreamModel: string,
  alias: string,
): Exchange {
  switch (dialect) {
    case 'openai_chat':
      return new ChatViaGemini(body, ep, upstreamModel, alias);
    case 'gemini':
      return new GeminiPassthrough(body, ep, upstreamModel, alias);
    case 'gemini_embed':
      return new GeminiEmbedPassthrough(body, ep, upstreamModel);
    default:
      // Anthropic Messages and OpenAI Responses arrive here through the chat pivot, as openai_chat.
      throw new GatewayError('unsupported_operation', `Gemini channels do not serve ${dialect} requests`);
  }
}
