/**
 * One governance pipeline for every route (src/governance/pipeline.ts), on real PostgreSQL and Redis:
 * the key's quotas hold for media submissions as for chat, media requests are counted and their sale and
 * cost show in the metrics, and the ASYNC runner and a response-cache hit are settled exactly once.
 *
 * Then, route by route (one table): admission (a key past its QPS gets a 429 on that route), settlement
 * (one booking with the right sale) and metrics (anima_requests_total under the route's dialect or label,
 * the sale and cost counters moving by what was booked). The ASYNC runner, the response cache and an
 * ASYNC key's deferred media jobs have their own cases below the table.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  type FakeMediaUpstream,
  type FakeUpstream,
  startFakeAnthropic,
  startFakeGemini,
  startFakeJobs,
  startFakeOpenAI,
  startFakeRerank,
} from '../../fakes/index.js';
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
let an: FakeUpstream;
let gm: FakeUpstream;
let jobs: FakeMediaUpstream;
/** Upstreams of their own for the cases that slow them down (ASYNC runner, deferred media jobs). */
let slowChat: FakeMediaUpstream;
let slowImg: FakeMediaUpstream;
let jina: FakeUpstream;
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
  [oai, an, gm, jobs, slowChat, slowImg] = await Promise.all([
    startFakeOpenAI({ name: 'gov-oai' }),
    startFakeAnthropic({ name: 'gov-an' }),
    startFakeGemini({ name: 'gov-gm' }),
    startFakeJobs({ name: 'gov-jobs' }),
    startFakeOpenAI({ name: 'gov-slow-chat' }),
    startFakeOpenAI({ name: 'gov-slow-img' }),
  ]);
  jina = await startFakeRerank({ name: 'gov-jina', flavor: 'jina' });
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
  await setupRoutes(TOKENS);
  appId = (await admin('POST', '/apps', { name: 'gov' })).id as string;
  await waitFor(
    () => !!G.config.price('img', null) && !!G.config.price('r-suno', null) && !!G.config.app(appId),
    3_000,
    5,
  );
}, 60_000);

/** The channels, aliases and prices of the per-route table and the ASYNC cases: one alias per route. */
async function setupRoutes(TOKENS: Record<string, number>): Promise<void> {
  const channel = (code: string, provider: string, base_url: string) =>
    admin('POST', '/channels', { code, provider, base_url, credential: 'k' });
  await channel('an', 'anthropic', an.url);
  await channel('gm', 'gemini', gm.url + '/v1beta');
  await channel('jobs', 'jobs', jobs.url + '/v1');
  await channel('slow-chat', 'openai', slowChat.url + '/v1');
  await channel('slow-img', 'openai', slowImg.url + '/v1');
  await channel('jina', 'openai_compatible', jina.url + '/v1');
  const alias = (name: string, channel: string, model: string) =>
    admin('POST', '/aliases', { name, chain: [{ targets: [{ channel, model }] }] });
  for (const [name, ch, model] of [
    ['r-chat', 'oai', 'gpt-4o-mini'],
    ['r-claude', 'an', 'claude-sonnet-4'],
    ['r-resp', 'oai', 'gpt-4o-mini'],
    ['r-gem', 'gm', 'gemini-2.5-flash'],
    ['r-emb', 'oai', 'text-embedding-3-small'],
    ['r-gemb', 'gm', 'gemini-embedding-001'],
    ['r-async', 'slow-chat', 'gpt-4o-mini'],
    ['r-cmpl', 'oai', 'gpt-3.5-turbo-instruct'],
    ['r-mod', 'oai', 'omni-moderation-latest'],
    ['r-count', 'an', 'claude-sonnet-4'],
    ['r-rerank', 'jina', 'jina-reranker-v2-base-multilingual'],
  ]) {
    await alias(name!, ch!, model!);
    await admin('POST', '/prices', { alias: name, ...TOKENS });
  }
  await alias('r-tts', 'oai', 'tts-1');
  await admin('POST', '/prices', { alias: 'r-tts', sale_per_mchar: 30_000_000, cost_per_mchar: 15_000_000 });
  for (const a of ['r-stt', 'r-tr']) {
    await alias(a, 'oai', 'whisper-1');
    await admin('POST', '/prices', { alias: a, sale_per_audio_second: 200, cost_per_audio_second: 100 });
  }
  for (const [a, ch] of [
    ['r-edit', 'oai'],
    ['r-img', 'oai'],
    ['img-q', 'slow-img'],
  ]) {
    await alias(a!, ch!, 'gpt-image-1');
    await admin('POST', '/prices', { alias: a, sale_per_image: 40_000, cost_per_image: 20_000 });
  }
  await alias('r-video', 'oai', 'sora-2');
  await admin('POST', '/prices', {
    alias: 'r-video',
    sale_per_video_second: 100_000,
    cost_per_video_second: 50_000,
  });
  for (const a of ['r-music', 'r-suno']) {
    await alias(a, 'jobs', 'chirp-v4');
    await admin('POST', '/prices', { alias: a, sale_per_track: 30_000, cost_per_track: 10_000 });
  }
}

afterAll(async () => {
  spy.mockRestore();
  await G?.close();
  await db?.end();
  await Promise.all([oai, an, gm, jobs, slowChat, slowImg, jina].map((u) => u?.close()));
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
      `SELECT e.credit::text AS c FROM ledger_journal j JOIN ledger_posting e ON e.journal_id = j.id JOIN ledger_account a ON a.id = e.account_id WHERE j.request_id = $1 AND a.code = 'revenue'`,
      [id],
    );
    expect(rows.rows.map((x) => x.c)).toEqual(['100']);
  });
});

/** A sale journal's figures. */
interface Booking {
  idem_key: string;
  sale: number;
  cost: number;
  usage: Record<string, unknown>;
}

async function bookings(where: string, arg: string): Promise<Booking[]> {
  await G.billing!.writer.flush();
  const r = await db.query(
    `SELECT idem_key, (usage->>'sale_micros')::bigint::int AS sale, (usage->>'cost_micros')::bigint::int AS cost, usage
     FROM ledger_journal WHERE kind = 'sale' AND ${where} = $1`,
    [arg],
  );
  return r.rows as Booking[];
}

async function taskOf(sk: string, id: string): Promise<Record<string, any>> {
  const r = await fetch(`${G.url}/v1/tasks/${id}`, { headers: { authorization: `Bearer ${sk}` } });
  return (await r.json()) as Record<string, any>;
}

const png = Buffer.from('89504e470d0a1a0a' + '00'.repeat(64), 'hex');
const form = (fields: Record<string, string>, file: [string, Blob, string]) => {
  const f = new FormData();
  for (const [k, v] of Object.entries(fields)) f.set(k, v);
  f.set(...file);
  return f;
};
const upload = (path: string, sk: string, f: FormData) =>
  fetch(G.url + path, { method: 'POST', headers: { authorization: `Bearer ${sk}` }, body: f });
const tokens = (u: Record<string, unknown>) => ({
  sale: 2 * Number(u.input_tokens) + 4 * Number(u.output_tokens),
  cost: Number(u.input_tokens),
});

interface Route {
  name: string;
  alias: string;
  /** anima_requests_total's dialect label: the dialect, or a media route's label. */
  label: string;
  send: (sk: string) => Promise<Response>;
  /** A media submission: the task its answer names (its job is booked under the task id). */
  task?: (r: Response, body: any) => string;
  /** The sale and cost the booking must carry, from the journal's usage where the upstream decides it. */
  priced: (u: Record<string, unknown>) => { sale: number; cost: number };
  /** Free by decision (a token count): admitted and counted, never booked. */
  free?: boolean;
}

const ROUTES: Route[] = [
  {
    name: 'openai_chat',
    alias: 'r-chat',
    label: 'openai_chat',
    send: (sk) =>
      post('/v1/chat/completions', sk, { model: 'r-chat', messages: [{ role: 'user', content: 'hi' }] }),
    priced: tokens,
  },
  {
    name: 'anthropic_messages',
    alias: 'r-claude',
    label: 'anthropic_messages',
    send: (sk) =>
      post(
        '/v1/messages',
        sk,
        { model: 'r-claude', max_tokens: 32, messages: [{ role: 'user', content: 'hi' }] },
        { 'anthropic-version': '2023-06-01' },
      ),
    priced: tokens,
  },
  {
    name: 'openai_responses',
    alias: 'r-resp',
    label: 'openai_responses',
    send: (sk) => post('/v1/responses', sk, { model: 'r-resp', input: 'hi' }),
    priced: tokens,
  },
  {
    name: 'gemini',
    alias: 'r-gem',
    label: 'gemini',
    send: (sk) =>
      post('/v1beta/models/r-gem:generateContent', sk, {
        contents: [{ role: 'user', parts: [{ text: 'hi' }] }],
      }),
    priced: tokens,
  },
  {
    name: 'openai_embeddings',
    alias: 'r-emb',
    label: 'openai_embeddings',
    send: (sk) => post('/v1/embeddings', sk, { model: 'r-emb', input: 'hello world' }),
    priced: tokens,
  },
  {
    name: 'gemini_embed',
    alias: 'r-gemb',
    label: 'gemini_embed',
    send: (sk) =>
      post('/v1beta/models/r-gemb:embedContent', sk, { content: { parts: [{ text: 'hello world' }] } }),
    priced: tokens,
  },
  {
    name: 'openai_speech',
    alias: 'r-tts',
    label: 'openai_speech',
    send: (sk) => post('/v1/audio/speech', sk, { model: 'r-tts', input: 'hello there', voice: 'alloy' }),
    priced: () => ({ sale: 30 * 'hello there'.length, cost: 15 * 'hello there'.length }),
  },
  {
    name: 'openai_transcription',
    alias: 'r-stt',
    label: 'openai_transcription',
    // 16,000 bytes: one second of audio for the fake (see fakes/audio.ts).
    send: (sk) =>
      upload(
        '/v1/audio/transcriptions',
        sk,
        form({ model: 'r-stt' }, ['file', new Blob([Buffer.alloc(16_000, 1)]), 'a.wav']),
      ),
    priced: () => ({ sale: 200, cost: 100 }),
  },
  {
    name: 'openai_translation',
    alias: 'r-tr',
    label: 'openai_translation',
    send: (sk) =>
      upload(
        '/v1/audio/translations',
        sk,
        form({ model: 'r-tr' }, ['file', new Blob([Buffer.alloc(16_000, 1)]), 'a.wav']),
      ),
    priced: () => ({ sale: 200, cost: 100 }),
  },
  {
    name: 'openai_image_edit',
    alias: 'r-edit',
    label: 'openai_image_edit',
    send: (sk) =>
      upload(
        '/v1/images/edits',
        sk,
        form({ model: 'r-edit', prompt: 'a hat' }, [
          'image',
          new Blob([png], { type: 'image/png' }),
          'a.png',
        ]),
      ),
    priced: () => ({ sale: 40_000, cost: 20_000 }),
  },
  {
    name: 'media image (synchronous)',
    alias: 'r-img',
    label: 'media_image',
    send: (sk) => post('/v1/images/generations', sk, { model: 'r-img', prompt: 'a fox', n: 2 }),
    task: (r) => r.headers.get('x-anima-task-id')!,
    priced: () => ({ sale: 80_000, cost: 40_000 }),
  },
  {
    name: 'media video (task)',
    alias: 'r-video',
    label: 'media_video',
    send: (sk) => post('/v1/videos', sk, { model: 'r-video', prompt: 'waves', seconds: 2 }),
    task: (_r, b) => b.id,
    priced: () => ({ sale: 200_000, cost: 100_000 }),
  },
  {
    name: 'media music (task)',
    alias: 'r-music',
    label: 'media_music',
    send: (sk) => post('/v1/music', sk, { model: 'r-music', prompt: 'a tune', n: 2 }),
    task: (_r, b) => b.id,
    priced: () => ({ sale: 60_000, cost: 20_000 }),
  },
  {
    name: 'new-api /suno/submit/music (task)',
    alias: 'r-suno',
    label: 'media_music',
    send: (sk) => post('/suno/submit/music', sk, { model: 'r-suno', prompt: 'a tune' }),
    task: (_r, b) => b.data,
    priced: () => ({ sale: 60_000, cost: 20_000 }), // no n: the vendor's usual pair of tracks
  },
  {
    name: 'openai_completions',
    alias: 'r-cmpl',
    label: 'openai_completions',
    send: (sk) => post('/v1/completions', sk, { model: 'r-cmpl', prompt: 'Say hi', max_tokens: 8 }),
    priced: tokens,
  },
  {
    name: 'openai_moderations',
    alias: 'r-mod',
    label: 'openai_moderations',
    send: (sk) => post('/v1/moderations', sk, { model: 'r-mod', input: 'a calm sentence to check' }),
    priced: tokens,
  },
  {
    name: 'rerank',
    alias: 'r-rerank',
    label: 'rerank',
    send: (sk) =>
      post('/v1/rerank', sk, {
        model: 'r-rerank',
        query: 'capital of France',
        documents: ['Paris is the capital of France', 'Berlin is in Germany'],
        top_n: 1,
      }),
    priced: tokens,
  },
  {
    name: 'anthropic_count_tokens (free)',
    alias: 'r-count',
    label: 'anthropic_count_tokens',
    send: (sk) =>
      post(
        '/v1/messages/count_tokens',
        sk,
        { model: 'r-count', messages: [{ role: 'user', content: 'hi' }] },
        { 'anthropic-version': '2023-06-01' },
      ),
    priced: () => ({ sale: 0, cost: 0 }),
    free: true,
  },
];

/** A priced route's bookings: one per accepted request, the first one at the route's price. */
async function booked(route: Route, id: string, accepted: number, first: Response, tasks: string[]) {
  await waitFor(async () => (await bookings(`usage->>'key_id'`, id)).length >= accepted, 10_000, 20);
  const all = await bookings(`usage->>'key_id'`, id);
  expect(all).toHaveLength(accepted);
  const mine = route.task
    ? await bookings('task_id', tasks[0]!)
    : await bookings('request_id', first.headers.get('x-request-id')!);
  expect(mine).toHaveLength(1);
  const want = route.priced(mine[0]!.usage);
  expect({ sale: mine[0]!.sale, cost: mine[0]!.cost }, JSON.stringify(mine[0]!.usage)).toEqual(want);
  expect(want.sale).toBeGreaterThan(0);
  return all;
}

describe('every route: admission, settlement and metrics', () => {
  it.each(ROUTES)('$name', async (route) => {
    const { sk, id } = await keyWith({ qps: 0.01, qps_burst: 1 });
    const before = await metrics();
    // (a) Admission: the first request passes; the key's QPS refuses one of the next two on this route
    // (GCRA at 0.01/s, burst 1, one interval of tolerance).
    const first = await route.send(sk);
    const firstBody = first.headers.get('content-type')?.includes('json')
      ? await first.json()
      : await first.arrayBuffer();
    expect(first.status, JSON.stringify(firstBody).slice(0, 300)).toBeLessThan(300);
    const tasks: string[] = route.task ? [route.task(first, firstBody)] : [];
    let accepted = 1;
    let refused: Response | null = null;
    for (let i = 0; i < 2 && !refused; i++) {
      const r = await route.send(sk);
      const b = r.headers.get('content-type')?.includes('json') ? await r.json() : await r.arrayBuffer();
      if (r.status === 429) refused = r;
      else {
        expect(r.status).toBeLessThan(300);
        accepted++;
        if (route.task) tasks.push(route.task(r, b));
      }
    }
    expect(refused?.status, route.name).toBe(429);

    // (b) Settlement: each accepted request booked once (a media job once it finished, under its task);
    // a free route books nothing (its settlement released the hold before the answer ended).
    if (route.free) {
      const rid = first.headers.get('x-request-id')!;
      await waitFor(() => settledIds().includes(rid), 5_000, 5);
      expect(await bookings('request_id', rid)).toHaveLength(0);
      expect(await bookings(`usage->>'key_id'`, id)).toHaveLength(0);
    }
    for (const t of tasks)
      await waitFor(async () => ['succeeded', 'failed'].includes((await taskOf(sk, t)).status), 10_000, 20);
    const all = route.free ? [] : await booked(route, id, accepted, first, tasks);

    // (c) Metrics: the requests under the route's label (the refused one too), and the sale and cost
    // counters moved by exactly what was booked.
    const after = await metrics();
    const d = (name: string, ...m: string[]) => sum(after, name, ...m) - sum(before, name, ...m);
    const lbl = `dialect="${route.label}"`;
    const al = `alias="${route.alias}"`;
    expect(
      d('anima_requests_total', lbl, al, 'outcome="ok"') +
        d('anima_requests_total', lbl, al, 'outcome="queued"'),
    ).toBe(accepted);
    expect(d('anima_requests_total', lbl, al, 'outcome="rejected"')).toBe(1);
    expect(d('anima_sale_micros_total', al)).toBe(all.reduce((s, b) => s + b.sale, 0));
    expect(d('anima_cost_micros_total', al)).toBe(all.reduce((s, b) => s + b.cost, 0));
  });
});

describe('settlement when nothing is billable: the hold is released', () => {
  it('a prepaid app: an upstream 400 on chat and on speech leaves no booking and no reservation', async () => {
    const app = (await admin('POST', '/apps', { name: 'gov-prepaid', billing: 'prepaid' })).id as string;
    await admin('POST', `/apps/${app}/wallet/fund`, { amount_micros: '1000000', idempotency_key: 'gov-1' });
    const k = await admin('POST', `/apps/${app}/keys`, { name: 'p' });
    await waitFor(() => !!G.config.keyById(k.key.id), 3_000, 5);
    oai.setFault({ status: 400, errorMessage: 'bad request' });
    try {
      const sends = [
        () =>
          post('/v1/chat/completions', k.sk, { model: 'r-chat', messages: [{ role: 'user', content: 'x' }] }),
        () => post('/v1/audio/speech', k.sk, { model: 'r-tts', input: 'hello there', voice: 'alloy' }),
      ];
      for (const send of sends) {
        const r = await send();
        expect(r.status).toBe(400);
        await r.arrayBuffer();
        expect(await bookings('request_id', r.headers.get('x-request-id')!)).toHaveLength(0);
      }
    } finally {
      oai.setFault(null);
    }
    // Both requests were admitted with a hold (the wallet covers them), and both holds are back.
    const w = await admin('GET', `/apps/${app}/wallet`);
    expect(w.reserved_micros).toBe('0');
    expect(w.spendable_micros).toBe('1000000');
    // The same key, served: its hold becomes the booking.
    const ok = await post('/v1/chat/completions', k.sk, {
      model: 'r-chat',
      messages: [{ role: 'user', content: 'x' }],
    });
    expect(ok.status).toBe(200);
    const u = ((await ok.json()) as { usage: { prompt_tokens: number; completion_tokens: number } }).usage;
    const [b] = await bookings('request_id', ok.headers.get('x-request-id')!);
    expect(b!.sale).toBe(2 * u.prompt_tokens + 4 * u.completion_tokens);
    const w2 = await admin('GET', `/apps/${app}/wallet`);
    expect(w2.reserved_micros).toBe('0');
    expect(BigInt(w2.spendable_micros)).toBe(1_000_000n - BigInt(b!.sale));
  });
});

describe('ASYNC mode: the runner and the media worker admit what they drain', () => {
  /** A key at concurrency 1 in ASYNC mode. */
  const asyncKey = () => keyWith({ max_concurrency: 1 }, { queue_mode: 'ASYNC' });
  const arrivals = (up: FakeUpstream, path: string) =>
    up.requests.filter((r) => r.path === path).map((r) => r.at);

  it('the ASYNC runner: the deferred request reaches the upstream only once the first has finished; both booked and counted', async () => {
    const { sk, id } = await asyncKey();
    const before = await metrics();
    slowChat.resetStats();
    slowChat.setFault({ latencyMs: 600 });
    try {
      const first = post('/v1/chat/completions', sk, {
        model: 'r-async',
        messages: [{ role: 'user', content: 'first' }],
      });
      await waitFor(() => slowChat.stats.inFlight === 1, 5_000, 5);
      const second = await post('/v1/chat/completions', sk, {
        model: 'r-async',
        messages: [{ role: 'user', content: 'second' }],
      });
      expect(second.status).toBe(202);
      const task = ((await second.json()) as { task_id: string }).task_id;
      expect((await first).status).toBe(200);
      await waitFor(async () => (await taskOf(sk, task)).status === 'succeeded', 10_000, 20);
      // Admission: the runner's admission (rejectOnly) held the task until the first's lease was gone.
      expect(slowChat.stats.maxInFlight).toBe(1);
      const at = arrivals(slowChat, '/v1/chat/completions');
      expect(at).toHaveLength(2);
      expect(at[1]! - at[0]!).toBeGreaterThanOrEqual(600);
      // Settlement: the run booked once, under its task, at its token price.
      await waitFor(async () => (await bookings('task_id', task)).length === 1, 5_000, 20);
      const [b] = await bookings('task_id', task);
      expect({ sale: b!.sale, cost: b!.cost }).toEqual(tokens(b!.usage));
      expect(settledIds().filter((x) => x === `task:${task}`)).toHaveLength(1);
      // Metrics: queued once at submission, then the two served requests (the first, the task's run).
      const all = await bookings(`usage->>'key_id'`, id);
      expect(all).toHaveLength(2);
      const after = await metrics();
      const d = (name: string, ...m: string[]) => sum(after, name, ...m) - sum(before, name, ...m);
      const l = ['dialect="openai_chat"', 'alias="r-async"'];
      expect(d('anima_requests_total', ...l, 'outcome="queued"')).toBe(1);
      expect(d('anima_requests_total', ...l, 'outcome="ok"')).toBe(2);
      expect(d('anima_sale_micros_total', 'alias="r-async"')).toBe(all.reduce((s, x) => s + x.sale, 0));
    } finally {
      slowChat.setFault(null);
    }
  });

  it('media: two synchronous images from an ASYNC key at concurrency 1 both get task ids; the second is submitted upstream only after the first finished', async () => {
    const { sk, id } = await asyncKey();
    const before = await metrics();
    slowImg.resetStats();
    slowImg.setFault({ latencyMs: 800 });
    try {
      const first = post('/v1/images/generations', sk, { model: 'img-q', prompt: 'first' });
      await waitFor(() => slowImg.stats.inFlight === 1, 5_000, 5);
      const second = await post('/v1/images/generations', sk, { model: 'img-q', prompt: 'second' });
      expect(second.status).toBe(202);
      const deferred = ((await second.json()) as { task_id: string }).task_id;
      const r1 = await first;
      expect(r1.status).toBe(200);
      const task1 = r1.headers.get('x-anima-task-id')!;
      expect(task1).toMatch(/^task_/);
      expect(deferred).not.toBe(task1);
      await waitFor(async () => slowImg.stats.byPath['/v1/images/generations'] === 2, 15_000, 20);
      await waitFor(async () => (await taskOf(sk, deferred)).status === 'succeeded', 10_000, 20);
      // Admission in the worker: the deferred job waited for the first's concurrency slot.
      expect(slowImg.stats.maxInFlight).toBe(1);
      const at = arrivals(slowImg, '/v1/images/generations');
      expect(at[1]! - at[0]!).toBeGreaterThanOrEqual(800);
      // Settlement: each job booked once, at its price.
      for (const t of [task1, deferred]) {
        await waitFor(async () => (await bookings('task_id', t)).length === 1, 5_000, 20);
        expect((await bookings('task_id', t)).map((b) => [b.sale, b.cost])).toEqual([[40_000, 20_000]]);
      }
      expect(await bookings(`usage->>'key_id'`, id)).toHaveLength(2);
      // Metrics: the deferred submission (queued), the first request and the worker's admitted run (ok).
      const after = await metrics();
      const d = (name: string, ...m: string[]) => sum(after, name, ...m) - sum(before, name, ...m);
      const l = ['dialect="media_image"', 'alias="img-q"'];
      expect(d('anima_requests_total', ...l, 'outcome="queued"')).toBe(1);
      expect(d('anima_requests_total', ...l, 'outcome="ok"')).toBe(2);
      expect(d('anima_sale_micros_total', 'alias="img-q"')).toBe(80_000);
      expect(d('anima_cost_micros_total', 'alias="img-q"')).toBe(40_000);
    } finally {
      slowImg.setFault(null);
    }
  });

  it('media: a deferred job whose key has spent its cost budget fails in the worker, never reaching the upstream', async () => {
    // Budget for one image: the second (deferred while the first runs) finds it spent when the worker admits it.
    const { sk } = await keyWith({ max_concurrency: 1, cost_per_day: 50_000 }, { queue_mode: 'ASYNC' });
    slowImg.resetStats();
    slowImg.setFault({ latencyMs: 500 });
    try {
      const first = post('/v1/images/generations', sk, { model: 'img-q', prompt: 'first' });
      await waitFor(() => slowImg.stats.inFlight === 1, 5_000, 5);
      const second = await post('/v1/images/generations', sk, { model: 'img-q', prompt: 'second' });
      expect(second.status).toBe(202);
      const deferred = ((await second.json()) as { task_id: string }).task_id;
      expect((await first).status).toBe(200);
      let t: Record<string, any> = {};
      await waitFor(async () => (t = await taskOf(sk, deferred)).status === 'failed', 10_000, 20);
      expect(t.error.code).toBe('budget_exceeded');
      expect(slowImg.stats.byPath['/v1/images/generations']).toBe(1);
      expect(await bookings('task_id', deferred)).toHaveLength(0);
    } finally {
      slowImg.setFault(null);
    }
  });
});

describe('response-cache hit: admitted and counted like any request', () => {
  it("a hit moves the key's cost window by the cache price, is counted as a hit, and its sale shows", async () => {
    const { sk, id } = await keyWith({ cost_per_day: 10_000_000 });
    const scope = {
      scope: 'key' as const,
      id,
      maxConcurrency: 0,
      qps: 0,
      qpsBurst: 0,
      tokensPerMinute: 0,
      tokensPerDay: 0,
      costPerDay: 10_000_000,
      costPerMonth: 0,
    };
    const window = async () => (await G.quota.usage(appId, scope)).costDay;
    const spent = async () => (await bookings(`usage->>'key_id'`, id)).reduce((s, b) => s + b.sale, 0);
    const ask = async () => {
      const r = await chat(sk, 'cached', 'cache me for the window');
      await r.text();
      return r;
    };
    const miss = await ask();
    expect(miss.headers.get('x-anima-cache')).toBe('miss');
    await waitFor(
      async () => (await bookings('request_id', miss.headers.get('x-request-id')!)).length === 1,
      5_000,
      20,
    );
    const missSale = await spent();
    await waitFor(async () => (await window()) === missSale, 5_000, 10);
    // The entry is stored after the miss's answer ended: ask until the answer is a hit.
    const before = await metrics();
    let hit: Response | null = null;
    let asked = 0;
    await waitFor(
      async () => {
        const r = await ask();
        asked++;
        if (r.headers.get('x-anima-cache') === 'hit') hit = r;
        return !!hit;
      },
      5_000,
      20,
    );
    const hitId = hit!.headers.get('x-request-id')!;
    await waitFor(async () => (await bookings('request_id', hitId)).length === 1, 5_000, 20);
    expect((await bookings('request_id', hitId)).map((b) => b.sale)).toEqual([100]);
    await waitFor(async () => (await bookings(`usage->>'key_id'`, id)).length === 1 + asked, 5_000, 20);
    const total = await spent();
    // Admission and true-up: the key's window holds every sale, the hit's 100 included.
    await waitFor(async () => (await window()) === total, 5_000, 10);
    const after = await metrics();
    const d = (name: string, ...m: string[]) => sum(after, name, ...m) - sum(before, name, ...m);
    expect(d('anima_requests_total', 'dialect="openai_chat"', 'alias="cached"', 'outcome="ok"')).toBe(asked);
    expect(d('anima_response_cache_total', 'alias="cached"', 'result="hit"')).toBe(1);
    expect(d('anima_sale_micros_total', 'alias="cached"')).toBe(total - missSale);
  });
});
