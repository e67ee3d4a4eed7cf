/**
 * Quota slices: admission with no Redis round trip for scopes far from their limits.
 *
 * `SlicedQuota` wraps the Redis backend. Per (tag, scope) this instance holds a SLICE leased from Redis by
 * one script call (slices-lua.ts): `c` concurrency slots (members of the scope's lease ZSET, so the exact
 * admission script counts them like leases), `q` GCRA emissions (TAT moved by q*T, only as many as the
 * tolerance holds now, as a q-unit admission would), and tokens / cost reserved in the scope's
 * minute/day/month windows as a reservation record (the reaper refunds it if this instance dies). An
 * admission whose every scope has a slice with room for it (1 slot, 1 emission, its token and cost
 * estimates) is admitted here; any other goes to the exact admission script, unchanged. Settling a local
 * admission is local. Slices are renewed in the background (one script call per slice: at once when
 * running low, before its emissions pass their horizon or else once a second while used, every ttl/3
 * while only holding requests); a renewal commits what was spent since the last one, moves the
 * reservation to the new window when the minute/day/month turned, and a slice is given back after IDLE_MS
 * without use.
 *
 * Sizing: a slice asks for about twice the demand it saw per renewal period (at least 2 requests' worth;
 * slots: twice the peak in flight), and Redis grants at most the scope's headroom / FLEET, so slices
 * shrink as a window fills. A grant the cap cuts below 2 requests' worth is no grant.
 *
 * Exact mode (every request of the scope goes to the admission script, as without slices):
 *   - small limits: maxConcurrency < 32 or qps < 50 (a slice would be most of the limit);
 *   - a renewal got less than 2 requests' worth in some dimension (the cap bit: near a limit; for QPS a
 *     burst tolerance holding fewer than 2 * FLEET emissions: qps_burst 1, the default, is always exact);
 *   - an exact admission of the scope was refused in the last EXACT_HOLD_MS;
 *   - WAIT keys (mayQueue): admitted here only when the key's own scope has a slice whose last renewal saw
 *     the key's queue empty (else the script answers; a queue formed on another instance since that
 *     renewal, at most about a second ago, can be jumped by this instance's requests meanwhile).
 * Entering exact mode gives the slice back at once (when nothing is in flight), so near a limit a slice
 * never keeps budget from the other instances longer than one renewal.
 *
 * Overshoot bound. Every slot, emission, token and micro-unit a slice can spend is reserved in Redis
 * before it is spent, so the fleet admits no more than a limit allows except:
 *   - tokens and cost: actual usage above the estimate (the true-up), exactly as in exact mode;
 *   - concurrency: none (slots are lease-set members, counted by every admission);
 *   - QPS: an emission with schedule time theta is taken at lease time with theta <= now + tau (as GCRA
 *     does) and may be spent until theta + H, H = max(HORIZON_MS, tau) (older ones are dropped), so in any
 *     window W at most floor((W + tau + H) / T) + 1 admissions, against exact GCRA's floor((W + tau) / T)
 *     + 1: at most one more burst tolerance (or 250 ms of rate) per window, never a higher long-run rate
 *     (each emission of the schedule is spent once at most).
 *     This instance's estimate of Redis's clock is taken from the renewal's send time, so it is never
 *     behind Redis's and the horizon is never exceeded by clock error.
 * The other way (under-admission): emissions a slice drops unspent, and budget a slice holds unused until
 * it is renewed smaller or given back, are not available to other instances meanwhile.
 * A dead instance's slice: slots and reservation come back within the lease TTL (+1 s, the reaper); what it
 * spent since its last renewal is refunded with the reservation (like an in-flight request's reservation).
 *
 * Rebuild rule (Redis lost data: `restore` / `reseed`, on the coordinator's data-loss signal): every slice
 * is renewed at once. A slice whose record is gone re-registers its slots (ZADD) and reserves its in-flight
 * estimates again, and its spend since the last renewal is added to the current windows (the safe side).
 * While the scope's windows wait for the ledger seed (no 'sv'), renewals grant nothing new: local
 * admissions stop, the exact path seeds the windows (SEED_LUA counts slice records like reservations), and
 * the next renewal grants again. The GCRA schedule restarts from now (QPS starts fresh, as in exact mode).
 *
 * Redis unreachable: a slice keeps being spent locally until ttl/2 after its last successful renewal (its
 * Redis slots and record live for ttl), then requests go to the exact path, which throws, and Admission's
 * fallback takes over as before.
 */
import type { TickPipeline } from '../coord/tick-pipeline.js';
import { uniqueId } from '../core/ids.js';
import type { RedisQuota } from './redis.js';
import { SLICE_LUA } from './slices-lua.js';
import {
  type AdmitRequest,
  type AdmitResult,
  type QuotaBackend,
  type Remaining,
  type Reservation,
  type ScopeLimits,
  monthIndex,
} from './types.js';

export interface SliceOptions {
  /** Slot and reservation TTL in Redis (the lease TTL): a dead instance's slice comes back by then. */
  leaseTtlMs: number;
  instanceId?: string;
  /** Windows are seeded from the ledger (the inner backend has a seed source). */
  seeded?: boolean;
  renewMs?: number;
  idleMs?: number;
  fleet?: number;
  horizonMs?: number;
  exactHoldMs?: number;
}

const RENEW_MS = 250;
const RESIZE_MS = 1_000;
/** Renewals on demand (running low) at most this often per slice. */
const RENEW_GAP_MS = 5;
const IDLE_MS = 1_000;
const FLEET = 8;
/** How long after its schedule time a slice may still spend an emission (the QPS bound's term). */
export const HORIZON_MS = 250;
const EXACT_HOLD_MS = 3_000;
const MAX_SLOTS = 1_000;
const MAX_REQUESTS = 100_000;

/**
 * Limits too small to slice (see the header): a GCRA tolerance that can't hold two emissions per slice
 * after the fleet factor never yields a grant, so it is not asked for.
 */
export function sliceable(s: ScopeLimits, fleet = FLEET): boolean {
  if (s.maxConcurrency > 0 && s.maxConcurrency < 32) return false;
  return !(s.qps > 0 && (s.qps < 50 || Math.max(0, s.qpsBurst) + 1 < 2 * fleet));
}

interface Slice {
  key: string;
  tag: string;
  limits: ScopeLimits;
  recordId: string;
  slotPrefix: string;
  keys: [string, string, string, string, string];
  /** Leased at least once (until then every request goes to Redis). */
  ready: boolean;
  /** Being returned: no more local admissions. */
  closing: boolean;
  busy: Promise<void> | null;
  /** Local time (ms) after which the slice is not spent any more without a successful renewal. */
  validUntil: number;
  /** Redis's clock minus this process's (us). */
  offsetUs: number;
  lastRenew: number;
  lastUse: number;
  /** Admissions of the scope (local or not) since the last renewal, and the peak in flight. */
  used: number;
  peak: number;
  /** This scope's requests admitted by the exact script and not settled yet (sizing only). */
  remoteIn: number;
  avgTokens: number;
  avgCost: number;
  slots: number;
  slotsReg: number;
  inflight: number;
  /** GCRA emissions held: per lease, the next unused one's schedule time and the end (us), spacing T. */
  ems: Array<{ next: number; end: number; T: number }>;
  freeT: number;
  freeC: number;
  inflT: number;
  inflC: number;
  spentT: number;
  spentC: number;
  limT: boolean;
  limC: boolean;
  minute: number;
  day: number;
  month: number;
  queueLen: number;
  unseeded: boolean;
  tokensLeft: number;
  needRenew: boolean;
  /** What the last renewal left this slice (emissions, tokens, cost): "running low" is a quarter of it. */
  lastQ: number;
  lastT: number;
  lastC: number;
}

interface LocalHold {
  slices: Slice[];
  tokens: number;
  cost: number;
}

type SliceReply = [
  number,
  number,
  number,
  string,
  string,
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  number,
];

const nowUsLocal = () => (performance.timeOrigin + performance.now()) * 1000;

export class SlicedQuota implements QuotaBackend {
  readonly instanceId: string;
  private readonly slices = new Map<string, Slice>();
  private readonly exactUntil = new Map<string, number>();
  private readonly holds = new Map<string, LocalHold>();
  private timer: NodeJS.Timeout | null = null;
  private giveBackAfter: Slice | null = null;
  private readonly o: Required<Omit<SliceOptions, 'instanceId' | 'seeded'>>;
  /** Admissions made here / sent to the exact script, and slice script calls (tests, metrics). */
  readonly stats = { local: 0, remote: 0, sliceCalls: 0 };

  constructor(
    readonly inner: RedisQuota,
    private readonly prefix: string,
    private readonly tick: TickPipeline,
    private readonly opts: SliceOptions,
  ) {
    this.instanceId = opts.instanceId ?? uniqueId('i_');
    this.o = {
      leaseTtlMs: opts.leaseTtlMs,
      renewMs: opts.renewMs ?? RENEW_MS,
      idleMs: opts.idleMs ?? IDLE_MS,
      fleet: opts.fleet ?? FLEET,
      horizonMs: opts.horizonMs ?? HORIZON_MS,
      exactHoldMs: opts.exactHoldMs ?? EXACT_HOLD_MS,
    };
    this.tick.define('animaSlice', SLICE_LUA);
  }

  private k(tag: string, rest: string): string {
    return `${this.prefix}{q:${tag}}:${rest}`;
  }

  private sliceFor(tag: string, s: ScopeLimits): Slice {
    const key = `${tag}|${s.scope}:${s.id}`;
    let sl = this.slices.get(key);
    if (!sl) {
      const id = `sl:${this.instanceId}:${s.scope}:${s.id}`;
      sl = {
        key,
        tag,
        limits: s,
        recordId: id,
        slotPrefix: `sl:${this.instanceId}:`,
        keys: [
          this.k(tag, `c:${s.scope}:${s.id}`),
          this.k(tag, `s:${s.scope}:${s.id}`),
          this.k(tag, 'res'),
          this.k(tag, 'resx'),
          this.k(tag, `w:${s.id}`),
        ],
        ready: false,
        closing: false,
        busy: null,
        validUntil: 0,
        offsetUs: 0,
        lastRenew: 0,
        lastUse: Date.now(),
        used: 0,
        peak: 0,
        remoteIn: 0,
        avgTokens: 0,
        avgCost: 0,
        slots: 0,
        slotsReg: 0,
        inflight: 0,
        ems: [],
        freeT: 0,
        freeC: 0,
        inflT: 0,
        inflC: 0,
        spentT: 0,
        spentC: 0,
        limT: false,
        limC: false,
        minute: -1,
        day: -1,
        month: -1,
        queueLen: 0,
        unseeded: false,
        tokensLeft: -1,
        needRenew: true,
        lastQ: 0,
        lastT: 0,
        lastC: 0,
      };
      this.slices.set(key, sl);
      this.startTimer();
    }
    sl.limits = s;
    return sl;
  }

  private isExact(tag: string, s: ScopeLimits): boolean {
    if (!sliceable(s, this.o.fleet)) return true;
    const until = this.exactUntil.get(`${tag}|${s.scope}:${s.id}`);
    return until !== undefined && until > Date.now();
  }

  /** How long after its schedule time an emission may still be spent: HORIZON_MS, or tau when longer. */
  horizonMs(s: ScopeLimits): number {
    return s.qps > 0
      ? Math.max(this.o.horizonMs, (1000 / s.qps) * Math.max(0, s.qpsBurst))
      : this.o.horizonMs;
  }

  /**
   * How often a slice in use is renewed when it doesn't run low: before its emissions expire, else once
   * a second (to commit what was spent and follow demand; running low renews at once anyway).
   */
  private periodMs(s: ScopeLimits): number {
    return Math.max(this.o.renewMs, s.qps > 0 ? this.horizonMs(s) : RESIZE_MS);
  }

  /** Whether `sl` has room for one request of `req` now (no side effects but dropping stale emissions). */
  private roomIn(sl: Slice, req: AdmitRequest, nowUs: number): boolean {
    const s = sl.limits;
    if (!sl.ready || sl.closing || sl.unseeded || Date.now() > sl.validUntil) return false;
    const nowMs = nowUs / 1000;
    const minute = Math.floor(nowMs / 60_000);
    const day = Math.floor(nowMs / 86_400_000);
    // A window turned since the slice reserved in it: the renewal moves it first.
    if (s.tokensPerMinute > 0 && minute !== sl.minute) return false;
    if ((s.tokensPerDay > 0 || s.costPerDay > 0) && day !== sl.day) return false;
    if (s.costPerMonth > 0 && monthIndex(day) !== sl.month) return false;
    if (s.maxConcurrency > 0 && sl.inflight >= sl.slots) return false;
    if (sl.limT && req.tokens > sl.freeT) return false;
    if (sl.limC && req.cost > sl.freeC) return false;
    return s.qps <= 0 || this.emission(sl, nowUs) !== null;
  }

  /**
   * The slice's next usable emission: the oldest unused one no older than HORIZON_MS (older ones are
   * dropped: the bound in the header counts on it), or null.
   */
  private emission(sl: Slice, nowUs: number): { next: number; end: number; T: number } | null {
    const oldest = nowUs - this.horizonMs(sl.limits) * 1000;
    while (sl.ems.length) {
      const e = sl.ems[0]!;
      if (e.next < oldest) e.next += Math.ceil((oldest - e.next) / e.T) * e.T;
      if (e.next + e.T <= e.end + 1) return e;
      sl.ems.shift();
    }
    return null;
  }

  async admit(req: AdmitRequest): Promise<AdmitResult> {
    const local = req.waiter ? null : this.tryLocal(req);
    if (local) return local;
    this.stats.remote++;
    let res = await this.inner.admit(req);
    // Refused for concurrency while this instance's own slice of that scope holds idle slots: those slots
    // are what the script counted against us. Shrink the slice to what is in flight and ask once more, so
    // a refusal means the fleet is really at its limit, not that slots sit idle here.
    if (!res.ok && !res.queued && res.limit === 'concurrency') {
      const sl = this.slices.get(`${req.tag}|${res.scope}`);
      if (sl && sl.ready && sl.slots > sl.inflight) {
        sl.closing = true;
        if (sl.busy) await sl.busy.catch(() => {});
        await this.renew1(sl).catch(() => {});
        this.stats.remote++;
        res = await this.inner.admit(req);
      }
    }
    const nowMs = Date.now();
    // Slices are leased (and kept) only for calls that could be admitted from them: every scope sliceable
    // and not exact, and a WAIT key's own scope among them (see tryLocal). Else a scope beside an exact one
    // would renew a slice nobody can spend.
    const eligible =
      !req.waiter &&
      req.scopes.every((s) => !this.isExact(req.tag, s)) &&
      (req.mayQueue === false || req.scopes.some((s) => s.scope === 'key' && s.id === req.queue));
    for (const s of req.scopes) {
      const sl = this.slices.get(`${req.tag}|${s.scope}:${s.id}`);
      if (res.ok) {
        if (!eligible) continue;
        // Demand seen by the exact path counts for the slice's size; the first one leases a slice.
        const x = sl ?? this.sliceFor(req.tag, s);
        this.seen(x, req, nowMs);
        x.remoteIn++;
        x.peak = Math.max(x.peak, x.inflight + x.remoteIn);
        if (!x.ready || x.needRenew || x.unseeded) this.renewSoon(x);
      } else if (!res.queued && res.scope === `${s.scope}:${s.id}` && sliceable(s, this.o.fleet)) {
        // Refused by the exact script: this scope is near a limit, so exact for a while, slice given back.
        this.exactUntil.set(`${req.tag}|${s.scope}:${s.id}`, nowMs + this.o.exactHoldMs);
        this.startTimer(); // which also forgets the marks once they pass
        if (sl) {
          sl.closing = true;
          this.renewSoon(sl); // shrinks it to what is in flight: idle slots go back at once
        }
      }
    }
    return res;
  }

  private seen(sl: Slice, req: AdmitRequest, nowMs: number): void {
    sl.used++;
    sl.lastUse = nowMs;
    sl.avgTokens = sl.avgTokens === 0 ? req.tokens : sl.avgTokens * 0.9 + req.tokens * 0.1;
    sl.avgCost = sl.avgCost === 0 ? req.cost : sl.avgCost * 0.9 + req.cost * 0.1;
  }

  private tryLocal(req: AdmitRequest): AdmitResult | null {
    if (req.scopes.length === 0) return null;
    const nowLocal = nowUsLocal();
    const parts: Slice[] = [];
    let queueChecked = req.mayQueue === false;
    for (const s of req.scopes) {
      if (this.isExact(req.tag, s)) return null;
      const sl = this.slices.get(`${req.tag}|${s.scope}:${s.id}`);
      if (!sl) return null;
      sl.limits = s;
      if (!this.roomIn(sl, req, nowLocal + sl.offsetUs)) {
        sl.needRenew = true;
        if (sl.ready && !sl.closing) this.renewSoon(sl);
        return null;
      }
      if (s.scope === 'key' && s.id === req.queue && sl.queueLen === 0) queueChecked = true;
      parts.push(sl);
    }
    // WAIT key: only when its own slice saw its queue empty (see the header).
    if (!queueChecked) return null;
    const nowMs = Date.now();
    let remaining: Remaining | null = null;
    for (const sl of parts) {
      const s = sl.limits;
      sl.inflight++;
      sl.peak = Math.max(sl.peak, sl.inflight + sl.remoteIn);
      let low = s.maxConcurrency > 0 && (sl.slots - sl.inflight) * 4 < sl.slots;
      if (s.qps > 0) {
        const e = this.emission(sl, nowLocal + sl.offsetUs)!;
        e.next += e.T;
        low ||= sl.ems.length === 1 && (e.end - e.next) * 4 < sl.lastQ * e.T;
      }
      low ||= (sl.limT && sl.freeT * 4 < sl.lastT) || (sl.limC && sl.freeC * 4 < sl.lastC);
      // Running low: renewed now, not when it is empty (requests would go to Redis meanwhile).
      if (low) this.renewSoon(sl);
      sl.freeT -= req.tokens;
      sl.inflT += req.tokens;
      sl.freeC -= req.cost;
      sl.inflC += req.cost;
      this.seen(sl, req, nowMs);
      remaining = this.remainingOf(sl, remaining);
    }
    const first = parts[0]!;
    this.holds.set(req.leaseId, { slices: parts, tokens: req.tokens, cost: req.cost });
    this.stats.local++;
    return {
      ok: true,
      reservation: {
        leaseId: req.leaseId,
        tag: req.tag,
        queue: req.queue,
        scopes: req.scopes,
        tokens: req.tokens,
        cost: req.cost,
        minute: first.minute,
        day: first.day,
        month: first.month,
        at: Math.floor((nowLocal + first.offsetUs) / 1000),
        wakes: req.mayQueue !== false,
        local: true,
      },
      remaining: remaining!,
    };
  }

  /** The x-ratelimit figures a local admission can give: this slice's view, tightest across scopes. */
  private remainingOf(sl: Slice, prev: Remaining | null): Remaining {
    const s = sl.limits;
    const r: Remaining = prev ?? {
      requestsLimit: -1,
      requestsRemaining: -1,
      requestsResetMs: 0,
      tokensLimit: -1,
      tokensRemaining: -1,
      tokensResetMs: 0,
    };
    if (s.qps > 0 && r.requestsLimit < 0) {
      r.requestsLimit = Math.max(0, s.qpsBurst) + 1;
      r.requestsRemaining = r.requestsLimit - 1;
    }
    if (s.tokensPerMinute > 0 && sl.tokensLeft >= 0) {
      const left = Math.max(0, sl.tokensLeft + Math.max(0, sl.freeT));
      if (r.tokensLimit < 0 || left < r.tokensRemaining) {
        r.tokensLimit = s.tokensPerMinute;
        r.tokensRemaining = left;
        r.tokensResetMs = (sl.minute + 1) * 60_000 - Date.now();
      }
    }
    return r;
  }

  async settle(r: Reservation, actualTokens: number, actualCost: number): Promise<void> {
    if (!r.local) {
      for (const s of r.scopes) {
        const sl = this.slices.get(`${r.tag}|${s.scope}:${s.id}`);
        if (sl && sl.remoteIn > 0) sl.remoteIn--;
      }
      return this.inner.settle(r, actualTokens, actualCost);
    }
    const h = this.holds.get(r.leaseId);
    if (!h) return; // settled already
    this.holds.delete(r.leaseId);
    for (const sl of h.slices) {
      sl.inflight--;
      sl.inflT -= h.tokens;
      sl.inflC -= h.cost;
      // Up to the estimate goes back to the slice; above it, the slice's free budget goes negative (the
      // true-up overshoot every admission path has). The actual is committed at the next renewal.
      sl.freeT += h.tokens - actualTokens;
      sl.freeC += h.cost - actualCost;
      sl.spentT += actualTokens;
      sl.spentC += actualCost;
      sl.lastUse = Date.now();
      // A closing slice (its scope near a limit) hands each slot back as its request ends.
      if (sl.closing) {
        if (sl.inflight === 0 && !sl.busy) void this.giveBack(sl).catch(() => {});
        else this.renewSoon(sl);
      }
    }
  }

  private renewSoon(sl: Slice): void {
    if (sl.busy || Date.now() - sl.lastRenew < RENEW_GAP_MS) return;
    void this.renew1(sl).catch(() => {});
  }

  private startTimer(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.sweep(), this.o.renewMs);
    this.timer.unref();
  }

  /** Renews the slices due, returns the idle and closing ones. */
  private sweep(): void {
    const now = Date.now();
    for (const sl of this.slices.values()) {
      if (sl.busy) continue;
      if (
        sl.inflight === 0 &&
        (sl.closing || now - sl.lastUse >= this.o.idleMs || !sliceable(sl.limits, this.o.fleet))
      ) {
        void this.giveBack(sl).catch(() => {});
        continue;
      }
      const since = now - sl.lastRenew;
      if (
        since >= this.o.leaseTtlMs / 3 ||
        (since >= this.o.renewMs && (sl.needRenew || sl.closing || this.windowTurned(sl))) ||
        (sl.used > 0 && since >= 0.75 * this.periodMs(sl.limits))
      )
        void this.renew1(sl).catch(() => {});
    }
    for (const [k, until] of this.exactUntil) if (until <= now) this.exactUntil.delete(k);
    if (this.slices.size === 0 && this.exactUntil.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  private windowTurned(sl: Slice): boolean {
    const nowMs = (nowUsLocal() + sl.offsetUs) / 1000;
    return Math.floor(nowMs / 60_000) !== sl.minute;
  }

  private baseArgs(sl: Slice, mode: 'r' | 'x'): Array<string | number> {
    const s = sl.limits;
    return [
      5,
      ...sl.keys,
      mode,
      sl.slotPrefix,
      sl.recordId,
      this.o.leaseTtlMs,
      this.opts.seeded ? '1' : '0',
      s.maxConcurrency,
      s.qps,
      s.qpsBurst,
      s.tokensPerMinute,
      s.tokensPerDay,
      s.costPerDay,
      s.costPerMonth,
    ];
  }

  /** One renewal (or the first lease) of a slice; one at a time per slice. */
  private renew1(sl: Slice): Promise<void> {
    if (sl.busy) return sl.busy;
    const p = this.doRenew(sl).finally(() => {
      sl.busy = null;
      if (this.giveBackAfter === sl) {
        this.giveBackAfter = null;
        if (sl.inflight === 0) void this.giveBack(sl).catch(() => {});
      }
    });
    sl.busy = p;
    return p;
  }

  private async doRenew(sl: Slice): Promise<void> {
    const s = sl.limits;
    const now = Date.now();
    const period = this.periodMs(s);
    const elapsed = Math.max(1, sl.lastRenew ? now - sl.lastRenew : this.o.renewMs);
    const n = sl.closing
      ? 0
      : Math.min(MAX_REQUESTS, Math.max(2, Math.ceil((2 * sl.used * period) / elapsed)));
    const cTarget = sl.closing ? 0 : Math.min(MAX_SLOTS, Math.max(2, 2 * sl.peak));
    // Shrinking happens here, before the call (local admissions meanwhile stay within what stays
    // reserved); growth only once Redis granted it.
    const keepSlots = Math.min(sl.slots, Math.max(sl.inflight, cTarget));
    sl.slots = keepSlots;
    const wantT = Math.ceil(n * sl.avgTokens);
    const wantC = Math.ceil(n * sl.avgCost);
    const keepT = Math.max(0, Math.min(sl.freeT, wantT));
    const keepC = Math.max(0, Math.min(sl.freeC, wantC));
    if (sl.freeT > keepT) sl.freeT = keepT;
    if (sl.freeC > keepC) sl.freeC = keepC;
    const spT = sl.spentT;
    const spC = sl.spentC;
    const used = sl.used;
    const args = this.baseArgs(sl, 'r');
    args.push(
      sl.slotsReg,
      keepSlots,
      Math.max(keepSlots, cTarget),
      '',
      0,
      n,
      spT,
      spC,
      sl.inflT + keepT,
      sl.inflC + keepC,
      Math.max(0, wantT - keepT),
      Math.max(0, wantC - keepC),
      this.o.fleet,
      0,
      s.scope === 'key' ? '1' : '0',
      Math.ceil(2 * sl.avgTokens),
      Math.ceil(2 * sl.avgCost),
    );
    const sentAt = Date.now();
    const sentUs = nowUsLocal();
    this.stats.sliceCalls++;
    const r = await this.tick.call<SliceReply>('animaSlice', args);
    const back = Date.now();
    // Redis's TIME was read after the call left: measured from the send, the estimate of Redis's clock
    // is never behind it, so no emission is kept past its horizon (see the bound in the header).
    sl.offsetUs = Number(r[1]) - sentUs;
    sl.lastRenew = back;
    sl.validUntil = sentAt + this.o.leaseTtlMs / 2;
    sl.used = Math.max(0, sl.used - used);
    sl.peak = sl.inflight + sl.remoteIn;
    sl.spentT -= spT;
    sl.spentC -= spC;
    sl.slots = Number(r[2]);
    sl.slotsReg = sl.slots;
    const gT = Number(r[6]);
    const gC = Number(r[7]);
    sl.limT = gT >= 0;
    sl.limC = gC >= 0;
    if (gT > 0) sl.freeT += gT;
    if (gC > 0) sl.freeC += gC;
    sl.minute = Number(r[8]);
    sl.day = Number(r[9]);
    sl.month = Number(r[10]);
    sl.queueLen = Number(r[11]);
    sl.unseeded = Number(r[12]) === 1;
    sl.tokensLeft = Number(r[13]);
    const wantQ = n;
    let emissions = Infinity;
    if (s.qps > 0) {
      const T = 1_000_000 / s.qps;
      const start = Number(r[3]);
      const end = Number(r[4]);
      emissions = Math.round((end - start) / T);
      if (emissions > 0) sl.ems.push({ next: start, end, T });
      if (sl.ems.length > 4) sl.ems.shift();
      // What this slice can still spend, the new lease included.
      const nowUs = Number(r[1]);
      emissions = sl.ems.reduce(
        (sum, x) =>
          sum +
          Math.max(0, Math.floor((x.end + 1 - Math.max(x.next, nowUs - this.horizonMs(s) * 1000)) / x.T)),
        0,
      );
    }
    sl.lastQ = emissions;
    sl.lastT = sl.freeT;
    sl.lastC = sl.freeC;
    sl.ready = true;
    sl.needRenew = false;
    if (sl.closing || sl.unseeded) return;
    // Near a limit (the cap bit and left room for fewer than 2 requests): exact mode, slice given back.
    const starved =
      (s.maxConcurrency > 0 && sl.slots - sl.inflight < 2 && sl.slots < Math.max(keepSlots, cTarget)) ||
      (s.qps > 0 && emissions < 2 && emissions < wantQ) ||
      (sl.limT && sl.freeT < 2 * sl.avgTokens && gT < wantT - keepT) ||
      (sl.limC && sl.freeC < 2 * sl.avgCost && gC < wantC - keepC);
    if (starved) {
      this.exactUntil.set(sl.key, Date.now() + this.o.exactHoldMs);
      sl.closing = true;
      // Given back at once when nothing is in flight: what it still holds is kept from the others.
      if (sl.inflight === 0) this.giveBackAfter = sl;
    }
  }

  /** Returns an idle or closing slice (nothing in flight): its slots, unused budget and schedule tail. */
  private giveBack(sl: Slice): Promise<void> {
    sl.closing = true;
    const p = (async () => {
      if (!sl.ready && sl.slotsReg === 0) {
        this.slices.delete(sl.key);
        return;
      }
      const last = sl.ems[sl.ems.length - 1];
      const args = this.baseArgs(sl, 'x');
      args.push(
        sl.slotsReg,
        0,
        0,
        last ? String(last.end) : '',
        last ? Math.floor(last.next) : 0,
        0,
        sl.spentT,
        sl.spentC,
        0,
        0,
        0,
        0,
        this.o.fleet,
        0,
        '0',
        0,
        0,
      );
      this.stats.sliceCalls++;
      try {
        await this.tick.call<SliceReply>('animaSlice', args);
      } finally {
        // Gone from here either way: if Redis missed it, the slots and record expire by themselves.
        if (this.slices.get(sl.key) === sl) this.slices.delete(sl.key);
      }
    })().finally(() => {
      sl.busy = null;
    });
    sl.busy = p;
    return p;
  }

  /** Every slice renewed now (data loss: see the rebuild rule in the header). */
  private async reregister(): Promise<void> {
    await Promise.all(
      [...this.slices.values()].map(async (sl) => {
        if (sl.busy) await sl.busy.catch(() => {});
        if (this.slices.get(sl.key) !== sl || !sl.ready) return;
        await this.renew1(sl);
      }),
    );
  }

  async restore(reservations: Reservation[], ttlMs: number): Promise<void> {
    const remote = reservations.filter((r) => !r.local);
    await Promise.all([remote.length ? this.inner.restore(remote, ttlMs) : undefined, this.reregister()]);
  }

  async reseed(): Promise<void> {
    await Promise.all([this.inner.reseed(), this.reregister()]);
  }

  async renew(r: Reservation, ttlMs: number): Promise<void> {
    // A local admission's slots live as long as its slice, which is renewed while it holds requests.
    if (!r.local) await this.inner.renew(r, ttlMs);
  }

  enqueue(tag: string, queue: string, id: string, deadlineMs: number, maxLen: number) {
    return this.inner.enqueue(tag, queue, id, deadlineMs, maxLen);
  }
  requeue(tag: string, queue: string, id: string, deadlineMs: number, score?: string) {
    return this.inner.requeue(tag, queue, id, deadlineMs, score);
  }
  leave(tag: string, queue: string, id: string) {
    return this.inner.leave(tag, queue, id);
  }
  onWake(handler: (queue: string) => void) {
    return this.inner.onWake(handler);
  }
  /** Counts slice slots too: they are held for this scope's requests (Redis can't tell them apart). */
  inFlight(tag: string, scope: ScopeLimits) {
    return this.inner.inFlight(tag, scope);
  }
  usage(tag: string, scope: ScopeLimits) {
    return this.inner.usage(tag, scope);
  }
  queueLength(tag: string, queue: string) {
    return this.inner.queueLength(tag, queue);
  }

  /** Slices held now (tests, metrics). */
  held(): number {
    return this.slices.size;
  }

  /** Gives every slice back (what is in flight stays registered until its TTL), then closes the inner backend. */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await Promise.all(
      [...this.slices.values()].map(async (sl) => {
        if (sl.busy) await sl.busy.catch(() => {});
        if (sl.inflight === 0) await this.giveBack(sl).catch(() => {});
      }),
    );
    this.inner.close();
  }
}
