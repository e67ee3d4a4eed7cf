/**
 * An Anthropic channel. Anthropic-format requests pass through untouched except `model`; OpenAI chat
 * requests are translated both ways (streams included). Embeddings are not an Anthropic capability.
 */
import { GatewayError } from '../../core/errors.js';
import { redactSecrets } from '../../core/render.js';
import type { Usage } from '../../core/usage.js';
import { bodyWithModel } from '../../lib/json-text.js';
import type { SseEvent } from '../../lib/sse.js';
import { parseJsonObject, passthroughResult } from '../shared.js';
import { ChatStream, type Frame, FrameStream } from '../stream.js';
import type {
  Exchange,
  InboundDialect,
  JsonResult,
  PreparedCall,
  StreamTranslator,
  UpstreamEndpoint,
} from '../types.js';
import type { ChatCompletionChunk, ChatRequest } from '../openai/wire.js';
import { AnthropicToOpenAIStream, anthropicToOpenAIResponse, openaiToAnthropicRequest } from './outbound.js';
import { type Message, anthropicUsage } from './wire.js';

export const ANTHROPIC_VERSION = '2023-06-01';
/** Anthropic requires max_tokens; an OpenAI request that names none gets this. */
export const DEFAULT_MAX_TOKENS = 4096;

function headers(ep: UpstreamEndpoint, clientBeta?: string): Record<string, string> {
  const h: Record<string, string> = {
    'content-type': 'application/json',
    'anthropic-version': ANTHROPIC_VERSION,
    ...ep.headers,
  };
  if (ep.credential) h['x-api-key'] = ep.credential;
  if (clientBeta && !h['anthropic-beta']) h['anthropic-beta'] = clientBeta;
  return h;
}

function streamError(data: Record<string, any>): GatewayError {
  const e = (data.error ?? {}) as { type?: string; message?: string };
  const code = e.type === 'overloaded_error' ? 'upstream_overloaded' : 'upstream_stream_interrupted';
  return new GatewayError(code, redactSecrets(String(e.message ?? 'upstream stream error')));
}

/** Anthropic in, Anthropic out. */
class MessagesPassthrough implements Exchange {
  readonly call: PreparedCall;
  constructor(
    body: Record<string, unknown>,
    ep: UpstreamEndpoint,
    upstreamModel: string,
    private readonly alias: string,
    beta?: string,
  ) {
    this.call = {
      path: '/v1/messages',
      headers: headers(ep, beta),
      body: bodyWithModel(body, upstreamModel),
      stream: body.stream === true,
    };
  }
  decodeJson(text: string): JsonResult {
    const j = parseJsonObject(text);
    if (j.type !== 'message' || !Array.isArray(j.content))
      throw new GatewayError('upstream_bad_response', 'upstream answer is not a message');
    return passthroughResult(text, j, this.alias, anthropicUsage(j.usage));
  }
  streamTranslator(): StreamTranslator {
    return new MessagesStream(this.alias);
  }
}

/** Anthropic events relayed with the model renamed; usage gathered from message_start and message_delta. */
class MessagesStream extends FrameStream {
  private input: Usage | null = null;
  private output = 0;
  constructor(private readonly alias: string) {
    super();
  }
  items(ev: SseEvent): readonly Frame[] {
    const data = parseJsonObject(ev.data);
    const name = ev.event || String(data.type ?? '');
    switch (name) {
      case 'error':
        throw streamError(data);
      case 'message_start':
        if (data.message) {
          data.message.model = this.alias;
          this.input = anthropicUsage(data.message.usage);
          this.output = this.input.outputTokens;
        }
        break;
      case 'content_block_delta':
        if (typeof data.delta?.text === 'string') this.tally.add(data.delta.text);
        break;
      case 'message_delta':
        if (data.usage) {
          const u = anthropicUsage(data.usage);
          // message_delta may carry only output_tokens: input tokens from message_start must survive.
          if (typeof data.usage.output_tokens === 'number') this.output = u.outputTokens;
          if (typeof data.usage.input_tokens === 'number') this.input = { ...u, outputTokens: 0 };
        }
        break;
      case 'message_stop':
        this.finished = true;
        break;
    }
    return [{ event: name, data }];
  }
  override usage(): Usage | null {
    return this.input ? { ...this.input, outputTokens: this.output } : null;
  }
}

/** OpenAI chat in, served by an Anthropic channel. */
class ChatViaAnthropic implements Exchange {
  readonly call: PreparedCall;
  private readonly includeUsage: boolean;
  constructor(
    body: Record<string, unknown>,
    ep: UpstreamEndpoint,
    upstreamModel: string,
    private readonly alias: string,
  ) {
    const req = openaiToAnthropicRequest(body as ChatRequest, upstreamModel, {
      defaultMaxTokens: DEFAULT_MAX_TOKENS,
    });
    this.includeUsage =
      (body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true;
    this.call = {
      path: '/v1/messages',
      headers: headers(ep),
      body: JSON.stringify(req),
      stream: body.stream === true,
    };
  }
  decodeJson(text: string): JsonResult {
    const j = parseJsonObject(text);
    if (j.type !== 'message' || !Array.isArray(j.content))
      throw new GatewayError('upstream_bad_response', 'upstream answer is not a message');
    return { body: anthropicToOpenAIResponse(j as Message, this.alias), usage: anthropicUsage(j.usage) };
  }
  streamTranslator(): StreamTranslator {
    return new ChatFromMessagesStream(this.alias, this.includeUsage);
  }
}

/** Anthropic events as OpenAI chat chunks. */
class ChatFromMessagesStream extends ChatStream {
  private readonly t: AnthropicToOpenAIStream;
  constructor(alias: string, includeUsage: boolean) {
    super();
    this.t = new AnthropicToOpenAIStream({ model: alias, includeUsage });
  }
  items(ev: SseEvent): readonly ChatCompletionChunk[] {
    const data = parseJsonObject(ev.data);
    const name = ev.event || String(data.type ?? '');
    if (name === 'error') throw streamError(data);
    const chunks = this.t.push(name, data) as ChatCompletionChunk[];
    if (name === 'message_stop') this.finished = true;
    return chunks;
  }
  override usage(): Usage | null {
    return this.t.usage();
  }
}

export function anthropicExchange(
  dialect: InboundDialect,
  body: Record<string, unknown>,
  ep: UpstreamEndpoint,
  upstreamModel: string,
  alias: string,
  beta?: string,
): Exchange {
  switch (dialect) {
    case 'anthropic_messages':
      return new MessagesPassthrough(body, ep, upstreamModel, alias, beta);
    case 'openai_chat':
      return new ChatViaAnthropic(body, ep, upstreamModel, alias);
    default:
      throw new GatewayError('unsupported_operation', `Anthropic channels do not serve ${dialect} natively`);
  }
}
