/**
 * The request log's writer alone against PostgreSQL: records N requests shaped like the overhead bench's
 * JSON chat (a key, an alias, a channel, tokens, cost; one in ten with a failed first channel in its
 * route) through the real RequestLog, flushes them in batches of `--batch`, and reports the PostgreSQL
 * CPU per row of this bench's own database (its backends' /proc CPU, as bench/journal-writer.ts does).
 *
 *   node dist/bench/request-log.js [--n 20000] [--batch 64,1000] [--rounds 2] [--prefill 200000]
 *
 * PG_URL (default postgres://postgres@127.0.0.1:5432/postgres) is the admin connection: the bench creates
 * and drops its own database there.
 */
import pino from 'pino';
import { RequestLog } from '../src/observability/request-log.js';
import { arg, cpuOf, scratchDatabase, spent } from './scratch-db.js';

const N = Number(arg('n', '20000'));
const BATCHES = arg('batch', '64,1000').split(',').map(Number);
const ROUNDS = Number(arg('rounds', '2'));
/** Rows written before measuring: today's partition and its indexes at a realistic size. */
const PREFILL = Number(arg('prefill', '0'));
const KEYS = 20;
const PG_URL = process.env.PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

let seq = 0;
/** A finished request as RequestLog.record sees it (the fields it reads). */
function ctx(i: number): Parameters<RequestLog['record']>[0] {
  const failedFirst = i % 10 === 0;
  return {
    id: `req_bench_${(seq++).toString(36)}_${i}`,
    elapsedMs: () => 3.2 + (i % 17),
    app: { id: `app${i % KEYS}` },
    key: { id: `key${i % KEYS}` },
    aliasName: 'gpt-bench',
    dialect: 'openai',
    channel: `ch${i % 3}`,
    upstreamModel: 'gpt-4o-mini',
    stream: false,
    attempts: failedFirst ? 2 : 1,
    route: failedFirst ? [{ channel: 'ch9', what: 'failed', reason: 'status', status: 503, ms: 12.5 }] : [],
    status: 200,
    outcome: failedFirst ? 'fallback' : 'ok',
    error: null,
    usage: { inputTokens: 12, outputTokens: 34 },
    costMicros: 1_000n + BigInt(i % 5),
    saleMicros: 1_500n + BigInt(i % 7),
    ttfbMs: 2.5,
    cacheHit: false,
    clientAborted: false,
  } as unknown as Parameters<RequestLog['record']>[0];
}

async function main(): Promise<void> {
  const scratch = await scratchDatabase(PG_URL, 'anima_bench_rl_', 2);
  const { dbh } = scratch;
  const log = pino({ level: 'silent' });
  const writer = (batch: number) =>
    new RequestLog(dbh.db, log, {
      batch,
      flushMs: 3_600_000,
      maxBuffered: N + PREFILL + 1,
      retentionDays: 14,
      instance: 'bench',
    });
  try {
    const pre = writer(1000);
    for (let i = 0; i < PREFILL; i++) pre.record(ctx(i));
    await pre.flush();
    console.log(`request log: ${N} rows per run, ${KEYS} keys, ${PREFILL} rows written before`);
    console.log('batch | rows/s | PostgreSQL CPU µs/row');
    for (let round = 0; round < ROUNDS; round++) {
      for (const batch of BATCHES) {
        const w = writer(batch);
        // Warm-up: partitions made, the pool's connections open, plans cached.
        for (let i = 0; i < batch * 2; i++) w.record(ctx(i));
        await w.flush();
        const pids = await scratch.pids();
        const c0 = cpuOf(pids);
        const t0 = performance.now();
        for (let i = 0; i < N; i++) w.record(ctx(i));
        await w.flush();
        const ms = performance.now() - t0;
        const c1 = cpuOf(pids);
        if (w.written !== N + batch * 2) throw new Error(`wrote ${w.written} rows, not ${N + batch * 2}`);
        const pgMs = spent(c0, c1);
        console.log(`${batch} | ${Math.round((N / ms) * 1000)} | ${((pgMs * 1000) / N).toFixed(1)}`);
      }
    }
  } finally {
    await scratch.drop();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
