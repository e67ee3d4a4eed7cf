/**
 * A Bedrock runtime channel: OpenAI chat (and, through the chat pivot, every other chat-like dialect) served
 * by the Converse API (`POST /model/{modelId}/converse`) or ConverseStream (`…/converse-stream`, a binary
 * `application/vnd.amazon.eventstream`). Anthropic models on Bedrock (`anthropic.claude-…-v1:0`, inference
 * profiles `us.anthropic.…`) go the same way: Converse is Bedrock's model-neutral chat API.
 *
 * The call is signed (SigV4, sign.ts) just before it goes out, by the declaration's `authorize`: a
 * signature is dated, and each attempt is its own call. Credential format and region: sign.ts.
 */
import { GatewayError } from '../../core/errors.js';
import type { SseEvent } from '../../lib/sse.js';
import { UpstreamFailureError, failure } from '../classify.js';
import type { ChatCompletionChunk, ChatRequest } from '../openai/wire.js';
import { parseJsonObject } from '../shared.js';
import { ChatStream } from '../stream.js';
import type {
  Exchange,
  InboundDialect,
  JsonResult,
  PreparedCall,
  StreamDecoder,
  StreamTranslator,
  UpstreamEndpoint,
} from '../types.js';
import { streamException } from './classify.js';
import { EventStreamDecoder, EVENT_STREAM_CONTENT_TYPE } from './eventstream.js';
import {
  ConverseToOpenAIStream,
  converseToOpenAIResponse,
  isConverseResponse,
  openaiToConverseRequest,
} from './outbound.js';
import { conversePath, parseCredential, resolveRegion, signCall } from './sign.js';
import { bedrockUsage } from './wire.js';

/** OpenAI chat in, Converse out. */
class ChatViaConverse implements Exchange {
  readonly call: PreparedCall;
  private readonly includeUsage: boolean;
  constructor(
    body: Record<string, unknown>,
    ep: UpstreamEndpoint,
    upstreamModel: string,
    private readonly alias: string,
  ) {
    const stream = body.stream === true;
    const req = openaiToConverseRequest(body as ChatRequest);
    this.includeUsage =
      (body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true;
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      accept: stream ? EVENT_STREAM_CONTENT_TYPE : 'application/json',
    };
    for (const k in ep.headers) headers[k.toLowerCase()] = ep.headers[k]!;
    this.call = { path: conversePath(upstreamModel, stream), headers, body: JSON.stringify(req), stream };
  }

  decodeJson(text: string): JsonResult {
    const j = parseJsonObject(text);
    if (!isConverseResponse(j))
      throw new GatewayError('upstream_bad_response', 'upstream answer is not a Converse response');
    return { body: converseToOpenAIResponse(j, this.alias), usage: bedrockUsage(j.usage) };
  }

  streamDecoder(): StreamDecoder {
    return new EventStreamDecoder();
  }

  streamTranslator(): StreamTranslator {
    return new ChatFromConverseStream(this.alias, this.includeUsage);
  }
}

/** ConverseStream messages (decoded by EventStreamDecoder) as OpenAI chat chunks. */
export class ChatFromConverseStream extends ChatStream {
  private readonly t: ConverseToOpenAIStream;
  constructor(alias: string, includeUsage: boolean) {
    super();
    this.t = new ConverseToOpenAIStream(alias, includeUsage);
  }
  items(ev: SseEvent): readonly ChatCompletionChunk[] {
    if (ev.event.startsWith('exception:')) throw streamException(ev.event.slice(10), ev.data);
    if (ev.event.startsWith('error:'))
      throw new GatewayError(
        'upstream_stream_interrupted',
        `upstream stream error: ${ev.event.slice(6)} ${ev.data}`,
      );
    const chunks = this.t.push(ev.event, parseJsonObject(ev.data));
    if (this.t.done) {
      this.finished = true;
      this.seen = this.t.usage();
    }
    return chunks;
  }
}

export function bedrockExchange(
  dialect: InboundDialect,
  body: Record<string, unknown>,
  ep: UpstreamEndpoint,
  upstreamModel: string,
  alias: string,
): Exchange {
  if (dialect === 'openai_chat') return new ChatViaConverse(body, ep, upstreamModel, alias);
  throw new GatewayError('unsupported_operation', `Bedrock channels do not serve ${dialect} natively`);
}

/**
 * The call signed with the channel's AWS credentials (the registry's `authorize` hook, run by the relay
 * right before each attempt). A credential or region that can't be used is the channel's setup, not the
 * request's fault: the channel's credential is taken out until an operator fixes it.
 */
export async function bedrockAuthorize(ep: UpstreamEndpoint, call: PreparedCall): Promise<PreparedCall> {
  let auth, region;
  try {
    auth = parseCredential(ep.credential);
    region = resolveRegion(auth, ep.baseUrl);
  } catch (e) {
    if (!(e instanceof GatewayError)) throw e;
    throw new UpstreamFailureError(failure('auth_failed', e.message, { credential: 'invalid' }));
  }
  return signCall(call, ep, auth, region);
}
