/**
 * CPU per request of serving an Anthropic Messages client from an OpenAI channel, in-process (no HTTP):
 * the exchange is built (request translated and serialized), then a fake OpenAI answer is decoded (JSON)
 * or translated event by event (SSE: 20 text chunks, the finish chunk, the usage chunk, [DONE]). The
 * upstream's SSE text is parsed once up front: the relay's parser does the same work on every path.
 *
 *   node dist/bench/micro/pivot.js [--requests N] [--rounds R]
 *
 * Paths, interleaved in the same rounds:
 *  - `pivot`: what the gateway runs (createExchange: the chat pivot over the OpenAI chat exchange, the
 *    inner stream's parsed chunks handed to the Anthropic writer).
 *  - `hand copy`: a dedicated Anthropic-to-OpenAI exchange (the alternative to the pivot, kept here only
 *    as the baseline: the pivot stays while it is within a few percent of this).
 *  - `pivot over text`: the pivot reading the inner exchange's SSE text back instead of its chunks.
 * Before timing, each path's output is checked to be the same as the pivot's.
 */
import { anthropicPivot } from '../../src/providers/anthropic/inbound.js';
import {
  OpenAIToAnthropicStream,
  anthropicToOpenAIRequest,
  openaiToAnthropicResponse,
} from '../../src/providers/anthropic/inbound.js';
import type { MessagesRequest } from '../../src/providers/anthropic/wire.js';
import { createExchange } from '../../src/providers/index.js';
import { openaiExchange } from '../../src/providers/openai/exchange.js';
import { type ChatCompletion, openaiUsage } from '../../src/providers/openai/wire.js';
import { bearerHeaders, parseJsonObject, TextTally } from '../../src/providers/shared.js';
import type { Exchange, UpstreamEndpoint } from '../../src/providers/types.js';
import { type SseEvent, SseParser, sseEvent } from '../../src/lib/sse.js';

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const REQUESTS = arg('requests', 20_000);
const ROUNDS = arg('rounds', 5);

const EP: UpstreamEndpoint = {
  code: 'bench',
  provider: 'openai',
  baseUrl: 'http://127.0.0.1:1',
  credential: 'sk-bench',
  headers: {},
};
const body = (stream: boolean): Record<string, unknown> => ({
  model: 'alias',
  max_tokens: 256,
  system: 'You are terse.',
  messages: [
    { role: 'user', content: 'Say something about the weather in Paris, please.' },
    { role: 'assistant', content: 'It is mild.' },
    { role: 'user', content: [{ type: 'text', text: 'And tomorrow?' }] },
  ],
  ...(stream ? { stream: true } : {}),
});

const JSON_ANSWER = JSON.stringify({
  id: 'chatcmpl-bench',
  object: 'chat.completion',
  created: 1,
  model: 'gpt-up',
  choices: [{ index: 0, message: { role: 'assistant', content: 'x'.repeat(200) }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 30, completion_tokens: 20, total_tokens: 50 },
});
const chunk = (delta: object, finish: string | null) =>
  JSON.stringify({
    id: 'chatcmpl-bench',
    object: 'chat.completion.chunk',
    created: 1,
    model: 'gpt-up',
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    usage: null,
  });
const SSE_TEXT = [
  chunk({ role: 'assistant', content: '' }, null),
  ...Array.from({ length: 20 }, (_, i) => chunk({ content: `word${i} ` }, null)),
  chunk({}, 'stop'),
  JSON.stringify({
    id: 'chatcmpl-bench',
    object: 'chat.completion.chunk',
    created: 1,
    model: 'gpt-up',
    choices: [],
    usage: { prompt_tokens: 30, completion_tokens: 20, total_tokens: 50 },
  }),
  '[DONE]',
]
  .map((d) => `data: ${d}\n\n`)
  .join('');
const EVENTS: SseEvent[] = new SseParser().push(SSE_TEXT);

type Build = (b: Record<string, unknown>) => Exchange;

/** A dedicated Anthropic-to-OpenAI exchange: what the pivot is measured against. */
const handCopy: Build = (b) => {
  const alias = 'alias';
  const req = anthropicToOpenAIRequest(b as unknown as MessagesRequest, 'gpt-up');
  return {
    call: {
      path: '/chat/completions',
      headers: bearerHeaders(EP),
      body: JSON.stringify(req),
      stream: b.stream === true,
    },
    decodeJson(text) {
      const j = parseJsonObject(text) as unknown as ChatCompletion;
      if (!Array.isArray(j.choices)) throw new Error('upstream answer has no choices');
      return { body: openaiToAnthropicResponse(j, alias), usage: openaiUsage(j.usage) };
    },
    streamTranslator() {
      const t = new OpenAIToAnthropicStream({ model: alias });
      const tally = new TextTally();
      const frames = (evs: Array<{ event: string; data: object }>) => {
        let s = '';
        for (const e of evs) {
          const d = e.data as { delta?: { text?: unknown } };
          if (e.event === 'content_block_delta' && typeof d.delta?.text === 'string') tally.add(d.delta.text);
          s += sseEvent(e.event, JSON.stringify(e.data));
        }
        return s;
      };
      let done = false;
      return {
        get done() {
          return done;
        },
        get emittedText() {
          return tally.text;
        },
        onEvent(ev) {
          if (ev.data === '[DONE]') {
            done = true;
            return frames(t.finish());
          }
          const chunk = parseJsonObject(ev.data);
          if (chunk.error) throw new Error('upstream stream error');
          return frames(t.push(chunk));
        },
        end: () => '',
        usage: () => t.usage(),
      };
    },
  };
};

/** The pivot reading the inner exchange's SSE text back (parsed twice, serialized twice). */
const pivotOverText: Build = (b) => {
  const pivot = anthropicPivot(b, 'alias');
  const inner = openaiExchange('openai_chat', pivot.chat, EP, 'gpt-up', 'alias');
  return {
    call: inner.call,
    decodeJson: (text) => {
      const r = inner.decodeJson(text);
      return { body: pivot.fromChat(r.body as ChatCompletion, r.usage), usage: r.usage };
    },
    streamTranslator() {
      const tr = inner.streamTranslator();
      const out = pivot.stream();
      const parser = new SseParser();
      const frames = (fs: readonly { event?: string; data: object | string }[]) => {
        let s = '';
        for (const f of fs) s += sseEvent(f.event!, JSON.stringify(f.data));
        return s;
      };
      let finished = false;
      return {
        get done() {
          return tr.done;
        },
        emittedText: '',
        onEvent(ev) {
          let s = '';
          for (const e of parser.push(tr.onEvent(ev))) {
            if (finished) continue;
            if (e.data === '[DONE]') {
              finished = true;
              s += frames(out.finish(tr.usage()));
            } else s += frames(out.push(JSON.parse(e.data)));
          }
          return s;
        },
        end: () => '',
        usage: () => tr.usage(),
      };
    },
  };
};

const viaPivot: Build = (b) => createExchange('anthropic_messages', b, EP, 'gpt-up', 'alias');

const PATHS: Array<[string, Build]> = [
  ['pivot', viaPivot],
  ['hand copy', handCopy],
  ['pivot over text', pivotOverText],
];

function once(build: Build, stream: boolean): string {
  const ex = build(body(stream));
  if (typeof ex.call.body !== 'string' && !(ex.call.body instanceof Buffer)) throw new Error('body');
  if (!stream) return JSON.stringify(ex.decodeJson(JSON_ANSWER).body);
  const tr = ex.streamTranslator();
  let s = '';
  for (const ev of EVENTS) s += tr.onEvent(ev);
  s += tr.end();
  if (!tr.done || !tr.usage()) throw new Error('stream did not finish');
  return s;
}

function run(build: Build, stream: boolean, n: number): number {
  let bytes = 0;
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) bytes += once(build, stream).length;
  const c = process.cpuUsage(c0);
  if (bytes === 0) throw new Error('no output');
  return (c.user + c.system) / n;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

for (const stream of [false, true]) {
  const want = once(viaPivot, stream);
  for (const [name, build] of PATHS)
    if (once(build, stream) !== want) throw new Error(`${name}: output differs from the pivot's`);
}
for (const [label, stream] of [
  ['json', false],
  ['sse', true],
] as const) {
  const samples = new Map<string, number[]>(PATHS.map(([name]) => [name, []]));
  for (const [, build] of PATHS) run(build, stream, Math.min(REQUESTS, 5_000)); // warm-up
  for (let r = 0; r < ROUNDS; r++)
    for (const [name, build] of r % 2 ? [...PATHS].reverse() : PATHS)
      samples.get(name)!.push(run(build, stream, REQUESTS));
  for (const [name, xs] of samples)
    console.log(
      `${label.padEnd(5)} ${name.padEnd(16)} CPU ${median(xs).toFixed(2)} us/request (median of ${xs.length}; ` +
        `${xs.map((x) => x.toFixed(2)).join(' ')})`,
    );
}
