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
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
});
