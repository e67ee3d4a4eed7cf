/**
 * Anima unchanged on a real Redis Cluster: three masters from the machine's redis-server on spare
 * loopback ports (`redis-cli --cluster create`), two gateway instances on it. Quotas (Lua on {q:<app>}),
 * breakers (Lua on {brk}) and invalidations (pub/sub) hold as on one Redis. Torn down afterwards.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TickPipeline } from '../../src/coord/tick-pipeline.js';
import type { FakeUpstream } from '../../fakes/common.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import { ADMIN_TOKEN, type TestDatabase, createTestDatabase, startTestGateway, waitFor } from '../helpers.js';

let tdb: TestDatabase;
let A: Awaited<ReturnType<typeof startTestGateway>>;
let B: Awaited<ReturnType<typeof startTestGateway>>;
let up: FakeUpstream;
let dir: string;
const nodes: ChildProcess[] = [];
const ports: number[] = [];

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const p = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return p;
}

async function admin(method: string, path: string, body?: unknown, ifMatch?: number) {
  const r = await fetch(`${A.url}/api/admin/v1${path}`, {
    method,
    headers: {
      authorization: `Bearer ${ADMIN_TOKEN}`,
      ...(body ? { 'content-type': 'application/json' } : {}),
      ...(ifMatch ? { 'if-match': `"${ifMatch}"` } : {}),
    },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const t = await r.text();
  if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${t}`);
  return t ? (JSON.parse(t) as any) : null;
}
const chat = (g: typeof A, sk: string, model = 'main') =>
  fetch(g.url + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}` },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }),
  });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'anima-cluster-'));
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    ports.push(port);
    const d = join(dir, String(port));
    spawnSync('mkdir', ['-p', d]);
    nodes.push(
      spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          join(d, 'nodes.conf'),
          '--dir',
          d,
          '--save',
          '',
          '--appendonly',
          'no',
        ],
        { stdio: 'ignore' },
      ),
    );
  }
  await waitFor(
    () =>
      ports.every(
        (p) =>
          spawnSync('redis-cli', ['-p', String(p), 'ping'], { encoding: 'utf8' }).stdout.trim() === 'PONG',
      ),
    10_000,
    100,
  );
  const create = spawnSync(
    'redis-cli',
    [
      '--cluster',
      'create',
      ...ports.map((p) => `127.0.0.1:${p}`),
      '--cluster-replicas',
      '0',
      '--cluster-yes',
    ],
    { encoding: 'utf8', timeout: 30_000 },
  );
  if (create.status !== 0) throw new Error('cluster create failed: ' + create.stdout + create.stderr);
  await waitFor(
    () =>
      ports.every((p) =>
        spawnSync('redis-cli', ['-p', String(p), 'cluster', 'info'], { encoding: 'utf8' }).stdout.includes(
          'cluster_state:ok',
        ),
      ),
    15_000,
    200,
  );

  tdb = await createTestDatabase();
  up = await startFakeOpenAI({ name: 'cl' });
  const s = {
    databaseUrl: tdb.url,
    redisClusterNodes: ports.map((p) => `127.0.0.1:${p}`),
    redisPrefix: 'anima-cl:',
  };
  A = await startTestGateway(s);
  B = await startTestGateway(s);
  await admin('POST', '/channels', {
    code: 'one',
    provider: 'openai',
    base_url: up.url + '/v1',
    credential: 'k',
    settings: { breaker: { minCalls: 2, openMs: 60_000 } },
  });
  await admin('POST', '/channels', {
    code: 'two',
    provider: 'openai',
    base_url: up.url + '/v1',
    credential: 'k',
  });
  await admin('POST', '/aliases', {
    name: 'main',
    chain: [{ targets: [{ channel: 'one', model: 'm' }] }, { targets: [{ channel: 'two', model: 'm' }] }],
  });
}, 90_000);

afterAll(async () => {
  await A?.close();
  await B?.close();
  for (const n of nodes) n.kill('SIGKILL');
  await up?.close();
  await tdb?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('on a three-master Redis Cluster', () => {
  it('several apps spread over slots: concurrency holds across two instances, WAIT completes everyone, no lease left', async () => {
    up.setFault({ latencyMs: 120 });
    up.resetStats();
    const results: number[] = [];
    const inflightMax: number[] = [];
    for (const name of ['alpha', 'beta', 'gamma']) {
      const app = await admin('POST', '/apps', { name });
      const k = await admin('POST', `/apps/${app.id}/keys`, {
        name,
        queue_mode: 'WAIT',
        wait_timeout_ms: 20_000,
      });
      await admin('POST', '/quotas', { scope: 'app', scope_id: app.id, max_concurrency: 2 });
      await waitFor(() => !!A.config.quota('app', app.id) && !!B.config.quota('app', app.id), 2_000, 5);
      up.resetStats();
      const st = await Promise.all(
        Array.from({ length: 12 }, (_, i) =>
          chat(i % 2 ? A : B, k.sk).then(async (r) => (await r.arrayBuffer(), r.status)),
        ),
      );
      results.push(...st);
      inflightMax.push(up.stats.maxInFlight);
    }
    up.setFault(null);
    console.log(
      `cluster: 36 requests over 3 apps, upstream max in flight per app ${inflightMax.join('/')} (limit 2)`,
    );
    expect(results.filter((s) => s !== 200)).toEqual([]);
    expect(Math.max(...inflightMax)).toBeLessThanOrEqual(2);
  }, 60_000);

  it('a breaker opened on A stops B within 1 s; the kill switch reaches B', async () => {
    const app = await admin('POST', '/apps', { name: 'br' });
    const k = await admin('POST', `/apps/${app.id}/keys`, { name: 'br' });
    await waitFor(async () => (await chat(B, k.sk)).status === 200, 2_000, 20);
    await admin('POST', '/circuits/one/open');
    const ms = await waitFor(
      async () => (await chat(B, k.sk)).headers.get('x-anima-channel') === 'two',
      1_000,
      5,
    );
    console.log(`cluster: breaker open reached B in ${ms} ms`);
    await admin('POST', '/kill-switch', { enabled: true });
    await waitFor(async () => (await chat(B, k.sk)).status === 503, 1_000, 5);
    await admin('POST', '/kill-switch', { enabled: false });
    await waitFor(async () => (await chat(B, k.sk)).status === 200, 1_000, 5);
  });

  it("a turn's script calls go as one execution per slot, each with its own result", async () => {
    const c = new Cluster(ports.map((port) => ({ host: '127.0.0.1', port })));
    const t = new TickPipeline(c as never);
    try {
      t.define('clIncr', `return redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]))`, 1);
      t.define('clBad', `redis.call('HSET', KEYS[1], 'f', '1'); return redis.call('INCR', KEYS[1])`, 1);
      await t.call('clIncr', ['{cl-a}warm', 1]); // the script is known to the node from here on
      // Script executions on each master (EVAL and EVALSHA).
      const stats = () =>
        Promise.all(
          c
            .nodes('master')
            .map(async (n) =>
              [...(await n.info('commandstats')).matchAll(/cmdstat_eval(?:sha)?:calls=(\d+)/g)].reduce(
                (a, m) => a + Number(m[1]),
                0,
              ),
            ),
        );
      await Promise.all(c.nodes('master').map((n) => n.config('RESETSTAT')));
      const res = await Promise.allSettled([
        t.call('clIncr', ['{cl-a}x', 2]),
        t.call('clIncr', ['{cl-b}x', 5]),
        t.call('clBad', ['{cl-a}h']),
        t.call('clIncr', ['{cl-a}x', 3]),
        t.call('clIncr', ['{cl-b}y', 7]),
      ]);
      expect(res.map((r) => (r.status === 'fulfilled' ? r.value : 'refused'))).toEqual([
        2,
        5,
        'refused',
        5,
        7,
      ]);
      // Two slots ({cl-a}, {cl-b}): two executions (an EVAL and its EVALSHA retry count as one each).
      const counts = await stats();
      expect(counts.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(4);
      expect(counts.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(2);
    } finally {
      t.close();
      c.disconnect();
    }
  });

  it("one busy postpaid key's billing spreads over the masters, and every request is journaled once", async () => {
    // Priced, so every request books a sale journal.
    await admin('POST', '/prices', {
      alias: 'main',
      cost_input_per_mtok: 1_000_000,
      cost_output_per_mtok: 2_000_000,
      sale_input_per_mtok: 2_000_000,
      sale_output_per_mtok: 4_000_000,
    });
    const app = await admin('POST', '/apps', { name: 'hot' });
    const k = await admin('POST', `/apps/${app.id}/keys`, { name: 'hot' });
    await waitFor(async () => (await chat(A, k.sk)).status === 200, 2_000, 20);
    const nodes = ports.map((port) => new Cluster([{ host: '127.0.0.1', port }]));
    const c = new Cluster(ports.map((port) => ({ host: '127.0.0.1', port })));
    const db = new pg.Client({ connectionString: tdb.url });
    await db.connect();
    try {
      await Promise.all(c.nodes('master').map((n) => n.config('RESETSTAT')));
      const ids: string[] = [];
      for (let round = 0; round < 4; round++) {
        const rs = await Promise.all(Array.from({ length: 10 }, (_, i) => chat(i % 2 ? A : B, k.sk)));
        for (const r of rs) {
          expect(r.status).toBe(200);
          await r.arrayBuffer();
          ids.push(r.headers.get('x-request-id')!);
        }
      }
      await waitFor(
        async () =>
          Number(
            (await db.query(`SELECT count(*) AS n FROM ledger_journal WHERE request_id = ANY($1)`, [ids]))
              .rows[0].n,
          ) === ids.length,
        15_000,
        50,
      );
      const xadds = await Promise.all(
        c
          .nodes('master')
          .map(async (n) => Number(/cmdstat_xadd:calls=(\d+)/.exec(await n.info('commandstats'))?.[1] ?? 0)),
      );
      console.log(`cluster: 40 requests of one key, stream appends per master ${xadds.join('/')}`);
      expect(xadds.filter((x) => x > 0).length).toBeGreaterThanOrEqual(2);
      expect(xadds.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(ids.length);
    } finally {
      await db.end();
      c.disconnect();
      for (const n of nodes) n.disconnect();
    }
  }, 30_000);
});
