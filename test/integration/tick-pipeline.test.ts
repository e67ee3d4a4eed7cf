/**
 * TickPipeline on the real Redis: a turn's script calls leave as one EVALSHA that runs them all in order,
 * each with its own result or error; a lone call is the script itself; written() resolves once the calls are on the socket.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TickPipeline, appendLua, written } from '../../src/coord/tick-pipeline.js';
import { REDIS_URL, TcpProxy, cleanupRedis, testRedisPrefix, waitFor } from '../helpers.js';

let r: Redis;
let mon: Redis;
const prefix = testRedisPrefix();
/** What each client port sent (a pipeline has its own connection: its commands are looked up by its port). */
const seenBy = new Map<string, string[][]>();
const scriptsSent = (t: TickPipeline) =>
  (seenBy.get(String(t.localPort())) ?? []).filter((a) => /^(evalsha|eval)$/i.test(a[0]!));
const open: TickPipeline[] = [];
const pipeline = async (client: Redis = r) => {
  const t = new TickPipeline(client);
  open.push(t);
  await t.ready();
  return t;
};

/**
 * MONITOR reports commands in the order Redis ran them. A marker sent after the calls under test have been
 * answered runs after them, so once MONITOR has reported the marker it has reported them too.
 */
let markers = 0;
async function monitorCaughtUp(): Promise<void> {
  const key = `${prefix}marker:${++markers}`;
  await r.get(key);
  await waitFor(
    () => [...seenBy.values()].some((l) => l.some((a) => a[0]?.toLowerCase() === 'get' && a[1] === key)),
    5_000,
    5,
  );
}

beforeAll(async () => {
  r = new Redis(REDIS_URL, { enableAutoPipelining: true });
  await r.ping();
  mon = await new Redis(REDIS_URL).monitor();
  mon.on('monitor', (_t: string, args: string[], source: string) => {
    const port = source.slice(source.lastIndexOf(':') + 1);
    let l = seenBy.get(port);
    if (!l) seenBy.set(port, (l = []));
    l.push(args);
  });
});

afterAll(async () => {
  for (const t of open) t.close();
  mon.disconnect();
  await cleanupRedis(prefix);
  r.disconnect();
});

// KEYS: counter. ARGV: by. -> the new value
const INCR = `return redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]))`;
// KEYS: a, b. ARGV: x -> {a's value, b's value, x, #KEYS, #ARGV}; nil when x is 'nil'
const ECHO = `
if ARGV[1] == 'nil' then return nil end
return {redis.call('GET', KEYS[1]) or '', redis.call('GET', KEYS[2]) or '', ARGV[1], #KEYS, #ARGV}
`;
// Raises (INCR on a hash).
const BAD = `redis.call('HSET', KEYS[1], 'f', '1'); return redis.call('INCR', KEYS[1])`;

describe('TickPipeline', () => {
  let t0: TickPipeline;
  beforeAll(async () => {
    t0 = await pipeline();
  });
  it('runs one turn of calls as one script execution, in order, each with its own result', async () => {
    const t = await pipeline();
    t.define('tpIncr', INCR, 1);
    t.define('tpEcho', ECHO); // key count as the first argument
    t.define('tpBad', BAD, 1);
    const c = `${prefix}c`;
    await r.set(`${prefix}a`, 'A');
    await monitorCaughtUp();
    const calls = [
      t.call<number>('tpIncr', [c, 5]),
      t.call<unknown>('tpEcho', [2, `${prefix}a`, c, 'x', 'y']),
      t.call<number>('tpBad', [`${prefix}h`]),
      t.call<number>('tpIncr', [c, -2]),
      t.call<unknown>('tpEcho', [2, `${prefix}a`, c, 'nil']),
    ];
    const res = await Promise.allSettled(calls);
    // In order: the echo saw the first increment, not the second.
    expect(res[0]).toEqual({ status: 'fulfilled', value: 5 });
    expect(res[1]).toEqual({ status: 'fulfilled', value: ['A', '5', 'x', 2, 2] });
    // The failing call fails alone, with Redis's message; the calls after it still ran.
    expect(res[2]!.status).toBe('rejected');
    expect(String((res[2] as PromiseRejectedResult).reason)).toMatch(/WRONGTYPE/);
    expect(res[3]).toEqual({ status: 'fulfilled', value: 3 });
    expect(res[4]).toEqual({ status: 'fulfilled', value: null });
    expect(await r.get(c)).toBe('3');
    await monitorCaughtUp();
    expect(scriptsSent(t).length).toBe(1); // one execution for the five calls
  });

  it('splits a turn of many calls into executions of at most 64, still in order', async () => {
    const t = await pipeline();
    t.define('tpIncr', INCR, 1);
    const res = await Promise.all(
      Array.from({ length: 150 }, () => t.call<number>('tpIncr', [`${prefix}e`, 1])),
    );
    expect(res).toEqual(Array.from({ length: 150 }, (_, i) => i + 1));
    await monitorCaughtUp();
    expect(scriptsSent(t).length).toBe(3); // 64 + 64 + 22
  });

  it("shares a turn's stream appends as one entry per stream; a failed append fails only the calls that made it", async () => {
    // KEYS: stream. ARGV: field, value -> 'ok'
    t0.define('tpAppend', `local f = { ARGV[1], ARGV[2] }\n${appendLua('KEYS[1]', 'f')}\nreturn 'ok'`, 1);
    t0.define('tpIncr', INCR, 1);
    const s1 = `${prefix}s1`;
    const s2 = `${prefix}s2`;
    const bad = `${prefix}notastream`;
    await r.set(bad, 'x');
    const res = await Promise.allSettled([
      t0.call('tpAppend', [s1, 'a', '1']),
      t0.call('tpAppend', [s2, 'b', '2']),
      t0.call('tpAppend', [bad, 'c', '3']),
      t0.call('tpIncr', [`${prefix}n`, 1]),
      t0.call('tpAppend', [s1, 'a', '4']),
    ]);
    expect(res.map((x) => x.status)).toEqual([
      'fulfilled',
      'fulfilled',
      'rejected',
      'fulfilled',
      'fulfilled',
    ]);
    expect(String((res[2] as PromiseRejectedResult).reason)).toMatch(/WRONGTYPE/);
    const e1 = await r.xrange(s1, '-', '+');
    expect(e1.map((e) => e[1])).toEqual([['a', '1', 'a', '4']]);
    expect((await r.xrange(s2, '-', '+')).map((e) => e[1])).toEqual([['b', '2']]);
    // Alone, the script appends at once, an entry of its own.
    expect(await t0.call('tpAppend', [s1, 'z', '9'])).toBe('ok');
    expect((await r.xrange(s1, '-', '+')).map((e) => e[1])).toEqual([
      ['a', '1', 'a', '4'],
      ['z', '9'],
    ]);
  });

  it('sends a lone call as its own script', async () => {
    const t = await pipeline();
    t.define('tpIncr', INCR, 1);
    expect(await t.call<number>('tpIncr', [`${prefix}d`, 7])).toBe(7);
    await monitorCaughtUp();
    const scripts = scriptsSent(t);
    expect(scripts.length).toBe(1);
    expect(scripts[0]!.slice(2)).toEqual(['1', `${prefix}d`, '7']);
  });

  it("written() resolves once the turn's calls are on the socket, before Redis has answered", async () => {
    // Replies held 300 ms on the way back: the call is written long before it can be answered.
    const proxy = await new TcpProxy({
      host: '127.0.0.1',
      port: Number(new URL(REDIS_URL).port || 6379),
    }).start();
    proxy.replyDelayMs = 300;
    const c = new Redis(`redis://127.0.0.1:${proxy.port}`);
    try {
      await c.ping();
      const t = await pipeline(c);
      t.define('tpIncr', INCR, 1);
      const sock = (t as unknown as { conn: { sock: { bytesWritten: number } } }).conn.sock;
      const before = sock.bytesWritten;
      let answered = false;
      const p = t.call<number>('tpIncr', [`${prefix}w`, 3]).then((v) => ((answered = true), v));
      expect(sock.bytesWritten).toBe(before); // queued for the end of the turn
      await written();
      expect(sock.bytesWritten).toBeGreaterThan(before);
      expect(answered).toBe(false);
      expect(await p).toBe(3);
    } finally {
      c.disconnect();
      await proxy.close();
    }
  });

  it('fails calls at once while its connection is down, and works again once Redis is back', async () => {
    const proxy = await new TcpProxy({
      host: '127.0.0.1',
      port: Number(new URL(REDIS_URL).port || 6379),
    }).start();
    const c = new Redis(`redis://127.0.0.1:${proxy.port}`, { lazyConnect: true });
    try {
      const t = await pipeline(c);
      t.define('tpIncr', INCR, 1);
      expect(await t.call<number>('tpIncr', [`${prefix}f`, 1])).toBe(1);
      proxy.down(); // cuts the connection and refuses new ones
      const conn = (t as unknown as { conn: { isReady(): boolean } }).conn;
      await waitFor(() => !conn.isReady(), 5_000, 5); // the pipeline has seen its connection close
      const t0 = Date.now();
      await expect(t.call('tpIncr', [`${prefix}f`, 1])).rejects.toThrow(/down/);
      expect(Date.now() - t0).toBeLessThan(1_000); // at once, not after the 5 s command timeout
      proxy.up();
      await t.ready();
      // Reconnected: the script is loaded again on the new connection before its call.
      expect(await t.call<number>('tpIncr', [`${prefix}f`, 1])).toBe(2);
    } finally {
      c.disconnect();
      await proxy.close();
    }
  });

  it('fails what is in flight when Redis stops answering, after the command timeout', async () => {
    const proxy = await new TcpProxy({
      host: '127.0.0.1',
      port: Number(new URL(REDIS_URL).port || 6379),
    }).start();
    const c = new Redis(`redis://127.0.0.1:${proxy.port}`, { lazyConnect: true, commandTimeout: 300 });
    try {
      const t = await pipeline(c);
      t.define('tpIncr', INCR, 1);
      proxy.replyDelayMs = 5_000; // now a partition: the call arrives, no reply comes back
      const t0 = Date.now();
      await expect(t.call('tpIncr', [`${prefix}g`, 1])).rejects.toThrow(/did not answer within 300 ms/);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
      expect(Date.now() - t0).toBeLessThan(2_000);
    } finally {
      c.disconnect();
      await proxy.close();
    }
  });

  it('refuses a script it does not know', async () => {
    const t = await pipeline();
    await expect(t.call('tpNope', [])).rejects.toThrow(/not defined/);
  });
});
