/**
 * What an idle instance's pollers cost PostgreSQL. Two parts, on a database of the bench's own (its
 * backends' run time from /proc/<pid>/schedstat), with a realistic table behind the claims
 * (`--done` finished tasks and delivered webhooks, a few tasks and retries waiting for later):
 *
 *  1. per statement: N executions of the fixed-rate pollers' statements (the task claim and the webhook
 *     claim as they were, unnamed; the billing sweep's select) against the claims that replace them, sent
 *     unnamed and named (prepared once per connection);
 *  2. per idle second: `--seconds` of the old cadence (task claim every `--task-poll` ms, webhook claim
 *     every `--webhook-poll` ms, sweep every 5 s) against the real TaskWorker and WebhookDeliverer, idle,
 *     at their default backstops.
 *
 *   node dist/bench/idle-pollers.js [--n 3000] [--seconds 20] [--done 20000] [--task-poll 500] [--webhook-poll 1000]
 *
 * PG_URL (default postgres://postgres@127.0.0.1:5432/postgres) is the admin connection.
 */
import { CompiledQuery, sql } from 'kysely';
import pino from 'pino';
import type { Db } from '../src/store/db.js';
import { BILLING_SWEEP_AGE_MS, TASK_CLAIM, TaskStore } from '../src/tasks/store.js';
import { WEBHOOK_CLAIM, WebhookDeliverer } from '../src/tasks/webhooks.js';
import { TaskWorker } from '../src/tasks/worker.js';
import { readFileSync } from 'node:fs';
import { arg, scratchDatabase } from './scratch-db.js';

const N = Number(arg('n', '3000'));
const SECONDS = Number(arg('seconds', '20'));
const DONE = Number(arg('done', '20000'));
const TASK_POLL = Number(arg('task-poll', '500'));
const WEBHOOK_POLL = Number(arg('webhook-poll', '1000'));
const PG_URL = process.env.PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const OWNER = 'w_bench00000';

/**
 * CPU (ms) the pids have run, from /proc/<pid>/schedstat (nanoseconds): an idle poller spends less than
 * /proc/<pid>/stat's 10 ms tick in a whole run.
 */
function cpuNs(pids: number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const pid of pids) {
    try {
      out.set(pid, Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6);
    } catch {
      // ended between the listing and the read
    }
  }
  return out;
}

function spent(before: Map<number, number>, after: Map<number, number>): number {
  let ms = 0;
  for (const [pid, v] of after) ms += v - (before.get(pid) ?? v);
  return ms;
}

/** The claims as the fixed-rate pollers sent them (kysely `sql`, unnamed, `RETURNING *`). */
const oldTaskClaim = (db: Db) =>
  sql`
      UPDATE task SET
        status = CASE WHEN kind IN ('image', 'video', 'music') THEN status ELSE 'running' END,
        transitions = CASE WHEN kind IN ('image', 'video', 'music') OR status = 'running' THEN transitions ELSE transitions || jsonb_build_array(jsonb_build_object('status', ${'running'}::text, 'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))) END,
        lease_owner = ${OWNER}, lease_until = now() + ${60_000} * interval '1 millisecond',
        attempts = attempts + 1, updated_at = now()
      WHERE id IN (
        SELECT id FROM task
        WHERE status IN ('queued', 'submitted', 'running') AND not_before <= now()
          AND (lease_owner IS NULL OR lease_until < now())
        ORDER BY not_before
        LIMIT ${16}
        FOR UPDATE SKIP LOCKED)
      RETURNING *`.execute(db);
const oldWebhookClaim = (db: Db) =>
  sql`
      UPDATE webhook_delivery SET lease_until = now() + interval '30 seconds', attempts = attempts + 1
      WHERE id IN (
        SELECT id FROM webhook_delivery
        WHERE status = 'pending' AND next_at <= now() AND (lease_until IS NULL OR lease_until < now())
        ORDER BY next_at LIMIT 20 FOR UPDATE SKIP LOCKED)
      RETURNING id, task_id, url, attempts`.execute(db);

async function seed(db: Db): Promise<void> {
  await sql`INSERT INTO task (id, kind, app_id, key_id, status, request, deadline, completed_at, billing_state,
      created_at, updated_at)
    SELECT 'task_done_' || i, CASE WHEN i % 3 = 0 THEN 'video' ELSE 'chat' END, 'app' || (i % 20), 'key' || (i % 50),
      CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'succeeded' END, '{}', now(), now() - (i || ' seconds')::interval,
      CASE WHEN i % 3 = 0 THEN 'done' ELSE 'none' END, now() - (i || ' seconds')::interval, now()
    FROM generate_series(1, ${DONE}) AS i`.execute(db);
  // Waiting for later: far enough out that no claim takes them while the bench runs.
  await sql`INSERT INTO task (id, kind, app_id, key_id, status, request, deadline, not_before)
    SELECT 'task_later_' || i, 'video', 'app1', 'key1', 'submitted', '{}', now() + interval '2 days',
      now() + interval '1 day' + (i || ' seconds')::interval
    FROM generate_series(1, 20) AS i`.execute(db);
  await sql`INSERT INTO webhook_delivery (id, task_id, url, status, attempts, next_at, delivered_at)
    SELECT 'whd_' || i, 'task_done_' || i, 'https://example.com/hook', CASE WHEN i <= 5 THEN 'pending' ELSE 'delivered' END,
      1, CASE WHEN i <= 5 THEN now() + interval '1 day' ELSE now() END, now()
    FROM generate_series(1, ${DONE}) AS i`.execute(db);
  await sql`ANALYZE task`.execute(db);
  await sql`ANALYZE webhook_delivery`.execute(db);
}

async function main(): Promise<void> {
  const scratch = await scratchDatabase(PG_URL, 'anima_bench_idle_', 1);
  const { dbh } = scratch;
  const db = dbh.db;
  try {
    await seed(db);
    const store = new TaskStore(db);
    const params = [OWNER, 16, 60_000, BILLING_SWEEP_AGE_MS];
    const unnamed = (text: string, p: unknown[]) => () => db.executeQuery(CompiledQuery.raw(text, p));
    const cases: Array<[string, () => Promise<unknown>]> = [
      ['task claim, before (unnamed)', () => oldTaskClaim(db)],
      ['task claim + next due + billing, unnamed', unnamed(TASK_CLAIM.text!, params)],
      ['task claim + next due + billing, named', () => TASK_CLAIM.run(db, params)],
      ['webhook claim, before (unnamed)', () => oldWebhookClaim(db)],
      ['webhook claim + next due, unnamed', unnamed(WEBHOOK_CLAIM.text!, [])],
      ['webhook claim + next due, named', () => WEBHOOK_CLAIM.run(db)],
      ['billing sweep select (pendingBilling)', () => store.pendingBilling(BILLING_SWEEP_AGE_MS)],
    ];
    const perCall = new Map<string, number>();
    console.log(`per statement, ${N} calls each, PostgreSQL CPU (its backends' run time):`);
    for (const [name, fn] of cases) {
      for (let i = 0; i < 200; i++) await fn(); // warm: the connection, the prepared plan
      const pids = await scratch.pids();
      const before = cpuNs(pids);
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < N; i++) await fn();
      const wallUs = Number(process.hrtime.bigint() - t0) / 1e3 / N;
      const us = (spent(before, cpuNs(pids)) * 1000) / N;
      perCall.set(name, us);
      console.log(
        `  ${name.padEnd(44)} ${us.toFixed(1).padStart(7)} µs CPU  ${wallUs.toFixed(1).padStart(7)} µs round trip`,
      );
    }

    const oldPerSec =
      (1000 / TASK_POLL) * perCall.get('task claim, before (unnamed)')! +
      (1000 / WEBHOOK_POLL) * perCall.get('webhook claim, before (unnamed)')! +
      0.2 * perCall.get('billing sweep select (pendingBilling)')!;
    console.log(
      `\nprojected idle cost per instance: before ${(oldPerSec / 1000).toFixed(3)} ms CPU/s ` +
        `(claims every ${TASK_POLL} and ${WEBHOOK_POLL} ms, sweep every 5 s)`,
    );

    // Measured: the old cadence, then the real pollers idle, each for SECONDS.
    const idle = async (label: string, start: () => () => Promise<void>) => {
      const pids = await scratch.pids();
      const before = cpuNs(pids);
      const stop = start();
      await new Promise((r) => setTimeout(r, SECONDS * 1000));
      await stop();
      const ms = spent(before, cpuNs(pids));
      console.log(`  ${label.padEnd(44)} ${(ms / SECONDS).toFixed(3)} ms CPU/s`);
    };
    console.log(`\nmeasured idle, ${SECONDS} s each:`);
    await idle('before: fixed-rate polls', () => {
      const timers = [
        setInterval(() => void oldTaskClaim(db).catch(() => {}), TASK_POLL),
        setInterval(() => void oldWebhookClaim(db).catch(() => {}), WEBHOOK_POLL),
        setInterval(() => void store.pendingBilling(BILLING_SWEEP_AGE_MS).catch(() => {}), 5_000),
      ];
      return async () => timers.forEach(clearInterval);
    });
    await idle('after: TaskWorker + WebhookDeliverer', () => {
      const log = pino({ level: 'silent' });
      const sweep = () => store.pendingBilling(BILLING_SWEEP_AGE_MS).then(() => {});
      const worker = new TaskWorker(
        store,
        () => Promise.reject(new Error('idle')),
        log,
        { pollMs: TASK_POLL, leaseMs: 60_000, concurrency: 16 },
        () => {},
        { step: () => Promise.resolve(), sweep },
      );
      const hooks = new WebhookDeliverer(db, () => null, log, {
        pollMs: WEBHOOK_POLL,
        maxAttempts: 10,
        backoffMs: 1_000,
        timeoutMs: 5_000,
      });
      worker.start();
      hooks.start();
      return async () => {
        hooks.stop();
        await worker.stop(0);
      };
    });
  } finally {
    await scratch.drop();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
