/**
 * The sale markup per app, on real PostgreSQL and Redis: an alias with no price row is priced from the
 * catalogue (cost = list price), and its sale is that cost times the app's own `sale_markup` when it has
 * one, else the default markup (x1 here). Rounding: each rate is marked up and rounded up to a micro-unit,
 * then the request is priced from the rates and rounded up once (config/catalogue.ts), so with
 * gpt-4o-mini's even list rates the sale is exactly ceil(1.5 x the cost before its rounding).
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { ADMIN_TOKEN, adminApi, waitFor } from '../helpers.js';
import {
  ServiceSuite,
  type TestGateway,
  ceilDiv,
  chatBooked,
  startCatalogueGateway,
} from '../helpers-suite.js';

let S: ServiceSuite;
let G: TestGateway;
let up: FakeUpstream;
let db: pg.Pool;
const admin = adminApi(() => G.url);

/** One chat on `sk`, and what its journal booked: tokens, the app's sale, the channel's cost. */
const chat = (sk: string, appId: string) => chatBooked(G, db, sk, 'mini', appId, 'oai');

async function appWithKey(body: Record<string, unknown>) {
  const app = await admin('POST', '/apps', body);
  const k = await admin('POST', `/apps/${app.id}/keys`, { name: 'm' });
  await waitFor(() => !!G.config.keyById(k.key.id) && !!G.config.app(app.id), 3_000, 5);
  return { app, sk: k.sk as string };
}

beforeAll(async () => {
  S = await ServiceSuite.open();
  ({ up, G, db } = await startCatalogueGateway(S, 'markup-oai'));
  await waitFor(() => G.config.price('mini', 'oai')?.id.startsWith('catalogue:') === true, 3_000, 5);
}, 60_000);

afterAll(() => S?.close(up));

describe('sale markup per app (alias without a price row)', () => {
  it("an app with sale_markup '1.5' books sale = cost x 1.5; an app without one books the list price", async () => {
    const marked = await appWithKey({ name: 'marked', sale_markup: '1.5' });
    expect(marked.app.sale_markup).toBe('1.5');
    const plain = await appWithKey({ name: 'plain' });
    expect(plain.app.sale_markup).toBeNull();

    const m = await chat(marked.sk, marked.app.id);
    // gpt-4o-mini's list price (data/prices.json): 150,000 / 600,000 micro-units per million tokens.
    const millionths = m.i * 150_000n + m.o * 600_000n;
    expect(m.cost).toBe(ceilDiv(millionths, 1_000_000n));
    // Rates x1.5 are whole (225,000 / 900,000): the sale is ceil(1.5 x the unrounded cost).
    expect(m.sale).toBe(ceilDiv(m.i * 225_000n + m.o * 900_000n, 1_000_000n));
    expect(m.sale).toBe(ceilDiv(millionths * 3n, 2_000_000n));
    expect(m.sale).toBeGreaterThan(m.cost);
    expect(m.revenue).toBe(m.sale);
    expect(m.debits).toBe(m.credits);

    const p = await chat(plain.sk, plain.app.id);
    expect(p.sale).toBe(p.cost);
    expect(p.sale).toBe(ceilDiv(p.i * 150_000n + p.o * 600_000n, 1_000_000n));
  });

  it('the markup is patched through the admin API (versioned), refused when malformed, and null goes back to the default', async () => {
    const { app, sk } = await appWithKey({ name: 'patched' });
    const bad = await fetch(`${G.url}/api/admin/v1/apps/${app.id}`, {
      method: 'PATCH',
      headers: {
        authorization: `Bearer ${ADMIN_TOKEN}`,
        'content-type': 'application/json',
        'if-match': `"${app.version_no}"`,
      },
      body: JSON.stringify({ sale_markup: '1.23456' }),
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as any).error.param).toBe('sale_markup');

    const v2 = await admin('PATCH', `/apps/${app.id}`, { sale_markup: '2' }, app.version_no);
    expect(v2.sale_markup).toBe('2');
    await waitFor(() => G.config.app(app.id)?.saleMarkupBp === 20_000n, 3_000, 5);
    const twice = await chat(sk, app.id);
    expect(twice.sale).toBe(ceilDiv((twice.i * 150_000n + twice.o * 600_000n) * 2n, 1_000_000n));

    const v3 = await admin('PATCH', `/apps/${app.id}`, { sale_markup: null }, v2.version_no);
    expect(v3.sale_markup).toBeNull();
    await waitFor(() => G.config.app(app.id)?.saleMarkupBp === null, 3_000, 5);
    const back = await chat(sk, app.id);
    expect(back.sale).toBe(back.cost);
  });

  it('an explicit price row still wins over an app markup', async () => {
    const { app, sk } = await appWithKey({ name: 'rowed', sale_markup: '3' });
    await admin('POST', '/aliases', {
      name: 'fixed',
      chain: [{ targets: [{ channel: 'oai', model: 'gpt-4o-mini' }] }],
    });
    await admin('POST', '/prices', {
      alias: 'fixed',
      sale_input_per_mtok: 2_000_000,
      sale_output_per_mtok: 4_000_000,
      cost_input_per_mtok: 1_000_000,
    });
    await waitFor(() => G.config.price('fixed', null)?.id.startsWith('catalogue:') === false, 3_000, 5);
    const r = await fetch(G.url + '/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${sk}` },
      body: JSON.stringify({ model: 'fixed', messages: [{ role: 'user', content: 'x' }] }),
    });
    const u = ((await r.json()) as any).usage;
    await G.billing!.writer.flush();
    const { rows } = await db.query(
      `SELECT (usage->>'sale_micros')::bigint::int AS sale FROM ledger_journal WHERE kind = 'sale' AND request_id = $1`,
      [r.headers.get('x-request-id')],
    );
    expect(rows[0].sale).toBe(2 * u.prompt_tokens + 4 * u.completion_tokens);
    expect(app.sale_markup).toBe('3');
  });
});
