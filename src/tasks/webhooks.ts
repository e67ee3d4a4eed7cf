/**
 * Webhook deliveries of finished tasks: a row per (task, url), written in the same transaction as the
 * task's completion, delivered by any instance (claimed with a lease), signed, retried with exponential
 * backoff, and recorded. A receiver that is down never holds up a task: the task is already complete.
 *
 * Signature: `x-anima-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` with the
 * key's webhook secret; receivers recompute it and reject stale timestamps.
 *
 * Outbound policy (src/lib/outbound.ts): a task's own `callback_url` is a tenant's URL (public addresses
 * only), a key's `webhook_url` an operator's. Both are checked again here, when connecting (a name may
 * resolve elsewhere by now), through a dispatcher that connects only to the addresses it checked; a
 * refusal is final, not retried. Redirects are not followed: a 3xx is a failed attempt.
 *
 * When it claims (PollSchedule, as the task worker): at once when this process queues a delivery, at a
 * retry's time, at the time its last claim said the next one falls due, otherwise after `idleMs` (other
 * instances' deliveries, a dead instance's lease running out).
 */
import { createHmac } from 'node:crypto';
import type { Logger } from 'pino';
import { request } from 'undici';
import {
  type OutboundPolicy,
  type OutboundUse,
  OutboundRefusedError,
  outboundPolicy,
} from '../lib/outbound.js';
import type { Db } from '../store/db.js';
import { NamedStatement } from '../store/named-statement.js';
import { type TaskRow, onDue, taskView } from './store.js';
import { PollSchedule, defaultIdleMs } from './worker.js';

const BATCH = 20;

interface Due {
  id: string;
  task_id: string;
  url: string;
  attempts: number;
}

/**
 * Up to BATCH due deliveries, leased for 30 s; with how long until the next pending one falls due. One row
 * with a null id and that answer when nothing was due. (Exported for bench/idle-pollers.ts.)
 */
export const WEBHOOK_CLAIM = new NamedStatement<
  (Due | { [K in keyof Due]: null }) & { next_in_ms: number | null }
>(
  'anima_webhook_claim',
  `WITH due AS (
  UPDATE webhook_delivery SET lease_until = now() + interval '30 seconds', attempts = attempts + 1
  WHERE id IN (
    SELECT id FROM webhook_delivery
    WHERE status = 'pending' AND next_at <= now() AND (lease_until IS NULL OR lease_until < now())
    ORDER BY next_at LIMIT ${BATCH} FOR UPDATE SKIP LOCKED)
  RETURNING id, task_id, url, attempts)
SELECT due.*,
  (SELECT extract(epoch FROM min(next_at) - now()) * 1000 FROM webhook_delivery
    WHERE status = 'pending' AND next_at > now())::float8 AS next_in_ms
FROM (SELECT 1) AS one LEFT JOIN due ON true`,
);

export function signWebhook(secret: string, timestamp: number, body: string): string {
  return `t=${timestamp},v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

export interface WebhookOptions {
  /** The floor between timed claims. */
  pollMs: number;
  /** The backstop when nothing is known to fall due (default: defaultIdleMs(pollMs)). */
  idleMs?: number;
  maxAttempts: number;
  /** First retry delay; doubles each attempt, capped at 5 minutes. */
  backoffMs: number;
  timeoutMs: number;
  /** The outbound URL policy (default: the process's). */
  outbound?: OutboundPolicy;
}

export class WebhookDeliverer {
  private readonly schedule: PollSchedule;
  private unsubscribe: () => void = () => {};

  constructor(
    private readonly db: Db,
    /** The webhook secret of the key that queued a task (null: deliveries are unsigned). */
    private readonly secretFor: (keyId: string) => string | null,
    private readonly log: Logger,
    private readonly opts: WebhookOptions = {
      pollMs: 1_000,
      maxAttempts: 10,
      backoffMs: 1_000,
      timeoutMs: 5_000,
    },
    private readonly onResult: (result: 'delivered' | 'retry' | 'failed') => void = () => {},
  ) {
    this.schedule = new PollSchedule(
      () => this.tick(),
      { floorMs: opts.pollMs, idleMs: opts.idleMs ?? defaultIdleMs(opts.pollMs) },
      (err, failures) => this.log.warn({ err: (err as Error)?.message, failures }, 'webhook tick failed'),
    );
  }

  start(): void {
    this.unsubscribe = onDue(this.db, 'webhook', (at) => this.schedule.dueAt(at));
    this.schedule.wake();
  }

  stop(): void {
    this.schedule.stop();
    this.unsubscribe();
  }

  wake(): void {
    this.schedule.wake();
  }

  /** One claim and its deliveries; returns when to claim next (see PollSchedule). */
  private async tick(): Promise<number | null> {
    const rows = await WEBHOOK_CLAIM.run(this.db);
    const due = rows.filter((r): r is Due & { next_in_ms: number | null } => r.id !== null);
    await Promise.all(due.map((d) => this.deliver(d)));
    // A full batch: more may be due now.
    return due.length >= BATCH ? 0 : (rows[0]?.next_in_ms ?? null);
  }

  private async deliver(d: Due): Promise<void> {
    const task = (await this.db
      .selectFrom('task')
      .selectAll()
      .where('id', '=', d.task_id)
      .executeTakeFirst()) as TaskRow | undefined;
    if (!task) return;
    const body = JSON.stringify({ type: `task.${task.status}`, delivery_id: d.id, task: taskView(task) });
    const ts = Math.floor(Date.now() / 1000);
    const secret = this.secretFor(task.key_id);
    const policy = this.opts.outbound ?? outboundPolicy();
    // The task's own callback came from the tenant; anything else is the key's, set by an operator.
    const use: OutboundUse = task.webhook_url !== null && task.webhook_url === d.url ? 'tenant' : 'operator';
    let status = 0;
    let error: string | null = null;
    let refused = false;
    const pre = policy.checkUrl(d.url, use);
    if (!pre.ok) {
      refused = true;
      error = `refused by the outbound policy: the URL ${pre.reason}`;
    } else
      try {
        const res = await request(d.url, {
          dispatcher: policy.dispatcher(use),
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'x-anima-delivery': d.id,
            'x-anima-timestamp': String(ts),
            ...(secret ? { 'x-anima-signature': signWebhook(secret, ts, body) } : {}),
          },
          body,
          headersTimeout: this.opts.timeoutMs,
          bodyTimeout: this.opts.timeoutMs,
        });
        status = res.statusCode;
        await res.body.dump();
      } catch (e) {
        refused =
          e instanceof OutboundRefusedError || (e as { code?: string }).code === 'ANIMA_OUTBOUND_REFUSED';
        error = (refused ? 'refused by the outbound policy: ' : '') + (e as Error).message.slice(0, 500);
      }
    if (status >= 200 && status < 300) {
      await this.db
        .updateTable('webhook_delivery')
        .set({
          status: 'delivered',
          last_status: status,
          last_error: null,
          delivered_at: new Date(),
          lease_until: null,
        })
        .where('id', '=', d.id)
        .execute();
      this.onResult('delivered');
      return;
    }
    const final = refused || d.attempts >= this.opts.maxAttempts;
    const delay = Math.min(300_000, this.opts.backoffMs * 2 ** (d.attempts - 1));
    const nextAt = Date.now() + delay;
    await this.db
      .updateTable('webhook_delivery')
      .set({
        status: final ? 'failed' : 'pending',
        last_status: status || null,
        last_error: error ?? `receiver answered ${status}`,
        next_at: new Date(nextAt),
        lease_until: null,
      })
      .where('id', '=', d.id)
      .execute();
    if (!final) this.schedule.dueAt(nextAt);
    this.onResult(final ? 'failed' : 'retry');
  }
}
