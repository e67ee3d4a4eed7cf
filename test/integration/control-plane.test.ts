/**
 * The control plane on real PostgreSQL + Redis with two gateway instances: every escape hatch done
 * through instance A changes instance B within 1 s (delays printed), lost invalidations heal by TTL,
 * optimistic locking, effective windows, authorization and the audit trail.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import {
  ADMIN_TOKEN,
  REDIS_URL,
  type TestDatabase,
  cleanupRedis,
  createTestDatabase,
  startTestGateway,
  testRedisPrefix,
  waitFor,
} from '../helpers.js';

type TGateway = Awaited<ReturnType<typeof startTestGateway>>;
let tdb: TestDatabase;
let prefix: string;
let A: TGateway;
let B: TGateway;
let f1: FakeUpstream;
let f2: FakeUpstream;
let appId: string;
let keyId: string;
let sk: string;
let viewerToken: string;

async function admin(
  g: TGateway,
  method: string,
  path: string,
  body?: unknown,
  opts: { token?: string | null; ifMatch?: number } = {},
) {
  const token = opts.token === undefined ? ADMIN_TOKEN : opts.token;
  const r = await fetch(`${g.url}/api/admin/v1${path}`, {
    method,
    headers: {
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(opts.ifMatch !== undefined ? { 'if-match': `"${opts.ifMatch}"` } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await r.text();
  return { status: r.status, body: text ? (JSON.parse(text) as any) : null };
}

const chat = (g: TGateway, model = 'main', key = sk) =>
  fetch(g.url + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }),
  });

/** Polls B until `ok` holds; returns the delay since `t0`. */
async function propagation(label: string, t0: number, ok: () => Promise<boolean>): Promise<number> {
  await waitFor(ok, 1_000, 5);
  const ms = Date.now() - t0;
  console.log(`escape hatch '${label}': instance B changed ${ms} ms after instance A's write`);
  return ms;
}

beforeAll(async () => {
  tdb = await createTestDatabase();
  prefix = testRedisPrefix();
  f1 = await startFakeOpenAI({ name: 'one' });
  f2 = await startFakeOpenAI({ name: 'two' });
  const s = { databaseUrl: tdb.url, redisUrl: REDIS_URL, redisPrefix: prefix };
  A = await startTestGateway(s);
  B = await startTestGateway({ ...s, configRefreshMs: 1_500 }); // B's L1 TTL, for the lost-invalidation test
  expect(
    (
      await admin(A, 'POST', '/channels', {
        code: 'one',
        provider: 'openai',
        base_url: f1.url + '/v1',
        credential: 'cred-one-secret',
      })
    ).status,
  ).toBe(201);
  expect(
    (
      await admin(A, 'POST', '/channels', {
        code: 'two',
        provider: 'openai',
        base_url: f2.url + '/v1',
        credential: 'cred-two-secret',
      })
    ).status,
  ).toBe(201);
  expect(
    (
      await admin(A, 'POST', '/aliases', {
        name: 'main',
        chain: [
          { targets: [{ channel: 'one', model: 'm1' }] },
          { targets: [{ channel: 'two', model: 'm2' }] },
        ],
      })
    ).status,
  ).toBe(201);
  const app = await admin(A, 'POST', '/apps', { name: 'Acme' });
  appId = app.body.id;
  const key = await admin(A, 'POST', `/apps/${appId}/keys`, { name: 'ci' });
  expect(key.status).toBe(201);
  sk = key.body.sk;
  keyId = key.body.key.id;
  const v = await admin(A, 'POST', '/admin-tokens', { name: 'reader', role: 'viewer' });
  viewerToken = v.body.token;
  await waitFor(async () => (await chat(B)).status === 200, 2_000, 20);
}, 60_000);

afterAll(async () => {
  await A?.close();
  await B?.close();
  await f1?.close();
  await f2?.close();
  await cleanupRedis(prefix);
  await tdb?.drop();
});

describe('escape hatches: done on A, in force on B within 1 s', () => {
  it('POST /circuits/{channel}/open, then /close', async () => {
    const t0 = Date.now();
    const r = await admin(A, 'POST', '/circuits/one/open', { reason: 'incident 42' });
    expect(r.status).toBe(200);
    expect(r.body.state).toBe('forced_open');
    const ms = await propagation(
      'circuit open',
      t0,
      async () => (await chat(B)).headers.get('x-anima-channel') === 'two',
    );
    expect(ms).toBeLessThan(1_000);
    const list = await admin(B, 'GET', '/circuits', undefined, { token: viewerToken });
    expect(list.body.data.find((c: { channel: string }) => c.channel === 'one')).toMatchObject({
      state: 'forced_open',
      reason: 'incident 42',
    });
    await admin(A, 'POST', '/circuits/one/close');
    await propagation(
      'circuit close',
      Date.now(),
      async () => (await chat(B)).headers.get('x-anima-channel') === 'one',
    );
  });

  it('PATCH /channels/{code} enabled=false takes it out of every chain', async () => {
    const cur = await admin(A, 'GET', '/channels/one');
    const t0 = Date.now();
    const r = await admin(A, 'PATCH', '/channels/one', { enabled: false }, { ifMatch: cur.body.version_no });
    expect(r.status).toBe(200);
    expect(r.body.version_no).toBe(cur.body.version_no + 1);
    const ms = await propagation('channel disabled', t0, async () => {
      const res = await chat(B);
      return (
        res.headers.get('x-anima-channel') === 'two' &&
        (res.headers.get('x-anima-route') ?? '').includes('one;skipped=disabled')
      );
    });
    expect(ms).toBeLessThan(1_000);
    await admin(A, 'PATCH', '/channels/one', { enabled: true, version_no: r.body.version_no });
    await waitFor(async () => (await chat(B)).headers.get('x-anima-channel') === 'one', 1_000, 5);
  });

  it('PATCH /apps/{id}/keys/{kid} enabled=false: the next request is 403', async () => {
    const cur = await admin(A, 'GET', `/apps/${appId}/keys/${keyId}`);
    const t0 = Date.now();
    expect(
      (
        await admin(
          A,
          'PATCH',
          `/apps/${appId}/keys/${keyId}`,
          { enabled: false },
          { ifMatch: cur.body.version_no },
        )
      ).status,
    ).toBe(200);
    const ms = await propagation('key banned', t0, async () => (await chat(B)).status === 403);
    expect(ms).toBeLessThan(1_000);
    const r = await chat(B);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('key_disabled');
    const again = await admin(A, 'GET', `/apps/${appId}/keys/${keyId}`);
    await admin(
      A,
      'PATCH',
      `/apps/${appId}/keys/${keyId}`,
      { enabled: true },
      { ifMatch: again.body.version_no },
    );
    await waitFor(async () => (await chat(B)).status === 200, 1_000, 5);
  });

  it('kill switch: every data-plane request 503 gateway_disabled, admin and health stay up', async () => {
    const t0 = Date.now();
    expect((await admin(A, 'POST', '/kill-switch', { enabled: true, reason: 'drill' })).status).toBe(200);
    const ms = await propagation('kill switch', t0, async () => (await chat(B)).status === 503);
    expect(ms).toBeLessThan(1_000);
    const r = await chat(B);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('gateway_disabled');
    expect((await fetch(B.url + '/actuator/health')).status).toBe(200);
    expect((await admin(B, 'GET', '/kill-switch')).body).toMatchObject({ enabled: true, reason: 'drill' });
    await admin(A, 'POST', '/kill-switch', { enabled: false });
    await propagation('kill switch lifted', Date.now(), async () => (await chat(B)).status === 200);
  });

  it('POST /cache/invalidate makes B reload a change written behind the API', async () => {
    await A.dbh.db.updateTable('alias').set({ max_attempts: 1 }).where('name', '=', 'main').execute();
    expect(B.config.alias('main')?.maxAttempts).toBe(3); // B hasn't heard: nothing told it
    const t0 = Date.now();
    expect((await admin(A, 'POST', '/cache/invalidate', { table: 'alias', key: 'main' })).status).toBe(200);
    await propagation('cache invalidate', t0, async () => B.config.alias('main')?.maxAttempts === 1);
    await A.dbh.db.updateTable('alias').set({ max_attempts: 3 }).where('name', '=', 'main').execute();
    await admin(A, 'POST', '/cache/invalidate', { table: 'all' });
  });
});

describe('caches', () => {
  it('with pub/sub delivery lost, B still converges within its L1 TTL', async () => {
    const heard = async () => (await B.metrics.invalidations.get()).values.reduce((a, v) => a + v.value, 0);
    B.pauseInvalidations(true);
    try {
      const before = await heard();
      const cur = await admin(A, 'GET', '/aliases/main');
      const t0 = Date.now();
      await admin(A, 'PATCH', '/aliases/main', { deadline_ms: 123_000 }, { ifMatch: cur.body.version_no });
      await waitFor(() => A.config.alias('main')?.deadlineMs === 123_000, 1_000, 5);
      await waitFor(() => B.config.alias('main')?.deadlineMs === 123_000, 3_000, 20);
      expect(await heard()).toBe(before); // B never handled the event: its periodic reload did it
      console.log(`lost invalidation: B converged after ${Date.now() - t0} ms (L1 TTL 1500 ms)`);
    } finally {
      B.pauseInvalidations(false);
    }
  });
});

describe('optimistic locking and effective windows', () => {
  it('two PATCHes naming the same version: one wins, the other gets 409 with the current row', async () => {
    const cur = await admin(A, 'GET', '/channels/two');
    const [x, y] = await Promise.all([
      admin(A, 'PATCH', '/channels/two', { weight: 7 }, { ifMatch: cur.body.version_no }),
      admin(B, 'PATCH', '/channels/two', { weight: 9 }, { ifMatch: cur.body.version_no }),
    ]);
    const statuses = [x.status, y.status].sort();
    expect(statuses).toEqual([200, 409]);
    const winner = x.status === 200 ? x : y;
    const loser = x.status === 200 ? y : x;
    expect(loser.body.error.code).toBe('version_conflict');
    expect(loser.body.error.current.version_no).toBe(cur.body.version_no + 1);
    expect(loser.body.error.current.weight).toBe(winner.body.weight);
    const now = await admin(A, 'GET', '/channels/two');
    expect(now.body.weight).toBe(winner.body.weight);
    expect(now.body.credential_hint).toBe('…cret');
    expect(JSON.stringify(now.body)).not.toContain('cred-two-secret');
    const none = await admin(A, 'PATCH', '/channels/two', { weight: 1 });
    expect(none.status).toBe(428);
    expect(none.body.error.code).toBe('version_required');
  });

  it('a channel version effective 2 s from now takes over by itself, with no further write', async () => {
    const T = new Date(Date.now() + 2_000);
    const cur = await admin(A, 'GET', '/channels/one');
    expect(
      (
        await admin(
          A,
          'PATCH',
          '/channels/one',
          { effective_to: T.toISOString() },
          { ifMatch: cur.body.version_no },
        )
      ).status,
    ).toBe(200);
    const next = await admin(A, 'POST', '/channels', {
      code: 'one',
      provider: 'openai',
      base_url: f2.url + '/v1',
      credential: 'cred-one-next',
      effective_from: T.toISOString(),
    });
    expect(next.status).toBe(201);
    const overlap = await admin(A, 'POST', '/channels', {
      code: 'one',
      provider: 'openai',
      base_url: f2.url + '/v1',
    });
    expect(overlap.status).toBe(409);
    expect(overlap.body.error.code).toBe('window_overlap');
    f1.resetStats();
    f2.resetStats();
    expect((await chat(B)).headers.get('x-anima-channel')).toBe('one');
    expect(f1.stats.requests).toBe(1);
    // T passing is what is under test: wait until B itself resolves 'one' to the new version's address.
    await waitFor(() => B.config.channel('one')?.baseUrl === f2.url + '/v1', 5_000, 5);
    expect((await chat(B)).headers.get('x-anima-channel')).toBe('one');
    expect(f2.stats.requests).toBe(1); // same channel code, new version, new address
    const versions = await admin(A, 'GET', '/channels/one/versions');
    expect(versions.body.data).toHaveLength(2);
  });
});

describe('authorization', () => {
  const ROUTES: Array<[string, string]> = [
    ['GET', '/channels'],
    ['POST', '/channels'],
    ['GET', '/channels/one'],
    ['PATCH', '/channels/one'],
    ['DELETE', '/channels/one'],
    ['GET', '/aliases'],
    ['POST', '/aliases'],
    ['PATCH', '/aliases/main'],
    ['GET', '/apps'],
    ['POST', '/apps'],
    ['PATCH', '/apps/x'],
    ['GET', '/apps/x/keys'],
    ['POST', '/apps/x/keys'],
    ['PATCH', '/apps/x/keys/y'],
    ['POST', '/apps/x/keys/y/rotate'],
    ['GET', '/keys'],
    ['GET', '/circuits'],
    ['POST', '/circuits/one/open'],
    ['POST', '/circuits/one/reset'],
    ['POST', '/cache/invalidate'],
    ['GET', '/kill-switch'],
    ['POST', '/kill-switch'],
    ['GET', '/audit'],
    ['GET', '/admin-tokens'],
    ['POST', '/admin-tokens'],
  ];
  it('every admin route refuses no token, a wrong token and a data-plane sk (401), and a viewer on writes (403)', async () => {
    for (const [method, path] of ROUTES) {
      const body = method === 'GET' || method === 'DELETE' ? undefined : {};
      expect((await admin(A, method, path, body, { token: null })).status, `${method} ${path} no token`).toBe(
        401,
      );
      expect(
        (await admin(A, method, path, body, { token: 'ak-anima-wrong-token-xxxxxxxx' })).status,
        `${method} ${path} wrong`,
      ).toBe(401);
      expect((await admin(A, method, path, body, { token: sk })).status, `${method} ${path} sk`).toBe(401);
      const v = await admin(A, method, path, body, { token: viewerToken });
      if (method === 'GET') expect(v.status, `${method} ${path} viewer`).not.toBe(403);
      else {
        expect(v.status, `${method} ${path} viewer`).toBe(403);
        expect(v.body.error.code).toBe('admin_forbidden');
      }
    }
  });
});

describe('audit and keys', () => {
  it('each write leaves exactly one audit row with before and after', async () => {
    const app = await admin(A, 'POST', '/apps', { name: 'Audited' });
    const id = app.body.id;
    const p = await admin(A, 'PATCH', `/apps/${id}`, { name: 'Audited 2' }, { ifMatch: app.body.version_no });
    expect(
      (await admin(A, 'PATCH', `/apps/${id}`, { name: 'Audited 2' }, { ifMatch: p.body.version_no })).status,
    ).toBe(200); // no-op: no write
    expect((await admin(A, 'DELETE', `/apps/${id}`, undefined, { ifMatch: p.body.version_no })).status).toBe(
      204,
    );
    const log = (await admin(A, 'GET', `/audit?entity=app&key=${id}`)).body.data as Array<{
      action: string;
      before: any;
      after: any;
      actor: string;
    }>;
    expect(log.map((l) => l.action)).toEqual(['delete', 'update', 'create']);
    expect(log[1]!.before.name).toBe('Audited');
    expect(log[1]!.after.name).toBe('Audited 2');
    expect(log[2]!.before).toBeNull();
    expect(log[0]!.after.deleted_at).toBeTruthy();
    expect(log.every((l) => l.actor.includes('bootstrap'))).toBe(true);
  });

  it('keys: the sk is shown once; rotate replaces it; list by prefix never shows a secret', async () => {
    const k = await admin(A, 'POST', `/apps/${appId}/keys`, { name: 'rotating' });
    const oldSk = k.body.sk as string;
    await waitFor(async () => (await chat(B, 'main', oldSk)).status === 200, 1_000, 10);
    const rot = await admin(A, 'POST', `/apps/${appId}/keys/${k.body.key.id}/rotate`, undefined, {
      ifMatch: k.body.key.version_no,
    });
    expect(rot.status).toBe(200);
    expect(rot.body.sk).not.toBe(oldSk);
    await waitFor(async () => (await chat(B, 'main', oldSk)).status === 401, 1_000, 10);
    expect((await chat(B, 'main', rot.body.sk)).status).toBe(200);
    const listed = await admin(A, 'GET', `/keys?prefix=${encodeURIComponent(rot.body.sk.slice(0, 13))}`);
    expect(listed.body.data.map((x: { id: string }) => x.id)).toContain(k.body.key.id);
    const all = JSON.stringify((await admin(A, 'GET', `/apps/${appId}/keys`)).body);
    expect(all).not.toContain(rot.body.sk);
    expect(all).not.toContain('key_hash');
  });
});
