/**
 * The `application/vnd.amazon.eventstream` framing ConverseStream answers in, decoded incrementally: bytes
 * in as they arrive (split anywhere), whole messages out. Each message is
 * `total length (4) | headers length (4) | prelude CRC (4) | headers | payload | message CRC (4)`
 * (https://docs.aws.amazon.com/transcribe/latest/dg/streaming-setting-up.html#streaming-event-stream);
 * @smithy/eventstream-codec checks both CRCs and parses the headers of one whole message, this class
 * finds the message boundaries.
 *
 * A message becomes an SseEvent so the stream translators keep one shape: `:message-type event` ->
 * `{event: <:event-type>, data: <payload text>}`; `:message-type exception` -> `{event:
 * 'exception:<:exception-type>', data}`; `:message-type error` -> `{event: 'error:<:error-code>', data:
 * <:error-message>}`.
 */
import { EventStreamCodec } from '@smithy/eventstream-codec';
import { fromUtf8, toUtf8 } from '@smithy/util-utf8';
import { GatewayError } from '../../core/errors.js';
import type { SseEvent } from '../../lib/sse.js';
import type { StreamDecoder } from '../types.js';

export const EVENT_STREAM_CONTENT_TYPE = 'application/vnd.amazon.eventstream';

/** Prelude (12) + message CRC (4): the smallest valid message. */
const MIN_MESSAGE = 16;
/** The framing allows 16 MiB per message; anything larger is not this format. */
const MAX_MESSAGE = 16 * 1024 * 1024;

const codec = new EventStreamCodec(toUtf8, fromUtf8);
const text = new TextDecoder();

function header(h: Record<string, { type: string; value: unknown }>, name: string): string {
  const v = h[name]?.value;
  return typeof v === 'string' ? v : '';
}

export class EventStreamDecoder implements StreamDecoder {
  readonly contentType = EVENT_STREAM_CONTENT_TYPE;
  private parts: Uint8Array[] = [];
  private size = 0;
  /** The length of the message being collected, once its prelude is in (0: not known yet). */
  private need = 0;

  /** Bytes received that don't make a whole message yet (a stream ending here was cut mid-message). */
  get pending(): boolean {
    return this.size > 0;
  }

  push(chunk: Uint8Array): SseEvent[] {
    if (chunk.length > 0) {
      this.parts.push(chunk);
      this.size += chunk.length;
    }
    const out: SseEvent[] = [];
    // A message arriving in many small chunks is joined once, when it is whole, not at every chunk.
    while (this.size >= 4 && this.size >= this.need) {
      const buf = this.flat();
      const total = new DataView(buf.buffer, buf.byteOffset, 4).getUint32(0, false);
      if (total < MIN_MESSAGE || total > MAX_MESSAGE)
        throw new GatewayError(
          'upstream_bad_response',
          `upstream sent an event-stream frame of ${total} bytes`,
        );
      if (this.size < total) {
        this.need = total;
        break;
      }
      this.need = 0;
      out.push(this.message(buf.subarray(0, total)));
      const rest = buf.subarray(total);
      this.parts = rest.length ? [rest] : [];
      this.size = rest.length;
    }
    return out;
  }

  /** The buffered bytes as one array (concatenated only when a message spans several chunks). */
  private flat(): Uint8Array {
    if (this.parts.length > 1) this.parts = [Buffer.concat(this.parts)];
    return this.parts[0]!;
  }

  private message(bytes: Uint8Array): SseEvent {
    let m: ReturnType<EventStreamCodec['decode']>;
    try {
      m = codec.decode(bytes);
    } catch (e) {
      throw new GatewayError(
        'upstream_bad_response',
        `upstream sent a broken event-stream frame: ${(e as Error).message}`,
      );
    }
    const h = m.headers as Record<string, { type: string; value: unknown }>;
    const kind = header(h, ':message-type');
    if (kind === 'exception')
      return { event: `exception:${header(h, ':exception-type')}`, data: text.decode(m.body) };
    if (kind === 'error')
      return { event: `error:${header(h, ':error-code')}`, data: header(h, ':error-message') };
    return { event: header(h, ':event-type'), data: text.decode(m.body) };
  }
}

/** One event-stream message (the fake upstream and tests write streams with it). */
export function encodeEvent(headers: Record<string, string>, payload: string | Uint8Array): Uint8Array {
  const hs: Record<string, { type: 'string'; value: string }> = {};
  for (const k in headers) hs[k] = { type: 'string', value: headers[k]! };
  return codec.encode({ headers: hs, body: typeof payload === 'string' ? fromUtf8(payload) : payload });
}
