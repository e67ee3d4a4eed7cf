/**
 * The SSE parser against a straightforward one written from the same rules (bench/micro/sse-reference.ts,
 * which bench/micro/sse.ts measures it against): for any stream of fields, comments and line ends (LF,
 * CRLF, CR), cut into any chunks, both give the same events and agree on whether a cut event is pending.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SseParser } from '../../src/lib/sse.js';
import { ReferenceSseParser } from '../../bench/micro/sse-reference.js';

const eol = fc.constantFrom('\n', '\r\n', '\r');
const text = fc.string({ unit: fc.constantFrom('a', 'é', '日', '🚀', ' ', ':', '{', '"', 'x') });
const line = fc.oneof(
  fc.tuple(
    fc.constantFrom('data', 'event', 'id', 'retry', 'other', 'data'),
    fc.constantFrom(':', ': ', ''),
    text,
  ),
  fc.tuple(fc.constant(''), fc.constant(':'), text), // a comment
  fc.tuple(fc.constant(''), fc.constant(''), fc.constant('')), // a blank line: dispatch
);
const stream = fc
  .array(fc.tuple(line, eol), { maxLength: 30 })
  .map((ls) => ls.map(([[f, sep, v], e]) => (sep === '' && f !== '' ? f : f + sep + v) + e).join(''));

function parse(p: SseParser | ReferenceSseParser, bytes: Buffer, cuts: number[]) {
  const events = [];
  let prev = 0;
  for (const c of [...new Set(cuts.map((x) => x % (bytes.length + 1)))]
    .sort((a, b) => a - b)
    .concat(bytes.length)) {
    events.push(...p.push(bytes.subarray(prev, c)));
    prev = c;
  }
  return { events, pending: p.pending };
}

describe('SseParser against a reference parser', () => {
  it('gives the same events for any stream cut anywhere (property)', () => {
    fc.assert(
      fc.property(stream, fc.array(fc.nat(), { maxLength: 10 }), (s, cuts) => {
        const bytes = Buffer.from(s, 'utf8');
        const mine = parse(new SseParser(), bytes, cuts);
        expect(mine).toEqual(parse(new ReferenceSseParser(), bytes, cuts));
      }),
      { numRuns: 500 },
    );
  });
});
