/**
 * The chat pivot: a client dialect that a channel doesn't speak natively is translated to an OpenAI chat
 * request, served by the channel's own chat exchange (OpenAI, Anthropic or Gemini), and the chat answer is
 * translated back. N inbound dialects x M provider kinds cost N + M translators, not N x M.
 *
 * Streams go through the same way: the inner exchange's chat translator hands over its parsed chunks
 * (`ChatStream.items`, no SSE text in between), the dialect's stream writer turns them into the client's
 * frames, and they are serialized once, in the client's framing. The pivot request always asks for the
 * usage chunk, so the client's final event can carry usage.
 */
import { GatewayError } from '../core/errors.js';
import type { Usage } from '../core/usage.js';
import type { SseEvent } from '../lib/sse.js';
import type { ChatCompletion, ChatCompletionChunk } from './openai/wire.js';
import { ChatStream, type Frame, FrameStream, type FrameWriter } from './stream.js';
import type { Exchange, JsonResult, PreparedCall, StreamDecoder, StreamTranslator } from './types.js';

/** Writes one client dialect's stream from OpenAI chat chunks. */
export interface PivotStream {
  /** The client's frames for one chat chunk (none, one or several). */
  push(chunk: ChatCompletionChunk): readonly Frame[];
  /** The chat stream ended with its terminator: the client's closing frames (usage known by now). */
  finish(usage: Usage | null): readonly Frame[];
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
  /** The client's SSE framing (default: `event:`/`data:` lines). */
  readonly writer?: FrameWriter;
}

/** An exchange in the client's dialect, built around the channel's chat exchange. */
export class PivotExchange implements Exchange {
  readonly call: PreparedCall;
  /** The inner exchange's stream framing, when it is not SSE (Bedrock). */
  readonly streamDecoder?: () => StreamDecoder;
  constructor(
    private readonly pivot: ChatPivot,
    private readonly inner: Exchange,
  ) {
    this.call = inner.call;
    if (inner.streamDecoder) this.streamDecoder = () => inner.streamDecoder!();
  }

  decodeJson(text: string): JsonResult {
    const r = this.inner.decodeJson(text);
    return { body: this.pivot.fromChat(r.body as ChatCompletion, r.usage), usage: r.usage };
  }

  streamTranslator(): StreamTranslator {
    const inner = this.inner.streamTranslator();
    if (!(inner instanceof ChatStream))
      throw new GatewayError(
        'internal_error',
        'a chat exchange answered with a stream that is not chat chunks',
      );
    return new PivotStreamTranslator(inner, this.pivot.stream(), this.pivot.writer);
  }
}

class PivotStreamTranslator extends FrameStream {
  private ended = false;
  constructor(
    private readonly inner: ChatStream,
    private readonly out: PivotStream,
    writer?: FrameWriter,
  ) {
    super(writer);
  }
  override get done(): boolean {
    return this.inner.done;
  }
  override get emittedText(): string {
    return this.out.emittedText;
  }
  override usage(): Usage | null {
    return this.inner.usage();
  }
  items(ev: SseEvent): readonly Frame[] {
    return this.ended ? [] : this.relay(this.inner.items(ev));
  }
  override closing(): readonly Frame[] {
    return this.ended ? [] : this.relay(this.inner.closing());
  }
  private relay(chunks: readonly ChatCompletionChunk[]): readonly Frame[] {
    const done = this.inner.done;
    if (chunks.length === 1 && !done) return this.out.push(chunks[0]!); // the common case: no copy
    const frames: Frame[] = [];
    for (const c of chunks) for (const f of this.out.push(c)) frames.push(f);
    if (done) {
      this.ended = true;
      for (const f of this.out.finish(this.inner.usage())) frames.push(f);
    }
    return frames;
  }
}

/** A pivot request streams with the usage chunk on, whatever the client asked. */
export function withUsage(chat: Record<string, unknown>): Record<string, unknown> {
  if (chat.stream === true) chat.stream_options = { include_usage: true };
  return chat;
}
