import type { GatewayError } from '../core/errors.js';
import type { Usage } from '../core/usage.js';
import type { SseEvent } from '../lib/sse.js';

/** 'jobs': a submit/poll media vendor (images, video, music); it serves no chat dialect. */
export type ProviderKind = 'openai' | 'anthropic' | 'jobs';

/** The wire format a client spoke to Anima. Answers go back in the same one. */
export type InboundDialect = 'openai_chat' | 'anthropic_messages' | 'openai_embeddings';

/** What a provider needs to address one channel (config's Channel satisfies it). */
export interface UpstreamEndpoint {
  code: string;
  provider: ProviderKind;
  baseUrl: string;
  credential: string;
  headers: Record<string, string>;
}

export interface PreparedCall {
  path: string;
  headers: Record<string, string>;
  body: string;
  stream: boolean;
}

export interface JsonResult {
  /** The answer in the inbound dialect, model name already the alias's. */
  body: unknown;
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
  streamTranslator(): StreamTranslator;
  /** An SSE frame that ends the client's stream with an error, in the client's dialect. */
  errorFrame(err: GatewayError): string;
}

/** Which operations a provider kind can serve (the router refuses the rest up front with a 400). */
export const CAPABILITIES: Record<ProviderKind, ReadonlySet<InboundDialect>> = {
  openai: new Set<InboundDialect>(['openai_chat', 'anthropic_messages', 'openai_embeddings']),
  anthropic: new Set<InboundDialect>(['openai_chat', 'anthropic_messages']),
  jobs: new Set<InboundDialect>(),
};
