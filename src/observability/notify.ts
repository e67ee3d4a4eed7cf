/**
 * Operator notifications: the events an operator acts on (a breaker opened or closed again, a channel's
 * credential taken out, a cost budget at 80 % / 100 %, the journal writer stuck or back, PostgreSQL or
 * Redis down or back) POSTed to the webhook targets of `notification_target` (config/notify-targets.ts),
 * in Slack-compatible or signed generic JSON form (notify-format.ts).
 *
 * Contract:
 * - Off the request path: `emit` returns at once; the dedup claim, rendering and delivery run after.
 * - Once per event across instances: every instance sees a breaker open (pub/sub), so an event has an id
 *   all of them compute alike (`breaker:<channel>:<generation>`) and only the instance that claims it
 *   (`claim`: Redis SET NX PX, in-process a map) delivers it, to every target that wants its kind. State
 *   events (a dependency or the journal writer down/up) have no shared id: each instance's own probe
 *   sees them, so they go through `swap` (Redis SET ... GET), and only the instance that changes the
 *   shared state from up to down (or back) sends. When the store that dedups is itself unreachable
 *   (Redis down), each instance decides alone: one notification per instance rather than none.
 * - Rate-limited per target: at most `rate_per_minute` in any minute window; the rest are folded into one
 *   summary sent when the window ends (counted as `folded`).
 * - Delivered with retries: `maxAttempts` tries, backoff doubling from `backoffMs` (capped at 5 min); a
 *   URL the outbound policy refuses fails at once (operator use: private ranges only when
 *   ANIMA_OUTBOUND_ALLOW lists them). Results count in anima_notifications_total{result}.
 * - At most once: a claimed event whose instance dies before delivering is lost (the alert rules in
 *   dashboards/alerts.yml still fire from metrics).
 */
import type { Logger } from 'pino';
import type { NotifyEventKind, NotifyTarget } from '../config/notify-targets.js';
import type { OutboundPolicy } from '../lib/outbound.js';
import { type PostResult, postJson } from '../lib/webhook-post.js';
import { type NotifyEvent, render } from './notify-format.js';

export type { NotifyEvent } from './notify-format.js';

/** `duplicate`: another instance claimed the event (it delivers; this one doesn't). */
export type DeliveryResult = 'delivered' | 'retry' | 'failed' | 'folded' | 'duplicate';

export interface NotifierDeps {
  /** Every target (enabled or not), read again on `reload()`. */
  targets: () => Promise<NotifyTarget[]>;
  /** Cross-instance claim: true for the first caller of `key` within ttlMs (Redis SET NX PX). */
  claim?: (key: string, ttlMs: number) => Promise<boolean>;
  /** Cross-instance state: sets `key` to `value`, returns the value before (Redis SET ... GET). */
  swap?: (key: string, value: string, ttlMs: number) => Promise<string | null>;
  policy: OutboundPolicy;
  log: Logger;
  onResult?: (r: DeliveryResult) => void;
  /** Named in JSON bodies (which instance saw it). */
  instance: string;
}

export interface NotifierOptions {
  maxAttempts: number;
  backoffMs: number;
  timeoutMs: number;
  /** How long an event id stays claimed: longer than any instance could see the event again. */
  dedupTtlMs: number;
  /** The rate window (a minute; shorter in tests). */
  windowMs: number;
  /** Deliveries queued or retrying at most; past it new ones are dropped (counted failed). */
  maxPending: number;
}

const DEFAULTS: NotifierOptions = {
  maxAttempts: 5,
  backoffMs: 1_000,
  timeoutMs: 5_000,
  dedupTtlMs: 24 * 3_600_000,
  windowMs: 60_000,
  maxPending: 1_000,
};

/** Shared-store calls wait at most this long: a notification is never worth hanging on a sick Redis. */
const STORE_TIMEOUT_MS = 1_000;

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new Error('timeout')), ms);
      t.unref();
    }),
  ]).finally(() => clearTimeout(t));
}

interface Window {
  start: number;
  sent: number;
  folded: NotifyEvent[];
  foldedCount: number;
  timer: NodeJS.Timeout | null;
}

export class Notifier {
  private list: NotifyTarget[] = [];
  private readonly opts: NotifierOptions;
  /** In-process claims (embedded mode, or the fallback while the shared store is unreachable). */
  private readonly claimed = new Map<string, number>();
  /** Last state this instance knows per subject, and whether it was sent without the shared store. */
  private readonly states = new Map<string, { value: string; alone: boolean }>();
  private readonly windows = new Map<string, Window>();
  /** Retry waits: cut short (resolved) by stop(). */
  private readonly timers = new Map<NodeJS.Timeout, () => void>();
  private pending = 0;
  private stopped = false;
  /** Deliveries in flight (tests wait on it; stop() doesn't). */
  private readonly inflight = new Set<Promise<void>>();

  constructor(
    private readonly d: NotifierDeps,
    opts: Partial<NotifierOptions> = {},
  ) {
    this.opts = { ...DEFAULTS, ...opts };
  }

  async reload(): Promise<void> {
    try {
      this.list = await this.d.targets();
    } catch (e) {
      // Database unreachable: keep the targets last read (a database outage is itself an event to send).
      this.d.log.warn(
        { err: { message: String((e as Error)?.message) } },
        'notification targets not reloaded',
      );
    }
  }

  targets(): readonly NotifyTarget[] {
    return this.list;
  }

  /** An event with a shared id: delivered by whichever instance claims it first. */
  emit(ev: NotifyEvent): void {
    if (this.stopped) return;
    this.track(
      (async () => {
        if (!this.wanted(ev.kind).length) return;
        if (!(await this.claim(`ev:${ev.id}`))) {
          this.d.onResult?.('duplicate');
          return;
        }
        this.fanOut(ev);
      })(),
    );
  }

  /**
   * A state this instance observed for `subject` (e.g. `dependency:db` = up | down). `good` is the
   * healthy value: a first observation of it is no news. Sends `ev()` when the shared state changes.
   */
  observe(subject: string, value: string, good: string, ev: () => NotifyEvent): void {
    if (this.stopped) return;
    const local = this.states.get(subject);
    if (local?.value === value) return; // nothing new here: no store call on every probe
    this.track(
      (async () => {
        let prev: string | null;
        let alone = false;
        try {
          if (!this.d.swap) throw new Error('no shared store');
          prev = await withTimeout(
            this.d.swap(`state:${subject}`, value, this.opts.dedupTtlMs),
            STORE_TIMEOUT_MS,
          );
        } catch {
          alone = true;
          prev = local?.value ?? null;
        }
        this.states.set(subject, { value, alone });
        // A change the shared store missed (it was down when this instance sent the bad news alone):
        // this instance owes its own good news, whatever the store says now.
        const owed = !!local?.alone && local.value !== value;
        const changed = prev !== value && !(prev === null && value === good);
        if (changed || owed) this.fanOut(ev());
      })(),
    );
  }

  /** Sends a test notification to one target now (no dedup, no rate limit, one attempt): the result. */
  async test(target: NotifyTarget, ev: NotifyEvent): Promise<PostResult> {
    return this.post(target, ev);
  }

  /** Resolves when every delivery started so far is done (tests, a graceful stop). */
  async settled(): Promise<void> {
    while (this.inflight.size) await Promise.allSettled([...this.inflight]);
  }

  stop(): void {
    this.stopped = true;
    for (const [t, resolve] of this.timers) {
      clearTimeout(t);
      resolve();
    }
    this.timers.clear();
    for (const w of this.windows.values()) if (w.timer) clearTimeout(w.timer);
  }

  private track(p: Promise<void>): void {
    const q = p.catch((e: unknown) =>
      this.d.log.warn({ err: { message: String((e as Error)?.message) } }, 'notification failed'),
    );
    this.inflight.add(q);
    void q.finally(() => this.inflight.delete(q));
  }

  private wanted(kind: NotifyEvent['kind']): NotifyTarget[] {
    return this.list.filter(
      (t) =>
        t.enabled && (kind === 'summary' || !t.events.length || t.events.includes(kind as NotifyEventKind)),
    );
  }

  private async claim(key: string): Promise<boolean> {
    if (this.d.claim) {
      try {
        return await withTimeout(this.d.claim(key, this.opts.dedupTtlMs), STORE_TIMEOUT_MS);
      } catch {
        // The shared store is unreachable: decide alone (below) rather than drop the event.
      }
    }
    const now = Date.now();
    if (this.claimed.size > 10_000)
      for (const [k, until] of this.claimed) if (until < now) this.claimed.delete(k);
    if ((this.claimed.get(key) ?? 0) > now) return false;
    this.claimed.set(key, now + this.opts.dedupTtlMs);
    return true;
  }

  private fanOut(ev: NotifyEvent): void {
    for (const t of this.wanted(ev.kind)) this.admit(t, ev);
  }

  /** The per-target rate limit: deliver now, or fold into the window's summary. */
  private admit(t: NotifyTarget, ev: NotifyEvent): void {
    const now = Date.now();
    let w = this.windows.get(t.id);
    if (!w || (now - w.start >= this.opts.windowMs && !w.timer)) {
      w = { start: now, sent: 0, folded: [], foldedCount: 0, timer: null };
      this.windows.set(t.id, w);
    }
    if (w.sent < t.ratePerMinute) {
      w.sent++;
      this.deliver(t, ev);
      return;
    }
    w.foldedCount++;
    if (w.folded.length < 20) w.folded.push(ev);
    this.d.onResult?.('folded');
    if (!w.timer) {
      const win = w;
      win.timer = setTimeout(() => this.flush(t.id, win), Math.max(0, win.start + this.opts.windowMs - now));
      win.timer.unref();
    }
  }

  /** The window ended with events folded: one summary, which opens the next window. */
  private flush(targetId: string, w: Window): void {
    w.timer = null;
    const t = this.list.find((x) => x.id === targetId);
    this.windows.set(targetId, { start: Date.now(), sent: 1, folded: [], foldedCount: 0, timer: null });
    if (!t || !t.enabled || this.stopped) return;
    const kinds = new Map<string, number>();
    for (const e of w.folded) kinds.set(e.kind, (kinds.get(e.kind) ?? 0) + 1);
    const worst = w.folded.some((e) => e.severity === 'critical') ? 'critical' : 'warning';
    this.deliver(t, {
      id: `summary:${targetId}:${w.start}`,
      kind: 'summary',
      severity: worst,
      at: Date.now(),
      summary: `${w.foldedCount} more notification${w.foldedCount === 1 ? '' : 's'} in the last ${Math.round(this.opts.windowMs / 1000)} s (rate limit ${t.ratePerMinute} per window)`,
      subject: 'summary',
      details: {
        count: w.foldedCount,
        kinds: Object.fromEntries(kinds),
        events: w.folded.map((e) => ({ id: e.id, kind: e.kind, summary: e.summary })),
      },
    });
  }

  private deliver(t: NotifyTarget, ev: NotifyEvent): void {
    if (this.pending >= this.opts.maxPending) {
      this.d.onResult?.('failed');
      this.d.log.warn({ target: t.id, event: ev.id }, 'notification dropped: too many deliveries pending');
      return;
    }
    this.pending++;
    this.track(this.attempts(t, ev).finally(() => this.pending--));
  }

  private async attempts(t: NotifyTarget, ev: NotifyEvent): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const r = await this.post(t, ev);
      if (r.ok) {
        this.d.onResult?.('delivered');
        return;
      }
      const final = r.refused || t.secret === null || attempt >= this.opts.maxAttempts || this.stopped;
      this.d.onResult?.(final ? 'failed' : 'retry');
      if (final) {
        this.d.log.warn(
          { target: t.id, event: ev.id, kind: ev.kind, attempts: attempt, status: r.status, error: r.error },
          'notification not delivered',
        );
        return;
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(
          () => {
            this.timers.delete(timer);
            resolve();
          },
          Math.min(300_000, this.opts.backoffMs * 2 ** (attempt - 1)),
        );
        timer.unref();
        this.timers.set(timer, resolve);
      });
      if (this.stopped) return;
    }
  }

  private async post(t: NotifyTarget, ev: NotifyEvent): Promise<PostResult> {
    if (t.secret === null)
      return {
        ok: false,
        status: 0,
        error: 'the signing secret is sealed under a key this gateway lacks',
        ms: 0,
      };
    const { body, headers } = render(ev, { id: t.id, format: t.format, secret: t.secret }, this.d.instance);
    return postJson(t.url, body, headers, {
      policy: this.d.policy,
      use: 'operator',
      timeoutMs: this.opts.timeoutMs,
    });
  }
}
