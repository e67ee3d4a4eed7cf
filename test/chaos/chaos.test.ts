/**
 * Chaos suite: two gateway instances share PostgreSQL (through a cuttable TCP proxy) and their own
 * redis-server with an append-only file (appendfsync everysec: every write reaches the file before the
 * reply, so a kill -9 of Redis loses nothing — as billing needs in production; only a machine crash could
 * lose the last second). Each scenario runs a bounded load, injects a fault, heals it, and checks invariants,
 * printed as figures: requests sent, served, refused by code, journals posted, trial balance, leases
 * left after their TTL, tasks lost or duplicated. The last four must be zero.
 *
 *   npx vitest run test/chaos       (also part of `npm test`)
 */
import type { ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeOpenAI } from '../../fakes/index.js';
import type { FakeMediaUpstream } from '../../fakes/index.js';
import {
  TcpProxy,
  type TestDatabase,
  adminApi,
  createTestDatabase,
  freePort,
  spawnGateway,
  startTestGateway,
  testRedisPrefix,
  waitFor,
  testPool,
  startRedisServer,
} from '../helpers.js';

type TGateway = Awaited<ReturnType<typeof startTestGateway>>;
let tdb: TestDatabase;
let pgProxy: TcpProxy;
let redisPort = 0;
let redisDir = '';
let redis: ChildProcess | null = null;
let A: TGateway;
let B: TGateway;
let one: FakeMediaUpstream;
let two: FakeMediaUpstream;
let db: pg.Pool;
let sk: string;
let appId: string;
let prefix: string;
const admin = adminApi(() => A.url);
const LEASE_TTL = 2_000;

async function startRedis(): Promise<void> {
  redis = await startRedisServer(redisPort, [
    '--dir',
    redisDir,
    '--appendonly',
    'yes',
    '--appendfsync',
    'everysec',
    '--save',
    '',
  ]);
}
async function killRedis(): Promise<void> {
  const r = redis;
  redis = null;
  if (!r) return;
  r.kill('SIGKILL');
  await new Promise((res) =>
    r.exitCode !== null || r.signalCode !== null ? res(null) : r.once('exit', res),
  );
}

/** The first answer body seen for each refusal code (printed when a scenario goes wrong). */
const messages: Record<string, string> = {};

interface Figures {
  sent: number;
  served: number;
  refused: Record<string, number>;
  rids: string[];
}

/**
 * A steady load: `rps` requests per second for `ms`, spread over A and B, recording every outcome. The
 * figures so far are readable while it runs (`.figures`), so a scenario injects its fault on an event
 * (the load is flowing) rather than at a guessed time.
 */
function load(
  rps: number,
  ms: number,
  body: Record<string, unknown> = {},
  gateways: Array<() => string> = [() => A.url, () => B.url],
): Promise<Figures> & { figures: Figures } {
  const f: Figures = { sent: 0, served: 0, refused: {}, rids: [] };
  return Object.assign(run(f, rps, ms, body, gateways), { figures: f });
}

async function run(
  f: Figures,
  rps: number,
  ms: number,
  body: Record<string, unknown>,
  gateways: Array<() => string>,
): Promise<Figures> {
  const inflight: Array<Promise<void>> = [];
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    const due = Math.floor(((Date.now() - t0) / 1000) * rps);
    while (f.sent < due) {
      const url = gateways[f.sent % gateways.length]!();
      f.sent++;
      inflight.push(
        (async () => {
          try {
            const r = await fetch(url + '/v1/chat/completions', {
              method: 'POST',
              headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}` },
              body: JSON.stringify({
                model: 'main',
                messages: [{ role: 'user', content: 'chaos' }],
                ...body,
              }),
              signal: AbortSignal.timeout(15_000),
            });
            const text = await r.text();
            if (r.status === 200 && (text.includes('"usage"') || text.includes('[DONE]'))) {
              f.served++;
              f.rids.push(r.headers.get('x-request-id')!);
            } else {
              let code = String(r.status);
              try {
                code = (JSON.parse(text) as { error: { code: string } }).error.code;
              } catch {
                /* not JSON */
              }
              f.refused[code] = (f.refused[code] ?? 0) + 1;
              messages[code] ??= text.slice(0, 300);
            }
          } catch (e) {
            const code = (e as Error).name === 'TimeoutError' ? 'client_timeout' : 'connection_error';
            f.refused[code] = (f.refused[code] ?? 0) + 1;
          }
        })(),
      );
    }
    await new Promise((r) => setTimeout(r, 5)); // the load's pacing: a rate over real time
  }
  await Promise.all(inflight);
  return f;
}

/** Waits for every journal to be written, then checks and prints the invariants. */
async function invariants(name: string, f: Figures): Promise<void> {
  await waitFor(
    async () =>
      (await A.billing!.backend.backlog().catch(() => 1)) === 0 &&
      A.billing!.writer.spilledCount() === 0 &&
      B.billing!.writer.spilledCount() === 0,
    30_000,
    100,
  );
  await A.billing!.writer.flush();
  await B.billing!.writer.flush();
  const { rows } = await db.query<{ n: number; d: number }>(
    `SELECT count(*)::int AS n, count(DISTINCT request_id)::int AS d FROM ledger_journal WHERE request_id = ANY($1)`,
    [f.rids],
  );
  const tb = await admin('GET', '/billing/trial-balance');
  // Leases: every concurrency lease of the app's scopes is gone once their TTL has passed. Read until none
  // is left (at most the TTL and a margin): a lease renewed forever, or a waiter never answered, keeps
  // the count above zero and fails below with the figure.
  const r = new Redis({ port: redisPort, host: '127.0.0.1', lazyConnect: true });
  await r.connect();
  const leases = async (): Promise<number> => {
    let n = 0;
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      for (const k of keys) {
        // Concurrency leases ({q:<tag>}:c:<scope>:<id>, scored by expiry) and wait queues ({q:<tag>}:w:<key>).
        if (k.includes('}:c:')) n += await r.zcount(k, `(${Date.now()}`, '+inf');
        else if (k.includes('}:w:') && (await r.type(k)) === 'zset') n += await r.zcard(k);
      }
    } while (cursor !== '0');
    return n;
  };
  let leaked = 0;
  await waitFor(async () => (leaked = await leases()) === 0, LEASE_TTL + 5_000, 200).catch(() => {});
  r.disconnect();
  const imbalance = BigInt(tb.debits_micros) - BigInt(tb.credits_micros);
  console.log(
    `[chaos] ${name}: sent ${f.sent}, served ${f.served}, refused ${JSON.stringify(f.refused)}, journals ${rows[0]!.n} for ${f.rids.length} served, trial-balance imbalance ${imbalance}, leases left after TTL ${leaked}`,
  );
  expect(rows[0]!.n).toBe(f.served); // every served answer billed, none twice
  expect(rows[0]!.d).toBe(f.served);
  expect(imbalance).toBe(0n);
  expect(tb.mismatches).toEqual([]);
  expect(leaked).toBe(0);
}

beforeAll(async () => {
  tdb = await createTestDatabase();
  pgProxy = await new TcpProxy({ host: '127.0.0.1', port: 5432 }).start();
  redisPort = await freePort();
  redisDir = mkdtempSync(join(tmpdir(), 'anima-chaos-redis-'));
  await startRedis();
  prefix = testRedisPrefix();
  [one, two] = await Promise.all([
    startFakeOpenAI({ name: 'chaos-one' }),
    startFakeOpenAI({ name: 'chaos-two' }),
  ]);
  const u = new URL(tdb.url);
  u.port = String(pgProxy.port);
  const s = {
    databaseUrl: u.toString(),
    redisUrl: `redis://127.0.0.1:${redisPort}`,
    redisPrefix: prefix,
    leaseTtlMs: LEASE_TTL,
    instanceCount: 2,
    billingStaleMs: 2_000,
  };
  A = await startTestGateway(s);
  B = await startTestGateway(s);
  db = testPool(tdb.url, 2);
  await admin('POST', '/channels', {
    code: 'one',
    provider: 'openai',
    base_url: one.url + '/v1',
    credential: 'k',
    settings: {
      breaker: { minCalls: 5, failureRate: 0.5, openMs: 500, windowMs: 5_000 },
      timeouts: { firstByteMs: 1_000, idleMs: 1_000, totalMs: 5_000 },
    },
  });
  await admin('POST', '/channels', {
    code: 'two',
    provider: 'openai',
    base_url: two.url + '/v1',
    credential: 'k',
    settings: { timeouts: { idleMs: 2_000 } },
  });
  await admin('POST', '/aliases', {
    name: 'main',
    chain: [{ targets: [{ channel: 'one', model: 'm' }] }, { targets: [{ channel: 'two', model: 'm' }] }],
  });
  await admin('POST', '/prices', {
    alias: 'main',
    sale_input_per_mtok: 2_000_000,
    sale_output_per_mtok: 4_000_000,
    cost_input_per_mtok: 1_000_000,
    cost_output_per_mtok: 2_000_000,
  });
  appId = (await admin('POST', '/apps', { name: 'chaos' })).id;
  const k = await admin('POST', `/apps/${appId}/keys`, { name: 'chaos' });
  await admin('POST', '/quotas', {
    scope: 'app',
    scope_id: appId,
    max_concurrency: 200,
    qps: 2_000,
    qps_burst: 200,
  });
  sk = k.sk;
  await waitFor(
    () =>
      [A, B].every(
        (g) => g.config.quota('app', appId) && g.config.price('main', null) && g.config.keyById(k.key.id),
      ),
    5_000,
    10,
  );
}, 60_000);

afterAll(async () => {
  await A?.close();
  await B?.close();
  await db?.end();
  await one?.close();
  await two?.close();
  await pgProxy?.close();
  await killRedis();
  if (redisDir) rmSync(redisDir, { recursive: true, force: true });
  await tdb?.drop();
});

describe('chaos', () => {
  it('(1) Redis killed mid-load and restarted: everything served, billed once, no lease left', async () => {
    const run = load(100, 6_000);
    await waitFor(() => run.figures.served >= 100, 10_000, 10); // the load is flowing
    await killRedis();
    // The outage's length is the scenario (2 s of load without Redis), so it is real time.
    await new Promise((r) => setTimeout(r, 2_000));
    await startRedis();
    const f = await run;
    await waitFor(
      () =>
        (A.coord as { isReady?: () => boolean }).isReady?.() &&
        (B.coord as { isReady?: () => boolean }).isReady?.(),
      10_000,
      50,
    );
    console.log(
      `[chaos] redis killed: ${JSON.stringify({ sent: f.sent, served: f.served, refused: f.refused, messages })}`,
    );
    expect(f.served).toBeGreaterThan(f.sent * 0.9);
    await invariants('redis killed', f);
  }, 60_000);

  it('(2) PostgreSQL unreachable mid-load and back: everything served, journals drain, nothing lost', async () => {
    const run = load(100, 6_000);
    await waitFor(() => run.figures.served >= 100, 10_000, 10); // the load is flowing
    pgProxy.down();
    // The outage's length is the scenario (3 s of load without the database), so it is real time.
    await new Promise((r) => setTimeout(r, 3_000));
    pgProxy.up();
    const f = await run;
    expect(f.served).toBe(f.sent);
    await invariants('database down', f);
  }, 60_000);

  it('(3) both down: 503 service_unavailable meanwhile, served before and after, nothing unbilled', async () => {
    const run = load(100, 7_000);
    await waitFor(() => run.figures.served >= 100, 10_000, 10); // the load is flowing
    pgProxy.down();
    await killRedis();
    // The outage's length is the scenario (3 s with both down), so it is real time.
    await new Promise((r) => setTimeout(r, 3_000));
    pgProxy.up();
    await startRedis();
    const f = await run;
    expect(f.refused.service_unavailable ?? 0).toBeGreaterThan(0);
    expect(f.served).toBeGreaterThan(0);
    await invariants('both down', f);
  }, 60_000);

  it('(5) the upstream flaps (errors, hangs, resets): breakers open and close, every answer is a clean one', async () => {
    const faults = [{ status: 500 }, { hang: true }, { reset: true }, null, { status: 503 }, null];
    let i = 0;
    const flap = setInterval(() => one.setFault(faults[i++ % faults.length]!), 400);
    const f = await load(80, 5_000);
    clearInterval(flap);
    one.setFault(null);
    const scrape = await (await fetch(A.url + '/actuator/prometheus')).text();
    const opened = [
      ...scrape.matchAll(/anima_breaker_transitions_total\{[^}]*channel="one"[^}]*to="open"[^}]*\} (\d+)/g),
    ].reduce((s, m) => s + Number(m[1]), 0);
    console.log(`[chaos] flapping upstream: breaker of 'one' opened ${opened} times on A`);
    expect(opened).toBeGreaterThan(0);
    // The second channel is healthy: fallback serves everything.
    expect(f.served).toBe(f.sent);
    await invariants('upstream flaps', f);
  }, 60_000);

  it('(6) a slow-loris client is cut off; a client that never reads its stream is dropped and its lease returns', async () => {
    const C = await startTestGateway({
      databaseUrl: (() => {
        const u = new URL(tdb.url);
        u.port = String(pgProxy.port);
        return u.toString();
      })(),
      redisUrl: `redis://127.0.0.1:${redisPort}`,
      redisPrefix: prefix,
      leaseTtlMs: LEASE_TTL,
      requestTimeoutMs: 1_500,
    });
    try {
      // Slow loris: headers trickle in one byte at a time.
      const port = Number(new URL(C.url).port);
      const closedAfter = await new Promise<number>((resolve) => {
        const t0 = Date.now();
        const s = connect(port, '127.0.0.1', () => {
          const head = `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${sk}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"model":`;
          let i = 0;
          const iv = setInterval(() => (i < head.length ? s.write(head[i++]!) : undefined), 100);
          s.on('close', () => {
            clearInterval(iv);
            resolve(Date.now() - t0);
          });
        });
        s.on('error', () => {});
      });
      console.log(`[chaos] slow-loris connection closed by the gateway after ${closedAfter} ms`);
      expect(closedAfter).toBeLessThan(10_000);
      // A client that never reads: a long stream into a socket nobody drains.
      two.setFault({ chunks: 60_000 });
      await admin('POST', '/circuits/one/open');
      await waitFor(() => C.breakers.state('one').state === 'forced_open', 3_000, 10);
      // A paused socket never reads the FIN, so the gateway's side tells: its request log line, written
      // when it gives the stream up.
      const t0 = Date.now();
      const s = connect(port, '127.0.0.1', () => {
        const b = JSON.stringify({
          model: 'main',
          stream: true,
          messages: [{ role: 'user', content: 'never read' }],
        });
        s.write(
          `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${sk}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(b)}\r\n\r\n${b}`,
        );
        s.pause(); // never read
      });
      s.on('error', () => {});
      await waitFor(
        () => C.logs.records().some((r) => r.msg === 'request' && r.stream === true && r.aborted === true),
        15_000,
        50,
      );
      const stuck = Date.now() - t0;
      s.destroy();
      console.log(`[chaos] never-reading client dropped after ${stuck} ms`);
      expect(stuck).toBeLessThan(15_000);
    } finally {
      two.setFault(null);
      await admin('POST', '/circuits/one/reset');
      await C.close();
    }
    await invariants('slow clients', { sent: 0, served: 0, refused: {}, rids: [] });
  }, 60_000);

  it('(7) 10,000 requests waiting in WAIT mode all complete; the queue and leases empty afterwards', async () => {
    const k = await admin('POST', `/apps/${appId}/keys`, {
      name: 'wait',
      queue_mode: 'WAIT',
      wait_timeout_ms: 150_000,
      max_queue: 20_000,
    });
    await admin('POST', '/quotas', { scope: 'key', scope_id: k.key.id, max_concurrency: 100 });
    // Two gateway processes of their own, so the 10,000 clients here don't share an event loop with them.
    const u = new URL(tdb.url);
    u.port = String(pgProxy.port);
    const env = {
      DATABASE_URL: u.toString(),
      REDIS_URL: `redis://127.0.0.1:${redisPort}`,
      ANIMA_REDIS_PREFIX: prefix,
      ANIMA_LEASE_TTL_MS: String(LEASE_TTL),
      ANIMA_INSTANCE_COUNT: '2',
    };
    const g1 = spawnGateway(env);
    const g2 = spawnGateway(env);
    const urls = await Promise.all([g1.url, g2.url]);
    one.setFault({ latencyMs: 20 });
    one.resetStats();
    const { Agent } = await import('undici');
    const agent = new Agent({
      connections: 6_000,
      pipelining: 1,
      bodyTimeout: 170_000,
      headersTimeout: 170_000,
      connect: { timeout: 30_000 },
    });
    const N = 10_000;
    const samples: string[] = [];
    const t0 = Date.now();
    let maxWaiting = 0;
    const gauge = setInterval(() => {
      maxWaiting = Math.max(maxWaiting, one.stats.requests ? 0 : 0);
    }, 1_000);
    try {
      const pending: Array<Promise<number>> = [];
      for (let i = 0; i < N; i++) {
        // Connections open in waves of 500 (a real fleet of clients doesn't arrive in one microsecond).
        if (i % 500 === 0 && i) await new Promise((r) => setTimeout(r, 50));
        pending.push(
          agent
            .request({
              origin: urls[i % 2]!,
              path: '/v1/chat/completions',
              method: 'POST',
              headers: { 'content-type': 'application/json', authorization: `Bearer ${k.sk}` },
              body: JSON.stringify({ model: 'main', messages: [{ role: 'user', content: 'wait' }] }),
            })
            .then(async (r) => {
              const t = await r.body.text();
              if (r.statusCode !== 200 && samples.length < 6)
                samples.push(`${r.statusCode} ${t.slice(0, 200)}`);
              return r.statusCode;
            })
            .catch((e: unknown) => {
              if (samples.length < 6) samples.push(String(e));
              return 0;
            }),
        );
      }
      const statuses = await Promise.all(pending);
      const counts = statuses.reduce<Record<number, number>>((m, s) => ((m[s] = (m[s] ?? 0) + 1), m), {});
      const scrape = await (await fetch(urls[0] + '/actuator/prometheus')).text();
      console.log(
        `[chaos] 10,000 WAIT requests in ${Date.now() - t0} ms: ${JSON.stringify(counts)}; upstream max in flight ${one.stats.maxInFlight} (limit 100); ${/anima_queue_wait_seconds_count\{[^}]*\} (\d+)/.exec(scrape)?.[1] ?? '?'} waits on one instance`,
      );
      if (samples.length) console.log('[chaos] 10k WAIT samples:', samples);
      expect(counts[200]).toBe(N);
      expect(one.stats.maxInFlight).toBeLessThanOrEqual(100);
    } finally {
      clearInterval(gauge);
      one.setFault(null);
      await agent.close();
      g1.child.kill('SIGTERM');
      g2.child.kill('SIGTERM');
      await Promise.all(
        [g1, g2].map(
          (g) => new Promise((r) => (g.child.exitCode !== null ? r(null) : g.child.once('exit', r))),
        ),
      );
    }
    await invariants('10k waiting', { sent: 0, served: 0, refused: {}, rids: [] });
  }, 180_000);
});

describe('chaos: a gateway process killed mid-stream', () => {
  it('(4) kill -9 one instance while it streams: the other serves on; every complete answer billed once; its leases return', async () => {
    const u = new URL(tdb.url);
    u.port = String(pgProxy.port);
    const { child, url: urlP } = spawnGateway({
      DATABASE_URL: u.toString(),
      REDIS_URL: `redis://127.0.0.1:${redisPort}`,
      ANIMA_REDIS_PREFIX: prefix,
      ANIMA_LEASE_TTL_MS: String(LEASE_TTL),
      ANIMA_BILLING_STALE_MS: '2000',
    });
    const url = await urlP;
    one.setFault({ chunks: 20, chunkDelayMs: 30 });
    const run = load(60, 5_000, { stream: true, stream_options: { include_usage: true } }, [
      () => A.url,
      () => url,
    ]);
    // Both instances serve, and streams are open on the upstream: the kill lands mid-stream.
    await waitFor(() => run.figures.served >= 30 && one.stats.inFlight >= 10, 10_000, 10);
    child.kill('SIGKILL');
    const f = await run;
    one.setFault(null);
    expect(f.refused.connection_error ?? 0).toBeGreaterThan(0); // the killed instance's streams broke
    expect(f.served).toBeGreaterThan(f.sent / 3);
    // The dead instance's settled records are taken over once idle for ANIMA_BILLING_STALE_MS.
    await invariants('instance killed mid-stream', f);
  }, 90_000);
});
