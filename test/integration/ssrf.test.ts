/**
 * The outbound URL policy (SSRF) end to end, on real PostgreSQL and Redis:
 *
 *  - a tenant's `callback_url` aimed at loopback (in every spelling), link-local metadata or a private
 *    address: 400 `url_not_allowed`, no task, nothing delivered (a local receiver counts zero requests),
 *    even though this gateway lets operator-set URLs reach loopback;
 *  - admin writes of a channel `base_url` / key `webhook_url` at a metadata address: 400 whatever the allow
 *    list; a private address: refused without ANIMA_OUTBOUND_ALLOW, accepted with it;
 *  - DNS rebinding: a callback host that resolves public when submitted and to loopback when delivered is
 *    refused at connect time;
 *  - a key webhook that answers 302 is not followed.
 *
 * Only loopback is ever connected to: the resolver seam stands in for DNS, and the "public" answer it
 * gives the write-time check is never connected to.
 */
import { promises as dns } from 'node:dns';
import { type Server, createServer } from 'node:http';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeMediaUpstream, startFakeOpenAI } from '../../fakes/index.js';
import type { OutboundResolver } from '../../src/lib/outbound.js';
import {
  ADMIN_TOKEN,
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
/** Production mode (DATABASE_URL) keeps credentials encrypted at rest. */
const SECRET = 'ssrf-test-secret-key-0123456789abcdef';
let tdb: TestDatabase;
let prefix: string;
/** Operator URLs may reach loopback (the test default). */
let A: TGateway;
let oai: FakeMediaUpstream;
let db: pg.Pool;
let tenant: { id: string; sk: string; keyId: string };
let keyed: { id: string; sk: string; keyId: string };
const admin = adminApi(() => A.url);

/** A receiver that counts what reaches it, by path. */
let rx: Server;
let rxPort = 0;
const received: string[] = [];
let target: Server;
let targetPort = 0;
let targetHits = 0;

/** DNS stand-in: `rebind.test` is public when checked, loopback when connected to. */
const resolver: OutboundResolver = async (host, phase) => {
  if (host === 'rebind.test')
    return [{ address: phase === 'check' ? '93.184.216.34' : '127.0.0.1', family: 4 }];
  if (host === 'localhost') return dns.lookup(host, { all: true });
  throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
};

const call = (g: TGateway, token: string, method: string, path: string, body?: unknown) =>
  fetch(g.url + path, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });

const listen = async (s: Server) => {
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return (s.address() as { port: number }).port;
};

beforeAll(async () => {
  tdb = await createTestDatabase();
  prefix = testRedisPrefix();
  oai = await startFakeOpenAI({ name: 'ssrf-oai' });
  rx = createServer((req, res) => {
    req.resume();
    received.push(req.url!);
    if (req.url === '/redirect') {
      res.writeHead(302, { location: `http://127.0.0.1:${targetPort}/moved` }).end();
      return;
    }
    res.writeHead(200).end('ok');
  });
  target = createServer((req, res) => {
    targetHits++;
    req.resume();
    res.end('ok');
  });
  rxPort = await listen(rx);
  targetPort = await listen(target);
  A = await startTestGateway(
    {
      databaseUrl: tdb.url,
      redisUrl: REDIS_URL,
      redisPrefix: prefix,
      secretKey: SECRET,
      webhookBackoffMs: 60_000,
    },
    { outboundResolver: resolver },
  );
  db = testPool(tdb.url, 2);
  await admin('POST', '/channels', {
    code: 'oai',
    provider: 'openai',
    base_url: oai.url + '/v1',
    credential: 'k',
  });
  await admin('POST', '/aliases', {
    name: 'img',
    chain: [{ targets: [{ channel: 'oai', model: 'gpt-image-1' }] }],
  });
  await admin('POST', '/prices', { alias: 'img', sale_per_image: 40_000, cost_per_image: 20_000 });
  const mk = async (name: string) => {
    const id = (await admin('POST', '/apps', { name })).id as string;
    const k = await admin('POST', `/apps/${id}/keys`, { name });
    return { id, sk: k.sk as string, keyId: k.key.id as string };
  };
  tenant = await mk('ssrf-tenant');
  keyed = await mk('ssrf-keyed');
  await waitFor(() => A.config.price('img', null) && A.config.keyById(keyed.keyId), 3_000, 5);
}, 60_000);

afterAll(async () => {
  await A?.close();
  await db?.end();
  await oai?.close();
  rx?.closeAllConnections();
  target?.closeAllConnections();
  await new Promise((r) => rx?.close(r));
  await new Promise((r) => target?.close(r));
  await cleanupRedis(prefix);
  await tdb?.drop();
});

const final = (s: string) => ['succeeded', 'failed', 'cancelled', 'expired'].includes(s);
async function taskDone(sk: string, id: string): Promise<any> {
  let t: any;
  await waitFor(
    async () => {
      t = await (await call(A, sk, 'GET', `/v1/tasks/${id}`)).json();
      return final(t.status);
    },
    10_000,
    30,
  );
  return t;
}
async function deliveries(taskId: string) {
  return (
    await db.query(
      `SELECT url, status, attempts, last_status, last_error FROM webhook_delivery WHERE task_id = $1`,
      [taskId],
    )
  ).rows as Array<{
    url: string;
    status: string;
    attempts: number;
    last_status: number | null;
    last_error: string;
  }>;
}

describe('tenant callback_url', () => {
  it('loopback, metadata, private, mapped, named and numeric forms: 400 url_not_allowed, nothing queued or delivered', async () => {
    const cases: Array<[string, string]> = [
      [`http://127.0.0.1:${rxPort}/internal-admin`, 'loopback'],
      [`http://[::1]:${rxPort}/internal-admin`, 'loopback'],
      ['http://169.254.169.254/latest/meta-data/iam/security-credentials/', 'metadata'],
      ['http://[fd00:ec2::254]/latest/meta-data/', 'metadata'],
      ['http://100.100.100.200/latest/meta-data/', 'metadata'],
      ['http://10.0.0.1/hook', 'private'],
      ['http://192.168.1.1/hook', 'private'],
      [`http://[::ffff:127.0.0.1]:${rxPort}/internal-admin`, 'loopback'],
      [`http://localhost:${rxPort}/internal-admin`, 'loopback'],
      [`http://2130706433:${rxPort}/internal-admin`, 'loopback'],
      [`http://0x7f000001:${rxPort}/internal-admin`, 'loopback'],
      [`http://0.0.0.0:${rxPort}/internal-admin`, 'unspecified'],
    ];
    received.length = 0;
    for (const [url, rule] of cases) {
      const r = await call(A, tenant.sk, 'POST', '/v1/images/generations?async=true', {
        model: 'img',
        prompt: 'x',
        callback_url: url,
      });
      const e = (await r.json()) as any;
      expect(r.status, url).toBe(400);
      expect(e.error.code, url).toBe('url_not_allowed');
      expect(e.error.param, url).toBe('callback_url');
      expect(e.error.rule, url).toBe(rule);
      expect(e.error.message, url).toMatch(/may only reach public addresses/);
    }
    // The message says which rule, and through which address.
    const r = await call(A, tenant.sk, 'POST', '/v1/images/generations?async=true', {
      model: 'img',
      prompt: 'x',
      callback_url: `http://2130706433:${rxPort}/internal-admin`,
    });
    expect(((await r.json()) as any).error.message).toBe(
      "'callback_url' is a loopback address 127.0.0.1; URLs a tenant supplies (callbacks) may only reach public addresses.",
    );
    // Synchronous submissions and the other routes check it too; new-api's routes answer in their envelope.
    const sync = await call(A, tenant.sk, 'POST', '/v1/images/generations', {
      model: 'img',
      prompt: 'x',
      callback_url: `http://127.0.0.1:${rxPort}/internal-admin`,
    });
    expect(sync.status).toBe(400);
    const suno = await call(A, tenant.sk, 'POST', '/suno/submit/music', {
      model: 'img',
      prompt: 'x',
      callback_url: `http://127.0.0.1:${rxPort}/internal-admin`,
    });
    expect(suno.status).toBe(400);
    expect(await suno.json()).toMatchObject({ code: 'url_not_allowed', data: null });
    // Credentials in a tenant URL are refused too.
    const creds = await call(A, tenant.sk, 'POST', '/v1/music', {
      model: 'img',
      prompt: 'x',
      callback_url: 'https://user:pw@hooks.example.com/x',
    });
    expect(((await creds.json()) as any).error).toMatchObject({
      code: 'url_not_allowed',
      rule: 'credentials',
    });

    // Refused before anything was queued (the 400 is the event): no task and no delivery row, so there is
    // nothing a later webhook poll could send, and nothing arrived.
    const tasks = await db.query(`SELECT count(*)::int AS n FROM task WHERE app_id = $1`, [tenant.id]);
    expect(tasks.rows[0].n).toBe(0);
    const wh = await db.query(`SELECT count(*)::int AS n FROM webhook_delivery`);
    expect(wh.rows[0].n).toBe(0);
    expect(received).toEqual([]);
  });

  it('DNS rebinding: public when submitted, loopback when delivered: refused at connect, nothing arrives', async () => {
    received.length = 0;
    const r = await call(A, tenant.sk, 'POST', '/v1/images/generations?async=true', {
      model: 'img',
      prompt: 'rebind',
      callback_url: `http://rebind.test:${rxPort}/internal-admin`,
    });
    expect(r.status).toBe(202);
    const id = ((await r.json()) as any).id as string;
    expect((await taskDone(tenant.sk, id)).status).toBe('succeeded');
    await waitFor(async () => (await deliveries(id))[0]?.status === 'failed', 10_000, 50);
    const [d] = await deliveries(id);
    // refused once, final (not retried): the policy won't change its mind
    expect(d).toMatchObject({ status: 'failed', attempts: 1, last_status: null });
    expect(d!.last_error).toMatch(
      /refused by the outbound policy.*resolves to a loopback address 127\.0\.0\.1/,
    );
    expect(received).toEqual([]);
  });
});

describe('tenant callback_url, accepted', () => {
  it('a public callback is kept on the task (its delivery is checked again when it connects)', async () => {
    const url = 'https://hooks.example.com/anima'; // resolves nowhere here: nothing is ever sent
    const r = await call(A, tenant.sk, 'POST', '/v1/images/generations?async=true', {
      model: 'img',
      prompt: 'p',
      callback_url: url,
    });
    expect(r.status).toBe(202);
    const id = ((await r.json()) as any).id as string;
    const row = await db.query(`SELECT webhook_url FROM task WHERE id = $1`, [id]);
    expect(row.rows[0].webhook_url).toBe(url);
  });
});

describe("a key's webhook_url (operator-set)", () => {
  it('reaches an allowed loopback receiver (the control), and a 302 is not followed', async () => {
    received.length = 0;
    const set = async (url: string | null) => {
      const cur = await admin('GET', `/apps/${keyed.id}/keys/${keyed.keyId}`);
      await admin('PATCH', `/apps/${keyed.id}/keys/${keyed.keyId}`, { webhook_url: url }, cur.version_no);
      await waitFor(() => A.config.keyById(keyed.keyId)?.webhookUrl === url, 3_000, 5);
    };
    await set(`http://127.0.0.1:${rxPort}/key-hook`);
    const ok = (
      (await (
        await call(A, keyed.sk, 'POST', '/v1/images/generations?async=true', { model: 'img', prompt: 'a' })
      ).json()) as any
    ).id as string;
    await taskDone(keyed.sk, ok);
    await waitFor(async () => (await deliveries(ok))[0]?.status === 'delivered', 10_000, 50);
    expect(received).toEqual(['/key-hook']);

    await set(`http://127.0.0.1:${rxPort}/redirect`);
    const red = (
      (await (
        await call(A, keyed.sk, 'POST', '/v1/images/generations?async=true', { model: 'img', prompt: 'b' })
      ).json()) as any
    ).id as string;
    await taskDone(keyed.sk, red);
    await waitFor(async () => (await deliveries(red))[0]?.attempts === 1, 10_000, 50);
    await waitFor(async () => (await deliveries(red))[0]?.last_status === 302, 10_000, 50);
    // The attempt is over once its 302 is recorded: a followed redirect would have hit the target within it.
    const [d] = await deliveries(red);
    expect(d).toMatchObject({ status: 'pending', last_status: 302 });
    expect(targetHits).toBe(0);
    await set(null);
  });
});

describe('admin writes', () => {
  const raw = async (g: TGateway, method: string, path: string, body: unknown, ifMatch?: number) => {
    const r = await fetch(`${g.url}/api/admin/v1${path}`, {
      method,
      headers: {
        authorization: `Bearer ${ADMIN_TOKEN}`,
        'content-type': 'application/json',
        ...(ifMatch ? { 'if-match': `"${ifMatch}"` } : {}),
      },
      body: JSON.stringify(body),
    });
    return { status: r.status, body: (await r.json()) as any };
  };
  const channel = (code: string, base_url: string) => ({
    code,
    provider: 'openai',
    base_url,
    credential: 'k',
    enabled: false,
  });

  it('metadata addresses: 400 even with loopback allowed (channel base_url, key webhook_url)', async () => {
    const kv = (await admin('GET', `/apps/${keyed.id}/keys/${keyed.keyId}`)).version_no as number;
    for (const url of [
      'http://169.254.169.254/latest/meta-data/',
      'http://[fd00:ec2::254]/latest/meta-data/',
      'http://[::ffff:169.254.169.254]/',
      'http://metadata.google.internal/computeMetadata/v1/',
    ]) {
      const c = await raw(A, 'POST', '/channels', channel('meta', url));
      expect(c.status, url).toBe(400);
      expect(c.body.error, url).toMatchObject({
        code: 'url_not_allowed',
        param: 'base_url',
        rule: 'metadata',
      });
      expect(c.body.error.message, url).toMatch(
        /^base_url: .*cloud metadata address.*no outbound URL may reach it/,
      );
      const k = await raw(A, 'PATCH', `/apps/${keyed.id}/keys/${keyed.keyId}`, { webhook_url: url }, kv);
      expect(k.status, url).toBe(400);
      expect(k.body.error, url).toMatchObject({
        code: 'url_not_allowed',
        param: 'webhook_url',
        rule: 'metadata',
      });
    }
    // loopback is allowed here
    const lo = await raw(
      A,
      'PATCH',
      `/apps/${keyed.id}/keys/${keyed.keyId}`,
      { webhook_url: 'http://localhost:6379/' },
      kv,
    );
    expect(lo.status).toBe(200);
    await raw(A, 'PATCH', `/apps/${keyed.id}/keys/${keyed.keyId}`, { webhook_url: null }, lo.body.version_no);
    // a private address is not (only loopback is listed)
    const p = await raw(A, 'POST', '/channels', channel('priv', 'http://10.0.0.1/v1'));
    expect(p.status).toBe(400);
    expect(p.body.error).toMatchObject({ code: 'url_not_allowed', rule: 'private' });
  });

  it('private and loopback: refused without ANIMA_OUTBOUND_ALLOW, accepted with it', async () => {
    // A channel at loopback, written while loopback was allowed: without the allow list, the channel's
    // connections are refused too (checked when connecting, not only when written).
    await admin('POST', '/channels', {
      code: 'loop',
      provider: 'openai',
      base_url: `http://127.0.0.1:${rxPort}/v1`,
      credential: 'k',
    });
    await admin('POST', '/aliases', {
      name: 'loopchat',
      chain: [{ targets: [{ channel: 'loop', model: 'm' }] }],
    });
    const strict = await startTestGateway({
      databaseUrl: tdb.url,
      redisUrl: REDIS_URL,
      redisPrefix: prefix,
      secretKey: SECRET,
      outboundAllow: [],
    });
    try {
      received.length = 0;
      const chat = { model: 'loopchat', messages: [{ role: 'user', content: 'hi' }] };
      const refused = await call(strict, tenant.sk, 'POST', '/v1/chat/completions', chat);
      expect(refused.status).toBeGreaterThanOrEqual(500);
      expect(received).toEqual([]);
      await waitFor(() => A.config.alias('loopchat'), 3_000, 5);
      await call(A, tenant.sk, 'POST', '/v1/chat/completions', chat); // the control: A may reach loopback
      expect(received).toEqual(['/v1/chat/completions']);

      for (const [url, rule] of [
        ['http://10.0.0.1/v1', 'private'],
        ['http://127.0.0.1:11434/v1', 'loopback'],
        ['http://localhost:11434/v1', 'loopback'],
      ] as const) {
        const c = await raw(strict, 'POST', '/channels', channel('p1', url));
        expect(c.status, url).toBe(400);
        expect(c.body.error, url).toMatchObject({ code: 'url_not_allowed', rule });
        expect(c.body.error.message, url).toMatch(/ANIMA_OUTBOUND_ALLOW/);
      }
      const kv = (await admin('GET', `/apps/${keyed.id}/keys/${keyed.keyId}`)).version_no as number;
      const k = await raw(
        strict,
        'PATCH',
        `/apps/${keyed.id}/keys/${keyed.keyId}`,
        { webhook_url: 'http://localhost:6379/' },
        kv,
      );
      expect(k.status).toBe(400);
      expect(k.body.error).toMatchObject({ code: 'url_not_allowed', param: 'webhook_url', rule: 'loopback' });
    } finally {
      await strict.close();
    }
    const allowed = await startTestGateway({
      databaseUrl: tdb.url,
      redisUrl: REDIS_URL,
      redisPrefix: prefix,
      secretKey: SECRET,
      outboundAllow: ['10.0.0.0/8', 'vllm.internal'],
    });
    try {
      // created disabled and routed to by no alias: nothing is ever sent to it
      const c = await raw(allowed, 'POST', '/channels', channel('p2', 'http://10.0.0.1/v1'));
      expect(c.status).toBe(201);
      const n = await raw(allowed, 'POST', '/channels', channel('p3', 'http://vllm.internal:8000/v1'));
      expect(n.status).toBe(201);
      const m = await raw(allowed, 'POST', '/channels', channel('p4', 'http://169.254.169.254/v1'));
      expect(m.status).toBe(400);
    } finally {
      await allowed.close();
    }
  });
});
