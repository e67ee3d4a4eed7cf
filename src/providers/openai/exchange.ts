/**
 * An OpenAI-compatible channel. OpenAI-format requests pass through untouched except `model` (and
 * `stream_options.include_usage`, forced on so every stream can be billed; the usage chunk is withheld
 * from a client that did not ask for it). Other chat-like dialects (Anthropic Messages, Gemini) reach it
 * through the chat pivot (pivot.ts).
 */
import { GatewayError } from '../../core/errors.js';
import { redactSecrets } from '../../core/render.js';
import type { Usage } from '../../core/usage.js';
import { bodyWithModel, withModel } from '../../lib/json-text.js';
import { type SseEvent, sseData } from '../../lib/sse.js';
import { bearerHeaders, parseJsonObject, passthroughResult, renameModel } from '../shared.js';
import { ChatStream, noStream } from '../stream.js';
import type {
  Exchange,
  ExchangeOptions,
  InboundDialect,
  JsonResult,
  PreparedCall,
  StreamTranslator,
  UpstreamEndpoint,
} from '../types.js';
import { type ChatCompletion, type ChatCompletionChunk, type ChatRequest, openaiUsage } from './wire.js';
import { ImageEditExchange, SpeechExchange, TranscriptionExchange } from './audio.js';
import { ResponsesPassthrough } from './responses.js';
import { GeminiEmbedViaOpenAI } from '../gemini/embed.js';
import { RerankExchange } from '../rerank.js';
import { CompletionsPassthrough } from './completions.js';
import { ModerationsPassthrough } from './moderations.js';

const headers = (ep: UpstreamEndpoint) => bearerHeaders(ep);

/** OpenAI chat in, OpenAI chat out. */
class ChatPassthrough implements Exchange {
  readonly call: PreparedCall;
  private readonly clientWantsUsage: boolean;
  constructor(
    body: Record<string, unknown>,
    ep: UpstreamEndpoint,
    upstreamModel: string,
    private readonly alias: string,
    private readonly pivoted: boolean,
  ) {
    const stream = body.stream === true;
    const so = body.stream_options as Record<string, unknown> | undefined;
    this.clientWantsUsage = so?.include_usage === true;
    // The client's own text with the model swapped in (and include_usage added) when that is exact;
    // otherwise the body serialized again.
    const addUsage = stream && so?.include_usage !== true;
    let sent: string | Buffer | null = withModel(body, upstreamModel, addUsage);
    if (sent === null) {
      const out: Record<string, unknown> = { ...body, model: upstreamModel };
      if (stream) out.stream_options = { ...(so ?? {}), include_usage: true };
      sent = JSON.stringify(out);
    }
    this.call = { path: '/chat/completions', headers: headers(ep), body: sent, stream };
  }
  decodeJson(text: string): JsonResult {
    const j = parseJsonObject(text) as Partial<ChatCompletion>;
    if (!Array.isArray(j.choices))
      throw new GatewayError('upstream_bad_response', 'upstream answer has no choices');
    if (this.pivoted) {
      // The pivot reads the object only: renaming inside the text would be wasted work.
      j.model = this.alias;
      return { body: j, usage: openaiUsage(j.usage) };
    }
    return passthroughResult(text, j, this.alias, openaiUsage(j.usage));
  }
  streamTranslator(): StreamTranslator {
    return new OpenAIStreamPassthrough(this.alias, this.clientWantsUsage);
  }
}

/**
 * The passthrough stream. A chat client gets the upstream's bytes with the model renamed in place
 * (`onEvent`, the hot path); the chat pivot reads the parsed chunks (`items`).
 */
class OpenAIStreamPassthrough extends ChatStream {
  constructor(
    private readonly alias: string,
    private readonly clientWantsUsage: boolean,
  ) {
    super();
  }
  items(ev: SseEvent): readonly ChatCompletionChunk[] {
    if (ev.data === '[DONE]') {
      this.finished = true;
      return [];
    }
    const chunk = this.read(ev);
    this.keepUsage(chunk);
    return [chunk as unknown as ChatCompletionChunk];
  }
  /** One upstream chunk, parsed; an error chunk ends the stream. */
  private read(ev: SseEvent): Record<string, any> {
    const chunk = parseJsonObject(ev.data);
    if (chunk.error) {
      const e = chunk.error as { message?: string };
      throw new GatewayError(
        'upstream_stream_interrupted',
        redactSecrets(String(e.message ?? 'upstream stream error')),
      );
    }
    return chunk;
  }
  private keepUsage(chunk: Record<string, any>): Usage | null {
    const u = openaiUsage(chunk.usage);
    if (u) this.seen = u;
    return u;
  }
  override onEvent(ev: SseEvent): string {
    if (ev.data === '[DONE]') {
      this.finished = true;
      return sseData('[DONE]');
    }
    const chunk = this.read(ev);
    const u = this.keepUsage(chunk);
    if (Array.isArray(chunk.choices)) {
      for (const c of chunk.choices as Array<{ delta?: { content?: unknown } }>) {
        if (typeof c.delta?.content === 'string') this.tally.add(c.delta.content);
      }
    }
    if (!this.clientWantsUsage) {
      if (Array.isArray(chunk.choices) && chunk.choices.length === 0 && u) return '';
      if (chunk.usage === null) {
        // Every chunk of a stream with usage forced on carries "usage":null: cut it in place.
        const at = ev.data.indexOf(',"usage":null');
        if (at >= 0 && ev.data.indexOf(',"usage":null', at + 1) < 0) {
          const text = renameModel(ev.data.slice(0, at) + ev.data.slice(at + 13), chunk.model, this.alias);
          if (text !== null) return sseData(text);
        }
      }
      if ('usage' in chunk) {
        delete chunk.usage;
        if ('model' in chunk) chunk.model = this.alias;
        return sseData(JSON.stringify(chunk));
      }
    }
    // The upstream's bytes with the model renamed in place (no re-serialization per chunk).
    const text = renameModel(ev.data, chunk.model, this.alias);
    if (text !== null) return sseData(text);
    if ('model' in chunk) chunk.model = this.alias;
    return sseData(JSON.stringify(chunk));
  }
}

/** Embeddings pass through; only `model` changes. */
class EmbeddingsPassthrough implements Exchange {
  readonly call: PreparedCall;
  constructor(
    body: Record<string, unknown>,
    ep: UpstreamEndpoint,
    upstreamModel: string,
    private readonly alias: string,
  ) {
    this.call = {
      path: '/embeddings',
      headers: headers(ep),
      body: bodyWithModel(body, upstreamModel),
      stream: false,
    };
  }
  decodeJson(text: string): JsonResult {
    const j = parseJsonObject(text);
    if (!Array.isArray(j.data))
      throw new GatewayError('upstream_bad_response', 'upstream embeddings answer has no data');
    return passthroughResult(text, j, this.alias, openaiUsage(j.usage));
  }
  streamTranslator = noStream('embeddings');
}

export function openaiExchange(
  dialect: InboundDialect,
  body: Record<string, unknown>,
  ep: UpstreamEndpoint,
  upstreamModel: string,
  alias: string,
  opts: ExchangeOptions = {},
): Exchange {
  switch (dialect) {
    case 'openai_chat':
      return new ChatPassthrough(body, ep, upstreamModel, alias, opts.pivoted === true);
    case 'openai_embeddings':
      return new EmbeddingsPassthrough(body, ep, upstreamModel, alias);
    case 'openai_responses':
      return new ResponsesPassthrough(body, upstreamModel, alias, headers(ep));
    case 'openai_speech':
      return new SpeechExchange(body, ep, upstreamModel);
    case 'openai_transcription':
      return new TranscriptionExchange('transcriptions', body, ep, upstreamModel);
    case 'openai_translation':
      return new TranscriptionExchange('translations', body, ep, upstreamModel);
    case 'openai_image_edit':
      return new ImageEditExchange(body, ep, upstreamModel);
    case 'gemini_embed':
      return new GeminiEmbedViaOpenAI(body, ep, upstreamModel);
    case 'openai_completions':
      return new CompletionsPassthrough(body, ep, upstreamModel, alias);
    case 'openai_moderations':
      return new ModerationsPassthrough(body, ep, upstreamModel, alias);
    case 'rerank':
      return new RerankExchange(body, ep, upstreamModel, alias);
    case 'anthropic_count_tokens':
    case 'anthropic_messages':
    case 'gemini':
      throw new GatewayError(
        'unsupported_operation',
        `${dialect} requests reach OpenAI channels through the chat pivot`,
      );
  }
}

export type { ChatRequest };
