/**
 * The idle pollers against a real database, on PostgreSQL (named statements) and PGlite (the embedded
 * default, unnamed): with a long backstop, work this process puts off is still claimed at its due time
 * (a requeued task, a webhook retry); an idle worker claims once per backstop; a lease whose holder died
 * is taken back within the backstop. Every wait is on an event (a run, a delivery, a count of claims).
 */
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OutboundPolicy } from '../../src/lib/outbound.js';
import type { Db, DbHandle } from '../../src/store/db.js';
import { NamedStatement } from '../../src/store/named-statement.js';
import { type Claim, type TaskRow, TaskStore } from '../../src/tasks/store.js';
import { WebhookDeliverer } from '../../src/tasks/webhooks.js';
import { type RunOutcome, TaskWorker } from '../../src/tasks/worker.js';
import { type TestDatabase, createTestDatabase, openTestDb, waitFor } from '../helpers.js';

const silent = pino({ level: 'silent' });
const HOUR = 3_600_000;

/** A store whose claims are counted (when each started). */
function countedStore(db: Db): { store: TaskStore; claims: number[] } {
  const store = new TaskStore(db);
  const claims: number[] = [];
  const claim = store.claim.bind(store);
  store.claim = (owner: string, n: number, leaseMs: number): Promise<Claim> => {
    claims.push(Date.now());
    return claim(owner, n, leaseMs);
  };
  return { store, claims };
}

/** The same handle, with every statement sent through it counted. */
function countedDb(db: Db): { db: Db; statements: string[]; names: Array<string | null> } {
  const statements: string[] = [];
  const names: Array<string | null> = [];
  const wrapped = new Proxy(db, {
    get(target, prop) {
      if (prop === 'executeQuery')
        return (q: { sql: unknown }, ...rest: unknown[]) => {
          const s = q.sql as string | { name: string; text: string };
          statements.push(typeof s === 'string' ? s : s.text);
          names.push(typeof s === 'string' ? null : s.name);
          return (target.executeQuery as (...a: unknown[]) => unknown)(q, ...rest);
        };
      const v = Reflect.get(target, prop) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { db: wrapped, statements, names };
}

const newTask = (store: TaskStore, notBefore?: Date) =>
  store.create({
    kind: 'chat',
    appId: 'app_idle',
    keyId: 'key_idle',
    request: { model: 'm', messages: [] },
    deadline: new Date(Date.now() + HOUR),
    ...(notBefore ? { notBefore } : {}),
  });

describe.each(['postgres', 'pglite'] as const)('idle pollers on %s', (kind) => {
  let tdb: TestDatabase | undefined;
  let dbh: DbHandle;
  let rx: Server;
  let rxUrl = '';
  const arrivals: number[] = [];
  let failNext = 0;

  beforeAll(async () => {
    if (kind === 'postgres') tdb = await createTestDatabase();
    dbh = await openTestDb(tdb?.url);
    rx = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        arrivals.push(Date.now());
        res.statusCode = failNext-- > 0 ? 500 : 200;
        res.end();
      });
    });
    await new Promise<void>((r) => rx.listen(0, '127.0.0.1', r));
    rxUrl = `http://127.0.0.1:${(rx.address() as AddressInfo).port}/hook`;
  }, 60_000);

  afterAll(async () => {
    await new Promise((r) => rx?.close(r));
    await dbh?.close();
    await tdb?.drop();
  });

  /** Nothing left over from the case before: each case starts with an empty queue. */
  const clear = async () => {
    await dbh.db.deleteFrom('webhook_delivery').execute();
    await dbh.db.deleteFrom('task').execute();
  };

  it("the claim statement goes named (PGlite's dialect runs its text)", async () => {
    await clear();
    const c = countedDb(dbh.db);
    const stmt = new NamedStatement<{ n: number }>('anima_idle_probe', 'SELECT $1::integer + 1 AS n');
    for (let i = 0; i < 3; i++) expect(await stmt.run(c.db, [i])).toEqual([{ n: i + 1 }]);
    const sent = c.names.filter((_, i) => c.statements[i]!.includes('$1::integer'));
    expect(sent).toEqual(Array(3).fill('anima_idle_probe'));
    if (kind === 'postgres') {
      // The server keeps it: one pooled connection served these, and serves this too.
      const kept = await sql<{ name: string }>`SELECT name FROM pg_prepared_statements`.execute(dbh.db);
      expect(kept.rows.map((r) => r.name)).toContain('anima_idle_probe');
    }
    const store = new TaskStore(dbh.db);
    const t = await newTask(store);
    const claim = await store.claim('w_probe', 5, 60_000);
    expect(claim.tasks.map((x) => x.id)).toEqual([t.id]);
    expect(claim.tasks[0]).toMatchObject({ status: 'running', lease_owner: 'w_probe', attempts: 1 });
    // A row exactly like selectAll's: no extra columns from the claim's own answers.
    expect(Object.keys(claim.tasks[0]!).sort()).toEqual(Object.keys((await store.byId(t.id))!).sort());
    expect(claim.nextInMs).toBeNull();
    const later = await newTask(store, new Date(Date.now() + 60_000));
    const again = await store.claim('w_probe', 5, 60_000);
    expect(again.tasks).toEqual([]);
    expect(again.nextInMs).toBeGreaterThan(55_000);
    expect(again.nextInMs).toBeLessThanOrEqual(60_000);
    expect(again.billingDue).toBe(false);
    expect(later.id).toBeTruthy();
  });

  it('(a) a task requeued 300 ms ahead is claimed within 100 ms of its due time, with a 60 s backstop', async () => {
    await clear();
    const { store, claims } = countedStore(dbh.db);
    let dueAt = 0;
    const requeue = store.requeue.bind(store);
    store.requeue = (id: string, owner: string, notBefore: Date) => {
      dueAt = notBefore.getTime();
      return requeue(id, owner, notBefore);
    };
    const runs: number[] = [];
    const run = (): Promise<RunOutcome> => {
      runs.push(Date.now());
      return Promise.resolve(
        runs.length === 1
          ? { ok: false, retryAfterMs: 300 }
          : { ok: true, status: 200, body: { done: true } },
      );
    };
    const t = await newTask(store);
    const w = new TaskWorker(store, run, silent, {
      pollMs: 20,
      idleMs: 60_000,
      leaseMs: 5_000,
      concurrency: 4,
    });
    w.start();
    try {
      await waitFor(async () => (await store.byId(t.id))?.status === 'succeeded', 10_000);
      expect(runs).toHaveLength(2);
      const late = runs[1]! - dueAt;
      expect(late).toBeGreaterThanOrEqual(-5);
      expect(late).toBeLessThan(100);
      // The first claim, the one at the due time; nothing in between.
      expect(claims.length).toBeLessThanOrEqual(3);
    } finally {
      await w.stop(1_000);
    }
  });

  it('(b) a webhook retry scheduled for T is delivered soon after T, with a 60 s backstop', async () => {
    await clear();
    const store = new TaskStore(dbh.db);
    const results: string[] = [];
    const d = new WebhookDeliverer(
      dbh.db,
      () => null,
      silent,
      {
        pollMs: 20,
        idleMs: 60_000,
        maxAttempts: 5,
        backoffMs: 300,
        timeoutMs: 5_000,
        outbound: new OutboundPolicy({ allow: ['127.0.0.1'] }),
      },
      (r) => results.push(r),
    );
    d.start();
    try {
      arrivals.length = 0;
      failNext = 1;
      const t = await newTask(store);
      // Queued in this process: delivered at once (the first attempt answers 500).
      await store.enqueueWebhook(t.id, rxUrl);
      await waitFor(() => results.includes('retry'), 10_000);
      const row = await dbh.db
        .selectFrom('webhook_delivery')
        .select(['next_at', 'status'])
        .where('task_id', '=', t.id)
        .executeTakeFirstOrThrow();
      const due = new Date(row.next_at).getTime();
      await waitFor(() => results.includes('delivered'), 10_000);
      expect(arrivals).toHaveLength(2);
      const late = arrivals[1]! - due;
      expect(late).toBeGreaterThanOrEqual(-5);
      expect(late).toBeLessThan(100);
    } finally {
      d.stop();
    }
  });

  it('(c) an idle worker claims once per backstop, and an idle deliverer too', async () => {
    await clear();
    const { store, claims } = countedStore(dbh.db);
    // A 10 ms poll: the fixed-rate poller would have claimed 75 times in the time these four take.
    const w = new TaskWorker(store, () => Promise.reject(new Error('no task')), silent, {
      pollMs: 10,
      idleMs: 250,
      leaseMs: 5_000,
      concurrency: 4,
    });
    const c = countedDb(dbh.db);
    const d = new WebhookDeliverer(c.db, () => null, silent, {
      pollMs: 10,
      idleMs: 250,
      maxAttempts: 5,
      backoffMs: 300,
      timeoutMs: 5_000,
    });
    const deliveryClaims = () => c.statements.filter((s) => s.includes('UPDATE webhook_delivery')).length;
    w.start();
    d.start();
    try {
      await waitFor(() => claims.length >= 4 && deliveryClaims() >= 4, 10_000);
      const span = claims[3]! - claims[0]!;
      // Three gaps of one backstop each (timers fire late, never early).
      expect(span).toBeGreaterThanOrEqual(3 * 250 - 5);
      expect(claims.length).toBeLessThanOrEqual(5);
      expect(deliveryClaims()).toBeLessThanOrEqual(5);
    } finally {
      await w.stop(0);
      d.stop();
    }
  });

  it('(d) a lease whose holder died is taken back within the backstop', async () => {
    await clear();
    const { store, claims } = countedStore(dbh.db);
    const t = await newTask(store);
    // Another instance claims it for 300 ms and dies.
    const dead = await new TaskStore(dbh.db).claim('w_dead', 1, 300);
    expect(dead.tasks.map((x) => x.id)).toEqual([t.id]);
    const leaseEnds = new Date(dead.tasks[0]!.lease_until!).getTime();
    const runs: Array<{ at: number; task: TaskRow }> = [];
    const w = new TaskWorker(
      store,
      (task) => {
        runs.push({ at: Date.now(), task });
        return Promise.resolve({ ok: true, status: 200, body: {} });
      },
      silent,
      { pollMs: 20, idleMs: 500, leaseMs: 5_000, concurrency: 4 },
    );
    w.start();
    try {
      await waitFor(async () => (await store.byId(t.id))?.status === 'succeeded', 10_000);
      expect(runs).toHaveLength(1);
      expect(runs[0]!.task.attempts).toBe(2);
      expect(runs[0]!.at - leaseEnds).toBeLessThan(500 + 100);
      // Its first claim found the task held; the next one, a backstop later, took it back.
      expect(claims.length).toBeLessThanOrEqual(3);
    } finally {
      await w.stop(1_000);
    }
  });

  it('a due time told by another store on the same handle (a media step) reaches the worker', async () => {
    await clear();
    const { store, claims } = countedStore(dbh.db);
    const runs: number[] = [];
    const w = new TaskWorker(
      store,
      () => {
        runs.push(Date.now());
        return Promise.resolve({ ok: true, status: 200, body: {} });
      },
      silent,
      { pollMs: 20, idleMs: 60_000, leaseMs: 5_000, concurrency: 4 },
    );
    w.start();
    try {
      await waitFor(() => claims.length >= 1);
      // Created for later through another TaskStore (as the HTTP routes do): no wake, just its due time.
      const other = new TaskStore(dbh.db);
      const due = Date.now() + 250;
      const t = await newTask(other, new Date(due));
      await waitFor(async () => (await store.byId(t.id))?.status === 'succeeded', 10_000);
      expect(runs[0]! - due).toBeLessThan(100);
    } finally {
      await w.stop(1_000);
    }
  });
});
