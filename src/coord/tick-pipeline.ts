import { createHash } from 'node:crypto';
import calculateSlot from 'cluster-key-slot';
import { Cluster, type Redis } from 'ioredis';
import {
  type Reply,
  type ReplyCallback,
  RespConnection,
  ReplyError,
  RespWriter,
  respOptionsFor,
} from './resp.js';

/** Calls per script execution (see flush). */
const MAX_BATCH = 64;

/**
 * Script calls issued during one turn of the event loop, sent to Redis together at the end of that turn:
 * one socket write and, when there are several, ONE script execution that runs them all in order.
 *
 * Why not ioredis's auto-pipelining: it keeps one batch in flight per connection, so a command issued
 * while a batch awaits its replies is written only when they are back. For a settlement whose answer goes
 * out without waiting for Redis (the bill must have left before the answer), "written" has to be a point
 * the caller can wait for: `written()` (below) resolves once every call issued before it is on the socket.
 * The calls go out on the pipeline's own lean connection (RespConnection; RespWriter encodes the whole turn
 * into one buffer, with no per-command objects). Admissions and settlements share it, so their order holds
 * (a client's next request is admitted after its previous request released its lease); a command on
 * another connection, like any other instance's, may be run before a settlement written just before it.
 *
 * Why one script for the turn: under load a turn carries several requests' admissions and settlements.
 * Each script call costs Redis far more than its own commands (the call's setup and its KEYS/ARGV tables)
 * and costs the client a command object, an encoding pass and a reply to parse; the turn's batch runs them
 * as functions of one generated script (see batchLua). Each call keeps its own atomicity (the batch is
 * atomic as a whole, which is stronger) and its own result or error.
 *
 * On a Cluster a turn's calls are grouped by the slot of their keys and each group goes as one batch
 * through ioredis, which sends it to the slot's master (and follows MOVED and ASK): a busy slot's calls
 * still share one execution, though not one socket write.
 */
export class TickPipeline {
  private batch: Call[] | null = null;
  private readonly scripts = new Map<
    string,
    { index: number; lua: string; sha: string; numberOfKeys: number | null }
  >();
  private batchScript: { lua: string; sha: string } | null = null;
  /** Its own connection (see RespConnection); null on a Cluster. */
  private readonly conn: RespConnection | null;
  /** Encodes each turn's commands (reused). */
  private readonly writer = new RespWriter();
  /** Scripts loaded on the connection, by sha, for the connection generation they were loaded on. */
  private readonly loaded = new Map<string, number>();

  constructor(private readonly client: Redis) {
    this.conn = client instanceof Cluster ? null : new RespConnection(respOptionsFor(client.options));
  }

  /**
   * Defines a Lua script under `name` (as ioredis's defineCommand: with `numberOfKeys` null, a call's
   * first argument is its key count) and makes it batchable. Idempotent per name.
   */
  define(name: string, lua: string, numberOfKeys: number | null = null): void {
    if (this.scripts.has(name)) return;
    // On a Cluster the calls go through ioredis, one slot each.
    if (!this.conn && !(name in this.client))
      this.client.defineCommand(name, numberOfKeys === null ? { lua } : { numberOfKeys, lua });
    this.scripts.set(name, { index: this.scripts.size + 1, lua, sha: sha1(lua), numberOfKeys });
    this.batchScript = null; // the batch script is generated again with this one in it
  }

  /** Resolves once the pipeline's connection is up. */
  ready(): Promise<void> {
    return this.conn ? this.conn.whenReady() : Promise.resolve();
  }

  /** The local port of the pipeline's own connection (tests pick its commands out of MONITOR). */
  localPort(): number | undefined {
    return this.conn?.localPort();
  }

  close(): void {
    this.conn?.close();
  }

  /** Queues a call of a script defined here into this turn's batch. */
  call<T>(name: string, args: Array<string | number>): Promise<T> {
    if (!this.scripts.has(name))
      return Promise.reject(new Error(`TickPipeline: script ${name} is not defined`));
    let b = this.batch;
    if (!b) {
      b = this.batch = [];
      setImmediate(() => (this.conn ? this.flush() : this.flushCluster()));
    }
    return new Promise<T>((resolve, reject) =>
      b.push({ name, args, resolve: resolve as (v: unknown) => void, reject }),
    );
  }

  private flush(): void {
    const b = this.batch!;
    this.batch = null;
    const conn = this.conn!;
    const w = this.writer;
    const callbacks: ReplyCallback[] = [];
    // The script is loaded on this connection before its first EVALSHA, in the same write (Redis runs a
    // connection's commands in order), so a call never needs a second trip for NOSCRIPT.
    const load = (lua: string, sha: string) => {
      if (this.loaded.get(sha) === conn.generation) return;
      w.command(3).arg('SCRIPT').arg('LOAD').arg(lua);
      callbacks.push(() => {});
      this.loaded.set(sha, conn.generation);
    };
    // At most MAX_BATCH calls per script execution: one execution holds Redis for as long as it runs, and a
    // turn can carry thousands of calls (every admission of a burst).
    for (let i = 0; i < b.length; i += MAX_BATCH) {
      const g = b.slice(i, i + MAX_BATCH);
      if (g.length === 1) {
        // One call: the script itself (the batch wrapper would only add work).
        const c = g[0]!;
        const s = this.scripts.get(c.name)!;
        load(s.lua, s.sha);
        w.command(2 + (s.numberOfKeys === null ? 0 : 1) + c.args.length)
          .arg('EVALSHA')
          .arg(s.sha);
        if (s.numberOfKeys !== null) w.arg(s.numberOfKeys);
        for (const a of c.args) w.arg(a);
        callbacks.push((err, v) => {
          if (err) c.reject(err);
          else if (v instanceof ReplyError) {
            if (v.message.startsWith('NOSCRIPT')) this.loaded.delete(s.sha);
            c.reject(v);
          } else c.resolve(v);
        });
        continue;
      }
      const { keys, positions, argc } = this.batchKeys(g);
      const bs = this.batchLuaScript();
      load(bs.lua, bs.sha);
      w.command(3 + keys.length + argc)
        .arg('EVALSHA')
        .arg(bs.sha)
        .arg(keys.length);
      for (const k of keys) w.arg(k);
      w.arg(g.length);
      this.batchArgs(g, positions, (a) => w.arg(a));
      callbacks.push((err, v) => {
        if (v instanceof ReplyError && v.message.startsWith('NOSCRIPT')) this.loaded.delete(bs.sha);
        settleBatch(g, err ?? (v instanceof ReplyError ? v : null), v ?? null);
      });
    }
    conn.write(w.take(), callbacks);
  }

  /**
   * Each distinct key of a batch's calls once: a turn's calls mostly name the same few keys (one app's, one
   * key's), and keys are most of a call's bytes. A call names its keys by their position in KEYS. A short
   * list is searched in place (names are built once, so equal keys are mostly the same string); a long one
   * through a Map. `argc`: the batch's ARGV length.
   */
  private batchKeys(g: Call[]): { keys: Array<string | number>; positions: number[]; argc: number } {
    const keys: Array<string | number> = [];
    let index: Map<string | number, number> | null = null;
    const positions: number[] = [];
    let argc = 1;
    for (const c of g) {
      const s = this.scripts.get(c.name)!;
      const nk = keyCount(s, c);
      const from = keysFrom(s);
      argc += 3 + c.args.length - from;
      for (let k = from; k < from + nk; k++) {
        const key = c.args[k]!;
        let n: number;
        if (index) n = index.get(key) ?? 0;
        else {
          n = keys.indexOf(key) + 1;
          if (n === 0 && keys.length >= 16) {
            index = new Map(keys.map((x, j) => [x, j + 1]));
          }
        }
        if (n === 0) {
          n = keys.push(key);
          index?.set(key, n);
        }
        positions.push(n);
      }
    }
    return { keys, positions, argc };
  }

  /** A batch's ARGV after the call count (see batchLua), each argument handed to `emit` in order. */
  private batchArgs(g: Call[], positions: number[], emit: (a: string | number) => void): void {
    let p = 0;
    for (const c of g) {
      const s = this.scripts.get(c.name)!;
      const nk = keyCount(s, c);
      const from = keysFrom(s);
      emit(s.index);
      emit(nk);
      emit(c.args.length - from - nk);
      for (let k = 0; k < nk; k++) emit(positions[p++]!);
      for (let k = from + nk; k < c.args.length; k++) emit(c.args[k]!);
    }
  }

  /** flush() on a Cluster: the turn's calls grouped by slot, each group one batch through ioredis. */
  private flushCluster(): void {
    const b = this.batch!;
    this.batch = null;
    const client = this.client as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
    const bySlot = new Map<number, Call[]>();
    for (const c of b) {
      const s = this.scripts.get(c.name)!;
      const slot = keyCount(s, c) > 0 ? calculateSlot(String(c.args[keysFrom(s)])) : -1;
      const g = bySlot.get(slot);
      if (g && slot >= 0) g.push(c);
      else if (slot >= 0) bySlot.set(slot, [c]);
      else client[c.name]!(...c.args).then(c.resolve, c.reject); // no key: no slot to share
    }
    for (const calls of bySlot.values()) {
      for (let i = 0; i < calls.length; i += MAX_BATCH) {
        const g = calls.slice(i, i + MAX_BATCH);
        if (g.length === 1) {
          client[g[0]!.name]!(...g[0]!.args).then(g[0]!.resolve, g[0]!.reject);
          continue;
        }
        const { keys, positions } = this.batchKeys(g);
        const argv: Array<string | number> = [g.length];
        this.batchArgs(g, positions, (a) => argv.push(a));
        // Defined under a name of its own content: the batch script changes when a script is added.
        const bs = this.batchLuaScript();
        const name = `animaTickBatch${bs.sha.slice(0, 16)}`;
        if (!(name in this.client)) this.client.defineCommand(name, { lua: bs.lua });
        client[name]!(keys.length, ...keys, ...argv).then(
          (v) => settleBatch(g, null, v as Reply),
          (e: unknown) => settleBatch(g, e, null),
        );
      }
    }
  }

  /** The batch script (generated on first use and whenever a script was added since). */
  private batchLuaScript(): { lua: string; sha: string } {
    if (this.batchScript) return this.batchScript;
    const lua = batchLua([...this.scripts.values()].map((s) => s.lua));
    return (this.batchScript = { lua, sha: sha1(lua) });
  }
}

interface Call {
  name: string;
  args: Array<string | number>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

/** A call's key count: its script's, or (a script defined without one) the call's first argument. */
function keyCount(s: { numberOfKeys: number | null }, c: Call): number {
  return s.numberOfKeys ?? Number(c.args[0]);
}
/** Where a call's keys start in its arguments: after the key count, when the call carries one. */
function keysFrom(s: { numberOfKeys: number | null }): number {
  return s.numberOfKeys === null ? 1 : 0;
}

/** Hands each call of a batch its own result, or the batch's error to all of them. */
function settleBatch(g: Call[], err: unknown, v: Reply | null): void {
  if (err || !Array.isArray(v)) {
    const e = err ?? new Error('Redis batch returned no result');
    for (const c of g) c.reject(e);
    return;
  }
  for (let k = 0; k < g.length; k++) {
    const o = v[k] as Reply[] | undefined;
    if (!Array.isArray(o)) g[k]!.reject(new Error('Redis batch returned no result for a call'));
    else if (o[0] === 1) g[k]!.resolve(o.length > 1 ? o[1] : null);
    else g[k]!.reject(new ReplyError(String(o[1])));
  }
}

function sha1(s: string): string {
  return createHash('sha1').update(s).digest('hex');
}

/**
 * One script running several script calls in order. KEYS holds the distinct keys the calls name; ARGV
 * is: the number of calls, then per call its script's index, its key count, its argument count, the
 * positions in KEYS of its keys, and its arguments. Each script body becomes a function of (KEYS, ARGV), so
 * it reads its own slices under the names it was written with. Each call's result comes back as
 * {1, result} or, when it raised an error, {0, message} (pcall), so one failing call fails alone, as it
 * would on its own. (Each call still reads Redis's clock itself: with one reading per batch, a rate limit
 * admits only burst + 1 of a batch's calls, and a busy key got a third of its rate in the GCRA test.)
 *
 * Stream appends can be shared: a call may leave its fields in `ARGV.xadd[stream]` (see appendLua) instead
 * of calling XADD, and the batch appends each stream's fields as ONE entry after the last call. A turn's
 * settlements then cost one entry to write, read back, acknowledge and delete, not one each (Redis CPU per
 * request: bench/overhead.ts). If that XADD fails, every call that left fields in it fails.
 */
export function batchLua(bodies: string[]): string {
  const fns = bodies.map((body, i) => `fns[${i + 1}] = function(KEYS, ARGV)\n${body}\nend`).join('\n');
  return `local fns = {}
${fns}
local out = {}
local xq = {}
local ai = 2
for c = 1, tonumber(ARGV[1]) do
  local f, nk, na = tonumber(ARGV[ai]), tonumber(ARGV[ai + 1]), tonumber(ARGV[ai + 2])
  ai = ai + 3
  local k, a = {}, {}
  for i = 1, nk do k[i] = KEYS[tonumber(ARGV[ai + i - 1])] end
  ai = ai + nk
  for i = 1, na do a[i] = ARGV[ai + i - 1] end
  ai = ai + na
  a.xadd, a.call = xq, c
  local ok, r = pcall(fns[f], k, a)
  if ok then out[c] = {1, r} else out[c] = {0, type(r) == 'table' and (r.err or 'script error') or tostring(r)} end
end
for stream, q in pairs(xq) do
  local ok, r = pcall(redis.call, 'XADD', stream, '*', unpack(q.f))
  if not ok then
    local msg = type(r) == 'table' and (r.err or 'script error') or tostring(r)
    for _, c in ipairs(q.c) do out[c] = {0, msg} end
  end
end
return out
`;
}

/**
 * Lua for a script body: appends `fields` (a Lua table expression) to `stream`, at once when the script runs
 * alone, or into its batch's one entry for that stream (batchLua). A call that appends several times leaves
 * them all in the one entry.
 */
export function appendLua(stream: string, fields: string): string {
  return `if ARGV.xadd then
  local q = ARGV.xadd[${stream}]
  if not q then q = { f = {}, c = {} }; ARGV.xadd[${stream}] = q end
  for _, v in ipairs(${fields}) do q.f[#q.f + 1] = v end
  if q.c[#q.c] ~= ARGV.call then q.c[#q.c + 1] = ARGV.call end
else
  redis.call('XADD', ${stream}, '*', unpack(${fields}))
end`;
}

/**
 * Resolves once the calls queued (on any TickPipeline) before this call have been written: a batch is
 * written by a setImmediate queued with its first call, and setImmediate callbacks run in order.
 */
export function written(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
