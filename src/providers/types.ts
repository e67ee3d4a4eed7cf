import type { GatewayError } from '../core/errors.js';
import type { Usage } from '../core/usage.js';
import type { SseEvent } from '../lib/sse.js';

/**
 * The provider kinds. Each has exactly one declaration in registry.ts (the compiler holds the table to this
 * union); everything else (validation, OpenAPI, the console) reads the registry.
 */
export type ProviderKind = 'openai' | 'anthropic' | 'jobs' | 'gemini' | 'openai_compatible';

/** The wire format a client spoke to Anima. Answers go back in the same one. */
export type InboundDialect =
  | 'openai_chat'
  | 'anthropic_messages'
  | 'openai_embeddings'
  | 'openai_responses'
  | 'gemini'
  | 'gemini_embed'
  | 'openai_speech'
  | 'openai_transcription'
  | 'openai_translation'
  | 'openai_image_edit';

/** Dialects whose requests are chat-like: they translate to and from OpenAI chat (the pivot). */
export const CHAT_LIKE: ReadonlySet<InboundDialect> = new Set([
  'openai_chat',
  'anthropic_messages',
  'openai_responses',
  'gemini',
]);

/** What a provider needs to address one channel (config's Channel satisfies it). */
export interface UpstreamEndpoint {
  code: string;
  provider: ProviderKind;
  baseUrl: string;
  credential: string;
  headers: Record<string, string>;
  /** OpenAI channels: the upstream has its own Responses API (default true). */
  nativeResponses?: boolean;
  /** An undici dispatcher for calls made with fetch (media): the outbound policy's connector. */
  dispatcher?: unknown;
}

export interface PreparedCall {
  path: string;
  headers: Record<string, string>;
  /** JSON text, or raw bytes (a multipart upload). */
  body: string | Uint8Array;
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
}

/** A whole answer that is not (only) JSON: a transcript as text, srt or vtt. */
export interface BodyResult {
  payload: string;
  contentType: string;
  usage: Usage | null;
}

/**
 * Turns the upstream's SSE events into the client's SSE text, one event at a time, while keeping the
 * usage it has seen. Returns '' when an event yields nothing for the client.
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

/** One attempt's conversation with one channel, in one dialect pairing. */
export interface Exchange {
  readonly call: PreparedCall;
  decodeJson(text: string): JsonResult;
  /** When present, decodes a whole answer of any content type (used instead of decodeJson). */
  decodeBody?(text: string, contentType: string): BodyResult;
  /** For a `bytes` call: what the answer is billed at (known from the request, e.g. characters spoken). */
  bytesUsage?(): Usage;
  streamTranslator(): StreamTranslator;
  /** An SSE frame that ends the client's stream with an error, in the client's dialect. */
  errorFrame(err: GatewayError): string;
}

// The per-kind tables are derived from the provider registry; re-exported here where callers have always found them.
export { CAPABILITIES, NATIVE, PIVOTED } from './registry.js';
