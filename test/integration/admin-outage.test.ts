/**
 * Admin writes during an outage tell the truth. Instance A reaches PostgreSQL and Redis through cuttable
 * proxies; instance B shares both directly (short config refresh TTL). With Redis cut, a config write
 * commits, answers 2xx saying its propagation is deferred, is in force on A at once and on B within B's
 * TTL; breaker writes (state in Redis) answer 503. With PostgreSQL cut, config writes answer 503 and
 * change nothing; a breaker opens and says its audit row is deferred, which lands once the database is
 * back. No admin write answers 500.
 */
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import { type Actor, ConfigAdmin } from '../../src/config/admin.js';
import { GatewayError } from '../../src/core/errors.js';
import type { RedisCoordinator } from '../../src/coord/redis.js';
import {
  ADMIN_TOKEN,
  LogCapture,
  REDIS_URL,
  TcpProxy,
  type TestDatabase,
  cleanupRedis,
  createTestDatabase,
  openTestDb,
  startTestGateway,
  testPool,
  testRedisPrefix,
  waitFor,
} from '../helpers.js';

type TGateway = Awaited<ReturnType<typeof startTestGateway>>;
let tdb: TestDatabase;
let prefix: string;
let pgProxy: TcpProxy;
let redisProxy: TcpProxy;
let A: TGateway;
let B: TGateway;
let up: FakeUpstream;
let appId: string;
let keyId: string;
let sk: string;

const A_REFRESH_MS = 60_000; // long: what A shows at once comes from its own reload, not its timer
const B_REFRESH_MS = 1_500;

/** Every admin write answered in this file, for the "never 500" check. */
const writes: Array<{ what: string; status: number }> = [];

async function admin(g: TGateway, method: string, path: string, body?: unknown, ifMatch?: number) {
  const r = await fetch(`${g.url}/api/admin/v1${path}`, {
    method,
    headers: {
      authorization: `Bearer ${ADMIN_TOKEN}`,
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...(ifMatch !== undefined ? { 'if-match': `"${ifMatch}"` } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  if (method !== 'GET') writes.push({ what: `${method} ${path}`, status: r.status });
  const text = await r.text();
  return { status: r.status, headers: r.headers, body: text ? (JSON.parse(text) as any) : null };
}

const chat = (g: TGateway) =>
  fetch(g.url + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}` },
    body: JSON.stringify({ model: 'main', messages: [{ role: 'user', content: 'hi' }] }),
  });

const redisReady = (g: TGateway) => (g.coord as RedisCoordinator).isReady();

beforeAll(async () => {
  tdb = await createTestDatabase();
  prefix = testRedisPrefix();
  up = await startFakeOpenAI({ name: 'outage' });
  pgProxy = await new TcpProxy({ host: '127.0.0.1', port: 5432 }).start();
  const redis = new URL(REDIS_URL);
  redisProxy = await new TcpProxy({ host: redis.hostname, port: Number(redis.port || 6379) }).start();
  const viaProxy = new URL(tdb.url);
  viaProxy.port = String(pgProxy.port);
  redis.port = String(redisProxy.port);
  const common = { redisPrefix: prefix, billing: false };
  A = await startTestGateway({
    ...common,
    databaseUrl: viaProxy.toString(),
    redisUrl: redis.toString(),
    configRefreshMs: A_REFRESH_MS,
  });
  B = await startTestGateway({
    ...common,
    databaseUrl: tdb.url,
    redisUrl: REDIS_URL,
    configRefreshMs: B_REFRESH_MS,
  });
  const created = [
    await admin(A, 'POST', '/channels', {
      code: 'one',
      provider: 'openai',
      base_url: up.url + '/v1',
      credential: 'cred',
    }),
    await admin(A, 'POST', '/aliases', {
      name: 'main',
      chain: [{ targets: [{ channel: 'one', model: 'm' }] }],
    }),
    await admin(A, 'POST', '/apps', { name: 'outage' }),
  ];
  expect(created.map((c) => c.status)).toEqual([201, 201, 201]);
  appId = created[2]!.body.id;
  const key = await admin(A, 'POST', `/apps/${appId}/keys`, { name: 'ci' });
  expect(key.status).toBe(201);
  sk = key.body.sk;
  keyId = key.body.key.id;
  await waitFor(async () => (await chat(A)).status === 200 && (await chat(B)).status === 200, 5_000, 20);
}, 60_000);

afterAll(async () => {
  pgProxy?.up();
  redisProxy?.up();
  await A?.close();
  await B?.close();
  await pgProxy?.close();
  await redisProxy?.close();
  await up?.close();
  await cleanupRedis(prefix);
  await tdb?.drop();
});

describe('Redis down: config writes commit, answer 2xx and say propagation is deferred', () => {
  it('bans a key: in force on A at once, on B within its TTL; a retry with the new version works', async () => {
    const cur = await admin(A, 'GET', `/apps/${appId}/keys/${keyId}`);
    redisProxy.down();
    await waitFor(() => !redisReady(A), 5_000);

    const t0 = Date.now();
    const ban = await admin(
      A,
      'PATCH',
      `/apps/${appId}/keys/${keyId}`,
      { enabled: false },
      cur.body.version_no,
    );
    expect(ban.status).toBe(200);
    expect(ban.headers.get('anima-propagation')).toBe(`deferred; within=${A_REFRESH_MS}`);
    expect(ban.body).toMatchObject({
      enabled: false,
      version_no: cur.body.version_no + 1,
      propagation: { published: false, within_ms: A_REFRESH_MS },
    });

    // The writing instance reloaded from the database before answering: refused at once.
    const onA = await chat(A);
    expect(onA.status).toBe(403);
    expect(((await onA.json()) as { error: { code: string } }).error.code).toBe('key_disabled');

    // B heard nothing (the publish failed): its refresh TTL brings the ban.
    await waitFor(async () => (await chat(B)).status === 403, B_REFRESH_MS + 3_000, 20);
    const ms = Date.now() - t0;
    console.log(
      `redis down: key ban in force on B ${ms} ms after A's write (B's refresh TTL ${B_REFRESH_MS} ms)`,
    );
    expect(ms).toBeLessThan(B_REFRESH_MS + 1_500);

    // The answer named the new version: writing on from it is no conflict.
    const next = await admin(
      A,
      'PATCH',
      `/apps/${appId}/keys/${keyId}`,
      { name: 'banned' },
      ban.body.version_no,
    );
    expect(next.status).toBe(200);
    expect(next.body.version_no).toBe(ban.body.version_no + 1);
    expect(next.body.propagation).toEqual({ published: false, within_ms: A_REFRESH_MS });
    // Only a stale version conflicts, as it should.
    const stale = await admin(A, 'PATCH', `/apps/${appId}/keys/${keyId}`, { name: 'x' }, cur.body.version_no);
    expect(stale.status).toBe(409);

    // Exactly one audit row per committed write.
    const audit = await admin(A, 'GET', `/audit?entity=api_key&key=${keyId}`);
    expect(audit.body.data.filter((a: { action: string }) => a.action === 'update')).toHaveLength(2);
  });

  it('other writes too: a 204 carries the header; the kill switch (a DB setting) applies on A at once', async () => {
    const tg = await admin(A, 'POST', '/token-groups', { id: 'tg_outage', name: 'outage' });
    expect(tg.status).toBe(201);
    expect(tg.body.propagation).toEqual({ published: false, within_ms: A_REFRESH_MS });
    const del = await admin(A, 'DELETE', '/token-groups/tg_outage', undefined, tg.body.version_no);
    expect(del.status).toBe(204);
    expect(del.headers.get('anima-propagation')).toBe(`deferred; within=${A_REFRESH_MS}`);

    const inv = await admin(A, 'POST', '/cache/invalidate', { table: 'alias' });
    expect(inv.status).toBe(200);
    expect(inv.body.propagation).toEqual({ published: false, within_ms: A_REFRESH_MS });

    const on = await admin(A, 'POST', '/kill-switch', { enabled: true, reason: 'drill' });
    expect(on.status).toBe(200);
    expect(on.body).toMatchObject({ enabled: true, propagation: { published: false } });
    expect(A.config.killSwitch()).toMatchObject({ enabled: true });
    const off = await admin(A, 'POST', '/kill-switch', { enabled: false });
    expect(off.status).toBe(200);
    expect(A.config.killSwitch()).toBeNull();
  });

  it('breaker writes (state in Redis) answer 503 service_unavailable and change nothing', async () => {
    const open = await admin(A, 'POST', '/circuits/one/open', { reason: 'no redis' });
    expect(open.status).toBe(503);
    expect(open.body.error.code).toBe('service_unavailable');
    expect(open.body.error.message).toMatch(/Redis/);
    expect(A.breakers.state('one').state).toBe('closed');
    const health = await admin(A, 'POST', '/channels/one/health/reset');
    expect(health.status).toBe(503);
    expect(health.body.error.code).toBe('service_unavailable');
  });

  it('Redis back: invalidations flow again', async () => {
    redisProxy.up();
    await waitFor(() => redisReady(A), 10_000, 20);
    const cur = await admin(A, 'GET', `/apps/${appId}/keys/${keyId}`);
    const unban = await admin(
      A,
      'PATCH',
      `/apps/${appId}/keys/${keyId}`,
      { enabled: true },
      cur.body.version_no,
    );
    expect(unban.status).toBe(200);
    expect(unban.headers.get('anima-propagation')).toBeNull();
    expect(unban.body.propagation).toBeUndefined();
    await waitFor(async () => (await chat(A)).status === 200 && (await chat(B)).status === 200, 5_000, 20);
  });
});

describe('PostgreSQL down: config writes 503, escape hatches apply and audit later', () => {
  it('refuses config writes with 503 and changes nothing', async () => {
    const before = await admin(A, 'GET', '/channels/one');
    pgProxy.down();

    const patch = await admin(A, 'PATCH', '/channels/one', { weight: 7 }, before.body.version_no);
    expect(patch.status).toBe(503);
    expect(patch.body.error).toMatchObject({ code: 'service_unavailable', outcome: 'not_applied' });
    const create = await admin(A, 'POST', '/apps', { name: 'during outage' });
    expect(create.status).toBe(503);
    const kill = await admin(A, 'POST', '/kill-switch', { enabled: true });
    expect(kill.status).toBe(503);
    const token = await admin(A, 'POST', '/admin-tokens', { name: 'late', role: 'viewer' });
    expect(token.status).toBe(503);
    expect(token.body.error.code).toBe('service_unavailable');
    // Reads that need the database say the same.
    expect((await admin(A, 'GET', '/apps')).status).toBe(503);

    pgProxy.up();
    await waitFor(async () => (await admin(A, 'GET', '/channels/one')).status === 200, 10_000, 50);
    const after = await admin(A, 'GET', '/channels/one');
    expect(after.body.version_no).toBe(before.body.version_no);
    expect(after.body.weight).toBe(before.body.weight);
    const apps = await admin(A, 'GET', '/apps');
    expect(apps.body.data.map((a: { name: string }) => a.name)).not.toContain('during outage');
    expect(A.config.killSwitch()).toBeNull();
  });

  it('opens a breaker (Redis) at once; its audit row is written once the database is back', async () => {
    pgProxy.down();
    const open = await admin(A, 'POST', '/circuits/one/open', { reason: 'db drill' });
    expect(open.status).toBe(200);
    expect(open.headers.get('anima-audit')).toBe('deferred');
    expect(open.body).toMatchObject({ state: 'forced_open', reason: 'db drill', audit: 'deferred' });
    expect(A.breakers.state('one').state).toBe('forced_open');
    await waitFor(() => B.breakers.state('one').state === 'forced_open', 2_000);
    expect(A.admin.auditBacklog).toBe(1);

    const db = testPool(tdb.url, 1);
    try {
      const rows = async () =>
        (
          await db.query<{ actor: string; at: Date }>(
            `SELECT actor, at FROM audit_log WHERE entity = 'circuit' AND entity_key = 'one' AND action = 'circuit_open'`,
          )
        ).rows;
      expect(await rows()).toHaveLength(0);
      const downAt = Date.now();
      pgProxy.up();
      const ms = await waitFor(async () => (await rows()).length === 1, 10_000, 50);
      console.log(`postgres back: deferred audit row written ${ms} ms later`);
      const [row] = await rows();
      expect(row!.actor).toContain('bootstrap');
      expect(row!.at.getTime()).toBeLessThanOrEqual(downAt); // the time of the action, not of the late write
      expect(A.admin.auditBacklog).toBe(0);
    } finally {
      await db.end();
    }

    const close = await admin(A, 'POST', '/circuits/one/close');
    expect(close.status).toBe(200);
    expect(close.headers.get('anima-audit')).toBeNull();
    expect(close.body.audit).toBeUndefined();
  });
});

describe('ConfigAdmin on a database connection that dies', () => {
  const actor: Actor = { id: 'adm_test', name: 'tester', role: 'admin' };

  /** A ConfigAdmin with a pool of its own behind its own proxy: only its statements pass there. */
  async function isolated() {
    const proxy = await new TcpProxy({ host: '127.0.0.1', port: 5432 }).start();
    const u = new URL(tdb.url);
    u.port = String(proxy.port);
    const dbh = await openTestDb(u.toString());
    const logs = new LogCapture();
    const cfg = new ConfigAdmin(dbh.db, async () => {}, Date.now, { log: pino(logs), auditRetryMs: 50 });
    return {
      proxy,
      cfg,
      logs,
      close: async () => {
        await proxy.close();
        await dbh.close().catch(() => {});
      },
    };
  }

  it('a connection lost during COMMIT answers 503 outcome unknown; the retry with the old version gets 409', async () => {
    const { proxy, cfg, close } = await isolated();
    const observer = testPool(tdb.url, 1);
    try {
      const cur = (await cfg.get('app', appId)) as { version_no: number };
      // Let the COMMIT reach the server, hold back its reply, then cut: committed, but the caller can't know.
      // The cut waits for the commit to show on another connection, not for a guessed time.
      const committed = async () =>
        (await observer.query<{ name: string }>('SELECT name FROM app WHERE id = $1', [appId])).rows[0]
          ?.name === 'renamed in the dark';
      proxy.sent = [];
      const record = proxy.sent.push.bind(proxy.sent);
      let armed = true;
      proxy.sent.push = (...items) => {
        if (armed && items.some((i) => /\bcommit\b/i.test(i.data.toString('latin1')))) {
          armed = false;
          proxy.replyDelayMs = 5_000;
          void waitFor(committed, 5_000, 5)
            .catch(() => {}) // never committed: cut anyway, and the assertions below say so
            .then(() => proxy.down());
        }
        return record(...items);
      };
      const err = await cfg.update(actor, 'app', appId, cur.version_no, { name: 'renamed in the dark' }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(GatewayError);
      expect((err as GatewayError).code).toBe('service_unavailable');
      expect((err as GatewayError).details).toEqual({ outcome: 'unknown' });

      proxy.replyDelayMs = 0;
      proxy.up();
      const now = (await cfg.get('app', appId)) as { version_no: number; name: string };
      expect(now).toMatchObject({ version_no: cur.version_no + 1, name: 'renamed in the dark' });
      const retry = await cfg
        .update(actor, 'app', appId, cur.version_no, { name: 'renamed in the dark' })
        .then(
          () => null,
          (e: unknown) => e,
        );
      expect((retry as GatewayError).code).toBe('version_conflict');
    } finally {
      await observer.end();
      await close();
    }
  });

  it('audit rows still queued at shutdown are logged at warn, not lost silently', async () => {
    const { proxy, cfg, logs, close } = await isolated();
    try {
      proxy.down();
      expect(await cfg.record(actor, 'circuit_open', 'circuit', 'one', null, { state: 'forced_open' })).toBe(
        'deferred',
      );
      expect(cfg.auditBacklog).toBe(1);
      await cfg.close();
      const dropped = logs
        .records()
        .find((r) => r.msg === 'audit: rows still waiting for the database at shutdown were dropped');
      expect(dropped).toMatchObject({ level: 40, dropped: 1 });
      expect(JSON.stringify(dropped)).toContain('circuit_open');
      expect(cfg.auditBacklog).toBe(0);
    } finally {
      await close();
    }
  });
});

describe('no admin write answered 500', () => {
  it('holds over every scenario above', () => {
    expect(writes.length).toBeGreaterThan(15);
    expect(writes.filter((w) => w.status >= 500 && w.status !== 503)).toEqual([]);
  });
});
