/**
 * A hostile tenant against the data plane:
 *  - what upstreams say (error statuses, stream error events, wrong content types, failed media jobs)
 *    never hands the channel's credential to the client or to a log line, for every provider and dialect;
 *  - every data-plane route (read from the route table) refuses an anonymous caller with a 401 in its
 *    dialect's shape, whatever the body;
 *  - NUL bytes in ids, queries and bodies are a 4xx, never a 500; absurd counts are a 400 naming the field;
 *  - keys sent in queries, headers and bodies never reach a log line;
 *  - a 503 while every channel rests says when to come back (Retry-After);
 *  - a drain that cuts streams still writes one access line per request.
 *
 * The property runs use a fixed seed; ANIMA_SECURITY_SEED and ANIMA_SECURITY_RUNS change them for long runs.
 */
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { startFakeAnthropic, startFakeGemini, startFakeJobs, startFakeOpenAI } from '../../fakes/index.js';
import { insertAlias, insertApp, insertChannel, insertKey } from '../../src/config/repo.js';
import { sealSecret } from '../../src/config/secrets.js';
import { ADMIN_TOKEN, openTestDb, startTestGateway, waitFor } from '../helpers.js';

const SEED = Number(process.env.ANIMA_SECURITY_SEED ?? 424_242);
const RUNS = Number(process.env.ANIMA_SECURITY_RUNS ?? 10);

let G: Awaited<ReturnType<typeof startTestGateway>>;
let oa: FakeUpstream, an: FakeUpstream, gm: FakeUpstream, jb: FakeUpstream;
let rl: FakeUpstream, br: FakeUpstream;
let hostile: Server;
let hostileUrl = '';
let sk: string;

/** What the hostile upstream says, and how (set per property run). */
const H = { msg: '', mode: 'midstream' as 'midstream' | 'early' | 'plain' };

const NO_BREAKER = { breaker: { minCalls: 1_000_000 }, timeouts: { idleMs: 60_000 } };
/** The channels whose credential the redaction property changes every run. */
const CHANNELS = ['oa', 'an', 'gm', 'jb', 'h-oa', 'h-an', 'h-ge', 'h-jb'];

// ---------- helpers ----------

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

function send(
  method: string,
  path: string,
  opts: { headers?: Record<string, string>; body?: string | Buffer; timeoutMs?: number } = {},
): Promise<Res> {
  const u = new URL(G.url + path);
  const body = opts.body === undefined ? undefined : Buffer.from(opts.body);
  return new Promise<Res>((resolve, reject) => {
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname + u.search,
        method,
        headers: { ...(body ? { 'content-length': body.length } : {}), ...opts.headers },
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text: Buffer.concat(parts).toString(),
          }),
        );
        res.on('error', reject);
      },
    );
    req.setTimeout(opts.timeoutMs ?? 15_000, () => req.destroy(new Error(`${method} ${path}: no answer`)));
    // The server may answer (401) before it has read an oversized body: that is the point, not an error.
    req.on('error', (e: NodeJS.ErrnoException) =>
      e.code === 'EPIPE' || e.code === 'ECONNRESET' ? undefined : reject(e),
    );
    req.end(body);
  });
}

const json = (key: string | null, extra: Record<string, string> = {}) => ({
  'content-type': 'application/json',
  ...(key ? { authorization: `Bearer ${key}` } : {}),
  ...extra,
});
const post = (path: string, body: unknown, key: string | null = sk, extra: Record<string, string> = {}) =>
  send('POST', path, { headers: json(key, extra), body: JSON.stringify(body) });

/** The first run of `n` characters of `secret` found in `text` (ASCII case-insensitive), or null. */
function runOf(text: string, secret: string, n = 6): string | null {
  const t = text.toLowerCase();
  const s = secret.toLowerCase();
  for (let i = 0; i + n <= s.length; i++) if (t.includes(s.slice(i, i + n))) return s.slice(i, i + n);
  return null;
}

async function readBody(req: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of req) parts.push(c as Buffer);
  return Buffer.concat(parts).toString();
}

/**
 * An upstream that speaks every provider's wire format just enough to say something hostile: a stream
 * that starts and then carries an error event (midstream), an error event first (early), or a 200 that is
 * not an event stream (plain); media jobs and videos that fail with the message.
 */
function hostileHandler(req: IncomingMessage, res: ServerResponse): void {
  void readBody(req).then(async (raw) => {
    const url = req.url ?? '';
    const msg = H.msg;
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (url.startsWith('/v1/jobs')) {
      if (req.method === 'POST' && url === '/v1/jobs')
        return send(201, { job_id: 'job1', status: 'pending' });
      if (url.endsWith('/cancel')) return send(200, { job_id: 'job1', status: 'cancelled' });
      return send(200, {
        job_id: 'job1',
        status: 'failed',
        progress: 10,
        error: { code: 'e', message: msg },
      });
    }
    if (url.startsWith('/v1/videos')) {
      if (req.method === 'POST')
        return send(200, { id: 'vid1', object: 'video', status: 'queued', progress: 0 });
      if (req.method === 'DELETE') return send(200, { id: 'vid1', object: 'video.deleted', deleted: true });
      return send(200, {
        id: 'vid1',
        object: 'video',
        status: 'failed',
        progress: 0,
        error: { code: 'e', message: msg },
      });
    }
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(raw) as Record<string, unknown>;
    } catch {
      /* not JSON */
    }
    const stream = body.stream === true || url.includes(':streamGenerateContent');
    if (H.mode === 'plain' || !stream) {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(msg);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    const ev = (data: unknown, event?: string) =>
      res.write(`${event ? `event: ${event}\n` : ''}data: ${JSON.stringify(data)}\n\n`);
    const early = H.mode === 'early';
    // Midstream: the start goes out in a packet of its own, so the client has its headers (and the first
    // bytes) before the error event arrives: the error then ends the client's stream as an error frame.
    const later = () => new Promise((r) => setTimeout(r, early ? 0 : 15));
    if (url.startsWith('/v1/chat/completions')) {
      if (!early)
        ev({
          id: 'c1',
          object: 'chat.completion.chunk',
          created: 1,
          model: 'm',
          choices: [{ index: 0, delta: { role: 'assistant', content: 'Hi' }, finish_reason: null }],
        });
      await later();
      ev({ error: { message: msg, type: 'server_error' } });
    } else if (url.startsWith('/v1/responses')) {
      if (!early)
        ev(
          {
            type: 'response.created',
            response: { id: 'r1', object: 'response', status: 'in_progress', model: 'm', output: [] },
          },
          'response.created',
        );
      await later();
      ev({ type: 'error', message: msg }, 'error');
    } else if (url.startsWith('/v1/messages')) {
      if (!early) {
        ev(
          {
            type: 'message_start',
            message: {
              id: 'm1',
              type: 'message',
              role: 'assistant',
              content: [],
              model: 'm',
              stop_reason: null,
              usage: { input_tokens: 1, output_tokens: 0 },
            },
          },
          'message_start',
        );
        ev(
          { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
          'content_block_start',
        );
        ev(
          { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hi' } },
          'content_block_delta',
        );
      }
      await later();
      ev({ type: 'error', error: { type: 'api_error', message: msg } }, 'error');
    } else {
      if (!early) ev({ candidates: [{ content: { role: 'model', parts: [{ text: 'Hi' }] }, index: 0 }] });
      await later();
      ev({ error: { code: 500, message: msg, status: 'INTERNAL' } });
    }
    res.end();
  });
}

async function resetHealth(): Promise<void> {
  for (const c of CHANNELS) {
    await G.health.reset(c);
    await G.breakers.reset(c);
  }
}

/** A task's final state, polled the way a client would. */
async function finalTask(id: string): Promise<Record<string, unknown>> {
  let t: Record<string, unknown> = {};
  await waitFor(
    async () => {
      const r = await send('GET', `/v1/tasks/${id}`, { headers: json(sk) });
      t = JSON.parse(r.text) as Record<string, unknown>;
      return ['succeeded', 'failed', 'cancelled', 'expired'].includes(String(t.status));
    },
    10_000,
    25,
  );
  return t;
}

// ---------- setup ----------

beforeAll(async () => {
  [oa, an, gm, jb, rl, br] = await Promise.all([
    startFakeOpenAI({ name: 'oa' }),
    startFakeAnthropic({ name: 'an' }),
    startFakeGemini({ name: 'gm' }),
    startFakeJobs({ name: 'jb' }),
    startFakeOpenAI({ name: 'rl' }),
    startFakeOpenAI({ name: 'br' }),
  ]);
  hostile = createServer(hostileHandler);
  await new Promise<void>((r) => hostile.listen(0, '127.0.0.1', r));
  hostileUrl = `http://127.0.0.1:${(hostile.address() as AddressInfo).port}`;
  const dbh = await openTestDb(undefined);
  const ch = (
    code: string,
    provider: 'openai' | 'anthropic' | 'gemini' | 'jobs',
    baseUrl: string,
    settings = {},
  ) =>
    insertChannel(dbh.db, {
      code,
      provider,
      baseUrl,
      credential: 'k',
      settings: { ...NO_BREAKER, ...settings },
    });
  await ch('oa', 'openai', oa.url + '/v1');
  await ch('an', 'anthropic', an.url);
  await ch('gm', 'gemini', gm.url + '/v1beta');
  await ch('jb', 'jobs', jb.url + '/v1');
  await ch('h-oa', 'openai', hostileUrl + '/v1');
  await ch('h-an', 'anthropic', hostileUrl);
  await ch('h-ge', 'gemini', hostileUrl + '/v1beta');
  await ch('h-jb', 'jobs', hostileUrl + '/v1');
  await ch('rl', 'openai', rl.url + '/v1');
  await ch('br', 'openai', br.url + '/v1', {
    breaker: { minCalls: 2, failureRate: 0.5, windowMs: 10_000, openMs: 20_000 },
  });
  for (const [name, channel, model] of [
    ['main', 'oa', 'gpt-4o-mini'],
    ['oa', 'oa', 'gpt-4o-mini'],
    ['an', 'an', 'claude-sonnet-4'],
    ['gm', 'gm', 'gemini-2.5-flash'],
    ['oa-embed', 'oa', 'text-embedding-3-small'],
    ['gm-embed', 'gm', 'gemini-embedding-001'],
    ['tts', 'oa', 'gpt-4o-mini-tts'],
    ['img', 'oa', 'gpt-image-1'],
    ['jb', 'jb', 'fake-music'],
    ['h-oa', 'h-oa', 'm'],
    ['h-an', 'h-an', 'm'],
    ['h-ge', 'h-ge', 'm'],
    ['h-jb', 'h-jb', 'm'],
    ['rl', 'rl', 'm'],
    ['br', 'br', 'm'],
  ] as const)
    await insertAlias(dbh.db, { name, tiers: [[{ channel, model }]], maxAttempts: 1 });
  ({ sk } = await insertKey(dbh.db, await insertApp(dbh.db, 'sec')));
  G = await startTestGateway(
    { bodyLimit: 64 * 1024, mediaPollMs: 10, mediaPollCapMs: 40, taskPollMs: 50 },
    { dbh },
  );
}, 60_000);

afterAll(async () => {
  await G?.close();
  await G?.dbh.close();
  await Promise.all([oa, an, gm, jb, rl, br].map((u) => u?.close()));
  hostile?.closeAllConnections();
  await new Promise((r) => hostile?.close(r));
});

// ---------- authentication first ----------

/** A concrete path for a route pattern. */
const concrete = (url: string) => url.replace(/:[A-Za-z_]+/g, 'x1').replace(/\*$/, 'main:generateContent');

function expectUnauthorized(r: Res, method: string, url: string, what: string): void {
  expect(r.status, `${method} ${url} ${what}: ${r.text.slice(0, 200)}`).toBe(401);
  if (method === 'HEAD') return;
  const b = JSON.parse(r.text) as Record<string, any>;
  if (url.startsWith('/suno/')) expect(b.code, what).toMatch(/_api_key$/);
  else if (url.startsWith('/v1/messages')) {
    expect(b.type, what).toBe('error');
    expect(b.error.type, what).toBe('authentication_error');
  } else if (url.startsWith('/v1beta/') || (url.startsWith('/v1/models/') && method === 'POST')) {
    expect(b.error.code, what).toBe(401);
    expect(b.error.status, what).toBe('UNAUTHENTICATED');
  } else expect(b.error.code, what).toMatch(/_api_key$/);
}

describe('authentication first', () => {
  it('every data-plane route in the route table answers an anonymous caller 401, whatever the body', async () => {
    const routes = G.server.animaRoutes.filter(
      (r) => !['/api/admin/', '/actuator/', '/console'].some((p) => r.url.startsWith(p)),
    );
    // The table is the server's own: a route added later is in it, and must pass this test.
    expect(routes.length).toBeGreaterThan(30);
    expect(routes.every((r) => r.dataPlane)).toBe(true);
    for (const must of [
      '/v1/messages',
      '/v1/images/generations',
      '/suno/submit/music',
      '/v1/audio/speech',
      '/v1beta/models/*',
    ])
      expect(routes.some((r) => r.url === must)).toBe(true);
    const big = Buffer.alloc(200 * 1024, 'x');
    const bodies: Array<[string, Record<string, string>, Buffer | string | undefined]> = [
      ['no body', {}, undefined],
      ['garbage json', { 'content-type': 'application/json' }, '{"model": nope'],
      ['oversized', { 'content-type': 'application/json' }, big],
      ['wrong type', { 'content-type': 'text/plain' }, 'hello'],
      ['multipart garbage', { 'content-type': 'multipart/form-data; boundary=zz' }, '--zz\r\ngarbage'],
      [
        'valid-looking',
        { 'content-type': 'application/json' },
        '{"model":"main","messages":[{"role":"user","content":"x"}]}',
      ],
    ];
    const keys: Array<[string, Record<string, string>]> = [
      ['no key', {}],
      ['wrong bearer', { authorization: 'Bearer sk-anima-not-a-real-key-000000000000' }],
      ['wrong x-api-key', { 'x-api-key': 'sk-anima-not-a-real-key-000000000000' }],
      ['wrong goog key', { 'x-goog-api-key': 'AIzaNotARealKey0000000000000000000' }],
    ];
    let n = 0;
    for (const r of routes) {
      for (const [bn, h, b] of bodies) {
        for (const [kn, kh] of keys) {
          const res = await send(r.method, concrete(r.url) + (kn === 'no key' ? '?key=' : ''), {
            headers: { ...h, ...kh },
            ...(b === undefined ? {} : { body: b }),
          });
          expectUnauthorized(res, r.method, r.url, `${bn}, ${kn}`);
          n++;
        }
      }
    }
    console.log(
      `auth first: ${routes.length} data-plane routes x ${bodies.length} bodies x ${keys.length} keys = ${n} anonymous requests, all 401`,
    );
  }, 60_000);

  it("a Gemini key in ?key= authenticates Gemini routes; an unknown one is a 401 in Google's shape", async () => {
    const ok = await send('GET', `/v1beta/models?key=${sk}`);
    expect(ok.status).toBe(200);
    const bad = await send('POST', '/v1beta/models/main:generateContent?key=AIzaNope0000000000000000000000', {
      headers: { 'content-type': 'text/plain' },
      body: 'x',
    });
    expectUnauthorized(bad, 'POST', '/v1beta/models/*', 'bad ?key=');
  });
});

// ---------- input hygiene ----------

describe('input hygiene', () => {
  it('a NUL in a path id is a 404, in a query a 400, in a JSON or form body a 400: never a 500 or an error log', async () => {
    const errorsBefore = G.logs.records().filter((l) => Number(l.level) >= 50).length;
    const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const cases: Array<[string, string, Record<string, string>, number]> = [
      ['GET', '/v1/tasks/%00', json(sk), 404],
      ['GET', '/v1/tasks/ab%00cd', json(sk), 404],
      ['DELETE', '/v1/tasks/%00', json(sk), 404],
      ['POST', '/v1/tasks/%00/cancel', json(sk), 404],
      ['GET', '/v1/videos/%00', json(sk), 404],
      ['GET', '/v1/videos/%00/content', json(sk), 404],
      ['DELETE', '/v1/videos/%00', json(sk), 404],
      ['GET', '/v1/music/%00', json(sk), 404],
      ['GET', '/v1/video/generations/%00', json(sk), 404],
      ['GET', '/suno/fetch/%00', json(sk), 404],
      ['GET', '/v1/models/%00', json(sk), 404],
      ['GET', '/v1/tasks?status=%00', json(sk), 400],
      ['GET', '/v1/tasks?limit=1&x%00=1', json(sk), 400],
      ['GET', '/api/admin/v1/channels/%00', admin, 404],
      ['GET', '/api/admin/v1/channels/%00/versions', admin, 404],
      ['GET', '/api/admin/v1/aliases/%00', admin, 404],
      ['GET', '/api/admin/v1/apps/%00', admin, 404],
      ['GET', '/api/admin/v1/apps/%00/keys', admin, 404],
      ['GET', '/api/admin/v1/apps/%00/wallet', admin, 404],
      ['GET', '/api/admin/v1/tasks/%00', admin, 404],
      ['POST', '/api/admin/v1/tasks/%00/cancel', admin, 404],
      ['DELETE', '/api/admin/v1/admin-tokens/%00', admin, 404],
      ['GET', '/api/admin/v1/channels?code=%00', admin, 400],
      ['GET', '/api/admin/v1/billing/journals?app_id=%00', admin, 400],
      ['GET', '/api/admin/v1/audit?entity=%00', admin, 400],
    ];
    for (const [method, path, headers, want] of cases) {
      const r = await send(method, path, { headers });
      expect(r.status, `${method} ${path}: ${r.text.slice(0, 200)}`).toBe(want);
    }
    const bodies: Array<[string, unknown, string]> = [
      ['/v1/music', { model: 'jb', prompt: 'a\u0000b' }, 'nul in a prompt'],
      ['/v1/videos', { model: 'h-oa', prompt: 'x', size: '\u0000' }, 'nul in size'],
      ['/suno/submit/music', { mv: 'jb', prompt: 'a\u0000' }, 'nul (new-api)'],
      [
        '/v1/chat/completions',
        { model: 'main', messages: [{ role: 'user', content: 'x\u0000' }] },
        'nul in chat',
      ],
      [
        '/v1/chat/completions',
        { model: 'main', messages: [{ role: 'user', ['x\u0000']: 1 }] },
        'nul in a key',
      ],
    ];
    for (const [path, body, what] of bodies) {
      const r = await post(path, body);
      expect(r.status, `${what}: ${r.text}`).toBe(400);
    }
    // An unpaired surrogate (jsonb refuses it): only a \u escape can carry one.
    const lone = await send('POST', '/v1/music', {
      headers: json(sk),
      body: '{"model":"jb","prompt":"a\\ud800b"}',
    });
    expect(lone.status).toBe(400);
    // A pair is text (an emoji written the way Python's json.dumps writes it).
    const pair = await send('POST', '/v1/chat/completions', {
      headers: json(sk),
      body: '{"model":"main","messages":[{"role":"user","content":"\\ud83d\\ude00"}]}',
    });
    expect(pair.status).toBe(200);
    // A backslash-escaped lookalike is text too.
    const look = await send('POST', '/v1/chat/completions', {
      headers: json(sk),
      body: '{"model":"main","messages":[{"role":"user","content":"\\\\u0000"}]}',
    });
    expect(look.status).toBe(200);
    const adminNul = await send('POST', '/api/admin/v1/channels', {
      headers: { ...admin, 'content-type': 'application/json' },
      body: JSON.stringify({ code: 'n\u0000ul', provider: 'openai', base_url: 'http://127.0.0.1:1/v1' }),
    });
    expect(adminNul.status).toBe(400);
    // A form field with a NUL (a video's prompt, sent as multipart as the OpenAI client does).
    const form = new FormData();
    form.set('model', 'h-oa');
    form.set('prompt', 'a\u0000b');
    const mp = await fetch(G.url + '/v1/videos', {
      method: 'POST',
      headers: { authorization: `Bearer ${sk}` },
      body: form,
    });
    expect(mp.status).toBe(400);
    const errors = G.logs.records().filter((l) => Number(l.level) >= 50);
    expect(errors.slice(errorsBefore)).toEqual([]);
  });

  it("absurd counts are a 400 naming the parameter, in the dialect's shape", async () => {
    const chat = (extra: Record<string, unknown>) =>
      post('/v1/chat/completions', { model: 'main', messages: [{ role: 'user', content: 'x' }], ...extra });
    for (const [extra, param] of [
      [{ max_tokens: 1e308 }, 'max_tokens'],
      [{ max_tokens: -1 }, 'max_tokens'],
      [{ max_completion_tokens: 1.5 }, 'max_completion_tokens'],
      [{ max_completion_tokens: 2_000_000_000 }, 'max_completion_tokens'],
      [{ n: 1e12 }, 'n'],
      [{ n: -2 }, 'n'],
    ] as const) {
      const r = await chat(extra);
      expect(r.status, JSON.stringify(extra)).toBe(400);
      expect((JSON.parse(r.text) as { error: { param: string } }).error.param).toBe(param);
    }
    expect((await chat({ max_tokens: 1_000_000_000 })).status).toBe(200);
    const msg = await post('/v1/messages', {
      model: 'an',
      max_tokens: 1e308,
      messages: [{ role: 'user', content: 'x' }],
    });
    expect(msg.status).toBe(400);
    expect(JSON.parse(msg.text)).toMatchObject({ type: 'error', error: { type: 'invalid_request_error' } });
    const resp = await post('/v1/responses', { model: 'main', input: 'x', max_output_tokens: 2e9 });
    expect(resp.status).toBe(400);
    expect((JSON.parse(resp.text) as { error: { param: string } }).error.param).toBe('max_output_tokens');
    for (const gc of [{ maxOutputTokens: 1e10 }, { max_output_tokens: -5 }, { candidateCount: 0.5 }]) {
      const g = await post('/v1beta/models/gm:generateContent', {
        contents: [{ role: 'user', parts: [{ text: 'x' }] }],
        generationConfig: gc,
      });
      expect(g.status, JSON.stringify(gc)).toBe(400);
      expect(JSON.parse(g.text)).toMatchObject({ error: { code: 400, status: 'INVALID_ARGUMENT' } });
      expect(JSON.parse(g.text).error.message).toContain('generationConfig.');
    }
  });
});

// ---------- logs and headers ----------

describe('logs and headers', () => {
  it('keys sent in ?key=, x-goog-api-key, x-api-key, authorization and bodies reach no log line', async () => {
    const before = G.logs.lines.length;
    const wrong = [
      'sk-anima-wrongwrongwrongwrong1234',
      'AIzaSyWrongWrongWrongWrongWrong12345',
      'sk-proj-LeakTestLeakTest0123456789',
    ];
    const body = (k: string) => ({
      model: 'main',
      messages: [{ role: 'user', content: `my key is ${k}` }],
      api_key: k,
    });
    for (const k of [sk, ...wrong]) {
      await send('GET', `/v1beta/models?key=${k}`);
      await send('GET', `/v1beta/models/main?key=${k}&alt=sse`);
      await post(
        `/v1beta/models/gm:generateContent?key=${k}`,
        { contents: [{ parts: [{ text: k }] }] },
        null,
      );
      await post('/v1beta/models/gm:generateContent', { contents: [{ parts: [{ text: k }] }] }, null, {
        'x-goog-api-key': k,
      });
      await post(
        '/v1/messages',
        { model: 'an', max_tokens: 5, messages: [{ role: 'user', content: k }] },
        null,
        { 'x-api-key': k },
      );
      await post('/v1/chat/completions', body(k), k);
      await post('/v1/chat/completions?key=' + k, body(k), sk);
      await post('/v1/music', { model: 'jb', prompt: k }, sk);
    }
    // An unexpected error on a request whose URL carries the key: the internal-error line has the path only.
    const names = G.config.aliasNames.bind(G.config);
    G.config.aliasNames = () => {
      throw new Error('boom');
    };
    const alias = G.config.alias.bind(G.config);
    G.config.alias = () => {
      throw new Error('boom');
    };
    try {
      expect((await send('GET', `/v1beta/models?key=${sk}`)).status).toBe(500);
      expect(
        (
          await post(
            `/v1beta/models/gm:generateContent?key=${sk}`,
            { contents: [{ parts: [{ text: 'x' }] }] },
            null,
          )
        ).status,
      ).toBe(500);
    } finally {
      G.config.aliasNames = names;
      G.config.alias = alias;
    }
    const lines = G.logs.lines.slice(before);
    const internal = lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.msg === 'unhandled error');
    expect(internal.length).toBeGreaterThanOrEqual(2);
    expect(internal.some((l) => l.path === '/v1beta/models')).toBe(true);
    for (const l of lines) for (const k of [sk, ...wrong]) expect(l, l).not.toContain(k);
    for (const l of lines) expect(l).not.toMatch(/[?&]key=/);
  });

  it('a 503 while the only channel rests after a 429 says when to come back; so does an open breaker', async () => {
    rl.setFault({ status: 429, retryAfter: 7 });
    const chat = (model: string) =>
      post('/v1/chat/completions', { model, messages: [{ role: 'user', content: 'x' }] });
    const first = await chat('rl');
    expect(first.status).toBe(429);
    expect(first.headers['retry-after']).toBe('7');
    const second = await chat('rl');
    expect(second.status).toBe(503);
    expect(JSON.parse(second.text).error.code).toBe('no_available_channel');
    const wait = Number(second.headers['retry-after']);
    expect(wait).toBeGreaterThanOrEqual(6);
    expect(wait).toBeLessThanOrEqual(7);
    // Anthropic's clients get the same header on their 503.
    const m = await post('/v1/messages', {
      model: 'rl',
      max_tokens: 5,
      messages: [{ role: 'user', content: 'x' }],
    });
    expect(m.status).toBe(503);
    expect(Number(m.headers['retry-after'])).toBeGreaterThanOrEqual(6);
    // An overloaded upstream that says when: its wait is passed on.
    await G.health.reset('rl');
    rl.setFault({ status: 529, retryAfter: 5 });
    const over = await chat('rl');
    expect([503, 529]).toContain(over.status);
    expect(JSON.parse(over.text).error.code).toBe('upstream_overloaded');
    expect(over.headers['retry-after']).toBe('5');
    rl.setFault(null);

    br.setFault({ status: 500 });
    expect((await chat('br')).status).toBe(502);
    expect((await chat('br')).status).toBe(502);
    expect(G.breakers.state('br').state).toBe('open');
    const open = await chat('br');
    expect(open.status).toBe(503);
    const w = Number(open.headers['retry-after']);
    expect(w).toBeGreaterThanOrEqual(19);
    expect(w).toBeLessThanOrEqual(20);
    br.setFault(null);
    await G.breakers.reset('br');
  });
});

// ---------- redaction of what upstreams say ----------

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const credential = fc
  .tuple(
    fc.constantFrom('sk-', 'sk-proj-', 'sk-ant-api03-', 'AIza', '', 'key_'),
    fc.array(fc.constantFrom(...ALNUM.split('')), { minLength: 20, maxLength: 48 }),
  )
  .map(([p, cs]) => p + cs.join(''));

/** Each chat-like client dialect, JSON and stream, for one alias. */
function chatProbes(alias: string, streamsOnly = false): Array<[string, string, unknown]> {
  const msgs = [{ role: 'user', content: 'hi' }];
  const contents = [{ role: 'user', parts: [{ text: 'hi' }] }];
  const all: Array<[string, string, unknown, boolean]> = [
    ['chat', '/v1/chat/completions', { model: alias, messages: msgs }, false],
    ['chat stream', '/v1/chat/completions', { model: alias, messages: msgs, stream: true }, true],
    ['messages', '/v1/messages', { model: alias, max_tokens: 16, messages: msgs }, false],
    ['messages stream', '/v1/messages', { model: alias, max_tokens: 16, messages: msgs, stream: true }, true],
    ['responses', '/v1/responses', { model: alias, input: 'hi' }, false],
    ['responses stream', '/v1/responses', { model: alias, input: 'hi', stream: true }, true],
    ['gemini', `/v1beta/models/${alias}:generateContent`, { contents }, false],
    ['gemini stream', `/v1beta/models/${alias}:streamGenerateContent?alt=sse`, { contents }, true],
  ];
  return all.filter(([, , , s]) => s || !streamsOnly).map(([n, p, b]) => [`${alias} ${n}`, p, b]);
}

describe('redaction of what upstreams say', () => {
  it('property: a random credential quoted in random upstream words never reaches the client or a log, on every provider, dialect and error path', async () => {
    let requests = 0;
    await fc.assert(
      fc.asyncProperty(
        credential,
        fc.string({ maxLength: 60 }),
        fc.string({ maxLength: 60 }),
        fc.constantFrom(400, 401, 403, 404, 422, 429, 500, 503),
        fc.integer({ min: 0, max: 4 }),
        fc.constantFrom('midstream' as const, 'early' as const, 'plain' as const),
        async (cred, pre, post_, status, how, mode) => {
          const quoted = [
            cred,
            cred.toUpperCase(),
            cred.slice(0, Math.max(8, cred.length >> 1)),
            `${cred.slice(0, 6)}...${cred.slice(-4)}`,
            `Bearer ${cred}`,
          ][how]!;
          const message = `${pre}Incorrect API key provided: ${quoted}${post_}`;
          await G.dbh.db
            .updateTable('channel')
            .set({ credential: sealSecret(cred) })
            .execute();
          await G.config.reload('channel');
          for (const u of [oa, an, gm, jb]) u.setFault({ status, errorMessage: message });
          H.msg = message;
          H.mode = mode;
          const seen: Array<[string, string]> = [];
          const check = (what: string, text: string) => seen.push([what, text]);
          const before = G.logs.lines.length;
          // Media first (their tasks run while the rest is asked): a submit the upstream refuses, a jobs
          // vendor and an OpenAI video whose job fails with the message, an image answered synchronously.
          const media: Array<Promise<void>> = [];
          for (const [path, body, view] of [
            ['/v1/music', { model: 'jb', prompt: 'p' }, '/v1/music/'],
            ['/v1/music', { model: 'h-jb', prompt: 'p' }, '/v1/music/'],
            ['/v1/videos', { model: 'h-oa', prompt: 'p' }, '/v1/videos/'],
          ] as const) {
            media.push(
              (async () => {
                await resetHealth();
                const r = await post(path, body);
                check(`${path} ${body.model} submit`, r.text);
                const id = (JSON.parse(r.text) as { id?: string }).id;
                if (!id) return;
                const t = await finalTask(id);
                check(`${path} ${body.model} task`, JSON.stringify(t));
                check(
                  `${path} ${body.model} view`,
                  (await send('GET', view + id, { headers: json(sk) })).text,
                );
                if (path === '/v1/music')
                  check('suno fetch', (await send('GET', `/suno/fetch/${id}`, { headers: json(sk) })).text);
              })(),
            );
          }
          const probes: Array<[string, string, unknown]> = [
            ...chatProbes('oa'),
            ...chatProbes('an'),
            ...chatProbes('gm'),
            ...chatProbes('h-oa', mode !== 'plain'),
            ...chatProbes('h-an', mode !== 'plain'),
            ...chatProbes('h-ge', mode !== 'plain'),
            ['embeddings', '/v1/embeddings', { model: 'oa-embed', input: 'x' }],
            ['embeddings on gemini', '/v1/embeddings', { model: 'gm-embed', input: 'x' }],
            ['gemini embed', '/v1beta/models/gm-embed:embedContent', { content: { parts: [{ text: 'x' }] } }],
            [
              'gemini embed on openai',
              '/v1beta/models/oa-embed:embedContent',
              { content: { parts: [{ text: 'x' }] } },
            ],
            ['speech', '/v1/audio/speech', { model: 'tts', input: 'hi', voice: 'alloy' }],
            ['image (sync task)', '/v1/images/generations', { model: 'img', prompt: 'p' }],
          ];
          for (const [what, path, body] of probes) {
            await resetHealth();
            const r = await post(path, body);
            check(`${what} (${r.status})`, r.text);
            requests++;
          }
          // The multipart uploads (transcription, translation, image edit) relay the same way.
          for (const [path, model, field] of [
            ['/v1/audio/transcriptions', 'oa', 'file'],
            ['/v1/audio/translations', 'oa', 'file'],
            ['/v1/images/edits', 'img', 'image'],
          ] as const) {
            await resetHealth();
            const form = new FormData();
            form.set('model', model);
            form.set('prompt', 'p');
            form.set(field, new Blob([Buffer.from('RIFF0000WAVEfmt ')]), 'a.wav');
            const r = await fetch(G.url + path, {
              method: 'POST',
              headers: { authorization: `Bearer ${sk}` },
              body: form,
            });
            check(`${path} (${r.status})`, await r.text());
            requests++;
          }
          await Promise.all(media);
          check('logs', G.logs.lines.slice(before).join('\n'));
          for (const [what, text] of seen) {
            expect(text.toLowerCase(), `${what}: ${text.slice(0, 300)}`).not.toContain(cred.toLowerCase());
            expect(runOf(text, cred), `${what}: ${text.slice(0, 300)}`).toBeNull();
          }
        },
      ),
      { seed: SEED, numRuns: RUNS, endOnFailure: true },
    );
    for (const u of [oa, an, gm, jb]) u.setFault(null);
    console.log(
      `redaction: ${RUNS} runs (seed ${SEED}), ${requests} relayed requests and 4 media tasks per run, no credential seen`,
    );
  }, 180_000);
});

// ---------- the drain at shutdown ----------

describe('drain', () => {
  it('streams cut by the drain timeout still get their access line: lines == requests', async () => {
    const up = await startFakeOpenAI({ name: 'dr' });
    const dbh = await openTestDb(undefined);
    await insertChannel(dbh.db, {
      code: 'dr',
      provider: 'openai',
      baseUrl: up.url + '/v1',
      credential: 'k',
      settings: { timeouts: { idleMs: 60_000, totalMs: 120_000 } },
    });
    await insertAlias(dbh.db, { name: 'dr', tiers: [[{ channel: 'dr', model: 'm' }]] });
    const key = await insertKey(dbh.db, await insertApp(dbh.db, 'dr'));
    const D = await startTestGateway({ drainMs: 300 }, { dbh });
    try {
      // Priced, so a cut stream is billed for what it produced; and billing slowed down, so a cut stream's
      // handler is still settling when the server has closed: close() must wait for it, not only for sockets.
      const price = await fetch(D.url + '/api/admin/v1/prices', {
        method: 'POST',
        headers: json(ADMIN_TOKEN),
        body: JSON.stringify({
          alias: 'dr',
          sale_input_per_mtok: 1_000_000,
          sale_output_per_mtok: 1_000_000,
        }),
      });
      expect(price.status).toBe(201);
      await waitFor(() => D.config.price('dr', null), 3_000, 10);
      const billing = D.billing!;
      const settle = billing.settle.bind(billing);
      billing.settle = async (rec, hold) => {
        await new Promise((r) => setTimeout(r, 800)); // the slow dependency injected: longer than the drain
        return settle(rec, hold);
      };
      const chat = (stream: boolean, k: string | null = key.sk) =>
        fetch(D.url + '/v1/chat/completions', {
          method: 'POST',
          headers: json(k),
          body: JSON.stringify({ model: 'dr', stream, messages: [{ role: 'user', content: 'x' }] }),
        });
      let requests = 0;
      for (let i = 0; i < 3; i++, requests++) expect((await chat(false)).status).toBe(200);
      for (let i = 0; i < 2; i++, requests++) expect((await chat(false, null)).status).toBe(401);
      up.setFault({ hangAfterChunks: 1 });
      const held = [];
      for (let i = 0; i < 5; i++, requests++) {
        const r = await chat(true);
        expect(r.status).toBe(200);
        const reader = r.body!.getReader();
        await reader.read(); // the first chunk: the stream is open and held
        held.push(reader);
      }
      const t0 = Date.now();
      await D.close(300);
      const ms = Date.now() - t0;
      const lines = D.logs.records().filter((l) => l.msg === 'request');
      expect(lines).toHaveLength(requests);
      expect(lines.filter((l) => l.stream === true)).toHaveLength(5);
      expect(ms).toBeLessThan(5_000);
      for (const r of held) await r.cancel().catch(() => {});
      console.log(
        `drain: ${requests} requests (5 streams cut after 300 ms), ${lines.length} access lines, closed in ${ms} ms`,
      );
    } finally {
      await D.close();
      await dbh.close();
      await up.close();
    }
  }, 30_000);
});
