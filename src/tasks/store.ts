/**
 * The durable task store: rows in the database, moved between states only by compare-and-swap
 * (`UPDATE … WHERE status = $from AND lease_owner = $me`), so two instances never complete one task and
 * a restart loses none. Workers claim tasks with a lease; a dead worker's lease runs out and another
 * instance claims the task again (execution is at-least-once, completion exactly once).
 */
import { sql } from 'kysely';
import { randomId } from '../core/ids.js';
import type { Db } from '../store/db.js';

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

/** Appends a status change, with its time, to the task's transitions. */
const transition = (status: string) =>
  sql<string>`transitions || jsonb_build_array(jsonb_build_object('status', ${status}::text, 'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))`;

export class TaskStore {
  constructor(private readonly db: Db) {}

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
    return Number(r.numUpdatedRows) > 0;
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
    return (await this.db
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
   * out. A relayed (chat) task becomes 'running' for its one run; a media task keeps its status (its
   * worker moves it: submitted, running) and is held only for one step.
   */
  async claim(owner: string, n: number, leaseMs: number): Promise<TaskRow[]> {
    const r = await sql<TaskRow>`
      UPDATE task SET
        status = CASE WHEN kind IN ('image', 'video', 'music') THEN status ELSE 'running' END,
        transitions = CASE WHEN kind IN ('image', 'video', 'music') OR status = 'running' THEN transitions ELSE ${transition('running')} END,
        lease_owner = ${owner}, lease_until = now() + ${leaseMs} * interval '1 millisecond',
        attempts = attempts + 1, updated_at = now()
      WHERE id IN (
        SELECT id FROM task
        WHERE status IN ('queued', 'submitted', 'running') AND not_before <= now()
          AND (lease_owner IS NULL OR lease_until < now())
        ORDER BY not_before
        LIMIT ${n}
        FOR UPDATE SKIP LOCKED)
      RETURNING *`.execute(this.db);
    return r.rows;
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
    return Number(r.numUpdatedRows) > 0;
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
    return this.db.transaction().execute(async (trx) => {
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
