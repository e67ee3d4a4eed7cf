import { describe, expect, it } from 'vitest';
import { cacheKey, cacheTtlFor, ResponseCache } from '../../src/relay/response-cache.js';

describe('response cache: who opts in, and for how long', () => {
  it('the alias TTL applies unless the request says otherwise', () => {
    expect(cacheTtlFor('openai_chat', 60, {})).toBe(60);
    expect(cacheTtlFor('openai_chat', 0, {})).toBe(0);
    expect(cacheTtlFor('openai_chat', 0, { 'x-anima-cache': '30' })).toBe(30);
    expect(cacheTtlFor('openai_chat', 0, { 'x-anima-cache': 'on' })).toBe(300);
    expect(cacheTtlFor('openai_chat', 45, { 'x-anima-cache': 'on' })).toBe(45);
    expect(cacheTtlFor('openai_chat', 60, { 'x-anima-cache': 'off' })).toBe(0);
    expect(cacheTtlFor('openai_chat', 60, { 'cache-control': 'no-cache' })).toBe(0);
    expect(cacheTtlFor('openai_chat', 60, { 'cache-control': 'max-age=0, no-store' })).toBe(0);
    expect(cacheTtlFor('openai_chat', 0, { 'x-anima-cache': '99999999' })).toBe(30 * 86_400);
    expect(cacheTtlFor('openai_chat', 0, { 'x-anima-cache': '-5' })).toBe(0);
  });
  it('uploads and audio are never cached', () => {
    expect(cacheTtlFor('openai_transcription', 60, { 'x-anima-cache': '60' })).toBe(0);
    expect(cacheTtlFor('openai_speech', 60, {})).toBe(0);
    expect(cacheTtlFor('openai_image_edit', 60, {})).toBe(0);
  });
});

describe('response cache: the key', () => {
  const body = { model: 'm', messages: [{ role: 'user', content: 'hi' }], temperature: 0 };
  it('ignores key order but nothing else', () => {
    const k = cacheKey('app1', 'openai_chat', 'm', body);
    expect(
      cacheKey('app1', 'openai_chat', 'm', {
        temperature: 0,
        messages: [{ content: 'hi', role: 'user' }],
        model: 'm',
      }),
    ).toBe(k);
    expect(cacheKey('app1', 'openai_chat', 'm', { ...body, temperature: 1 })).not.toBe(k);
    expect(
      cacheKey('app1', 'openai_chat', 'm', { ...body, messages: [{ role: 'user', content: 'hi ' }] }),
    ).not.toBe(k);
    expect(cacheKey('app1', 'openai_chat', 'm', { ...body, stream: true })).not.toBe(k);
  });
  it('never crosses apps, dialects or aliases', () => {
    const k = cacheKey('app1', 'openai_chat', 'm', body);
    expect(cacheKey('app2', 'openai_chat', 'm', body)).not.toBe(k);
    expect(cacheKey('app1', 'anthropic_messages', 'm', body)).not.toBe(k);
    expect(cacheKey('app1', 'openai_chat', 'm2', body)).not.toBe(k);
    expect(k.startsWith('rc:app1:')).toBe(true);
  });
});

describe('response cache: the store', () => {
  it('round-trips an answer, refuses what is too large, and ignores garbage', async () => {
    const kv = new Map<string, { v: string; ttl: number }>();
    const c = new ResponseCache({
      getValue: async (k) => kv.get(k)?.v ?? null,
      setValue: async (k, v, ttl) => void kv.set(k, { v, ttl }),
    });
    await c.put('k', { t: 'application/json', p: '{"a":1}', c: 'ch', at: 1 }, 5);
    expect(kv.get('k')!.ttl).toBe(5_000);
    expect(await c.get('k')).toEqual({ t: 'application/json', p: '{"a":1}', c: 'ch', at: 1 });
    await c.put('big', { t: 'text/plain', p: 'x'.repeat(5 * 1024 * 1024), c: 'ch', at: 1 }, 5);
    expect(kv.has('big')).toBe(false);
    kv.set('bad', { v: 'not json', ttl: 1 });
    expect(await c.get('bad')).toBeNull();
    expect(await c.get('missing')).toBeNull();
  });
});
