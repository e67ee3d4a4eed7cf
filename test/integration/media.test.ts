/**
 * Media generation tasks end to end on real PostgreSQL and Redis, two gateway instances: images, videos
 * (through the official `openai` client), music (plain HTTP), new-api's Suno and video routes; fallback of
 * a failing submit, failure midway, cancel, expiry, a result without content, idempotent submit, tenant
 * isolation, no job polled by two instances at once, and billing: the sale on success only.
 */
import { createServer } from 'node:http';
import OpenAI from 'openai';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type FakeMediaUpstream, startFakeJobs, startFakeOpenAI } from '../../fakes/index.js';
import { signWebhook } from '../../src/tasks/webhooks.js';
import { adminApi, startTestGateway, waitFor } from '../helpers.js';
import { ServiceSuite, type TestGateway, newAppKey, openaiChannel } from '../helpers-suite.js';

let S: ServiceSuite;
let A: TestGateway;
let B: TestGateway;
let oai: FakeMediaUpstream;
let jobs: FakeMediaUpstream;
let jobs2: FakeMediaUpstream;
let db: pg.Pool;
let appA: { id: string; sk: string; keyId: string };
let appB: { id: string; sk: string; keyId: string };
let prepaid: { id: string; sk: string; keyId: string };
const admin = adminApi(() => A.url);

const http = (
  g: TestGateway,
  sk: string,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
) =>
  fetch(g.url + path, {
    method,
    headers: {
      authorization: `Bearer ${sk}`,
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...headers,
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
async function json(r: Response): Promise<any> {
  return r.json();
}
async function taskUntil(
  g: TestGateway,
  sk: string,
  id: string,
  done: (t: any) => boolean,
  ms = 10_000,
): Promise<any> {
  let t: any;
  await waitFor(
    async () => {
      t = await json(await http(g, sk, 'GET', `/v1/tasks/${id}`));
      return done(t);
    },
    ms,
    30,
  );
  return t;
}
const final = (t: any) => ['succeeded', 'failed', 'cancelled', 'expired'].includes(t.status);
async function journals(taskId: string) {
  await A.billing!.writer.flush();
  await B.billing!.writer.flush();
  const r = await db.query(
    `SELECT j.idem_key, (SELECT json_agg(json_build_object('a', a.code, 'd', e.debit::text, 'c', e.credit::text)) FROM ledger_posting e JOIN ledger_account a ON a.id = e.account_id WHERE e.journal_id = j.id) AS entries FROM ledger_journal j WHERE task_id = $1`,
    [taskId],
  );
  return r.rows as Array<{ idem_key: string; entries: Array<{ a: string; d: string; c: string }> }>;
}
const amount = (j: { entries: Array<{ a: string; d: string; c: string }> }, account: string) =>
  j.entries.filter((e) => e.a === account).reduce((s, e) => s + BigInt(e.d) - BigInt(e.c), 0n);

beforeAll(async () => {
  S = await ServiceSuite.open();
  [oai, jobs, jobs2] = await Promise.all([
    startFakeOpenAI({ name: 'media-oai' }),
    startFakeJobs({ name: 'media-jobs' }),
    startFakeJobs({ name: 'media-jobs2' }),
  ]);
  A = await S.gateway();
  B = await S.gateway();
  db = S.pool();
  await openaiChannel(admin, 'oai', oai);
  await admin('POST', '/channels', {
    code: 'jobs',
    provider: 'jobs',
    base_url: jobs.url + '/v1',
    credential: 'k',
  });
  await admin('POST', '/channels', {
    code: 'jobs2',
    provider: 'jobs',
    base_url: jobs2.url + '/v1',
    credential: 'k',
  });
  await admin('POST', '/aliases', {
    name: 'img',
    chain: [{ targets: [{ channel: 'oai', model: 'gpt-image-1' }] }],
  });
  await admin('POST', '/aliases', {
    name: 'sora',
    chain: [{ targets: [{ channel: 'oai', model: 'sora-2' }] }],
  });
  await admin('POST', '/aliases', {
    name: 'kling',
    chain: [
      { targets: [{ channel: 'jobs', model: 'kling-v1' }] },
      { targets: [{ channel: 'jobs2', model: 'kling-v1' }] },
    ],
  });
  await admin('POST', '/aliases', {
    name: 'suno',
    chain: [{ targets: [{ channel: 'jobs', model: 'chirp-v4' }] }],
  });
  await admin('POST', '/prices', { alias: 'img', sale_per_image: 40_000, cost_per_image: 20_000 });
  await admin('POST', '/prices', {
    alias: 'sora',
    sale_per_video_second: 100_000,
    cost_per_video_second: 50_000,
  });
  await admin('POST', '/prices', {
    alias: 'kling',
    sale_per_video_second: 70_000,
    cost_per_video_second: 30_000,
  });
  await admin('POST', '/prices', { alias: 'suno', sale_per_track: 30_000, cost_per_track: 10_000 });
  const mk = async (name: string, billing = 'postpaid') => {
    const { app: id, sk, keyId } = await newAppKey(admin, { name, billing }, name);
    return { id, sk, keyId };
  };
  appA = await mk('media-a');
  appB = await mk('media-b');
  prepaid = await mk('media-prepaid', 'prepaid');
  await admin('POST', `/apps/${prepaid.id}/wallet/fund`, { amount_micros: '10000000' });
  await waitFor(
    () =>
      [A, B].every(
        (g) => g.config.price('suno', null) && g.config.keyById(prepaid.keyId) && g.config.channel('jobs2'),
      ),
    3_000,
    5,
  );
}, 60_000);

afterEach(() => {
  for (const u of [oai, jobs, jobs2]) {
    u.book.resetMedia();
    u.setFault(null);
  }
  oai.book.setMedia({ jobMs: 150 });
  jobs.book.setMedia({ jobMs: 150 });
  jobs2.book.setMedia({ jobMs: 150 });
});

afterAll(() => S?.close(oai, jobs, jobs2));

describe('each kind end to end', () => {
  it('images, synchronously through the official client: the answer is the images; billed per image', async () => {
    const client = new OpenAI({ apiKey: appA.sk, baseURL: A.url + '/v1' });
    const { data: res, response } = await client.images
      .generate({ model: 'img', prompt: 'a lighthouse at dusk', n: 2 })
      .withResponse();
    expect(res.data).toHaveLength(2);
    expect(res.data![0]!.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/files\//);
    const taskId = response.headers.get('x-anima-task-id')!;
    const [j, ...more] = await journals(taskId);
    expect(more).toHaveLength(0);
    expect(j!.idem_key).toBe(`sale:task:${taskId}`);
    expect(amount(j!, 'revenue')).toBe(-80_000n);
    expect(amount(j!, 'cogs:oai')).toBe(40_000n);
  });

  it('images, asynchronously: 202 with a task, then the result on the task', async () => {
    const r = await http(A, appA.sk, 'POST', '/v1/images/generations?async=true', {
      model: 'img',
      prompt: 'a fox',
    });
    expect(r.status).toBe(202);
    const t = await taskUntil(B, appA.sk, (await json(r)).id, final);
    expect(t.status).toBe('succeeded');
    expect(t.result.items).toHaveLength(1);
    expect(t.transitions.map((x: any) => x.status)).toEqual(['queued', 'succeeded']);
  });

  it('videos through the official client: create, retrieve until completed (with progress), download, billed per second', async () => {
    oai.book.setMedia({ jobMs: 400 });
    const client = new OpenAI({ apiKey: appA.sk, baseURL: A.url + '/v1' });
    const v = await client.videos.create({ model: 'sora', prompt: 'waves on a shore', seconds: '8' });
    expect(v.status).toBe('queued');
    expect(v.object).toBe('video');
    const progress: number[] = [];
    let cur = v;
    await waitFor(
      async () => {
        cur = await client.videos.retrieve(v.id);
        progress.push(cur.progress);
        return cur.status === 'completed' || cur.status === 'failed';
      },
      10_000,
      30,
    );
    expect(cur.status).toBe('completed');
    expect(cur.progress).toBe(100);
    expect(progress.some((p) => p > 0 && p < 100)).toBe(true);
    const content = await client.videos.downloadContent(v.id);
    expect(Buffer.from(await content.arrayBuffer()).toString('binary')).toContain('fake-media-content');
    const [j] = await journals(v.id);
    expect(amount(j!, 'revenue')).toBe(-800_000n);
    expect(amount(j!, 'cogs:oai')).toBe(400_000n);
    const list = await client.videos.list();
    expect(list.data.some((x) => x.id === v.id)).toBe(true);
  });

  it('music over plain HTTP: 202, polling, two tracks, billed per track', async () => {
    const r = await http(B, appA.sk, 'POST', '/v1/music', {
      model: 'suno',
      prompt: 'a sea shanty',
      duration: 30,
      style: 'folk',
    });
    expect(r.status).toBe(202);
    const id = (await json(r)).id;
    await waitFor(
      async () => (await json(await http(A, appA.sk, 'GET', `/v1/music/${id}`))).status === 'succeeded',
      10_000,
      30,
    );
    const t = await json(await http(A, appA.sk, 'GET', `/v1/music/${id}`));
    expect(t.result.items).toHaveLength(2);
    expect(t.result.items[0]).toEqual({ url: expect.stringContaining('/files/'), duration_s: 30 });
    expect(jobs.requests.find((x) => x.path === '/v1/jobs')!.body).toMatchObject({
      kind: 'music',
      model: 'chirp-v4',
      prompt: 'a sea shanty',
      duration: 30,
      style: 'folk',
    });
    const [j] = await journals(id);
    expect(amount(j!, 'revenue')).toBe(-60_000n);
  });

  it("new-api's Suno routes: submit, fetch by id, fetch a batch, in new-api's envelope", async () => {
    const s = await json(
      await http(A, appA.sk, 'POST', '/suno/submit/music', {
        prompt: 'lyrics here',
        mv: 'suno',
        title: 'Song',
        tags: 'pop',
      }),
    );
    expect(s).toEqual({ code: 'success', message: '', data: expect.stringMatching(/^task_/) });
    let f: any;
    await waitFor(
      async () => {
        f = await json(await http(B, appA.sk, 'GET', `/suno/fetch/${s.data}`));
        return f.data.status === 'SUCCESS' || f.data.status === 'FAILURE';
      },
      10_000,
      30,
    );
    expect(f.code).toBe('success');
    expect(f.data).toMatchObject({
      task_id: s.data,
      action: 'MUSIC',
      status: 'SUCCESS',
      progress: '100%',
      fail_reason: '',
    });
    expect(f.data.data).toHaveLength(2);
    expect(f.data.data[0]).toMatchObject({ audio_url: expect.stringContaining('/files/'), title: 'Song' });
    const batch = await json(await http(A, appA.sk, 'POST', '/suno/fetch', { ids: [s.data, 'task_nope'] }));
    expect(batch.data.map((x: any) => x.task_id)).toEqual([s.data]);
    const bad = await http(A, appA.sk, 'POST', '/suno/submit/music', { mv: 'suno' });
    expect(bad.status).toBe(400);
    expect(await json(bad)).toMatchObject({ code: 'invalid_request', data: null });
  });

  it("new-api's video routes: submit and fetch, with the result URL", async () => {
    const s = await json(
      await http(A, appA.sk, 'POST', '/v1/video/generations', {
        model: 'kling',
        prompt: 'a comet',
        duration: 5,
        width: 512,
        height: 512,
      }),
    );
    expect(s).toEqual({ task_id: expect.stringMatching(/^task_/), status: 'queued' });
    let f: any;
    await waitFor(
      async () => {
        f = await json(await http(B, appA.sk, 'GET', `/v1/video/generations/${s.task_id}`));
        return f.status === 'succeeded' || f.status === 'failed';
      },
      10_000,
      30,
    );
    expect(f).toMatchObject({
      task_id: s.task_id,
      status: 'succeeded',
      format: 'mp4',
      url: expect.stringContaining('/files/'),
      metadata: { duration: 5 },
    });
    expect(
      jobs.requests.find((x) => x.path === '/v1/jobs' && (x.body as any).kind === 'video')!.body,
    ).toMatchObject({ size: '512x512', duration: 5 });
  });
});

describe('failure, cancel, expiry', () => {
  it('a failing submit falls back to the next channel of the chain', async () => {
    jobs.book.setMedia({ failSubmit: 1 });
    const r = await json(
      await http(A, appA.sk, 'POST', '/v1/video/generations', { model: 'kling', prompt: 'fallback' }),
    );
    const t = await taskUntil(A, appA.sk, r.task_id, final);
    expect(t.status).toBe('succeeded');
    const row = await db.query('SELECT channel FROM task WHERE id = $1', [r.task_id]);
    expect(row.rows[0].channel).toBe('jobs2');
    expect(jobs2.book.mediaStats.submits).toBe(1);
  });

  it('a job that fails midway: failed, nothing billed, the prepaid reservation released', async () => {
    jobs.book.setMedia({ failMidway: true, jobMs: 100 });
    const r = await http(A, prepaid.sk, 'POST', '/v1/music', { model: 'suno', prompt: 'doomed' });
    const t = await taskUntil(A, prepaid.sk, (await json(r)).id, final);
    expect(t.status).toBe('failed');
    expect(t.error).toMatchObject({ code: 'generation_failed' });
    expect(await journals(t.id)).toEqual([]);
    const w = await admin('GET', `/apps/${prepaid.id}/wallet`);
    expect(w.reserved_micros).toBe('0');
  });

  it('cancel: the job is cancelled upstream, nothing billed, the reservation released', async () => {
    jobs.book.setMedia({ neverFinish: true });
    const r = await json(
      await http(A, prepaid.sk, 'POST', '/v1/music', { model: 'suno', prompt: 'never ends' }),
    );
    await taskUntil(A, prepaid.sk, r.id, (t) => t.status === 'running');
    const w1 = await admin('GET', `/apps/${prepaid.id}/wallet`);
    expect(BigInt(w1.reserved_micros)).toBe(60_000n); // two tracks reserved
    const c = await http(B, prepaid.sk, 'POST', `/v1/tasks/${r.id}/cancel`);
    expect(c.status).toBe(200);
    const t = await taskUntil(A, prepaid.sk, r.id, final);
    expect(t.status).toBe('cancelled');
    await waitFor(() => jobs.book.mediaStats.cancels === 1, 3_000, 20);
    expect(await journals(r.id)).toEqual([]);
    await waitFor(
      async () => (await admin('GET', `/apps/${prepaid.id}/wallet`)).reserved_micros === '0',
      3_000,
      20,
    );
    // Cancelling a finished task changes nothing.
    expect((await json(await http(A, prepaid.sk, 'DELETE', `/v1/tasks/${r.id}`))).status).toBe('cancelled');
  });

  it('a video deleted through the official client is cancelled', async () => {
    oai.book.setMedia({ neverFinish: true });
    const client = new OpenAI({ apiKey: appA.sk, baseURL: A.url + '/v1' });
    const v = await client.videos.create({ model: 'sora', prompt: 'forever' });
    await waitFor(async () => (await client.videos.retrieve(v.id)).status === 'in_progress', 5_000, 30);
    const del = await client.videos.delete(v.id);
    expect(del).toMatchObject({ id: v.id, deleted: true });
    expect((await client.videos.retrieve(v.id)).status).toBe('failed');
    await waitFor(() => oai.book.mediaStats.cancels === 1, 3_000, 20);
  });

  it('a job that never finishes expires at the deadline: upstream cancelled, nothing billed, reservation released', async () => {
    const C = await startTestGateway({
      ...S.settings,
      mediaDeadlineMs: { image: 800, video: 800, music: 800 },
    });
    try {
      jobs.book.setMedia({ neverFinish: true });
      await waitFor(() => C.config.keyById(prepaid.keyId), 3_000, 5);
      const r = await json(
        await http(C, prepaid.sk, 'POST', '/v1/music', { model: 'suno', prompt: 'too long' }),
      );
      const t = await taskUntil(C, prepaid.sk, r.id, final, 10_000);
      expect(t.status).toBe('expired');
      expect(t.error).toMatchObject({ code: 'task_expired' });
      await waitFor(() => jobs.book.mediaStats.cancels >= 1, 3_000, 20);
      expect(await journals(r.id)).toEqual([]);
      await waitFor(
        async () => (await admin('GET', `/apps/${prepaid.id}/wallet`)).reserved_micros === '0',
        3_000,
        20,
      );
    } finally {
      await C.close();
    }
  });

  it('a job that finishes without content fails (no_content) and is not billed', async () => {
    jobs.book.setMedia({ noContent: true, jobMs: 50 });
    const r = await json(await http(A, appA.sk, 'POST', '/v1/music', { model: 'suno', prompt: 'silence' }));
    const t = await taskUntil(A, appA.sk, r.id, final);
    expect(t.status).toBe('failed');
    expect(t.error).toMatchObject({ code: 'no_content' });
    expect(await journals(r.id)).toEqual([]);
  });

  it('an unfunded prepaid app gets its task failed with 402 insufficient_balance, and the upstream sees nothing', async () => {
    const poor = (await admin('POST', '/apps', { name: 'poor', billing: 'prepaid' })).id;
    const k = await admin('POST', `/apps/${poor}/keys`, { name: 'p' });
    await waitFor(() => A.config.keyById(k.key.id) && B.config.keyById(k.key.id), 3_000, 5);
    const before = jobs.book.mediaStats.submits;
    const r = await json(await http(A, k.sk, 'POST', '/v1/music', { model: 'suno', prompt: 'no money' }));
    const t = await taskUntil(A, k.sk, r.id, final);
    expect(t.status).toBe('failed');
    expect(t.error).toMatchObject({ code: 'insufficient_balance' });
    expect(jobs.book.mediaStats.submits).toBe(before);
  });
});

describe('submission semantics', () => {
  it('the same Idempotency-Key returns the same task and submits upstream once', async () => {
    const h = { 'idempotency-key': 'idem-' + Date.now() };
    const [r1, r2] = await Promise.all([
      http(A, appA.sk, 'POST', '/v1/music', { model: 'suno', prompt: 'once' }, h),
      http(B, appA.sk, 'POST', '/v1/music', { model: 'suno', prompt: 'once' }, h),
    ]);
    const [t1, t2] = [await json(r1), await json(r2)];
    expect(t1.id).toBe(t2.id);
    await taskUntil(A, appA.sk, t1.id, final);
    expect(jobs.book.mediaStats.submits).toBe(1);
    // Another app's same key is its own task.
    const other = await json(
      await http(A, appB.sk, 'POST', '/v1/music', { model: 'suno', prompt: 'once' }, h),
    );
    expect(other.id).not.toBe(t1.id);
  });

  it("tenant isolation: app B can't read, cancel or list app A's tasks", async () => {
    jobs.book.setMedia({ neverFinish: true });
    const r = await json(await http(A, appA.sk, 'POST', '/v1/music', { model: 'suno', prompt: 'mine' }));
    for (const [m, p] of [
      ['GET', `/v1/tasks/${r.id}`],
      ['GET', `/v1/music/${r.id}`],
      ['POST', `/v1/tasks/${r.id}/cancel`],
      ['DELETE', `/v1/tasks/${r.id}`],
      ['GET', `/suno/fetch/${r.id}`],
    ] as const) {
      const x = await http(B, appB.sk, m, p);
      expect(x.status, `${m} ${p}`).toBe(404);
    }
    const list = await json(await http(A, appB.sk, 'GET', '/v1/tasks'));
    expect(list.data.some((t: any) => t.id === r.id)).toBe(false);
    const client = new OpenAI({ apiKey: appB.sk, baseURL: A.url + '/v1' });
    await expect(client.videos.retrieve(r.id)).rejects.toMatchObject({ status: 404 });
    expect((await json(await http(A, appA.sk, 'GET', `/v1/tasks/${r.id}`))).status).not.toBe('cancelled');
    await http(A, appA.sk, 'POST', `/v1/tasks/${r.id}/cancel`);
  });

  it('bad input: clear 400s in the OpenAI error shape', async () => {
    const cases: Array<[string, unknown, string]> = [
      ['/v1/images/generations', { model: 'img' }, 'prompt'],
      ['/v1/images/generations', { model: 'img', prompt: 'x', n: 50 }, 'n'],
      ['/v1/images/generations', { model: 'img', prompt: 'x', response_format: 'gif' }, 'response_format'],
      ['/v1/music', { prompt: 'x' }, 'model'],
      ['/v1/music', { model: 'suno', prompt: 'x', callback_url: 'ftp://x' }, 'callback_url'],
      ['/v1/music', { model: 'suno', prompt: 'x', callback_url: 'http://127.0.0.1:9/x' }, 'callback_url'],
      ['/v1/videos', { model: 'sora', prompt: 'x', seconds: 'many' }, 'seconds'],
    ];
    for (const [p, b, param] of cases) {
      const r = await http(A, appA.sk, 'POST', p, b);
      const e = await json(r);
      expect(r.status, `${p} ${JSON.stringify(b)}`).toBe(400);
      expect(e.error.param, p).toBe(param);
      expect(typeof e.error.message).toBe('string');
    }
    expect((await http(A, appA.sk, 'POST', '/v1/music', { model: 'nope', prompt: 'x' })).status).toBe(404);
  });
});

describe('two instances', () => {
  it('no job is ever polled by both at once', async () => {
    jobs.book.setMedia({ jobMs: 1_500, pollLatencyMs: 40 });
    const ids = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        http(i % 2 ? A : B, appA.sk, 'POST', '/v1/music', { model: 'suno', prompt: `p${i}` })
          .then(json)
          .then((t) => t.id as string),
      ),
    );
    for (const id of ids) expect((await taskUntil(A, appA.sk, id, final, 20_000)).status).toBe('succeeded');
    expect(jobs.book.mediaStats.polls).toBeGreaterThan(20);
    expect(jobs.book.mediaStats.maxConcurrentPolls).toBe(1);
  }, 30_000);
});

describe('webhooks', () => {
  // The receivers listen on loopback, which only operator-set URLs may reach (the test settings allow it),
  // so these go through the key's webhook_url; a tenant's callback_url at loopback is a 400 (ssrf.test.ts).
  const keyWebhook = async (url: string | null, secret?: string) => {
    await admin(
      'PATCH',
      `/apps/${appA.id}/keys/${appA.keyId}`,
      { webhook_url: url, ...(secret ? { webhook_secret: secret } : {}) },
      (await admin('GET', `/apps/${appA.id}/keys/${appA.keyId}`)).version_no,
    );
    await waitFor(() => [A, B].every((g) => g.config.keyById(appA.keyId)?.webhookUrl === url), 3_000, 5);
  };

  it("the key's webhook: signed, retried through 3 failures, exactly one success recorded", async () => {
    const secret = 'whsec-media-test';
    let calls = 0;
    const good: Array<{ body: string; sig: string }> = [];
    const rx = createServer((req, res) => {
      let b = '';
      req.on('data', (c) => (b += c));
      req.on('end', () => {
        calls++;
        if (calls <= 3) {
          res.writeHead(500).end();
          return;
        }
        good.push({ body: b, sig: String(req.headers['x-anima-signature']) });
        res.writeHead(200).end('ok');
      });
    });
    await new Promise<void>((r) => rx.listen(0, '127.0.0.1', r));
    try {
      const port = (rx.address() as { port: number }).port;
      await keyWebhook(`http://127.0.0.1:${port}/hook`, secret);
      const r = await json(await http(A, appA.sk, 'POST', '/v1/music', { model: 'suno', prompt: 'call me' }));
      await taskUntil(A, appA.sk, r.id, final);
      await waitFor(() => good.length === 1, 15_000, 50);
      await new Promise((res) => setTimeout(res, 300));
      expect(good).toHaveLength(1);
      const t = Number(/t=(\d+)/.exec(good[0]!.sig)![1]);
      expect(good[0]!.sig).toBe(signWebhook(secret, t, good[0]!.body));
      const payload = JSON.parse(good[0]!.body);
      expect(payload.type).toBe('task.succeeded');
      expect(payload.task.id).toBe(r.id);
      const rows = await db.query(`SELECT status, attempts FROM webhook_delivery WHERE task_id = $1`, [r.id]);
      expect(rows.rows).toEqual([{ status: 'delivered', attempts: 4 }]);
    } finally {
      rx.close();
    }
  }, 30_000);

  it("an unreachable receiver doesn't hold up the task", async () => {
    await keyWebhook('http://127.0.0.1:9/nowhere');
    const r = await json(
      await http(A, appA.sk, 'POST', '/v1/music', { model: 'suno', prompt: 'nobody home' }),
    );
    const t = await taskUntil(A, appA.sk, r.id, final);
    expect(t.status).toBe('succeeded');
    await keyWebhook(null);
  });
});

describe('the ledger after it all', () => {
  it('balances', async () => {
    await A.billing!.writer.flush();
    const tb = await admin('GET', '/billing/trial-balance');
    expect(tb.mismatches).toEqual([]);
    expect(tb.balanced).toBe(true);
  });
});
