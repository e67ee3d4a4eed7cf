/**
 * Gateway overhead: autocannon (saturated) and an open-loop fixed-rate generator (bench/rate.ts) on loopback against the fake upstream directly, a raw pass-through proxy
 * (bench/raw-proxy.ts) and the gateway with everything on — key auth, quota admission (a key whose
 * limits never bind), breaker, a fallback chain of two channels, billing journal, metrics, info logs —
 * interleaved (A B C A B C …) with medians, because a 2-core machine is noisy. A second gateway with
 * billing off measures what billing costs, in the same rounds.
 *
 *   node dist/bench/overhead.js [--duration S] [--rounds N] [--connections C] [--rate RPS] [--workers N]
 *                               [--keys N] [--tracing]
 *
 * Scenarios: (1) JSON chat, upstream 0 ms, saturated; (2) SSE, 20 chunks + usage, saturated; (3) upstream
 * 50 ms at a fixed offered rate (default 1,000 rps); (4) as (3) with 20% of requests failing on the
 * first channel (fallback and breaker at work), after the 50 ms like the rest, and again with those
 * failures answered at once (what the fallback itself adds); (5) as (1) spread over --keys N keys whose
 * limits never bind (json-many); (6) as (1) on a key whose concurrency limit sits just above the
 * connection count (json-near: admission's checks at their edge, few refusals). Upstream behaviour is set on the fake servers themselves
 * (POST /_fake/fault), so every target gets exactly the same answers.
 *
 * Production mode (PostgreSQL + Redis) when DATABASE_URL / REDIS_URL point at servers (the bench creates
 * and drops its own database there); the embedded default otherwise (no billing-off twin, no workers).
 * Production mode also reports what the shared tier spends for each gateway target's measured runs:
 * the Redis server's CPU (INFO cpu) and commands (INFO commandstats), the PostgreSQL server processes'
 * CPU (/proc, when they run on this machine) per request and per journal. Those servers serve whatever
 * else uses them during the run too, so their figures are upper bounds on a busy machine.
 * Prints tables, then as its very last line one JSON object.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import pg from 'pg';
import { insertAlias, insertApp, insertChannel, insertKey } from '../src/config/repo.js';
import { randomId } from '../src/core/ids.js';
import { openDatabase } from '../src/store/db.js';
import { setSecretKey } from '../src/config/secrets.js';
import { fixedRate } from './rate.js';
import { type TierCost, medTier, pgCpu, pgDelta, redisStats } from './shared-tier.js';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const DURATION = arg('duration', 3);
const ROUNDS = arg('rounds', 3);
const CONNECTIONS = arg('connections', 50);
const RATE = arg('rate', 1000);
const WORKERS = arg('workers', 1);
const KEYS = arg('keys', 100);

const children: ChildProcess[] = [];
// Production mode refuses to start without a key; the bench seals its channels with it, as production does.
const SECRET_KEY = process.env.ANIMA_SECRET_KEY || 'anima-bench-' + randomId(24);
function run(
  args: string[],
  env: NodeJS.ProcessEnv,
  ready: RegExp,
): Promise<{ m: RegExpExecArray; p: ChildProcess }> {
  const p = spawn(process.execPath, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(p);
  return new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`${args[0]} did not start: ${out}`)), 30_000);
    const onErr = (d: Buffer) => (out += d.toString());
    const on = (d: Buffer) => {
      out += d.toString();
      const m = ready.exec(out);
      if (m) {
        clearTimeout(t);
        // From here on the child's output (its request logs) is drained and dropped, not kept.
        p.stdout!.off('data', on);
        p.stderr!.off('data', onErr);
        p.stdout!.resume();
        p.stderr!.resume();
        resolve({ m, p });
      }
    };
    p.stdout!.on('data', on);
    p.stderr!.on('data', onErr);
    p.on('exit', (c) => reject(new Error(`${args[0]} exited ${c}: ${out}`)));
  });
}

interface Sample {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  /** CPU microseconds the target process spent per request served (direct: none measured). */
  cpuUs?: number;
  /** Production mode, gateway targets: the shared tier's share, per request served. */
  tier?: TierCost;
}

async function cannon(
  url: string,
  headers: Record<string, string>,
  body: string,
  o: { duration?: number; rate?: number; auths?: string[] } = {},
): Promise<Sample> {
  if (o.rate) return fixedRate(url, headers, body, o.rate, o.duration ?? DURATION);
  // Several keys: each request carries the next one in turn.
  let next = 0;
  const auths = o.auths;
  const r = await autocannon({
    url,
    method: 'POST',
    headers,
    body,
    duration: o.duration ?? DURATION,
    connections: CONNECTIONS,
    ...(auths
      ? {
          requests: [
            {
              setupRequest: (req) => ({
                ...req,
                headers: { ...headers, authorization: `Bearer ${auths[next++ % auths.length]}` },
              }),
            },
          ],
        }
      : {}),
  });
  return {
    rps: r.requests.average,
    p50: r.latency.p50,
    p99: r.latency.p99,
    errors: r.errors + r.non2xx + r.timeouts,
  };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const med = (xs: Sample[]): Sample => {
  const tier = medTier(xs);
  return {
    rps: median(xs.map((x) => x.rps)),
    p50: median(xs.map((x) => x.p50)),
    p99: median(xs.map((x) => x.p99)),
    errors: xs.reduce((a, x) => a + x.errors, 0),
    ...(xs.every((x) => x.cpuUs !== undefined) ? { cpuUs: median(xs.map((x) => x.cpuUs!)) } : {}),
    ...(tier ? { tier } : {}),
  };
};

/** Resident set size of a process and its children (a --workers gateway), in MiB. */
function rssMb(pid: number): number {
  const read = (p: number): number => {
    try {
      const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0);
      const kids = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8')
        .trim()
        .split(/\s+/)
        .filter(Boolean)
        .map(Number);
      return kb + kids.reduce((s, k) => s + read(k), 0);
    } catch {
      return 0;
    }
  };
  return Math.round(read(pid) / 1024);
}

/** CPU time (user + system, ms) a process and its children have used so far, from /proc. */
function cpuMs(pid: number): number {
  const read = (p: number): number => {
    try {
      const f = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ');
      const kids = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8')
        .trim()
        .split(/\s+/)
        .filter(Boolean)
        .map(Number);
      return ((Number(f[11]) + Number(f[12])) * 1000) / 100 + kids.reduce((s, k) => s + read(k), 0);
    } catch {
      return 0;
    }
  };
  return read(pid);
}

async function setFault(upstream: string, f: Record<string, unknown> | null): Promise<void> {
  await fetch(upstream + '/_fake/fault', { method: 'POST', body: JSON.stringify(f) });
}

async function main(): Promise<void> {
  const databaseUrl = process.env.DATABASE_URL;
  const redisUrl = process.env.REDIS_URL;
  const production = !!(databaseUrl && redisUrl);
  let dbName: string | null = null;
  let dbUrl: string | undefined;
  let dataDir: string | undefined;
  if (databaseUrl) {
    dbName = 'anima_bench_' + randomId(8).toLowerCase();
    const c = new pg.Client({ connectionString: databaseUrl });
    await c.connect();
    await c.query(`CREATE DATABASE ${dbName}`);
    await c.end();
    const u = new URL(databaseUrl);
    u.pathname = '/' + dbName;
    dbUrl = u.toString();
  } else {
    dataDir = mkdtempSync(join(tmpdir(), 'anima-bench-'));
  }
  let counter: pg.Client | null = null;
  let redisInfo: Redis | null = null;
  try {
    const fake = () =>
      run(
        ['dist/fakes/cli.js', '--openai-port', '0', '--anthropic-port', '0'],
        {},
        /"openai":"(http:\/\/[^"]+)"/,
      ).then((x) => x.m[1]!);
    const [upA, upB] = await Promise.all([fake(), fake()]);
    setSecretKey(SECRET_KEY);
    const dbh = await openDatabase({ databaseUrl: dbUrl, dataDir: dataDir ?? 'memory://' });
    await insertChannel(dbh.db, {
      code: 'one',
      provider: 'openai',
      baseUrl: upA + '/v1',
      credential: 'bench',
    });
    await insertChannel(dbh.db, {
      code: 'two',
      provider: 'openai',
      baseUrl: upB + '/v1',
      credential: 'bench',
    });
    await insertAlias(dbh.db, {
      name: 'bench',
      tiers: [[{ channel: 'one', model: 'gpt-bench' }], [{ channel: 'two', model: 'gpt-bench' }]],
    });
    // The same upstream as 'one' behind a breaker that opens at a 10% failure rate (the default is 50%,
    // which a channel failing 20% of calls never reaches): scenario 4 again, with the breaker taking the
    // failing channel out of rotation instead of every fifth request paying for a failed attempt.
    await insertChannel(dbh.db, {
      code: 'one-strict',
      provider: 'openai',
      baseUrl: upA + '/v1',
      credential: 'bench',
      settings: { breaker: { failureRate: 0.1, minCalls: 20 } },
    });
    await insertAlias(dbh.db, {
      name: 'bench-strict',
      tiers: [[{ channel: 'one-strict', model: 'gpt-bench' }], [{ channel: 'two', model: 'gpt-bench' }]],
    });
    await dbh.db
      .insertInto('price')
      .values({
        alias: 'bench-strict',
        sale_input_per_mtok: 2_000_000,
        sale_output_per_mtok: 4_000_000,
        cost_input_per_mtok: 1_000_000,
        cost_output_per_mtok: 2_000_000,
      })
      .execute();
    await dbh.db
      .insertInto('price')
      .values({
        alias: 'bench',
        sale_input_per_mtok: 2_000_000,
        sale_output_per_mtok: 4_000_000,
        cost_input_per_mtok: 1_000_000,
        cost_output_per_mtok: 2_000_000,
      })
      .execute();
    const app = await insertApp(dbh.db, 'bench');
    // Every gateway request passes quota admission: a key with limits high enough never to bind.
    const key = await insertKey(dbh.db, app);
    // --decompose: a key with no quota at all, sent to the billing-off twin ("bare": auth, routing,
    // breaker, metrics and logs only), to split the distance to the raw proxy into its parts.
    const bareKey = await insertKey(dbh.db, app);
    await dbh.db
      .insertInto('quota')
      .values({
        scope: 'key',
        scope_id: key.id,
        max_concurrency: 100_000,
        qps: 1_000_000,
        qps_burst: 1_000_000,
        tokens_per_minute: 1e12,
      })
      .execute();
    // json-many: keys whose limits never bind, each request on the next. json-near: one key whose
    // concurrency limit sits a tenth above the connection count, so every admission is decided at the
    // edge of a limit the load actually reaches (a request's lease may still be held as its connection
    // sends the next one, hence the margin).
    const manyKeys: string[] = [];
    for (let i = 0; i < KEYS; i++) {
      const k = await insertKey(dbh.db, app);
      manyKeys.push(k.sk);
      await dbh.db
        .insertInto('quota')
        .values({
          scope: 'key',
          scope_id: k.id,
          max_concurrency: 100_000,
          qps: 1_000_000,
          qps_burst: 1_000_000,
          tokens_per_minute: 1e12,
        })
        .execute();
    }
    const nearKey = await insertKey(dbh.db, app);
    await dbh.db
      .insertInto('quota')
      .values({
        scope: 'key',
        scope_id: nearKey.id,
        max_concurrency: CONNECTIONS + Math.max(2, Math.ceil(CONNECTIONS / 10)),
        qps: 1_000_000,
        qps_burst: 1_000_000,
        tokens_per_minute: 1e12,
      })
      .execute();
    // The journal count for the shared-tier figures, on one connection kept open (a new one per count
    // would start a PostgreSQL backend each time), whose backend's CPU is left out of PostgreSQL's.
    counter = dbUrl ? new pg.Client({ connectionString: dbUrl }) : null;
    await counter?.connect();
    const counterPid = counter ? Number((await counter.query('SELECT pg_backend_pid() AS p')).rows[0].p) : 0;
    const countJournals = async () =>
      Number(
        (await counter!.query(`SELECT count(*) AS n FROM ledger_journal WHERE kind = 'sale'`)).rows[0].n,
      );
    redisInfo = redisUrl ? new Redis(redisUrl, { lazyConnect: true }) : null;
    await redisInfo?.connect();
    const journalCount = async () => {
      const h = await openDatabase({ databaseUrl: dbUrl, dataDir: dataDir ?? 'memory://' });
      try {
        return Number(
          (
            await h.db
              .selectFrom('ledger_journal')
              .select((eb) => eb.fn.countAll<string>().as('n'))
              .where('kind', '=', 'sale')
              .executeTakeFirstOrThrow()
          ).n,
        );
      } finally {
        await h.close();
      }
    };
    await dbh.close();
    const gatewayEnv = (extra: NodeJS.ProcessEnv) => ({
      ANIMA_PORT: '0',
      ANIMA_LOG_LEVEL: 'info',
      ANIMA_SECRET_KEY: SECRET_KEY,
      ANIMA_OUTBOUND_ALLOW: '127.0.0.0/8,::1', // the fake upstreams listen on loopback
      ...(dbUrl ? { DATABASE_URL: dbUrl } : { DATABASE_URL: '', ANIMA_DATA_DIR: dataDir }),
      ...(redisUrl
        ? { REDIS_URL: redisUrl, ANIMA_REDIS_PREFIX: `anima-bench:${randomId(6)}:` }
        : { REDIS_URL: '' }),
      ...extra,
    });
    const LISTEN = /listening on (http:\/\/[\d.:]+)/;
    // ANIMA_BENCH_PROFILE=<dir>: the gateway writes a V8 CPU profile there when it stops (node --cpu-prof).
    const prof = process.env.ANIMA_BENCH_PROFILE
      ? ['--cpu-prof', '--cpu-prof-dir', process.env.ANIMA_BENCH_PROFILE]
      : [];
    const nodeFlags = (process.env.ANIMA_BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
    const serveArgs = [
      ...nodeFlags,
      ...prof,
      'dist/src/app/cli.js',
      'serve',
      ...(production && WORKERS > 1 ? ['--workers', String(WORKERS)] : []),
    ];
    // --tracing: OpenTelemetry traces on (OTLP/HTTP protobuf, every request sampled) to a local sink that
    // discards them (bench/otlp-sink.ts). Production mode: on the twin only, so its column and CPU/req are
    // "tracing on" beside the gateway's "off", in the same rounds; embedded: on the gateway itself.
    const tracingEnv: Record<string, string> = {};
    if (process.argv.includes('--tracing')) {
      const sink = await run(['dist/bench/otlp-sink.js'], {}, LISTEN);
      tracingEnv.OTEL_EXPORTER_OTLP_ENDPOINT = sink.m[1]!;
      if (production)
        process.env.ANIMA_BENCH_TWIN_ENV = [
          process.env.ANIMA_BENCH_TWIN_ENV,
          `OTEL_EXPORTER_OTLP_ENDPOINT=${sink.m[1]!}`,
        ]
          .filter(Boolean)
          .join(',');
    }
    const gw = await run(serveArgs, gatewayEnv(production ? {} : tracingEnv), LISTEN);
    const gateway = gw.m[1]!;
    // The billing-off twin shares the database, so only in production mode.
    // --twin-build DIR: the twin is another build (DIR/dist) with everything on, for an A/B of two builds
    // measured in the same rounds (its column is then that build, not "billing off").
    // ANIMA_BENCH_TWIN_ENV=K=V,...: the twin runs with these settings added (everything else on; this build
    // unless --twin-build names another): an A/B of a setting on one build.
    const twinEnv: Record<string, string> = {};
    for (const kv of (process.env.ANIMA_BENCH_TWIN_ENV ?? '').split(',').filter(Boolean))
      twinEnv[kv.slice(0, kv.indexOf('='))] = kv.slice(kv.indexOf('=') + 1);
    const twinBuild = process.argv.includes('--twin-build')
      ? process.argv[process.argv.indexOf('--twin-build') + 1]!
      : process.env.ANIMA_BENCH_TWIN_ENV
        ? '.'
        : null;
    // ANIMA_BENCH_TWIN_NODE_FLAGS: the twin's node flags instead (an A/B of runtime flags on one build).
    const twinFlags = process.env.ANIMA_BENCH_TWIN_NODE_FLAGS;
    const twinArgs =
      twinFlags === undefined
        ? serveArgs
        : [...twinFlags.split(' ').filter(Boolean), ...serveArgs.slice(nodeFlags.length)];
    const offRun = production
      ? twinBuild
        ? await run(
            twinArgs.map((a) => (a === 'dist/src/app/cli.js' ? `${twinBuild}/dist/src/app/cli.js` : a)),
            gatewayEnv(twinEnv),
            LISTEN,
          )
        : await run(serveArgs, gatewayEnv({ ANIMA_BILLING: 'off' }), LISTEN)
      : null;
    const off = offRun ? offRun.m[1]! : null;
    const rawP = await run(['dist/bench/raw-proxy.js', upA, '0'], {}, LISTEN);
    const raw = rawP.m[1]!;
    const pidOf: Record<string, number | undefined> = {
      raw: rawP.p.pid,
      gateway: gw.p.pid,
      off: offRun?.p.pid,
      bare: offRun?.p.pid,
      strict: gw.p.pid,
    };

    // A conversation of ~16 KB (8 turns of ~2 KB): what a chat client resends every turn. Costs that grow
    // with the body (parsing it, checking it, forwarding it) are invisible with the one-line prompt.
    const turn =
      'A gateway sits between applications and many upstream providers; it authenticates, admits, routes, streams and bills. '.repeat(
        18,
      );
    const conversation = Array.from({ length: 8 }, (_, i) => ({
      role: i % 2 ? 'assistant' : 'user',
      content: `${i}: ${turn}`,
    }));
    const chatBody = (stream: boolean, model: string, large = false) =>
      JSON.stringify({
        model,
        messages: large ? conversation : [{ role: 'user', content: 'Say something short about gateways.' }],
        ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}),
      });
    const upHeaders = { 'content-type': 'application/json', authorization: 'Bearer bench' };
    const gwHeaders = { 'content-type': 'application/json', authorization: `Bearer ${key.sk}` };
    type Target = 'direct' | 'raw' | 'gateway' | 'off' | 'bare' | 'strict';
    const bareHeaders = { 'content-type': 'application/json', authorization: `Bearer ${bareKey.sk}` };
    // --twin-bare: the twin's "billing off" runs use the key without quota, so the twin is the bare gateway
    // alone (for a profile to set against the full gateway's: bench/profile-diff.ts).
    const twinHeaders = process.argv.includes('--twin-bare') ? bareHeaders : gwHeaders;
    const hit = (
      t: Target,
      stream: boolean,
      o: { duration?: number; rate?: number } = {},
      large = false,
      keys?: 'many' | 'near',
    ) =>
      keys && (t === 'gateway' || t === 'off')
        ? cannon(
            (t === 'off' ? off! : gateway) + '/v1/chat/completions',
            { ...gwHeaders, authorization: `Bearer ${keys === 'near' ? nearKey.sk : manyKeys[0]}` },
            chatBody(stream, 'bench', large),
            { ...o, ...(keys === 'many' ? { auths: manyKeys } : {}) },
          )
        : t === 'direct'
          ? cannon(upA + '/v1/chat/completions', upHeaders, chatBody(stream, 'gpt-bench', large), o)
          : t === 'raw'
            ? cannon(raw + '/v1/chat/completions', upHeaders, chatBody(stream, 'gpt-bench', large), o)
            : t === 'bare'
              ? cannon(off! + '/v1/chat/completions', bareHeaders, chatBody(stream, 'bench', large), o)
              : t === 'strict'
                ? cannon(
                    gateway + '/v1/chat/completions',
                    gwHeaders,
                    chatBody(stream, 'bench-strict', large),
                    o,
                  )
                : cannon(
                    (t === 'off' ? off! : gateway) + '/v1/chat/completions',
                    t === 'off' ? twinHeaders : gwHeaders,
                    chatBody(stream, 'bench', large),
                    o,
                  );
    const decompose = process.argv.includes('--decompose') && off !== null;

    const scenarios: Array<{
      name: string;
      stream: boolean;
      large?: boolean;
      optIn?: boolean;
      faultA: Record<string, unknown> | null;
      faultB: Record<string, unknown> | null;
      rate?: number;
      keys?: 'many' | 'near';
      targets: Target[];
    }> = [
      {
        name: 'json',
        stream: false,
        faultA: null,
        faultB: null,
        targets: [
          'direct',
          'raw',
          'gateway',
          ...(off ? ['off' as const] : []),
          ...(decompose ? ['bare' as const] : []),
        ],
      },
      {
        name: 'json-many',
        stream: false,
        keys: 'many',
        faultA: null,
        faultB: null,
        targets: ['raw', 'gateway', ...(off ? ['off' as const] : [])],
      },
      {
        name: 'json-near',
        stream: false,
        keys: 'near',
        faultA: null,
        faultB: null,
        targets: ['raw', 'gateway', ...(off ? ['off' as const] : [])],
      },
      {
        name: 'json-large',
        stream: false,
        large: true,
        optIn: true,
        faultA: null,
        faultB: null,
        targets: ['direct', 'raw', 'gateway', ...(off ? ['off' as const] : [])],
      },
      {
        name: 'stream',
        stream: true,
        faultA: { chunks: 20 },
        faultB: { chunks: 20 },
        targets: ['direct', 'raw', 'gateway', ...(off ? ['off' as const] : [])],
      },
      {
        name: 'rate',
        stream: false,
        faultA: { latencyMs: 50 },
        faultB: { latencyMs: 50 },
        rate: RATE,
        targets: ['direct', 'raw', 'gateway', ...(off ? ['off' as const] : [])],
      },
      {
        name: 'fallback',
        stream: false,
        faultA: { latencyMs: 50, status: 500, failRate: 0.2 },
        faultB: { latencyMs: 50 },
        rate: RATE,
        targets: ['gateway', 'strict'],
      },
      // As 'fallback', but the failing fifth get their 500 at once (an overloaded or erroring upstream
      // often answers straight away): what the fallback itself adds, without the failed call's 50 ms.
      {
        name: 'fallback-fast',
        stream: false,
        faultA: { latencyMs: 50, status: 500, failRate: 0.2, failFast: true },
        faultB: { latencyMs: 50 },
        rate: RATE,
        targets: ['gateway'],
      },
    ];
    // --only json,stream: run just those scenarios (for profiling; the JSON summary then lacks the rest).
    // Opt-in scenarios (json-large) run only when named there: the default run stays near 4 minutes.
    const only = process.argv.includes('--only')
      ? new Set(process.argv[process.argv.indexOf('--only') + 1]!.split(','))
      : null;
    scenarios.splice(
      0,
      scenarios.length,
      ...scenarios.filter((sc) => (only ? only.has(sc.name) : !sc.optIn)),
    );
    // --targets raw,gateway: run just those targets in each scenario (to watch one with other tools).
    const pick = process.argv.includes('--targets')
      ? new Set(process.argv[process.argv.indexOf('--targets') + 1]!.split(','))
      : null;
    if (pick) for (const sc of scenarios) sc.targets = sc.targets.filter((t) => pick.has(t));
    const results: Record<string, Partial<Record<Target, Sample>>> = {};
    // Journals are written after the responses, in batches: the shared tier is read once the writer has
    // caught up: at least `min` journals (one per billed request) and none new for half a second; at most 15 s.
    const settle = async (min = 0): Promise<number> => {
      let n = await countJournals();
      for (let same = 0, i = 0; (same < 2 || n < min) && i < 60; i++) {
        await new Promise((r) => setTimeout(r, 250));
        const m = await countJournals();
        same = m === n ? same + 1 : 0;
        n = m;
      }
      return n;
    };
    const pgNow = () => {
      const m = pgCpu();
      m?.delete(counterPid);
      return m;
    };
    const journalsBefore = production ? await journalCount() : 0;
    let billedSeconds = 0;
    for (const sc of scenarios) {
      await setFault(upA, sc.faultA);
      await setFault(upB, sc.faultB);
      const o = sc.rate ? { rate: sc.rate } : {};
      for (const t of sc.targets) await hit(t, sc.stream, { ...o, duration: 1 }, sc.large, sc.keys); // warm JIT and pools
      const samples: Partial<Record<Target, Sample[]>> = {};
      for (let i = 0; i < ROUNDS; i++) {
        for (const t of sc.targets) {
          // The shared tier is sampled only around a gateway target's run (direct and raw don't touch it).
          const tier = production && t !== 'direct' && t !== 'raw';
          const j0 = tier ? await settle() : 0; // the previous run's journals are not this one's
          const pg0 = tier ? pgNow() : null;
          const r0 = tier ? await redisStats(redisInfo!) : null;
          const t0 = performance.now();
          const pid = pidOf[t];
          const c0 = pid ? cpuMs(pid) : 0;
          const x = await hit(t, sc.stream, o, sc.large, sc.keys);
          const served = Math.max(1, x.rps * DURATION);
          if (pid) x.cpuUs = Math.round(((cpuMs(pid) - c0) * 1000) / served);
          if (r0) {
            const billed = t === 'gateway' || t === 'strict' || (t === 'off' && twinBuild !== null);
            const journals = (await settle(billed ? j0 + Math.floor(served * 0.9) : 0)) - j0;
            const pg1 = pgNow();
            const r1 = await redisStats(redisInfo!);
            let calls = 0;
            let scriptCalls = 0;
            let scriptUsec = 0;
            const perCmd: Record<string, number> = {};
            for (const [name, c] of r1.cmds) {
              if (name === 'info') continue;
              const before = r0.cmds.get(name) ?? { calls: 0, usec: 0 };
              calls += c.calls - before.calls;
              if (c.calls > before.calls) perCmd[name] = (c.calls - before.calls) / served;
              if (/^(eval|evalsha|fcall|fcall_ro|eval_ro|evalsha_ro)$/.test(name)) {
                scriptCalls += c.calls - before.calls;
                scriptUsec += c.usec - before.usec;
              }
            }
            const pgMs = pg0 && pg1 ? pgDelta(pg0, pg1) : undefined;
            x.tier = {
              redisUs: ((r1.cpuS - r0.cpuS) * 1e6) / served,
              redisCmds: calls / served,
              redisScriptCalls: scriptCalls / served,
              redisScriptUs: scriptUsec / served,
              redisPerCmd: perCmd,
              ...(pgMs !== undefined ? { pgUs: (pgMs * 1000) / served } : {}),
              journalsPerReq: journals / served,
              ...(pgMs !== undefined && journals > 0 ? { pgUsPerJournal: (pgMs * 1000) / journals } : {}),
            };
          }
          (samples[t] ??= []).push(x);
          if (t === 'gateway') billedSeconds += (performance.now() - t0) / 1000;
        }
      }
      results[sc.name] = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, med(v!)]));
    }
    await setFault(upA, null);
    await setFault(upB, null);
    const rss = rssMb(gw.p.pid!);
    // Journals the writer committed for the billed gateway's runs (it catches up within a second or two).
    let journals = 0;
    if (production) {
      let last = -1;
      for (let i = 0; i < 50; i++) {
        journals = (await journalCount()) - journalsBefore;
        if (journals === last) break;
        last = journals;
        await new Promise((r) => setTimeout(r, 300));
      }
    }

    const mode = `${dbUrl ? 'PostgreSQL' : 'PGlite'} + ${redisUrl ? 'Redis' : 'in-process'}${WORKERS > 1 && production ? `, ${WORKERS} gateway workers` : ', one gateway process'}`;
    const f = (s: Sample | undefined) =>
      s
        ? `${s.rps.toFixed(0)} rps, p50 ${+s.p50.toFixed(1)} / p99 ${+s.p99.toFixed(1)} ms${s.cpuUs !== undefined ? `, ${s.cpuUs} µs CPU/req` : ''}${s.errors ? `, ${s.errors} errors` : ''}`
        : '-';
    console.log(
      `\nAnima overhead (${mode}; ${CONNECTIONS} connections saturated, ${RATE} rps fixed rate; ${DURATION}s x ${ROUNDS} rounds interleaved, medians)\n`,
    );
    console.log(
      `scenario | direct | raw proxy | gateway (everything on) | ${twinBuild ? `twin build ${twinBuild}${process.env.ANIMA_BENCH_TWIN_ENV ? ` with ${process.env.ANIMA_BENCH_TWIN_ENV}` : ''}` : 'gateway, billing off'}${decompose ? ' | bare (no quota, no billing)' : ''} | gateway / raw proxy`,
    );
    console.log(`---|---|---|---|---${decompose ? '|---' : ''}|---`);
    for (const [name, r] of Object.entries(results)) {
      console.log(
        `${name} | ${f(r.direct)} | ${f(r.raw)} | ${f(r.gateway)} | ${f(r.off)}${decompose ? ` | ${f(r.bare)}` : ''} | ${r.raw && r.gateway ? (r.gateway.rps / r.raw.rps).toFixed(3) : '-'}`,
      );
    }
    if (results.fallback?.strict)
      console.log(
        `fallback, breaker opening at 10% failures (default 50%) | - | - | ${f(results.fallback.strict)} | - | -`,
      );
    if (decompose && results.json?.bare && results.json.raw)
      console.log(
        `\nbare gateway / raw proxy, JSON: ${(results.json.bare.rps / results.json.raw.rps).toFixed(3)}`,
      );
    const tierRows = Object.entries(results).flatMap(([name, r]) =>
      (['gateway', 'off', 'strict', 'bare'] as const)
        .filter((t) => r[t]?.tier)
        .map((t) => ({ name, t, s: r[t]!, c: r[t]!.tier! })),
    );
    if (tierRows.length) {
      const n = (x: number | undefined, d = 0) => (x === undefined ? '-' : x.toFixed(d));
      const label = {
        gateway: 'gateway',
        off: twinBuild ? 'twin' : 'billing off',
        strict: 'gateway, breaker 10%',
        bare: 'bare',
      };
      console.log(
        `\nShared tier per request served (gateway targets; Redis from INFO cpu / commandstats, PostgreSQL from its server processes' CPU in /proc; medians of the rounds). Redis and PostgreSQL also serve anything else using them during a run, so on a shared machine these are upper bounds.\n`,
      );
      console.log(
        'scenario | target | gateway CPU µs/req | Redis CPU µs/req | Redis commands/req (with those scripts call) | Redis scripts: calls/req, µs/req | PostgreSQL CPU µs/req | journals/req | PostgreSQL CPU µs/journal | Redis commands/req, most called',
      );
      console.log('---|---|---|---|---|---|---|---|---|---');
      for (const { name, t, s: x, c } of tierRows)
        console.log(
          `${name} | ${label[t]} | ${n(x.cpuUs)} | ${n(c.redisUs)} | ${n(c.redisCmds, 2)} | ${n(c.redisScriptCalls, 2)}, ${n(c.redisScriptUs)} | ${n(c.pgUs)} | ${n(c.journalsPerReq, 2)} | ${n(c.pgUsPerJournal)} | ${Object.entries(
            c.redisPerCmd,
          )
            .sort((a, b) => b[1] - a[1])
            .slice(0, 5)
            .map(([k, v]) => `${k} ${v.toFixed(2)}`)
            .join(', ')}`,
        );
    }
    if (only) return; // a partial run (--only) prints its tables and no summary
    const J = results.json!;
    const S = results.stream!;
    const R = results.rate!;
    const F = results.fallback!;
    const FF = results['fallback-fast']!;
    console.log(
      `\nCPU per request, JSON: gateway ${J.gateway!.cpuUs} µs vs raw proxy ${J.raw!.cpuUs} µs${J.off ? ` (billing off ${J.off.cpuUs} µs)` : ''}; stream: gateway ${S.gateway!.cpuUs} µs vs raw ${S.raw!.cpuUs} µs`,
    );
    console.log(
      `at ${RATE} rps with a 50 ms upstream: gateway adds p50 ${(R.gateway!.p50 - R.direct!.p50).toFixed(1)} ms / p99 ${(R.gateway!.p99 - R.direct!.p99).toFixed(1)} ms over direct; with 20% first-channel failures p99 +${(F.gateway!.p99 - R.direct!.p99).toFixed(1)} ms (+${(F.strict!.p99 - R.direct!.p99).toFixed(1)} ms when the channel's breaker opens at 10%; +${(FF.gateway!.p99 - R.direct!.p99).toFixed(1)} ms when the failures come at once instead of after the 50 ms)`,
    );
    if (production)
      console.log(
        `journals written: ${journals} in ${billedSeconds.toFixed(1)} s of billed load = ${(journals / billedSeconds).toFixed(0)} journals/s; gateway RSS ${rss} MiB`,
      );
    // json-near's refusals (a lease still held as its connection sends the next request) are its own figure.
    const errors = Object.entries(results).reduce(
      (s, [name, r]) => (name === 'json-near' ? s : s + (r.gateway?.errors ?? 0) + (r.off?.errors ?? 0)),
      0,
    );
    console.log(
      JSON.stringify({
        json_ratio: +(J.gateway!.rps / J.raw!.rps).toFixed(3),
        stream_ratio: +(S.gateway!.rps / S.raw!.rps).toFixed(3),
        added_p50_ms: +(R.gateway!.p50 - R.direct!.p50).toFixed(1),
        added_p99_ms: +(R.gateway!.p99 - R.direct!.p99).toFixed(1),
        fallback_added_p99_ms: +(F.gateway!.p99 - R.direct!.p99).toFixed(1),
        fallback_breaker_10pct_added_p99_ms: +(F.strict!.p99 - R.direct!.p99).toFixed(1),
        fallback_fast_fail_added_p99_ms: +(FF.gateway!.p99 - R.direct!.p99).toFixed(1),
        rss_mb: rss,
        json_rps: Math.round(J.gateway!.rps),
        json_cpu_us_per_req: J.gateway!.cpuUs,
        raw_cpu_us_per_req: J.raw!.cpuUs,
        stream_cpu_us_per_req: S.gateway!.cpuUs,
        json_ratio_vs_direct: +(J.gateway!.rps / J.direct!.rps).toFixed(3),
        ...(J.off
          ? {
              billing_off_json_rps: Math.round(J.off.rps),
              billing_added_p50_ms: J.gateway!.p50 - J.off.p50,
              billing_added_p99_ms: J.gateway!.p99 - J.off.p99,
              // The same at the fixed rate (not saturated): what billing adds to a request's latency.
              ...(R.off
                ? {
                    rate_billing_added_p50_ms: +(R.gateway!.p50 - R.off.p50).toFixed(1),
                    rate_billing_added_p99_ms: +(R.gateway!.p99 - R.off.p99).toFixed(1),
                  }
                : {}),
              journals_per_s: Math.round(journals / billedSeconds),
            }
          : {}),
        ...(J.gateway!.tier
          ? {
              json_redis_cpu_us_per_req: Math.round(J.gateway!.tier.redisUs),
              json_redis_cmds_per_req: +J.gateway!.tier.redisCmds.toFixed(2),
              json_redis_script_us_per_req: Math.round(J.gateway!.tier.redisScriptUs),
              ...(J.gateway!.tier.pgUs !== undefined
                ? { json_pg_cpu_us_per_req: Math.round(J.gateway!.tier.pgUs) }
                : {}),
              ...(J.gateway!.tier.pgUsPerJournal !== undefined
                ? { json_pg_cpu_us_per_journal: Math.round(J.gateway!.tier.pgUsPerJournal) }
                : {}),
            }
          : {}),
        ...(results['json-many']?.gateway?.tier
          ? {
              many_keys: KEYS,
              many_json_rps: Math.round(results['json-many'].gateway.rps),
              many_redis_cpu_us_per_req: Math.round(results['json-many'].gateway.tier.redisUs),
            }
          : {}),
        ...(results['json-near']?.gateway?.tier
          ? {
              near_json_rps: Math.round(results['json-near'].gateway.rps),
              near_redis_cpu_us_per_req: Math.round(results['json-near'].gateway.tier.redisUs),
              near_rejected: results['json-near'].gateway.errors + (results['json-near'].off?.errors ?? 0),
            }
          : {}),
        workers: production ? WORKERS : 1,
        gateway_errors: errors,
        mode,
      }),
    );
  } finally {
    await counter?.end();
    redisInfo?.disconnect();
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(
      children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.on('exit', r)))),
    );
    if (dbName && databaseUrl) {
      const c = new pg.Client({ connectionString: databaseUrl });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
      await c.end();
    }
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  for (const c of children) c.kill('SIGKILL');
  process.exit(1);
});
