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
      { role: 'user', content: [{ type: 'text', text: 'And a circuit breaker?' }, { type: 'image_url', image_url: { url: 'data:,' } }] },
    ],
  };
  const texts = ['You are a terse assistant. Answer in one sentence.', '请用一句话解释什么是网关。', 'A gateway sits between clients and upstreams.', 'And a circuit breaker?'];

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
    const longer = { ...body, messages: [...body.messages, { role: 'user', content: 'one two three four five six seven eight' }] };
    const b = estimateTokens(longer, 'openai_chat');
    expect(b.prompt - a.prompt).toBe(countTokens('one two three four five six seven eight') + 1 + 4);
  });
});
