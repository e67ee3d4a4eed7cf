import { createHash } from 'node:crypto';
import { Cluster, type Redis } from 'ioredis';

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
 * The calls share the connection with everything else, so their order against a later command holds (a
 * client's next request is admitted after its previous request released its lease).
 *
 * Why one script for the turn: under load a turn carries several requests' admissions and settlements.
 * Each script call costs Redis far more than its own commands (the call's setup and its KEYS/ARGV tables)
 * and costs the client a command object, an encoding pass and a reply to parse; the turn's batch runs them
 * as functions of one generated script (see batchLua). Each call keeps its own atomicity (the batch is
 * atomic as a whole, which is stronger) and its own result or error.
 *
 * On a Cluster each call is sent at once on its slot's connection (a batch would span slots).
 */
export class TickPipeline {
  private batch: Array<{ name: string; args: Array<string | number>; resolve: (v: unknown) => void; reject: (e: unknown) => void }> | null = null;
  private readonly scripts = new Map<string, { index: number; lua: string; numberOfKeys: number | null }>();
  private batchCommand: string | null = null;

  constructor(private readonly client: Redis) {}

  /**
   * Defines a Lua script under `name` on the client (as ioredis's defineCommand: with `numberOfKeys`
   * null, a call's first argument is its key count) and makes it batchable. Idempotent per name.
   */
  define(name: string, lua: string, numberOfKeys: number | null = null): void {
    if (this.scripts.has(name)) return;
    if (!(name in this.client)) this.client.defineCommand(name, numberOfKeys === null ? { lua } : { numberOfKeys, lua });
    this.scripts.set(name, { index: this.scripts.size + 1, lua, numberOfKeys });
    this.batchCommand = null; // the batch script is generated again with this one in it
  }

  /** Queues a call of a script defined here into this turn's batch. */
  call<T>(name: string, args: Array<string | number>): Promise<T> {
    if (this.client instanceof Cluster) return (this.client as unknown as Record<string, (...a: unknown[]) => Promise<T>>)[name]!(...args);
    if (!this.scripts.has(name)) return Promise.reject(new Error(`TickPipeline: script ${name} is not defined`));
    let b = this.batch;
    if (!b) {
      b = this.batch = [];
      setImmediate(() => this.flush());
    }
    return new Promise<T>((resolve, reject) => b.push({ name, args, resolve: resolve as (v: unknown) => void, reject }));
  }

  private flush(): void {
    const b = this.batch!;
    this.batch = null;
    // Defined before the pipeline is made: a pipeline has the commands its client had when it was made.
    const batch = b.length > 1 ? this.batchName() : '';
    const p = this.client.pipeline() as unknown as Record<string, (...a: unknown[]) => unknown> & { exec(): Promise<Array<[Error | null, unknown]> | null> };
    // At most MAX_BATCH calls per script execution: one execution holds Redis for as long as it runs, and a
    // turn can carry thousands of calls (every admission of a burst).
    const groups: Array<typeof b> = [];
    for (let i = 0; i < b.length; i += MAX_BATCH) groups.push(b.slice(i, i + MAX_BATCH));
    for (const g of groups) {
      if (g.length === 1) {
        p[g[0]!.name]!(...g[0]!.args); // one call: the script itself (the batch wrapper would only add work)
        continue;
      }
      // Each distinct key once: a turn's calls mostly name the same few keys (one app's, one key's), and
      // keys are most of a call's bytes. A call names its keys by their position in KEYS.
      const keys: Array<string | number> = [];
      const at = new Map<string | number, number>();
      const argv: Array<string | number> = [g.length];
      for (const c of g) {
        const s = this.scripts.get(c.name)!;
        const nk = s.numberOfKeys ?? Number(c.args[0]);
        const from = s.numberOfKeys === null ? 1 : 0;
        argv.push(s.index, nk, c.args.length - from - nk);
        for (let i = from; i < from + nk; i++) {
          const key = c.args[i]!;
          let n = at.get(key);
          if (n === undefined) {
            n = keys.push(key);
            at.set(key, n);
          }
          argv.push(n);
        }
        for (let i = from + nk; i < c.args.length; i++) argv.push(c.args[i]!);
      }
      p[batch]!(keys.length, ...keys, ...argv);
    }
    p.exec().then(
      (res) => {
        groups.forEach((g, gi) => {
          const r = res?.[gi];
          if (!r || r[0]) {
            const err = r?.[0] ?? new Error('Redis pipeline returned no result');
            for (const c of g) c.reject(err);
          } else if (g.length === 1) g[0]!.resolve(r[1]);
          else {
            const out = r[1] as Array<[number, unknown?]>;
            for (let i = 0; i < g.length; i++) {
              const o = out[i];
              if (!o) g[i]!.reject(new Error('Redis batch returned no result for a call'));
              else if (o[0] === 1) g[i]!.resolve(o.length > 1 ? o[1] : null);
              else g[i]!.reject(new Error(String(o[1])));
            }
          }
        });
      },
      (err: unknown) => {
        for (const c of b) c.reject(err);
      },
    );
  }

  /** The batch script's command name (defined on first use and whenever a script was added since). */
  private batchName(): string {
    if (this.batchCommand) return this.batchCommand;
    const lua = batchLua([...this.scripts.values()].map((s) => s.lua));
    const name = 'animaBatch' + createHash('sha1').update(lua).digest('hex').slice(0, 12);
    if (!(name in this.client)) this.client.defineCommand(name, { lua });
    return (this.batchCommand = name);
  }
}

/**
 * One script running several script calls in order. KEYS holds the distinct keys the calls name; ARGV
 * is: the number of calls, then per call its script's index, its key count, its argument count, the
 * positions in KEYS of its keys, and its arguments. Each script body becomes a function of (KEYS, ARGV), so
 * it reads its own slices under the names it was written with. Each call's result comes back as
 * {1, result} or, when it raised an error, {0, message} (pcall), so one failing call fails alone, as it
 * would on its own.
 */
export function batchLua(bodies: string[]): string {
  const fns = bodies.map((body, i) => `fns[${i + 1}] = function(KEYS, ARGV)\n${body}\nend`).join('\n');
  return `local fns = {}
${fns}
local out = {}
local ai = 2
for c = 1, tonumber(ARGV[1]) do
  local f, nk, na = tonumber(ARGV[ai]), tonumber(ARGV[ai + 1]), tonumber(ARGV[ai + 2])
  ai = ai + 3
  local k, a = {}, {}
  for i = 1, nk do k[i] = KEYS[tonumber(ARGV[ai + i - 1])] end
  ai = ai + nk
  for i = 1, na do a[i] = ARGV[ai + i - 1] end
  ai = ai + na
  local ok, r = pcall(fns[f], k, a)
  if ok then out[c] = {1, r} else out[c] = {0, type(r) == 'table' and (r.err or 'script error') or tostring(r)} end
end
return out
`;
}

/**
 * Resolves once the calls queued (on any TickPipeline) before this call have been written: a batch is
 * written by a setImmediate queued with its first call, and setImmediate callbacks run in order.
 */
export function written(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
