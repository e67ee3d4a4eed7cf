/**
 * The pollers' schedule on fake time: an idle worker claims once per backstop instead of once per poll
 * interval; a due time told in-process, a wake and a wake during a claim each get their claim; a claim
 * that keeps failing is logged every time and retried with a backoff, and recovers.
 */
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Claim, TaskRow, TaskStore } from '../../src/tasks/store.js';
import { PollSchedule, TaskWorker, defaultIdleMs } from '../../src/tasks/worker.js';

const silent = pino({ level: 'silent' });

/** A store that has nothing to give, counting claims; `answer` shapes the next claim's reply. */
function idleStore() {
  const claims: number[] = [];
  let listener: ((at: number) => void) | null = null;
  const s = {
    claims,
    answer: (): Promise<Claim> => Promise.resolve({ tasks: [], nextInMs: null, billingDue: false }),
    tell: (at: number) => listener?.(at),
    store: {
      claim: () => {
        claims.push(Date.now());
        return s.answer();
      },
      onDue: (fn: (at: number) => void) => {
        listener = fn;
        return () => (listener = null);
      },
    } as unknown as TaskStore,
  };
  return s;
}

const neverRun = (): Promise<never> => Promise.reject(new Error('no task expected'));

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('idle task worker', () => {
  it('claims once per backstop, not once per poll interval', async () => {
    const s = idleStore();
    // The production shape: a 500 ms poll used to mean 120 claims a minute.
    const w = new TaskWorker(s.store, neverRun, silent, { pollMs: 500, leaseMs: 60_000, concurrency: 8 });
    expect(defaultIdleMs(500)).toBe(5_000);
    w.start();
    await vi.advanceTimersByTimeAsync(60_000);
    // One at start, then one per 5 s backstop.
    expect(s.claims.length).toBe(13);
    for (let i = 1; i < s.claims.length; i++) expect(s.claims[i]! - s.claims[i - 1]!).toBe(5_000);
    await w.stop(0);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(s.claims.length).toBe(13);
  });

  it('claims at the time a claim said the next task falls due, and at a due time told in-process', async () => {
    const s = idleStore();
    let next: number | null = 1_234;
    s.answer = () => {
      const nextInMs = next;
      next = null;
      return Promise.resolve({ tasks: [], nextInMs, billingDue: false });
    };
    const w = new TaskWorker(s.store, neverRun, silent, {
      pollMs: 50,
      idleMs: 60_000,
      leaseMs: 60_000,
      concurrency: 8,
    });
    const t0 = Date.now();
    w.start();
    await vi.advanceTimersByTimeAsync(2_000);
    expect(s.claims.map((t) => t - t0)).toEqual([0, 1_234]);
    // A requeue in this process, due 300 ms from now.
    const at = Date.now() + 300;
    s.tell(at);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(s.claims.length).toBe(3);
    expect(s.claims[2]).toBe(at);
    // Told twice, the earlier time wins; told a time already past, the floor holds it back to 50 ms after the last claim.
    s.tell(Date.now() + 800);
    s.tell(Date.now() + 200);
    await vi.advanceTimersByTimeAsync(300);
    expect(s.claims.length).toBe(4);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(s.claims.length).toBe(4); // the 800 ms one was replaced by the earlier
    s.tell(Date.now() - 1_000);
    await vi.advanceTimersByTimeAsync(0);
    expect(s.claims.length).toBe(5);
    s.tell(Date.now() - 1_000);
    await vi.advanceTimersByTimeAsync(49);
    expect(s.claims.length).toBe(5);
    await vi.advanceTimersByTimeAsync(1);
    expect(s.claims.length).toBe(6);
    await w.stop(0);
  });

  it('a wake during a claim claims once more right after it', async () => {
    const s = idleStore();
    let release!: () => void;
    s.answer = () =>
      new Promise<Claim>((r) => (release = () => r({ tasks: [], nextInMs: null, billingDue: false })));
    const w = new TaskWorker(s.store, neverRun, silent, {
      pollMs: 50,
      idleMs: 60_000,
      leaseMs: 60_000,
      concurrency: 8,
    });
    w.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(s.claims.length).toBe(1);
    // A task queued while the claim's statement is out: that statement may not have seen it.
    w.wake();
    w.wake();
    release();
    await vi.advanceTimersByTimeAsync(0);
    expect(s.claims.length).toBe(2);
    release();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(s.claims.length).toBe(2);
    await w.stop(0);
  });

  it('a full claim makes a finished task look again at once', async () => {
    const s = idleStore();
    let finish!: () => void;
    const task = { id: 't1', kind: 'chat', deadline: new Date(Date.now() + 3_600_000) } as TaskRow;
    let first = true;
    s.answer = () => {
      const tasks = first ? [task] : [];
      first = false;
      return Promise.resolve({ tasks, nextInMs: null, billingDue: false });
    };
    (s.store as unknown as { complete: () => Promise<boolean> }).complete = () => Promise.resolve(true);
    const run = () =>
      new Promise<{ ok: true; status: number; body: unknown }>(
        (r) => (finish = () => r({ ok: true, status: 200, body: {} })),
      );
    const w = new TaskWorker(s.store, run, silent, {
      pollMs: 50,
      idleMs: 60_000,
      leaseMs: 60_000,
      concurrency: 1,
    });
    w.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(s.claims.length).toBe(1);
    finish();
    await vi.advanceTimersByTimeAsync(0);
    expect(s.claims.length).toBe(2);
    await w.stop(0);
  });
});

describe('PollSchedule health', () => {
  it('a run that keeps failing is reported every time, backs off to the backstop, and recovers', async () => {
    let fail = 6;
    const runs: number[] = [];
    const errors: number[] = [];
    const p = new PollSchedule(
      () => {
        runs.push(Date.now());
        return fail-- > 0 ? Promise.reject(new Error('database down')) : Promise.resolve(null);
      },
      { floorMs: 100, idleMs: 1_000 },
      (_err, failures) => errors.push(failures),
    );
    const t0 = Date.now();
    p.wake();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(errors).toEqual([1, 2, 3, 4, 5, 6]);
    // Retries after 100, 200, 400, 800, then the 1 s backstop; then well again: one run per backstop.
    expect(runs.slice(0, 8).map((t) => t - t0)).toEqual([0, 100, 300, 700, 1_500, 2_500, 3_500, 4_500]);
    // A wake storm while failing waits for the backoff rather than running each time.
    fail = 3;
    const before = runs.length;
    p.wake();
    for (let i = 0; i < 20; i++) {
      await vi.advanceTimersByTimeAsync(5);
      p.wake();
    }
    expect(runs.length - before).toBeLessThanOrEqual(2);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(errors.slice(-3)).toEqual([1, 2, 3]);
    p.stop();
    const n = runs.length;
    await vi.advanceTimersByTimeAsync(10_000);
    expect(runs.length).toBe(n);
  });

  it('an onError that throws does not stop the schedule', async () => {
    let n = 0;
    const p = new PollSchedule(
      () => (n++ < 2 ? Promise.reject(new Error('x')) : Promise.resolve(null)),
      { floorMs: 10, idleMs: 100 },
      () => {
        throw new Error('logger broke');
      },
    );
    p.wake();
    await vi.advanceTimersByTimeAsync(1_000).catch(() => {});
    expect(n).toBeGreaterThan(5);
    p.stop();
  });
});
