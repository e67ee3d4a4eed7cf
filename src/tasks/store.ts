/**
 * The durable task store: rows in the database, moved between states only by compare-and-swap
 * (`UPDATE … WHERE status = $from AND lease_owner = $me`), so two instances never complete one task and
 * a restart loses none. Workers claim tasks with a lease; a dead worker's lease runs out and another
 * instance claims the task again (execution is at-least-once, completion exactly once).
 */
import { sql } from 'kysely';
import { randomId } from '../core/ids.js';
import type { Db } from '../store/db.js';

export type TaskStatus = 'queued' | 'submitted' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'expired';

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
    created_at: iso(t.created_at),
    completed_at: iso(t.completed_at),
    ...(t.result !== null && t.result !== undefined ? { result: t.result, result_status: t.result_status } : {}),
    ...(t.error ? { error: t.error } : {}),
  };
}

export class TaskStore {
  constructor(private readonly db: Db) {}

  async create(t: { kind: string; appId: string; keyId: string; request: unknown; deadline: Date; notBefore?: Date }): Promise<TaskRow> {
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
    return (await this.db.selectFrom('task').selectAll().where('id', '=', id).where('app_id', '=', appId).executeTakeFirst()) as TaskRow | undefined;
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

  /** Claims up to `n` runnable tasks: queued ones due now, and running ones whose lease ran out. */
  async claim(owner: string, n: number, leaseMs: number): Promise<TaskRow[]> {
    const r = await sql<TaskRow>`
      UPDATE task SET status = 'running', lease_owner = ${owner}, lease_until = now() + ${leaseMs} * interval '1 millisecond',
        attempts = attempts + 1, updated_at = now()
      WHERE id IN (
        SELECT id FROM task
        WHERE (status = 'queued' AND not_before <= now()) OR (status = 'running' AND lease_until < now())
        ORDER BY created_at
        LIMIT ${n}
        FOR UPDATE SKIP LOCKED)
      RETURNING *`.execute(this.db);
    return r.rows;
  }

  async renew(id: string, owner: string, leaseMs: number): Promise<boolean> {
    const r = await sql`UPDATE task SET lease_until = now() + ${leaseMs} * interval '1 millisecond'
      WHERE id = ${id} AND lease_owner = ${owner} AND status = 'running'`.execute(this.db);
    return Number(r.numAffectedRows ?? 0) > 0;
  }

  /** Back to the queue (capacity not there yet), if this owner still holds it. */
  async requeue(id: string, owner: string, notBefore: Date): Promise<boolean> {
    const r = await this.db
      .updateTable('task')
      .set({ status: 'queued', lease_owner: null, lease_until: null, not_before: notBefore, updated_at: new Date() })
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
    result: { body?: unknown; status?: number; error?: unknown },
    webhookUrl?: string | null,
  ): Promise<boolean> {
    // The completion and its webhook delivery commit together: a crash can't leave one without the other.
    return this.db.transaction().execute(async (trx) => {
      const done = await this.completeIn(trx, id, owner, status, result);
      if (done && webhookUrl) {
        await trx.insertInto('webhook_delivery').values({ id: 'whd_' + randomId(16), task_id: id, url: webhookUrl, status: 'pending' }).onConflict((oc) => oc.columns(['task_id', 'url']).doNothing()).execute();
      }
      return done;
    });
  }

  private async completeIn(db: Db, id: string, owner: string, status: string, result: { body?: unknown; status?: number; error?: unknown }): Promise<boolean> {
    const r = await db
      .updateTable('task')
      .set({
        status,
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
      .where('status', '=', 'running')
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }
}
