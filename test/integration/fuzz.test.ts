/**
 * Hostile input against every data-plane and admin endpoint: random JSON of every type, deep nesting,
 * huge strings, prototype-pollution keys, invalid UTF-8, raw garbage, NUL bytes in ids, queries and
 * bodies of every route in the route table. Always a 4xx in the error shape (or a 2xx where the input
 * happens to be valid), never a 5xx, never a hang, never a crash.
 *
 * The properties run with a fixed seed; ANIMA_FUZZ_SEED and ANIMA_FUZZ_RUNS (a multiplier of the
 * default run counts) change them for long runs.
 */
import { request } from 'node:http';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import { insertAlias, insertApp, insertChannel, insertKey } from '../../src/config/repo.js';
import { ADMIN_TOKEN, openTestDb, startTestGateway } from '../helpers.js';

const SEED = Number(process.env.ANIMA_FUZZ_SEED ?? 20_240_611);
const RUNS = Number(process.env.ANIMA_FUZZ_RUNS ?? 1);
const runs = (n: number) => Math.max(1, Math.round(n * RUNS));

let G: Awaited<ReturnType<typeof startTestGateway>>;
let up: FakeUpstream;
let sk: string;

const ROUTES: Array<[string, string, 'sk' | 'admin']> = [
  ['POST', '/v1/chat/completions', 'sk'],
  ['POST', '/v1/embeddings', 'sk'],
  ['POST', '/v1/messages', 'sk'],
  ['POST', '/v1/responses', 'sk'],
  ['POST', '/v1beta/models/main:generateContent', 'sk'],
  ['POST', '/v1beta/models/main:streamGenerateContent?alt=sse', 'sk'],
  ['POST', '/v1beta/models/main:embedContent', 'sk'],
  ['POST', '/v1beta/models/main:batchEmbedContents', 'sk'],
  ['POST', '/v1/audio/speech', 'sk'],
  ['POST', '/v1/audio/transcriptions', 'sk'],
  ['POST', '/v1/images/edits', 'sk'],
  ['POST', '/api/admin/v1/channels', 'admin'],
  ['PATCH', '/api/admin/v1/channels/fz-target', 'admin'],
  ['POST', '/api/admin/v1/aliases', 'admin'],
  ['PATCH', '/api/admin/v1/aliases/fz-target', 'admin'],
  ['POST', '/api/admin/v1/apps', 'admin'],
  ['POST', '/api/admin/v1/quotas', 'admin'],
  ['POST', '/api/admin/v1/kill-switch', 'admin'],
  ['POST', '/api/admin/v1/cache/invalidate', 'admin'],
  ['POST', '/api/admin/v1/admin-tokens', 'admin'],
];

function send(
  method: string,
  path: string,
  auth: string,
  body: Buffer,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  const u = new URL(G.url + path);
  return new Promise<{ status: number; body: string; stream?: boolean }>((resolve, reject) => {
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname + u.search,
        method,
        headers: {
          'content-type': 'application/json',
          authorization: `Bearer ${auth}`,
          'content-length': body.length,
          ...headers,
        },
      },
      (res) => {
        // A live event stream (the console's) answered: that is an answer, not a hang.
        if (String(res.headers['content-type']).startsWith('text/event-stream')) {
          resolve({ status: res.statusCode ?? 0, body: '', stream: true });
          res.destroy();
          return;
        }
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString() }));
      },
    );
    // No hang: every request is answered within the limit.
    req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${path}: no answer within 10 s`)));
    req.on('error', reject);
    req.end(body);
  }).then(async (r) => {
    // A fuzzed body can be a valid one ({"enabled": true}): switch the data plane back on, or every later
    // data-plane case would (rightly) answer 503 gateway_disabled.
    if (path.endsWith('/kill-switch') && r.status === 200) {
      await fetch(G.url + path, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${auth}` },
        body: '{"enabled":false}',
      });
    }
    return r;
  });
}

function check(r: { status: number; body: string }, what: string): void {
  expect(r.status, `${what}: ${r.body.slice(0, 300)}`).toBeLessThan(500);
  if (r.status >= 400 && r.body !== '') {
    const j = JSON.parse(r.body) as {
      error?: { message?: unknown; type?: unknown; code?: unknown; status?: unknown };
    };
    if (what.includes(' /suno/')) {
      // new-api's clients get {code, message, data}.
      expect(typeof (j as { message?: unknown }).message, what).toBe('string');
      return;
    }
    expect(typeof j.error?.message, what).toBe('string');
    if (what.includes('/v1beta/') || what.startsWith('POST /v1/models/')) {
      // Gemini clients get Google's error shape: a numeric code and a status name.
      expect(j.error?.code, what).toBe(r.status);
      expect(typeof j.error?.status, what).toBe('string');
    } else expect(typeof j.error?.code, what).toBe('string');
  }
}

beforeAll(async () => {
  up = await startFakeOpenAI({ name: 'fz' });
  const dbh = await openTestDb(undefined);
  await insertChannel(dbh.db, { code: 'c', provider: 'openai', baseUrl: up.url + '/v1', credential: 'k' });
  await insertAlias(dbh.db, { name: 'main', tiers: [[{ channel: 'c', model: 'm' }]] });
  // What the fuzzed PATCHes hit: real rows, but not the ones the data plane serves with. A fuzzed body
  // can be a valid edit ({"enabled": false} with the right If-Match), and the liveness check at the end
  // failed with 404 when one landed on alias 'main'.
  await insertChannel(dbh.db, {
    code: 'fz-target',
    provider: 'openai',
    baseUrl: up.url + '/v1',
    credential: 'k',
  });
  await insertAlias(dbh.db, { name: 'fz-target', tiers: [[{ channel: 'fz-target', model: 'm' }]] });
  ({ sk } = await insertKey(dbh.db, await insertApp(dbh.db, 'fz')));
  G = await startTestGateway({ bodyLimit: 256 * 1024 }, { dbh });
}, 60_000);

afterAll(async () => {
  await G?.close();
  await G?.dbh.close();
  await up?.close();
});

describe('hostile input', () => {
  it('random JSON values of every shape (property, 300 runs)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...ROUTES),
        fc.jsonValue({ maxDepth: 6 }),
        async ([method, path, who], v) => {
          // keep it cheap: nothing random reaches the upstream unless it is a valid request by chance
          const r = await send(method, path, who === 'sk' ? sk : ADMIN_TOKEN, Buffer.from(JSON.stringify(v)));
          check(r, `${method} ${path} ${JSON.stringify(v).slice(0, 200)}`);
        },
      ),
      { numRuns: runs(300), seed: SEED },
    );
  }, 60_000);

  it('objects with the right field names but wrong types (property, 300 runs)', async () => {
    const field = fc.constantFrom(
      'model',
      'messages',
      'stream',
      'stream_options',
      'max_tokens',
      'input',
      'code',
      'provider',
      'base_url',
      'chain',
      'settings',
      'enabled',
      'name',
      'scope',
      'qps',
      'effective_from',
      'version_no',
      'role',
      'tools',
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...ROUTES),
        fc.dictionary(field, fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constant('main'))),
        async ([method, path, who], v) => {
          const r = await send(
            method,
            path,
            who === 'sk' ? sk : ADMIN_TOKEN,
            Buffer.from(JSON.stringify(v)),
            method === 'PATCH' ? { 'if-match': '"1"' } : {},
          );
          check(r, `${method} ${path} ${JSON.stringify(v).slice(0, 200)}`);
        },
      ),
      { numRuns: runs(300), seed: SEED + 1 },
    );
  }, 60_000);

  it('deep nesting, huge strings, prototype keys, invalid UTF-8, garbage bytes', async () => {
    const deep = '['.repeat(5_000) + ']'.repeat(5_000);
    const bodies: Array<[string, Buffer]> = [
      ['deep array', Buffer.from(deep)],
      ['deep object', Buffer.from('{"a":'.repeat(3_000) + '1' + '}'.repeat(3_000))],
      [
        'huge string',
        Buffer.from(
          JSON.stringify({ model: 'main', messages: [{ role: 'user', content: 'x'.repeat(300 * 1024) }] }),
        ),
      ],
      [
        '__proto__',
        Buffer.from(
          '{"model":"main","__proto__":{"admin":true},"messages":[{"role":"user","content":"x","__proto__":{"x":1}}],"constructor":{"prototype":{"polluted":1}}}',
        ),
      ],
      [
        'invalid utf-8',
        Buffer.concat([
          Buffer.from('{"model":"main","messages":[{"role":"user","content":"'),
          Buffer.from([0xc3, 0x28, 0xff, 0xfe]),
          Buffer.from('"}]}'),
        ]),
      ],
      ['garbage', Buffer.from([0, 1, 2, 255, 254, 10, 13, 0])],
      [
        'nul and controls',
        Buffer.from('{"model":"main\\u0000","messages":[{"role":"user","content":"\\u0000\\u001b[31m"}]}'),
      ],
      ['number model', Buffer.from('{"model":1e309,"messages":[]}')],
    ];
    for (const [method, path, who] of ROUTES) {
      for (const [name, b] of bodies)
        check(await send(method, path, who === 'sk' ? sk : ADMIN_TOKEN, b), `${method} ${path} ${name}`);
    }
    // Hostile multipart bodies on the upload routes.
    const boundary = '----fuzz';
    const multipart: Array<[string, Buffer]> = [
      ['truncated', Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nmain`)],
      ['no parts', Buffer.from(`--${boundary}--\r\n`)],
      [
        'proto field',
        Buffer.from(
          `--${boundary}\r\nContent-Disposition: form-data; name="__proto__"\r\n\r\nx\r\n--${boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nmain\r\n--${boundary}--\r\n`,
        ),
      ],
      ['garbage', Buffer.from([0, 1, 2, 255, 254, 10, 13, 0])],
    ];
    for (const path of ['/v1/audio/transcriptions', '/v1/audio/translations', '/v1/images/edits']) {
      for (const [name, b] of multipart)
        check(
          await send('POST', path, sk, b, { 'content-type': `multipart/form-data; boundary=${boundary}` }),
          `POST ${path} multipart ${name}`,
        );
    }
    // A path that doesn't decode: the dialect's error shape, not Fastify's.
    check(
      await send('POST', '/v1beta/models/%ZZ:generateContent', sk, Buffer.from('{}')),
      'POST /v1beta/ bad %-escape',
    );
    check(
      await send('GET', '/api/admin/v1/channels/%ZZ', ADMIN_TOKEN, Buffer.from('')),
      'GET admin bad %-escape',
    );
    expect(({} as Record<string, unknown>).admin).toBeUndefined();
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    // the gateway is still alive and serving
    const ok = await send(
      'POST',
      '/v1/chat/completions',
      sk,
      Buffer.from(JSON.stringify({ model: 'main', messages: [{ role: 'user', content: 'still here' }] })),
    );
    expect(ok.status).toBe(200);
  }, 60_000);
  /** Every route of the route table, with who may call it. */
  const table = () =>
    G.server.animaRoutes
      .filter((r) => r.method !== 'HEAD')
      .map((r) => ({
        ...r,
        auth: r.url.startsWith('/api/admin/') ? ADMIN_TOKEN : r.dataPlane ? sk : 'none',
      }));
  /** A route's path with each parameter (and a wildcard) given `id`. */
  const pathOf = (url: string, id: string) =>
    url
      .replace(/:[A-Za-z_]+/g, () => encodeURIComponent(id))
      .replace(/\*$/, () =>
        url.startsWith('/v1') ? `${encodeURIComponent(id)}:generateContent` : encodeURIComponent(id),
      );
  const NUL_BODY = Buffer.from(
    JSON.stringify({
      model: 'main\u0000',
      prompt: 'a\u0000b',
      input: '\u0000',
      messages: [{ role: 'user', content: 'x\u0000' }],
      contents: [{ parts: [{ text: '\u0000' }] }],
      code: 'c\u0000',
      name: '\u0000',
      ids: ['\u0000'],
    }),
  );
  const unhandled = () =>
    G.logs.records().filter((l) => l.msg === 'unhandled error' || Number(l.level) >= 50);

  it('NUL in the ids, queries and bodies of every route (the route table): a 4xx, never a 5xx or a hang', async () => {
    const before = unhandled().length;
    const routes = table();
    expect(routes.some((r) => r.url === '/api/admin/v1/tasks/:id')).toBe(true);
    let n = 0;
    for (const r of routes) {
      const what = (p: string) => `${r.method} ${p}`;
      const hasParam = /[:*]/.test(r.url);
      const cases: Array<[string, Buffer, Record<string, string>]> = [
        [pathOf(r.url, 'x') + '?status=%00&limit=1', Buffer.from(''), {}],
        [pathOf(r.url, 'x') + '?x%00y=1', Buffer.from(''), {}],
        [pathOf(r.url, 'main'), NUL_BODY, {}],
        // Ids and paging values that can't exist (a text where a row id is a number): 4xx too.
        [pathOf(r.url, 'not-a-row') + '?version_id=abc', Buffer.from(''), {}],
        [pathOf(r.url, 'x') + '?limit=-1&offset=abc', Buffer.from(''), {}],
      ];
      if (hasParam)
        cases.push(
          [pathOf(r.url, '\u0000'), Buffer.from(''), {}],
          [pathOf(r.url, 'ab\u0000cd'), NUL_BODY, {}],
        );
      for (const [p, b, h] of cases) {
        const res = await send(r.method, p, r.auth, b, h);
        check(res, what(p));
        // An id with a NUL can't exist: 404 (a NUL body alongside is refused first, 400).
        if (hasParam && p.includes('%00') && !p.includes('?') && b.length === 0)
          expect(res.status, what(p)).toBe(404);
        n++;
      }
    }
    expect(unhandled().slice(before)).toEqual([]);
    console.log(`NUL sweep: ${routes.length} routes, ${n} requests, no 5xx`);
  }, 120_000);

  it('NUL bytes anywhere, at random (property over the route table)', async () => {
    const before = unhandled().length;
    const routes = table();
    const withNul = fc
      .tuple(fc.string({ maxLength: 12 }), fc.string({ maxLength: 12 }))
      .map(([a, b]) => `${a}\u0000${b}`);
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...routes),
        withNul,
        fc.option(
          fc.tuple(
            fc.constantFrom('status', 'limit', 'key', 'code', 'app_id', 'from', 'version_id', 'alt'),
            withNul,
          ),
        ),
        fc.jsonValue({ maxDepth: 3 }),
        fc.boolean(),
        async (r, id, query, v, nulBody) => {
          const q = query ? `?${encodeURIComponent(query[0])}=${encodeURIComponent(query[1])}` : '';
          const body = nulBody ? JSON.stringify({ v, s: id, [id]: v }) : JSON.stringify(v);
          const res = await send(r.method, pathOf(r.url, id) + q, r.auth, Buffer.from(body));
          check(res, `${r.method} ${r.url} id=${JSON.stringify(id)} q=${q} body=${body.slice(0, 100)}`);
        },
      ),
      { numRuns: runs(300), seed: SEED + 2 },
    );
    expect(unhandled().slice(before)).toEqual([]);
  }, 120_000);
});
