/**
 * The price catalogue on real PostgreSQL and Redis: a fresh install with no price rows books a non-zero,
 * balanced journal for a catalogued model (cost at the list price, sale at the default markup), an
 * explicit price row still wins, and `anima prices import` loads a real LiteLLM price file (a verbatim
 * subset, test/fixtures/litellm-model-prices.json) into the catalogue, which every gateway then uses.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { REDIS_URL, TEST_SECRET_KEY, adminApi, waitFor } from '../helpers.js';
import {
  ServiceSuite,
  type TestGateway,
  ceilDiv,
  chatBooked,
  startCatalogueGateway,
  newAppKey,
} from '../helpers-suite.js';

let S: ServiceSuite;
let G: TestGateway;
let up: FakeUpstream;
let db: pg.Pool;
let sk: string;
let app: string;
const admin = adminApi(() => G.url);
const FIXTURE = 'test/fixtures/litellm-model-prices.json';

/** One chat of `model` on the app's key, and what its journal booked. */
const chat = (model: string) => chatBooked(G, db, sk, model, app, 'oai');

/** `anima prices import` as an operator runs it, against the test database and Redis. */
function importPrices(file: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['dist/src/app/cli.js', 'prices', 'import', file], {
      env: {
        ...process.env,
        DATABASE_URL: S.tdb.url,
        REDIS_URL,
        ANIMA_REDIS_PREFIX: S.prefix,
        ANIMA_SECRET_KEY: TEST_SECRET_KEY,
        ANIMA_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (code) => resolve({ code, out }));
  });
}

beforeAll(async () => {
  S = await ServiceSuite.open();
  ({ up, G, db } = await startCatalogueGateway(S, 'cat'));
  await admin('POST', '/aliases', {
    name: 'odd',
    chain: [{ targets: [{ channel: 'oai', model: 'not-listed-model' }] }],
  });
  await admin('POST', '/aliases', {
    name: 'fixed',
    chain: [{ targets: [{ channel: 'oai', model: 'gpt-4o-mini' }] }],
  });
  ({ app, sk } = await newAppKey(admin, { name: 'fresh' }));
  await waitFor(
    () => !!G.config.app(app) && !!G.config.alias('fixed') && !!G.config.channel('oai'),
    3_000,
    5,
  );
}, 60_000);

afterAll(() => S?.close(up));

describe('a fresh install with no price rows', () => {
  it('has no price row at all', async () => {
    expect((await db.query('SELECT count(*)::int AS n FROM price')).rows[0].n).toBe(0);
  });

  it('books a non-zero, balanced journal for a catalogued model: cost at the list price, sale = cost (x1 by default)', async () => {
    const j = await chat('mini');
    // gpt-4o-mini's list price (data/prices.json): 150,000 / 600,000 micro-units per million tokens.
    const cost = ceilDiv(j.i * 150_000n + j.o * 600_000n, 1_000_000n);
    expect(cost).toBeGreaterThan(0n);
    expect(j.cost).toBe(cost);
    expect(j.payable).toBe(cost);
    expect(j.sale).toBe(cost);
    expect(j.revenue).toBe(cost);
    expect(j.debits).toBe(j.credits);
    const tb = await admin('GET', '/billing/trial-balance');
    expect(tb.balanced).toBe(true);
  });

  it('the default_sale_markup setting sells at a markup on the list price (x1.25, rounded up per rate)', async () => {
    await db.query(`INSERT INTO gateway_setting (key, value) VALUES ('default_sale_markup', '"1.25"')`);
    await admin('POST', '/cache/invalidate', { table: 'setting' });
    await waitFor(() => G.config.setting('default_sale_markup') === '1.25', 3_000, 5);
    const j = await chat('mini');
    expect(j.cost).toBe(ceilDiv(j.i * 150_000n + j.o * 600_000n, 1_000_000n));
    // Rates x1.25: 187,500 and 750,000.
    expect(j.sale).toBe(ceilDiv(j.i * 187_500n + j.o * 750_000n, 1_000_000n));
    expect(j.sale).toBeGreaterThan(j.cost);
    expect(j.debits).toBe(j.credits);
  });

  it('a model the catalogue lacks books nothing (no price, as before)', async () => {
    const j = await chat('odd');
    expect(j.sale).toBe(0n);
    expect(j.cost).toBe(0n);
  });

  it('an explicit price row wins over the catalogue', async () => {
    await admin('POST', '/prices', {
      alias: 'fixed',
      sale_input_per_mtok: 2_000_000,
      sale_output_per_mtok: 4_000_000,
      cost_input_per_mtok: 1_000_000,
      cost_output_per_mtok: 2_000_000,
    });
    await waitFor(() => G.config.price('fixed', null)?.id.startsWith('catalogue:') === false, 3_000, 5);
    const j = await chat('fixed');
    expect(j.sale).toBe(2n * j.i + 4n * j.o);
    expect(j.cost).toBe(j.i + 2n * j.o);
  });
});

describe('anima prices import', () => {
  it('loads a real LiteLLM price file into the catalogue table, converting exactly and reporting counts', async () => {
    const r = await importPrices(FIXTURE);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/read 33 entries: 30 priced, 3 skipped/);
    expect(r.out).toMatch(/2 rounded up/);
    expect(r.out).toMatch(/imported: 30 new, 0 replaced/);
    const { rows } = await db.query(
      `SELECT provider, model, input_per_mtok::text AS i, output_per_mtok::text AS o, cached_per_mtok::text AS c,
              per_mchar::text AS mchar, per_audio_second::text AS sec, per_image::text AS img
         FROM price_catalogue ORDER BY provider, model`,
    );
    expect(rows).toHaveLength(30);
    const row = (p: string, m: string) => rows.find((x) => x.provider === p && x.model === m);
    expect(row('openai', 'gpt-4o-mini')).toMatchObject({ i: '150000', o: '600000', c: '75000' });
    expect(row('bedrock_converse', 'amazon.nova-2-pro-preview-20251202-v1:0')).toMatchObject({
      i: '2187500',
      o: '17500000',
      c: '546875',
    });
    expect(row('groq', 'openai/gpt-oss-120b')).toMatchObject({ i: '150000', o: '600000', c: '75000' });
    expect(row('groq', 'playai-tts')).toMatchObject({ mchar: '50000000' });
    expect(row('groq', 'whisper-large-v3')).toMatchObject({ sec: '31' });
    expect(row('gemini', 'imagen-4.0-generate-001')).toMatchObject({ img: '40000' });
    // Again: the same entries are replaced, not duplicated.
    const again = await importPrices(FIXTURE);
    expect(again.out).toMatch(/imported: 0 new, 30 replaced/);
  }, 60_000);

  it('an imported price replaces the shipped one, and the running gateway picks it up', async () => {
    // The real gpt-4o-mini entry with its input price changed, as a newer copy of the file would carry.
    const doc = JSON.parse(readFileSync(FIXTURE, 'utf8')) as Record<string, Record<string, unknown>>;
    const file = join(mkdtempSync(join(tmpdir(), 'anima-prices-')), 'prices.json');
    writeFileSync(
      file,
      JSON.stringify({ 'gpt-4o-mini': { ...doc['gpt-4o-mini'], input_cost_per_token: 3e-7 } }),
    );
    const r = await importPrices(file);
    expect(r.code, r.out).toBe(0);
    await waitFor(() => G.config.price('mini', 'oai')?.cost.inputPerMTok === 300_000n, 5_000, 10);
    const j = await chat('mini');
    expect(j.cost).toBe(ceilDiv(j.i * 300_000n + j.o * 600_000n, 1_000_000n));
    expect(j.debits).toBe(j.credits);
    expect((await admin('GET', '/billing/trial-balance')).balanced).toBe(true);
  }, 60_000);
});
