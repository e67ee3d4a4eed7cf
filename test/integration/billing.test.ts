/**
 * Billing end to end on real PostgreSQL and Redis: every served request becomes exactly one balanced
 * journal (sale and upstream cost), prepaid wallets are reserved before the upstream is called, the
 * journal writer survives a database outage, and the whole ledger balances after a storm of concurrent
 * requests with upstream failures, fallbacks and client aborts.
 */
import OpenAI from 'openai';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import { ManualClock } from '../../src/lib/clock.js';
import { REDIS_URL, TcpProxy, adminApi, startTestGateway, waitFor } from '../helpers.js';
import { ServiceSuite, TOKEN_PRICES, type TestGateway, newAppKey, openaiChannel } from '../helpers-suite.js';

let S: ServiceSuite;
let A: TestGateway;
let B: TestGateway;
let up1: FakeUpstream;
let up2: FakeUpstream;
let postpaid: { app: string; sk: string };
let prepaid: { app: string; sk: string };
let db: pg.Pool;
const admin = adminApi(() => A.url);

function chat(g: TestGateway, sk: string, extra: Record<string, unknown> = {}, signal?: AbortSignal) {
  return fetch(g.url + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}` },
    body: JSON.stringify({
      model: 'main',
      messages: [{ role: 'user', content: 'hello billing' }],
      max_tokens: 50,
      ...extra,
    }),
    ...(signal ? { signal } : {}),
  });
}

async function journalsOf(requestId: string) {
  const r = await db.query(
    `SELECT j.*, (SELECT json_agg(json_build_object('a', a.code, 'd', e.debit::text, 'c', e.credit::text)) FROM ledger_posting e JOIN ledger_account a ON a.id = e.account_id WHERE e.journal_id = j.id) AS entries FROM ledger_journal j WHERE request_id = $1`,
    [requestId],
  );
  return r.rows as Array<{
    kind: string;
    app_id: string;
    alias: string;
    channel: string;
    usage: any;
    entries: Array<{ a: string; d: string; c: string }>;
  }>;
}
const amount = (j: { entries: Array<{ a: string; d: string; c: string }> }, account: string) =>
  j.entries.filter((e) => e.a === account).reduce((s, e) => s + BigInt(e.d) - BigInt(e.c), 0n);
async function flush() {
  await A.billing!.writer.flush();
  await B.billing!.writer.flush();
}
async function trialBalance() {
  return admin('GET', '/billing/trial-balance');
}

beforeAll(async () => {
  S = await ServiceSuite.open();
  up1 = await startFakeOpenAI({ name: 'bill1' });
  up2 = await startFakeOpenAI({ name: 'bill2' });
  A = await S.gateway();
  B = await S.gateway();
  db = S.pool();
  await openaiChannel(admin, 'one', up1);
  await openaiChannel(admin, 'two', up2);
  await admin('POST', '/aliases', {
    name: 'main',
    chain: [{ targets: [{ channel: 'one', model: 'm1' }] }, { targets: [{ channel: 'two', model: 'm2' }] }],
  });
  await admin('POST', '/prices', { alias: 'main', ...TOKEN_PRICES });
  const mk = (billing: string) => newAppKey(admin, { name: billing, billing });
  postpaid = await mk('postpaid');
  prepaid = await mk('prepaid');
  await waitFor(
    () =>
      [A, B].every(
        (g) => g.config.price('main', null) && g.config.app(prepaid.app) && g.config.channel('two'),
      ),
    3_000,
    5,
  );
}, 60_000);

afterAll(() => S?.close(up1, up2));

describe('the admin API shows how an app is billed', () => {
  it('GET /apps/{id} carries billing (so config export and plan round-trip it)', async () => {
    expect((await admin('GET', `/apps/${prepaid.app}`)).billing).toBe('prepaid');
    expect((await admin('GET', `/apps/${postpaid.app}`)).billing).toBe('postpaid');
  });
});

describe('a served request books one balanced journal', () => {
  it('JSON: the sale at the sale price, the cost at the upstream price, for the channel that served', async () => {
    const r = await chat(A, postpaid.sk);
    expect(r.status).toBe(200);
    const body = (await r.json()) as { usage: { prompt_tokens: number; completion_tokens: number } };
    const rid = r.headers.get('x-request-id')!;
    // Settled before the answer's last byte: the record is already durable in the queue; the writer commits it.
    await A.billing!.writer.flush();
    const [j, ...more] = await journalsOf(rid);
    expect(more).toHaveLength(0);
    expect(j!.kind).toBe('sale');
    expect(j!.channel).toBe('one');
    expect(j!.alias).toBe('main');
    const { prompt_tokens: i, completion_tokens: o } = body.usage;
    const sale = BigInt(2 * i + 4 * o);
    const cost = BigInt(i + 2 * o);
    expect(amount(j!, `receivable:${postpaid.app}`)).toBe(sale);
    expect(amount(j!, 'revenue')).toBe(-sale);
    expect(amount(j!, 'cogs:one')).toBe(cost);
    expect(amount(j!, 'payable:one')).toBe(-cost);
    expect(j!.usage.input_tokens).toBe(i);
    expect(j!.usage.output_tokens).toBe(o);
  });

  it('a stream is billed on the usage the upstream reported, through the official SDK', async () => {
    const client = new OpenAI({ apiKey: postpaid.sk, baseURL: A.url + '/v1' });
    const { data: stream, response } = await client.chat.completions
      .create({
        model: 'main',
        messages: [{ role: 'user', content: 'stream and bill me' }],
        stream: true,
        stream_options: { include_usage: true },
      })
      .withResponse();
    let usage: { prompt_tokens: number; completion_tokens: number } | undefined;
    for await (const c of stream) if (c.usage) usage = c.usage;
    expect(usage).toBeDefined();
    await A.billing!.writer.flush();
    const [j] = await journalsOf(response.headers.get('x-request-id')!);
    expect(amount(j!, 'revenue')).toBe(-BigInt(2 * usage!.prompt_tokens + 4 * usage!.completion_tokens));
  });

  it('a fallback bills only the attempt that served; the failed one is recorded, with no sale', async () => {
    up1.setFault({ status: 500, times: 1 });
    const r = await chat(A, postpaid.sk);
    expect(r.status).toBe(200);
    expect(r.headers.get('x-anima-channel')).toBe('two');
    await A.billing!.writer.flush();
    const js = await journalsOf(r.headers.get('x-request-id')!);
    expect(js).toHaveLength(1);
    expect(js[0]!.channel).toBe('two');
    expect(amount(js[0]!, 'cogs:one')).toBe(0n);
    expect(amount(js[0]!, 'cogs:two')).toBeGreaterThan(0n);
    expect(js[0]!.usage.failed_attempts).toEqual([
      expect.objectContaining({ channel: 'one', reason: 'server_error', status: 500 }),
    ]);
  });

  it('a request that fails everywhere books nothing', async () => {
    up1.setFault({ status: 500 });
    up2.setFault({ status: 500 });
    try {
      const r = await chat(A, postpaid.sk);
      expect(r.status).toBe(502);
      await A.billing!.writer.flush();
      expect(await journalsOf(r.headers.get('x-request-id')!)).toHaveLength(0);
    } finally {
      up1.setFault(null);
      up2.setFault(null);
    }
  });

  it('a client that leaves mid-stream is billed for what was produced: never zero, never max_tokens', async () => {
    up1.setFault({ chunkDelayMs: 150, chunks: 20 });
    try {
      const ac = new AbortController();
      const r = await chat(A, postpaid.sk, { stream: true, max_tokens: 4000 }, ac.signal);
      const rid = r.headers.get('x-request-id')!;
      const reader = r.body!.getReader();
      await reader.read(); // the first chunk arrived: output has begun
      await reader.read();
      ac.abort();
      await waitFor(
        async () => {
          await A.billing!.writer.flush();
          return (await journalsOf(rid)).length === 1;
        },
        5_000,
        50,
      );
      const [j] = await journalsOf(rid);
      expect(j!.usage.client_aborted).toBe(true);
      expect(j!.usage.input_tokens).toBeGreaterThan(0);
      expect(j!.usage.output_tokens).toBeGreaterThan(0);
      expect(j!.usage.output_tokens).toBeLessThan(4000);
      expect(amount(j!, 'revenue')).toBeLessThan(0n);
    } finally {
      up1.setFault(null);
    }
  });

  it("records another instance's writer journals are confirmed by its message, not looked up in the ledger", async () => {
    // Only B writes: A must learn from B that its records are in the ledger.
    await A.billing!.writer.stop();
    const looked: string[] = [];
    const ledger = A.billing!.ledger;
    const journaled = ledger.journaled.bind(ledger);
    ledger.journaled = (keys: string[]) => (looked.push(...keys), journaled(keys));
    const told: string[] = [];
    const confirmed = A.billing!.confirmed.bind(A.billing!);
    A.billing!.confirmed = (recordIds: string[]) => (told.push(...recordIds), confirmed(recordIds));
    try {
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        const r = await chat(A, postpaid.sk);
        expect(r.status).toBe(200);
        await r.arrayBuffer();
        ids.push(r.headers.get('x-request-id')!);
      }
      // Well inside the 2 s before A's sweep would look a record up (BillingOptions.confirmAfterMs). B may
      // already have told A of some by now: what counts is that every one was told, none looked up.
      await waitFor(
        async () => ((await A.billing!.status()) as { unconfirmed: number }).unconfirmed === 0,
        1_500,
        10,
      );
      expect(ids.filter((id) => !told.includes(id))).toEqual([]);
      expect(looked.filter((k) => ids.some((id) => k.endsWith(id)))).toEqual([]);
      expect(await Promise.all(ids.map(async (id) => (await journalsOf(id)).length))).toEqual([
        1, 1, 1, 1, 1,
      ]);
    } finally {
      ledger.journaled = journaled;
      A.billing!.confirmed = confirmed;
      A.billing!.writer.start();
    }
  });

  it('settlement replayed for the same request id posts nothing new', async () => {
    const rec = {
      id: 'replay-1',
      requestId: 'replay-1',
      appId: postpaid.app,
      prepaid: false,
      alias: 'main',
      channel: 'one',
      sale: 10n,
      cost: 4n,
      usage: {},
      at: Date.now(),
    };
    // Redis keeps no marker for a request's record (the pipeline settles a request once), so a replay is
    // queued again; the journal's unique key still writes it once.
    await A.billing!.settle(rec, null);
    await B.billing!.settle(rec, null);
    await flush();
    expect(await journalsOf('replay-1')).toHaveLength(1);
    // A task's record may be settled by two instances (one finishing it, one sweeping): refused at once.
    const task = { ...rec, id: 'task:replay-2', requestId: undefined, taskId: 'replay-2' };
    expect((await A.billing!.settle(task, null)).charged).toBe(10n);
    expect((await B.billing!.settle(task, null)).charged).toBe(0n);
    await flush();
    const t = await db.query(`SELECT count(*)::int AS n FROM ledger_journal WHERE task_id = 'replay-2'`);
    expect(t.rows[0].n).toBe(1);
    // Even a record that reached the queue twice (bypassing the marker) is written once: the journal's key is unique.
    B.billing!.writer.spill({ ...rec, charged: 10n });
    await flush();
    expect(await journalsOf('replay-1')).toHaveLength(1);
  });
});

describe('prepaid wallets', () => {
  it('an unfunded wallet: 402 insufficient_balance before any upstream call', async () => {
    const before = up1.stats.requests + up2.stats.requests;
    const r = await chat(A, prepaid.sk);
    expect(r.status).toBe(402);
    const e = (await r.json()) as { error: { code: string; type: string; message: string } };
    expect(e.error.code).toBe('insufficient_balance');
    expect(e.error.message).toMatch(/prepaid balance/);
    expect(up1.stats.requests + up2.stats.requests).toBe(before);
  });

  it('funding is idempotent; requests then draw the wallet down by their sale price, on both instances', async () => {
    const f1 = await admin('POST', `/apps/${prepaid.app}/wallet/fund`, {
      amount_micros: '5000',
      idempotency_key: 'topup-1',
    });
    const f2 = await admin('POST', `/apps/${prepaid.app}/wallet/fund`, {
      amount_micros: '5000',
      idempotency_key: 'topup-1',
    });
    expect(f2.duplicate).toBe(true);
    expect(f2.journal_id).toBe(f1.journal_id);
    expect(f2.ledger_balance_micros).toBe('5000');
    let sales = 0n;
    for (const g of [A, B, A]) {
      const r = await chat(g, prepaid.sk);
      expect(r.status).toBe(200);
      const u = ((await r.json()) as { usage: { prompt_tokens: number; completion_tokens: number } }).usage;
      sales += BigInt(2 * u.prompt_tokens + 4 * u.completion_tokens);
    }
    await flush();
    const w = await admin('GET', `/apps/${prepaid.app}/wallet`);
    expect(BigInt(w.ledger_balance_micros)).toBe(5000n - sales);
    expect(BigInt(w.spendable_micros)).toBe(5000n - sales);
    expect(w.reserved_micros).toBe('0');
    expect(w.unwritten_micros).toBe('0');
  });

  it('a reservation the wallet cannot cover is refused, though a smaller request still passes', async () => {
    const w = await admin('GET', `/apps/${prepaid.app}/wallet`);
    const spendable = BigInt(w.spendable_micros);
    // max_tokens so large the reservation (4 micro per output token) exceeds the balance.
    const big = await chat(A, prepaid.sk, { max_tokens: Number(spendable / 4n) + 100 });
    expect(big.status).toBe(402);
    const small = await chat(A, prepaid.sk, { max_tokens: 5 });
    expect(small.status).toBe(200);
  });

  it('concurrent requests can never spend more than the wallet holds', async () => {
    const app = (await admin('POST', '/apps', { name: 'race', billing: 'prepaid' })).id as string;
    const k = await admin('POST', `/apps/${app}/keys`, { name: 'k' });
    await admin('POST', `/apps/${app}/wallet/fund`, { amount_micros: '2000' });
    await waitFor(() => [A, B].every((g) => g.config.keyById(k.key.id)), 3_000, 5);
    // Each request reserves ~2*prompt + 4*50 = ~220 micro; 2000 covers at most 9 at once.
    const rs = await Promise.all(Array.from({ length: 40 }, (_, i) => chat(i % 2 ? A : B, k.sk)));
    const ok = rs.filter((r) => r.status === 200).length;
    expect(ok).toBeGreaterThan(0);
    expect(rs.filter((r) => r.status === 402).length).toBe(40 - ok);
    await flush();
    const w = await admin('GET', `/apps/${app}/wallet`);
    expect(BigInt(w.ledger_balance_micros)).toBeGreaterThanOrEqual(0n);
    expect(w.reserved_micros).toBe('0');
  });
});

describe('token groups', () => {
  it("a key in a group is billed at the group's multiplier and held to the group's limits; disabling the group refuses its keys", async () => {
    const g = await admin('POST', '/token-groups', {
      id: 'double',
      name: 'double',
      price_multiplier_ppm: 2_000_000,
    });
    const k = await admin('POST', `/apps/${postpaid.app}/keys`, { name: 'grouped', token_group_id: g.id });
    await admin('POST', '/quotas', { scope: 'token_group', scope_id: g.id, qps: 0.01, qps_burst: 0 });
    await waitFor(
      () =>
        [A, B].every(
          (x) =>
            x.config.tokenGroup(g.id) && x.config.quota('token_group', g.id) && x.config.keyById(k.key.id),
        ),
      3_000,
      5,
    );
    const r = await chat(A, k.sk);
    expect(r.status).toBe(200);
    const rid = r.headers.get('x-request-id')!;
    // The group's QPS (one request per 100 s, no burst) holds across both instances.
    const over = await chat(B, k.sk);
    expect(over.status).toBe(429);
    expect(((await over.json()) as { error: { code: string } }).error.code).toBe('rate_limit_exceeded');
    await flush();
    const [j] = await journalsOf(rid);
    const u = j!.usage as { input_tokens: number; output_tokens: number };
    // Sale at twice the alias price (2 / 4 micro per input / output token); cost at the upstream's, unchanged.
    expect(-amount(j!, 'revenue')).toBe(2n * BigInt(u.input_tokens * 2 + u.output_tokens * 4));
    const cur = await admin('GET', `/token-groups/${g.id}`);
    await admin('PATCH', `/token-groups/${g.id}`, { enabled: false, version_no: cur.version_no });
    await waitFor(() => [A, B].every((x) => x.config.tokenGroup(g.id)?.enabled === false), 3_000, 5);
    for (const x of [A, B]) {
      const refused = await chat(x, k.sk);
      expect(refused.status).toBe(403);
      const e = (await refused.json()) as { error: { code: string; type: string } };
      expect(e.error).toMatchObject({ code: 'token_group_disabled', type: 'permission_error' });
    }
    // Keys outside the group are untouched.
    expect((await chat(A, postpaid.sk)).status).toBe(200);
  });
});

describe('prices in force at the request time', () => {
  it('a price change at T bills requests before and after T at their own prices', async () => {
    await admin('POST', '/aliases', {
      name: 'timed',
      chain: [{ targets: [{ channel: 'one', model: 'm1' }] }],
    });
    const T = Date.now() + 2_000;
    await admin('POST', '/prices', {
      alias: 'timed',
      sale_per_request: 100,
      cost_per_request: 10,
      effective_to: new Date(T).toISOString(),
    });
    await admin('POST', '/prices', {
      alias: 'timed',
      sale_per_request: 300,
      cost_per_request: 30,
      effective_from: new Date(T).toISOString(),
    });
    await waitFor(() => A.config.alias('timed') && A.config.price('timed', null), 3_000, 5);
    const before = await chat(A, postpaid.sk, { model: 'timed' });
    expect(before.status).toBe(200);
    // The boundary passing is what is under test: wait until the gateway itself prices the alias at 300.
    await waitFor(() => A.config.price('timed', null)?.sale.perRequest === 300n, 5_000, 5);
    const after = await chat(A, postpaid.sk, { model: 'timed' });
    expect(after.status).toBe(200);
    await A.billing!.writer.flush();
    const [jb] = await journalsOf(before.headers.get('x-request-id')!);
    const [ja] = await journalsOf(after.headers.get('x-request-id')!);
    expect(amount(jb!, 'revenue')).toBe(-100n);
    expect(amount(jb!, 'cogs:one')).toBe(10n);
    expect(amount(ja!, 'revenue')).toBe(-300n);
    expect(amount(ja!, 'cogs:one')).toBe(30n);
  });
});

describe('the ledger under load', () => {
  it('1,000 concurrent requests with upstream failures, fallbacks and client aborts: one journal per billable request, trial balance zero', async () => {
    up1.setFault({ status: 500, rate: 0.3 });
    up2.setFault({ status: 503, rate: 0.1 });
    const outcomes: Array<{ rid: string | null; status: number; complete: boolean; aborted: boolean }> = [];
    try {
      const one = async (i: number) => {
        const g = i % 2 ? A : B;
        const stream = i % 3 === 0;
        const abort = i % 10 === 7;
        const ac = new AbortController();
        if (abort) setTimeout(() => ac.abort(), 1 + (i % 5)); // the fault injected: aborts at varied points
        try {
          const r = await chat(
            g,
            i % 4 === 0 ? prepaid.sk : postpaid.sk,
            stream ? { stream: true, stream_options: { include_usage: true } } : {},
            ac.signal,
          );
          const text = await r.text();
          outcomes.push({
            rid: r.headers.get('x-request-id'),
            status: r.status,
            complete: r.status === 200 && (stream ? text.includes('[DONE]') : text.includes('"usage"')),
            aborted: false,
          });
        } catch {
          outcomes.push({ rid: null, status: 0, complete: false, aborted: true });
        }
      };
      await admin('POST', `/apps/${prepaid.app}/wallet/fund`, { amount_micros: '100000000' });
      await Promise.all(Array.from({ length: 1000 }, (_, i) => one(i)));
    } finally {
      up1.setFault(null);
      up2.setFault(null);
    }
    await flush();
    const complete = outcomes.filter((o) => o.complete);
    expect(complete.length).toBeGreaterThan(500);
    const rids = outcomes.filter((o) => o.rid).map((o) => o.rid!);
    const { rows } = await db.query(
      `SELECT request_id, count(*)::int AS n FROM ledger_journal WHERE kind = 'sale' AND request_id = ANY($1) GROUP BY request_id`,
      [rids],
    );
    const billed = new Map(rows.map((r: { request_id: string; n: number }) => [r.request_id, r.n]));
    // Every complete answer is billed exactly once; no error answer is billed; nothing is billed twice.
    for (const o of complete) expect(billed.get(o.rid!)).toBe(1);
    for (const o of outcomes.filter((x) => x.rid && x.status >= 400)) expect(billed.has(o.rid!)).toBe(false);
    for (const n of billed.values()) expect(n).toBe(1);
    const tb = await trialBalance();
    expect(tb.mismatches).toEqual([]);
    expect(tb.balanced).toBe(true);
    expect(tb.debits_micros).toBe(tb.credits_micros);
    // No reservation leaked.
    const w = await admin('GET', `/apps/${prepaid.app}/wallet`);
    expect(w.reserved_micros).toBe('0');
    expect(w.unwritten_micros).toBe('0');
    expect(BigInt(w.ledger_balance_micros)).toBe(BigInt(w.spendable_micros));
  }, 120_000);

  it('nothing per request outlives its settlement in Redis: exactly-once markers go when the journal is written, leases leave no marker', async () => {
    const k = await admin('POST', `/apps/${postpaid.app}/keys`, { name: 'markers' });
    await admin('POST', '/quotas', {
      scope: 'key',
      scope_id: k.key.id,
      max_concurrency: 100,
      tokens_per_minute: 10_000_000,
    });
    await waitFor(() => [A, B].every((g) => g.config.quota('key', k.key.id)), 3_000, 5);
    const rs = await Promise.all(Array.from({ length: 60 }, (_, i) => chat(i % 2 ? A : B, k.sk as string)));
    expect(rs.map((r) => r.status)).toEqual(rs.map(() => 200));
    await Promise.all(rs.map((r) => r.text()));
    await flush();
    const r = new Redis(REDIS_URL);
    try {
      const keys: string[] = [];
      let cursor = '0';
      do {
        const [next, batch] = await r.scan(cursor, 'MATCH', `${S.prefix}*`, 'COUNT', 1000);
        cursor = next;
        keys.push(...batch);
      } while (cursor !== '0');
      expect(keys.filter((x) => x.includes(':done:'))).toEqual([]);
      const tag = `${S.prefix}{q:${postpaid.app}}`;
      // A far-from-limit key is admitted from quota slices (quota/slices.ts): each instance returns its
      // slice, slots and unspent reservation, once the key has been idle a moment.
      await waitFor(
        async () => (await r.hlen(`${tag}:res`)) === 0 && (await r.zcard(`${tag}:c:key:${k.key.id}`)) === 0,
        10_000,
        50,
      );
      // The 60 requests were counted once each in the key's day window of tokens (reserved, then trued up).
      const [du] = await r.hmget(`${tag}:s:key:${k.key.id}`, 'du');
      const journals = await db.query(
        `SELECT sum((usage->>'input_tokens')::int + (usage->>'output_tokens')::int)::int AS t FROM ledger_journal WHERE usage->>'key_id' = $1`,
        [k.key.id],
      );
      expect(Number(du)).toBe(journals.rows[0].t);
    } finally {
      r.disconnect();
    }
  });

  it('the report shows revenue, cost and spread by app, alias, channel and day', async () => {
    const r = await admin('GET', '/billing/report?group_by=app,alias,channel,day');
    const row = r.data.find((x: any) => x.app === postpaid.app && x.channel === 'one' && x.alias === 'main');
    expect(row).toBeDefined();
    expect(row.day).toBe(new Date().toISOString().slice(0, 10));
    expect(BigInt(row.revenue_micros)).toBeGreaterThan(BigInt(row.cost_micros));
    expect(BigInt(row.spread_micros)).toBe(BigInt(row.revenue_micros) - BigInt(row.cost_micros));
    const total = await admin('GET', '/billing/report?group_by=');
    const sum = r.data.reduce((s: bigint, x: any) => s + BigInt(x.revenue_micros), 0n);
    expect(BigInt(total.data[0].revenue_micros)).toBe(sum);
    await expect(admin('GET', '/billing/report?group_by=planet')).rejects.toThrow(/400/);
    const js = await admin('GET', `/billing/journals?app_id=${postpaid.app}&kind=sale&limit=5`);
    expect(js.data).toHaveLength(5);
    expect(js.data[0].entries.length).toBeGreaterThanOrEqual(2);
  });
});

describe('the database goes away for 10 s under load', () => {
  it('requests keep being served, no journal is lost, and the backlog drains when it returns', async () => {
    const proxy = await new TcpProxy({ host: '127.0.0.1', port: 5432 }).start();
    const u = new URL(S.tdb.url);
    u.port = String(proxy.port);
    const C = await startTestGateway({ ...S.settings, databaseUrl: u.toString() });
    try {
      await waitFor(() => C.config.price('main', null), 3_000, 5);
      const served: string[] = [];
      const failures: string[] = [];
      let running = true;
      const load = (async () => {
        while (running) {
          await Promise.all(
            Array.from({ length: 5 }, async () => {
              const r = await chat(C, postpaid.sk);
              const text = await r.text();
              if (r.status === 200 && text.includes('"usage"')) served.push(r.headers.get('x-request-id')!);
              else failures.push(`${r.status} ${text.slice(0, 200)}`);
            }),
          ).catch((e: unknown) => failures.push(String(e)));
        }
      })();
      await waitFor(() => served.length >= 10, 10_000, 5); // the load is flowing
      proxy.down();
      const servedAtDown = served.length;
      // The outage's length is the scenario under test (10 s of no database while serving), so real time.
      await new Promise((r) => setTimeout(r, 10_000));
      const servedWhileDown = served.length - servedAtDown;
      const backlog = await C.billing!.backend.backlog();
      proxy.up();
      running = false;
      await load;
      expect(failures).toEqual([]);
      expect(servedWhileDown).toBeGreaterThan(20); // the hot path never needed the database
      expect(backlog).toBeGreaterThan(0); // records waited in Redis
      await waitFor(async () => (await C.billing!.backend.backlog()) === 0, 20_000, 100);
      await flush();
      const { rows } = await db.query(
        `SELECT count(DISTINCT request_id)::int AS n, count(*)::int AS total FROM ledger_journal WHERE request_id = ANY($1)`,
        [served],
      );
      expect(rows[0].n).toBe(served.length);
      expect(rows[0].total).toBe(served.length);
      expect((await trialBalance()).balanced).toBe(true);
    } finally {
      await C.close();
      await proxy.close();
    }
  }, 60_000);
});

describe('settlement off the latency path', () => {
  it("the answer doesn't wait for Redis to confirm its settlement, but the settlement is sent before the answer", async () => {
    const redisProxy = await new TcpProxy({
      host: '127.0.0.1',
      port: Number(new URL(REDIS_URL).port || 6379),
    }).start();
    const C = await startTestGateway({
      databaseUrl: S.tdb.url,
      redisUrl: `redis://127.0.0.1:${redisProxy.port}`,
      redisPrefix: S.prefix,
    });
    try {
      await waitFor(() => C.config.price('main', null), 3_000, 5);
      expect((await chat(C, postpaid.sk)).status).toBe(200);
      // Every Redis reply now takes 400 ms. A postpaid key without quotas has no Redis call before the
      // upstream, and the settlement's reply is awaited only after the answer is out.
      redisProxy.replyDelayMs = 400;
      redisProxy.sent = [];
      const t0 = Date.now();
      const r = await chat(C, postpaid.sk);
      const body = await r.text();
      const answeredAt = Date.now();
      expect(r.status).toBe(200);
      expect(JSON.parse(body).choices[0].message.content.length).toBeGreaterThan(0);
      expect(answeredAt - t0).toBeLessThan(300);
      const rid = r.headers.get('x-request-id')!;
      // The record (it carries the request id) had reached the Redis connection before the client had its answer.
      const sentAt = redisProxy.sent.find((c) => c.data.includes(rid))?.at;
      expect(sentAt).toBeDefined();
      expect(sentAt!).toBeLessThanOrEqual(answeredAt);
      await C.billing!.writer.flush();
      await waitFor(async () => (await journalsOf(rid)).length === 1, 10_000, 50);
    } finally {
      redisProxy.replyDelayMs = 0;
      await C.close();
      await redisProxy.close();
    }
  }, 30_000);
});

describe('Redis and the database both gone', () => {
  it('a settled record waits in memory; new requests get 503 service_unavailable rather than go unbilled; all drains when they return', async () => {
    const pgProxy = await new TcpProxy({ host: '127.0.0.1', port: 5432 }).start();
    const redisProxy = await new TcpProxy({
      host: '127.0.0.1',
      port: Number(new URL(REDIS_URL).port || 6379),
    }).start();
    const u = new URL(S.tdb.url);
    u.port = String(pgProxy.port);
    const C = await startTestGateway({
      databaseUrl: u.toString(),
      redisUrl: `redis://127.0.0.1:${redisProxy.port}`,
      redisPrefix: S.prefix,
    });
    try {
      await waitFor(() => C.config.price('main', null), 3_000, 5);
      expect((await chat(C, postpaid.sk)).status).toBe(200);
      pgProxy.down();
      redisProxy.down();
      // Redis alone gone: settlement goes straight to the database... which is gone too: held in memory.
      const first = await chat(C, postpaid.sk);
      expect(first.status).toBe(200);
      const rid = first.headers.get('x-request-id')!;
      // The answer went out with its settlement handed to Redis; the settlement fails when the command
      // times out (5 s: the proxy drops, it doesn't refuse), spills to the writer, which can't write either.
      await waitFor(() => C.billing!.blocked(), 12_000, 20);
      const refused = await chat(C, postpaid.sk);
      expect(refused.status).toBe(503);
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('service_unavailable');
      // A prepaid wallet can't even be read: refused before any upstream call.
      expect((await chat(C, prepaid.sk)).status).toBe(503);
      // Reads the gateway answers from its in-memory config still answer.
      const models = await fetch(C.url + '/v1/models', {
        headers: { authorization: `Bearer ${postpaid.sk}` },
      });
      expect(models.status).toBe(200);
      expect(((await models.json()) as { data: Array<{ id: string }> }).data.map((m) => m.id)).toContain(
        'main',
      );
      const ready = await fetch(C.url + '/actuator/health/readiness');
      expect(ready.status).toBe(503);
      pgProxy.up();
      redisProxy.up();
      await waitFor(() => !C.billing!.blocked(), 10_000, 50);
      await waitFor(async () => (await journalsOf(rid)).length === 1, 10_000, 50);
      await waitFor(async () => (await chat(C, postpaid.sk)).status === 200, 10_000, 100);
      expect((await trialBalance()).balanced).toBe(true);
    } finally {
      await C.close();
      await pgProxy.close();
      await redisProxy.close();
    }
  }, 60_000);
});

describe('L1 when Redis and the database are both gone', () => {
  it('/v1/models answers from L1 while it is under 30 s old, then 503', async () => {
    const pgProxy = await new TcpProxy({ host: '127.0.0.1', port: 5432 }).start();
    const redisProxy = await new TcpProxy({
      host: '127.0.0.1',
      port: Number(new URL(REDIS_URL).port || 6379),
    }).start();
    const u = new URL(S.tdb.url);
    u.port = String(pgProxy.port);
    const clock = new ManualClock(Date.now());
    const C = await startTestGateway(
      { databaseUrl: u.toString(), redisUrl: `redis://127.0.0.1:${redisProxy.port}`, redisPrefix: S.prefix },
      { clock },
    );
    const models = () =>
      fetch(C.url + '/v1/models', { headers: { authorization: `Bearer ${postpaid.sk}` } }).then(
        (r) => r.status,
      );
    try {
      pgProxy.down();
      redisProxy.down();
      // Known down: Redis at once, the database at the next probe (every 2 s).
      await waitFor(async () => (await chat(C, postpaid.sk)).status === 503, 6_000, 100);
      expect(await models()).toBe(200);
      clock.advance(31_000);
      expect(await models()).toBe(503);
      pgProxy.up();
      redisProxy.up();
      await waitFor(async () => (await models()) === 200, 10_000, 100); // a reload refreshes L1
    } finally {
      await C.close();
      await pgProxy.close();
      await redisProxy.close();
    }
  }, 30_000);
});

describe('ASYNC tasks', () => {
  it('a queued request is billed once, when its task runs, under the task id', async () => {
    const k = await admin('POST', `/apps/${postpaid.app}/keys`, { name: 'async', queue_mode: 'ASYNC' });
    await admin('POST', '/quotas', { scope: 'key', scope_id: k.key.id, max_concurrency: 1 });
    await waitFor(() => A.config.quota('key', k.key.id), 3_000, 5);
    up1.setFault({ latencyMs: 300 });
    try {
      const firstCall = chat(A, k.sk);
      await waitFor(() => up1.stats.inFlight === 1, 5_000, 5); // the first holds the only slot
      const [first, second] = await Promise.all([firstCall, chat(A, k.sk)]);
      expect(first.status).toBe(200);
      expect(second.status).toBe(202);
      const task = (await second.json()) as { id: string };
      await waitFor(
        async () => {
          const t = (await (
            await fetch(`${A.url}/v1/tasks/${task.id}`, { headers: { authorization: `Bearer ${k.sk}` } })
          ).json()) as { status: string };
          return t.status === 'succeeded';
        },
        15_000,
        50,
      );
      await flush();
      const { rows } = await db.query(`SELECT idem_key, task_id FROM ledger_journal WHERE task_id = $1`, [
        task.id,
      ]);
      expect(rows).toEqual([{ idem_key: `sale:task:${task.id}`, task_id: task.id }]);
    } finally {
      up1.setFault(null);
    }
  }, 30_000);
});
