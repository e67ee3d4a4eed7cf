/**
 * The journal writer alone against PostgreSQL: settles N billing records into a backend (the in-process
 * queue, or Redis streams with `--redis`), lets a JournalWriter turn them into sale journals in batches,
 * and reports the PostgreSQL CPU per journal of this bench's own database (its backends' /proc CPU, so
 * other databases' load on a shared server stays out), and with `--redis` the Redis commands and CPU per
 * record. Quieter than the overhead bench for work on the ledger's write path.
 *
 *   node dist/bench/journal-writer.js [--n 20000] [--batch 100,500] [--apps 20] [--redis] [--rounds 2]
 *     [--prefill 100000]
 *
 * PG_URL (default postgres://postgres@127.0.0.1:5432/postgres) is the admin connection: the bench creates
 * and drops its own database there. REDIS_URL for `--redis`.
 */
import pino from 'pino';
import { Redis } from 'ioredis';
import { systemClock } from '../src/lib/clock.js';
import { Ledger } from '../src/billing/ledger.js';
import { MemoryBilling } from '../src/billing/memory.js';
import { RedisBilling } from '../src/billing/redis.js';
import { FUNDING, saleJournal, walletAccount } from '../src/billing/journal.js';
import type { BillingBackend, BillingRecord } from '../src/billing/types.js';
import { JournalWriter } from '../src/billing/writer.js';
import { arg, cpuOf, scratchDatabase, spent } from './scratch-db.js';

const N = Number(arg('n', '20000'));
const BATCHES = arg('batch', '100,500').split(',').map(Number);
const APPS = Number(arg('apps', '20'));
const ROUNDS = Number(arg('rounds', '2'));
/** Journals written before measuring: a ledger that has been in use (costs that grow with it show). */
const PREFILL = Number(arg('prefill', '0'));
const REDIS = process.argv.includes('--redis');
const PG_URL = process.env.PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A record shaped like the gateway's (src/billing/request.ts): half the apps prepaid. */
function record(i: number, round: string): BillingRecord {
  const app = `app${i % APPS}`;
  return {
    id: `bench-${round}-${i}`,
    requestId: `bench-${round}-${i}`,
    appId: app,
    prepaid: i % APPS < APPS / 2,
    alias: 'gpt-bench',
    channel: `ch${i % 3}`,
    sale: 1_500n + BigInt(i % 7),
    cost: 1_000n + BigInt(i % 5),
    usage: {
      input_tokens: 12,
      output_tokens: 34,
      cached_tokens: 0,
      key_id: `key${i % APPS}`,
      upstream_model: 'gpt-4o-mini',
      attempts: 1,
    },
    at: Date.now(),
  };
}

async function main(): Promise<void> {
  const scratch = await scratchDatabase(PG_URL, 'anima_bench_jw_', 4);
  const { name, dbh } = scratch;
  const redis = REDIS ? new Redis(REDIS_URL) : null;
  const prefix = `anima-bench-jw:${name}:`;
  try {
    const ledger = new Ledger(dbh.db);
    await ledger.ensureAccount(FUNDING);
    const log = pino({ level: 'silent' });
    for (let i = 0; i < PREFILL; i += 1000) {
      const js = Array.from({ length: Math.min(1000, PREFILL - i) }, (_, k) =>
        saleJournal({ ...record(i + k, 'prefill'), prepaid: false })!,
      );
      for (const j of js) for (const a of j.accounts) await ledger.ensureAccount(a);
      await ledger.postBatch(js.map((j) => j.spec));
    }
    console.log(
      `journal writer: ${N} records per run, ${APPS} apps (half prepaid), backend ${REDIS ? 'redis' : 'memory'}, ledger prefilled with ${PREFILL} journals`,
    );
    console.log('batch | journals/s | PostgreSQL CPU µs/journal | Redis cmds/record | Redis CPU µs/record');
    for (let round = 0; round < ROUNDS; round++) {
      for (const batch of BATCHES) {
        const backend: BillingBackend = redis
          ? new RedisBilling(redis, prefix, 'bench')
          : new MemoryBilling(systemClock);
        for (let a = 0; a < APPS; a++) {
          if (a >= APPS / 2) continue;
          const w = walletAccount(`app${a}`);
          await ledger.ensureAccount(w);
          await ledger.postJournal({
            idemKey: `fund:${round}:${batch}:${a}`,
            kind: 'fund',
            entries: [
              { account: FUNDING.code, debit: 10n ** 12n },
              { account: w.code, credit: 10n ** 12n },
            ],
          });
          const b = await ledger.balance(w.code);
          await backend.initWallet(`app${a}`, b.available, b.debitsPosted + b.creditsPosted);
        }
        const writer = new JournalWriter(backend, ledger, log, { batch, idleMs: 50, retryMs: 200 });
        // Warm-up: accounts created, plans cached, the pool's connections open.
        const tag = `${round}-${batch}`;
        for (let i = 0; i < batch * 2; i++) await backend.settle(record(i, `w${tag}`), null);
        await writer.flush();
        const recs = Array.from({ length: N }, (_, i) => record(i, tag));
        for (let i = 0; i < recs.length; i += 1000)
          await Promise.all(recs.slice(i, i + 1000).map((r) => backend.settle(r, null)));
        const pids = await scratch.pids();
        const r0 = redis ? await redisStats(redis) : null;
        const c0 = cpuOf(pids);
        const t0 = performance.now();
        await writer.flush(600_000);
        const ms = performance.now() - t0;
        const c1 = cpuOf(pids);
        const r1 = redis ? await redisStats(redis) : null;
        const pgMs = spent(c0, c1);
        const redisCols =
          r0 && r1
            ? `${((r1.calls - r0.calls) / N).toFixed(2)} | ${(((r1.cpuS - r0.cpuS) * 1e6) / N).toFixed(1)}`
            : '- | -';
        console.log(
          `${batch} | ${Math.round((N / ms) * 1000)} | ${((pgMs * 1000) / N).toFixed(1)} | ${redisCols}`,
        );
        backend.close();
      }
    }
    const tb = await ledger.trialBalance();
    if (!tb.balanced || tb.mismatches.length) throw new Error('trial balance failed after the bench');
  } finally {
    if (redis) {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length) await redis.del(...keys);
      redis.disconnect();
    }
    await scratch.drop();
  }
}

/** Redis server CPU (s) and command calls so far (the two INFO calls themselves left out by the caller's delta). */
async function redisStats(r: Redis): Promise<{ cpuS: number; calls: number }> {
  const [cpu, cs] = await Promise.all([r.info('cpu'), r.info('commandstats')]);
  const num = (k: string) => Number(new RegExp(`^${k}:([\\d.]+)`, 'm').exec(cpu)?.[1] ?? 0);
  let calls = 0;
  for (const m of cs.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) if (m[1] !== 'info') calls += Number(m[2]);
  return { cpuS: num('used_cpu_sys') + num('used_cpu_user'), calls };
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
