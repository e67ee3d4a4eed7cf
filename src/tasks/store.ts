/**
 * The durable task store: rows in the database, moved between states only by compare-and-swap
 * (`UPDATE … WHERE status = $from AND lease_owner = $me`), so two instances never complete one task and
 * a restart loses none. Workers claim tasks with a lease; a dead worker's lease runs out and another
 * instance claims the task again (execution is at-least-once, completion exactly once).
 */
import { sql } from 'kysely';
import { randomId } from '../core/ids.js';
import type { Db } from '../store/db.js';
import { NamedStatement } from '../store/named-statement.js';

export type TaskStatus =
  'queued' | 'submitted' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'expired';

export interface TaskRow {
  id: string;
  kind: string;
  app_id: string;
  key_id: string;
  status: TaskStatus;
  request: unknown;
  result: unknown;
  result_status: number | null;
  error: unknown;
  attempts: number;
  lease_owner: string | null;
  lease_until: Date | null;
  not_before: Date;
  deadline: Date;
  created_at: Date;
  updated_at: Date;
  completed_at: Date | null;
  alias: string | null;
  channel: string | null;
  upstream_id: string | null;
  progress: number;
  idempotency_key: string | null;
  webhook_url: string | null;
  cancel_requested_at: Date | null;
  transitions: Array<{ status: string; at: string }>;
  billing: unknown;
  billing_state: 'none' | 'pending' | 'done';
  polls: number;
}

/** Tasks whose kind is a media generation (multi-step: submit, then polls) rather than one relayed call. */
export const MEDIA_KINDS = ['image', 'video', 'music'] as const;
export type MediaKind = (typeof MEDIA_KINDS)[number];
export const isMediaKind = (k: string): k is MediaKind => (MEDIA_KINDS as readonly string[]).includes(k);
export const ACTIVE: TaskStatus[] = ['queued', 'submitted', 'running'];

/** What a worker's step leaves on the task (status and progress, the upstream job, the next poll). */
export interface StepPatch {
  status?: 'submitted' | 'running';
  progress?: number;
  upstreamId?: string;
  channel?: string;
  notBefore: Date;
}

const iso = (d: Date | string | null) => (d ? new Date(d).toISOString() : null);

/** The API shape of a task (GET /v1/tasks/{id}). */
export function taskView(t: TaskRow): Record<string, unknown> {
  return {
    id: t.id,
    object: 'task',
    kind: t.kind,
    status: t.status,
    attempts: t.attempts,
    ...(isMediaKind(t.kind) ? { progress: t.progress, model: t.alias, transitions: t.transitions } : {}),
    created_at: iso(t.created_at),
    completed_at: iso(t.completed_at),
    ...(t.result !== null && t.result !== undefined
      ? { result: t.result, result_status: t.result_status }
      : {}),
    ...(t.error ? { error: t.error } : {}),
  };
}

const STAMP = `to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

/** Appends a status change, with its time, to the task's transitions. */
const transition = (status: string) =>
  sql<string>`transitions || jsonb_build_array(jsonb_build_object('status', ${status}::text, 'at', ${sql.raw(STAMP)}))`;

/** Succeeded tasks unsettled for longer than this are the billing sweep's (MediaRunner.sweep). */
export const BILLING_SWEEP_AGE_MS = 5_000;

/** What a claim brings back: the tasks, and what the poller needs to know to sleep until it's needed. */
export interface Claim {
  tasks: TaskRow[];
  /** When the next task not due yet falls due, from now (null: none waiting). */
  nextInMs: number | null;
  /** Some succeeded task has waited longer than BILLING_SWEEP_AGE_MS for its settlement. */
  billingDue: boolean;
}

// Every column of a task, by name: the claim lists them rather than `*`, so a column added later can't
// change the result type of a plan the server keeps prepared (see store/named-statement.ts). A TaskRow field
// missing here fails to compile.
const TASK_COLUMNS = Object.keys({
  id: 1,
  kind: 1,
  app_id: 1,
  key_id: 1,
  status: 1,
  request: 1,
  result: 1,
  result_status: 1,
  error: 1,
  attempts: 1,
  lease_owner: 1,
  lease_until: 1,
  not_before: 1,
  deadline: 1,
  created_at: 1,
  updated_at: 1,
  completed_at: 1,
  alias: 1,
  channel: 1,
  upstream_id: 1,
  progress: 1,
  idempotency_key: 1,
  webhook_url: 1,
  cancel_requested_at: 1,
  transitions: 1,
  billing: 1,
  billing_state: 1,
  polls: 1,
} satisfies Record<keyof TaskRow, 1>);

/**
 * The claim: up to $2 runnable tasks (active, due, and held by nobody or by a holder whose lease ran out),
 * leased to $1 for $3 ms. A relayed (chat) task becomes 'running' for its one run; a media task keeps its
 * status (its worker moves it: submitted, running) and is held only for one step. In the same round trip:
 * how long until the next waiting task falls due, and whether the billing sweep ($4 ms) has work. One row
 * with a null id and the two answers when nothing was claimed.
 */
const CLAIM_TEXT = `WITH claimed AS (
  UPDATE task SET
    status = CASE WHEN kind IN ('image', 'video', 'music') THEN status ELSE 'running' END,
    transitions = CASE WHEN kind IN ('image', 'video', 'music') OR status = 'running' THEN transitions
      ELSE transitions || jsonb_build_array(jsonb_build_object('status', 'running'::text, 'at', ${STAMP})) END,
    lease_owner = $1::text, lease_until = now() + $3::integer * interval '1 millisecond',
    attempts = attempts + 1, updated_at = now()
  WHERE id IN (
    SELECT id FROM task
    WHERE status IN ('queued', 'submitted', 'running') AND not_before <= now()
      AND (lease_owner IS NULL OR lease_until < now())
    ORDER BY not_before
    LIMIT $2::integer
    FOR UPDATE SKIP LOCKED)
  RETURNING ${TASK_COLUMNS.join(', ')})
SELECT claimed.*,
  (SELECT extract(epoch FROM min(not_before) - now()) * 1000 FROM task
    WHERE status IN ('queued', 'submitted', 'running') AND not_before > now())::float8 AS next_in_ms,
  EXISTS (SELECT 1 FROM task WHERE billing_state = 'pending'
    AND completed_at < now() - $4::integer * interval '1 millisecond') AS billing_due
FROM (SELECT 1) AS one LEFT JOIN claimed ON true`;

/** The task claim (exported for bench/idle-pollers.ts). */
export const TASK_CLAIM = new NamedStatement<TaskRow & { next_in_ms: number | null; billing_due: boolean }>(
  'anima_task_claim',
  CLAIM_TEXT,
);

type DueListener = (at: number) => void;
const dueListeners = new WeakMap<Db, Record<'task' | 'webhook', Set<DueListener>>>();

/**
 * Hears of work written through `db` in this process that falls due at a known time (epoch ms): a task
 * requeued or stepped to a later poll, a webhook delivery queued. A poller on the same handle then runs
 * at that time instead of at its backstop; other instances learn of it from their own claims. Told only
 * after the write commits, so any claim that starts later finds it in the database too.
 */
export function onDue(db: Db, kind: 'task' | 'webhook', fn: DueListener): () => void {
  let l = dueListeners.get(db);
  if (!l) dueListeners.set(db, (l = { task: new Set(), webhook: new Set() }));
  const set = l[kind];
  set.add(fn);
  return () => void set.delete(fn);
}

function tellDue(db: Db, kind: 'task' | 'webhook', at: Date | number): void {
  const t = typeof at === 'number' ? at : at.getTime();
  for (const fn of dueListeners.get(db)?.[kind] ?? []) fn(t);
}

export class TaskStore {
  constructor(private readonly db: Db) {}

  /** Tasks this process queued for later, by due time (see `onDue`). */
  onDue(fn: (at: number) => void): () => void {
    return onDue(this.db, 'task', fn);
  }

  /**
   * A media task. With an idempotency key, a second submit with the same key (same app) returns the first
   * task instead of creating another: `existing` says which happened.
   */
  async createMedia(t: {
    kind: MediaKind;
    appId: string;
    keyId: string;
    request: unknown;
    deadline: Date;
    alias: string;
    idempotencyKey?: string | null;
    webhookUrl?: string | null;
  }): Promise<{ task: TaskRow; existing: boolean }> {
    const row = await this.db
      .insertInto('task')
      .values({
        id: 'task_' + randomId(20),
        kind: t.kind,
        app_id: t.appId,
        key_id: t.keyId,
        status: 'queued',
        request: JSON.stringify(t.request),
        deadline: t.deadline,
        alias: t.alias,
        idempotency_key: t.idempotencyKey ?? null,
        webhook_url: t.webhookUrl ?? null,
        transitions: JSON.stringify([{ status: 'queued', at: new Date().toISOString() }]),
      })
      .onConflict((oc) =>
        oc.columns(['app_id', 'idempotency_key']).where('idempotency_key', 'is not', null).doNothing(),
      )
      .returningAll()
      .executeTakeFirst();
    if (row) return { task: row as TaskRow, existing: false };
    const prior = await this.db
      .selectFrom('task')
      .selectAll()
      .where('app_id', '=', t.appId)
      .where('idempotency_key', '=', t.idempotencyKey!)
      .executeTakeFirstOrThrow();
    return { task: prior as TaskRow, existing: true };
  }

  /**
   * A media worker's step: save what it learnt and let the task go until `notBefore` (the next poll).
   * Only the lease holder of a task still active and not asked to cancel can write it.
   */
  async step(id: string, owner: string, p: StepPatch): Promise<boolean> {
    const r = await this.db
      .updateTable('task')
      .set({
        ...(p.status
          ? {
              status: p.status,
              transitions:
                sql`CASE WHEN status = ${p.status} THEN transitions ELSE ${transition(p.status)} END` as never,
            }
          : {}),
        ...(p.progress !== undefined ? { progress: p.progress } : {}),
        ...(p.upstreamId !== undefined ? { upstream_id: p.upstreamId } : {}),
        ...(p.channel !== undefined ? { channel: p.channel } : {}),
        polls: sql`polls + 1` as never,
        not_before: p.notBefore,
        lease_owner: null,
        lease_until: null,
        updated_at: new Date(),
      })
      .where('id', '=', id)
      .where('lease_owner', '=', owner)
      .where('status', 'in', ACTIVE)
      .where('cancel_requested_at', 'is', null)
      .executeTakeFirst();
    const saved = Number(r.numUpdatedRows) > 0;
    if (saved) tellDue(this.db, 'task', p.notBefore);
    return saved;
  }

  /**
   * The app cancels a task. Not leased (between polls): cancelled now, and the row returned with
   * `cancelled: true` so the caller forwards the cancel upstream and releases the reservation. Leased (a
   * worker is mid-step): the request is recorded and the worker cancels at the end of its step.
   */
  async cancel(id: string, appId: string): Promise<{ task: TaskRow; cancelled: boolean } | undefined> {
    const now = await this.db
      .updateTable('task')
      .set({
        status: 'cancelled',
        cancel_requested_at: new Date(),
        completed_at: new Date(),
        updated_at: new Date(),
        lease_owner: null,
        lease_until: null,
        transitions: transition('cancelled') as never,
        error: JSON.stringify({ code: 'cancelled', message: 'cancelled by the caller' }),
      })
      .where('id', '=', id)
      .where('app_id', '=', appId)
      .where('status', 'in', ACTIVE)
      .where((eb) => eb.or([eb('lease_owner', 'is', null), eb('lease_until', '<', sql<Date>`now()`)]))
      .returningAll()
      .executeTakeFirst();
    if (now) return { task: now as TaskRow, cancelled: true };
    const later = await this.db
      .updateTable('task')
      .set({
        cancel_requested_at: sql`coalesce(cancel_requested_at, now())` as never,
        updated_at: new Date(),
      })
      .where('id', '=', id)
      .where('app_id', '=', appId)
      .where('status', 'in', ACTIVE)
      .returningAll()
      .executeTakeFirst();
    if (later) return { task: later as TaskRow, cancelled: false };
    const t = await this.get(id, appId);
    return t ? { task: t, cancelled: false } : undefined;
  }

  /** A worker honours a cancel request it found at the end of its step (it holds the lease). */
  async cancelLeased(id: string, owner: string): Promise<TaskRow | undefined> {
    return (await this.db
      .updateTable('task')
      .set({
        status: 'cancelled',
        completed_at: new Date(),
        updated_at: new Date(),
        lease_owner: null,
        lease_until: null,
        transitions: transition('cancelled') as never,
        error: JSON.stringify({ code: 'cancelled', message: 'cancelled by the caller' }),
      })
      .where('id', '=', id)
      .where('lease_owner', '=', owner)
      .where('status', 'in', ACTIVE)
      .returningAll()
      .executeTakeFirst()) as TaskRow | undefined;
  }

  async byId(id: string): Promise<TaskRow | undefined> {
    return (await this.db.selectFrom('task').selectAll().where('id', '=', id).executeTakeFirst()) as
      TaskRow | undefined;
  }

  /** Succeeded tasks whose settlement may not have reached billing (their instance died in between). */
  async pendingBilling(olderThanMs: number, limit = 50): Promise<TaskRow[]> {
    return (await this.db
      .selectFrom('task')
      .selectAll()
      .where('billing_state', '=', 'pending')
      .where('completed_at', '<', new Date(Date.now() - olderThanMs))
      .limit(limit)
      .execute()) as TaskRow[];
  }

  /** A webhook delivery for a task that ended outside `complete` (cancelled). */
  async enqueueWebhook(id: string, url: string): Promise<void> {
    await this.db
      .insertInto('webhook_delivery')
      .values({ id: 'whd_' + randomId(16), task_id: id, url, status: 'pending' })
      .onConflict((oc) => oc.columns(['task_id', 'url']).doNothing())
      .execute();
    tellDue(this.db, 'webhook', Date.now());
  }

  async markBilled(id: string): Promise<void> {
    await this.db
      .updateTable('task')
      .set({ billing_state: 'done' })
      .where('id', '=', id)
      .where('billing_state', '=', 'pending')
      .execute();
  }

  async create(t: {
    kind: string;
    appId: string;
    keyId: string;
    request: unknown;
    deadline: Date;
    notBefore?: Date;
  }): Promise<TaskRow> {
    const row = (await this.db
      .insertInto('task')
      .values({
        id: 'task_' + randomId(20),
        kind: t.kind,
        app_id: t.appId,
        key_id: t.keyId,
        status: 'queued',
        request: JSON.stringify(t.request),
        deadline: t.deadline,
        ...(t.notBefore ? { not_before: t.notBefore } : {}),
      })
      .returningAll()
      .executeTakeFirstOrThrow()) as TaskRow;
    // Due now: the caller wakes the workers (pub/sub). Due later: nobody would, until their backstop.
    if (t.notBefore && t.notBefore.getTime() > Date.now()) tellDue(this.db, 'task', t.notBefore);
    return row;
  }

  async get(id: string, appId: string): Promise<TaskRow | undefined> {
    return (await this.db
      .selectFrom('task')
      .selectAll()
      .where('id', '=', id)
      .where('app_id', '=', appId)
      .executeTakeFirst()) as TaskRow | undefined;
  }

  async list(appId: string, q: { status?: string; limit?: number; offset?: number }): Promise<TaskRow[]> {
    let s = this.db.selectFrom('task').selectAll().where('app_id', '=', appId);
    if (q.status) s = s.where('status', '=', q.status);
    return (await s
      .orderBy('created_at', 'desc')
      .limit(Math.min(q.limit ?? 50, 500))
      .offset(q.offset ?? 0)
      .execute()) as TaskRow[];
  }

  /** Operators (admin API): tasks across apps, newest first, filtered by status, app and kind. */
  async listAll(q: {
    status?: string;
    appId?: string;
    kind?: string;
    limit?: number;
    offset?: number;
  }): Promise<TaskRow[]> {
    let s = this.db.selectFrom('task').selectAll();
    if (q.status) s = s.where('status', '=', q.status);
    if (q.appId) s = s.where('app_id', '=', q.appId);
    if (q.kind) s = s.where('kind', '=', q.kind);
    return (await s
      .orderBy('created_at', 'desc')
      .orderBy('id')
      .limit(Math.min(q.limit ?? 50, 500))
      .offset(q.offset ?? 0)
      .execute()) as TaskRow[];
  }

  /** Active tasks (queued, submitted, running) counted by status and kind: the ASYNC and media queues. */
  async activeCounts(): Promise<Array<{ status: TaskStatus; kind: string; n: number }>> {
    const rows = await this.db
      .selectFrom('task')
      .select(['status', 'kind', (eb) => eb.fn.countAll<string>().as('n')])
      .where('status', 'in', ACTIVE)
      .groupBy(['status', 'kind'])
      .execute();
    return rows.map((r) => ({ status: r.status as TaskStatus, kind: r.kind, n: Number(r.n) }));
  }

  /**
   * Claims up to `n` runnable tasks: active ones due now that nobody holds, or whose holder's lease ran
   * out (see CLAIM_TEXT); with when the next waiting one falls due and whether billing needs a sweep.
   */
  async claim(owner: string, n: number, leaseMs: number): Promise<Claim> {
    const rows = await TASK_CLAIM.run(this.db, [owner, n, leaseMs, BILLING_SWEEP_AGE_MS]);
    const tasks: TaskRow[] = [];
    for (const { next_in_ms: _n, billing_due: _b, ...t } of rows) if (t.id !== null) tasks.push(t);
    const first = rows[0];
    return {
      tasks,
      nextInMs: first?.next_in_ms ?? null,
      billingDue: first?.billing_due === true,
    };
  }

  async renew(id: string, owner: string, leaseMs: number): Promise<boolean> {
    const r = await sql`UPDATE task SET lease_until = now() + ${leaseMs} * interval '1 millisecond'
      WHERE id = ${id} AND lease_owner = ${owner} AND status IN ('queued', 'submitted', 'running')`.execute(
      this.db,
    );
    return Number(r.numAffectedRows ?? 0) > 0;
  }

  /** Back to the queue (capacity not there yet), if this owner still holds it. */
  async requeue(id: string, owner: string, notBefore: Date): Promise<boolean> {
    const r = await this.db
      .updateTable('task')
      .set({
        status: 'queued',
        lease_owner: null,
        lease_until: null,
        not_before: notBefore,
        updated_at: new Date(),
        transitions: transition('queued') as never,
      })
      .where('id', '=', id)
      .where('lease_owner', '=', owner)
      .where('status', '=', 'running')
      .executeTakeFirst();
    const back = Number(r.numUpdatedRows) > 0;
    if (back) tellDue(this.db, 'task', notBefore);
    return back;
  }

  /** The one completion of a task: only the current lease holder of a running task can write it. */
  async complete(
    id: string,
    owner: string,
    status: 'succeeded' | 'failed' | 'expired',
    result: { body?: unknown; status?: number; error?: unknown; progress?: number; billing?: unknown },
    webhookUrl?: string | null,
  ): Promise<boolean> {
    // The completion and its webhook delivery commit together: a crash can't leave one without the other.
    const done = await this.db.transaction().execute(async (trx) => {
      const done = await this.completeIn(trx, id, owner, status, result);
      if (done && webhookUrl) {
        await trx
          .insertInto('webhook_delivery')
          .values({ id: 'whd_' + randomId(16), task_id: id, url: webhookUrl, status: 'pending' })
          .onConflict((oc) => oc.columns(['task_id', 'url']).doNothing())
          .execute();
      }
      return done;
    });
    if (done && webhookUrl) tellDue(this.db, 'webhook', Date.now());
    return done;
  }

  private async completeIn(
    db: Db,
    id: string,
    owner: string,
    status: string,
    result: { body?: unknown; status?: number; error?: unknown; progress?: number; billing?: unknown },
  ): Promise<boolean> {
    const r = await db
      .updateTable('task')
      .set({
        status,
        transitions: transition(status) as never,
        ...(result.progress !== undefined ? { progress: result.progress } : {}),
        // A priced success is settled right after this commit; 'pending' until then, so a crash in between is swept up.
        ...(result.billing !== undefined
          ? { billing: JSON.stringify(result.billing), billing_state: 'pending' }
          : {}),
        result: result.body === undefined ? null : JSON.stringify(result.body),
        result_status: result.status ?? null,
        error: result.error === undefined ? null : JSON.stringify(result.error),
        lease_owner: null,
        lease_until: null,
        completed_at: new Date(),
        updated_at: new Date(),
      })
      .where('id', '=', id)
      .where('lease_owner', '=', owner)
      .where('status', 'in', ACTIVE)
      .where('cancel_requested_at', 'is', null)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }
}
