/**
 * The SSE parser (src/lib/sse.ts) against a straightforward one written from the same rules
 * (bench/micro/sse-reference.ts; no maintained parser is among the project's packages): CPU per stream
 * parsed. Two streams as an upstream sends them: OpenAI chat (20 content chunks, a usage chunk, [DONE]),
 * one network chunk per event; Anthropic messages (named events), cut into 100-byte network chunks so
 * events straddle them. Both parsers must give the same events before timing.
 *
 *   node dist/bench/micro/sse.js [--streams N] [--rounds R] [--json]
 */
import { type SseEvent, SseParser } from '../../src/lib/sse.js';
import { ab, arg, type Impl, report, sameOutput } from './ab.js';
import { ReferenceSseParser } from './sse-reference.js';

const STREAMS = arg('streams', 20_000);
const enc = new TextEncoder();

const openaiChunks: Uint8Array[] = [
  ...Array.from({ length: 20 }, (_, i) =>
    JSON.stringify({
      id: 'chatcmpl-abc123',
      object: 'chat.completion.chunk',
      created: 1764650000,
      model: 'gpt-4o-mini',
      choices: [{ index: 0, delta: { content: ` token${i} and some text` }, finish_reason: null }],
    }),
  ),
  JSON.stringify({
    id: 'chatcmpl-abc123',
    object: 'chat.completion.chunk',
    created: 1764650000,
    model: 'gpt-4o-mini',
    choices: [],
    usage: { prompt_tokens: 12, completion_tokens: 20, total_tokens: 32 },
  }),
  '[DONE]',
].map((d) => enc.encode(`data: ${d}\n\n`));

const anthropicText = [
  ['message_start', { type: 'message_start', message: { id: 'msg_1', usage: { input_tokens: 12 } } }],
  [
    'content_block_start',
    { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
  ],
  ...Array.from({ length: 20 }, (_, i) => [
    'content_block_delta',
    { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: ` token${i} ünïcödé` } },
  ]),
  ['content_block_stop', { type: 'content_block_stop', index: 0 }],
  [
    'message_delta',
    { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 20 } },
  ],
  ['message_stop', { type: 'message_stop' }],
]
  .map(([e, d]) => `event: ${e as string}\ndata: ${JSON.stringify(d)}\n\n`)
  .join('');
const anthropicBytes = enc.encode(anthropicText);
const anthropicChunks = Array.from({ length: Math.ceil(anthropicBytes.length / 100) }, (_, i) =>
  anthropicBytes.subarray(i * 100, (i + 1) * 100),
);

interface Parser {
  push(c: Uint8Array): SseEvent[];
}

function parseAll(make: () => Parser, chunks: Uint8Array[]): SseEvent[] {
  const p = make();
  const out: SseEvent[] = [];
  for (const c of chunks) for (const e of p.push(c)) out.push(e);
  return out;
}

function impl(name: string, make: () => Parser, chunks: Uint8Array[]): Impl {
  const expected = parseAll(make, chunks).length;
  return {
    name,
    run(n) {
      let events = 0;
      for (let i = 0; i < n; i++) {
        const p = make();
        for (const c of chunks) events += p.push(c).length;
      }
      if (events !== n * expected) throw new Error('lost events');
    },
  };
}

const rows = [];
for (const [workload, chunks] of [
  ['OpenAI stream, a chunk per event', openaiChunks],
  ['Anthropic stream, 100-byte chunks', anthropicChunks],
] as const) {
  const mine = () => new SseParser();
  const ref = () => new ReferenceSseParser();
  sameOutput(workload, parseAll(mine, chunks), parseAll(ref, chunks));
  rows.push(
    await ab('sse', workload, impl('SseParser', mine, chunks), impl('reference', ref, chunks), STREAMS),
  );
}
report(rows);
