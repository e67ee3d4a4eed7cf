/**
 * Secrets at rest in production mode (refused without a key, warned when allowed), key rotation with
 * running gateways, and the management endpoints (a separate listener, a bearer, `serve --workers`).
 * Real PostgreSQL and Redis; some cases run real `anima serve` processes (requires the build).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertAlias, insertApp, insertChannel, insertKey } from '../../src/config/repo.js';
import { keyIdOf, sealSecret, sealedWith, setSecretKey } from '../../src/config/secrets.js';
import type { DbHandle } from '../../src/store/db.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import type { FakeUpstream } from '../../fakes/common.js';
import {
  ADMIN_TOKEN,
  REDIS_URL,
  TEST_SECRET_KEY,
  type TestDatabase,
  adminApi,
  cleanupRedis,
  createTestDatabase,
  freePort,
  openTestDb,
  spawnGateway,
  startTestGateway,
  testRedisPrefix,
  waitFor,
} from '../helpers.js';

const CLI = 'dist/src/app/cli.js';
const K1 = 'rotation-key-one-0123456789abcdef';
const K2 = 'rotation-key-two-0123456789abcdef';
const MGMT_TOKEN = 'mgmt-token-0123456789abcdef';
let tdb: TestDatabase;
let dbh: DbHandle;
let prefix: string;
let up: FakeUpstream;
let sk: string;
let keyId: string;
const procs: ChildProcess[] = [];
type TGateway = Awaited<ReturnType<typeof startTestGateway>>;
const gateways: TGateway[] = [];

const chat = (base: string, model = 'rot') =>
  fetch(base + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}` },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }),
  });

/** A chat on a connection of its own, so that under `--workers` the cluster deals requests to every worker. */
const chatOwnConnection = (base: string) =>
  new Promise<number>((res, rej) => {
    const body = JSON.stringify({ model: 'rot', messages: [{ role: 'user', content: 'hi' }] });
    const r = httpRequest(
      base + '/v1/chat/completions',
      {
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}`, connection: 'close' },
      },
      (resp) => resp.resume().on('end', () => res(resp.statusCode ?? 0)),
    );
    r.on('error', rej);
    r.end(body);
  });

/** anima_requests_total summed over the series matching `match` (e.g. one worker's). */
const requestsTotal = (text: string, match: Record<string, string> = {}) =>
  [...text.matchAll(/^anima_requests_total\{([^}]*)\} (\S+)$/gm)]
    .filter((m) => Object.entries(match).every(([k, v]) => m[1]!.includes(`${k}="${v}"`)))
    .reduce((a, m) => a + Number(m[2]), 0);

const gateway = async (over: Parameters<typeof startTestGateway>[0] = {}) => {
  const g = await startTestGateway({
    databaseUrl: tdb.url,
    redisUrl: REDIS_URL,
    redisPrefix: prefix,
    ...over,
  });
  gateways.push(g);
  return g;
};
const stop = async (g: TGateway) => {
  gateways.splice(gateways.indexOf(g), 1);
  await g.close(500);
};

async function exited(c: ChildProcess): Promise<number | null> {
  if (c.exitCode !== null || c.signalCode !== null) return c.exitCode;
  return new Promise((r) => c.once('exit', (code) => r(code)));
}

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error(`${CLI} missing: run "npm run build" (npm test does)`);
  tdb = await createTestDatabase();
  prefix = testRedisPrefix();
  // The fake answers only to the channel's own credential: a wrong one would be a 401, not an answer.
  up = await startFakeOpenAI({ name: 'rot', apiKey: 'sk-upstream-rot-a' });
  dbh = await openTestDb(tdb.url);
  const app = await insertApp(dbh.db, 'mgmt');
  ({ sk, id: keyId } = await insertKey(dbh.db, app));
}, 60_000);

afterAll(async () => {
  for (const p of procs) p.kill('SIGKILL');
  for (const g of [...gateways]) await g.close(200).catch(() => {});
  setSecretKey(undefined);
  await up?.close();
  await dbh?.close();
  await tdb?.drop();
  await cleanupRedis(prefix);
});

describe('secrets at rest in production mode', () => {
  it('without ANIMA_SECRET_KEY the gateway refuses to start: a clear message, a non-zero exit', async () => {
    const g = spawnGateway({
      DATABASE_URL: tdb.url,
      REDIS_URL,
      ANIMA_REDIS_PREFIX: prefix,
      ANIMA_SECRET_KEY: undefined,
    });
    procs.push(g.child);
    const err = (await g.url.then(
      () => null,
      (e: Error) => e,
    ))!;
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(/gateway exited 1/);
    expect(err.message).toMatch(
      /refusing to start: production mode \(DATABASE_URL is set\) needs ANIMA_SECRET_KEY/,
    );
    expect(err.message).toContain('ANIMA_ALLOW_PLAINTEXT_CREDENTIALS=1');
    expect(err.message).not.toMatch(/\n\s+at /); // the message, not a stack trace
  });

  it('with ANIMA_ALLOW_PLAINTEXT_CREDENTIALS=1 it starts, and says so on stderr and in the log', async () => {
    const g = spawnGateway({
      DATABASE_URL: tdb.url,
      REDIS_URL,
      ANIMA_REDIS_PREFIX: prefix,
      ANIMA_SECRET_KEY: undefined,
      ANIMA_ALLOW_PLAINTEXT_CREDENTIALS: '1',
    });
    procs.push(g.child);
    let out = '';
    let err = '';
    g.child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    g.child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const url = await g.url;
    expect((await fetch(url + '/actuator/health')).status).toBe(200);
    expect(err).toMatch(/WARNING: upstream credentials and webhook secrets are stored IN CLEAR TEXT/);
    await waitFor(() => out.includes('IN CLEAR TEXT'), 5_000);
    const line = out.split('\n').find((l) => l.includes('IN CLEAR TEXT'))!;
    expect(JSON.parse(line)).toMatchObject({ level: 50, alert: true });
    g.child.kill('SIGTERM');
    await exited(g.child);
  });
});

describe('anima secrets rotate', () => {
  it('re-seals every credential and webhook secret under the new key while gateways keep serving', async () => {
    // Written under K1 (and one channel from before any key: clear text).
    setSecretKey(K1);
    await insertChannel(dbh.db, {
      code: 'rot-a',
      provider: 'openai',
      baseUrl: up.url + '/v1',
      credential: 'sk-upstream-rot-a',
    });
    await insertChannel(dbh.db, {
      code: 'rot-old',
      provider: 'openai',
      baseUrl: up.url + '/v1',
      credential: 'sk-upstream-rot-old',
      effectiveFrom: new Date(Date.now() - 3_600_000),
      effectiveTo: new Date(Date.now() - 60_000), // an ended version holds a secret too
    });
    await dbh.db
      .updateTable('api_key')
      .set({ webhook_secret: sealSecret('whsec-rotation-1') })
      .where('id', '=', keyId)
      .execute();
    setSecretKey(undefined);
    await insertChannel(dbh.db, {
      code: 'rot-clear',
      provider: 'openai',
      baseUrl: up.url + '/v1',
      credential: 'sk-upstream-clear',
    });
    await insertAlias(dbh.db, { name: 'rot', tiers: [[{ channel: 'rot-a', model: 'gpt-4o-mini' }]] });
    const before = await dbh.db.selectFrom('channel').select(['code', 'credential', 'version_no']).execute();
    expect(Object.fromEntries(before.map((r) => [r.code, sealedWith(r.credential)]))).toEqual({
      'rot-a': keyIdOf(K1),
      'rot-old': keyIdOf(K1),
      'rot-clear': null,
    });

    // Step 1 of the rollout: gateways run with K2 current and K1 still readable.
    const G = await gateway({ secretKey: K2, secretKeyPrevious: [K1] });
    up.resetStats();
    expect((await chat(G.url)).status).toBe(200);
    expect(up.requests.at(-1)!.headers.authorization).toBe('Bearer sk-upstream-rot-a');

    // Step 2: the rotation, with traffic going on meanwhile.
    let serving = true;
    const statuses: number[] = [];
    const traffic = (async () => {
      while (serving) statuses.push((await chat(G.url)).status);
    })();
    const env = {
      ...process.env,
      DATABASE_URL: tdb.url,
      REDIS_URL,
      ANIMA_REDIS_PREFIX: prefix,
      ANIMA_SECRET_KEY: K2,
      ANIMA_SECRET_KEY_PREVIOUS: K1,
    };
    const run = (...a: string[]) => promisify(execFile)(process.execPath, [CLI, 'secrets', ...a], { env });
    const first = await run('rotate', '--batch', '2');
    serving = false;
    await traffic;
    expect(first.stdout).toContain('channel.credential: re-sealed 3, changed meanwhile 0, unreadable 0');
    expect(first.stdout).toContain('api_key.webhook_secret: re-sealed 1, changed meanwhile 0, unreadable 0');
    expect(first.stdout).toContain('done: every sealed value is under the current key');
    expect(statuses.length).toBeGreaterThan(0);
    expect(statuses.every((s) => s === 200)).toBe(true);

    const after = await dbh.db.selectFrom('channel').select(['code', 'credential', 'version_no']).execute();
    for (const r of after) expect(sealedWith(r.credential), r.code).toBe(keyIdOf(K2));
    // Not a config change anyone made: versions stay (no 409 for an operator's open form), audit rows tell.
    expect(Object.fromEntries(after.map((r) => [r.code, r.version_no]))).toEqual(
      Object.fromEntries(before.map((r) => [r.code, r.version_no])),
    );
    const wh = await dbh.db
      .selectFrom('api_key')
      .select('webhook_secret')
      .where('id', '=', keyId)
      .executeTakeFirstOrThrow();
    expect(sealedWith(wh.webhook_secret!)).toBe(keyIdOf(K2));
    const audit = await dbh.db.selectFrom('audit_log').selectAll().where('action', '=', 'reseal').execute();
    expect(audit.map((a) => `${a.entity}:${a.entity_key}`).sort()).toEqual(
      ['api_key:' + keyId, 'channel:rot-a', 'channel:rot-clear', 'channel:rot-old'].sort(),
    );
    expect(audit.find((a) => a.entity_key === 'rot-clear')).toMatchObject({
      before: { credential: { sealed_with: 'clear text' } },
      after: { credential: { sealed_with: keyIdOf(K2) } },
    });

    // Idempotent: a second run finds nothing to do; status shows one key left.
    const second = await run('rotate');
    expect(second.stdout).toContain('channel.credential: re-sealed 0');
    expect((await run('status')).stdout).toContain(`channel.credential: {"${keyIdOf(K2)}":3}`);

    // The running gateway reloaded (the command published an invalidation) and still serves.
    expect((await chat(G.url)).status).toBe(200);
    expect(up.requests.at(-1)!.headers.authorization).toBe('Bearer sk-upstream-rot-a');
    await stop(G);

    // Step 3: K1 is dropped; a gateway with K2 alone reads everything.
    const G2 = await gateway({ secretKey: K2, secretKeyPrevious: [] });
    expect((await chat(G2.url)).status).toBe(200);
    expect(up.requests.at(-1)!.headers.authorization).toBe('Bearer sk-upstream-rot-a');
    expect(G2.config.keyById(keyId)?.webhookSecret).toBe('whsec-rotation-1');
    expect(G2.config.channel('rot-clear')?.credential).toBe('sk-upstream-clear');
    await stop(G2);
  }, 90_000);
});

// These gateways read the credentials the rotation above left under K2 (a previous key to them).
describe('management endpoints', () => {
  it('with ANIMA_MANAGEMENT_PORT: metrics and readiness details move there; the main port keeps liveness and a bare status', async () => {
    const G = await gateway({ managementPort: 0, secretKeyPrevious: [K2] });
    expect(G.managementUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await fetch(G.url + '/actuator/prometheus')).status).toBe(404);
    expect((await fetch(G.url + '/actuator/health')).status).toBe(200);
    expect((await fetch(G.url + '/actuator/health/liveness')).status).toBe(200);
    const r = await fetch(G.url + '/actuator/health/readiness');
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ status: 'UP' });

    const m = await fetch(G.managementUrl + '/actuator/prometheus');
    expect(m.status).toBe(200);
    expect(await m.text()).toContain('anima_requests_total');
    const ready = (await (await fetch(G.managementUrl + '/actuator/health/readiness')).json()) as {
      status: string;
      components: Record<string, unknown>;
    };
    expect(ready.status).toBe('UP');
    expect(Object.keys(ready.components)).toEqual(expect.arrayContaining(['db', 'coordination', 'config']));
    // Nothing but the actuator there: no data plane, no admin API.
    expect(
      (await fetch(G.managementUrl + '/v1/models', { headers: { authorization: `Bearer ${sk}` } })).status,
    ).toBe(404);
    expect(
      (
        await fetch(G.managementUrl + '/api/admin/v1/whoami', {
          headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
        })
      ).status,
    ).toBe(404);
    await stop(G);
  });

  it('with ANIMA_MANAGEMENT_TOKEN: no or a wrong bearer is 401, the token or an admin token (even a viewer) is 200', async () => {
    const G = await gateway({ managementToken: MGMT_TOKEN, secretKeyPrevious: [K2] });
    const scrape = (token?: string) =>
      fetch(G.url + '/actuator/prometheus', token ? { headers: { authorization: `Bearer ${token}` } } : {});
    const none = await scrape();
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(((await none.json()) as { error: { code: string } }).error.code).toBe('missing_management_token');
    const wrong = await scrape('not-the-token-at-all');
    expect(wrong.status).toBe(401);
    expect(((await wrong.json()) as { error: { code: string } }).error.code).toBe('invalid_management_token');
    const right = await scrape(MGMT_TOKEN);
    expect(right.status).toBe(200);
    expect(await right.text()).toContain('anima_requests_total');
    expect((await scrape(ADMIN_TOKEN)).status).toBe(200);
    const viewer = (await adminApi(() => G.url)('POST', '/admin-tokens', {
      name: 'prometheus',
      role: 'viewer',
    })) as {
      token: string;
    };
    await waitFor(async () => (await scrape(viewer.token)).status === 200, 5_000, 50);

    // Liveness stays open; readiness answers its status to anyone, its components only with the bearer.
    expect((await fetch(G.url + '/actuator/health/liveness')).status).toBe(200);
    expect(await (await fetch(G.url + '/actuator/health/readiness')).json()).toEqual({ status: 'UP' });
    const detailed = (await (
      await fetch(G.url + '/actuator/health/readiness', {
        headers: { authorization: `Bearer ${MGMT_TOKEN}` },
      })
    ).json()) as { components?: unknown };
    expect(detailed.components).toBeDefined();
    await stop(G);
  });

  it('serve --workers 2: the primary serves the management port with every worker in one scrape', async () => {
    const [port, mport] = [await freePort(), await freePort()];
    const child = spawn(process.execPath, [CLI, 'serve', '--workers', '2'], {
      env: {
        ...process.env,
        DATABASE_URL: tdb.url,
        REDIS_URL,
        ANIMA_REDIS_PREFIX: prefix,
        ANIMA_SECRET_KEY: TEST_SECRET_KEY,
        ANIMA_SECRET_KEY_PREVIOUS: K2, // the rotation above left the credentials under K2
        ANIMA_OUTBOUND_ALLOW: '127.0.0.0/8,::1',
        ANIMA_PORT: String(port),
        ANIMA_MANAGEMENT_PORT: String(mport),
        ANIMA_MANAGEMENT_TOKEN: MGMT_TOKEN,
        ANIMA_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    procs.push(child);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor(
      () => /Management endpoints: http:\/\/127\.0\.0\.1:\d+\/actuator/.test(out),
      60_000,
      50,
    ).catch(() => {
      throw new Error('the cluster did not start: ' + out);
    });
    const base = `http://127.0.0.1:${port}`;
    const mbase = `http://127.0.0.1:${mport}`;
    const auth = { headers: { authorization: `Bearer ${MGMT_TOKEN}` } };
    // 40 requests, each on a new connection (dealt across the workers), count 40 in every scrape of the
    // management port: the primary adds up every worker, so no scrape sees only one worker's share.
    for (let i = 0; i < 40; i++) expect(await chatOwnConnection(base)).toBe(200);
    for (let i = 0; i < 5; i++) {
      const t = await (await fetch(mbase + '/actuator/prometheus', auth)).text();
      expect(requestsTotal(t, { dialect: 'openai_chat' })).toBe(40);
      if (i === 0) {
        expect(requestsTotal(t, { dialect: 'openai_chat', worker: '1' })).toBeGreaterThan(0);
        expect(requestsTotal(t, { dialect: 'openai_chat', worker: '2' })).toBeGreaterThan(0);
      }
    }
    expect((await fetch(base + '/actuator/prometheus')).status).toBe(404);
    expect((await fetch(mbase + '/actuator/prometheus')).status).toBe(401);
    // One scrape holds every worker's series, each with its `worker` label.
    const text = await (await fetch(mbase + '/actuator/prometheus', auth)).text();
    expect(text).toMatch(/anima_dependency_up\{[^}]*worker="1"/);
    expect(text).toMatch(/anima_dependency_up\{[^}]*worker="2"/);
    expect(text).toMatch(/anima_requests_total\{[^}]*worker="[12]"/);
    expect(text).toContain('anima_cluster_workers_unanswered 0');
    // One family, one HELP line: a merged exposition, not two concatenated.
    expect(text.match(/^# HELP anima_requests_total /gm)?.length).toBe(1);
    const ready = (await (await fetch(mbase + '/actuator/health/readiness', auth)).json()) as {
      status: string;
      components: Record<string, { status: string }>;
    };
    expect(ready.status).toBe('UP');
    expect(Object.keys(ready.components).sort()).toEqual(['worker-1', 'worker-2']);
    expect(await (await fetch(mbase + '/actuator/health/readiness')).json()).toEqual({ status: 'UP' });
    child.kill('SIGTERM');
    expect(await exited(child)).toBe(0);
  }, 90_000);
});
