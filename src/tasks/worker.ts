/**
 * The ASYNC-mode worker: each instance claims due tasks with a lease, asks quota admission for room
 * (without waiting), runs the request through the same relay as a synchronous call, and records the
 * answer with the one CAS completion. No room yet: back to the queue for when the limit says. Past its
 * deadline: expired. Woken by pub/sub when a task is queued or a lease is released; polls as a backstop.
 */
import type { Logger } from 'pino';
import { GatewayError } from '../core/errors.js';
import { randomId } from '../core/ids.js';
import { redactSecrets } from '../core/redact.js';
import { type TaskRow, type TaskStore, isMediaKind } from './store.js';

export type RunOutcome =
  | { ok: true; status: number; body: unknown; webhook?: string | null }
  | { ok: false; retryAfterMs: number }
  | { ok: false; status: number; body: unknown; final: true; webhook?: string | null };

export interface TaskWorkerOptions {
  pollMs: number;
  leaseMs: number;
  concurrency: number;
}

export class TaskWorker {
  readonly owner = 'w_' + randomId(10);
  private timer: NodeJS.Timeout | null = null;
  private running = 0;
  private ticking = false;
  private stopped = false;
  private readonly active = new Set<Promise<void>>();

  constructor(
    private readonly store: TaskStore,
    private readonly run: (t: TaskRow) => Promise<RunOutcome>,
    private readonly log: Logger,
    private readonly opts: TaskWorkerOptions = { pollMs: 500, leaseMs: 60_000, concurrency: 8 },
    private readonly onState: (kind: string, status: string) => void = () => {},
    /** Media tasks: one step per claim (submit, or one poll); and the sweep of unsettled successes. */
    private readonly media: {
      step(t: TaskRow, owner: string): Promise<void>;
      sweep(): Promise<void>;
    } | null = null,
  ) {}

  private lastSweep = 0;

  start(): void {
    this.timer = setInterval(() => this.wake(), this.opts.pollMs);
    this.timer.unref();
    this.wake();
  }

  /** Look for work now (a task was queued, or capacity freed). */
  wake(): void {
    if (this.stopped || this.ticking) return;
    this.ticking = true;
    void this.tick().finally(() => (this.ticking = false));
  }

  private async tick(): Promise<void> {
    if (this.media && Date.now() - this.lastSweep > 5_000) {
      this.lastSweep = Date.now();
      await this.media
        .sweep()
        .catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'task billing sweep failed'));
    }
    const room = this.opts.concurrency - this.running;
    if (room <= 0) return;
    let tasks: TaskRow[];
    try {
      tasks = await this.store.claim(this.owner, room, this.opts.leaseMs);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'task claim failed');
      return;
    }
    for (const t of tasks) {
      this.running++;
      const p = this.handle(t).finally(() => {
        this.running--;
        this.active.delete(p);
      });
      this.active.add(p);
    }
  }

  private async handle(t: TaskRow): Promise<void> {
    if (this.media && isMediaKind(t.kind)) {
      const renew = setInterval(
        () => void this.store.renew(t.id, this.owner, this.opts.leaseMs).catch(() => {}),
        Math.max(1_000, this.opts.leaseMs / 3),
      );
      renew.unref();
      try {
        await this.media.step(t, this.owner);
      } finally {
        clearInterval(renew);
        // The next due task may already be waiting (a fast job's next poll): look again soon.
        setTimeout(() => this.wake(), 5).unref();
      }
      return;
    }
    if (new Date(t.deadline).getTime() <= Date.now()) {
      if (
        await this.store.complete(t.id, this.owner, 'expired', {
          error: { message: 'the task waited past its deadline', code: 'task_expired' },
        })
      )
        this.onState(t.kind, 'expired');
      return;
    }
    const renew = setInterval(
      () => void this.store.renew(t.id, this.owner, this.opts.leaseMs).catch(() => {}),
      Math.max(1_000, this.opts.leaseMs / 3),
    );
    renew.unref();
    try {
      const out = await this.run(t);
      if (!out.ok && !('final' in out)) {
        await this.store.requeue(t.id, this.owner, new Date(Date.now() + Math.max(50, out.retryAfterMs)));
        return;
      }
      const status = out.ok && out.status < 400 ? 'succeeded' : 'failed';
      const result =
        status === 'succeeded'
          ? { body: out.body, status: out.status }
          : {
              body: out.body,
              status: out.status,
              error: (out.body as { error?: unknown })?.error ?? out.body,
            };
      const done = await this.store.complete(t.id, this.owner, status, result, out.webhook);
      if (done) this.onState(t.kind, status);
    } catch (err) {
      const e =
        err instanceof GatewayError
          ? { message: redactSecrets(err.message), code: err.code }
          : { message: 'internal error', code: 'internal_error' };
      this.log.error({ task: t.id, err: redactSecrets(String((err as Error)?.message)) }, 'task run failed');
      if (
        await this.store.complete(t.id, this.owner, 'failed', {
          error: e,
          status: err instanceof GatewayError ? err.status : 500,
        })
      )
        this.onState(t.kind, 'failed');
    } finally {
      clearInterval(renew);
    }
  }

  /** Stops claiming and waits for the tasks in hand (up to `ms`); unfinished ones return by lease. */
  async stop(ms = 5_000): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await Promise.race([Promise.all([...this.active]), new Promise((r) => setTimeout(r, ms).unref())]);
  }
}
