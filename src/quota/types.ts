/**
 * Quota admission: the types both backends (Redis Lua, in-process) share.
 *
 * One admission call checks every scope that applies to a request (its key, its app) and, only if all
 * pass, takes a concurrency lease, spends a QPS slot (GCRA) and reserves the estimated tokens and cost in
 * each scope's minute/day/month windows. Settlement releases the lease and trues the reservation up to
 * actual usage in the windows it was taken from.
 */
export type LimitKind =
  'concurrency' | 'qps' | 'tokens_minute' | 'tokens_day' | 'cost_day' | 'cost_month' | 'queue_full';

export interface ScopeLimits {
  scope: 'key' | 'app' | 'token_group';
  id: string;
  /** 0 = no limit, for each field. */
  maxConcurrency: number;
  /** Requests per second (GCRA emission rate). */
  qps: number;
  /** Requests that may arrive early on top of the steady rate (GCRA tolerance in intervals); 0 = strictly paced. */
  qpsBurst: number;
  tokensPerMinute: number;
  tokensPerDay: number;
  costPerDay: number;
  costPerMonth: number;
}

export interface AdmitRequest {
  /** Hash tag shared by every key of this call (the app id): one Redis Cluster slot. */
  tag: string;
  scopes: ScopeLimits[];
  leaseId: string;
  leaseTtlMs: number;
  tokens: number;
  cost: number;
  /** The key's wait queue: woken when this reservation is settled. */
  queue: string;
  /** WAIT mode: admit only if this waiter is at the head of `queue` (else 'queued'). */
  waiter?: { queue: string; id: string };
  /** false: the key isn't in WAIT mode, so nobody can be queued ahead (saves the check). Default true. */
  mayQueue?: boolean;
}

export interface Reservation {
  leaseId: string;
  tag: string;
  queue: string;
  scopes: ScopeLimits[];
  tokens: number;
  cost: number;
  /** Window indices the reservation went to (minute, day, month), to true up the same windows. */
  minute: number;
  day: number;
  month: number;
  /** Redis time at admission. */
  at: number;
  /**
   * Admitted under WAIT (mayQueue): its settlement wakes the key's waiters. Not under REJECT or ASYNC, so
   * their settlements skip the queue check (a key switched to WAIT meanwhile: its waiters' poll finds
   * the freed slot).
   */
  wakes?: boolean;
  /** Admitted from this instance's quota slices (slices.ts), with no Redis call: settled locally too. */
  local?: boolean;
}

export type AdmitResult =
  | { ok: true; reservation: Reservation; remaining: Remaining }
  | {
      ok: false;
      queued?: false;
      limit: LimitKind;
      scope: string;
      retryAfterMs: number;
      now: number;
      remaining: Remaining;
    }
  /**
   * WAIT: not the head of the queue. `missing`: this waiter's queue entry is gone (Redis lost it), so no
   * turn would ever come: take the place again (`requeue`) before waiting.
   */
  | { ok: false; queued: true; now: number; missing?: boolean };

/** For the x-ratelimit-* headers: the tightest figures across scopes (-1 = unlimited). */
export interface Remaining {
  requestsLimit: number;
  requestsRemaining: number;
  requestsResetMs: number;
  tokensLimit: number;
  tokensRemaining: number;
  tokensResetMs: number;
}

export interface QuotaBackend {
  admit(req: AdmitRequest): Promise<AdmitResult>;
  /**
   * Releases the lease and trues up tokens/cost by (actual - reserved). A replay changes nothing when the
   * lease reserved tokens or cost; otherwise its caller settles once (Admission's lease does).
   */
  settle(r: Reservation, actualTokens: number, actualCost: number): Promise<void>;
  /** Extends a live lease (long streams). */
  renew(r: Reservation, ttlMs: number): Promise<void>;
  /** WAIT queue: enqueue (false when the queue is full), leave. Score = shared time + counter: FIFO. */
  enqueue(
    tag: string,
    queue: string,
    id: string,
    deadlineMs: number,
    maxLen: number,
  ): Promise<{ ok: boolean; position: number; score?: string }>;
  /**
   * Puts a waiter whose entry vanished back in its queue: at its old place when `score` (from enqueue) is
   * known, else at the tail. No-op when it is still queued. false: past its deadline (not queued again).
   */
  requeue(tag: string, queue: string, id: string, deadlineMs: number, score?: string): Promise<boolean>;
  leave(tag: string, queue: string, id: string): Promise<void>;
  /** Wake-ups: called with the queue name whenever a slot frees for it. */
  onWake(handler: (queue: string) => void): Promise<void>;
  /** Outstanding leases in a scope (tests, metrics); expired leases are not counted. */
  inFlight(tag: string, scope: ScopeLimits): Promise<number>;
  /** Tokens and cost used in the current windows of a scope. */
  usage(
    tag: string,
    scope: ScopeLimits,
  ): Promise<{ tokensMinute: number; tokensDay: number; costDay: number; costMonth: number }>;
  queueLength(tag: string, queue: string): Promise<number>;
  /**
   * After the shared store lost data: registers this instance's live reservations again (their leases,
   * and their reserved tokens and cost where the record of them is gone), so limits count them until they
   * settle. Idempotent: a reservation still recorded is only renewed.
   */
  restore(reservations: Reservation[], ttlMs: number): Promise<void>;
  /**
   * After the shared store lost data (or went back to an older copy): every scope's windows are seeded from
   * the ledger again at its next admission (never lowered). In-process: nothing is ever lost.
   */
  reseed(): Promise<void>;
}

/** What the ledger holds for a scope in the UTC day and month of a window (see seed.ts). */
export interface SeedFigures {
  tokensDay: number;
  costDay: number;
  costMonth: number;
}

/**
 * The ledger's figures for one scope, to seed its windows when the store that keeps them starts without
 * them: what the windows count (input + output tokens; sale price in micro-units) of the requests journaled
 * in [dayStart, dayEnd) and [monthStart, monthEnd).
 */
export interface QuotaSeedSource {
  figures(scope: ScopeLimits['scope'], id: string, w: WindowBounds): Promise<SeedFigures>;
}

export interface WindowBounds {
  day: number;
  month: number;
  dayStart: number;
  dayEnd: number;
  monthStart: number;
  monthEnd: number;
}

/** A scope limits what seeding restores: day tokens, day or month cost. */
export function needsSeed(s: ScopeLimits): boolean {
  return s.tokensPerDay > 0 || s.costPerDay > 0 || s.costPerMonth > 0;
}

/** The day (UTC, days since 1970-01-01) and its month as millisecond bounds. */
export function windowBounds(day: number): WindowBounds {
  const month = monthIndex(day);
  const y = 1970 + Math.floor(month / 12);
  const m = month % 12;
  return {
    day,
    month,
    dayStart: day * 86_400_000,
    dayEnd: (day + 1) * 86_400_000,
    monthStart: Date.UTC(y, m, 1),
    monthEnd: Date.UTC(y, m + 1, 1),
  };
}

/** Months since 1970-01 (UTC) for a day index, by civil calendar (Howard Hinnant's days_from_civil inverse). */
export function monthIndex(day: number): number {
  const z = day + 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor(
    (doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365,
  );
  const y = yoe + era * 400;
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const m = mp < 10 ? mp + 3 : mp - 9;
  const year = m <= 2 ? y + 1 : y;
  return (year - 1970) * 12 + (m - 1);
}
