/**
 * Chaos bench, "Redis is a cache, not a record": the long version of test/chaos/redis-loss.test.ts, not in
 * CI. Real `anima serve` processes (two by default) share PostgreSQL and Redis, both reached through TCP
 * forwarders this script owns: the Redis one can be pointed at another server (the name that moves in a
 * failover), the PostgreSQL one can be cut (the database "stops" without stopping the server at 5432 that
 * other things share). Every Redis server is this script's own (free ports, temp dirs). Per scenario a
 * bounded load (default 100 rps for 60 s, spread over the gateways, plus one budget key one request at a
 * time), one fault a third of the way in, then checks:
 *   - requests sent, answered 200, refused by status/code;
 *   - journals missing for answered-200 requests (x-request-id = ledger_journal.request_id), after up to
 *     --drain s for the writers to drain; duplicates;
 *   - the trial balance (debits - credits, and per-account mismatches);
 *   - the failing channel 'bad' opens on every gateway within minCalls calls after the event (calls counted
 *     at its fake), and a forced open on one gateway is seen by the others (ms);
 *   - the budget key (daily cost limit 50,000 micros; its requests go one at a time, each reserving 5,000
 *     and costing 4,000) is not overspent: sale <= limit + one request's reservation (55,000), by the
 *     ledger and by the answers;
 *   - gateways restarted (must be 0: a gateway that exits is started again and counted), and data-loss
 *     events the gateways report (anima_redis_data_loss_total, summed over gateways).
 * One JSON line per scenario, then a markdown table. Exit code 1 when any invariant is broken.
 *
 *   npm run chaos -- [--seconds 60] [--rps 100] [--gateways 2] [--outage 10] [--drain 60]
 *                    [--only restart-empty,flushall,...] [--keep-logs]
 *
 * PostgreSQL: TEST_PG_ADMIN_URL (else postgres://postgres@127.0.0.1:5432/postgres); a database of its own is
 * created and dropped. Everything listens on and talks to 127.0.0.1 only. Stops by itself (a global
 * deadline too) and kills every process it started, also on an error or SIGINT/SIGTERM.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { type WriteStream, createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pg from 'pg';
import { startFakeOpenAI } from '../fakes/index.js';
import type { FakeUpstream } from '../fakes/index.js';
import { randomId } from '../src/core/ids.js';

// ---------- options ----------

const argv = process.argv.slice(2);
const flag = (n: string) => argv.includes(`--${n}`);
const opt = (n: string, d: number): number => {
  const i = argv.indexOf(`--${n}`);
  if (i < 0) return d;
  const v = Number(argv[i + 1]);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${n} needs a positive number`);
  return v;
};
const SECONDS = opt('seconds', 60);
const RPS = opt('rps', 100);
const GATEWAYS = Math.max(2, Math.floor(opt('gateways', 2)));
const OUTAGE_S = opt('outage', Math.min(10, SECONDS / 3));
const DRAIN_S = opt('drain', 60);
const ONLY = (() => {
  const i = argv.indexOf('--only');
  return i < 0 ? null : new Set(String(argv[i + 1] ?? '').split(','));
})();
const PG_ADMIN_URL = process.env.TEST_PG_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const ADMIN_TOKEN = 'ak-chaos-' + randomId(24);
const CLI = fileURLToPath(new URL('../src/app/cli.js', import.meta.url));

const MIN_CALLS = 5;
/** See the header: output tokens only, 1,000 micros each; max_tokens 5 reserves 5,000; the answer costs 4,000. */
const BUDGET = { limit: 50_000, maxTokens: 5, outputPerMtok: 1_000_000_000, oneRequest: 5_000 };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (m: string) => process.stderr.write(`[chaos] ${m}\n`);

/** Polls `fn` until truthy, at most `ms` (and at most ms/step + 1 times); false if it never was. */
async function until(fn: () => unknown | Promise<unknown>, ms: number, step = 50): Promise<boolean> {
  const end = Date.now() + ms;
  for (let i = 0; i <= ms / step + 1; i++) {
    try {
      if (await fn()) return true;
    } catch {
      // not yet
    }
    if (Date.now() > end) return false;
    await sleep(step);
  }
  return false;
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const p = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return p;
}

// ---------- what this script started (all of it is stopped in cleanup) ----------

const children = new Set<ChildProcess>();
const closers: Array<() => Promise<void> | void> = [];
const tempDirs: string[] = [];

function track(c: ChildProcess): ChildProcess {
  children.add(c);
  c.once('exit', () => children.delete(c));
  return c;
}
async function exited(c: ChildProcess, ms = 10_000): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  await Promise.race([new Promise((r) => c.once('exit', r)), sleep(ms)]);
}

// ---------- TCP forwarder (Redis: switchable target; PostgreSQL: cuttable) ----------

class Forwarder {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private cut = false;
  port = 0;
  constructor(private targetPort: number) {}

  async start(): Promise<this> {
    this.server = createServer((client) => {
      if (this.cut) return void client.destroy();
      const upstream = connect(this.targetPort, '127.0.0.1');
      this.sockets.add(client).add(upstream);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }
  private dropAll(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }
  /** Every connection dropped, new ones refused (as a stopped server would). */
  down(): void {
    this.cut = true;
    this.dropAll();
  }
  up(): void {
    this.cut = false;
  }
  /** The name now means another server: existing connections drop, so clients reconnect to it. */
  switchTo(port: number): void {
    this.targetPort = port;
    this.dropAll();
  }
  async close(): Promise<void> {
    this.down();
    await new Promise((r) => (this.server ? this.server.close(r) : r(null)));
  }
}

// ---------- redis-server processes ----------

interface Persistence {
  appendonly: 'yes' | 'no';
  appendfsync: 'everysec' | 'always';
}

/** One command on a fresh connection (no retries: SHUTDOWN must not be resent); an Error is returned, not thrown. */
async function redisCmd(port: number, ...args: string[]): Promise<unknown> {
  const r = new Redis({
    port,
    host: '127.0.0.1',
    lazyConnect: true,
    retryStrategy: () => null,
    maxRetriesPerRequest: 0,
    connectTimeout: 1_000,
    commandTimeout: 5_000,
  });
  r.on('error', () => {});
  try {
    await r.connect();
    return await r.call(args[0]!, ...args.slice(1));
  } catch (e) {
    return e;
  } finally {
    r.disconnect();
  }
}

async function info(port: number, section: string): Promise<Record<string, string>> {
  const t = await redisCmd(port, 'INFO', section);
  const out: Record<string, string> = {};
  if (typeof t !== 'string') return out;
  for (const line of t.split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

class RedisServer {
  child: ChildProcess | null = null;
  readonly dir: string;
  constructor(
    readonly name: string,
    readonly port: number,
    public persistence: Persistence,
    public replicaOf: number | null = null,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), `anima-chaos-${name}-`));
    tempDirs.push(this.dir);
  }

  async start(): Promise<void> {
    const args = [
      '--port',
      String(this.port),
      '--bind',
      '127.0.0.1',
      '--dir',
      this.dir,
      '--save',
      '',
      '--appendonly',
      this.persistence.appendonly,
      '--appendfsync',
      this.persistence.appendfsync,
    ];
    if (this.replicaOf !== null) args.push('--replicaof', '127.0.0.1', String(this.replicaOf));
    this.child = track(spawn('redis-server', args, { stdio: 'ignore' }));
    // PONG only once the dataset (an AOF) is loaded; LOADING before.
    if (!(await until(async () => (await redisCmd(this.port, 'PING')) === 'PONG', 30_000, 50)))
      throw new Error(`redis-server ${this.name} on ${this.port} did not answer PING`);
  }

  async kill9(): Promise<void> {
    const c = this.child;
    this.child = null;
    if (!c) return;
    c.kill('SIGKILL');
    await exited(c);
  }

  /** SIGTERM: a clean shutdown (with AOF on, the file is fsynced first). */
  async stop(): Promise<void> {
    const c = this.child;
    this.child = null;
    if (!c) return;
    c.kill('SIGTERM');
    await exited(c);
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }

  async shutdownNoSave(): Promise<void> {
    const c = this.child;
    this.child = null;
    await redisCmd(this.port, 'SHUTDOWN', 'NOSAVE');
    if (c) await exited(c);
  }

  /** Persistence switched at run time (no restart, so no data loss of its own); waits for the AOF base file. */
  async setPersistence(p: Persistence): Promise<void> {
    await redisCmd(this.port, 'CONFIG', 'SET', 'appendfsync', p.appendfsync);
    await redisCmd(this.port, 'CONFIG', 'SET', 'appendonly', p.appendonly);
    this.persistence = p;
    const ok = await until(
      async () => {
        const i = await info(this.port, 'persistence');
        return (
          i.aof_enabled === (p.appendonly === 'yes' ? '1' : '0') &&
          i.aof_rewrite_in_progress === '0' &&
          i.aof_rewrite_scheduled === '0'
        );
      },
      30_000,
      100,
    );
    if (!ok) throw new Error(`redis ${this.name}: persistence ${JSON.stringify(p)} not in force`);
  }
}

// ---------- gateway processes ----------

interface Gw {
  index: number;
  port: number;
  url: string;
  child: ChildProcess | null;
  exits: number;
  out: WriteStream;
}
const gws: Gw[] = [];
let stopping = false;
let gwEnv: Record<string, string> = {};
let logDir = '';

async function spawnGw(g: Gw): Promise<void> {
  const child = track(
    spawn(process.execPath, [CLI, 'serve'], {
      env: { ...process.env, ...gwEnv, ANIMA_PORT: String(g.port) },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  g.child = child;
  let head = '';
  child.stdout!.on('data', (d: Buffer) => {
    if (head.length < 20_000) head += d.toString();
    g.out.write(d);
  });
  child.stderr!.on('data', (d: Buffer) => g.out.write(d));
  child.once('exit', (code, sig) => {
    g.out.write(`\n[chaos] gateway exited code=${code} signal=${sig}\n`);
    if (g.child !== child || stopping) return;
    // A gateway must ride every fault out: one that exits is counted and started again for what follows.
    g.exits++;
    g.child = null;
    log(`gateway ${g.index} exited (code ${code}, signal ${sig}); starting it again`);
    void spawnGw(g).catch((e: unknown) => log(`gateway ${g.index} did not start again: ${String(e)}`));
  });
  const ok = await until(() => /listening on http:\/\//.test(head), 30_000, 50);
  if (!ok) throw new Error(`gateway ${g.index} did not start: ${head.slice(0, 2_000)}`);
}

async function stopGw(g: Gw): Promise<void> {
  const c = g.child;
  g.child = null;
  if (!c) return;
  c.kill('SIGTERM');
  await exited(c, 8_000);
  if (c.exitCode === null && c.signalCode === null) {
    c.kill('SIGKILL');
    await exited(c, 2_000);
  }
}

// ---------- HTTP helpers ----------

async function adminCall(g: Gw, method: string, path: string, body?: unknown): Promise<any> {
  const r = await fetch(`${g.url}/api/admin/v1${path}`, {
    method,
    headers: {
      authorization: `Bearer ${ADMIN_TOKEN}`,
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    ...(body ? { body: JSON.stringify(body) } : {}),
    signal: AbortSignal.timeout(15_000),
  });
  const t = await r.text();
  if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${t.slice(0, 300)}`);
  return t ? JSON.parse(t) : null;
}

async function circuit(g: Gw, ch: string): Promise<{ state: string; gen: number } | undefined> {
  const d = (await adminCall(g, 'GET', '/circuits')).data as Array<{
    channel: string;
    state: string;
    gen: number;
  }>;
  return d.find((c) => c.channel === ch);
}

interface Answer {
  status: number;
  code: string;
  rid: string | null;
  completion: number;
}
async function chat(url: string, key: string, body: Record<string, unknown>): Promise<Answer> {
  try {
    const r = await fetch(url + '/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'chaos' }], ...body }),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await r.text();
    if (r.status === 200) {
      let completion = 0;
      try {
        completion =
          (JSON.parse(text) as { usage?: { completion_tokens?: number } }).usage?.completion_tokens ?? 0;
      } catch {
        /* a 200 that isn't JSON: counted as served, priced 0 */
      }
      return { status: 200, code: 'ok', rid: r.headers.get('x-request-id'), completion };
    }
    let code = 'unknown';
    try {
      code = (JSON.parse(text) as { error: { code: string } }).error.code ?? code;
    } catch {
      /* not JSON */
    }
    return { status: r.status, code, rid: null, completion: 0 };
  } catch (e) {
    return {
      status: 0,
      code: (e as Error).name === 'TimeoutError' ? 'client_timeout' : 'connection_error',
      rid: null,
      completion: 0,
    };
  }
}

/** anima_redis_data_loss_total summed over its labels; null when the gateway has no such metric (an older build). */
async function dataLossTotal(g: Gw): Promise<number | null> {
  try {
    const t = await (
      await fetch(g.url + '/actuator/prometheus', { signal: AbortSignal.timeout(5_000) })
    ).text();
    if (!t.includes('# TYPE anima_redis_data_loss_total')) return null;
    // A labelled counter never incremented has no sample line: 0.
    return [...t.matchAll(/^anima_redis_data_loss_total(?:\{[^}]*\})? (\d+(?:\.\d+)?)$/gm)].reduce(
      (n, m) => n + Number(m[1]),
      0,
    );
  } catch {
    return null;
  }
}

async function readiness(g: Gw): Promise<string> {
  try {
    const r = await fetch(g.url + '/actuator/health/readiness', { signal: AbortSignal.timeout(5_000) });
    return ((await r.json()) as { status: string }).status;
  } catch {
    return 'UNREACHABLE';
  }
}

// ---------- the load ----------

interface Load {
  sent: number;
  served: number;
  refused: Record<string, number>;
  rids: string[];
}
const newLoad = (): Load => ({ sent: 0, served: 0, refused: {}, rids: [] });
function count(l: Load, a: Answer): void {
  if (a.status === 200 && a.rid) {
    l.served++;
    l.rids.push(a.rid);
  } else {
    const k = `${a.status}:${a.code}`;
    l.refused[k] = (l.refused[k] ?? 0) + 1;
  }
}

/** Main key open loop at RPS over every gateway, and the budget key one request at a time every 100 ms. */
function startLoad(mainSk: string, budgetSk: string, maxMs: number) {
  const main = newLoad();
  const budget = { ...newLoad(), sale: 0 };
  let stopped = false;
  const t0 = Date.now();
  const inflight: Array<Promise<void>> = [];
  const mainLoop = (async () => {
    while (!stopped && Date.now() - t0 < maxMs) {
      const due = Math.min(Math.floor(((Date.now() - t0) / 1000) * RPS), Math.ceil((RPS * maxMs) / 1000));
      while (main.sent < due) {
        const g = gws[main.sent % gws.length]!;
        main.sent++;
        inflight.push(chat(g.url, mainSk, { model: 'main' }).then((a) => count(main, a)));
      }
      await sleep(5); // the load's pacing
    }
  })();
  const budgetLoop = (async () => {
    for (let i = 0; !stopped && Date.now() - t0 < maxMs && i < maxMs / 100; i++) {
      const next = Date.now() + 100;
      budget.sent++;
      const a = await chat(gws[i % gws.length]!.url, budgetSk, {
        model: 'budget',
        max_tokens: BUDGET.maxTokens,
      });
      count(budget, a);
      if (a.status === 200) budget.sale += (a.completion * BUDGET.outputPerMtok) / 1_000_000;
      await sleep(Math.max(0, next - Date.now())); // the load's pacing
    }
  })();
  return {
    main,
    budget,
    elapsed: () => Date.now() - t0,
    async stop() {
      stopped = true;
      await Promise.all([mainLoop, budgetLoop]);
      await Promise.all(inflight);
    },
  };
}

// ---------- checks ----------

let fakeBad: FakeUpstream;

/** Calls 'bad' through every gateway not yet open, one call at a time, counting the calls its fake received. */
async function tripBad(mainSk: string): Promise<{ opened: boolean; calls: number[] }> {
  const calls = gws.map(() => 0);
  const open = async (g: Gw) => (await circuit(g, 'bad').catch(() => undefined))?.state === 'open';
  for (let round = 0; round < 3 * MIN_CALLS; round++) {
    let pending = false;
    for (const g of gws) {
      if (await open(g)) continue;
      pending = true;
      const before = fakeBad.stats.requests;
      await chat(g.url, mainSk, { model: 'flaky' });
      calls[g.index]! += fakeBad.stats.requests - before;
    }
    if (!pending) break;
  }
  const opened = await until(async () => (await Promise.all(gws.map(open))).every(Boolean), 3_000, 20);
  return { opened, calls };
}

/** Forced open on gateway 0; ms until each other gateway reports it (-1: not within 5 s). */
async function forceOpen(): Promise<{ status: string; seenMs: number[] }> {
  let status = 'ok';
  try {
    await adminCall(gws[0]!, 'POST', '/circuits/bad/open', { reason: 'chaos bench' });
  } catch (e) {
    status = String((e as Error).message).slice(0, 200);
  }
  const t0 = Date.now();
  const seenMs = await Promise.all(
    gws
      .slice(1)
      .map(async (g) =>
        (await until(async () => (await circuit(g, 'bad'))?.state === 'forced_open', 5_000, 20))
          ? Date.now() - t0
          : -1,
      ),
  );
  return { status, seenMs };
}

/** 'bad' closed on every gateway (its generation > 0, as after any incident). */
async function resetBad(): Promise<string> {
  try {
    await adminCall(gws[0]!, 'POST', '/circuits/bad/reset', { reason: 'chaos bench baseline' });
    const gen = (await circuit(gws[0]!, 'bad'))?.gen ?? 0;
    const ok = await until(
      async () =>
        (await Promise.all(gws.map((g) => circuit(g, 'bad')))).every(
          (c) => c?.state === 'closed' && c.gen >= gen,
        ),
      5_000,
      20,
    );
    return ok ? 'ok' : 'not closed everywhere within 5 s';
  } catch (e) {
    return String((e as Error).message).slice(0, 200);
  }
}

// ---------- scenarios ----------

interface Ctx {
  redisFwd: Forwarder;
  pgFwd: Forwarder;
  primary: RedisServer;
  replica: RedisServer | null;
}

interface Scenario {
  id: string;
  /** Redis persistence in force during the scenario (switched at run time, before the load). */
  persistence: Persistence;
  prepare?: (c: Ctx) => Promise<void>;
  event: (c: Ctx) => Promise<void>;
}

const NO_AOF: Persistence = { appendonly: 'no', appendfsync: 'everysec' };
const AOF_EVERYSEC: Persistence = { appendonly: 'yes', appendfsync: 'everysec' };
const AOF_ALWAYS: Persistence = { appendonly: 'yes', appendfsync: 'always' };

const kill9 = async (c: Ctx) => {
  await c.primary.kill9();
  await sleep(1_000); // down for a second, as a supervisor restarting it would leave it
  await c.primary.start();
};

const SCENARIOS: Scenario[] = [
  {
    id: 'restart-empty',
    persistence: NO_AOF,
    event: async (c) => {
      await c.primary.shutdownNoSave();
      await c.primary.start();
    },
  },
  {
    id: 'flushall',
    persistence: NO_AOF,
    event: async (c) => {
      const r = await redisCmd(c.primary.port, 'FLUSHALL');
      if (r !== 'OK') throw new Error(`FLUSHALL: ${String(r)}`);
    },
  },
  { id: 'kill9-noaof', persistence: NO_AOF, event: kill9 },
  { id: 'kill9-aof-everysec', persistence: AOF_EVERYSEC, event: kill9 },
  { id: 'kill9-aof-always', persistence: AOF_ALWAYS, event: kill9 },
  {
    id: 'failover',
    persistence: NO_AOF,
    prepare: async (c) => {
      const r = new RedisServer('replica', await freePort(), NO_AOF, c.primary.port);
      await r.start();
      const synced = await until(
        async () => {
          const i = await info(r.port, 'replication');
          return i.master_link_status === 'up' && i.master_sync_in_progress === '0';
        },
        30_000,
        100,
      );
      if (!synced) throw new Error('replica did not sync');
      c.replica = r;
    },
    event: async (c) => {
      const r = c.replica!;
      await c.primary.kill9();
      await sleep(1_000); // the time a sentinel takes to agree the primary is gone
      const res = await redisCmd(r.port, 'REPLICAOF', 'NO', 'ONE');
      if (res !== 'OK') throw new Error(`REPLICAOF NO ONE: ${String(res)}`);
      r.replicaOf = null;
      c.redisFwd.switchTo(r.port);
      // The promoted replica is the primary from now on.
      c.primary = r;
      c.replica = null;
    },
  },
  {
    id: 'pg-down',
    persistence: NO_AOF,
    event: async (c) => {
      c.pgFwd.down();
      await sleep(OUTAGE_S * 1_000);
      c.pgFwd.up();
    },
  },
  {
    id: 'both-down',
    persistence: AOF_EVERYSEC,
    event: async (c) => {
      c.pgFwd.down();
      await c.primary.stop();
      await sleep(OUTAGE_S * 1_000);
      await c.primary.start();
      c.pgFwd.up();
    },
  },
];

interface Result {
  scenario: string;
  seconds: number;
  rps: number;
  baseline: string;
  budget_exhausted_before_event: boolean;
  event_ms: number;
  sent: number;
  answered_200: number;
  refused: Record<string, number>;
  refused_main: Record<string, number>;
  refused_budget: Record<string, number>;
  ready_after_s: number;
  journals_missing: number;
  journals_duplicated: number;
  journal_wait_s: number;
  trial_balance_imbalance: string;
  trial_balance_mismatches: number;
  breaker_opened: boolean;
  breaker_calls: number[];
  forced_open: { status: string; seenMs: number[] };
  budget: { limit: number; bound: number; ledger_sale: number; answered_sale: number; exceeded: boolean };
  gateways_restarted: number;
  data_loss_events: number | null;
  error?: string;
}

async function runScenario(
  s: Scenario,
  c: Ctx,
  db: pg.Pool,
  mainSk: string,
  budget: { appId: string; sk: string },
): Promise<Result> {
  if (s.prepare) await s.prepare(c);
  if (
    c.primary.persistence.appendonly !== s.persistence.appendonly ||
    c.primary.persistence.appendfsync !== s.persistence.appendfsync
  )
    await c.primary.setPersistence(s.persistence);
  await until(async () => (await Promise.all(gws.map(readiness))).every((x) => x === 'UP'), 30_000, 200);
  const baseline = await resetBad();
  const losses0 = await Promise.all(gws.map(dataLossTotal));
  const exits0 = gws.reduce((n, g) => n + g.exits, 0);
  const totalMs = SECONDS * 1_000;
  const load = startLoad(mainSk, budget.sk, totalMs + OUTAGE_S * 1_000 + 30_000);
  let eventMs = -1;
  let exhausted = false;
  let error: string | undefined;
  try {
    // A third of the way in, once the budget key is spent (or 10 s later at the latest).
    exhausted = await until(
      () => load.elapsed() >= totalMs / 3 && (load.budget.refused['429:budget_exceeded'] ?? 0) > 0,
      totalMs / 3 + 10_000,
      20,
    );
    const e0 = Date.now();
    log(`${s.id}: event at ${(load.elapsed() / 1000).toFixed(1)} s`);
    await s.event(c);
    eventMs = Date.now() - e0;
    // The load runs to its end, and at least 5 s past the event.
    const endAt = Math.max(totalMs, load.elapsed() + 5_000);
    await until(() => load.elapsed() >= endAt, endAt - load.elapsed() + 1_000, 50);
  } catch (e) {
    error = String((e as Error)?.stack ?? e).slice(0, 500);
    log(`${s.id}: ${error}`);
  } finally {
    await load.stop();
  }
  const r0 = Date.now();
  const ready = await until(
    async () => (await Promise.all(gws.map(readiness))).every((x) => x === 'UP'),
    60_000,
    200,
  );
  const readyAfter = ready ? (Date.now() - r0) / 1000 : -1;

  const trip = await tripBad(mainSk);
  const forced = await forceOpen();
  await resetBad();

  const rids = [...load.main.rids, ...load.budget.rids];
  const q = async () =>
    (
      await db.query<{ n: number; d: number }>(
        'SELECT count(*)::int AS n, count(DISTINCT request_id)::int AS d FROM ledger_journal WHERE request_id = ANY($1)',
        [rids],
      )
    ).rows[0]!;
  const j0 = Date.now();
  await until(async () => (await q()).d >= rids.length, DRAIN_S * 1_000, 250);
  const j = await q();
  const journalWait = (Date.now() - j0) / 1000;

  let imbalance = 'error';
  let mismatches = -1;
  try {
    const tb = await adminCall(gws[0]!, 'GET', '/billing/trial-balance');
    imbalance = (BigInt(tb.debits_micros) - BigInt(tb.credits_micros)).toString();
    mismatches = (tb.mismatches as unknown[]).length;
  } catch (e) {
    imbalance = `error: ${String((e as Error).message).slice(0, 100)}`;
  }
  const sale = Number(
    (
      await db.query<{ sale: string }>(
        `SELECT coalesce(sum((usage->>'sale_micros')::bigint), 0)::text AS sale FROM ledger_journal WHERE app_id = $1 AND kind = 'sale'`,
        [budget.appId],
      )
    ).rows[0]!.sale,
  );
  const bound = BUDGET.limit + BUDGET.oneRequest;
  const losses1 = await Promise.all(gws.map(dataLossTotal));
  const lossEvents =
    losses0.some((x) => x === null) || losses1.some((x) => x === null)
      ? null
      : losses1.reduce<number>((n, x, i) => n + x! - losses0[i]!, 0);
  return {
    scenario: s.id,
    seconds: SECONDS,
    rps: RPS,
    baseline,
    budget_exhausted_before_event: exhausted,
    event_ms: eventMs,
    sent: load.main.sent + load.budget.sent,
    answered_200: load.main.served + load.budget.served,
    refused: mergeCounts(load.main.refused, load.budget.refused),
    refused_main: load.main.refused,
    refused_budget: load.budget.refused,
    ready_after_s: readyAfter,
    journals_missing: rids.length - j.d,
    journals_duplicated: j.n - j.d,
    journal_wait_s: journalWait,
    trial_balance_imbalance: imbalance,
    trial_balance_mismatches: mismatches,
    breaker_opened: trip.opened,
    breaker_calls: trip.calls,
    forced_open: forced,
    budget: {
      limit: BUDGET.limit,
      bound,
      ledger_sale: sale,
      answered_sale: load.budget.sale,
      exceeded: sale > bound || load.budget.sale > bound,
    },
    gateways_restarted: gws.reduce((n, g) => n + g.exits, 0) - exits0,
    data_loss_events: lossEvents,
    ...(error ? { error } : {}),
  };
}

function mergeCounts(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = (out[k] ?? 0) + v;
  return out;
}

/** Every invariant of one scenario (the table shows the figures; this is what the exit code says). */
function broken(r: Result): string[] {
  const out: string[] = [];
  if (r.error) out.push('error');
  if (r.journals_missing) out.push('journals missing');
  if (r.journals_duplicated) out.push('journals duplicated');
  if (r.trial_balance_imbalance !== '0' || r.trial_balance_mismatches !== 0) out.push('trial balance');
  if (!r.breaker_opened || r.breaker_calls.some((n) => n > MIN_CALLS)) out.push('breaker');
  if (r.forced_open.status !== 'ok' || r.forced_open.seenMs.some((ms) => ms < 0 || ms > 1_000))
    out.push('forced open');
  if (r.budget.exceeded) out.push('budget');
  if (r.gateways_restarted) out.push('gateway restarted');
  return out;
}

function table(rs: Result[]): string {
  const rows = [
    '| scenario | sent | answered 200 | refused (status:code) | journals missing | trial balance | breaker opened (calls per gw) | forced open seen (ms) | budget exceeded (ledger / answered sale) | gateways restarted | data-loss events | broken |',
    '|---|---:|---:|---|---:|---|---|---|---|---:|---:|---|',
  ];
  for (const r of rs) {
    const refused = Object.entries(r.refused)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    rows.push(
      `| ${r.scenario} | ${r.sent} | ${r.answered_200} | ${refused || '—'} | ${r.journals_missing} | ${r.trial_balance_imbalance === '0' && r.trial_balance_mismatches === 0 ? '0' : `${r.trial_balance_imbalance} (${r.trial_balance_mismatches} mismatches)`} | ${r.breaker_opened ? 'yes' : 'no'} (${r.breaker_calls.join('/')}) | ${r.forced_open.status === 'ok' ? r.forced_open.seenMs.join('/') : 'refused'} | ${r.budget.exceeded ? 'yes' : 'no'} (${r.budget.ledger_sale} / ${r.budget.answered_sale}) | ${r.gateways_restarted} | ${r.data_loss_events ?? 'n/a'} | ${broken(r).join(', ') || '—'} |`,
    );
  }
  return rows.join('\n');
}

// ---------- setup, run, cleanup ----------

let dbName = '';
let cleaned: Promise<void> | null = null;

function cleanup(): Promise<void> {
  cleaned ??= (async () => {
    stopping = true;
    await Promise.all(gws.map((g) => stopGw(g).catch(() => {})));
    for (const c of children) c.kill('SIGKILL');
    await Promise.all([...children].map((c) => exited(c, 3_000)));
    for (const f of closers.reverse()) await Promise.resolve(f()).catch(() => {});
    for (const g of gws) g.out.end();
    if (dbName) {
      const c = new pg.Client({ connectionString: PG_ADMIN_URL });
      await c
        .connect()
        .then(() => c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`))
        .catch((e: unknown) => log(`could not drop ${dbName}: ${String(e)}`))
        .finally(() => c.end().catch(() => {}));
    }
    for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
    if (logDir && !flag('keep-logs')) rmSync(logDir, { recursive: true, force: true });
    else if (logDir) log(`gateway logs kept in ${logDir}`);
  })();
  return cleaned;
}

async function main(): Promise<number> {
  const scenarios = SCENARIOS.filter((s) => !ONLY || ONLY.has(s.id));
  if (scenarios.length === 0)
    throw new Error(`--only names none of ${SCENARIOS.map((s) => s.id).join(', ')}`);
  logDir = mkdtempSync(join(tmpdir(), 'anima-chaos-logs-'));

  // The database: one of its own on the shared server, reached by the gateways through a cuttable forwarder.
  dbName = 'anima_chaos_' + randomId(8).toLowerCase();
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${dbName}`);
  await admin.end();
  const pgUrl = new URL(PG_ADMIN_URL);
  if (pgUrl.hostname !== '127.0.0.1' && pgUrl.hostname !== 'localhost')
    throw new Error('PostgreSQL must be on 127.0.0.1 (all traffic stays on loopback)');
  pgUrl.pathname = '/' + dbName;
  const pgFwd = await new Forwarder(Number(pgUrl.port || 5432)).start();
  closers.push(() => pgFwd.close());
  const viaFwd = new URL(pgUrl.toString());
  viaFwd.hostname = '127.0.0.1';
  viaFwd.port = String(pgFwd.port);
  const db = new pg.Pool({ connectionString: pgUrl.toString(), max: 2 });
  db.on('error', () => {});
  closers.push(() => db.end());

  const primary = new RedisServer('primary', await freePort(), NO_AOF);
  await primary.start();
  const redisFwd = await new Forwarder(primary.port).start();
  closers.push(() => redisFwd.close());
  const ctx: Ctx = { redisFwd, pgFwd, primary, replica: null };

  const [one, bad] = await Promise.all([
    startFakeOpenAI({ name: 'chaos-one' }),
    startFakeOpenAI({ name: 'chaos-bad' }),
  ]);
  closers.push(
    () => one.close(),
    () => bad.close(),
  );
  fakeBad = bad;
  bad.setFault({ status: 500 });

  gwEnv = {
    ANIMA_HOST: '127.0.0.1',
    DATABASE_URL: viaFwd.toString(),
    REDIS_URL: `redis://127.0.0.1:${redisFwd.port}`,
    ANIMA_REDIS_PREFIX: 'anima-chaos:',
    ANIMA_ADMIN_TOKEN: ADMIN_TOKEN,
    // Production mode refuses to start without a key (credentials sealed at rest).
    ANIMA_SECRET_KEY: process.env.ANIMA_SECRET_KEY || 'anima-chaos-' + randomId(24),
    ANIMA_OUTBOUND_ALLOW: '127.0.0.0/8,::1', // the fake upstreams listen on loopback
    ANIMA_INSTANCE_COUNT: String(GATEWAYS),
    ANIMA_BREAKER_SYNC_MS: '200',
    ANIMA_LEASE_TTL_MS: '5000',
    ANIMA_BILLING_STALE_MS: '5000',
    ANIMA_CONFIG_REFRESH_MS: '5000',
    ANIMA_DRAIN_MS: '2000',
    ANIMA_DB_POOL_SIZE: '5',
    ANIMA_LOG_LEVEL: 'warn',
  };
  for (let i = 0; i < GATEWAYS; i++) {
    const port = await freePort();
    gws.push({
      index: i,
      port,
      url: `http://127.0.0.1:${port}`,
      child: null,
      exits: 0,
      out: createWriteStream(join(logDir, `gateway-${i}.log`)),
    });
  }
  // The first one alone (it migrates the new database), then the rest.
  await spawnGw(gws[0]!);
  await Promise.all(gws.slice(1).map(spawnGw));

  const g0 = gws[0]!;
  await adminCall(g0, 'POST', '/channels', {
    code: 'one',
    provider: 'openai',
    base_url: one.url + '/v1',
    credential: 'k',
  });
  await adminCall(g0, 'POST', '/channels', {
    code: 'bad',
    provider: 'openai',
    base_url: bad.url + '/v1',
    credential: 'k',
    settings: { breaker: { minCalls: MIN_CALLS, failureRate: 0.5, openMs: 600_000, windowMs: 60_000 } },
  });
  for (const [name, ch] of [
    ['main', 'one'],
    ['budget', 'one'],
    ['flaky', 'bad'],
  ] as const)
    await adminCall(g0, 'POST', '/aliases', { name, chain: [{ targets: [{ channel: ch, model: 'm' }] }] });
  await adminCall(g0, 'POST', '/prices', {
    alias: 'main',
    sale_input_per_mtok: 2_000_000,
    sale_output_per_mtok: 4_000_000,
    cost_input_per_mtok: 1_000_000,
    cost_output_per_mtok: 2_000_000,
  });
  for (const alias of ['budget', 'flaky'])
    await adminCall(g0, 'POST', '/prices', {
      alias,
      sale_input_per_mtok: 0,
      sale_output_per_mtok: BUDGET.outputPerMtok,
      cost_input_per_mtok: 0,
      cost_output_per_mtok: BUDGET.outputPerMtok / 2,
    });
  const mainApp = (await adminCall(g0, 'POST', '/apps', { name: 'chaos-main' })).id as string;
  await adminCall(g0, 'POST', '/quotas', {
    scope: 'app',
    scope_id: mainApp,
    max_concurrency: 1_000,
    qps: 10_000,
    qps_burst: 1_000,
  });
  const mainSk = (await adminCall(g0, 'POST', `/apps/${mainApp}/keys`, { name: 'main' })).sk as string;
  // One budget app + key per scenario, so each scenario's spend is its own.
  const budgets = new Map<string, { appId: string; sk: string }>();
  for (const s of scenarios) {
    const appId = (await adminCall(g0, 'POST', '/apps', { name: `chaos-budget-${s.id}` })).id as string;
    const k = await adminCall(g0, 'POST', `/apps/${appId}/keys`, { name: 'budget' });
    await adminCall(g0, 'POST', '/quotas', { scope: 'key', scope_id: k.key.id, cost_per_day: BUDGET.limit });
    budgets.set(s.id, { appId, sk: k.sk as string });
  }
  // Every gateway knows the config: the main key is served, and each budget key's quota refuses a request
  // whose reservation alone passes the limit (that probe goes to 'bad' if not refused: no sale either way).
  for (const g of gws) {
    if (
      !(await until(async () => (await chat(g.url, mainSk, { model: 'main' })).status === 200, 15_000, 100))
    )
      throw new Error(`gateway ${g.index} does not serve the main key`);
    for (const b of budgets.values())
      if (
        !(await until(
          async () =>
            (await chat(g.url, b.sk, { model: 'flaky', max_tokens: 1_000_000 })).code === 'budget_exceeded',
          15_000,
          100,
        ))
      )
        throw new Error(`gateway ${g.index} does not know a budget key's quota`);
  }

  const results: Result[] = [];
  for (const s of scenarios) {
    log(`${s.id}: ${SECONDS} s at ${RPS} rps over ${GATEWAYS} gateways`);
    const r = await runScenario(s, ctx, db, mainSk, budgets.get(s.id)!);
    results.push(r);
    console.log(JSON.stringify(r));
  }
  console.log('\n' + table(results));
  return results.some((r) => broken(r).length) ? 1 : 0;
}

// The whole run's bound: every scenario's load, outage, drain and checks, plus setup.
const deadlineMs = (SECONDS + OUTAGE_S + DRAIN_S + 120) * 1_000 * SCENARIOS.length + 180_000;
const deadline = setTimeout(() => {
  log(`deadline of ${Math.round(deadlineMs / 1000)} s passed; stopping`);
  void cleanup().finally(() => process.exit(2));
}, deadlineMs);
deadline.unref();
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.once(sig, () => {
    log(`${sig}: stopping`);
    void cleanup().finally(() => process.exit(130));
  });

main()
  .then(async (code) => {
    await cleanup();
    process.exit(code);
  })
  .catch(async (e: unknown) => {
    console.error(e);
    await cleanup();
    process.exit(1);
  });
