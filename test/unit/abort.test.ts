import { describe, expect, it } from 'vitest';
import { Abort } from '../../src/lib/abort.js';

describe('Abort', () => {
  it('calls its listeners once, in order, with the reason; later aborts and late listeners do nothing', () => {
    const a = new Abort();
    const seen: string[] = [];
    const one = (r: unknown) => seen.push(`one:${String(r)}`);
    const two = (r: unknown) => seen.push(`two:${String(r)}`);
    const removed = () => seen.push('removed');
    a.on(one);
    a.on(removed);
    a.on(two);
    a.off(removed);
    a.off(() => {}); // not a listener: nothing happens
    expect(a.aborted).toBe(false);
    a.abort('why');
    a.abort('again');
    a.on(() => seen.push('late'));
    expect(seen).toEqual(['one:why', 'two:why']);
    expect(a.aborted).toBe(true);
    expect(a.reason).toBe('why');
  });

  it("gives an AbortError as the reason when given none, as AbortSignal's does", () => {
    const a = new Abort();
    a.abort();
    expect(a.reason).toBeInstanceOf(Error);
    expect((a.reason as Error).name).toBe('AbortError');
  });

  it('a throwing listener does not stop the others; its error is thrown again on a microtask', async () => {
    const a = new Abort();
    const seen: string[] = [];
    a.on(() => {
      throw new Error('boom');
    });
    a.on(() => seen.push('after'));
    const thrown = new Promise<unknown>((resolve) => {
      const listeners = process.listeners('uncaughtException');
      process.removeAllListeners('uncaughtException');
      process.once('uncaughtException', (e) => {
        for (const l of listeners) process.on('uncaughtException', l);
        resolve(e);
      });
    });
    a.abort();
    expect(seen).toEqual(['after']);
    expect(((await thrown) as Error).message).toBe('boom');
  });
});
