/**
 * The stream translators' shared half. A translator turns each upstream SSE event into typed items for
 * the client (objects, never text) and keeps the bookkeeping the relay reads: `done` (the upstream's own
 * end-of-stream marker was seen), `usage()` and `emittedText`. Items become SSE text in one place, at the
 * edge (`onEvent`/`end`), in the client dialect's framing; the chat pivot (pivot.ts) reads a chat
 * translator's items directly, so a pivoted stream is parsed once and serialized once.
 *
 * The OpenAI chat passthrough overrides `onEvent` to relay the upstream's bytes with the model renamed in
 * place (the hot path): its items are only for the pivot.
 */
import { GatewayError } from '../core/errors.js';
import type { Usage } from '../core/usage.js';
import { type SseEvent, sseData, sseEvent } from '../lib/sse.js';
import type { ChatCompletionChunk } from './openai/wire.js';
import { TextTally } from './shared.js';
import type { StreamTranslator } from './types.js';

/** One client SSE event before serialization: `data` is an object, or text already serialized. */
export interface Frame {
  /** The event name; none for a data-only event. */
  readonly event?: string;
  readonly data: object | string;
}

/** A dialect's SSE framing of one frame. */
export type FrameWriter = (f: Frame) => string;

const NONE: readonly never[] = [];

/** `event:`/`data:` lines (OpenAI, Anthropic, Responses). */
export const writeSse: FrameWriter = (f) => {
  const data = typeof f.data === 'string' ? f.data : JSON.stringify(f.data);
  return f.event === undefined ? sseData(data) : sseEvent(f.event, data);
};

/** Google's framing: data only, CRLF line ends. */
export const writeGemini: FrameWriter = (f) =>
  `data: ${typeof f.data === 'string' ? f.data : JSON.stringify(f.data)}\r\n\r\n`;

/** The bookkeeping every translator holds; a subclass states how one event becomes items. */
export abstract class StreamBase<T> implements StreamTranslator {
  /** Set by the subclass when the upstream's end-of-stream marker arrives. */
  protected finished = false;
  /** The latest usage the upstream reported. */
  protected seen: Usage | null = null;
  protected readonly tally = new TextTally();

  get done(): boolean {
    return this.finished;
  }
  get emittedText(): string {
    return this.tally.text;
  }
  usage(): Usage | null {
    return this.seen;
  }

  /** The client's items for one upstream event (none, one or several). */
  abstract items(ev: SseEvent): readonly T[];
  /** Items once the upstream closed after its terminator. */
  closing(): readonly T[] {
    return NONE;
  }
  /** The edge: items as the client's SSE text. */
  protected abstract write(items: readonly T[]): string;

  onEvent(ev: SseEvent): string {
    return this.write(this.items(ev));
  }
  end(): string {
    return this.write(this.closing());
  }
}

/** A translator whose items are frames, written with one dialect's framing. */
export abstract class FrameStream extends StreamBase<Frame> {
  constructor(private readonly writer: FrameWriter = writeSse) {
    super();
  }
  protected write(frames: readonly Frame[]): string {
    let s = '';
    for (const f of frames) s += this.writer(f);
    return s;
  }
}

/**
 * A translator whose items are OpenAI chat chunks (an OpenAI chat client, or the chat pivot reading
 * `items`). The edge counts the text it sends and closes with `data: [DONE]` once the stream is done.
 */
export abstract class ChatStream extends StreamBase<ChatCompletionChunk> {
  private terminated = false;
  protected write(chunks: readonly ChatCompletionChunk[]): string {
    let s = '';
    for (const c of chunks) {
      for (const ch of c.choices ?? []) {
        const text: unknown = ch.delta?.content;
        if (typeof text === 'string') this.tally.add(text);
      }
      s += sseData(JSON.stringify(c));
    }
    if (this.finished && !this.terminated) {
      this.terminated = true;
      s += sseData('[DONE]');
    }
    return s;
  }
}

/** The stream of an exchange that answers in whole JSON only (embeddings, audio, images). */
export function noStream(what: string): () => StreamTranslator {
  return () => {
    throw new GatewayError('unsupported_operation', `${what} do not stream`);
  };
}
