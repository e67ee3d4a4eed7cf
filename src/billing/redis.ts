import type { Redis } from 'ioredis';
import { TickPipeline, appendLua } from '../coord/tick-pipeline.js';
import { NameCache } from '../lib/name-cache.js';
import {
  type BillingBackend,
  type BillingRecord,
  type Drained,
  type QueuedRecord,
  type ReserveResult,
  type SettleResult,
  decodeRecord,
  encodeRecord,
} from './types.js';

/**
 * Billing's Redis side, every call ONE round trip (a Lua script on one Cluster slot).
 *
 * Records are spread over SHARDS streams by app; a shard's stream, its wallet mirrors and its
 * exactly-once markers share the hash tag {b:<shard>}, so settle (release the hold, charge the wallet,
 * append the record) is one atomic script. Money amounts travel as decimal strings; Lua does its
 * arithmetic in doubles, exact up to 2^53 micro-units (9 billion currency units per wallet).
 *
 * Wallet mirror (hash): db = the ledger's available balance as last read, dbv = its version (debits +
 * credits posted: only ever grows, so a stale read never overwrites a newer one), pend = charged by
 * settlements the writer has not committed yet, held = sum of live reservations. Spendable =
 * db - pend - held. Reservations live in a ZSET (score = expiry, Redis TIME) plus a HASH of amounts;
 * expired ones (their instance died) are reaped by the next reserve on that wallet.
 */
export const SHARDS = 8;
const GROUP = 'writers';
/** A marker is dropped when its record's journal is written; the TTL only bounds one whose record never is. */
const DONE_TTL_S = 7 * 86_400;

// Whole numbers go to Redis as text made with %d: Lua would send -0 as "-0" and 1e17 as "1e+17", which
// HINCRBY refuses ("not an integer"); a zero is not sent at all.
const FMT = `
local function fmt(x) return string.format('%d', x) end
`;

const REAP = `${FMT}
local function reap(wk, hz, ha, now)
  local dead = redis.call('ZRANGEBYSCORE', hz, '-inf', now, 'LIMIT', 0, 50)
  for _, h in ipairs(dead) do
    local a = tonumber(redis.call('HGET', ha, h) or '0')
    if a ~= 0 then redis.call('HINCRBY', wk, 'held', fmt(-a)) end
    redis.call('HDEL', ha, h)
    redis.call('ZREM', hz, h)
  end
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;

// KEYS: wallet, holds zset, hold amounts. ARGV: holdId, amount, ttlMs.
// -> {1} | {0, available} | {-1} (not mirrored). A hold of zero or less holds nothing: not stored.
const RESERVE = `${REAP}
local wk, hz, ha = KEYS[1], KEYS[2], KEYS[3]
local amt = tonumber(ARGV[2])
if amt <= 0 then return {1} end
if redis.call('HEXISTS', wk, 'db') == 0 then return {-1} end
local now = now_ms()
reap(wk, hz, ha, now)
local w = redis.call('HMGET', wk, 'db', 'pend', 'held')
local avail = tonumber(w[1]) - tonumber(w[2] or '0') - tonumber(w[3] or '0')
if redis.call('HEXISTS', ha, ARGV[1]) == 1 then return {1} end
if amt > avail then return {0, fmt(avail)} end
redis.call('HINCRBY', wk, 'held', fmt(amt))
redis.call('HSET', ha, ARGV[1], fmt(amt))
redis.call('ZADD', hz, now + tonumber(ARGV[3]), ARGV[1])
return {1}
`;

// KEYS: wallet, holds zset, hold amounts. ARGV: holdId.
const RELEASE = `${FMT}
local a = redis.call('HGET', KEYS[3], ARGV[1])
if a then
  if tonumber(a) ~= 0 then redis.call('HINCRBY', KEYS[1], 'held', fmt(-tonumber(a))) end
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 1
`;

// KEYS: done marker (the stream itself when the record carries none), stream, wallet, holds zset, hold amounts.
// ARGV: holdId or '', record json, sale, prepaid '1'|'0', doneTtlS, appId, marked '1'|'0'
// -> {1, charged} | {0, charged-unknown} (duplicate)
// The record goes to the stream as 'r' (or 'rm': it has a marker to drop) then 'c' (what it charged), in an
// entry of its own or in its batch's one entry for the stream (appendLua).
const SETTLE = `${REAP}
local done, stream, wk, hz, ha = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local hold, sale, prepaid, marked = ARGV[1], tonumber(ARGV[3]), ARGV[4] == '1', ARGV[7] == '1'
if hold ~= '' then
  local a = redis.call('HGET', ha, hold)
  if a then
    if tonumber(a) ~= 0 then redis.call('HINCRBY', wk, 'held', fmt(-tonumber(a))) end
    redis.call('HDEL', ha, hold)
    redis.call('ZREM', hz, hold)
  end
end
if marked and redis.call('SET', done, '1', 'NX', 'EX', tonumber(ARGV[5])) == false then return {0, '0'} end
local charged = sale
if prepaid then
  if redis.call('HEXISTS', wk, 'db') == 1 then
    local w = redis.call('HMGET', wk, 'db', 'pend', 'held')
    local avail = tonumber(w[1]) - tonumber(w[2] or '0') - tonumber(w[3] or '0')
    if avail < 0 then avail = 0 end
    if charged > avail then charged = avail end
    if charged ~= 0 then redis.call('HINCRBY', wk, 'pend', fmt(charged)) end
  end
end
local fields = { marked and 'rm' or 'r', ARGV[2], 'c', fmt(charged) }
${appendLua('stream', 'fields')}
return {1, fmt(charged)}
`;

// SETTLE for the common case, a postpaid request's record with no hold and no marker: nothing to do but
// append it (a lean script: no wallet keys, no helpers, two arguments). KEYS: stream. ARGV: record json, sale.
const QUEUE = `
local fields = { 'r', ARGV[1], 'c', ARGV[2] }
${appendLua('KEYS[1]', 'fields')}
return 1
`;

// KEYS: wallet. ARGV: available, version, force ('1' = refresh only if newer; '0' = init only if absent)
const MIRROR = `
local wk = KEYS[1]
if ARGV[3] == '0' then
  if redis.call('HEXISTS', wk, 'db') == 1 then return 0 end
  redis.call('HSET', wk, 'db', ARGV[1], 'dbv', ARGV[2], 'pend', 0, 'held', redis.call('HGET', wk, 'held') or 0)
  return 1
end
if redis.call('HEXISTS', wk, 'db') == 0 then return 0 end
local v = tonumber(redis.call('HGET', wk, 'dbv') or '-1')
if tonumber(ARGV[2]) > v then redis.call('HSET', wk, 'db', ARGV[1], 'dbv', ARGV[2]) end
return 1
`;

// KEYS: stream, then one wallet key per prepaid app, then the exactly-once markers of the records that have one.
// ARGV: n, wallet count, then per record: handle, wallet index (2.. into KEYS, or 0 = none), charged; then per
// wallet: available, version. Records of one stream entry share its handle, and are acknowledged together.
// A batch costs a handful of commands, not three per record: entries whose records charged no wallet are
// acknowledged with one XACK of all their handles, every entry is deleted with one XDEL and the markers with
// one DEL. Only an entry with a record that charged a wallet gets its own XACK, whose answer (1 only the
// first time) lets its records' charges leave 'pend' exactly once.
const ACK = `${FMT}
-- unpack() returns at most a few thousand values (Lua's C stack, LUAI_MAXCSTACK 8000): at most 1,000 a call.
local function chunked(cmd, key, group, list, from, to)
  for i = from, to, 1000 do
    local last = math.min(i + 999, to)
    if group then redis.call(cmd, key, group, unpack(list, i, last))
    elseif key then redis.call(cmd, key, unpack(list, i, last))
    else redis.call(cmd, unpack(list, i, last)) end
  end
end
local stream = KEYS[1]
local n, wallets = tonumber(ARGV[1]), tonumber(ARGV[2]) + 1
local charges, handles = {}, {}
for i = 0, n - 1 do
  local h, wi, c = ARGV[3 + 3 * i], tonumber(ARGV[4 + 3 * i]), tonumber(ARGV[5 + 3 * i])
  local g = charges[h]
  if not g then g = {}; charges[h] = g; handles[#handles + 1] = h end
  if wi > 0 and c ~= 0 then g[#g + 1] = wi; g[#g + 1] = c end
end
local plain = {}
for _, h in ipairs(handles) do
  local g = charges[h]
  if #g == 0 then plain[#plain + 1] = h
  elseif redis.call('XACK', stream, '${GROUP}', h) == 1 then
    for j = 1, #g, 2 do
      if redis.call('HEXISTS', KEYS[g[j]], 'db') == 1 then redis.call('HINCRBY', KEYS[g[j]], 'pend', fmt(-g[j + 1])) end
    end
  end
end
chunked('XACK', stream, '${GROUP}', plain, 1, #plain)
if #handles > 0 then chunked('XDEL', stream, nil, handles, 1, #handles) end
-- The journals are written: their unique keys refuse a replay from now on, so the markers go (markers
-- live as long as the backlog, not for days: one per record would grow Redis without bound).
if #KEYS > wallets then chunked('DEL', nil, nil, KEYS, wallets + 1, #KEYS) end
local j = 3 + 3 * n
for k = 2, wallets do
  local wk = KEYS[k]
  if redis.call('HEXISTS', wk, 'db') == 1 then
    local v = tonumber(redis.call('HGET', wk, 'dbv') or '-1')
    if tonumber(ARGV[j + 1]) > v then redis.call('HSET', wk, 'db', ARGV[j], 'dbv', ARGV[j + 1]) end
  end
  j = j + 2
end
return 1
`;

interface Cmds {
  animaBillReserve(
    k1: string,
    k2: string,
    k3: string,
    hold: string,
    amount: string,
    ttl: number,
  ): Promise<[number, string?]>;
  animaBillRelease(k1: string, k2: string, k3: string, hold: string): Promise<number>;
  animaBillSettle(
    k1: string,
    k2: string,
    k3: string,
    k4: string,
    k5: string,
    hold: string,
    rec: string,
    sale: string,
    prepaid: string,
    ttl: number,
    app: string,
    marked: string,
  ): Promise<[number, string]>;
  animaBillMirror(k1: string, avail: string, version: string, mode: string): Promise<number>;
  animaBillAck(numKeys: number, ...args: string[]): Promise<number>;
}

/** FNV-1a: a stable shard per app, the same on every instance. */
export function shardOf(appId: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < appId.length; i++) {
    h ^= appId.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % SHARDS;
}

export class RedisBilling implements BillingBackend {
  readonly kind = 'redis' as const;
  private readonly r: Redis & Cmds;
  private readonly groupsReady = new Set<number>();
  /** Consumer groups made again after a NOGROUP answer (health, tests). */
  groupsRecreated = 0;
  /** Streams to read next, round-robin, so one busy shard can't starve the rest. */
  private next = 0;
  /** Streams where this consumer may hold delivered, unacknowledged records (all of them at start). */
  private readonly ownPending = new Set<number>(Array.from({ length: 2 * SHARDS }, (_, i) => i));
  /** When stale records of other (dead) consumers were last claimed. */
  private lastClaim = 0;
  private readonly tick: TickPipeline;
  /** The pipeline (and its connection) was made here, so close() closes it. */
  private readonly ownTick: boolean;
  /** Key names built once (see NameCache). */
  private readonly names = new NameCache<[string, string, string]>();
  private readonly streams: string[] = [];

  constructor(
    client: Redis,
    private readonly prefix: string,
    /** This instance's consumer name in the writers' group. */
    private readonly consumer: string,
    /** A record another consumer holds this long unacknowledged is taken over (its instance died). */
    private readonly staleMs = 30_000,
    /** Settlements go out with their turn's batch, not behind a batch in flight (see TickPipeline). */
    tick?: TickPipeline,
  ) {
    this.r = client as Redis & Cmds;
    this.ownTick = !tick;
    this.tick = tick ?? new TickPipeline(client);
    if (!('animaBillSettle' in client)) {
      client.defineCommand('animaBillReserve', { numberOfKeys: 3, lua: RESERVE });
      client.defineCommand('animaBillRelease', { numberOfKeys: 3, lua: RELEASE });
      client.defineCommand('animaBillMirror', { numberOfKeys: 1, lua: MIRROR });
      client.defineCommand('animaBillAck', { lua: ACK });
    }
    this.tick.define('animaBillSettle', SETTLE, 5);
    this.tick.define('animaBillQueue', QUEUE, 1);
  }

  /** The shard this turn's plain records go to (see settle): the next one, each turn. */
  private turnShard(): number {
    if (this.thisTurn < 0) {
      this.thisTurn = this.turns++ % SHARDS;
      setImmediate(() => (this.thisTurn = -1));
    }
    return this.thisTurn;
  }
  private thisTurn = -1;
  private turns = 0;

  private tag(shard: number): string {
    return `${this.prefix}{b:${shard}}`;
  }
  private walletKeys(appId: string): [string, string, string] {
    return this.names.get(appId, '', '', () => {
      const t = this.tag(shardOf(appId));
      return [`${t}:w:${appId}`, `${t}:wh:${appId}`, `${t}:wa:${appId}`];
    });
  }
  /** A record's exactly-once marker: set by its settlement, dropped when its journal is written. */
  private doneKey(shard: number, id: string): string {
    return `${this.tag(shard % SHARDS)}:done:${id}`;
  }
  /**
   * Stream `i`: below SHARDS, shard i's stream; from SHARDS on, shard (i - SHARDS)'s stream of the format
   * before entries carried several records (':j'), which an instance of that version, still running in a
   * rolling upgrade, may write and would misread if it read the new one. It is read, never written, and only
   * every few seconds (see read).
   */
  private stream(i: number): string {
    return (this.streams[i] ??= i < SHARDS ? `${this.tag(i)}:jr` : `${this.tag(i - SHARDS)}:j`);
  }

  async reserve(appId: string, holdId: string, amount: bigint, ttlMs: number): Promise<ReserveResult> {
    // Nothing to hold: no round trip, nothing stored that could expire (RESERVE refuses to store it too).
    if (amount <= 0n) return { ok: true };
    const [w, hz, ha] = this.walletKeys(appId);
    const res = await this.r.animaBillReserve(w, hz, ha, holdId, amount.toString(), ttlMs);
    if (res[0] === 1) return { ok: true };
    if (res[0] === -1) return { ok: false, reason: 'unknown' };
    return { ok: false, reason: 'insufficient', available: BigInt(res[1]!) };
  }

  async release(appId: string, holdId: string): Promise<void> {
    const [w, hz, ha] = this.walletKeys(appId);
    await this.r.animaBillRelease(w, hz, ha, holdId);
  }

  async settle(rec: BillingRecord, holdId: string | null, charge?: bigint): Promise<SettleResult> {
    const shard = shardOf(rec.appId);
    const [w, hz, ha] = this.walletKeys(rec.appId);
    const stream = this.stream(shard);
    // A request's record needs no marker: the pipeline settles each admitted request once, under an id minted
    // for it, so a second copy can only be a resend, which carries one (and the journal's unique key refuses
    // any copy). A task's record may be settled by whichever instance finishes or sweeps the task: it has one.
    // Without it a settlement is one stream append (shared by its turn's batch) and nothing to delete later.
    const marked = charge !== undefined || rec.taskId !== undefined;
    if (!marked && holdId === null && !rec.prepaid) {
      // Nothing ties it to its app's shard (no wallet, hold or marker there): it goes to this turn's shard,
      // which moves on every turn, so one busy app's records spread over every shard (and, on a Cluster,
      // every master) while each turn's still make one entry.
      const sale = rec.sale.toString();
      const s = this.stream(this.turnShard());
      await this.tick.call<number>('animaBillQueue', [s, encodeRecord(rec, this.consumer), sale]);
      return { duplicate: false, charged: rec.sale };
    }
    const res = await this.tick.call<[number, string]>('animaBillSettle', [
      marked ? this.doneKey(shard, rec.id) : stream, // unused when unmarked; the stream repeats for free
      stream,
      w,
      hz,
      ha,
      holdId ?? '',
      encodeRecord(rec, this.consumer),
      (charge ?? rec.sale).toString(),
      rec.prepaid ? '1' : '0',
      DONE_TTL_S,
      rec.appId,
      marked ? '1' : '0',
    ]);
    return { duplicate: res[0] === 0, charged: BigInt(res[1]) };
  }

  async initWallet(appId: string, available: bigint, version: bigint): Promise<void> {
    await this.r.animaBillMirror(this.walletKeys(appId)[0], available.toString(), version.toString(), '0');
  }

  async refreshWallet(appId: string, available: bigint, version: bigint): Promise<void> {
    await this.r.animaBillMirror(this.walletKeys(appId)[0], available.toString(), version.toString(), '1');
  }

  async wallet(appId: string): Promise<{ ledger: bigint; unwritten: bigint; reserved: bigint } | null> {
    const [db, pend, held] = await this.r.hmget(this.walletKeys(appId)[0], 'db', 'pend', 'held');
    if (db === null || db === undefined) return null;
    return { ledger: BigInt(db), unwritten: BigInt(pend ?? '0'), reserved: BigInt(held ?? '0') };
  }

  /**
   * Redis lost its data (or is another server): every group must be looked for again, and this consumer may
   * hold delivered records anywhere. A NOGROUP answer does the same for its shard, so even a loss nobody
   * noticed can't stop the writer for more than one read.
   */
  forgetGroups(): void {
    this.groupsReady.clear();
    for (let i = 0; i < 2 * SHARDS; i++) this.ownPending.add(i);
  }

  private async ensureGroup(i: number): Promise<void> {
    if (this.groupsReady.has(i) || i >= SHARDS) return; // an old-format stream is never made here
    try {
      await this.r.xgroup('CREATE', this.stream(i), GROUP, '0', 'MKSTREAM');
    } catch (e) {
      if (!String((e as Error).message).includes('BUSYGROUP')) throw e;
    }
    this.groupsReady.add(i);
  }

  /**
   * Up to `count` queued records (whole entries: an entry's records are acknowledged together, so a batch
   * may carry a few more) from every shard, the shards read side by side (one pipelined write, not one round
   * trip per shard and step). Per shard: this consumer's own unacknowledged records first (a failed commit is
   * retried; only asked where some may exist), then new ones, then — every few seconds, not on every read —
   * records a dead consumer left pending past `staleMs`, and the old-format streams.
   */
  async read(count: number): Promise<QueuedRecord[]> {
    const claimNow = Date.now() - this.lastClaim >= Math.min(5_000, this.staleMs / 2);
    if (claimNow) this.lastClaim = Date.now();
    const order = Array.from({ length: SHARDS }, (_, i) => (this.next + i) % SHARDS);
    this.next = (this.next + 1) % SHARDS;
    if (claimNow) for (let i = 0; i < SHARDS; i++) order.push(SHARDS + i);
    const perShard = await Promise.all(
      order.map(async (i) => {
        try {
          return await this.readShard(i, count, claimNow);
        } catch (e) {
          if (!String((e as Error)?.message).includes('NOGROUP')) throw e;
          // An old-format stream that isn't there (no instance of that version ran): nothing to read.
          if (i >= SHARDS) {
            this.ownPending.delete(i);
            return { shard: i, entries: [] };
          }
          // The stream or its group vanished (Redis restarted empty, FLUSHALL, a failover): make it again
          // from the stream's start, so records settled since are read, and read once more.
          this.groupsReady.delete(i);
          this.ownPending.add(i);
          this.groupsRecreated++;
          return await this.readShard(i, count, claimNow);
        }
      }),
    );
    const out: QueuedRecord[] = [];
    for (const { shard, entries } of perShard) {
      for (const [id, fields] of entries) {
        if (out.length >= count) break; // the rest stay pending for this consumer: read first next time
        const before = out.length;
        // Pairs: 'r' or 'rm' (the record, with an exactly-once marker to drop) then 'c' (what it charged).
        for (let k = 0; k + 1 < fields.length; k += 2) {
          const f = fields[k];
          if (f !== 'r' && f !== 'rm') continue;
          const c = fields[k + 2] === 'c' ? fields[k + 3] : undefined;
          // Every record of the old format had a marker.
          const marked = f === 'rm' || shard >= SHARDS;
          out.push({ handle: id, shard, record: decodeRecord(fields[k + 1]!, c), marked });
        }
        // Not a billing record (nothing Anima writes): acknowledged so it can't block the shard.
        if (out.length === before) void this.r.xack(this.stream(shard), GROUP, id).catch(() => {});
      }
    }
    return out;
  }

  private async readShard(
    shard: number,
    count: number,
    claimNow: boolean,
  ): Promise<{ shard: number; entries: Array<[string, string[]]> }> {
    await this.ensureGroup(shard);
    const key = this.stream(shard);
    // COUNT is in entries; an entry may carry a batch's records, so a read of `count` entries is cut down to
    // `count` records by the caller (the rest stay pending for this consumer, read first next time).
    let entries: Array<[string, string[]]> = [];
    if (this.ownPending.has(shard)) {
      entries = parseEntries(
        await this.r.xreadgroup('GROUP', GROUP, this.consumer, 'COUNT', count, 'STREAMS', key, '0'),
      );
      if (entries.length === 0) this.ownPending.delete(shard);
    }
    if (entries.length === 0)
      entries = parseEntries(
        await this.r.xreadgroup('GROUP', GROUP, this.consumer, 'COUNT', count, 'STREAMS', key, '>'),
      );
    if (entries.length === 0 && claimNow) {
      const claimed = (await this.r.xautoclaim(
        key,
        GROUP,
        this.consumer,
        this.staleMs,
        '0',
        'COUNT',
        count,
      )) as [string, Array<[string, string[]] | null>];
      entries = (claimed[1] ?? []).filter((e): e is [string, string[]] => e !== null);
    }
    // Delivered to this consumer now: until a '0' read finds the shard clean, assume some may be left
    // unacknowledged (a commit that fails, or records beyond this batch's count).
    if (entries.length) this.ownPending.add(shard);
    return { shard, entries };
  }

  async ack(d: Drained): Promise<void> {
    const index = new Map(d.wallets.map((w, i) => [w.appId, i + 2]));
    const keys = [this.stream(d.shard), ...d.wallets.map((w) => this.walletKeys(w.appId)[0])];
    for (const r of d.records) if (r.marked) keys.push(this.doneKey(d.shard, r.id));
    const args = [
      String(d.records.length),
      String(d.wallets.length),
      ...d.records.flatMap((r) => [r.handle, String(index.get(r.appId) ?? 0), r.charged.toString()]),
      ...d.wallets.flatMap((w) => [w.available.toString(), w.version.toString()]),
    ];
    await this.r.animaBillAck(keys.length, ...keys, ...args);
  }

  /** Entries queued (an entry carries one record, or one batch's records for its shard). */
  async backlog(): Promise<number> {
    let n = 0;
    for (let i = 0; i < 2 * SHARDS; i++) n += await this.r.xlen(this.stream(i));
    return n;
  }

  close(): void {
    if (this.ownTick) this.tick.close();
  }
}

type RawEntries = Array<[string, Array<[string, string[]]>]> | null;
function parseEntries(raw: unknown): Array<[string, string[]]> {
  const r = raw as RawEntries;
  if (!r || r.length === 0) return [];
  return r[0]![1].filter((e) => Array.isArray(e[1]));
}
