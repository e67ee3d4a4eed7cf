/**
 * Tenant isolation and input limits on the data plane: a key sees and uses only what its app was granted;
 * another app's tasks, aliases not granted and the admin API are out of reach; hostile nesting is refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeMediaUpstream, startFakeOpenAI } from '../../fakes/index.js';
import { adminApi, startTestGateway, waitFor } from '../helpers.js';

let G: Awaited<ReturnType<typeof startTestGateway>>;
let up: FakeMediaUpstream;
let a: { sk: string; app: string };
let b: { sk: string; app: string };
const admin = adminApi(() => G.url);
const call = (sk: string, path: string, body?: unknown, method = body === undefined ? 'GET' : 'POST') =>
  fetch(G.url + path, {
    method,
    headers: { authorization: `Bearer ${sk}`, 'content-type': 'application/json' },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });

beforeAll(async () => {
  up = await startFakeOpenAI({ name: 'tenancy' });
  G = await startTestGateway();
  await admin('POST', '/channels', {
    code: 'c',
    provider: 'openai',
    base_url: up.url + '/v1',
    credential: 'k',
  });
  await admin('POST', '/aliases', { name: 'open', chain: [{ targets: [{ channel: 'c', model: 'm' }] }] });
  await admin('POST', '/aliases', { name: 'secret', chain: [{ targets: [{ channel: 'c', model: 'm' }] }] });
  const mk = async (name: string, allowed: string[] | null) => {
    const app = (await admin('POST', '/apps', { name })).id as string;
    const k = await admin('POST', `/apps/${app}/keys`, { name, allowed_aliases: allowed });
    return { sk: k.sk as string, app };
  };
  a = await mk('tenant-a', ['open']);
  b = await mk('tenant-b', null);
  await waitFor(() => G.config.alias('secret'), 2_000, 5);
}, 60_000);

afterAll(async () => {
  await G?.close();
  await up?.close();
});

describe('tenancy', () => {
  it('a key lists and uses only the aliases its app was granted; others are 404 as if absent', async () => {
    const models = (await (await call(a.sk, '/v1/models')).json()) as { data: Array<{ id: string }> };
    expect(models.data.map((m) => m.id)).toEqual(['open']);
    const r = await call(a.sk, '/v1/chat/completions', {
      model: 'secret',
      messages: [{ role: 'user', content: 'x' }],
    });
    expect(r.status).toBe(404);
    const missing = await call(a.sk, '/v1/chat/completions', {
      model: 'no-such-alias',
      messages: [{ role: 'user', content: 'x' }],
    });
    expect(missing.status).toBe(404);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe(
      ((await missing.json()) as { error: { code: string } }).error.code,
    );
    expect((await call(a.sk, '/v1/models/secret')).status).toBe(404);
    expect(
      (
        await call(b.sk, '/v1/chat/completions', {
          model: 'secret',
          messages: [{ role: 'user', content: 'x' }],
        })
      ).status,
    ).toBe(200);
  });

  it("app B can't read, list or cancel app A's tasks", async () => {
    const t = (await (
      await call(a.sk, '/v1/images/generations?async=true', { model: 'open', prompt: 'mine' })
    ).json()) as { id: string };
    expect((await call(b.sk, `/v1/tasks/${t.id}`)).status).toBe(404);
    expect((await call(b.sk, `/v1/tasks/${t.id}/cancel`, {})).status).toBe(404);
    const list = (await (await call(b.sk, '/v1/tasks')).json()) as { data: Array<{ id: string }> };
    expect(list.data.some((x) => x.id === t.id)).toBe(false);
    expect((await call(a.sk, `/v1/tasks/${t.id}`)).status).toBe(200);
  });

  it('an app key is no admin credential: balances, journals and config stay closed to it', async () => {
    for (const p of [
      `/api/admin/v1/apps/${b.app}/wallet`,
      '/api/admin/v1/billing/journals',
      '/api/admin/v1/channels',
    ]) {
      const r = await call(a.sk, p);
      expect(r.status, p).toBe(401);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('invalid_admin_token');
    }
  });

  it('JSON nested deeper than 128 levels is refused with a 400 before anything else', async () => {
    const deep = '{"model":"open","messages":' + '['.repeat(200) + ']'.repeat(200) + '}';
    const r = await call(a.sk, '/v1/chat/completions', deep);
    expect(r.status).toBe(400);
    expect(((await r.json()) as { error: { message: string } }).error.message).toMatch(
      /nested deeper than 128/,
    );
    // Brackets inside strings don't count.
    const ok = await call(a.sk, '/v1/chat/completions', {
      model: 'open',
      messages: [{ role: 'user', content: '['.repeat(500) }],
    });
    expect(ok.status).toBe(200);
  });
});
