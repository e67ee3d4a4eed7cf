/**
 * Test harness: real PostgreSQL (a fresh database per test file) and real Redis (a fresh key prefix per
 * gateway group), or the embedded default (PGlite in memory + in-process coordination).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { Writable } from 'node:stream';
import pg from 'pg';
import { Redis } from 'ioredis';
import { expect } from 'vitest';
import { randomId } from '../src/core/ids.js';
import { type Gateway, type GatewayOptions, startGateway } from '../src/app/gateway.js';
import type { Settings } from '../src/app/settings.js';
import { type DbHandle, openDatabase } from '../src/store/db.js';
import { waitFor } from './wait.js';

export { waitFor };

export const PG_ADMIN_URL = process.env.TEST_PG_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const ADMIN_TOKEN = 'ak-test-admin-token-0123456789';
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
/** The key test gateways seal credentials with (production mode needs one: see src/app/security.ts). */
export const TEST_SECRET_KEY = 'anima-test-secret-key-0123456789';

/**
 * The unit lane (vitest.unit.config.ts) sets ANIMA_TEST_NO_SERVICES: every helper below that reaches
 * PostgreSQL or Redis calls this first, so a unit test that needs a service fails loudly there.
 */
export function assertServicesAllowed(what: string): void {
  if (process.env.ANIMA_TEST_NO_SERVICES === '1')
    throw new Error(
      `${what} needs a service, but this is the unit lane (ANIMA_TEST_NO_SERVICES=1): move the test to test/integration`,
    );
}

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

/** CREATE DATABASE anima_t_<random>: each test file owns its schema and can run beside the others. */
export async function createTestDatabase(): Promise<TestDatabase> {
  assertServicesAllowed('createTestDatabase (PostgreSQL)');
  const name = 'anima_t_' + randomId(10).toLowerCase();
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const u = new URL(PG_ADMIN_URL);
  u.pathname = '/' + name;
  return {
    url: u.toString(),
    name,
    async drop() {
      const c = new pg.Client({ connectionString: PG_ADMIN_URL });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

/**
 * A test's own pool on its database. pg.Pool.end() resolves before its clients' connections have closed,
 * and the DROP DATABASE ... WITH (FORCE) that follows terminates them: an idle client then reports the
 * server's 57P01 through the pool's 'error' event, which without a listener is an uncaught exception.
 */
export function testPool(url: string, max: number): pg.Pool {
  assertServicesAllowed('testPool (PostgreSQL)');
  const pool = new pg.Pool({ connectionString: url, max });
  pool.on('error', () => {});
  return pool;
}

export function testRedisPrefix(): string {
  return `anima-test:${randomId(8)}:`;
}

export async function cleanupRedis(prefix: string): Promise<void> {
  assertServicesAllowed('cleanupRedis (Redis)');
  const r = new Redis(REDIS_URL);
  let cursor = '0';
  do {
    const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await r.del(...keys);
  } while (cursor !== '0');
  r.disconnect();
}

/** A log sink that keeps every line, so tests can assert on logs (and on secrets never appearing). */
export class LogCapture extends Writable {
  readonly lines: string[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    for (const l of chunk.toString('utf8').split('\n')) if (l) this.lines.push(l);
    cb();
  }
  records(): Array<Record<string, unknown>> {
    return this.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  }
}

export function testSettings(over: Partial<Settings> = {}): Settings {
  return {
    host: '127.0.0.1',
    port: 0,
    databaseUrl: undefined,
    dataDir: 'memory://',
    redisUrl: undefined,
    redisPrefix: testRedisPrefix(),
    redisClusterNodes: undefined,
    logLevel: 'info',
    logFormat: 'json',
    requestLog: true,
    requestLogRetentionDays: 14,
    bodyLimit: 1024 * 1024,
    requestTimeoutMs: 10_000,
    configRefreshMs: 60_000,
    breakerSyncMs: 1_000,
    dbPoolSize: 5,
    adminToken: ADMIN_TOKEN,
    leaseTtlMs: 30_000,
    instanceCount: 1,
    taskPollMs: 200,
    taskLeaseMs: 5_000,
    taskDeadlineMs: 60_000,
    drainMs: 2_000,
    webhookBackoffMs: 100,
    // Production mode refuses to start without a key: tests take the encrypted path, as production does.
    secretKey: TEST_SECRET_KEY,
    billing: true,
    billingBatch: 500,
    billingLingerMs: 20,
    billingStaleMs: 30_000,
    billingHoldTtlMs: 600_000,
    mediaPollMs: 40,
    mediaPollCapMs: 200,
    mediaDeadlineMs: { image: 60_000, video: 60_000, music: 60_000 },
    mediaCallTimeoutMs: 5_000,
    // The fake upstreams and receivers listen on loopback: operator-set URLs may reach it here.
    outboundAllow: ['127.0.0.0/8', '::1'],
    ...over,
  };
}

export async function startTestGateway(
  over: Partial<Settings> = {},
  opts: GatewayOptions = {},
): Promise<Gateway & { logs: LogCapture }> {
  if (over.databaseUrl) assertServicesAllowed('startTestGateway with databaseUrl (PostgreSQL)');
  if (over.redisUrl || over.redisClusterNodes)
    assertServicesAllowed('startTestGateway with redisUrl (Redis)');
  const logs = new LogCapture();
  const gw = await startGateway(testSettings(over), { defaultMetrics: false, logDestination: logs, ...opts });
  return Object.assign(gw, { logs });
}

export async function openTestDb(url: string | undefined): Promise<DbHandle> {
  if (url) assertServicesAllowed('openTestDb with a URL (PostgreSQL)');
  return openDatabase({ databaseUrl: url, dataDir: 'memory://' });
}

/**
 * Starts a real `anima serve` process (from the build) and resolves its URL once it listens.
 * `child` is returned at once so a test can kill it whenever it likes.
 */
export function spawnGateway(env: Record<string, string | undefined>): {
  child: ChildProcess;
  url: Promise<string>;
} {
  if (env.DATABASE_URL || env.REDIS_URL) assertServicesAllowed('spawnGateway with DATABASE_URL/REDIS_URL');
  const child = spawn(process.execPath, ['dist/src/app/cli.js', 'serve'], {
    env: {
      ...process.env,
      ANIMA_PORT: '0',
      ANIMA_LOG_LEVEL: 'warn',
      ANIMA_OUTBOUND_ALLOW: '127.0.0.0/8,::1', // the fakes listen on loopback
      ANIMA_SECRET_KEY: TEST_SECRET_KEY,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const url = new Promise<string>((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error('gateway process did not start: ' + out)), 30_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/[\d.:]+)/.exec(out);
      if (m) {
        clearTimeout(t);
        resolve(m[1]!);
      }
    });
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`gateway exited ${code}: ${out}`));
    });
  });
  url.catch(() => {}); // a test that kills the child before it listens doesn't care
  return { child, url };
}

/** A spare TCP port on loopback. */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const p = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return p;
}

/** An admin API caller for a gateway URL: throws on any status >= 300, returns the parsed body. */
export function adminApi(base: () => string, token = ADMIN_TOKEN) {
  return async (method: string, path: string, body?: unknown, ifMatch?: number): Promise<any> => {
    const r = await fetch(`${base()}/api/admin/v1${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body ? { 'content-type': 'application/json' } : {}),
        ...(ifMatch ? { 'if-match': `"${ifMatch}"` } : {}),
      },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const t = await r.text();
    if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${t}`);
    return t ? JSON.parse(t) : null;
  };
}

/**
 * A TCP proxy in front of a real server (PostgreSQL, Redis) that a test can cut: `down()` drops every
 * connection and refuses new ones (as a stopped server would), `up()` lets them through again. Lets a
 * test take "the database" away from one gateway without stopping the server the other suites share.
 */
export class TcpProxy {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private cut = false;
  port = 0;
  /** Holds every reply (target to client) this long before passing it on, in order. */
  replyDelayMs = 0;
  /** When set, every chunk a client sends is recorded with the time it passed. */
  sent: Array<{ at: number; data: Buffer }> | null = null;
  constructor(private readonly target: { host: string; port: number }) {}

  async start(): Promise<this> {
    this.server = createServer((client) => {
      if (this.cut) {
        client.destroy();
        return;
      }
      const upstream = connect(this.target.port, this.target.host);
      this.sockets.add(client).add(upstream);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.on('data', (d: Buffer) => {
        this.sent?.push({ at: Date.now(), data: d });
        upstream.write(d);
      });
      upstream.on('data', (d: Buffer) => {
        if (this.replyDelayMs > 0) setTimeout(() => client.writable && client.write(d), this.replyDelayMs);
        else client.write(d);
      });
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  down(): void {
    this.cut = true;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  up(): void {
    this.cut = false;
  }

  async close(): Promise<void> {
    this.down();
    await new Promise((r) => this.server?.close(r));
  }
}

/**
 * A redis-server of the test's own on 127.0.0.1:`port` (`args` appended: persistence, --dir), resolved
 * once it accepts connections, so a suite can kill, flush or restart it without touching the shared one.
 */
export async function startRedisServer(port: number, args: string[] = []): Promise<ChildProcess> {
  assertServicesAllowed('startRedisServer (redis-server)');
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', ...args], {
    stdio: 'ignore',
  });
  await waitFor(
    () =>
      new Promise((res) => {
        const s = connect(port, '127.0.0.1', () => {
          s.destroy();
          res(true);
        });
        s.on('error', () => res(false));
      }),
    10_000,
    20,
  );
  return child;
}

/**
 * The one sale journal of a request, once the journal writer has written it (flushed while waiting): its
 * channel, usage and entries, checked to balance and to move money.
 */
export async function saleJournalOf(gw: Pick<Gateway, 'billing'>, db: pg.Pool, requestId: string | null) {
  expect(requestId).toBeTruthy();
  let rows: Array<{ usage: any; channel: string; entries: Array<{ d: string; c: string }> }> = [];
  await waitFor(
    async () => {
      await gw.billing!.writer.flush();
      const r = await db.query(
        `SELECT j.channel, j.usage,
           (SELECT json_agg(json_build_object('d', e.debit::text, 'c', e.credit::text)) FROM ledger_posting e WHERE e.journal_id = j.id) AS entries
         FROM ledger_journal j WHERE j.kind = 'sale' AND j.request_id = $1`,
        [requestId],
      );
      rows = r.rows;
      return rows.length > 0;
    },
    5_000,
    50,
  );
  expect(rows).toHaveLength(1);
  const j = rows[0]!;
  const debit = j.entries.reduce((s, e) => s + BigInt(e.d), 0n);
  const credit = j.entries.reduce((s, e) => s + BigInt(e.c), 0n);
  expect(debit).toBe(credit);
  expect(debit).toBeGreaterThan(0n);
  return j;
}
