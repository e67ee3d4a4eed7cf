import { EventEmitter } from 'node:events';
import type { Clock } from '../lib/clock.js';
import { systemClock } from '../lib/clock.js';
import { GatewayError } from '../core/errors.js';
import {
  type LimitKind,
  type AdmitRequest,
  type AdmitResult,
  type QuotaBackend,
  type QuotaSeedSource,
  type Remaining,
  type Reservation,
  type ScopeLimits,
  monthIndex,
  needsSeed,
  windowBounds,
} from './types.js';

interface ScopeState {
  leases: Map<string, number>; // leaseId -> expiry
  tat: number; // GCRA theoretical arrival time
  win: { m: number; mu: number; d: number; du: number; cd: number; cdu: number; cm: number; cmu: number };
  /** Day and month windows raised to the ledger's figures (see seed.ts). */
  seeded: boolean;
}

/**
 * The embedded default's admission: the same algorithm as the Redis script (see redis.ts for the
 * commented version), on in-process maps. One process, so no atomicity concerns beyond the event loop.
 *
 * The maps start empty with the process: with a seed source, a scope with day/month limits is seeded from
 * the ledger before its first admission (as Redis's windows are after a loss), so a restart doesn't give
 * a key its daily budget again. The fallback of a Redis gateway has none: it starts empty by design.
 */
export class MemoryQuota implements QuotaBackend {
  private readonly scopes = new Map<string, ScopeState>();
  private readonly queues = new Map<string, Map<string, { score: number; deadline: number }>>();
  private readonly settled = new Set<string>();
  /** Unsettled token/cost reservations with their lease expiry, refunded by the next admission once expired. */
  private readonly open = new Map<string, { r: Reservation; exp: number }>();
  private readonly bus = new EventEmitter();
  private seq = 0;
  private readonly seeding = new Map<string, Promise<void>>();

  constructor(
    private readonly clock: Clock = systemClock,
    private readonly seed?: QuotaSeedSource,
  ) {
    this.bus.setMaxListeners(0);
  }

  private state(tag: string, s: ScopeLimits): ScopeState {
    const k = `${tag}|${s.scope}:${s.id}`;
    let st = this.scopes.get(k);
    if (!st) {
      st = {
        leases: new Map(),
        tat: 0,
        win: { m: -1, mu: 0, d: -1, du: 0, cd: -1, cdu: 0, cm: -1, cmu: 0 },
        seeded: false,
      };
      this.scopes.set(k, st);
    }
    return st;
  }

  private roll(st: ScopeState, minute: number, day: number, month: number): void {
    const w = st.win;
    if (w.m !== minute) Object.assign(w, { m: minute, mu: 0 });
    if (w.d !== day) Object.assign(w, { d: day, du: 0 });
    if (w.cd !== day) Object.assign(w, { cd: day, cdu: 0 });
    if (w.cm !== month) Object.assign(w, { cm: month, cmu: 0 });
  }

  private queueOf(tag: string, q: string) {
    const k = `${tag}|${q}`;
    let m = this.queues.get(k);
    if (!m) {
      m = new Map();
      this.queues.set(k, m);
    }
    return m;
  }

  /** Raises a scope's day and month windows to the ledger's figures plus its open reservations (never lowers). */
  private seedScope(tag: string, s: ScopeLimits): Promise<void> {
    const k = `${tag}|${s.scope}:${s.id}`;
    let p = this.seeding.get(k);
    if (!p) {
      p = (async () => {
        const w = windowBounds(Math.floor(this.clock.now() / 86_400_000));
        const f = await this.seed!.figures(s.scope, s.id, w);
        const st = this.state(tag, s);
        const now = this.clock.now();
        const day = Math.floor(now / 86_400_000);
        this.roll(st, Math.floor(now / 60_000), day, monthIndex(day));
        let t = 0;
        let c = 0;
        let cm = 0;
        for (const { r } of this.open.values()) {
          if (!r.scopes.some((x) => x.scope === s.scope && x.id === s.id) || r.tag !== tag) continue;
          if (r.day === w.day) {
            t += r.tokens;
            c += r.cost;
          }
          if (r.month === w.month) cm += r.cost;
        }
        const win = st.win;
        if (win.d === w.day) win.du = Math.max(win.du, f.tokensDay + t);
        if (win.cd === w.day) win.cdu = Math.max(win.cdu, f.costDay + c);
        if (win.cm === w.month) win.cmu = Math.max(win.cmu, f.costMonth + cm);
        // The day turned while the ledger answered: the next admission seeds the new one.
        st.seeded = win.d === w.day;
      })().finally(() => this.seeding.delete(k));
      this.seeding.set(k, p);
    }
    return p;
  }

  async admit(req: AdmitRequest): Promise<AdmitResult> {
    if (this.seed) {
      const need = req.scopes.filter((s) => needsSeed(s) && !this.state(req.tag, s).seeded);
      if (need.length)
        await Promise.all(need.map((s) => this.seedScope(req.tag, s))).catch((err: unknown) => {
          throw new GatewayError(
            'service_unavailable',
            'Quota windows are being built from the ledger, and the ledger did not answer; retry.',
            { cause: err, headers: { 'retry-after': '1' } },
          );
        });
    }
    const now = this.clock.now();
    const minute = Math.floor(now / 60_000);
    const day = Math.floor(now / 86_400_000);
    const month = monthIndex(day);
    for (const [id, o] of this.open) {
      if (o.exp > now) continue;
      this.open.delete(id);
      this.refund(o.r, o.r.tokens, o.r.cost);
    }
    const rem0: Remaining = {
      requestsLimit: -1,
      requestsRemaining: 0,
      requestsResetMs: 0,
      tokensLimit: -1,
      tokensRemaining: -1,
      tokensResetMs: 0,
    };
    if (req.mayQueue !== false && !req.waiter && this.queueOf(req.tag, req.queue).size > 0) {
      // Others are already waiting for this key: no jumping the queue. Only a WAIT key has a queue (one
      // left over from a mode change drains by its waiters' timeouts), as in ADMIT_LUA.
      return {
        ok: false,
        limit: 'concurrency',
        scope: `${req.scopes[0]!.scope}:${req.scopes[0]!.id}`,
        retryAfterMs: 1000,
        now,
        remaining: rem0,
      };
    }
    if (req.waiter) {
      const q = this.queueOf(req.tag, req.waiter.queue);
      for (;;) {
        const head = [...q.entries()].sort((a, b) => a[1].score - b[1].score)[0];
        if (!head) break;
        if (head[1].deadline < now) {
          q.delete(head[0]);
          continue;
        }
        if (head[0] !== req.waiter.id)
          return q.has(req.waiter.id)
            ? { ok: false, queued: true, now }
            : { ok: false, queued: true, missing: true, now };
        break;
      }
    }
    const rem: Remaining = {
      requestsLimit: -1,
      requestsRemaining: -1,
      requestsResetMs: 0,
      tokensLimit: -1,
      tokensRemaining: -1,
      tokensResetMs: 0,
    };
    const deny = (limit: LimitKind, scope: ScopeLimits, retryAfterMs: number): AdmitResult => ({
      ok: false,
      limit,
      scope: `${scope.scope}:${scope.id}`,
      retryAfterMs: Math.max(1, Math.ceil(retryAfterMs)),
      now,
      remaining: rem,
    });
    const tats: number[] = [];
    for (const s of req.scopes) {
      const st = this.state(req.tag, s);
      this.roll(st, minute, day, month);
      for (const [id, exp] of st.leases) if (exp <= now) st.leases.delete(id);
      if (s.maxConcurrency > 0 && st.leases.size >= s.maxConcurrency) return deny('concurrency', s, 1000);
      let tat = st.tat;
      if (s.qps > 0) {
        const T = 1000 / s.qps;
        const tau = T * Math.max(0, s.qpsBurst);
        tat = Math.max(st.tat, now);
        if (tat - now > tau) return deny('qps', s, tat - now - tau);
        tat += T;
      }
      tats.push(tat);
      const w = st.win;
      if (s.tokensPerMinute > 0 && w.mu + req.tokens > s.tokensPerMinute)
        return deny('tokens_minute', s, (minute + 1) * 60_000 - now);
      if (s.tokensPerDay > 0 && w.du + req.tokens > s.tokensPerDay)
        return deny('tokens_day', s, (day + 1) * 86_400_000 - now);
      if (s.costPerDay > 0 && w.cdu + req.cost > s.costPerDay)
        return deny('cost_day', s, (day + 1) * 86_400_000 - now);
      if (s.costPerMonth > 0 && w.cmu + req.cost > s.costPerMonth)
        return deny('cost_month', s, (day + 1) * 86_400_000 - now);
    }
    req.scopes.forEach((s, i) => {
      const st = this.state(req.tag, s);
      if (s.maxConcurrency > 0) st.leases.set(req.leaseId, now + req.leaseTtlMs);
      if (s.qps > 0) st.tat = tats[i]!;
      st.win.mu += req.tokens;
      st.win.du += req.tokens;
      st.win.cdu += req.cost;
      st.win.cmu += req.cost;
      const reqLimit = s.qps > 0 ? Math.max(0, s.qpsBurst) + 1 : -1;
      if (reqLimit > 0) {
        const left = Math.max(0, Math.floor((reqLimit * (1000 / s.qps) - (st.tat - now)) / (1000 / s.qps)));
        if (rem.requestsLimit < 0 || left < rem.requestsRemaining)
          Object.assign(rem, {
            requestsLimit: reqLimit,
            requestsRemaining: left,
            requestsResetMs: Math.max(0, st.tat - now),
          });
      }
      if (s.tokensPerMinute > 0) {
        const left = Math.max(0, s.tokensPerMinute - st.win.mu);
        if (rem.tokensLimit < 0 || left < rem.tokensRemaining)
          Object.assign(rem, {
            tokensLimit: s.tokensPerMinute,
            tokensRemaining: left,
            tokensResetMs: (minute + 1) * 60_000 - now,
          });
      }
    });
    if (req.waiter) {
      const q = this.queueOf(req.tag, req.waiter.queue);
      q.delete(req.waiter.id);
      if (q.size > 0) setImmediate(() => this.bus.emit('wake', req.waiter!.queue));
    }
    const reservation: Reservation = {
      leaseId: req.leaseId,
      tag: req.tag,
      queue: req.queue,
      scopes: req.scopes,
      tokens: req.tokens,
      cost: req.cost,
      minute,
      day,
      month,
      at: now,
    };
    if (req.tokens > 0 || req.cost > 0)
      this.open.set(req.leaseId, { r: reservation, exp: now + req.leaseTtlMs });
    return { ok: true, reservation, remaining: rem };
  }

  async settle(r: Reservation, actualTokens: number, actualCost: number): Promise<void> {
    if (this.settled.has(r.leaseId)) return;
    this.settled.add(r.leaseId);
    if (this.settled.size > 100_000) this.settled.clear();
    // A reservation is trued up only while it is open: once its expiry gave it all back (see admit), a
    // late settlement would give it back twice. As SETTLE_LUA does with its reservation record.
    const live = this.open.delete(r.leaseId) || (r.tokens <= 0 && r.cost <= 0);
    for (const s of r.scopes) this.state(r.tag, s).leases.delete(r.leaseId);
    if (live) this.refund(r, r.tokens - actualTokens, r.cost - actualCost);
    if (this.queueOf(r.tag, r.queue).size > 0) setImmediate(() => this.bus.emit('wake', r.queue));
  }

  /** Gives back `tokens` and `cost` (negative: takes more) to the windows `r` was reserved in. */
  private refund(r: Reservation, tokens: number, cost: number): void {
    for (const s of r.scopes) {
      const w = this.state(r.tag, s).win;
      if (w.m === r.minute) w.mu = Math.max(0, w.mu - tokens);
      if (w.d === r.day) w.du = Math.max(0, w.du - tokens);
      if (w.cd === r.day) w.cdu = Math.max(0, w.cdu - cost);
      if (w.cm === r.month) w.cmu = Math.max(0, w.cmu - cost);
    }
  }

  async renew(r: Reservation, ttlMs: number): Promise<void> {
    const now = this.clock.now();
    const o = this.open.get(r.leaseId);
    if (o) o.exp = now + ttlMs;
    for (const s of r.scopes) {
      const st = this.state(r.tag, s);
      if (st.leases.has(r.leaseId)) st.leases.set(r.leaseId, now + ttlMs);
    }
  }

  async enqueue(tag: string, queue: string, id: string, deadlineMs: number, maxLen: number) {
    const q = this.queueOf(tag, queue);
    const now = this.clock.now();
    for (const [k, v] of q) if (v.deadline < now) q.delete(k);
    if (q.size >= maxLen) return { ok: false, position: q.size };
    const score = now * 1000 + (this.seq++ % 1000);
    q.set(id, { score, deadline: deadlineMs });
    return { ok: true, position: q.size - 1, score: String(score) };
  }

  async requeue(tag: string, queue: string, id: string, deadlineMs: number, score?: string) {
    const now = this.clock.now();
    if (deadlineMs < now) return false;
    const q = this.queueOf(tag, queue);
    if (!q.has(id))
      q.set(id, { score: score ? Number(score) : now * 1000 + (this.seq++ % 1000), deadline: deadlineMs });
    return true;
  }

  /** Nothing to restore: this process's maps can't lose what it holds while it runs. */
  async restore(): Promise<void> {}

  async reseed(): Promise<void> {}

  async leave(tag: string, queue: string, id: string) {
    const q = this.queueOf(tag, queue);
    if (q.delete(id) && q.size > 0) setImmediate(() => this.bus.emit('wake', queue));
  }

  async onWake(handler: (queue: string) => void) {
    this.bus.on('wake', handler);
  }

  async inFlight(tag: string, scope: ScopeLimits) {
    const now = this.clock.now();
    let n = 0;
    for (const exp of this.state(tag, scope).leases.values()) if (exp > now) n++;
    return n;
  }

  async usage(tag: string, scope: ScopeLimits) {
    const now = this.clock.now();
    const day = Math.floor(now / 86_400_000);
    const st = this.state(tag, scope);
    this.roll(st, Math.floor(now / 60_000), day, monthIndex(day));
    return { tokensMinute: st.win.mu, tokensDay: st.win.du, costDay: st.win.cdu, costMonth: st.win.cmu };
  }

  async queueLength(tag: string, queue: string) {
    return this.queueOf(tag, queue).size;
  }
}
