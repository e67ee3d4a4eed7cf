import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SseParser } from '../../src/lib/sse.js';

describe('SSE parser', () => {
  it('parses events, names, multi-line data, comments and CRLF', () => {
    const p = new SseParser();
    const evs = p.push(
      ': comment\r\nevent: message_start\r\ndata: {"a":1}\r\n\r\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n',
    );
    expect(evs).toEqual([
      { event: 'message_start', data: '{"a":1}' },
      { event: '', data: 'line1\nline2' },
      { event: '', data: '[DONE]' },
    ]);
    expect(p.pending).toBe(false);
  });

  it('reports a stream cut mid-event as pending', () => {
    const p = new SseParser();
    expect(p.push('data: {"partial"')).toEqual([]);
    expect(p.pending).toBe(true);
  });

  it('yields the same events however the bytes are split (property)', () => {
    const stream = 'event: a\ndata: {"x":"héllo"}\n\ndata: 2\r\n\r\n: c\ndata: 3\rdata: 4\r\n\n';
    const whole = new SseParser().push(stream);
    const bytes = Buffer.from(stream, 'utf8');
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: bytes.length - 1 }), { maxLength: 8 }), (cuts) => {
        const points = [...new Set(cuts)].sort((a, b) => a - b);
        const p = new SseParser();
        const got = [];
        let prev = 0;
        for (const c of [...points, bytes.length]) {
          got.push(...p.push(bytes.subarray(prev, c)));
          prev = c;
        }
        expect(got).toEqual(whole);
      }),
    );
    expect(whole).toHaveLength(3);
    expect(whole[2]).toEqual({ event: '', data: '3\n4' });
  });

  it('an LF-only stream (the fast path) parses as the same stream with CRLF, however split (property)', () => {
    const lf = 'event: a\ndata: {"x":"héllo"}\n\n: c\ndata: 1\ndata: 2\n\ndata: [DONE]\n\n';
    const reference = new SseParser().push(lf.replace(/\n/g, '\r\n'));
    expect(reference).toHaveLength(3);
    const bytes = Buffer.from(lf, 'utf8');
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: bytes.length - 1 }), { maxLength: 8 }), (cuts) => {
        const p = new SseParser();
        const got = [];
        let prev = 0;
        for (const c of [...[...new Set(cuts)].sort((a, b) => a - b), bytes.length]) {
          got.push(...p.push(bytes.subarray(prev, c)));
          prev = c;
        }
        expect(got).toEqual(reference);
        expect(p.pending).toBe(false);
      }),
    );
  });
});
