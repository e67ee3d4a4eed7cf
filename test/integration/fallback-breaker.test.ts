/**
 * Fallback chains, circuit breakers, streaming failures and bad input, on real PostgreSQL and Redis,
 * with two gateway instances sharing them.
 */
import { createServer } from 'node:net';
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { insertAlias, insertApp, insertChannel, insertKey, setKeyEnabled } from '../../src/config/repo.js';
import type { DbHandle } from '../../src/store/db.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import type { FakeUpstream } from '../../fakes/common.js';
import {
  REDIS_URL,
  type TestDatabase,
  cleanupRedis,
  createTestDatabase,
  openTestDb,
  startTestGateway,
  testRedisPrefix,
  waitFor,
} from '../helpers.js';

type TGateway = Awaited<ReturnType<typeof startTestGateway>>;
let tdb: TestDatabase;
let dbh: DbHandle;
let prefix: string;
let gw: TGateway;
let gw2: TGateway;
let pri: FakeUpstream;
let sec: FakeUpstream;
let sk: string;
let disabledSk: string;
let deadPort: number;

const BREAKER = {
  minCalls: 3,
  failureRate: 0.5,
  openMs: 1_000,
  halfOpenProbes: 1,
  probeTimeoutMs: 400,
  windowMs: 10_000,
};

async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

function post(
  g: TGateway,
  path: string,
  body: unknown,
  key: string | null = sk,
  extra: Record<string, string> = {},
) {
  return fetch(g.url + path, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(key ? { authorization: `Bearer ${key}` } : {}),
      ...extra,
    },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

const chat = (model: string, extra: Record<string, unknown> = {}) => ({
  model,
  messages: [{ role: 'user', content: 'hi' }],
  ...extra,
});

beforeAll(async () => {
  tdb = await createTestDatabase();
  prefix = testRedisPrefix();
  pri = await startFakeOpenAI({ name: 'primary' });
  sec = await startFakeOpenAI({ name: 'secondary' });
  deadPort = await closedPort();
  dbh = await openTestDb(tdb.url);
  const fast = {
    timeouts: { connectMs: 500, firstByteMs: 600, idleMs: 600, totalMs: 5_000 },
    breaker: BREAKER,
  };
  await insertChannel(dbh.db, {
    code: 'dead',
    provider: 'openai',
    baseUrl: `http://127.0.0.1:${deadPort}/v1`,
    credential: 'dead-secret',
    settings: fast,
  });
  await insertChannel(dbh.db, {
    code: 'pri',
    provider: 'openai',
    baseUrl: pri.url + '/v1',
    credential: 'pri-secret',
    settings: fast,
  });
  await insertChannel(dbh.db, {
    code: 'sec',
    provider: 'openai',
    baseUrl: sec.url + '/v1',
    credential: 'sec-secret',
    settings: fast,
  });
  await insertAlias(dbh.db, {
    name: 'refused',
    tiers: [[{ channel: 'dead', model: 'm' }], [{ channel: 'sec', model: 'm' }]],
  });
  await insertAlias(dbh.db, {
    name: 'main',
    tiers: [[{ channel: 'pri', model: 'm' }], [{ channel: 'sec', model: 'm' }]],
  });
  await insertAlias(dbh.db, { name: 'solo', tiers: [[{ channel: 'pri', model: 'm' }]] });
  const app = await insertApp(dbh.db, 'fb');
  ({ sk } = await insertKey(dbh.db, app));
  const dis = await insertKey(dbh.db, app);
  disabledSk = dis.sk;
  await setKeyEnabled(dbh.db, dis.id, false);
  const settings = {
    databaseUrl: tdb.url,
    redisUrl: REDIS_URL,
    redisPrefix: prefix,
    bodyLimit: 64 * 1024,
    breakerSyncMs: 500,
  };
  gw = await startTestGateway(settings);
  gw2 = await startTestGateway(settings);
}, 60_000);

afterEach(async () => {
  pri.setFault(null);
  sec.setFault(null);
  for (const ch of ['pri', 'sec', 'dead']) {
    await gw.breakers.reset(ch);
    await gw.health.reset(ch);
  }
  await waitFor(() => gw2.breakers.state('pri').state === 'closed' && gw2.health.refusesNow('pri') === null);
  pri.resetStats();
  sec.resetStats();
});

afterAll(async () => {
  await gw?.close();
  await gw2?.close();
  await dbh?.close();
  await pri?.close();
  await sec?.close();
  await cleanupRedis(prefix);
  await tdb?.drop();
});

describe('fallback', () => {
  it('connection refused on the first channel: the second answers, headers say how', async () => {
    const r = await post(gw, '/v1/chat/completions', chat('refused'));
    expect(r.status).toBe(200);
    expect(r.headers.get('x-anima-channel')).toBe('sec');
    expect(r.headers.get('x-anima-attempts')).toBe('2');
    expect(r.headers.get('x-anima-route')).toContain('dead;failed=connect_refused');
    expect(((await r.json()) as { model: string }).model).toBe('refused');
    const line = gw.logs.records().find((l) => l.reqId === r.headers.get('x-request-id'));
    expect(line?.route).toEqual([
      expect.objectContaining({ channel: 'dead', what: 'failed', reason: 'connect_refused' }),
    ]);
  });

  it('500 on the first channel: the second answers', async () => {
    pri.setFault({ status: 500 });
    const r = await post(gw, '/v1/chat/completions', chat('main'));
    expect(r.status).toBe(200);
    expect(r.headers.get('x-anima-channel')).toBe('sec');
    expect(pri.stats.requests).toBe(1);
    expect(r.headers.get('x-anima-route')).toContain('pri;failed=server_error;status=500');
  });

  it('first-byte timeout on the first channel: the second answers', async () => {
    pri.setFault({ hang: true });
    const t0 = Date.now();
    const r = await post(gw, '/v1/chat/completions', chat('main'));
    expect(r.status).toBe(200);
    expect(r.headers.get('x-anima-channel')).toBe('sec');
    expect(Date.now() - t0).toBeLessThan(3_000);
    expect(r.headers.get('x-anima-route')).toContain('pri;failed=first_byte_timeout');
    await waitFor(() => pri.stats.aborted === 1); // the hung upstream request was torn down
  });

  it('a 400 from the upstream is returned as it is and not retried', async () => {
    pri.setFault({ status: 400, errorCode: 'invalid_value', errorMessage: 'temperature is out of range' });
    const r = await post(gw, '/v1/chat/completions', chat('main'));
    expect(r.status).toBe(400);
    const j = (await r.json()) as { error: { message: string; code: string } };
    expect(j.error.message).toBe('temperature is out of range');
    expect(j.error.code).toBe('invalid_value');
    expect(sec.stats.requests).toBe(0);
  });

  it('chain exhausted: 502 upstream_error; all timed out: 504 upstream_timeout', async () => {
    pri.setFault({ status: 503 });
    const r = await post(gw, '/v1/chat/completions', chat('solo'));
    expect(r.status).toBe(502);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('upstream_error');
    await gw.breakers.reset('pri');
    pri.setFault({ hang: true });
    const t = await post(gw, '/v1/chat/completions', chat('solo'));
    expect(t.status).toBe(504);
    expect(((await t.json()) as { error: { code: string } }).error.code).toBe('upstream_timeout');
  });

  it('429 with Retry-After rests the channel without counting against its breaker', async () => {
    pri.setFault({ status: 429, retryAfter: 30, times: 1 });
    const a = await post(gw, '/v1/chat/completions', chat('main'));
    expect(a.headers.get('x-anima-channel')).toBe('sec');
    const b = await post(gw2, '/v1/chat/completions', chat('main')); // the other instance knows too
    expect(b.headers.get('x-anima-channel')).toBe('sec');
    expect(b.headers.get('x-anima-route')).toContain('pri;skipped=cooldown');
    expect(pri.stats.requests).toBe(1);
    expect(gw.breakers.state('pri').state).toBe('closed');
  });

  it('401 from the upstream takes the credential out and raises an alert; insufficient_quota likewise', async () => {
    pri.setFault({ status: 401 });
    const a = await post(gw, '/v1/chat/completions', chat('main'));
    expect(a.headers.get('x-anima-channel')).toBe('sec');
    expect(gw.health.refusesNow('pri')).toBe('credential_invalid');
    expect(gw.logs.records().some((l) => l.alert === true && l.channel === 'pri')).toBe(true);
    await gw.health.reset('pri');
    pri.setFault({ status: 429, errorCode: 'insufficient_quota' });
    await post(gw, '/v1/chat/completions', chat('main'));
    expect(gw.health.refusesNow('pri')).toBe('credential_exhausted');
  });
});

/**
 * The open period is what these cases test, so they wait real time, but for the breakers to say so: until
 * both instances hold the same open generation of 'pri' (the second learns it from the first) and neither
 * refuses for it any more. No margin guessed on top of openMs.
 */
async function openPeriodOver(): Promise<void> {
  await waitFor(
    () => {
      const s = gw.breakers.state('pri');
      return (
        s.state === 'open' &&
        gw2.breakers.state('pri').gen === s.gen &&
        gw.breakers.refusesNow('pri') === null &&
        gw2.breakers.refusesNow('pri') === null
      );
    },
    BREAKER.openMs + 3_000,
    5,
  );
}

describe('circuit breaker', () => {
  it('N failures open it; while open nothing reaches the channel; after the wait a probe closes it', async () => {
    pri.setFault({ status: 500 });
    for (let i = 0; i < 3; i++) await post(gw, '/v1/chat/completions', chat('solo'));
    expect(gw.breakers.state('pri').state).toBe('open');
    expect(pri.stats.requests).toBe(3);
    for (let i = 0; i < 5; i++) {
      const r = await post(gw, '/v1/chat/completions', chat('solo'));
      expect(r.status).toBe(503);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('no_available_channel');
    }
    expect(pri.stats.requests).toBe(3);
    pri.setFault(null);
    await openPeriodOver();
    const ok = await post(gw, '/v1/chat/completions', chat('solo'));
    expect(ok.status).toBe(200);
    // the probe's outcome is booked right after its answer is written
    await waitFor(() => gw.breakers.state('pri').state === 'closed', 1_000);
  });

  it('at the half-open moment, 100 concurrent requests let exactly the permitted probes through', async () => {
    pri.setFault({ status: 500 });
    for (let i = 0; i < 3; i++) await post(gw, '/v1/chat/completions', chat('solo'));
    // The probe takes 300 ms to its first byte; everything that arrives meanwhile must be refused.
    pri.setFault({ latencyMs: 300 });
    pri.resetStats();
    let closedAt = 0;
    gw.breakers.onTransition(
      (ch, _from, to) => void (ch === 'pri' && to.state === 'closed' && !closedAt && (closedAt = Date.now())),
    );
    gw2.breakers.onTransition(
      (ch, _from, to) => void (ch === 'pri' && to.state === 'closed' && !closedAt && (closedAt = Date.now())),
    );
    await openPeriodOver();
    const results = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        post(i % 2 ? gw : gw2, '/v1/chat/completions', chat('solo')).then(async (r) => {
          const route = r.headers.get('x-anima-route') ?? '';
          await r.arrayBuffer();
          return { status: r.status, route };
        }),
      ),
    );
    expect(closedAt).toBeGreaterThan(0);
    // Across both instances, exactly the permitted probes reached the upstream before it closed...
    const beforeClose = pri.requests.filter((r) => r.at < closedAt);
    expect(beforeClose).toHaveLength(BREAKER.halfOpenProbes);
    // ...every other request decided meanwhile was refused, and nothing else was lost.
    const refused = results.filter((r) => r.status === 503 && r.route.includes('breaker_half_open'));
    expect(refused.length).toBeGreaterThan(0);
    expect(refused.length + pri.stats.requests).toBe(100);
    console.log(
      `half-open: ${refused.length} of 100 concurrent requests refused while the probe was outstanding; ${pri.stats.requests - 1} arrived after it closed`,
    );
  });

  it('a hung probe times out and reopens the breaker instead of leaving it half-open', async () => {
    pri.setFault({ status: 500 });
    for (let i = 0; i < 3; i++) await post(gw, '/v1/chat/completions', chat('solo'));
    pri.setFault({ hang: true });
    await openPeriodOver();
    const t0 = Date.now();
    const r = await post(gw, '/v1/chat/completions', chat('solo'));
    expect(r.status).toBe(504);
    expect(Date.now() - t0).toBeLessThan(BREAKER.probeTimeoutMs + 500);
    expect(gw.breakers.state('pri').state).toBe('open');
  });

  it('forced open holds regardless of a healthy upstream; traffic fails over', async () => {
    await gw.breakers.forceOpen('pri');
    for (let i = 0; i < 3; i++) {
      const r = await post(gw, '/v1/chat/completions', chat('main'));
      expect(r.headers.get('x-anima-channel')).toBe('sec');
      expect(r.headers.get('x-anima-route')).toContain('pri;skipped=breaker_forced_open');
    }
    expect(pri.stats.requests).toBe(0);
  });

  it('a breaker opened by one instance stops traffic from the other within 1 s', async () => {
    pri.setFault({ status: 500 });
    for (let i = 0; i < 3; i++) await post(gw, '/v1/chat/completions', chat('solo'));
    expect(gw.breakers.state('pri').state).toBe('open');
    const t0 = Date.now();
    const ms = await waitFor(() => gw2.breakers.state('pri').state === 'open', 1_000, 5);
    console.log(`breaker propagation to the second instance: ${ms} ms (${Date.now() - t0} ms wall)`);
    const before = pri.stats.requests;
    const r = await post(gw2, '/v1/chat/completions', chat('main'));
    expect(r.headers.get('x-anima-channel')).toBe('sec');
    expect(pri.stats.requests).toBe(before);
  });
});

describe('streaming failures', () => {
  it('a stream cut by the upstream ends the client stream with an error event, not silently', async () => {
    pri.setFault({ cutAfterChunks: 3, chunks: 10 });
    const r = await post(gw, '/v1/chat/completions', chat('solo', { stream: true }));
    expect(r.status).toBe(200);
    const text = await r.text();
    expect(text).toContain('"code":"upstream_stream_interrupted"');
    expect(text).not.toContain('[DONE]');
    // and the official client surfaces it as an error
    pri.setFault({ cutAfterChunks: 3, chunks: 10 });
    const client = new OpenAI({ apiKey: sk, baseURL: gw.url + '/v1', maxRetries: 0 });
    const run = async () => {
      const s = await client.chat.completions.create({
        model: 'solo',
        messages: [{ role: 'user', content: 'x' }],
        stream: true,
      });
      for await (const _ of s) void _;
    };
    await expect(run()).rejects.toThrow(/interrupted|upstream/i);
  });

  it('a client that disconnects mid-stream aborts the upstream request', async () => {
    pri.setFault({ chunks: 50, chunkDelayMs: 50 });
    const ac = new AbortController();
    const r = await post(gw, '/v1/chat/completions', chat('solo', { stream: true }));
    void ac;
    const reader = r.body!.getReader();
    await reader.read();
    await reader.cancel();
    await waitFor(() => pri.stats.aborted === 1, 3_000);
    expect(pri.stats.inFlight).toBe(0);
  });
});

describe('bad input', () => {
  const cases: Array<[string, () => Promise<Response>, number, string]> = [
    ['malformed JSON', () => post(gw, '/v1/chat/completions', '{"model": "main", '), 400, 'invalid_json'],
    [
      'missing model',
      () => post(gw, '/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }] }),
      400,
      'missing_model',
    ],
    [
      'messages not an array',
      () => post(gw, '/v1/chat/completions', { model: 'main', messages: 'hi' }),
      400,
      'invalid_request',
    ],
    ['unknown alias', () => post(gw, '/v1/chat/completions', chat('no-such-alias')), 404, 'model_not_found'],
    [
      'oversize body',
      () => post(gw, '/v1/chat/completions', chat('main', { pad: 'x'.repeat(70 * 1024) })),
      413,
      'body_too_large',
    ],
    [
      'wrong key',
      () => post(gw, '/v1/chat/completions', chat('main'), 'sk-anima-wrong'),
      401,
      'invalid_api_key',
    ],
    ['no key', () => post(gw, '/v1/chat/completions', chat('main'), null), 401, 'missing_api_key'],
    ['disabled key', () => post(gw, '/v1/chat/completions', chat('main'), disabledSk), 403, 'key_disabled'],
    [
      'wrong content type',
      () => post(gw, '/v1/chat/completions', 'hello', sk, { 'content-type': 'text/plain' }),
      415,
      'unsupported_media_type',
    ],
  ];
  it.each(cases)('%s', async (_n, send, status, code) => {
    const r = await send();
    expect(r.status).toBe(status);
    const j = (await r.json()) as { error: { message: string; type: string; code: string } };
    expect(j.error.code).toBe(code);
    expect(typeof j.error.message).toBe('string');
    expect(typeof j.error.type).toBe('string');
    expect(pri.stats.requests + sec.stats.requests).toBe(0);
  });
});
