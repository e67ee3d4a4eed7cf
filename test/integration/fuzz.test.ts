/**
 * Hostile input against every data-plane and admin endpoint: random JSON of every type, deep nesting,
 * huge strings, prototype-pollution keys, invalid UTF-8, raw garbage. Always a 4xx in the error shape
 * (or a 2xx where the input happens to be valid), never a 5xx, never a crash.
 */
import { request } from 'node:http';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import { insertAlias, insertApp, insertChannel, insertKey } from '../../src/config/repo.js';
import { ADMIN_TOKEN, openTestDb, startTestGateway } from '../helpers.js';

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
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
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
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString() }));
      },
    );
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
  expect(r.status, what).toBeLessThan(500);
  if (r.status >= 400) {
    const j = JSON.parse(r.body) as {
      error?: { message?: unknown; type?: unknown; code?: unknown; status?: unknown };
    };
    expect(typeof j.error?.message, what).toBe('string');
    if (what.includes('/v1beta/')) {
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
      { numRuns: 300 },
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
      { numRuns: 300 },
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
});
