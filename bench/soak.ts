/**
 * Soak: the gateway in production mode (PostgreSQL + Redis from DATABASE_URL / REDIS_URL, its own
 * database) under a steady fixed rate for a while, its RSS sampled every 30 s. Not part of CI.
 *
 *   npm run soak -- [--minutes 10] [--rate 300]
 *
 * Prints each sample, then one JSON line: {rss_start_mb, rss_end_mb, rss_max_mb, each half's floor (lowest RSS)
 * and mean, growth_pct (second half's floor over the first's), flat (growth <= 10%), requests, errors}.
 * "Flat" = the second half's floor at most 10% above the first half's, after a warm-up of the run's first
 * fifth (at least one sample), which the verdict leaves out: V8 grows its heap to the working size over
 * the first minutes at a fixed rate (two 10-minute runs at 1,000 rps: 250-270 MiB in the first minute,
 * 285-325 from the third on), and a floor taken there measured that growth, not a leak.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { insertAlias, insertApp, insertChannel, insertKey } from '../src/config/repo.js';
import { randomId } from '../src/core/ids.js';
import { openDatabase } from '../src/store/db.js';
import { setSecretKey } from '../src/config/secrets.js';
import { fixedRate } from './rate.js';

const arg = (n: string, d: number) =>
  process.argv.includes(`--${n}`) ? Number(process.argv[process.argv.indexOf(`--${n}`) + 1]) : d;
const MINUTES = arg('minutes', 10);
const RATE = arg('rate', 300);
const children: ChildProcess[] = [];
const start = (args: string[], env: NodeJS.ProcessEnv, re: RegExp) =>
  new Promise<{ url: string; pid: number }>((resolve, reject) => {
    const p = spawn(process.execPath, args, {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(p);
    let out = '';
    p.stdout!.on('data', (d: Buffer) => {
      if (out.length < 10_000) out += d.toString();
      const m = re.exec(out);
      if (m) resolve({ url: m[1]!, pid: p.pid! });
    });
    p.stderr!.resume();
    p.on('exit', (c) => reject(new Error(`${args[0]} exited ${c}: ${out}`)));
  });
const rss = (pid: number) =>
  Math.round(Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024);

async function main(): Promise<void> {
  const base = process.env.DATABASE_URL;
  const redis = process.env.REDIS_URL;
  if (!base || !redis) throw new Error('soak needs DATABASE_URL and REDIS_URL');
  const name = 'anima_soak_' + randomId(8).toLowerCase();
  const c = new pg.Client({ connectionString: base });
  await c.connect();
  await c.query(`CREATE DATABASE ${name}`);
  await c.end();
  const u = new URL(base);
  u.pathname = '/' + name;
  try {
    const up = (
      await start(
        ['dist/fakes/cli.js', '--openai-port', '0', '--anthropic-port', '0'],
        {},
        /"openai":"(http:\/\/[^"]+)"/,
      )
    ).url;
    // Production mode refuses to start without a key; the channel is sealed with it, as in production.
    const secretKey = process.env.ANIMA_SECRET_KEY || 'anima-soak-' + randomId(24);
    setSecretKey(secretKey);
    const dbh = await openDatabase({ databaseUrl: u.toString(), dataDir: 'memory://' });
    await insertChannel(dbh.db, { code: 'soak', provider: 'openai', baseUrl: up + '/v1', credential: 'k' });
    await insertAlias(dbh.db, { name: 'soak', tiers: [[{ channel: 'soak', model: 'm' }]] });
    await dbh.db
      .insertInto('price')
      .values({
        alias: 'soak',
        sale_input_per_mtok: 2_000_000,
        sale_output_per_mtok: 4_000_000,
        cost_input_per_mtok: 1_000_000,
        cost_output_per_mtok: 2_000_000,
      })
      .execute();
    const key = await insertKey(dbh.db, await insertApp(dbh.db, 'soak'));
    await dbh.db
      .insertInto('quota')
      .values({
        scope: 'key',
        scope_id: key.id,
        max_concurrency: 100_000,
        qps: 1_000_000,
        qps_burst: 1_000_000,
      })
      .execute();
    await dbh.close();
    await fetch(up + '/_fake/fault', { method: 'POST', body: JSON.stringify({ latencyMs: 20 }) });
    const gw = await start(
      ['dist/src/app/cli.js', 'serve'],
      {
        ANIMA_PORT: '0',
        DATABASE_URL: u.toString(),
        REDIS_URL: redis,
        ANIMA_SECRET_KEY: secretKey,
        ANIMA_OUTBOUND_ALLOW: '127.0.0.0/8,::1', // the fake upstreams listen on loopback
        ANIMA_REDIS_PREFIX: `anima-soak:${randomId(6)}:`,
      },
      /listening on (http:\/\/[\d.:]+)/,
    );
    const body = JSON.stringify({ model: 'soak', messages: [{ role: 'user', content: 'soak' }] });
    const h = { 'content-type': 'application/json', authorization: `Bearer ${key.sk}` };
    const samples: number[] = [];
    let requests = 0;
    let errors = 0;
    const end = Date.now() + MINUTES * 60_000;
    while (Date.now() < end) {
      const r = await fixedRate(
        gw.url + '/v1/chat/completions',
        h,
        body,
        RATE,
        Math.min(30, Math.max(1, (end - Date.now()) / 1000)),
      );
      requests += Math.round(r.rps * 30);
      errors += r.errors;
      samples.push(rss(gw.pid));
      console.log(
        `t+${samples.length * 30}s rss ${samples.at(-1)} MiB, ${r.rps.toFixed(0)} rps, p50 ${r.p50} / p99 ${r.p99} ms, errors ${r.errors}`,
      );
    }
    const warm = Math.max(1, Math.floor(samples.length / 5));
    const first = samples[Math.min(warm, samples.length - 1)]!; // after warm-up
    const last = samples.at(-1)!;
    // Single samples ride the GC's sawtooth and transient heap growth (here ±10–25% within minutes, back
    // within minutes), so the verdict compares each half's floor — the lowest RSS sampled, memory still
    // held after collections — between the first and second halves of the run (warm-up left out).
    // A leak raises the floor; a transient excursion doesn't. The halves' means are printed beside it.
    const steady = samples.length > warm + 1 ? samples.slice(warm) : samples;
    const mid = Math.ceil(steady.length / 2);
    const halves = [steady.slice(0, mid), steady.slice(mid).length ? steady.slice(mid) : steady];
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    const [early, late] = halves.map((xs) => Math.min(...xs)) as [number, number];
    const growth = (100 * (late - early)) / early;
    console.log(
      JSON.stringify({
        warmup_s: warm * 30,
        rss_first_sample_mb: samples[0],
        rss_start_mb: first,
        rss_end_mb: last,
        rss_max_mb: Math.max(...samples),
        rss_first_half_floor_mb: early,
        rss_second_half_floor_mb: late,
        rss_first_half_mean_mb: Math.round(mean(halves[0]!)),
        rss_second_half_mean_mb: Math.round(mean(halves[1]!)),
        growth_pct: +growth.toFixed(1),
        flat: growth <= 10,
        requests,
        errors,
        minutes: MINUTES,
        rate: RATE,
      }),
    );
  } finally {
    for (const ch of children) ch.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 1000));
    const c2 = new pg.Client({ connectionString: base });
    await c2.connect();
    await c2.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await c2.end();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  for (const ch of children) ch.kill('SIGKILL');
  process.exit(1);
});
