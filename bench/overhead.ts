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
    await dbh.close();
    const g = await run(
      ['dist/src/app/cli.js', 'serve'],
      {
        ANIMA_PORT: '0',
        ANIMA_LOG_LEVEL: 'info',
        ...(dbUrl ? { DATABASE_URL: dbUrl } : { DATABASE_URL: '', ANIMA_DATA_DIR: dataDir }),
        ...(redisUrl ? { REDIS_URL: redisUrl, ANIMA_REDIS_PREFIX: `anima-bench:${randomId(6)}:` } : { REDIS_URL: '' }),
      },
      /listening on (http:\/\/[\d.:]+)/,
    );
    const gateway = g[1]!;
    const rp = await run(['dist/bench/raw-proxy.js', upstream, '0'], {}, /listening on (http:\/\/[\d.:]+)/);
    const raw = rp[1]!;
    const fault: Record<string, string> = LATENCY ? { 'x-fake-fault': JSON.stringify({ latencyMs: LATENCY }) } : {};
    const scenarios = [
      { name: 'json', body: { model: 'gpt-bench', messages: [{ role: 'user', content: 'Say something short about gateways.' }] } },
      { name: 'stream', body: { model: 'gpt-bench', stream: true, messages: [{ role: 'user', content: 'Stream twenty chunks.' }] } },
    ];
    const rows: Array<{ scenario: string; direct: Sample; raw: Sample; gateway: Sample; quota: Sample }> = [];
    for (const sc of scenarios) {
      const streamFault: Record<string, string> = sc.name === 'stream' ? { 'x-fake-fault': JSON.stringify({ chunks: 20, ...(LATENCY ? { latencyMs: LATENCY } : {}) }) } : fault;
      const d: Sample[] = [];
      const rws: Sample[] = [];
      const gws: Sample[] = [];
      const qws: Sample[] = [];
      const upHeaders = { 'content-type': 'application/json', authorization: 'Bearer bench', ...streamFault };
      // warm both paths (JIT, pools) before measuring
      await cannon(upstream + '/v1/chat/completions', upHeaders, JSON.stringify(sc.body));
      await cannon(raw + '/v1/chat/completions', upHeaders, JSON.stringify(sc.body));
      await cannon(gateway + '/v1/chat/completions', { 'content-type': 'application/json', authorization: `Bearer ${sk}`, ...streamFault }, JSON.stringify({ ...sc.body, model: 'bench' }));
      for (let i = 0; i < ROUNDS; i++) {
        d.push(await cannon(upstream + '/v1/chat/completions', upHeaders, JSON.stringify(sc.body)));
        rws.push(await cannon(raw + '/v1/chat/completions', upHeaders, JSON.stringify(sc.body)));
        gws.push(await cannon(gateway + '/v1/chat/completions', { 'content-type': 'application/json', authorization: `Bearer ${sk}`, ...streamFault }, JSON.stringify({ ...sc.body, model: 'bench' })));
        qws.push(await cannon(gateway + '/v1/chat/completions', { 'content-type': 'application/json', authorization: `Bearer ${quotaKey.sk}`, ...streamFault }, JSON.stringify({ ...sc.body, model: 'bench' })));
      }
      const med = (xs: Sample[]): Sample => ({ rps: median(xs.map((x) => x.rps)), p50: median(xs.map((x) => x.p50)), p99: median(xs.map((x) => x.p99)), errors: xs.reduce((a, x) => a + x.errors, 0) });
      rows.push({ scenario: sc.name, direct: med(d), raw: med(rws), gateway: med(gws), quota: med(qws) });
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
        gateway_errors: json.gateway.errors + stream.gateway.errors + json.quota.errors + stream.quota.errors,
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
