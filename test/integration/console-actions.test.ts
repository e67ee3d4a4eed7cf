/**
 * The console's admin actions and figures against real PostgreSQL and Redis with two gateway instances:
 * POST /channels/:code/test (an answer from a fake upstream; an upstream 401 shown as a failure with the
 * credential nowhere in the answer; a base URL the outbound policy refuses at connect time), and the
 * overview's traffic and the channel list's figures summed over both instances through Redis.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import {
  REDIS_URL,
  type TestDatabase,
  adminApi,
  cleanupRedis,
  createTestDatabase,
  startTestGateway,
  testRedisPrefix,
  waitFor,
} from '../helpers.js';

type TGateway = Awaited<ReturnType<typeof startTestGateway>>;
const SECRET = 'sk-live-SECRET-0123456789abcdef';
const APP = 'console-actions';

let tdb: TestDatabase;
let prefix: string;
let gw1: TGateway;
let gw2: TGateway;
let up: FakeUpstream;
let sk: string;
const admin1 = adminApi(() => gw1.url);
const admin2 = adminApi(() => gw2.url);

const chat = (url: string) =>
  fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}` },
    body: JSON.stringify({ model: 'main', messages: [{ role: 'user', content: 'hi' }], max_tokens: 8 }),
  });

beforeAll(async () => {
  tdb = await createTestDatabase();
  prefix = testRedisPrefix();
  up = await startFakeOpenAI({ name: 'upstream' });
  const common = { databaseUrl: tdb.url, redisUrl: REDIS_URL, redisPrefix: prefix };
  gw1 = await startTestGateway(common);
  await admin1('POST', '/channels', {
    code: 'ok1',
    name: 'answers',
    provider: 'openai',
    base_url: up.url + '/v1',
    credential: SECRET,
  });
  await admin1('POST', '/aliases', {
    name: 'main',
    chain: [{ targets: [{ channel: 'ok1', model: 'gpt-x' }] }],
  });
  await admin1('POST', '/apps', { id: APP, name: 'Console actions', billing: 'postpaid' });
  sk = (await admin1('POST', `/apps/${APP}/keys`, { name: 'k' })).sk;
  // The second instance refuses loopback upstreams (its outbound policy allows no private range).
  gw2 = await startTestGateway({ ...common, outboundAllow: [] });
}, 60_000);

afterAll(async () => {
  await gw2?.close();
  await gw1?.close();
  await up?.close();
  if (prefix) await cleanupRedis(prefix);
  await tdb?.drop();
});

describe('POST /api/admin/v1/channels/:code/test', () => {
  it('sends one 1-token chat through the channel and answers ok, latency, model and an excerpt', async () => {
    up.resetStats();
    const served = () => gw1.metrics.stats.series(Date.now(), 10, 10).totals.requests;
    const servedBefore = served();
    const r = await admin1('POST', '/channels/ok1/test', {});
    expect(r).toMatchObject({ ok: true, channel: 'ok1', tested: 'chat', status: 200, model: 'gpt-x' });
    expect(r.latency_ms).toBeGreaterThanOrEqual(0);
    expect(typeof r.answer).toBe('string');
    expect(r.answer.length).toBeGreaterThan(0);
    expect(r.answer.length).toBeLessThanOrEqual(200);
    // One real request, in the channel's wire format, with its credential and a 1-token cap.
    expect(up.stats.requests).toBe(1);
    const sent = up.requests[0]!;
    expect(sent.path).toBe('/v1/chat/completions');
    expect(sent.headers.authorization).toBe(`Bearer ${SECRET}`);
    expect(sent.body).toMatchObject({ model: 'gpt-x', max_tokens: 1 });
    // A model named in the body wins over the alias's.
    expect((await admin1('POST', '/channels/ok1/test', { model: 'gpt-other' })).model).toBe('gpt-other');
    // An embeddings model (or operation: 'embeddings') gets a one-word embeddings request instead.
    const emb = await admin1('POST', '/channels/ok1/test', { model: 'text-embedding-3-small' });
    expect(emb).toMatchObject({ ok: true, tested: 'embeddings', status: 200 });
    expect(emb.answer).toMatch(/^\d+-dimension embedding$/);
    expect(up.requests.at(-1)!.path).toBe('/v1/embeddings');
    // Not data-plane traffic: no served request was counted (and none settled, so nothing was billed).
    expect(served()).toBe(servedBefore);
    // Audited and counted.
    const audit = await admin1('GET', '/audit?limit=20');
    expect(JSON.stringify(audit.data)).toContain('channel_test');
    const text = await gw1.metrics.registry.metrics();
    expect(text).toMatch(/anima_channel_tests_total\{channel="ok1",result="ok"\} 3/);
  });

  it('shows an upstream 401 as a failure, with the credential nowhere in the answer', async () => {
    up.setFault({
      status: 401,
      errorMessage: `Incorrect API key provided: ${SECRET}.`,
      errorCode: 'invalid_api_key',
    });
    try {
      const res = await fetch(`${gw1.url}/api/admin/v1/channels/ok1/test`, {
        method: 'POST',
        headers: { authorization: `Bearer ${gw1.settings.adminToken}`, 'content-type': 'application/json' },
        body: '{}',
      });
      expect(res.status).toBe(200);
      const text = await res.text();
      const r = JSON.parse(text) as { ok: boolean; status: number; error: { code: string; message: string } };
      expect(r.ok).toBe(false);
      expect(r.status).toBe(401);
      expect(r.error.code).toBe('auth_failed');
      expect(text).not.toContain(SECRET);
      expect(text).not.toContain('0123456789abcdef');
    } finally {
      up.setFault(null);
    }
    // A test is not traffic: the channel's credential is not taken out of rotation by it.
    expect((await chat(gw1.url)).status).toBe(200);
  });

  it('reports a base URL the outbound policy refuses, without sending anything', async () => {
    up.resetStats();
    const r = await admin2('POST', '/channels/ok1/test', {});
    expect(r.ok).toBe(false);
    expect(r.status).toBeNull();
    expect(r.error.code).toBe('outbound_refused');
    expect(r.error.message).toMatch(/refused/);
    expect(up.stats.requests).toBe(0);
  });

  it('answers 404 for an unknown channel and 400 for a bad model', async () => {
    const h = { authorization: `Bearer ${gw1.settings.adminToken}`, 'content-type': 'application/json' };
    const unknown = await fetch(`${gw1.url}/api/admin/v1/channels/nope/test`, {
      method: 'POST',
      headers: h,
      body: '{}',
    });
    expect(unknown.status).toBe(404);
    const bad = await fetch(`${gw1.url}/api/admin/v1/channels/ok1/test`, {
      method: 'POST',
      headers: h,
      body: JSON.stringify({ model: 42 }),
    });
    expect(bad.status).toBe(400);
  });
});

describe('cluster-wide console figures (two instances sharing Redis)', () => {
  it('the overview and the channel figures count requests served by both instances', async () => {
    const before = (await admin1('GET', '/stats/timeseries?minutes=10&step=10')).totals.requests as number;
    // gw2's policy refuses the upstream: its requests fail (502), and still count as its traffic.
    for (let i = 0; i < 3; i++) expect((await chat(gw1.url)).status).toBe(200);
    for (let i = 0; i < 2; i++) await chat(gw2.url);
    await Promise.all([gw1.clusterStats.publish(), gw2.clusterStats.publish()]);
    let seen: { scope: string; instances: number; totals: { requests: number } } | null = null;
    await waitFor(
      async () => {
        seen = await admin1('GET', '/stats/timeseries?minutes=10&step=10');
        return seen!.totals.requests >= before + 5;
      },
      5_000,
      100,
    );
    expect(seen!.scope).toBe('cluster');
    expect(seen!.instances).toBe(2);
    // gw1's own ring holds only its share: the sum came from gw2's published dump.
    const own = gw1.metrics.stats.series(Date.now(), 10, 10).totals.requests;
    expect(seen!.totals.requests).toBeGreaterThan(own);
    // Either instance answers the same sum.
    await gw1.clusterStats.publish();
    await waitFor(
      async () => {
        const s = await admin2('GET', '/stats/timeseries?minutes=10&step=10');
        return s.instances === 2 && s.totals.requests === seen!.totals.requests;
      },
      5_000,
      100,
    );
    // Per channel: ok1's upstream attempts from both instances (gw2's were refused before sending).
    const figs = await admin1('GET', '/stats/channels?minutes=15');
    expect(figs.instances).toBe(2);
    const ok1 = (
      figs.data as Array<{
        channel: string;
        requests: number;
        errors: number;
        p50_ms: number;
        p95_ms: number;
      }>
    ).find((f) => f.channel === 'ok1')!;
    expect(ok1.requests).toBeGreaterThanOrEqual(5);
    expect(ok1.errors).toBeGreaterThanOrEqual(2);
    expect(ok1.p95_ms).toBeGreaterThanOrEqual(ok1.p50_ms);
  });

  it('an instance that stops leaves the sum', async () => {
    await gw2.close();
    await waitFor(
      async () => (await admin1('GET', '/stats/timeseries?minutes=10&step=10')).instances === 1,
      5_000,
      100,
    );
  });
});
