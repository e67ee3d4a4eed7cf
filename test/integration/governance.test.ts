/**
 * One governance pipeline for every route (src/governance/pipeline.ts), on real PostgreSQL and Redis:
 * the key's quotas hold for media submissions as for chat, media requests are counted and their sale and
 * cost show in the metrics, and the ASYNC runner and a response-cache hit are settled exactly once.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type FakeMediaUpstream, startFakeOpenAI } from '../../fakes/index.js';
import { type Admitted, Governance } from '../../src/governance/pipeline.js';
import {
  REDIS_URL,
  type TestDatabase,
  adminApi,
  cleanupRedis,
  createTestDatabase,
  startTestGateway,
  testPool,
  testRedisPrefix,
  waitFor,
} from '../helpers.js';

type TGateway = Awaited<ReturnType<typeof startTestGateway>>;
let tdb: TestDatabase;
let prefix: string;
let G: TGateway;
let oai: FakeMediaUpstream;
let db: pg.Pool;
let appId: string;
const admin = adminApi(() => G.url);

/** Every settle call (the spy calls through), by the admitted request's booking id. */
const spy = vi.spyOn(Governance.prototype, 'settle');
const settledIds = () => spy.mock.calls.map((c) => (c[0] as Admitted).recordId);

const post = (path: string, sk: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(G.url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}`, ...headers },
    body: JSON.stringify(body),
  });
const chat = (sk: string, model = 'chat', content = 'hi') =>
  post('/v1/chat/completions', sk, { model, messages: [{ role: 'user', content }] });

async function keyWith(quota: Record<string, unknown> | null, key: Record<string, unknown> = {}) {
  const k = await admin('POST', `/apps/${appId}/keys`, { name: 'g', ...key });
  if (quota) await admin('POST', '/quotas', { scope: 'key', scope_id: k.key.id, ...quota });
  await waitFor(
    () => !!G.config.keyById(k.key.id) && (!quota || !!G.config.quota('key', k.key.id)),
    3_000,
    5,
  );
  return { sk: k.sk as string, id: k.key.id as string };
}

async function metrics(): Promise<string> {
  return (await fetch(G.url + '/actuator/prometheus')).text();
}
/** Sum of a metric's series whose labels contain every `match` fragment. */
function sum(text: string, name: string, ...match: string[]): number {
  let s = 0;
  for (const m of text.matchAll(new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`, 'gm')))
    if (match.every((f) => m[1]!.includes(f))) s += Number(m[2]);
  return s;
}

async function journals(where: string, arg: string) {
  await G.billing!.writer.flush();
  const r = await db.query(`SELECT j.idem_key FROM ledger_journal j WHERE ${where} = $1`, [arg]);
  return r.rows as Array<{ idem_key: string }>;
}

beforeAll(async () => {
  tdb = await createTestDatabase();
  prefix = testRedisPrefix();
  oai = await startFakeOpenAI({ name: 'gov-oai' });
  G = await startTestGateway({ databaseUrl: tdb.url, redisUrl: REDIS_URL, redisPrefix: prefix });
  db = testPool(tdb.url, 2);
  await admin('POST', '/channels', {
    code: 'oai',
    provider: 'openai',
    base_url: oai.url + '/v1',
    credential: 'k',
  });
  await admin('POST', '/aliases', {
    name: 'chat',
    chain: [{ targets: [{ channel: 'oai', model: 'gpt-4o-mini' }] }],
  });
  await admin('POST', '/aliases', {
    name: 'cached',
    chain: [{ targets: [{ channel: 'oai', model: 'gpt-4o-mini' }] }],
    cache_ttl_s: 60,
  });
  await admin('POST', '/aliases', {
    name: 'img',
    chain: [{ targets: [{ channel: 'oai', model: 'gpt-image-1' }] }],
  });
  const TOKENS = {
    sale_input_per_mtok: 2_000_000,
    sale_output_per_mtok: 4_000_000,
    cost_input_per_mtok: 1_000_000,
  };
  await admin('POST', '/prices', { alias: 'chat', ...TOKENS });
  await admin('POST', '/prices', { alias: 'cached', ...TOKENS, sale_per_cache_hit: 100 });
  await admin('POST', '/prices', { alias: 'img', sale_per_image: 40_000, cost_per_image: 20_000 });
  appId = (await admin('POST', '/apps', { name: 'gov' })).id as string;
  await waitFor(() => !!G.config.price('img', null) && !!G.config.app(appId), 3_000, 5);
}, 60_000);

afterAll(async () => {
  spy.mockRestore();
  await G?.close();
  await db?.end();
  await oai?.close();
  await cleanupRedis(prefix);
  await tdb?.drop();
});

describe('admission: the same quotas on every route', () => {
  it('a key with QPS 1 / burst 1 gets 429 on a burst of chat requests, and on a burst of image generations', async () => {
    const { sk } = await keyWith({ qps: 1, qps_burst: 1 });
    const chats = await Promise.all([0, 1, 2, 3].map(() => chat(sk)));
    expect(chats.filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(1);
    const refused = chats.filter((r) => r.status === 429);
    expect(refused.length).toBeGreaterThanOrEqual(2);
    expect(((await refused[0]!.json()) as any).error.code).toBe('rate_limit_exceeded');
    await new Promise((r) => setTimeout(r, 1_100));
    const images = await Promise.all(
      [0, 1, 2, 3].map(() =>
        post('/v1/images/generations?async=true', sk, { model: 'img', prompt: 'a fox' }),
      ),
    );
    expect(images.filter((r) => r.status === 202).length).toBeGreaterThanOrEqual(1);
    const limited = images.filter((r) => r.status === 429);
    expect(limited.length).toBeGreaterThanOrEqual(2);
    expect(((await limited[0]!.json()) as any).error.code).toBe('rate_limit_exceeded');
    expect(limited[0]!.headers.get('retry-after')).toBeTruthy();
  });

  it('a key with concurrency 1: two synchronous image generations at once, one is refused', async () => {
    const { sk } = await keyWith({ max_concurrency: 1 });
    const rs = await Promise.all(
      ['slow', 'x'].map((prompt) => post('/v1/images/generations', sk, { model: 'img', prompt })),
    );
    expect(rs.map((r) => r.status).sort()).toEqual([200, 429]);
    const refused = rs.find((r) => r.status === 429)!;
    expect(((await refused.json()) as any).error.code).toBe('concurrency_limit_exceeded');
  });
});

describe('metrics: media requests are counted with their sale and cost', () => {
  it('an image generation shows in anima_requests_total and in the sale/cost counters', async () => {
    const { sk } = await keyWith(null);
    const before = await metrics();
    const r = await post('/v1/images/generations', sk, { model: 'img', prompt: 'a lighthouse', n: 2 });
    expect(r.status).toBe(200);
    const taskId = r.headers.get('x-anima-task-id')!;
    await waitFor(async () => (await journals('j.task_id', taskId)).length === 1, 5_000, 20);
    const after = await metrics();
    const d = (name: string, ...m: string[]) => sum(after, name, ...m) - sum(before, name, ...m);
    expect(d('anima_requests_total', 'dialect="media_image"', 'alias="img"', 'outcome="ok"')).toBe(1);
    expect(d('anima_sale_micros_total', 'alias="img"', 'channel="oai"')).toBe(80_000);
    expect(d('anima_cost_micros_total', 'alias="img"', 'channel="oai"')).toBe(40_000);
  });
});

describe('settlement: exactly once', () => {
  it('an ASYNC request run by the task runner is settled (and booked) once, under its task id', async () => {
    const { sk } = await keyWith({ max_concurrency: 1 }, { queue_mode: 'ASYNC' });
    oai.setFault({ latencyMs: 300 });
    const holder = chat(sk);
    await new Promise((r) => setTimeout(r, 100));
    const r = await chat(sk, 'chat', 'deferred');
    expect(r.status).toBe(202);
    expect((await holder).status).toBe(200);
    oai.setFault(null);
    const task = (await r.json()) as { task_id: string };
    let t: any;
    await waitFor(
      async () => {
        t = await (
          await fetch(`${G.url}/v1/tasks/${task.task_id}`, { headers: { authorization: `Bearer ${sk}` } })
        ).json();
        return t.status === 'succeeded';
      },
      10_000,
      30,
    );
    await waitFor(async () => (await journals('j.task_id', task.task_id)).length === 1, 5_000, 20);
    expect(settledIds().filter((id) => id === `task:${task.task_id}`)).toHaveLength(1);
    expect(await journals('j.task_id', task.task_id)).toHaveLength(1);
  });

  it('a response-cache hit is settled once, at the cache price', async () => {
    const { sk } = await keyWith(null);
    const r1 = await chat(sk, 'cached', 'cache me');
    expect(r1.headers.get('x-anima-cache')).toBe('miss');
    await r1.text();
    await new Promise((r) => setTimeout(r, 100)); // the entry is stored after the answer ends
    const r2 = await chat(sk, 'cached', 'cache me');
    expect(r2.headers.get('x-anima-cache')).toBe('hit');
    await r2.text();
    const id = r2.headers.get('x-request-id')!;
    await waitFor(async () => (await journals('j.request_id', id)).length === 1, 5_000, 20);
    expect(settledIds().filter((x) => x === id)).toHaveLength(1);
    const rows = await db.query(
      `SELECT e.credit::text AS c FROM ledger_journal j JOIN ledger_entry e ON e.journal_id = j.id JOIN ledger_account a ON a.id = e.account_id WHERE j.request_id = $1 AND a.code = 'revenue'`,
      [id],
    );
    expect(rows.rows.map((x) => x.c)).toEqual(['100']);
  });
});
