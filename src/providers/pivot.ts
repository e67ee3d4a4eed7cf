/**
 * The chat pivot: a client dialect that a channel doesn't speak natively is translated to an OpenAI chat
 * request, served by the channel's own chat exchange (OpenAI, Anthropic or Gemini), and the chat answer is
 * translated back. N inbound dialects x M provider kinds cost N + M translators, not N x M.
 *
 * Streams go through the same way: the inner exchange's OpenAI chunks (its client-side SSE text, read back
 * with the SSE parser) are fed to the dialect's stream writer, which emits the client's own event types.
 * The pivot request always asks for the usage chunk, so the client's final event can carry usage.
 */
import { GatewayError } from '../core/errors.js';
import type { Usage } from '../core/usage.js';
import { SseParser, type SseEvent } from '../lib/sse.js';
import type { ChatCompletion, ChatCompletionChunk } from './openai/wire.js';
import type { Exchange, JsonResult, PreparedCall, StreamTranslator } from './types.js';

/** Writes one client dialect's stream from OpenAI chat chunks. */
export interface PivotStream {
  /** The client's frames for one chat chunk ('' for none). */
  push(chunk: ChatCompletionChunk): string;
  /** The chat stream ended with its terminator: the client's closing frames (usage known by now). */
  finish(usage: Usage | null): string;
  /** Text the client has been sent (for a usage estimate when the upstream never reported one). */
  readonly emittedText: string;
}

/** One client dialect's side of the pivot for one request. */
export interface ChatPivot {
  /** The request as OpenAI chat (model still the client's: the inner exchange sets the upstream one). */
  readonly chat: Record<string, unknown>;
  /** The whole chat answer in the client's dialect. */
  fromChat(c: ChatCompletion, usage: Usage | null): unknown;
  stream(): PivotStream;
  errorFrame(err: GatewayError): string;
}

/** An exchange in the client's dialect, built around the channel's chat exchange. */
export class PivotExchange implements Exchange {
  readonly call: PreparedCall;
  constructor(
    private readonly pivot: ChatPivot,
    private readonly inner: Exchange,
  ) {
    this.call = inner.call;
  }

  decodeJson(text: string): JsonResult {
    const r = this.inner.decodeJson(text);
    return { body: this.pivot.fromChat(r.body as ChatCompletion, r.usage), usage: r.usage };
  }

  streamTranslator(): StreamTranslator {
    const inner = this.inner.streamTranslator();
    const out = this.pivot.stream();
    const parser = new SseParser();
    let finished = false;
    const relay = (text: string): string => {
      if (text === '') return '';
      let s = '';
      for (const ev of parser.push(text)) s += step(ev);
      return s;
    };
    const step = (ev: SseEvent): string => {
      if (finished) return '';
      if (ev.data === '[DONE]') {
        finished = true;
        return out.finish(inner.usage());
      }
      let chunk: ChatCompletionChunk & { error?: { message?: string } };
      try {
        chunk = JSON.parse(ev.data) as ChatCompletionChunk & { error?: { message?: string } };
      } catch {
        throw new GatewayError('upstream_bad_response', 'upstream stream carried a malformed chunk');
      }
      if (chunk.error)
        throw new GatewayError(
          'upstream_stream_interrupted',
          String(chunk.error.message ?? 'upstream stream error'),
        );
      return out.push(chunk);
    };
    return {
      onEvent: (ev) => relay(inner.onEvent(ev)),
      end: () => {
        let s = relay(inner.end());
        if (inner.done && !finished) {
          finished = true;
          s += out.finish(inner.usage());
        }
        return s;
      },
      get done() {
        return inner.done;
      },
      usage: () => inner.usage(),
      get emittedText() {
        return out.emittedText;
      },
    };
  }

  errorFrame(err: GatewayError): string {
    return this.pivot.errorFrame(err);
  }
}

/** A pivot request streams with the usage chunk on, whatever the client asked. */
export function withUsage(chat: Record<string, unknown>): Record<string, unknown> {
  if (chat.stream === true) chat.stream_options = { include_usage: true };
  return chat;
}
