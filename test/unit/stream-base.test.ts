import { describe, expect, it } from 'vitest';
import type { Usage } from '../../src/core/usage.js';
import { SseParser, type SseEvent } from '../../src/lib/sse.js';
import { anthropicPivot } from '../../src/providers/anthropic/inbound.js';
import { createExchange } from '../../src/providers/index.js';
import type { ChatCompletionChunk } from '../../src/providers/openai/wire.js';
import { PivotExchange } from '../../src/providers/pivot.js';
import {
  ChatStream,
  type Frame,
  FrameStream,
  noStream,
  writeGemini,
  writeSse,
} from '../../src/providers/stream.js';
import type { Exchange, UpstreamEndpoint } from '../../src/providers/types.js';

const ev = (data: string, event = ''): SseEvent => ({ event, data }) as SseEvent;
const usage = (n: number): Usage => ({
  inputTokens: n,
  outputTokens: 1,
  cachedTokens: 0,
  cacheWriteTokens: 0,
});

/** A translator built from the base: `{"say":..}` events become frames, `{"stop":true}` ends the stream. */
class Echo extends FrameStream {
  items(e: SseEvent): readonly Frame[] {
    const d = JSON.parse(e.data) as { say?: string; used?: number; stop?: boolean };
    if (d.used !== undefined) this.seen = usage(d.used);
    if (d.stop) this.finished = true;
    if (d.say === undefined) return [];
    this.tally.add(d.say);
    return [{ event: 'said', data: { text: d.say } }];
  }
  override closing(): readonly Frame[] {
    return [{ event: 'bye', data: '{}' }];
  }
}

const chunk = (content: string | null, extra: Partial<ChatCompletionChunk> = {}): ChatCompletionChunk => ({
  id: 'c1',
  object: 'chat.completion.chunk',
  created: 1,
  model: 'alias',
  choices: content === null ? [] : [{ index: 0, delta: { content }, finish_reason: null }],
  ...extra,
});

/** A chat translator built from the base: each event's data is a chunk; `end` ends the stream. */
class Chunks extends ChatStream {
  items(e: SseEvent): readonly ChatCompletionChunk[] {
    if (e.data === 'end') {
      this.finished = true;
      return [];
    }
    return [JSON.parse(e.data) as ChatCompletionChunk];
  }
}

describe('FrameStream', () => {
  it('keeps done, usage and the emitted text, and serializes each frame once at the edge', () => {
    const t = new Echo();
    expect(t.done).toBe(false);
    expect(t.usage()).toBeNull();
    expect(t.onEvent(ev('{"say":"hel"}'))).toBe('event: said\ndata: {"text":"hel"}\n\n');
    expect(t.onEvent(ev('{"used":3}'))).toBe('');
    expect(t.onEvent(ev('{"say":"lo","stop":true}'))).toBe('event: said\ndata: {"text":"lo"}\n\n');
    expect(t.done).toBe(true);
    expect(t.usage()).toEqual(usage(3));
    expect(t.emittedText).toBe('hello');
    expect(t.end()).toBe('event: bye\ndata: {}\n\n');
  });

  it('the writers: event and data lines; text data as it is; Gemini data-only with CRLF', () => {
    expect(writeSse({ data: { a: 1 } })).toBe('data: {"a":1}\n\n');
    expect(writeSse({ data: '[DONE]' })).toBe('data: [DONE]\n\n');
    expect(writeSse({ event: 'x', data: { a: 1 } })).toBe('event: x\ndata: {"a":1}\n\n');
    expect(writeGemini({ data: { a: 1 } })).toBe('data: {"a":1}\r\n\r\n');
  });
});

describe('ChatStream', () => {
  it('writes chunks as data events, counts their text, and sends [DONE] once, when done', () => {
    const t = new Chunks();
    const out = t.onEvent(ev(JSON.stringify(chunk('Hi')))) + t.onEvent(ev(JSON.stringify(chunk(' there'))));
    expect(new SseParser().push(out).map((e) => JSON.parse(e.data).choices[0].delta.content)).toEqual([
      'Hi',
      ' there',
    ]);
    expect(t.done).toBe(false);
    expect(t.onEvent(ev('end'))).toBe('data: [DONE]\n\n');
    expect(t.done).toBe(true);
    expect(t.end()).toBe('');
    expect(t.emittedText).toBe('Hi there');
  });

  it('items are the typed chunks, without touching the edge bookkeeping', () => {
    const t = new Chunks();
    expect(t.items(ev(JSON.stringify(chunk('x'))))).toEqual([chunk('x')]);
    expect(t.emittedText).toBe('');
  });
});

describe('noStream', () => {
  it('refuses to stream with a 400', () => {
    expect(() => noStream('embeddings')()).toThrow(/embeddings do not stream/);
  });
});

const EP: UpstreamEndpoint = {
  code: 'oa',
  provider: 'openai',
  baseUrl: 'http://127.0.0.1:1',
  credential: 'sk',
  headers: {},
};
const MESSAGES = { model: 'alias', max_tokens: 9, messages: [{ role: 'user', content: 'hi' }] };

describe('Anthropic client on an OpenAI channel (the chat pivot)', () => {
  it('goes through the pivot, which asks for the usage chunk', () => {
    const ex = createExchange('anthropic_messages', { ...MESSAGES, stream: true }, EP, 'gpt-up', 'alias');
    expect(ex).toBeInstanceOf(PivotExchange);
    const sent = JSON.parse(String(ex.call.body));
    expect(sent.model).toBe('gpt-up');
    expect(sent.stream_options).toEqual({ include_usage: true });
  });

  it('streams: parsed once, Anthropic events out, usage and text kept, done at [DONE]', () => {
    const ex = createExchange('anthropic_messages', { ...MESSAGES, stream: true }, EP, 'gpt-up', 'alias');
    const tr = ex.streamTranslator();
    let out = '';
    for (const c of [
      chunk('Hel', { model: 'gpt-up', usage: null }),
      chunk('lo', { model: 'gpt-up', usage: null }),
      chunk(null, { usage: { prompt_tokens: 4, completion_tokens: 2, total_tokens: 6 } }),
    ])
      out += tr.onEvent(ev(JSON.stringify(c)));
    expect(tr.done).toBe(false);
    out += tr.onEvent(ev('[DONE]'));
    expect(tr.done).toBe(true);
    out += tr.onEvent(ev(JSON.stringify(chunk('late')))); // after the terminator: nothing
    out += tr.end();
    const events = new SseParser().push(out);
    expect(events.map((e) => e.event)).toEqual([
      'message_start',
      'content_block_start',
      'content_block_delta',
      'content_block_delta',
      'content_block_stop',
      'message_delta',
      'message_stop',
    ]);
    expect(JSON.parse(events[0]!.data).message.model).toBe('alias');
    expect(JSON.parse(events[5]!.data).usage).toMatchObject({ input_tokens: 4, output_tokens: 2 });
    expect(tr.usage()).toEqual({ inputTokens: 4, outputTokens: 2, cachedTokens: 0, cacheWriteTokens: 0 });
    expect(tr.emittedText).toBe('Hello');
  });

  it('an upstream that never reports usage: usage() is null, so the relay estimates from the text sent', () => {
    const ex = createExchange('anthropic_messages', { ...MESSAGES, stream: true }, EP, 'gpt-up', 'alias');
    const tr = ex.streamTranslator();
    tr.onEvent(ev(JSON.stringify(chunk('abc', { model: 'gpt-up' }))));
    expect(tr.onEvent(ev('[DONE]'))).toContain('event: message_stop');
    expect(tr.done).toBe(true);
    expect(tr.usage()).toBeNull();
    expect(tr.emittedText).toBe('abc');
  });

  it('JSON: the chat answer becomes a message named after the alias', () => {
    const ex = createExchange('anthropic_messages', MESSAGES, EP, 'gpt-up', 'alias');
    const r = ex.decodeJson(
      JSON.stringify({
        id: 'chatcmpl-1',
        object: 'chat.completion',
        created: 1,
        model: 'gpt-up',
        choices: [{ index: 0, message: { role: 'assistant', content: 'hey' }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 4, completion_tokens: 1, total_tokens: 5 },
      }),
    );
    expect(r.body).toMatchObject({
      type: 'message',
      model: 'alias',
      content: [{ type: 'text', text: 'hey' }],
    });
    expect(r.usage?.inputTokens).toBe(4);
    expect(r.text).toBeUndefined();
  });

  it('a pivot over an exchange whose stream is not chat chunks is refused', () => {
    const odd: Exchange = {
      call: { path: '/x', headers: {}, body: '{}', stream: true },
      decodeJson: () => ({ body: {}, usage: null }),
      streamTranslator: () => new Echo(),
    };
    expect(() => new PivotExchange(anthropicPivot(MESSAGES, 'alias'), odd).streamTranslator()).toThrow(
      /not chat chunks/,
    );
  });
});
