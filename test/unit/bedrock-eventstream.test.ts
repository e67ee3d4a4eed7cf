/**
 * The binary event stream ConverseStream answers in, decoded from bytes split anywhere: every split point
 * of a multi-frame buffer, random multi-way splits, frames with and without payloads; a broken CRC or an
 * impossible length is a bad upstream response, never a hang or a wrong event.
 */
import { EventStreamCodec } from '@smithy/eventstream-codec';
import { fromUtf8, toUtf8 } from '@smithy/util-utf8';
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/core/errors.js';
import { EventStreamDecoder, encodeEvent } from '../../src/providers/bedrock/eventstream.js';
import type { SseEvent } from '../../src/lib/sse.js';

const ev = (type: string, payload: object) =>
  encodeEvent(
    { ':event-type': type, ':content-type': 'application/json', ':message-type': 'event' },
    JSON.stringify(payload),
  );

const FRAMES: Uint8Array[] = [
  ev('messageStart', { role: 'assistant', p: 'abc' }),
  ev('contentBlockDelta', { contentBlockIndex: 0, delta: { text: 'héllo wörld, ünïcode ✓ 🚀' }, p: 'x' }),
  ev('contentBlockDelta', { contentBlockIndex: 0, delta: { text: '' } }),
  ev('contentBlockStop', { contentBlockIndex: 0 }),
  ev('messageStop', { stopReason: 'end_turn' }),
  ev('metadata', { usage: { inputTokens: 12, outputTokens: 7, totalTokens: 19 }, metrics: { latencyMs: 3 } }),
  encodeEvent(
    {
      ':exception-type': 'throttlingException',
      ':content-type': 'application/json',
      ':message-type': 'exception',
    },
    '{"message":"Too many requests"}',
  ),
];

const EXPECTED: SseEvent[] = [
  { event: 'messageStart', data: '{"role":"assistant","p":"abc"}' },
  {
    event: 'contentBlockDelta',
    data: '{"contentBlockIndex":0,"delta":{"text":"héllo wörld, ünïcode ✓ 🚀"},"p":"x"}',
  },
  { event: 'contentBlockDelta', data: '{"contentBlockIndex":0,"delta":{"text":""}}' },
  { event: 'contentBlockStop', data: '{"contentBlockIndex":0}' },
  { event: 'messageStop', data: '{"stopReason":"end_turn"}' },
  {
    event: 'metadata',
    data: '{"usage":{"inputTokens":12,"outputTokens":7,"totalTokens":19},"metrics":{"latencyMs":3}}',
  },
  { event: 'exception:throttlingException', data: '{"message":"Too many requests"}' },
];

const ALL = Buffer.concat(FRAMES);

function decodeIn(pieces: Uint8Array[]): { events: SseEvent[]; pending: boolean } {
  const d = new EventStreamDecoder();
  const events: SseEvent[] = [];
  for (const p of pieces) events.push(...d.push(p));
  return { events, pending: d.pending };
}

/** A small deterministic PRNG so a failure names its seed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

describe('EventStreamDecoder', () => {
  it('decodes a whole multi-frame buffer in one push', () => {
    expect(decodeIn([ALL])).toEqual({ events: EXPECTED, pending: false });
  });

  it('decodes the same events for every two-way split of the buffer', () => {
    for (let at = 0; at <= ALL.length; at++) {
      const r = decodeIn([ALL.subarray(0, at), ALL.subarray(at)]);
      expect(r.events, `split at ${at}`).toEqual(EXPECTED);
      expect(r.pending).toBe(false);
    }
  });

  it('decodes byte by byte, and at random odd boundaries', () => {
    expect(decodeIn([...ALL].map((b) => Uint8Array.of(b))).events).toEqual(EXPECTED);
    for (let seed = 1; seed <= 200; seed++) {
      const r = rng(seed);
      const pieces: Uint8Array[] = [];
      let at = 0;
      while (at < ALL.length) {
        const n = 1 + 2 * Math.floor(r() * 20); // odd sizes, 1..39 bytes
        pieces.push(ALL.subarray(at, at + n));
        at += n;
      }
      expect(decodeIn(pieces).events, `seed ${seed}`).toEqual(EXPECTED);
    }
  });

  it('keeps a cut-off frame pending and emits nothing for it', () => {
    const cut = ALL.subarray(0, FRAMES[0]!.length + 10);
    const r = decodeIn([cut]);
    expect(r.events).toEqual(EXPECTED.slice(0, 1));
    expect(r.pending).toBe(true);
  });

  it("reads the codec's own encoding (headers of other types, an error message)", () => {
    const codec = new EventStreamCodec(toUtf8, fromUtf8);
    const err = codec.encode({
      headers: {
        ':message-type': { type: 'string', value: 'error' },
        ':error-code': { type: 'string', value: 'InternalFailure' },
        ':error-message': { type: 'string', value: 'boom' },
        attempt: { type: 'integer', value: 3 },
      },
      body: new Uint8Array(0),
    });
    expect(decodeIn([err]).events).toEqual([{ event: 'error:InternalFailure', data: 'boom' }]);
  });

  it('refuses a frame whose CRC is wrong, and a length no frame can have', () => {
    const broken = Buffer.from(FRAMES[1]!);
    broken.writeUInt8(broken.readUInt8(broken.length - 1) ^ 0xff, broken.length - 1);
    const d = new EventStreamDecoder();
    expect(d.push(FRAMES[0]!)).toHaveLength(1);
    expect(() => d.push(broken)).toThrow(GatewayError);
    try {
      new EventStreamDecoder().push(broken);
    } catch (e) {
      expect((e as GatewayError).code).toBe('upstream_bad_response');
    }
    const text = Buffer.from('data: {"not":"an event stream"}\n\n');
    expect(() => new EventStreamDecoder().push(text)).toThrow(/event-stream frame of \d+ bytes/);
  });
});
