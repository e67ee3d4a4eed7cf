/**
 * TickPipeline (its own RESP connection, one batch script per turn) against ioredis running the same
 * scripts through defineCommand: for any sequence of turns of calls, each call gets the same result, or
 * fails with the same error, from the same starting state (each side on its own keys).
 * The CPU side of the comparison is bench/micro/resp.ts.
 */
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TickPipeline } from '../../src/coord/tick-pipeline.js';
import { REDIS_URL, cleanupRedis, testRedisPrefix } from '../helpers.js';

/** name -> [lua, numberOfKeys (null: the first argument is the key count)] */
const SCRIPTS: Record<string, [string, number | null]> = {
  // an integer
  dIncr: [`return redis.call('HINCRBY', KEYS[1], 'n', ARGV[1])`, 2],
  // nested arrays, a nil read as false, strings and integers
  dShape: [
    `return {redis.call('HGET', KEYS[1], 'n'), ARGV[1], {tonumber(ARGV[1]) * 2, 'x' .. ARGV[1]}, #KEYS, #ARGV}`,
    2,
  ],
  // a raised error, or a string
  dRaise: [`if tonumber(ARGV[1]) % 3 == 0 then error('boom ' .. ARGV[1]) end return ARGV[1]`, 2],
  // an error from a command (a string where an integer is needed)
  dBad: [`redis.call('HSET', KEYS[2], 's', 'text') return redis.call('HINCRBY', KEYS[2], 's', 1)`, 2],
  // nil (and a write the next calls see)
  dNil: [`redis.call('DEL', KEYS[2]) redis.call('HINCRBY', KEYS[1], 'n', 1) return nil`, 2],
  // the key count as the first argument
  dDyn: [`return {#KEYS, redis.call('HINCRBY', KEYS[#KEYS], 'n', ARGV[1])}`, null],
};
const NAMES = Object.keys(SCRIPTS);

let ioredis: Redis & Record<string, (...a: Array<string | number>) => Promise<unknown>>;
let base: Redis;
let tick: TickPipeline;
const prefix = testRedisPrefix();

beforeAll(async () => {
  ioredis = new Redis(REDIS_URL, { enableAutoPipelining: true }) as typeof ioredis;
  base = new Redis(REDIS_URL, { lazyConnect: true });
  tick = new TickPipeline(base);
  for (const [name, [lua, n]] of Object.entries(SCRIPTS)) {
    ioredis.defineCommand(name, n === null ? { lua } : { numberOfKeys: n, lua });
    tick.define(name, lua, n);
  }
  await tick.ready();
});

afterAll(async () => {
  tick.close();
  base.disconnect();
  ioredis.disconnect();
  await cleanupRedis(prefix);
});

type Outcome = { ok: unknown } | { err: string };
const settle = (p: Promise<unknown>): Promise<Outcome> =>
  p.then(
    (ok) => ({ ok }),
    (e: Error) => ({ err: e.message }),
  );

const call = fc.record({
  script: fc.integer({ min: 0, max: NAMES.length - 1 }),
  keys: fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 2 })),
  arg: fc.integer({ min: -5, max: 50 }),
});

let run = 0;
async function runTurns(
  turns: Array<Array<{ script: number; keys: [number, number]; arg: number }>>,
  send: (name: string, args: Array<string | number>) => Promise<unknown>,
  keyPrefix: string,
): Promise<Outcome[]> {
  const out: Outcome[] = [];
  for (const t of turns) {
    // One turn: every call issued before any is awaited.
    const ps = t.map((c) => {
      const name = NAMES[c.script]!;
      const keys = c.keys.map((k) => `${keyPrefix}{d}:${k}`);
      return settle(
        send(name, SCRIPTS[name]![1] === null ? [keys.length, ...keys, c.arg] : [...keys, c.arg]),
      );
    });
    out.push(...(await Promise.all(ps)));
  }
  return out;
}

describe('TickPipeline against ioredis', () => {
  it('gives every call the same result or the same error, for any turns of calls (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(call, { minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 6 }),
        async (turns) => {
          const n = ++run;
          const mine = await runTurns(turns, (name, args) => tick.call(name, args), `${prefix}t${n}:`);
          const theirs = await runTurns(turns, (name, args) => ioredis[name]!(...args), `${prefix}i${n}:`);
          expect(mine.length).toBe(theirs.length);
          for (const [i, m] of mine.entries()) {
            const o = theirs[i]!;
            if ('ok' in o) expect(m).toEqual(o);
            else {
              // The same failure; the wording around it differs (a direct EVALSHA error names the script).
              expect(m).toHaveProperty('err');
              const core = /boom -?\d+|hash value is not an integer/.exec(o.err)?.[0];
              expect(core, o.err).toBeDefined();
              expect((m as { err: string }).err).toContain(core!);
            }
          }
        },
      ),
      { numRuns: 40 },
    );
  });
});
