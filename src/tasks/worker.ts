/**
 * The ASYNC-mode worker: each instance claims due tasks with a lease, asks quota admission for room
 * (without waiting), runs the request through the same relay as a synchronous call, and records the
 * answer with the one CAS completion. No room yet: back to the queue for when the limit says. Past its
 * deadline: expired.
 *
 * When it claims (PollSchedule): at once when woken (pub/sub: a task queued, capacity freed); at the time
 * a task this process put off falls due (requeue, a media task's next poll); at the time its last claim
 * said the next waiting task falls due; otherwise after `idleMs`, the backstop for what nobody told it
 * (a lost wake, a dead instance's lease running out). An idle instance costs the database one claim per
 * backstop, not one per poll interval.
 */
import type { Logger } from 'pino';
import { GatewayError } from '../core/errors.js';
import { randomId } from '../core/ids.js';
import { redactSecrets } from '../core/redact.js';
import { type TaskRow, type TaskStore, isMediaKind } from './store.js';

/** How often, at most, succeeded tasks left unsettled (their instance died) are swept into billing. */
const SWEEP_MS = 5_000;

export interface PollScheduleOptions {
  /** Timed runs start at least this far apart (a busy queue is claimed in batches); a failure's first retry. */
  floorMs: number;
  /** The longest sleep: how late, at most, a run notices what nobody told this process about. */
  idleMs: number;
}

/** The backstop by default: ten poll intervals, at most 5 s, never less than one interval. */
export const defaultIdleMs = (pollMs: number): number => Math.max(pollMs, Math.min(5_000, 10 * pollMs));

/**
 * When a poller runs next. `run` returns how long until it knows work falls due (0: more is due now;
 * null: nothing known, sleep until the backstop). A wake runs at once, and a wake during a run runs it
 * once more right after (the run's statement may have missed what the wake announced). A due time told
 * during a run is kept for when it ends. A run that throws is reported and retried, backing off from
 * `floorMs` to `idleMs`: the poller never stops until `stop()`.
 */
export class PollSchedule {
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private running = false;
  private again = false;
  private stopped = false;
  private lastRun = -Infinity;
  private failures = 0;
  /** Due times told while a run was in progress. */
  private told = Infinity;

  constructor(
    private readonly run: () => Promise<number | null>,
    private readonly opts: PollScheduleOptions,
    private readonly onError: (err: unknown, failures: number) => void,
  ) {}

  /** Runs now, or once more right after the run in progress; after a failure, at the retry. */
  wake(): void {
    if (this.stopped) return;
    // Failing: the retry is armed, and a storm of wakes doesn't hammer a database that's down.
    if (this.failures > 0 && this.timer) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.disarm();
    this.running = true;
    this.told = Infinity;
    const started = (this.lastRun = Date.now());
    void this.run().then(
      (nextInMs) => {
        this.failures = 0;
        this.settle(started + Math.min(nextInMs ?? Infinity, this.opts.idleMs), true);
      },
      (err: unknown) => {
        this.failures++;
        try {
          this.onError(err, this.failures);
        } catch {
          // Reporting must not stop the poller.
        }
        const backoff = this.opts.floorMs * 2 ** Math.min(this.failures - 1, 30);
        this.settle(Date.now() + Math.min(backoff, this.opts.idleMs), false);
      },
    );
  }

  /** Work falls due at `at` (epoch ms): run then, or at the floor after the last run if that's later. */
  dueAt(at: number): void {
    if (this.stopped) return;
    if (this.running) this.told = Math.min(this.told, at);
    else this.arm(at);
  }

  stop(): void {
    this.stopped = true;
    this.disarm();
  }

  private settle(next: number, ok: boolean): void {
    this.running = false;
    if (this.stopped) return;
    if (this.again && ok) {
      this.again = false;
      this.wake();
      return;
    }
    this.again = false;
    this.arm(Math.min(next, this.told));
  }

  private arm(at: number): void {
    // Never past the backstop: the run then asks the database, which remembers anything later.
    const when = Math.min(Math.max(at, this.lastRun + this.opts.floorMs), Date.now() + this.opts.idleMs);
    if (this.timer && this.timerAt <= when) return;
    this.disarm();
    this.timerAt = when;
    this.timer = setTimeout(
      () => {
        this.timer = null;
        this.timerAt = Infinity;
        this.wake();
      },
      Math.max(0, when - Date.now()),
    );
    this.timer.unref();
  }

  private disarm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = Infinity;
  }
}

export type RunOutcome =
  | { ok: true; status: number; body: unknown; webhook?: string | null }
  | { ok: false; retryAfterMs: number }
  | { ok: false; status: number; body: unknown; final: true; webhook?: string | null };

export interface TaskWorkerOptions {
  /** The floor between timed claims (a busy queue's batch rate). */
  pollMs: number;
  /** The backstop when nothing is known to fall due (default: defaultIdleMs(pollMs)). */
  idleMs?: number;
  leaseMs: number;
  concurrency: number;
}

export class TaskWorker {
  readonly owner = 'w_' + randomId(10);
  private readonly schedule: PollSchedule;
  private unsubscribe: () => void = () => {};
  private running = 0;
  /** The last claim filled all the room it had: more may be due, so a finished task makes room for it. */
  private backlog = false;
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
  ) {
    this.schedule = new PollSchedule(
      () => this.tick(),
      { floorMs: opts.pollMs, idleMs: opts.idleMs ?? defaultIdleMs(opts.pollMs) },
      (err, failures) => this.log.warn({ err: (err as Error)?.message, failures }, 'task claim failed'),
    );
  }

  private lastSweep = 0;

  start(): void {
    this.unsubscribe = this.store.onDue((at) => this.schedule.dueAt(at));
    this.schedule.wake();
  }

  /** Look for work now (a task was queued, or capacity freed). */
  wake(): void {
    this.schedule.wake();
  }

  /** One claim; returns when to claim next (see PollSchedule). */
  private async tick(): Promise<number | null> {
    const room = this.opts.concurrency - this.running;
    if (room <= 0) {
      // Full (the last claim filled the room): each finished task wakes the schedule. No claim carries
      // the billing question: sweep on the clock.
      if (Date.now() - this.lastSweep >= SWEEP_MS) await this.sweep();
      return null;
    }
    const claim = await this.store.claim(this.owner, room, this.opts.leaseMs);
    this.backlog = claim.tasks.length >= room;
    for (const t of claim.tasks) {
      this.running++;
      const p = this.handle(t).finally(() => {
        this.running--;
        this.active.delete(p);
        if (this.backlog) this.wake();
      });
      this.active.add(p);
    }
    if (claim.billingDue && Date.now() - this.lastSweep >= SWEEP_MS) await this.sweep();
    return this.backlog ? 0 : claim.nextInMs;
  }

  /** Succeeded tasks whose settlement didn't reach billing (their instance died in between). */
  private async sweep(): Promise<void> {
    if (!this.media) return;
    this.lastSweep = Date.now();
    await this.media
      .sweep()
      .catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'task billing sweep failed'));
  }

  private async handle(t: TaskRow): Promise<void> {
    if (this.media && isMediaKind(t.kind)) {
      const renew = setInterval(
        () => void this.store.renew(t.id, this.owner, this.opts.leaseMs).catch(() => {}),
        Math.max(1_000, this.opts.leaseMs / 3),
      );
      renew.unref();
      try {
        // Its next poll reaches the schedule through the store (TaskStore.step tells when it falls due).
        await this.media.step(t, this.owner);
      } finally {
        clearInterval(renew);
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
    this.schedule.stop();
    this.unsubscribe();
    await Promise.race([Promise.all([...this.active]), new Promise((r) => setTimeout(r, ms).unref())]);
  }
}
