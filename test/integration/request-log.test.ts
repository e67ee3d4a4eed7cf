/**
 * The request log on real PostgreSQL: an operator finds a failed request by key and minute, sees the
 * channels tried and why, and its cost; pages are stable; a request id a client got finds its row; rows
 * are written in batches off the request path, into day partitions that retention drops whole.
 */
import { sql } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { insertAlias, insertApp, insertChannel, insertKey } from '../../src/config/repo.js';
import { RequestLog } from '../../src/observability/request-log.js';
import type { DbHandle } from '../../src/store/db.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import type { FakeUpstream } from '../../fakes/common.js';
import {
  ADMIN_TOKEN,
  type TestDatabase,
  adminApi,
  createTestDatabase,
  freePort,
  openTestDb,
  startTestGateway,
  TcpProxy,
  waitFor,
} from '../helpers.js';

type TGateway = Awaited<ReturnType<typeof startTestGateway>>;
let tdb: TestDatabase;
let dbh: DbHandle;
let gw: TGateway;
let up: FakeUpstream;
let sk: string;
let keyId: string;
let otherSk: string;
const api = adminApi(() => gw.url);
let appId: string;

beforeAll(async () => {
  tdb = await createTestDatabase();
  dbh = await openTestDb(tdb.url);
  up = await startFakeOpenAI({ name: 'rl-up' });
  const dead = await freePort();
  const fast = { timeouts: { connectMs: 300, firstByteMs: 2_000, idleMs: 2_000, totalMs: 5_000 } };
  await insertChannel(dbh.db, {
    code: 'gone',
    provider: 'openai',
    baseUrl: `http://127.0.0.1:${dead}/v1`,
    credential: 'gone-secret',
    settings: fast,
  });
  await insertChannel(dbh.db, {
    code: 'ok',
    provider: 'openai',
    baseUrl: up.url + '/v1',
    credential: 'ok-secret',
    settings: fast,
  });
  await insertAlias(dbh.db, {
    name: 'chain',
    tiers: [[{ channel: 'gone', model: 'm' }], [{ channel: 'ok', model: 'm' }]],
  });
  await insertAlias(dbh.db, { name: 'broken', tiers: [[{ channel: 'gone', model: 'm' }]] });
  await dbh.db
    .insertInto('price')
    .values({
      alias: 'chain',
      sale_input_per_mtok: 2_000_000,
      sale_output_per_mtok: 4_000_000,
      cost_input_per_mtok: 1_000_000,
      cost_output_per_mtok: 2_000_000,
    })
    .execute();
  const app = await insertApp(dbh.db, 'rl');
  appId = app;
  const k = await insertKey(dbh.db, app);
  ({ sk } = k);
  keyId = k.id;
  ({ sk: otherSk } = await insertKey(dbh.db, app));
  gw = await startTestGateway({ databaseUrl: tdb.url, adminToken: ADMIN_TOKEN });
}, 60_000);

afterAll(async () => {
  await gw?.close();
  await up?.close();
  await dbh?.close();
  await tdb?.drop();
});

/** A finished request as the log sees it, started at `when`. */
const ctxAt = (id: string, when: Date) =>
  ({
    id,
    elapsedMs: () => Math.max(1, Date.now() - when.getTime()),
    app: null,
    key: null,
    aliasName: null,
    dialect: 'openai',
    channel: null,
    upstreamModel: null,
    stream: false,
    attempts: 0,
    route: [],
    status: 200,
    outcome: 'ok',
    error: null,
    usage: null,
    costMicros: null,
    saleMicros: null,
    ttfbMs: null,
    cacheHit: false,
    clientAborted: false,
  }) as unknown as Parameters<RequestLog['record']>[0];

const chat = (key: string, model: string) =>
  fetch(gw.url + '/v1/chat/completions', {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }),
  });

describe('request log', () => {
  it('a failed request is found by key and minute, with the channels tried and why; a served one with its cost', async () => {
    const t0 = new Date();
    const served = await chat(sk, 'chain');
    expect(served.status).toBe(200);
    const servedId = served.headers.get('x-request-id')!;
    const failed = await chat(sk, 'broken');
    expect(failed.status).toBeGreaterThanOrEqual(500);
    const failedId = failed.headers.get('x-request-id')!;
    expect((await chat(otherSk, 'chain')).status).toBe(200);
    const anon = await fetch(gw.url + '/v1/chat/completions', { method: 'POST', body: '{}' });
    expect(anon.status).toBe(401);
    // written off the request path: the rows arrive on the writer's flush
    await gw.requestLog!.flush();
    const minute = new Date(Math.floor(t0.getTime() / 60_000) * 60_000);
    const to = new Date(minute.getTime() + 120_000);
    const mine = await api(
      'GET',
      `/requests?key=${keyId}&from=${minute.toISOString()}&to=${to.toISOString()}`,
    );
    expect(mine.data.map((r: { id: string }) => r.id)).toEqual([failedId, servedId]); // newest first
    const [f, s] = mine.data;
    expect(f).toMatchObject({ key_id: keyId, alias: 'broken', status: failed.status, outcome: 'failed' });
    expect(f.error_code).toBeTruthy();
    expect(f.route).toEqual([expect.objectContaining({ channel: 'gone', what: 'failed' })]);
    expect(s).toMatchObject({ alias: 'chain', channel: 'ok', status: 200, outcome: 'fallback', attempts: 2 });
    expect(s.route).toEqual([expect.objectContaining({ channel: 'gone', what: 'failed' })]);
    expect(Number(s.sale_micros)).toBeGreaterThan(Number(s.cost_micros));
    expect(Number(s.cost_micros)).toBeGreaterThan(0);
    expect(s.tokens_in).toBeGreaterThan(0);
    expect(s.latency_ms).toBeGreaterThan(0);
    // errors only, and one request by the id its client got
    const errs = await api('GET', `/requests?key=${keyId}&errors=true`);
    expect(errs.data.map((r: { id: string }) => r.id)).toEqual([failedId]);
    expect((await api('GET', `/requests/${servedId}`)).id).toBe(servedId);
    // the anonymous request is logged too (401 before anything else), with no key
    const all = await api('GET', `/requests?status=401`);
    expect(all.data.length).toBeGreaterThanOrEqual(1);
    expect(all.data[0].key_id).toBeNull();
  });

  it('spend per key: the report groups by key, a key has its figures, a postpaid wallet says what is owed', async () => {
    // every sale so far is journaled (the writer is asynchronous: wait for the ledger to have them all)
    const served = (await api('GET', `/requests?app=${appId}&status=200&limit=500`)).data as Array<{
      key_id: string;
      sale_micros: string;
    }>;
    const byKey = new Map<string, bigint>();
    for (const r of served) byKey.set(r.key_id, (byKey.get(r.key_id) ?? 0n) + BigInt(r.sale_micros));
    const total = [...byKey.values()].reduce((a, b) => a + b, 0n);
    let report: Array<{ key: string; revenue_micros: string; journals: number }> = [];
    await waitFor(async () => {
      report = (await api('GET', `/billing/report?group_by=key&app=${appId}`)).data;
      return report.reduce((a, r) => a + r.journals, 0) === served.length;
    }, 15_000);
    expect(new Map(report.map((r) => [r.key, BigInt(r.revenue_micros)]))).toEqual(byKey);
    expect(report.find((r) => r.key === keyId)!.journals).toBe(1);
    // the key's page: requests and errors from the request log, its spend
    const sum = await api('GET', `/requests/summary?key=${keyId}`);
    expect(sum).toMatchObject({ requests: 2, errors: 1, sale_micros: String(byKey.get(keyId)) });
    // postpaid: nothing funded or spent from a wallet, and what the app owes is its sales
    const wallet = await api('GET', `/apps/${appId}/wallet`);
    expect(wallet.owed_micros).toBe(String(total));
    const bad = await fetch(`${gw.url}/api/admin/v1/billing/report?group_by=colour`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(bad.status).toBe(400);
  });

  it('cursor paging walks every row once, newest first, and refuses a cursor it did not give', async () => {
    for (let i = 0; i < 7; i++) expect((await chat(otherSk, 'chain')).status).toBe(200);
    await gw.requestLog!.flush();
    const seen: string[] = [];
    let cursor: string | null = '';
    let pages = 0;
    do {
      const page: { data: Array<{ id: string }>; next_cursor: string | null } = await api(
        'GET',
        `/requests?limit=3${cursor ? `&cursor=${cursor}` : ''}`,
      );
      seen.push(...page.data.map((r) => r.id));
      cursor = page.next_cursor;
      pages++;
    } while (cursor);
    expect(new Set(seen).size).toBe(seen.length);
    const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM request_log`.execute(dbh.db);
    expect(seen.length).toBe(Number(rows[0]!.n));
    expect(pages).toBe(Math.ceil(seen.length / 3) + (seen.length % 3 === 0 ? 1 : 0));
    const bad = await fetch(`${gw.url}/api/admin/v1/requests?cursor=nope`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(bad.status).toBe(400);
  });

  it('rows go to day partitions; retention drops whole partitions, and rows past it', async () => {
    const mk = (retentionDays: number) =>
      new RequestLog(dbh.db, pino({ level: 'silent' }), {
        batch: 100,
        flushMs: 60_000,
        maxBuffered: 1_000,
        retentionDays,
        instance: 'test',
      });
    const day = 86_400_000;
    const at = (daysAgo: number) => new Date(Math.floor(Date.now() / day - daysAgo) * day + 3_600_000);
    const parts = async () =>
      (
        await sql<{ name: string }>`SELECT c.relname AS name FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
          WHERE p.relname = 'request_log' ORDER BY 1`.execute(dbh.db)
      ).rows.map((r) => r.name);
    const nameOf = (d: Date) => 'request_log_' + d.toISOString().slice(0, 10).replace(/-/g, '');
    // kept for 3 days: a row from 2 days ago makes its day's partition
    const keep3 = mk(3);
    keep3.record(ctxAt('req_2d', at(2)));
    // past retention: dropped (counted), never written anywhere
    keep3.record(ctxAt('req_10d', at(10)));
    await keep3.flush();
    expect([keep3.written, keep3.dropped]).toEqual([1, 1]);
    expect(await parts()).toContain(nameOf(at(2)));
    expect(await parts()).not.toContain(nameOf(at(10)));
    // a writer kept for 1 day drops that partition whole on its (hourly) pass, and makes today's
    const keep1 = mk(1);
    keep1.record(ctxAt('req_now', new Date()));
    await keep1.flush();
    expect(await parts()).not.toContain(nameOf(at(2)));
    expect(await parts()).toContain(nameOf(new Date()));
    const { rows } = await sql<{ id: string }>`SELECT id FROM request_log WHERE instance = 'test'`.execute(
      dbh.db,
    );
    expect(rows.map((r) => r.id)).toEqual(['req_now']);
  });

  it('a batch written again (its answer lost) lands once; quotes, nulls and routes survive the column arrays', async () => {
    const mk = () =>
      new RequestLog(dbh.db, pino({ level: 'silent' }), {
        batch: 100,
        flushMs: 60_000,
        maxBuffered: 1_000,
        retentionDays: 14,
        instance: 'twice',
      });
    type Ctx = Parameters<RequestLog['record']>[0];
    const at = (id: string, over: object) =>
      ({
        ...(ctxAt(id, new Date()) as object),
        elapsedMs: () => 5,
        aliasName: 'al"i\\as',
        ...over,
      }) as unknown as Ctx;
    const row = at('req_twice_1', {
      error: { code: 'a,b{c}"d' },
      status: 502,
      attempts: 2,
      route: [{ channel: 'gone', what: 'failed', reason: 'connect "refused"', ms: 1.5 }],
    });
    const now = vi.spyOn(Date, 'now').mockReturnValue(Date.now());
    const first = mk();
    const again = mk();
    try {
      first.record(row);
      first.record(at('req_twice_2', {}));
      again.record(row); // the same request at the same time: the key the first batch took
      again.record(at('req_twice_3', {}));
    } finally {
      now.mockRestore();
    }
    await first.flush();
    await again.flush();
    expect([first.written, again.written, again.failures]).toEqual([2, 2, 0]);
    const { rows } = await sql<{
      id: string;
      alias: string;
      error_code: string | null;
      route: unknown;
      tokens_in: number | null;
    }>`SELECT id, alias, error_code, route, tokens_in FROM request_log WHERE instance = 'twice' ORDER BY id`.execute(
      dbh.db,
    );
    expect(rows).toEqual([
      {
        id: 'req_twice_1',
        alias: 'al"i\\as',
        error_code: 'a,b{c}"d',
        route: [{ channel: 'gone', what: 'failed', reason: 'connect "refused"', ms: 1.5 }],
        tokens_in: null,
      },
      { id: 'req_twice_2', alias: 'al"i\\as', error_code: null, route: [], tokens_in: null },
      { id: 'req_twice_3', alias: 'al"i\\as', error_code: null, route: [], tokens_in: null },
    ]);
  });

  it('under load whole batches go; the rest waits for the next batch or the timer, not an INSERT of its own', async () => {
    const log = new RequestLog(dbh.db, pino({ level: 'silent' }), {
      batch: 10,
      flushMs: 60_000,
      maxBuffered: 1_000,
      retentionDays: 14,
      instance: 'whole',
    });
    // 23 rows while the first batch is being written: two batches of 10 go, 3 wait
    for (let i = 0; i < 23; i++) log.record(ctxAt(`req_whole_${i}`, new Date()));
    await waitFor(() => log.written === 20, 10_000);
    expect(log.pending).toBe(3);
    await log.flush();
    expect([log.written, log.pending]).toEqual([23, 0]);
    const { rows } = await sql<{
      n: bigint;
    }>`SELECT count(*) AS n FROM request_log WHERE instance = 'whole'`.execute(dbh.db);
    expect(rows[0]!.n).toBe(23n);
  });

  it('while the database is unreachable the rows wait (bounded), then arrive', async () => {
    const u = new URL(tdb.url);
    const proxy = await new TcpProxy({ host: u.hostname, port: Number(u.port || 5432) }).start();
    const via = new URL(tdb.url);
    via.port = String(proxy.port);
    const h = await openTestDb(via.toString());
    const log = new RequestLog(h.db, pino({ level: 'silent' }), {
      batch: 10,
      flushMs: 60_000,
      maxBuffered: 15,
      retentionDays: 14,
      instance: 'flaky',
    });
    try {
      proxy.down();
      for (let i = 0; i < 20; i++) log.record(ctxAt(`req_flaky_${i}`, new Date()));
      await log.flush();
      expect(log.failures).toBeGreaterThan(0);
      // bounded: what didn't fit was dropped and counted, nothing else lost
      expect(log.pending).toBe(15);
      expect(log.dropped).toBe(5);
      proxy.up();
      await waitFor(async () => {
        await log.flush();
        return log.pending === 0;
      }, 15_000);
      const { rows } = await sql<{
        id: string;
      }>`SELECT id FROM request_log WHERE instance = 'flaky' ORDER BY id`.execute(dbh.db);
      // the newest 15 kept, each once
      expect(rows.map((r) => r.id).sort()).toEqual(
        Array.from({ length: 15 }, (_, i) => `req_flaky_${i + 5}`).sort(),
      );
    } finally {
      await h.close();
      await proxy.close();
    }
  });
});
