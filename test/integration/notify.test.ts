/**
 * Operator notifications end to end, on real PostgreSQL and Redis with two gateway instances sharing them:
 * targets managed through the admin API (URLs inside the network refused unless allowed, the secret never
 * shown, a test send answering with the delivery result); a breaker opening (real traffic to a dead
 * upstream) notifies each target exactly once within 5 s although both instances see it, and closing it
 * again once; a credential taken out after a 401 notifies once; a cost budget notifies at 80 % and 100 %.
 */
import { createHmac } from 'node:crypto';
import { type IncomingHttpHeaders, type Server, createServer } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeOpenAI } from '../../fakes/index.js';
import type { FakeUpstream } from '../../fakes/common.js';
import { sealedInventory } from '../../src/config/rotate.js';
import { keyIdOf } from '../../src/config/secrets.js';
import {
  ADMIN_TOKEN,
  REDIS_URL,
  TEST_SECRET_KEY,
  type TestDatabase,
  cleanupRedis,
  createTestDatabase,
  startTestGateway,
  testRedisPrefix,
  waitFor,
} from '../helpers.js';

type TGateway = Awaited<ReturnType<typeof startTestGateway>>;
interface Received {
  path: string;
  at: number;
  headers: IncomingHttpHeaders;
  body: string;
}

let tdb: TestDatabase;
let prefix: string;
let A: TGateway;
let B: TGateway;
let up: FakeUpstream;
let authFail: FakeUpstream;
let receiver: Server;
let hook = '';
const got: Received[] = [];
const SECRET = 'whsec-ops-0123456789';

async function closedPort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function admin(g: TGateway, method: string, path: string, body?: unknown) {
  const r = await fetch(`${g.url}/api/admin/v1${path}`, {
    method,
    headers: {
      authorization: `Bearer ${ADMIN_TOKEN}`,
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await r.text();
  return { status: r.status, body: text ? (JSON.parse(text) as any) : null };
}

const kindOf = (r: Received) => r.headers['x-anima-event'] as string;
const of = (kind: string, path?: string) =>
  got.filter((r) => kindOf(r) === kind && (!path || r.path === path));

/** Every notification result both instances counted, by result. */
async function results(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const g of [A, B])
    for (const v of (await g.metrics.notifications.get()).values)
      out[String(v.labels.result)] = (out[String(v.labels.result)] ?? 0) + v.value;
  return out;
}

async function settled(): Promise<void> {
  await Promise.all([A.notifier.settled(), B.notifier.settled()]);
}

beforeAll(async () => {
  tdb = await createTestDatabase();
  prefix = testRedisPrefix();
  up = await startFakeOpenAI({ name: 'notify-up' });
  authFail = await startFakeOpenAI({ name: 'notify-401' });
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      got.push({ path: req.url ?? '/', at: Date.now(), headers: req.headers, body });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  hook = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
  const s = { databaseUrl: tdb.url, redisUrl: REDIS_URL, redisPrefix: prefix, breakerSyncMs: 500 };
  A = await startTestGateway(s, { notify: { budgetCheckMs: 0 } });
  B = await startTestGateway(s, { notify: { budgetCheckMs: 0 } });
  const dead = await closedPort();
  const fast = {
    timeouts: { connectMs: 500, firstByteMs: 600, idleMs: 600, totalMs: 5_000 },
    breaker: {
      minCalls: 3,
      failureRate: 0.5,
      openMs: 60_000,
      halfOpenProbes: 1,
      probeTimeoutMs: 400,
      windowMs: 10_000,
    },
  };
  for (const [code, url] of [
    ['dead', `http://127.0.0.1:${dead}/v1`],
    ['ok', up.url + '/v1'],
    ['bad', authFail.url + '/v1'],
  ] as const) {
    const r = await admin(A, 'POST', '/channels', {
      code,
      provider: 'openai',
      base_url: url,
      credential: 'k',
      settings: fast,
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
  }
  for (const [name, channel, model] of [
    ['deadonly', 'dead', 'm'],
    ['badonly', 'bad', 'm'],
    ['img', 'ok', 'gpt-image-1'],
  ] as const) {
    const r = await admin(A, 'POST', '/aliases', { name, chain: [{ targets: [{ channel, model }] }] });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
  }
  expect(
    (await admin(A, 'POST', '/prices', { alias: 'img', sale_per_image: 40_000, cost_per_image: 20_000 }))
      .status,
  ).toBe(201);
  await waitFor(() => !!B.config.channel('dead') && !!B.config.price('img', null), 5_000);
}, 60_000);

afterAll(async () => {
  await A?.close();
  await B?.close();
  await new Promise<void>((r) => (receiver ? receiver.close(() => r()) : r()));
  await up?.close();
  await authFail?.close();
  await cleanupRedis(prefix);
  await tdb?.drop();
});

let jsonId = '';
let slackId = '';

describe('notification targets (admin API)', () => {
  it('refuses a URL inside the network (and the metadata address) unless allowed', async () => {
    const priv = await admin(A, 'POST', '/notification-targets', {
      name: 'lan',
      url: 'http://10.1.2.3/hook',
    });
    expect(priv.status).toBe(400);
    expect(priv.body.error.message).toMatch(/outbound policy.*private/);
    const meta = await admin(A, 'POST', '/notification-targets', {
      name: 'meta',
      url: 'http://169.254.169.254/latest/meta-data',
    });
    expect(meta.status).toBe(400);
    const scheme = await admin(A, 'POST', '/notification-targets', { name: 'x', url: 'file:///etc/passwd' });
    expect(scheme.status).toBe(400);
    const kinds = await admin(A, 'POST', '/notification-targets', { name: 'x', url: hook, events: ['nope'] });
    expect(kinds.status).toBe(400);
    expect((await admin(A, 'GET', '/notification-targets')).body.data).toEqual([]);
  });

  it('creates targets (secret sealed, never shown), sends a test and answers with the delivery result', async () => {
    const j = await admin(A, 'POST', '/notification-targets', {
      name: 'ops json',
      url: `${hook}/json`,
      format: 'json',
      secret: SECRET,
    });
    expect(j.status, JSON.stringify(j.body)).toBe(201);
    expect(j.body).toMatchObject({ format: 'json', secret_set: true, enabled: true, events: [] });
    expect(JSON.stringify(j.body)).not.toContain(SECRET);
    jsonId = j.body.id;
    const s = await admin(A, 'POST', '/notification-targets', {
      name: 'ops slack',
      url: `${hook}/slack`,
      format: 'slack',
      events: ['breaker.opened', 'breaker.closed', 'credential.out'],
    });
    expect(s.status).toBe(201);
    slackId = s.body.id;
    // Sealed at rest like channel credentials.
    const row = await A.dbh.db
      .selectFrom('notification_target')
      .select('secret')
      .where('id', '=', jsonId)
      .executeTakeFirstOrThrow();
    expect(row.secret).toMatch(/^enc:v2:/);
    // ... and among the columns `anima secrets rotate` re-seals and `secrets status` counts.
    const inv = await sealedInventory(A.dbh.db);
    expect(inv.find((c) => c.table === 'notification_target')).toMatchObject({
      column: 'secret',
      by: { [keyIdOf(TEST_SECRET_KEY)]: 1 },
    });

    const t = await admin(A, 'POST', `/notification-targets/${jsonId}/test`);
    expect(t.status).toBe(200);
    expect(t.body).toMatchObject({ delivered: true, status: 204, error: null });
    const sent = of('test', '/json');
    expect(sent.length).toBe(1);
    const ts = sent[0]!.headers['x-anima-timestamp'] as string;
    const v1 = createHmac('sha256', SECRET).update(`${ts}.${sent[0]!.body}`).digest('hex');
    expect(sent[0]!.headers['x-anima-signature']).toBe(`t=${ts},v1=${v1}`);

    // Disable, then enable again; a viewer-visible audit trail.
    const off = await admin(A, 'PATCH', `/notification-targets/${slackId}`, { enabled: false });
    expect(off.body.enabled).toBe(false);
    const on = await admin(B, 'PATCH', `/notification-targets/${slackId}`, { enabled: true });
    expect(on.body.enabled).toBe(true);
    const audit = await admin(A, 'GET', '/audit?entity=notification_target');
    expect(audit.body.data.length).toBeGreaterThanOrEqual(4);
    // Both instances hold both targets (pub/sub reload).
    await waitFor(
      () => [A, B].every((g) => g.notifier.targets().filter((x) => x.enabled).length === 2),
      5_000,
    );
  });
});

describe('events', () => {
  it('a breaker opening sends exactly one notification per target within 5 s, with two instances', async () => {
    got.length = 0;
    const before = await results();
    // Traffic on both instances: each counts its own window, either may trip the shared breaker.
    for (let i = 0; i < 8; i++) {
      const r = await fetch((i % 2 ? B : A).url + '/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${await key()}` },
        body: JSON.stringify({ model: 'deadonly', messages: [{ role: 'user', content: 'hi' }] }),
      });
      await r.text();
      if (A.breakers.state('dead').state === 'open' || B.breakers.state('dead').state === 'open') break;
    }
    await waitFor(() => A.breakers.state('dead').state === 'open', 5_000);
    const openedAt = A.breakers.state('dead').since;
    await waitFor(
      () => of('breaker.opened', '/json').length === 1 && of('breaker.opened', '/slack').length === 1,
      5_000,
    );
    expect(Math.max(...of('breaker.opened').map((r) => r.at)) - openedAt).toBeLessThan(5_000);
    // The other instance saw the same transition and left it: a duplicate, not a second delivery.
    await waitFor(() => B.breakers.state('dead').state === 'open', 5_000);
    await waitFor(async () => (await results()).duplicate! > (before.duplicate ?? 0), 5_000);
    await settled();
    expect(of('breaker.opened', '/json').length).toBe(1);
    expect(of('breaker.opened', '/slack').length).toBe(1);
    const j = JSON.parse(of('breaker.opened', '/json')[0]!.body);
    expect(j).toMatchObject({
      kind: 'breaker.opened',
      subject: 'dead',
      details: { channel: 'dead', to: 'open' },
    });
    const slack = JSON.parse(of('breaker.opened', '/slack')[0]!.body);
    expect(Object.keys(slack)).toEqual(['text']);
    expect(slack.text).toContain('channel dead taken out of rotation');

    // Closed again by an operator (on B): one "closed" per target.
    expect((await admin(B, 'POST', '/circuits/dead/reset', {})).status).toBe(200);
    await waitFor(() => of('breaker.closed').length === 2, 5_000);
    await waitFor(() => A.breakers.state('dead').state === 'closed', 5_000);
    await settled();
    expect(of('breaker.closed', '/json').length).toBe(1);
    expect(of('breaker.closed', '/slack').length).toBe(1);
  });

  it('a credential taken out after a 401 notifies once, and the gauge shows it', async () => {
    got.length = 0;
    authFail.setFault({ status: 401, errorMessage: 'Incorrect API key provided' });
    const r = await fetch(A.url + '/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${await key()}` },
      body: JSON.stringify({ model: 'badonly', messages: [{ role: 'user', content: 'hi' }] }),
    });
    await r.text();
    await waitFor(() => of('credential.out').length === 2, 5_000);
    await waitFor(() => B.health.get('bad').credential === 'invalid', 5_000);
    await settled();
    expect(of('credential.out', '/json').length).toBe(1);
    expect(JSON.parse(of('credential.out', '/json')[0]!.body)).toMatchObject({
      severity: 'critical',
      details: { channel: 'bad', status: 'invalid' },
    });
    const scrape = await (await fetch(B.url + '/actuator/prometheus')).text();
    expect(scrape).toMatch(/^anima_channel_credential_out\{channel="bad"\} 1$/m);
  });

  it('a cost budget notifies at 80 % and at 100 % (once each), counted by scope kind', async () => {
    got.length = 0;
    const app = await admin(A, 'POST', '/apps', { name: 'budget' });
    const k = await admin(A, 'POST', `/apps/${app.body.id}/keys`, { name: 'b' });
    expect(
      (await admin(A, 'POST', '/quotas', { scope: 'key', scope_id: k.body.key.id, cost_per_day: 100_000 }))
        .status,
    ).toBe(201);
    await waitFor(() => !!A.config.quota('key', k.body.key.id) && !!A.config.keyById(k.body.key.id), 5_000);
    const image = async () => {
      const r = await fetch(A.url + '/v1/images/generations', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${k.body.sk}` },
        body: JSON.stringify({ model: 'img', prompt: 'a fox' }),
      });
      await r.text();
      return r.status;
    };
    expect(await image()).toBe(200); // 40 %
    expect(await image()).toBe(200); // 80 %
    await waitFor(() => of('budget.warning').length === 1, 5_000);
    expect(await image()).toBe(429); // 120 % would be over: refused, budget spent
    await waitFor(() => of('budget.exhausted').length === 1, 5_000);
    await settled();
    expect(of('budget.warning').length).toBe(1); // the Slack target doesn't want budgets
    expect(JSON.parse(of('budget.warning')[0]!.body)).toMatchObject({
      details: { scope: 'key', scope_id: k.body.key.id, window: 'day', threshold_percent: 80 },
    });
    const scrape = await (await fetch(A.url + '/actuator/prometheus')).text();
    expect(scrape).toMatch(
      /^anima_budget_threshold_crossed_total\{scope="key",window="day",threshold="80"\} 1$/m,
    );
    expect(scrape).toMatch(
      /^anima_budget_threshold_crossed_total\{scope="key",window="day",threshold="100"\} 1$/m,
    );
  });
});

let sk: string | null = null;
async function key(): Promise<string> {
  if (sk) return sk;
  const app = await admin(A, 'POST', '/apps', { name: 'notify' });
  const k = await admin(A, 'POST', `/apps/${app.body.id}/keys`, { name: 'n' });
  sk = k.body.sk as string;
  await waitFor(() => !!A.config.keyById(k.body.key.id), 5_000);
  return sk;
}
