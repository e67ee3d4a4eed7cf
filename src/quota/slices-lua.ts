/**
 * The one script behind quota slices (see slices.ts for the model and the overshoot bound): lease, renew,
 * re-register (after data loss) and return a slice of one scope, held by one instance.
 *
 * What a slice holds in Redis, in the scope's own keys (so the exact admission script counts it unchanged):
 *   concurrency  one member per slot in the scope's lease ZSET (`<slotPrefix><i>`, score = expiry): the
 *                admission's ZCOUNT counts them like leases, and a dead instance's slots expire like leases.
 *   QPS          q emissions [start, end) of the scope's GCRA schedule, taken as a q-unit admission would
 *                (TAT moved to `end`; only what the tolerance holds now).
 *   tokens/cost  a reservation record in the tag's reservations hash + expiry ZSET, in the format the
 *                admission script writes ({t, c, m, d, mo, s}), so the reaper refunds it when the holder
 *                dies and SEED_LUA counts it when the windows are seeded from the ledger again.
 *
 * Renewal = close the old record (commit what was spent since the last renewal, drop what the old record
 * reserved, in the windows it was taken from when they are still current), roll the windows, then reserve
 * again: in-flight estimates + a new free grant, capped by headroom / fleet. A record that is gone (reaped,
 * or Redis lost it) adds what was spent to the current windows instead (safe side).
 */

// Whole numbers go to redis.call as %d text (see redis.ts INT_LUA: Lua's %.14g is slow and lossy).
// KEYS: lease zset, state hash, reservations hash, reservation expiry zset, the key's queue zset (key
//       scopes; else any key of the tag, unused).
// ARGV: 1 mode 'r' (lease/renew) | 'x' (return), 2 slot member prefix, 3 record id, 4 ttl ms,
//       5 seed required '1'|'0', 6-12 maxConcurrency qps burst tokensPerMinute tokensPerDay costPerDay
//       costPerMonth, 13 slots held, 14 slots to keep (in flight), 15 slots wanted, 16 emission end held
//       ('' none), 17 local TAT (us), 18 emissions wanted, 19 tokens spent, 20 cost spent, 21 tokens in
//       flight, 22 cost in flight, 23 tokens wanted, 24 cost wanted, 25 fleet factor, 26 (unused),
//       27 check the queue '1'|'0', 28 29 the least tokens / cost worth granting (two requests' worth)
// Returns {now_ms, now_us, slots, start, end, 0, grantTokens, grantCost (-1 = unlimited),
//          minute, day, month, queueLen, unseeded 0|1, tokensLeftMinute (-1 = unlimited)}
export const SLICE_LUA = `
local function d(x) return string.format('%d', x) end
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
local ck, sk, rk, rx, qk = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local mode, pfx, id, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local seed = ARGV[5] == '1'
local maxc, qps, burst = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local tpm, tpd, cpd, cpm = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local cHeld, cKeep, cWant = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
local eOld, tatL, qWant = ARGV[16], tonumber(ARGV[17]), tonumber(ARGV[18])
local spT, spC, inT, inC = tonumber(ARGV[19]), tonumber(ARGV[20]), tonumber(ARGV[21]), tonumber(ARGV[22])
local wantT, wantC, fleet = tonumber(ARGV[23]), tonumber(ARGV[24]), tonumber(ARGV[25])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local minute = math.floor(now / 60000)
local day = math.floor(now / 86400000)
local month = month_index(day)
if mode == 'x' then cKeep, cWant, qWant, inT, inC, wantT, wantC = 0, 0, 0, 0, 0, 0, 0 end

local st = redis.call('HMGET', sk, 'tat', 'm', 'mu', 'd', 'du', 'dc', 'mo', 'mc', 'sv')
local sm, sd, smo = tonumber(st[2] or '-1'), tonumber(st[4] or '-1'), tonumber(st[7] or '-1')
local mu, du, dc, mc = tonumber(st[3] or '0'), tonumber(st[5] or '0'), tonumber(st[6] or '0'), tonumber(st[8] or '0')
-- Close the old record: what was spent is committed, what it reserved is dropped, in its own windows.
local rec = redis.call('HGET', rk, id)
if rec then
  local r = cjson.decode(rec)
  if sm == r.m then mu = math.max(0, mu - r.t + spT) end
  if sd == r.d then du = math.max(0, du - r.t + spT); dc = math.max(0, dc - r.c + spC) end
  if smo == r.mo then mc = math.max(0, mc - r.c + spC) end
end
local fresh = sm ~= minute
if fresh then mu = 0 end
if sd ~= day then du, dc = 0, 0 end
if smo ~= month then mc = 0 end
if not rec then mu = mu + spT; du = du + spT; dc = dc + spC; mc = mc + spC end
local unseeded = seed and not st[9] and (tpd > 0 or cpd > 0 or cpm > 0)

-- Tokens and cost: in-flight estimates stay reserved; a free grant on top, capped by headroom / fleet.
-- A grant the cap cut below 'least' (two requests' worth) is no grant: the scope is near a limit, where
-- holding a sliver would only keep it from others (the caller goes exact).
local function grant(want, a, la, b, lb, least)
  if la <= 0 and lb <= 0 then return -1 end
  if unseeded or mode == 'x' then return 0 end
  local room = math.huge
  if la > 0 then room = math.min(room, la - a) end
  if lb > 0 then room = math.min(room, lb - b) end
  local g = math.max(0, math.min(want, math.floor(room / fleet)))
  if g < want and g < least then g = 0 end
  return g
end
local gT = grant(wantT, mu + inT, tpm, du + inT, tpd, tonumber(ARGV[28]))
local gC = grant(wantC, dc + inC, cpd, mc + inC, cpm, tonumber(ARGV[29]))
local rT, rC = inT + math.max(0, gT), inC + math.max(0, gC)
mu, du, dc, mc = mu + rT, du + rT, dc + rC, mc + rC
if rT > 0 or rC > 0 then
  redis.call('HSET', rk, id, cjson.encode({t = rT, c = rC, m = minute, d = day, mo = month, s = {sk}}))
  redis.call('ZADD', rx, d(now + ttl), id)
  if not rec then
    redis.call('PEXPIRE', rk, 32 * 86400000)
    redis.call('PEXPIRE', rx, 32 * 86400000)
  end
elseif rec then
  redis.call('HDEL', rk, id)
  redis.call('ZREM', rx, id)
end

-- Concurrency: one member per slot. Slots beyond those in flight are dropped, the kept ones refreshed,
-- then extra slots granted out of the room the others leave (ZCOUNT counts the kept ones).
local slots = 0
if maxc > 0 or cHeld > 0 then
  if cHeld > cKeep then
    local drop = {}
    for i = cKeep + 1, cHeld do drop[#drop + 1] = pfx .. i end
    redis.call('ZREM', ck, unpack(drop))
  end
  if cKeep > 0 then
    local keep = {}
    for i = 1, cKeep do keep[#keep + 1] = d(now + ttl); keep[#keep + 1] = pfx .. i end
    redis.call('ZADD', ck, unpack(keep))
  end
  local extra = 0
  if mode ~= 'x' and maxc > 0 and cWant > cKeep then
    -- counts the kept slots (just refreshed) and everyone else's live leases and slots
    local used = redis.call('ZCOUNT', ck, '(' .. d(now), '+inf')
    extra = math.max(0, math.min(cWant - cKeep, math.floor((maxc - used) / fleet)))
    if extra < cWant - cKeep and extra < 2 then extra = 0 end
  end
  if extra > 0 then
    local add = {}
    for i = cKeep + 1, cKeep + extra do add[#add + 1] = d(now + ttl); add[#add + 1] = pfx .. i end
    redis.call('ZADD', ck, unpack(add))
  end
  if fresh and cKeep + extra > 0 then redis.call('PEXPIRE', ck, math.max(ttl * 2, 120000)) end
  slots = cKeep + extra
end

-- QPS: emissions taken out of the GCRA bucket as a multi-unit admission would take them: at most what
-- the tolerance holds now (floor((now + tau - TAT) / T) + 1), divided by the fleet factor. A returned
-- slice gives back its unused emissions when nobody took the schedule after them (TAT still its end).
local start, e = 0, 0
local tat = tonumber(st[1] or '0')
if qps > 0 then
  local T = 1000000 / qps
  local tau = T * math.max(0, burst)
  if mode == 'x' then
    if eOld ~= '' and tat == tonumber(eOld) then tat = math.min(tat, tatL) end
  else
    start = math.max(tat, now_us)
    local room = math.floor((now_us + tau - start) / T) + 1
    local q = math.max(0, math.min(qWant, math.floor(room / fleet)))
    if q < qWant and q < 2 then q = 0 end
    tat = start + q * T
    e = math.floor(tat)
  end
end
local set = {'m', d(minute), 'mu', d(mu), 'd', d(day), 'du', d(du), 'dc', d(dc), 'mo', d(month), 'mc', d(mc)}
if qps > 0 then set[#set + 1] = 'tat'; set[#set + 1] = d(tat) end
redis.call('HSET', sk, unpack(set))
if fresh then redis.call('PEXPIRE', sk, 32 * 86400000) end
local ql = 0
if ARGV[27] == '1' then ql = redis.call('ZCARD', qk) end
local tleft = -1
if tpm > 0 then tleft = math.max(0, tpm - mu) end
return {now, now_us, slots, d(start), d(e), 0, gT, gC, minute, day, month, ql, unseeded and 1 or 0, tleft}
`;
