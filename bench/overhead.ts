/**
 * Gateway overhead: autocannon on loopback, straight to the fake upstream vs through the gateway, in the
 * same run, interleaved (direct, gateway, direct, gateway …) with medians, because a 2-core machine is
 * noisy. Each process (fake upstream, gateway) runs in its own child process; autocannon runs here.
 *
 *   node dist/bench/overhead.js [--duration S] [--rounds N] [--connections C] [--latency MS]
 *
 * Production mode (PostgreSQL + Redis) when DATABASE_URL / REDIS_URL point at servers (the bench creates
 * and drops its own database there), the embedded default otherwise. Prints a table, then one JSON line.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import pg from 'pg';
import { insertAlias, insertApp, insertChannel, insertKey } from '../src/config/repo.js';
import { randomId } from '../src/core/ids.js';
import { openDatabase } from '../src/store/db.js';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const DURATION = arg('duration', 5);
const ROUNDS = arg('rounds', 3);
const CONNECTIONS = arg('connections', 50);
const LATENCY = arg('latency', 0);

const children: ChildProcess[] = [];
function run(args: string[], env: NodeJS.ProcessEnv, ready: RegExp): Promise<RegExpExecArray> {
  const p = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
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
        resolve(m);
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
}

async function cannon(url: string, headers: Record<string, string>, body: string): Promise<Sample> {
  const r = await autocannon({ url, method: 'POST', headers, body, connections: CONNECTIONS, duration: DURATION });
  return { rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors + r.non2xx + r.timeouts };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  const databaseUrl = process.env.DATABASE_URL;
  const redisUrl = process.env.REDIS_URL;
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
  try {
    const m = await run(['dist/fakes/cli.js', '--openai-port', '0', '--anthropic-port', '0'], {}, /"openai":"(http:\/\/[^"]+)"/);
    const upstream = m[1]!;
    const dbh = await openDatabase({ databaseUrl: dbUrl, dataDir: dataDir ?? 'memory://' });
    await insertChannel(dbh.db, { code: 'bench', provider: 'openai', baseUrl: upstream + '/v1', credential: 'bench' });
    await insertAlias(dbh.db, { name: 'bench', tiers: [[{ channel: 'bench', model: 'gpt-bench' }]] });
    const app = await insertApp(dbh.db, 'bench');
    const { sk } = await insertKey(dbh.db, app);
    // A second key whose every request passes quota admission (limits high enough never to bind).
    const quotaKey = await insertKey(dbh.db, app);
    await dbh.db
      .insertInto('quota')
      .values({ scope: 'key', scope_id: quotaKey.id, max_concurrency: 100_000, qps: 1_000_000, qps_burst: 1_000_000, tokens_per_minute: 1e12 })
      .execute();
    // A price, so every served request is booked: the gateway below bills (the default), a second one
    // with ANIMA_BILLING=off measures what billing costs.
    await dbh.db.insertInto('price').values({ alias: 'bench', sale_input_per_mtok: 2_000_000, sale_output_per_mtok: 4_000_000, cost_input_per_mtok: 1_000_000, cost_output_per_mtok: 2_000_000 }).execute();
    const journalCount = async () => {
      const h = await openDatabase({ databaseUrl: dbUrl, dataDir: dataDir ?? 'memory://' });
      try {
        const r = await h.db.selectFrom('ledger_journal').select((eb) => eb.fn.countAll<string>().as('n')).where('kind', '=', 'sale').executeTakeFirstOrThrow();
        return Number(r.n);
      } finally {
        await h.close();
      }
    };
    await dbh.close();
    const gatewayEnv = (extra: NodeJS.ProcessEnv) => ({
      ANIMA_PORT: '0',
      ANIMA_LOG_LEVEL: 'info',
      ...(dbUrl ? { DATABASE_URL: dbUrl } : { DATABASE_URL: '', ANIMA_DATA_DIR: dataDir }),
      ...(redisUrl ? { REDIS_URL: redisUrl, ANIMA_REDIS_PREFIX: `anima-bench:${randomId(6)}:` } : { REDIS_URL: '' }),
      ...extra,
    });
    const g = await run(['dist/src/app/cli.js', 'serve'], gatewayEnv({}), /listening on (http:\/\/[\d.:]+)/);
    const gateway = g[1]!;
    // PGlite is one process's database: the billing-off comparison needs a shared one.
    const off = dbUrl ? (await run(['dist/src/app/cli.js', 'serve'], gatewayEnv({ ANIMA_BILLING: 'off' }), /listening on (http:\/\/[\d.:]+)/))[1]! : null;
    let billedSeconds = 0;
    const journalsBefore = dbUrl ? await journalCount() : 0;
    const rp = await run(['dist/bench/raw-proxy.js', upstream, '0'], {}, /listening on (http:\/\/[\d.:]+)/);
    const raw = rp[1]!;
    const fault: Record<string, string> = LATENCY ? { 'x-fake-fault': JSON.stringify({ latencyMs: LATENCY }) } : {};
    const scenarios = [
      { name: 'json', body: { model: 'gpt-bench', messages: [{ role: 'user', content: 'Say something short about gateways.' }] } },
      { name: 'stream', body: { model: 'gpt-bench', stream: true, messages: [{ role: 'user', content: 'Stream twenty chunks.' }] } },
    ];
    const rows: Array<{ scenario: string; direct: Sample; raw: Sample; gateway: Sample; quota: Sample; off: Sample | null }> = [];
    for (const sc of scenarios) {
      const streamFault: Record<string, string> = sc.name === 'stream' ? { 'x-fake-fault': JSON.stringify({ chunks: 20, ...(LATENCY ? { latencyMs: LATENCY } : {}) }) } : fault;
      const d: Sample[] = [];
      const rws: Sample[] = [];
      const gws: Sample[] = [];
      const qws: Sample[] = [];
      const ows: Sample[] = [];
      const upHeaders = { 'content-type': 'application/json', authorization: 'Bearer bench', ...streamFault };
      // warm both paths (JIT, pools) before measuring
      await cannon(upstream + '/v1/chat/completions', upHeaders, JSON.stringify(sc.body));
      await cannon(raw + '/v1/chat/completions', upHeaders, JSON.stringify(sc.body));
      const w0 = performance.now();
      await cannon(gateway + '/v1/chat/completions', { 'content-type': 'application/json', authorization: `Bearer ${sk}`, ...streamFault }, JSON.stringify({ ...sc.body, model: 'bench' }));
      billedSeconds += (performance.now() - w0) / 1000;
      if (off) await cannon(off + '/v1/chat/completions', { 'content-type': 'application/json', authorization: `Bearer ${sk}`, ...streamFault }, JSON.stringify({ ...sc.body, model: 'bench' }));
      for (let i = 0; i < ROUNDS; i++) {
        d.push(await cannon(upstream + '/v1/chat/completions', upHeaders, JSON.stringify(sc.body)));
        rws.push(await cannon(raw + '/v1/chat/completions', upHeaders, JSON.stringify(sc.body)));
        const t0 = performance.now();
        gws.push(await cannon(gateway + '/v1/chat/completions', { 'content-type': 'application/json', authorization: `Bearer ${sk}`, ...streamFault }, JSON.stringify({ ...sc.body, model: 'bench' })));
        qws.push(await cannon(gateway + '/v1/chat/completions', { 'content-type': 'application/json', authorization: `Bearer ${quotaKey.sk}`, ...streamFault }, JSON.stringify({ ...sc.body, model: 'bench' })));
        billedSeconds += (performance.now() - t0) / 1000;
        if (off) ows.push(await cannon(off + '/v1/chat/completions', { 'content-type': 'application/json', authorization: `Bearer ${sk}`, ...streamFault }, JSON.stringify({ ...sc.body, model: 'bench' })));
      }
      const med = (xs: Sample[]): Sample => ({ rps: median(xs.map((x) => x.rps)), p50: median(xs.map((x) => x.p50)), p99: median(xs.map((x) => x.p99)), errors: xs.reduce((a, x) => a + x.errors, 0) });
      rows.push({ scenario: sc.name, direct: med(d), raw: med(rws), gateway: med(gws), quota: med(qws), off: off ? med(ows) : null });
    }
    // Journals the writer committed for the billed runs (it finishes within a second or two of the load).
    let journals = 0;
    if (dbUrl) {
      let last = -1;
      for (let i = 0; i < 50; i++) {
        journals = (await journalCount()) - journalsBefore;
        if (journals === last) break;
        last = journals;
        await new Promise((r) => setTimeout(r, 300));
      }
    }
    const mode = `${dbUrl ? 'PostgreSQL' : 'PGlite'} + ${redisUrl ? 'Redis' : 'in-process'}`;
    console.log(`\nAnima overhead (${mode}; ${CONNECTIONS} connections, ${DURATION}s x ${ROUNDS} rounds interleaved, medians; upstream latency ${LATENCY} ms)\n`);
    console.log('scenario | direct rps | raw proxy rps | gateway rps | gateway/direct | gateway/raw proxy | direct p50/p99 ms | raw p50/p99 ms | gateway p50/p99 ms | added over direct p50/p99 ms | errors d/r/g');
    console.log('---|---|---|---|---|---|---|---|---|---|---');
    for (const r of rows) {
      console.log(
        `${r.scenario} | ${r.direct.rps.toFixed(0)} | ${r.raw.rps.toFixed(0)} | ${r.gateway.rps.toFixed(0)} | ${(r.gateway.rps / r.direct.rps).toFixed(3)} | ${(r.gateway.rps / r.raw.rps).toFixed(3)} | ${r.direct.p50}/${r.direct.p99} | ${r.raw.p50}/${r.raw.p99} | ${r.gateway.p50}/${r.gateway.p99} | ${r.gateway.p50 - r.direct.p50}/${r.gateway.p99 - r.direct.p99} | ${r.direct.errors}/${r.raw.errors}/${r.gateway.errors}`,
      );
    }
    console.log('\nscenario | gateway rps | gateway + quota admission rps | gateway p50/p99 ms | + quota p50/p99 ms | quota added p50/p99 ms');
    console.log('---|---|---|---|---|---');
    for (const r of rows) {
      console.log(
        `${r.scenario} | ${r.gateway.rps.toFixed(0)} | ${r.quota.rps.toFixed(0)} | ${r.gateway.p50}/${r.gateway.p99} | ${r.quota.p50}/${r.quota.p99} | ${r.quota.p50 - r.gateway.p50}/${r.quota.p99 - r.gateway.p99}`,
      );
    }
    if (off) {
      console.log('\nscenario | billing off rps | billing on rps | off p50/p99 ms | on p50/p99 ms | billing added p50/p99 ms');
      console.log('---|---|---|---|---|---');
      for (const r of rows) {
        console.log(`${r.scenario} | ${r.off!.rps.toFixed(0)} | ${r.gateway.rps.toFixed(0)} | ${r.off!.p50}/${r.off!.p99} | ${r.gateway.p50}/${r.gateway.p99} | ${r.gateway.p50 - r.off!.p50}/${r.gateway.p99 - r.off!.p99}`);
      }
      console.log(`\njournals written: ${journals} in ${billedSeconds.toFixed(1)} s of billed load = ${(journals / billedSeconds).toFixed(0)} journals/s (4 entries each)`);
    }
    const json = rows.find((r) => r.scenario === 'json')!;
    const stream = rows.find((r) => r.scenario === 'stream')!;
    console.log(
      JSON.stringify({
        json_ratio_vs_direct: +(json.gateway.rps / json.direct.rps).toFixed(3),
        stream_ratio_vs_direct: +(stream.gateway.rps / stream.direct.rps).toFixed(3),
        json_ratio_vs_raw_proxy: +(json.gateway.rps / json.raw.rps).toFixed(3),
        stream_ratio_vs_raw_proxy: +(stream.gateway.rps / stream.raw.rps).toFixed(3),
        added_p50_ms: json.gateway.p50 - json.direct.p50,
        added_p99_ms: json.gateway.p99 - json.direct.p99,
        stream_added_p50_ms: stream.gateway.p50 - stream.direct.p50,
        stream_added_p99_ms: stream.gateway.p99 - stream.direct.p99,
        quota_json_rps: Math.round(json.quota.rps),
        quota_added_p50_ms: json.quota.p50 - json.gateway.p50,
        quota_added_p99_ms: json.quota.p99 - json.gateway.p99,
        gateway_errors: json.gateway.errors + stream.gateway.errors + json.quota.errors + stream.quota.errors + (json.off?.errors ?? 0) + (stream.off?.errors ?? 0),
        ...(json.off
          ? {
              billing_off_json_rps: Math.round(json.off.rps),
              billing_added_p50_ms: json.gateway.p50 - json.off.p50,
              billing_added_p99_ms: json.gateway.p99 - json.off.p99,
              stream_billing_added_p50_ms: stream.gateway.p50 - stream.off!.p50,
              journals_per_s: Math.round(journals / billedSeconds),
            }
          : {}),
        mode,
      }),
    );
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.on('exit', r)))));
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
