import type { Usage } from '../core/usage.js';
import type { FormData } from 'undici';
import type { SseEvent } from '../lib/sse.js';

import type { ProviderKind, VertexSettings } from '../core/model.js';
export type { ProviderKind };

/** Client dialects and their facts live in the dialect registry; re-exported for the provider modules. */
export { CHAT_LIKE, type InboundDialect } from '../core/dialects.js';

/** What a provider needs to address one channel (config's Channel satisfies it). */
export interface UpstreamEndpoint {
  code: string;
  provider: ProviderKind;
  baseUrl: string;
  credential: string;
  headers: Record<string, string>;
  /** OpenAI channels: the upstream has its own Responses API (default true). */
  nativeResponses?: boolean;
  /** Azure deployments channels: the `api-version` query parameter (default: the GA version, azure.ts). */
  apiVersion?: string;
  /** Vertex AI channels: project, location, publisher (providers/vertex/exchange.ts). */
  vertex?: VertexSettings;
  /** An undici dispatcher for calls made with fetch (media): the outbound policy's connector. */
  dispatcher?: unknown;
}

export interface PreparedCall {
  path: string;
  headers: Record<string, string>;
  /** JSON text, raw bytes, or a multipart upload (undici encodes it, and sets the content type). */
  body: string | Uint8Array | FormData;
  /** The answer is an event stream (SSE). */
  stream: boolean;
  /** The answer is bytes relayed as they come (audio): neither JSON nor SSE. */
  bytes?: boolean;
}

export interface JsonResult {
  /** The answer in the inbound dialect, model name already the alias's. */
  body: unknown;
  usage: Usage | null;
  /** The same answer as JSON text, when the exchange has it without re-serializing `body` (a passthrough). */
  text?: string;
  /** Headers the answer carries besides the gateway's own (e.g. `anima-estimate: true`). */
  headers?: Record<string, string>;
  /** The usage was counted locally, not reported by the upstream (kept on the booking). */
  estimated?: boolean;
}

/** A whole answer that is not (only) JSON: a transcript as text, srt or vtt. */
export interface BodyResult {
  payload: string;
  contentType: string;
  usage: Usage | null;
}

/**
 * Turns the upstream's SSE events into the client's SSE text, one event at a time, while keeping the
 * usage it has seen. Returns '' when an event yields nothing for the client. Built on the bases in
 * stream.ts: a translator states how one event becomes typed items; the base keeps this bookkeeping and
 * serializes at the edge.
 */
export interface StreamTranslator {
  onEvent(ev: SseEvent): string;
  /** The upstream closed after its terminator: any closing frames for the client. */
  end(): string;
  /** True once the upstream's own end-of-stream marker was seen ([DONE] / message_stop). */
  readonly done: boolean;
  usage(): Usage | null;
  /** Text the client has received so far (for a usage estimate when the upstream never reported one). */
  readonly emittedText: string;
}

/**
 * Turns a stream's bytes into events, for an upstream whose stream is not SSE (Bedrock's binary
 * `application/vnd.amazon.eventstream`): the relay feeds it instead of its SSE parser.
 */
export interface StreamDecoder {
  /** The content type the upstream's stream must have. */
  readonly contentType: string;
  push(chunk: Uint8Array): SseEvent[];
}

/** What an exchange is built with besides the request and the channel. */
export interface ExchangeOptions {
  /** The Anthropic client's `anthropic-beta` header, passed on to an Anthropic channel. */
  anthropicBeta?: string;
  /** Built for the chat pivot: the answer is read as an object only, never relayed as the upstream's text. */
  pivoted?: boolean;
}

/** One attempt's conversation with one channel, in one dialect pairing. */
export interface Exchange {
  readonly call: PreparedCall;
  /**
   * Answered here, without calling the upstream (a token count estimated locally): the relay decodes
   * `decodeJson('')` as the answer and skips the transport and the breaker.
   */
  readonly local?: boolean;
  decodeJson(text: string): JsonResult;
  /** When present, decodes a whole answer of any content type (used instead of decodeJson). */
  decodeBody?(text: string, contentType: string): BodyResult;
  /** For a `bytes` call: what the answer is billed at (known from the request, e.g. characters spoken). */
  bytesUsage?(): Usage;
  streamTranslator(): StreamTranslator;
  /** The stream's framing when it is not SSE (absent: SSE). */
  streamDecoder?(): StreamDecoder;
}

// The per-kind tables are derived from the provider registry; re-exported here where callers have always found them.
export { CAPABILITIES, NATIVE, PIVOTED } from './registry.js';
