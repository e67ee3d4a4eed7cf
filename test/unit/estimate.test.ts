import { countTokens } from 'gpt-tokenizer';
import { describe, expect, it } from 'vitest';
import { estimateTokens } from '../../src/quota/estimate.js';

describe('estimateTokens', () => {
  const body = {
    model: 'm',
    max_tokens: 100,
    messages: [
      { role: 'system', content: 'You are a terse assistant. Answer in one sentence.' },
      { role: 'user', content: '请用一句话解释什么是网关。' },
      { role: 'assistant', content: 'A gateway sits between clients and upstreams.' },
      {
        role: 'user',
        content: [
          { type: 'text', text: 'And a circuit breaker?' },
          { type: 'image_url', image_url: { url: 'data:,' } },
        ],
      },
    ],
  };
  const texts = [
    'You are a terse assistant. Answer in one sentence.',
    '请用一句话解释什么是网关。',
    'A gateway sits between clients and upstreams.',
    'And a circuit breaker?',
  ];

  it('counts each text with o200k: within a token per message of counting the joined prompt', () => {
    const joined = countTokens(texts.join('\n'));
    const e = estimateTokens(body, 'openai_chat');
    const overhead = 4 * 4 + 765; // four messages, one image
    expect(Math.abs(e.prompt - overhead - joined)).toBeLessThanOrEqual(texts.length);
    expect(e.total).toBe(e.prompt + 100);
  });

  it('a text seen before (a resent history) counts the same, and a changed text is counted anew', () => {
    const a = estimateTokens(body, 'openai_chat');
    expect(estimateTokens(body, 'openai_chat')).toEqual(a);
    const longer = {
      ...body,
      messages: [...body.messages, { role: 'user', content: 'one two three four five six seven eight' }],
    };
    const b = estimateTokens(longer, 'openai_chat');
    expect(b.prompt - a.prompt).toBe(countTokens('one two three four five six seven eight') + 1 + 4);
  });

  it('long texts that share their sampled head, middle and tail are still counted each as itself', () => {
    // Same length, same first 48, middle 32 and last 48 characters; different words between them.
    const L = 2_000;
    const mid = L >> 1;
    const make = (word: string) =>
      Array.from({ length: L }, (_, i) =>
        i < 48 || i >= L - 48 ? 'x' : i >= mid && i < mid + 32 ? 'm' : word[i % word.length],
      ).join('');
    const a = make('alpha ');
    const b = make('gamma ');
    expect(a.length).toBe(b.length);
    expect(a.slice(0, 48) + a.slice(mid, mid + 32) + a.slice(-48)).toBe(
      b.slice(0, 48) + b.slice(mid, mid + 32) + b.slice(-48),
    );
    expect(a.slice(mid, mid + 32)).toBe(b.slice(mid, mid + 32));
    const count = (t: string) =>
      estimateTokens({ model: 'm', messages: [{ role: 'user', content: t }] }, 'openai_chat').prompt - 4;
    for (let i = 0; i < 3; i++) {
      expect(count(a)).toBe(countTokens(a));
      expect(count(b)).toBe(countTokens(b));
    }
    expect(countTokens(a)).not.toBe(countTokens(b)); // the test would prove nothing if they counted the same
    // A copy of a text (a new string, as every request's are) is a hit and counts the same.
    expect(count((' ' + a).slice(1))).toBe(countTokens(a));
  });
});
