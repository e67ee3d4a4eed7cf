import { Cluster, type Redis } from 'ioredis';
import { subscriberOf } from '../coord/redis.js';
import { TickPipeline } from '../coord/tick-pipeline.js';
import { GatewayError } from '../core/errors.js';
import { NameCache } from '../lib/name-cache.js';
import {
  type AdmitRequest,
  type AdmitResult,
  type LimitKind,
  type QuotaBackend,
  type QuotaSeedSource,
  type Remaining,
  type Reservation,
  type ScopeLimits,
  monthIndex,
  windowBounds,
} from './types.js';

/**
 * Admission in ONE Redis round trip. Every key of a call carries the app's hash tag ({q:<app>}), so the
 * script touches one Redis Cluster slot. Time is Redis's (TIME), never an instance's clock.
 *
 * Token and cost reservations are recorded per tag with the same expiry; a reservation never settled
 * (its instance died) is refunded by an admission on that tag within a second of its expiry, so a crash
 * leaks neither slots nor budget for longer than the lease TTL (+ 1 s for budget).
 *
 * Per scope: a ZSET of concurrency leases (member = lease id, score = expiry; expired members are not
 * counted, so a dead instance's leases return within their TTL, and are removed once a minute) and a HASH holding the
 * GCRA theoretical arrival time and the minute / day / month windows of tokens and cost.
 *
 * GCRA: emission interval T = 1000/qps ms, tolerance tau = T*burst. A request at `now` passes when
 * TAT - now <= tau, and moves TAT to max(TAT, now) + T. No window edges, so bursts can't double the rate.
 * burst = 0 paces strictly, but then every late arrival's lateness is lost (TAT restarts at `now`) and a
 * jittery client gets ~10% less than its rate; the default burst of 1 keeps the long-run rate exact.
 *
 * Windows and data loss: a state hash whose day/month windows were seeded from the ledger carries 'sv'. A
 * scope with a day-token or a day/month cost limit is not admitted from a hash without it (the script
 * answers "seed first", see ADMIT_LUA): the hash is missing (Redis restarted empty, was flushed, evicted
 * it, or the scope is new), so the windows would start at zero though the ledger knows what was spent.
 * The caller reads the ledger (seed.ts), SEED_LUA raises the windows to it (never lowers them), and the
 * admission runs again: this covers an instance that starts after the loss too. A failover to a replica
 * or a restart from an older snapshot keeps hashes (and 'sv') with stale figures: `reseed`, run on the
 * data-loss signal, clears 'sv' everywhere so each scope is seeded again at its next admission.
 * Per-minute tokens and GCRA's arrival time are not seeded: they start afresh, which at worst admits one
 * minute's tokens, or one burst, twice.
 */
// Whole numbers go to redis.call as text made with %d: Lua 5.1 turns a number into text with %.14g,
// which glibc formats through its floating-point path (~8% of Redis's time in these scripts, in perf).
// GCRA's arrival time (microseconds) is truncated to a whole microsecond by it.
const INT_LUA = `
local function d(x) return string.format('%d', x) end
`;

const MONTH_LUA = `
local function month_index(day)
  local z = day + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return (y - 1970) * 12 + (m - 1)
end
`;

// KEYS: per scope i: [2i-1] lease zset, [2i] state hash; then queue zset, queue deadlines hash,
//       reservations hash, reservation expiry zset.
// ARGV: n, leaseId, ttl, tokens, cost, waiterId|'', mayQueue '1'|'0', seed '1'|'0', then 7 numbers per
//       scope: maxConcurrency, qps, burst, tokensPerMinute, tokensPerDay, costPerDay, costPerMonth
// Returns {1, now, minute, day, month, reqLimit, reqLeft, reqReset, tokLimit, tokLeft, tokReset}
//      or {0, now, limitName, scopeIndex, retryAfterMs} or {2, now} (queued: not the head)
//      or {3, now, scopeIndex...} (seed these scopes' windows from the ledger first; nothing was taken)
//      or {4, now} (the waiter is not in its queue any more: its entry was lost with Redis's data).
//
// Every redis.call costs a script far more than the command itself, so the common case makes 7 of them
// (TIME, and per scope HMGET, ZCOUNT, ZADD, HSET, plus the reservation's HSET and ZADD; the reaper's look
// once a second). Housekeeping — dropping expired leases, refreshing key expiries — runs on a scope's first
// admission in each minute (its stored minute differs): expired leases are never counted meanwhile
// (ZCOUNT from now), and every expiry is days or a multiple of the lease TTL.
// The seeded marker ('sv') rides in the HMGET the scope makes anyway: no call added. Only a non-head
// waiter's poll makes one more (ZSCORE), to tell "behind others" from "lost its place".
const ADMIT_LUA =
  INT_LUA +
  MONTH_LUA +
  `
local n = tonumber(ARGV[1])
local lease, ttl, tokens, cost, waiter = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local may_queue = ARGV[7] == '1'
local seed = ARGV[8] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local minute = math.floor(now / 60000)
local day = math.floor(now / 86400000)
local month = month_index(day)
local qk, dk = KEYS[2 * n + 1], KEYS[2 * n + 2]
local rk, rx = KEYS[2 * n + 3], KEYS[2 * n + 4]
-- Reaper: reservations whose lease ran out unsettled (their instance died) give their tokens and cost
-- back to the windows they were taken from. The state keys named in a record share this call's tag.
-- It runs at most once a second per first scope (its state hash keeps the next time, 'nr'), not on every
-- admission: a dead reservation comes back within its lease TTL + 1 s.
local function reap()
  local dead = redis.call('ZRANGEBYSCORE', rx, '-inf', now, 'LIMIT', 0, 20)
  for _, id in ipairs(dead) do
    local rec = redis.call('HGET', rk, id)
    if rec then
      local r = cjson.decode(rec)
      for _, sk in ipairs(r.s) do
        local st = redis.call('HMGET', sk, 'm', 'd', 'mo', 'mu', 'du', 'dc', 'mc')
        if tonumber(st[1]) == r.m then redis.call('HSET', sk, 'mu', math.max(0, tonumber(st[4]) - r.t)) end
        if tonumber(st[2]) == r.d then redis.call('HSET', sk, 'du', math.max(0, tonumber(st[5]) - r.t), 'dc', math.max(0, tonumber(st[6]) - r.c)) end
        if tonumber(st[3]) == r.mo then redis.call('HSET', sk, 'mc', math.max(0, tonumber(st[7]) - r.c)) end
      end
      redis.call('HDEL', rk, id)
    end
    redis.call('ZREM', rx, id)
  end
end
if waiter == '' then
  -- Others are already waiting for this key: no jumping the queue; join its tail. Only a WAIT key has a
  -- queue (one left over from a mode change drains by its waiters' timeouts).
  if may_queue and redis.call('ZCARD', qk) > 0 then return {0, now, 'concurrency', 1, 1000} end
else
  while true do
    local head = redis.call('ZRANGE', qk, 0, 0)[1]
    if not head then break end
    local dl = tonumber(redis.call('HGET', dk, head) or '0')
    if dl < now then
      redis.call('ZREM', qk, head)
      redis.call('HDEL', dk, head)
    elseif head ~= waiter then
      if not redis.call('ZSCORE', qk, waiter) then return {4, now} end
      return {2, now}
    else
      break
    end
  end
end
-- Per scope: its GCRA arrival time, its windows, whether its minute is new, its next reaper time ('nr').
local tats, wins, fresh, reaps = {}, {}, {}, {}
local housekeep = false
for i = 1, n do
  local b = 8 + (i - 1) * 7
  local maxc, qps, burst = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local tpm, tpd, cpd, cpm = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7])
  local ck, sk = KEYS[2 * i - 1], KEYS[2 * i]
  local st = redis.call('HMGET', sk, 'tat', 'm', 'mu', 'd', 'du', 'dc', 'mo', 'mc', 'nr', 'sv')
  if seed and not st[10] and (tpd > 0 or cpd > 0 or cpm > 0) then
    -- Windows not built on the ledger (see the header): nothing is taken; every such scope of the call is
    -- named at once, so one round of seeding serves the retry.
    local need = {3, now, i}
    for j = i + 1, n do
      local bj = 8 + (j - 1) * 7
      if (tonumber(ARGV[bj + 5]) > 0 or tonumber(ARGV[bj + 6]) > 0 or tonumber(ARGV[bj + 7]) > 0)
        and not redis.call('HGET', KEYS[2 * j], 'sv') then need[#need + 1] = j end
    end
    return need
  end
  reaps[i] = tonumber(st[9] or '0')
  if i == 1 and now >= reaps[1] then
    reap()
    reaps[1] = now + 1000
    st = redis.call('HMGET', sk, 'tat', 'm', 'mu', 'd', 'du', 'dc', 'mo', 'mc') -- the reaper may have given some back
  end
  fresh[i] = tonumber(st[2] or '-1') ~= minute
  if fresh[i] then housekeep = true end
  if maxc > 0 then
    if fresh[i] then redis.call('ZREMRANGEBYSCORE', ck, '-inf', now) end
    if redis.call('ZCOUNT', ck, '(' .. d(now), '+inf') >= maxc then return {0, now, 'concurrency', i, 1000} end
  end
  local tat = tonumber(st[1] or '0')
  if qps > 0 then
    -- microseconds: at thousands of requests per second a millisecond clock would admit one per ms
    local T = 1000000 / qps
    local tau = T * math.max(0, burst)
    tat = math.max(tat, now_us)
    if tat - now_us > tau then return {0, now, 'qps', i, math.ceil((tat - now_us - tau) / 1000)} end
    tat = tat + T
  end
  local mu = fresh[i] and 0 or tonumber(st[3])
  local du = (tonumber(st[4] or '-1') == day) and tonumber(st[5]) or 0
  local dc = (tonumber(st[4] or '-1') == day) and tonumber(st[6]) or 0
  local mc = (tonumber(st[7] or '-1') == month) and tonumber(st[8]) or 0
  if tpm > 0 and mu + tokens > tpm then return {0, now, 'tokens_minute', i, (minute + 1) * 60000 - now} end
  if tpd > 0 and du + tokens > tpd then return {0, now, 'tokens_day', i, (day + 1) * 86400000 - now} end
  if cpd > 0 and dc + cost > cpd then return {0, now, 'cost_day', i, (day + 1) * 86400000 - now} end
  if cpm > 0 and mc + cost > cpm then return {0, now, 'cost_month', i, (day + 1) * 86400000 - now} end
  tats[i] = tat
  wins[i] = {mu, du, dc, mc}
end
local rl, rleft, rreset, tl, tleft, treset = -1, -1, 0, -1, -1, 0
for i = 1, n do
  local b = 8 + (i - 1) * 7
  local maxc, qps, burst, tpm = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local ck, sk = KEYS[2 * i - 1], KEYS[2 * i]
  if maxc > 0 then
    redis.call('ZADD', ck, d(now + ttl), lease)
    if fresh[i] then redis.call('PEXPIRE', ck, math.max(ttl * 2, 120000)) end
  end
  local w = wins[i]
  redis.call('HSET', sk, 'tat', d(tats[i]), 'm', d(minute), 'mu', d(w[1] + tokens), 'd', d(day), 'du', d(w[2] + tokens), 'dc', d(w[3] + cost), 'mo', d(month), 'mc', d(w[4] + cost), 'nr', d(reaps[i]))
  if fresh[i] then redis.call('PEXPIRE', sk, 32 * 86400000) end
  if qps > 0 then
    local T = 1000000 / qps
    local lim = math.max(0, burst) + 1
    local left = math.max(0, math.floor((lim * T - (tats[i] - now_us)) / T))
    if rl < 0 or left < rleft then rl, rleft, rreset = lim, left, math.ceil(math.max(0, tats[i] - now_us) / 1000) end
  end
  if tpm > 0 then
    local left = math.max(0, tpm - w[1] - tokens)
    if tl < 0 or left < tleft then tl, tleft, treset = tpm, left, (minute + 1) * 60000 - now end
  end
end
if tokens > 0 or cost > 0 then
  local sks = {}
  for i = 1, n do sks[i] = KEYS[2 * i] end
  redis.call('HSET', rk, lease, cjson.encode({t = tokens, c = cost, m = minute, d = day, mo = month, s = sks}))
  redis.call('ZADD', rx, d(now + ttl), lease)
  if housekeep then
    redis.call('PEXPIRE', rk, 32 * 86400000)
    redis.call('PEXPIRE', rx, 32 * 86400000)
  end
end
if waiter ~= '' then
  redis.call('ZREM', qk, waiter)
  redis.call('HDEL', dk, waiter)
  if redis.call('ZCARD', qk) > 0 then redis.call('PUBLISH', ARGV[#ARGV], ARGV[#ARGV - 1]) end
end
return {1, now, minute, day, month, rl, rleft, rreset, tl, tleft, treset}
`;

// KEYS: per scope lease zset + state hash, then queue zset, reservations hash + expiry zset.
// ARGV: n, lease, dTokens, dCost, minute, day, month, wakeMsg, wakeChannel, reservedTokens, reservedCost,
//       wakes '1'|'0' (admitted under WAIT: only then can waiters be queued behind it)
// No per-lease marker (one key per request, kept an hour, grew Redis with the request rate): a lease
// that reserved tokens or cost is trued up only while its reservation record is live, so a replay, or a
// settlement after the reaper already gave a dead lease's reservation back, changes nothing.
const SETTLE_LUA =
  INT_LUA +
  `
local n = tonumber(ARGV[1])
local lease, dt, dcost = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local minute, day, month = ARGV[5], ARGV[6], ARGV[7]
local rt, rc = tonumber(ARGV[10]), tonumber(ARGV[11])
if (rt > 0 or rc > 0) and redis.call('HDEL', KEYS[2 * n + 2], lease) == 0 then dt, dcost = 0, 0 end
redis.call('ZREM', KEYS[2 * n + 3], lease)
for i = 1, n do
  local ck, sk = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('ZREM', ck, lease)
  if dt ~= 0 or dcost ~= 0 then
    local st = redis.call('HMGET', sk, 'm', 'd', 'mo', 'mu', 'du', 'dc', 'mc')
    -- One HSET for whichever windows are still the reservation's (each redis.call costs the script more than its command).
    local set = {}
    if st[1] == minute and dt ~= 0 then set[#set + 1] = 'mu'; set[#set + 1] = d(math.max(0, tonumber(st[4]) + dt)) end
    if st[2] == day then
      set[#set + 1] = 'du'; set[#set + 1] = d(math.max(0, tonumber(st[5]) + dt))
      set[#set + 1] = 'dc'; set[#set + 1] = d(math.max(0, tonumber(st[6]) + dcost))
    end
    if st[3] == month and dcost ~= 0 then set[#set + 1] = 'mc'; set[#set + 1] = d(math.max(0, tonumber(st[7]) + dcost)) end
    if #set > 0 then redis.call('HSET', sk, unpack(set)) end
  end
end
if ARGV[12] ~= '0' and redis.call('ZCARD', KEYS[2 * n + 1]) > 0 then redis.call('PUBLISH', ARGV[9], ARGV[8]) end
return 1
`;

// KEYS: queue zset, deadlines hash. ARGV: id, deadline, maxLen. Score: Redis time (us) so FIFO across instances.
const ENQUEUE_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Reap expired waiters from the head only (arrival order; one key's waiters share a timeout, so the
-- oldest expire first): O(expired + log n) per call, not O(queue) -- with 10,000 waiters a full scan per
-- enqueue stalled Redis for seconds.
while true do
  local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  if not head or tonumber(redis.call('HGET', KEYS[2], head) or '0') >= now then break end
  redis.call('ZREM', KEYS[1], head)
  redis.call('HDEL', KEYS[2], head)
end
local len = redis.call('ZCARD', KEYS[1])
if len >= tonumber(ARGV[3]) then return {0, len} end
local seq = redis.call('INCR', KEYS[1] .. ':seq') % 1000
-- As text made here (%.17g, the double's exact value), so the waiter can be put back at this very place
-- (REQUEUE_LUA) should Redis lose the queue.
local score = string.format('%.17g', (tonumber(t[1]) * 1000000 + tonumber(t[2])) * 1000 + seq)
redis.call('ZADD', KEYS[1], score, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], 3600000)
redis.call('PEXPIRE', KEYS[2], 3600000)
return {1, len, score}
`;

// A waiter whose entry vanished (Redis lost the queue) takes its place again: at its old score, so it
// stays ahead of those who came after it (scores are Redis time, which a restarted or promoted server
// shares closely enough), or at the tail when the score is unknown. Not past its deadline (0: the waiter
// times out), not twice (already queued: left as is).
// KEYS: queue zset, deadlines hash. ARGV: id, deadline, score|''.
const REQUEUE_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(ARGV[2]) < now then return 0 end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local score = ARGV[3]
  if score == '' then
    local seq = redis.call('INCR', KEYS[1] .. ':seq') % 1000
    score = string.format('%.17g', (tonumber(t[1]) * 1000000 + tonumber(t[2])) * 1000 + seq)
  end
  redis.call('ZADD', KEYS[1], score, ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], 3600000)
redis.call('PEXPIRE', KEYS[2], 3600000)
return 1
`;

// Seeds one scope's day and month windows: each becomes max(what it holds, the ledger's figure + what live
// reservations of the scope hold). Live reservations (admitted, not settled) are in no journal yet, but
// they are in the windows: without them a seed would forget them, or (max) forget the ledger. Never lower:
// seeding a scope that lost nothing changes nothing, and instances seeding it at once agree.
// KEYS: state hash, the tag's reservations hash. ARGV: day, month, tokensDay, costDay, costMonth.
// Returns 0 when the window moved past the figures' day or month (the caller's retry asks again).
const SEED_LUA =
  INT_LUA +
  `
local sk, rk = KEYS[1], KEYS[2]
local day, month = tonumber(ARGV[1]), tonumber(ARGV[2])
local st = redis.call('HMGET', sk, 'd', 'du', 'dc', 'mo', 'mc')
local sd, smo = tonumber(st[1] or '-1'), tonumber(st[4] or '-1')
if sd > day or smo > month then return 0 end
local du = sd == day and tonumber(st[2]) or 0
local dc = sd == day and tonumber(st[3]) or 0
local mc = smo == month and tonumber(st[5]) or 0
local rt, rc, rmc = 0, 0, 0
-- The tag's live reservations, once per seeded scope: only records naming this state key are decoded (a
-- plain search for the key as cjson writes it).
local needle = cjson.encode(sk)
for _, rec in ipairs(redis.call('HVALS', rk)) do
  if string.find(rec, needle, 1, true) then
    local r = cjson.decode(rec)
    for _, k in ipairs(r.s) do
      if k == sk then
        if r.d == day then rt = rt + r.t; rc = rc + r.c end
        if r.mo == month then rmc = rmc + r.c end
        break
      end
    end
  end
end
redis.call('HSET', sk, 'd', d(day), 'du', d(math.max(du, tonumber(ARGV[3]) + rt)), 'dc', d(math.max(dc, tonumber(ARGV[4]) + rc)),
  'mo', d(month), 'mc', d(math.max(mc, tonumber(ARGV[5]) + rmc)), 'sv', '1')
redis.call('PEXPIRE', sk, 32 * 86400000)
return 1
`;

// After data loss: one live reservation registered again by the instance holding it. Its leases go back
// in the lease sets (a ZADD: a lease still there is just renewed). Its reservation record, if gone, is
// written again and its reserved tokens and cost go back into the windows it was taken from (where they
// are still that minute/day/month, or gone altogether), so the windows count it until its settlement
// trues it up as usual. A record still there means nothing was lost for it: the windows are left alone.
// KEYS: per scope lease zset + state hash, then reservations hash + expiry zset.
// ARGV: n, lease, ttl, tokens, cost, minute, day, month, then per scope maxConcurrency.
// Runs through the tick pipeline, the connection settlements take, so a settlement issued after it can't
// run before it and leave a phantom lease behind.
const RESTORE_LUA =
  INT_LUA +
  `
local n = tonumber(ARGV[1])
local lease, ttl, tokens, cost = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local minute, day, month = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rk, rx = KEYS[2 * n + 1], KEYS[2 * n + 2]
for i = 1, n do
  if tonumber(ARGV[8 + i]) > 0 then
    redis.call('ZADD', KEYS[2 * i - 1], d(now + ttl), lease)
    redis.call('PEXPIRE', KEYS[2 * i - 1], math.max(ttl * 2, 120000))
  end
end
if tokens <= 0 and cost <= 0 then return 1 end
local sks = {}
for i = 1, n do sks[i] = KEYS[2 * i] end
if redis.call('HSETNX', rk, lease, cjson.encode({t = tokens, c = cost, m = minute, d = day, mo = month, s = sks})) == 0 then
  redis.call('ZADD', rx, 'XX', d(now + ttl), lease)
  return 1
end
redis.call('ZADD', rx, d(now + ttl), lease)
redis.call('PEXPIRE', rk, 32 * 86400000)
redis.call('PEXPIRE', rx, 32 * 86400000)
for i = 1, n do
  local sk = KEYS[2 * i]
  local st = redis.call('HMGET', sk, 'm', 'mu', 'd', 'du', 'dc', 'mo', 'mc')
  local sm, sd, smo = tonumber(st[1] or '-1'), tonumber(st[3] or '-1'), tonumber(st[6] or '-1')
  local set = {}
  if sm == minute then set[#set + 1] = 'mu'; set[#set + 1] = d(tonumber(st[2]) + tokens)
  elseif sm < minute then set[#set + 1] = 'm'; set[#set + 1] = d(minute); set[#set + 1] = 'mu'; set[#set + 1] = d(tokens) end
  if sd == day then
    set[#set + 1] = 'du'; set[#set + 1] = d(tonumber(st[4]) + tokens)
    set[#set + 1] = 'dc'; set[#set + 1] = d(tonumber(st[5]) + cost)
  elseif sd < day then
    set[#set + 1] = 'd'; set[#set + 1] = d(day); set[#set + 1] = 'du'; set[#set + 1] = d(tokens); set[#set + 1] = 'dc'; set[#set + 1] = d(cost)
  end
  if smo == month then set[#set + 1] = 'mc'; set[#set + 1] = d(tonumber(st[7]) + cost)
  elseif smo < month then set[#set + 1] = 'mo'; set[#set + 1] = d(month); set[#set + 1] = 'mc'; set[#set + 1] = d(cost) end
  if #set > 0 then
    redis.call('HSET', sk, unpack(set))
    redis.call('PEXPIRE', sk, 32 * 86400000)
  end
end
return 1
`;

type Cmds = {
  animaAdmit(...args: Array<string | number>): Promise<Array<number | string>>;
  animaSettle(...args: Array<string | number>): Promise<number>;
  animaEnqueue(...args: Array<string | number>): Promise<[number, number, string]>;
  animaRequeue(...args: Array<string | number>): Promise<number>;
  animaSeed(...args: Array<string | number>): Promise<number>;
};

/** Seeding rounds one admission may need (a window rolling over mid-seed asks once more). */
const SEED_ROUNDS = 3;

export class RedisQuota implements QuotaBackend {
  private readonly r: Redis & Cmds;
  private sub: Redis | null = null;
  private readonly wakeChannel: string;
  private readonly tick: TickPipeline;
  /** The pipeline (and its connection) was made here, so close() closes it. */
  private readonly ownTick: boolean;
  private readonly names = new NameCache<[string, string]>();
  private readonly queueNames = new NameCache<[string, string, string, string]>();
  /** Seeds in progress here, by state key and day: concurrent first admissions of a scope share one. */
  private readonly seeding = new Map<string, Promise<void>>();

  constructor(
    redis: Redis,
    private readonly prefix: string,
    /** Admissions and settlements go out with their turn's batch, not behind a batch in flight (see TickPipeline). */
    tick?: TickPipeline,
    /** The ledger's figures to seed windows from; without it windows are never seeded (tests, tools). */
    private readonly seed?: QuotaSeedSource,
  ) {
    this.r = redis as Redis & Cmds;
    this.ownTick = !tick;
    this.tick = tick ?? new TickPipeline(redis);
    this.tick.define('animaAdmit', ADMIT_LUA);
    this.tick.define('animaSettle', SETTLE_LUA);
    this.tick.define('animaRestore', RESTORE_LUA);
    this.r.defineCommand('animaEnqueue', { numberOfKeys: 2, lua: ENQUEUE_LUA });
    this.r.defineCommand('animaRequeue', { numberOfKeys: 2, lua: REQUEUE_LUA });
    this.r.defineCommand('animaSeed', { numberOfKeys: 2, lua: SEED_LUA });
    this.wakeChannel = prefix + 'quota:wake';
  }

  private k(tag: string, rest: string): string {
    return `${this.prefix}{q:${tag}}:${rest}`;
  }
  private scopeKeys(tag: string, s: ScopeLimits): [string, string] {
    return this.names.get(tag, s.scope, s.id, () => [
      this.k(tag, `c:${s.scope}:${s.id}`),
      this.k(tag, `s:${s.scope}:${s.id}`),
    ]);
  }
  /** Each scope's two keys (lease set, state hash), in order, onto a script call's arguments. */
  private pushScopeKeys(args: Array<string | number>, tag: string, scopes: readonly ScopeLimits[]): void {
    for (const s of scopes) {
      const [ck, sk] = this.scopeKeys(tag, s);
      args.push(ck, sk);
    }
  }
  /** A key's queue, its deadlines, and the tag's reservation records and their expiries. */
  private tagKeys(tag: string, queue: string): [string, string, string, string] {
    return this.queueNames.get(tag, queue, '', () => [
      this.k(tag, `w:${queue}`),
      this.k(tag, `wd:${queue}`),
      this.k(tag, 'res'),
      this.k(tag, 'resx'),
    ]);
  }

  async admit(req: AdmitRequest): Promise<AdmitResult> {
    const n = req.scopes.length;
    const queue = req.waiter?.queue ?? req.queue;
    // The call's arguments built in one array: key count, keys, then ARGV (no intermediate arrays).
    const args: Array<string | number> = [2 * n + 4];
    this.pushScopeKeys(args, req.tag, req.scopes);
    const [qk, dk, rk, rx] = this.tagKeys(req.tag, queue);
    args.push(
      qk,
      dk,
      rk,
      rx,
      n,
      req.leaseId,
      req.leaseTtlMs,
      req.tokens,
      req.cost,
      req.waiter?.id ?? '',
      req.mayQueue === false ? '0' : '1',
      this.seed ? '1' : '0',
    );
    for (const s of req.scopes)
      args.push(
        s.maxConcurrency,
        s.qps,
        s.qpsBurst,
        s.tokensPerMinute,
        s.tokensPerDay,
        s.costPerDay,
        s.costPerMonth,
      );
    args.push(queue, this.wakeChannel);
    // Through the turn's pipeline, like settlements: every admission and settlement issued in one turn of
    // the event loop leaves in one socket write (auto-pipelining flushes per callback, about one write per
    // request under load).
    let res = await this.tick.call<Array<number | string>>('animaAdmit', args);
    for (let round = 1; res[0] === 3; round++) {
      // Windows without the ledger's figures (see the header): seed them, then admit again.
      if (round > SEED_ROUNDS) throw new Error('quota windows could not be seeded from the ledger');
      const need = res.slice(2).map((i) => req.scopes[Number(i) - 1]!);
      const at = Number(res[1]);
      await Promise.all(need.map((s) => this.seedScope(req.tag, s, at))).catch((err: unknown) => {
        // Admitting from empty windows could spend a budget twice: refuse until the ledger answers.
        throw new GatewayError(
          'service_unavailable',
          'Quota windows are being rebuilt from the ledger after Redis lost them, and the ledger did not answer; retry.',
          { cause: err, headers: { 'retry-after': '1' } },
        );
      });
      res = await this.tick.call<Array<number | string>>('animaAdmit', args);
    }
    const now = Number(res[1]);
    if (res[0] === 2) return { ok: false, queued: true, now };
    if (res[0] === 4) return { ok: false, queued: true, missing: true, now };
    if (res[0] === 0) {
      const s = req.scopes[Number(res[3]) - 1]!;
      return {
        ok: false,
        limit: String(res[2]) as LimitKind,
        scope: `${s.scope}:${s.id}`,
        retryAfterMs: Math.max(1, Number(res[4])),
        now,
        remaining: {
          requestsLimit: -1,
          requestsRemaining: 0,
          requestsResetMs: Number(res[4]),
          tokensLimit: -1,
          tokensRemaining: -1,
          tokensResetMs: 0,
        },
      };
    }
    const remaining: Remaining = {
      requestsLimit: Number(res[5]),
      requestsRemaining: Number(res[6]),
      requestsResetMs: Number(res[7]),
      tokensLimit: Number(res[8]),
      tokensRemaining: Number(res[9]),
      tokensResetMs: Number(res[10]),
    };
    return {
      ok: true,
      reservation: {
        leaseId: req.leaseId,
        tag: req.tag,
        queue: req.queue,
        scopes: req.scopes,
        tokens: req.tokens,
        cost: req.cost,
        minute: Number(res[2]),
        day: Number(res[3]),
        month: Number(res[4]),
        at: now,
        wakes: req.mayQueue !== false,
      },
      remaining,
    };
  }

  async settle(r: Reservation, actualTokens: number, actualCost: number): Promise<void> {
    const args: Array<string | number> = [2 * r.scopes.length + 3];
    this.pushScopeKeys(args, r.tag, r.scopes);
    const [w, , res, resx] = this.tagKeys(r.tag, r.queue);
    args.push(
      w,
      res,
      resx,
      r.scopes.length,
      r.leaseId,
      actualTokens - r.tokens,
      actualCost - r.cost,
      r.minute,
      r.day,
      r.month,
      r.queue,
      this.wakeChannel,
      r.tokens,
      r.cost,
      r.wakes === false ? '0' : '1',
    );
    await this.tick.call('animaSettle', args);
  }

  /** One scope's windows raised to the ledger's figures for the day of Redis time `now`. */
  private seedScope(tag: string, s: ScopeLimits, now: number): Promise<void> {
    const w = windowBounds(Math.floor(now / 86_400_000));
    const sk = this.scopeKeys(tag, s)[1];
    const k = `${sk}|${w.day}`;
    let p = this.seeding.get(k);
    if (!p) {
      p = (async () => {
        const f = await this.seed!.figures(s.scope, s.id, w);
        await this.r.animaSeed(sk, this.k(tag, 'res'), w.day, w.month, f.tokensDay, f.costDay, f.costMonth);
      })().finally(() => this.seeding.delete(k));
      this.seeding.set(k, p);
    }
    return p;
  }

  async restore(reservations: Reservation[], ttlMs: number): Promise<void> {
    await Promise.all(
      reservations.map((r) => {
        const args: Array<string | number> = [2 * r.scopes.length + 2];
        this.pushScopeKeys(args, r.tag, r.scopes);
        args.push(
          this.k(r.tag, 'res'),
          this.k(r.tag, 'resx'),
          r.scopes.length,
          r.leaseId,
          ttlMs,
          r.tokens,
          r.cost,
          r.minute,
          r.day,
          r.month,
        );
        for (const s of r.scopes) args.push(s.maxConcurrency);
        return this.tick.call('animaRestore', args);
      }),
    );
  }

  /**
   * Clears every state hash's seeded marker (SCAN, in the background of the data-loss signal): hashes that
   * survived a failover or a restart from an older snapshot hold stale windows, and are seeded again at
   * their scope's next admission. Cheaper than reading the ledger for every scope now: idle scopes cost
   * one HDEL. Every instance does it on the signal; a scope seeded in between is seeded once more (max:
   * harmless).
   */
  async reseed(): Promise<void> {
    const pattern = `${this.prefix.replace(/[*?[\]\\]/g, '\\$&')}{q:*}:s:*`;
    const nodes =
      this.r instanceof Cluster ? (this.r as unknown as Cluster).nodes('master') : [this.r as Redis];
    await Promise.all(
      nodes.map(async (node) => {
        let cursor = '0';
        do {
          const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
          cursor = next;
          if (keys.length) {
            const p = node.pipeline();
            for (const key of keys) p.hdel(key, 'sv');
            await p.exec();
          }
        } while (cursor !== '0');
      }),
    );
  }

  async renew(r: Reservation, ttlMs: number): Promise<void> {
    const t = await this.r.time();
    const now = Number(t[0]) * 1000 + Math.floor(Number(t[1]) / 1000);
    await Promise.all([
      ...r.scopes
        .filter((s) => s.maxConcurrency > 0)
        .flatMap((s) => {
          const ck = this.scopeKeys(r.tag, s)[0];
          // A long answer keeps its scope's lease set alive even with no admission to refresh it.
          return [
            this.r.zadd(ck, 'XX', now + ttlMs, r.leaseId),
            this.r.pexpire(ck, Math.max(ttlMs * 2, 120_000)),
          ];
        }),
      this.r.zadd(this.k(r.tag, 'resx'), 'XX', now + ttlMs, r.leaseId),
    ]);
  }

  async enqueue(tag: string, queue: string, id: string, deadlineMs: number, maxLen: number) {
    const [ok, len, score] = await this.r.animaEnqueue(
      this.k(tag, `w:${queue}`),
      this.k(tag, `wd:${queue}`),
      id,
      deadlineMs,
      maxLen,
    );
    return { ok: ok === 1, position: Number(len), ...(score ? { score: String(score) } : {}) };
  }

  async requeue(tag: string, queue: string, id: string, deadlineMs: number, score?: string) {
    const ok = await this.r.animaRequeue(
      this.k(tag, `w:${queue}`),
      this.k(tag, `wd:${queue}`),
      id,
      deadlineMs,
      score ?? '',
    );
    return ok === 1;
  }

  async leave(tag: string, queue: string, id: string) {
    const qk = this.k(tag, `w:${queue}`);
    const removed = await this.r.zrem(qk, id);
    await this.r.hdel(this.k(tag, `wd:${queue}`), id);
    // The one who left may have been the head: let the next one try.
    if (removed && (await this.r.zcard(qk)) > 0) await this.r.publish(this.wakeChannel, queue);
  }

  async onWake(handler: (queue: string) => void) {
    if (!this.sub) {
      this.sub = subscriberOf(this.r);
      this.sub.on('error', () => {});
      await this.sub.subscribe(this.wakeChannel);
    }
    this.sub.on('message', (ch: string, msg: string) => {
      if (ch === this.wakeChannel) handler(msg);
    });
  }

  async inFlight(tag: string, scope: ScopeLimits) {
    const t = await this.r.time();
    const now = Number(t[0]) * 1000 + Math.floor(Number(t[1]) / 1000);
    return this.r.zcount(this.scopeKeys(tag, scope)[0], `(${now}`, '+inf');
  }

  async usage(tag: string, scope: ScopeLimits) {
    const [m, mu, d, du, dc, mo, mc] = await this.r.hmget(
      this.scopeKeys(tag, scope)[1],
      'm',
      'mu',
      'd',
      'du',
      'dc',
      'mo',
      'mc',
    );
    const t = await this.r.time();
    const now = Number(t[0]) * 1000;
    const minute = Math.floor(now / 60_000);
    const day = Math.floor(now / 86_400_000);
    return {
      tokensMinute: Number(m) === minute ? Number(mu) : 0,
      tokensDay: Number(d) === day ? Number(du) : 0,
      costDay: Number(d) === day ? Number(dc) : 0,
      costMonth: Number(mo ?? -1) === monthIndex(day) ? Number(mc) : 0,
    };
  }

  async queueLength(tag: string, queue: string) {
    return this.r.zcard(this.k(tag, `w:${queue}`));
  }

  close(): void {
    this.sub?.disconnect();
    if (this.ownTick) this.tick.close();
  }
}
