/**
 * The hot path's Redis script calls through TickPipeline on its own RESP connection
 * (src/coord/tick-pipeline.ts, src/coord/resp.ts) against ioredis with `enableAutoPipelining` running the
 * same scripts (`defineCommand`), against a real Redis (REDIS_URL, default redis://127.0.0.1:6379; its
 * own key prefix, deleted at the end). The workload is the quota's shape: turns of 10 requests, each an
 * admission-like call (2 scopes × 2 keys: a lease set and a state hash) and a settlement-like call on the
 * same keys, issued in one event-loop turn and awaited together. Reported per admit + settle pair: this
 * process's CPU and Redis's own (`INFO cpu`; Redis may be shared with other work, so that figure is
 * noisier). Both sides must return the same results for the same calls first.
 *
 * The pipeline's other reason to exist is not CPU: `written()` (a point at which a turn's calls are on the
 * socket), which ioredis's auto-pipelining can't give while a batch is in flight.
 *
 *   node dist/bench/micro/resp.js [--pairs N] [--rounds R] [--json]
 */
import { Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';
import { TickPipeline } from '../../src/coord/tick-pipeline.js';
import { ab, arg, type Impl, median, report, sameOutput } from './ab.js';

const PAIRS = arg('pairs', 20_000);
const TURN = 10;
const URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';

const ADMIT = `local now = tonumber(ARGV[1])
for i = 1, 2 do
  redis.call('ZADD', KEYS[2 * i - 1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('HINCRBY', KEYS[2 * i], 'reserved', ARGV[4])
end
return {1, ARGV[3], redis.call('HGET', KEYS[2], 'reserved')}`;
const SETTLE = `for i = 1, 2 do
  redis.call('ZREM', KEYS[2 * i - 1], ARGV[1])
  redis.call('HINCRBY', KEYS[2 * i], 'reserved', -tonumber(ARGV[2]))
  redis.call('HINCRBY', KEYS[2 * i], 'spent', ARGV[3])
end
return redis.call('HGET', KEYS[4], 'spent')`;

type Call = (name: 'admit' | 'settle', args: Array<string | number>) => Promise<unknown>;

/** Names built once, as the quota does (NameCache). */
function keysFor(prefix: string): string[][] {
  return Array.from({ length: 5 }, (_, i) => {
    const app = `app_${i % 2}`;
    const key = `key_${i}`;
    return [
      `${prefix}{q:${app}}:c:app:${app}`,
      `${prefix}{q:${app}}:s:app:${app}`,
      `${prefix}{q:${app}}:c:key:${key}`,
      `${prefix}{q:${app}}:s:key:${key}`,
    ];
  });
}

let seq = 0;
/** `pairs` admit + settle pairs in turns of TURN; the results in order. */
async function runPairs(call: Call, keys: string[][], pairs: number, keep: boolean): Promise<unknown[]> {
  const out: unknown[] = [];
  for (let i = 0; i < pairs; i += TURN) {
    const ps: Promise<unknown>[] = [];
    for (let j = i; j < Math.min(pairs, i + TURN); j++) {
      const ks = keys[j % keys.length]!;
      const id = `r${seq++ % 1000}`;
      ps.push(call('admit', [...ks, 1_764_650_000_000 + j, 30_000, id, 250]));
      ps.push(call('settle', [...ks, id, 250, 180 + (j % 7)]));
    }
    const rs = await Promise.all(ps);
    if (keep) out.push(...rs);
  }
  return out;
}

async function redisCpuUs(info: Redis): Promise<number> {
  const s = await info.info('cpu');
  const f = (k: string) => Number(new RegExp(`${k}:([\\d.]+)`).exec(s)?.[1] ?? 0);
  return (f('used_cpu_user') + f('used_cpu_sys')) * 1e6;
}

const tag = `anima-micro:${randomBytes(4).toString('hex')}:`;
const info = new Redis(URL);
const ioredis = new Redis(URL, { enableAutoPipelining: true }) as Redis & {
  admit(...a: Array<string | number>): Promise<unknown>;
  settle(...a: Array<string | number>): Promise<unknown>;
};
ioredis.defineCommand('admit', { numberOfKeys: 4, lua: ADMIT });
ioredis.defineCommand('settle', { numberOfKeys: 4, lua: SETTLE });
const pipeClient = new Redis(URL, { lazyConnect: true });
const tick = new TickPipeline(pipeClient);
tick.define('admit', ADMIT, 4);
tick.define('settle', SETTLE, 4);
await tick.ready();

const viaTick: Call = (name, args) => tick.call(name, args);
const viaIoredis: Call = (name, args) => ioredis[name](...args);

try {
  seq = 0;
  const a = await runPairs(viaTick, keysFor(tag + 'check-a:'), 1_000, true);
  seq = 0;
  const b = await runPairs(viaIoredis, keysFor(tag + 'check-b:'), 1_000, true);
  sameOutput('script results', a, b);

  const redisUs = new Map<string, number[]>();
  const impl = (name: string, call: Call, prefix: string): Impl => {
    const keys = keysFor(prefix);
    redisUs.set(name, []);
    return {
      name,
      async run(n) {
        const r0 = await redisCpuUs(info);
        await runPairs(call, keys, n, false);
        redisUs.get(name)!.push(((await redisCpuUs(info)) - r0) / n);
      },
    };
  };
  const row = await ab(
    'resp',
    `admit + settle pair, ${TURN} per turn`,
    impl('TickPipeline', viaTick, tag + 'a:'),
    impl('ioredis auto-pipelining', viaIoredis, tag + 'b:'),
    PAIRS,
  );
  row.extra = {
    // The first sample of each is its warm-up run.
    'Redis µs/pair TickPipeline': median(redisUs.get('TickPipeline')!.slice(1)),
    ioredis: median(redisUs.get('ioredis auto-pipelining')!.slice(1)),
  };
  report([row]);
} finally {
  const doomed = await info.keys(tag + '*');
  if (doomed.length) await info.del(...doomed);
  tick.close();
  info.disconnect();
  ioredis.disconnect();
  pipeClient.disconnect();
}
