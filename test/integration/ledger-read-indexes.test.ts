/**
 * Every read the product makes of the ledger and the request log has an index to go through, checked on
 * the queries the code sends (captured as it runs them), planned with sequential scans priced out: a read
 * whose index went (0022 dropped 0014's expression index) shows up as a Seq Scan on its table.
 */
import type pg from 'pg';
import { Kysely, PostgresDialect, type CompiledQuery, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { Ledger } from '../../src/billing/ledger.js';
import { Billing } from '../../src/billing/service.js';
import { queryRequests, summarizeRequests } from '../../src/observability/request-log.js';
import { LedgerSeed } from '../../src/quota/seed.js';
import type { DbHandle } from '../../src/store/db.js';
import type { Database } from '../../src/store/schema.js';
import { type TestDatabase, createTestDatabase, openTestDb, testPool } from '../helpers.js';

let tdb: TestDatabase;
let dbh: DbHandle;
let spy: Kysely<Database>;
let explain: pg.Pool;
const sent: CompiledQuery[] = [];

beforeAll(async () => {
  tdb = await createTestDatabase();
  dbh = await openTestDb(tdb.url); // migrated
  explain = testPool(tdb.url, 1);
  spy = new Kysely<Database>({
    dialect: new PostgresDialect({ pool: testPool(tdb.url, 2) }),
    log: (e) => {
      if (e.level === 'query') sent.push(e.query);
    },
  });
  const day = new Date().toISOString().slice(0, 10);
  const next = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
  await sql
    .raw(`CREATE TABLE request_log_today PARTITION OF request_log FOR VALUES FROM ('${day}') TO ('${next}')`)
    .execute(dbh.db);
  // A month of sales over 2,000 apps and 400 keys, and 20,000 requests of today, analyzed: the planner then picks what it
  // would in production (on empty tables any index, or none, looks as good).
  await sql`INSERT INTO ledger_journal (idem_key, kind, request_id, app_id, alias, channel, usage, occurred_at)
    SELECT 'sale:' || g, 'sale', 'req_' || g, 'a' || (g % 2000), 'al' || (g % 5), 'ch' || (g % 7),
      jsonb_build_object('key_id', 'k' || (g % 400), 'sale_micros', '1500', 'input_tokens', 12),
      timestamptz '2026-12-01' + g * interval '2 minutes'
    FROM generate_series(1, 20000) g`.execute(dbh.db);
  // Their entries in both forms a ledger holds (0023): on the journal's row for even journals, ledger_entry
  // rows for odd ones.
  const ledger = new Ledger(dbh.db);
  const dr = await ledger.ensureAccount({ code: 'receivable:x', kind: 'wallet', appId: 'x' });
  const cr = await ledger.ensureAccount({ code: 'revenue', kind: 'revenue' });
  await sql`INSERT INTO ledger_journal (idem_key, kind, request_id, app_id, alias, channel, usage, occurred_at,
      entry_account, entry_debit, entry_credit)
    SELECT 'sale:i' || g, 'sale', 'req_i' || g, 'a' || (g % 2000), 'al' || (g % 5), 'ch' || (g % 7),
      jsonb_build_object('key_id', 'k' || (g % 400), 'sale_micros', '1500', 'input_tokens', 12),
      timestamptz '2026-12-01' + g * interval '2 minutes',
      ARRAY[${dr.toString()}::bigint, ${cr.toString()}::bigint], '{1500,0}', '{0,1500}'
    FROM generate_series(1, 20000) g`.execute(dbh.db);
  await sql`INSERT INTO ledger_entry (journal_id, account_id, debit, credit)
    SELECT j.id, x.a, x.d, x.c FROM ledger_journal j,
      (VALUES (${dr.toString()}::bigint, 1500, 0), (${cr.toString()}::bigint, 0, 1500)) AS x (a, d, c)
    WHERE j.idem_key LIKE 'sale:%' AND j.entry_account IS NULL`.execute(dbh.db);
  await sql`INSERT INTO request_log (id, at, app_id, key_id, dialect, status, outcome, latency_ms, instance)
    SELECT 'req_' || g, now() - g * interval '1 ms', 'a' || (g % 40), 'k' || (g % 400), 'openai', 200, 'ok', 3, 'i'
    FROM generate_series(1, 20000) g WHERE now() - g * interval '1 ms' >= ${day}::timestamptz`.execute(
    dbh.db,
  );
  await sql`ANALYZE`.execute(dbh.db);
}, 60_000);

afterAll(async () => {
  await spy?.destroy();
  await explain?.end();
  await dbh?.close();
  await tdb?.drop();
});

/** The plan of the first query `run` sent that reads `table`, with sequential scans priced out. */
async function planOf(table: string, run: () => Promise<unknown>): Promise<string> {
  sent.length = 0;
  await run();
  const q = sent.find((x) => new RegExp(`from "?${table}"?\\b`, 'i').test(x.sql))!;
  const c = await explain.connect();
  try {
    await c.query('SET enable_seqscan = off'); // this pool's one connection only
    const { rows } = await c.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${q.sql}`, [...q.parameters]);
    return rows.map((r) => r['QUERY PLAN']).join('\n');
  } finally {
    c.release();
  }
}

const month = { day: 0, month: 0, dayStart: Date.UTC(2026, 11, 2), dayEnd: Date.UTC(2026, 11, 3) };
const bounds = { ...month, monthStart: Date.UTC(2026, 11, 1), monthEnd: Date.UTC(2027, 0, 1) };

describe('ledger and request log reads stay indexed', () => {
  it('quota seeding by key, app and token group reads ledger_journal_key (0014 is gone)', async () => {
    const { rows } = await sql<{
      indexname: string;
    }>`SELECT indexname FROM pg_indexes WHERE tablename = 'ledger_journal' ORDER BY 1`.execute(dbh.db);
    const names = rows.map((r) => r.indexname);
    expect(names).toEqual([
      'ledger_journal_app',
      'ledger_journal_idem_key_key',
      'ledger_journal_key',
      'ledger_journal_occurred',
      'ledger_journal_pkey',
      'ledger_journal_request',
      'ledger_journal_resolves',
    ]);
    const seed = new LedgerSeed(spy);
    for (const scope of ['key', 'app', 'token_group'] as const) {
      const plan = await planOf('ledger_journal', () => seed.figures(scope, 'k1', bounds));
      expect(plan).toContain('ledger_journal_key');
      expect(plan).not.toMatch(/Seq Scan on ledger_journal/);
    }
  });

  it('the admin journal listing by app and by request id', async () => {
    const ledger = new Ledger(spy);
    const byApp = await planOf('ledger_journal', () => ledger.journals({ appId: 'a1' }));
    expect(byApp).toContain('ledger_journal_app');
    const byRequest = await planOf('ledger_journal', () => ledger.journals({ requestId: 'req_1' }));
    expect(byRequest).toContain('ledger_journal_request');
    // Their entries, from both places they are kept, by primary key.
    const entries = await planOf('ledger_posting', () => ledger.journals({ appId: 'a1' }));
    expect(entries).toContain('ledger_entry_pkey');
    expect(entries).toContain('ledger_journal_pkey');
    expect(entries).not.toMatch(/Seq Scan/);
  });

  it("the report of one app's day reaches each journal's entries through indexes", async () => {
    // Only report() is called, which reads through the database handle alone.
    const billing = new Billing(
      null as never,
      new Ledger(spy),
      null as never,
      spy,
      pino({ level: 'silent' }),
      {
        prepaidDefault: false,
      } as never,
    );
    const plan = await planOf('ledger_journal', () =>
      billing.report({
        app: 'a1',
        from: new Date('2026-12-01T00:00:00Z'),
        to: new Date('2026-12-02T00:00:00Z'),
        groupBy: ['day'],
      }),
    );
    expect(plan).not.toMatch(/Seq Scan/);
    expect(plan).toMatch(/ledger_journal_(app|occurred)/);
    expect(plan).toContain('ledger_entry_pkey');
    const rows = await billing.report({
      app: 'a1',
      from: new Date('2026-12-01T00:00:00Z'),
      to: new Date('2026-12-31T00:00:00Z'),
      groupBy: [],
    });
    // a1's journals: g = 1, 2001, ... of each series (10 in each); every one has its sale's revenue.
    expect(rows[0]).toMatchObject({ journals: 20, revenue_micros: String(20 * 1500) });
  });

  it("the request log's list by key, one request by id, and a key's summary", async () => {
    const byKey = await planOf('request_log', () => queryRequests(spy, { key: 'k1', limit: 50 }));
    expect(byKey).toMatch(/key_id_at_idx/);
    const byId = await planOf('request_log', () => queryRequests(spy, { id: 'req_1', limit: 1 }));
    expect(byId).toMatch(/request_log_today_id_idx/);
    const summary = await planOf('request_log', () =>
      summarizeRequests(spy, { key: 'k1', from: new Date(Math.floor(Date.now() / 86_400_000) * 86_400_000) }),
    );
    expect(summary).toMatch(/key_id_at_idx/);
    for (const p of [byKey, byId, summary]) expect(p).not.toMatch(/Seq Scan on request_log_today/);
  });
});
