/**
 * The request log: one row per data-plane request (who, what, where it went, how it ended, what it cost),
 * for "why did this customer get a 502 at 14:03". Written off the request path: rows are buffered here and
 * inserted in batches (one multi-row INSERT per flush, by `unnest` of column arrays), at most every
 * `flushMs` or when `batch` rows wait. Cost per request: bench/overhead.ts (figures in bench/README.md).
 *
 * It is a log, not a record: the ledger holds the money, exactly once. Rows still buffered when a process
 * dies are lost, and when the database is slower than the traffic the buffer is bounded (`maxBuffered`):
 * the oldest rows are dropped and counted (`dropped`), never the request held up.
 *
 * Storage: `request_log`, range-partitioned by day in UTC, so retention is a DROP of whole partitions
 * (`retentionDays`), never a DELETE scan. Each instance makes the partitions it writes to (today and
 * tomorrow ahead of time, and any day a batch carries), tolerating another instance doing the same.
 * Indexes: (at, id) as the key, (key_id, at) for a key's requests, and (id) for a request id a customer
 * quotes; other filters read in time order.
 */
import { sql } from 'kysely';
import type { Logger } from 'pino';
import type { RequestContext } from '../core/context.js';
import type { Db } from '../store/db.js';
import { NamedStatement } from '../store/named-statement.js';
import { pgArray } from '../lib/pg-array.js';

export interface RequestLogRow {
  id: string;
  /** Epoch ms when the request arrived. */
  at: number;
  app_id: string | null;
  key_id: string | null;
  alias: string | null;
  dialect: string;
  channel: string | null;
  upstream_model: string | null;
  stream: boolean;
  attempts: number;
  /** Channels tried before the one that answered (or all of them): channel, what, reason, status, ms. */
  route: unknown[];
  status: number;
  outcome: string;
  error_code: string | null;
  tokens_in: number | null;
  tokens_out: number | null;
  cost_micros: string | null;
  sale_micros: string | null;
  latency_ms: number;
  ttfb_ms: number | null;
  cache_hit: boolean;
  aborted: boolean;
}

export interface RequestLogOptions {
  batch: number;
  flushMs: number;
  maxBuffered: number;
  retentionDays: number;
  instance: string;
}

export const REQUEST_LOG_DEFAULTS: Omit<RequestLogOptions, 'instance'> = {
  batch: 1_000,
  flushMs: 500,
  maxBuffered: 100_000,
  retentionDays: 14,
};

const DAY_MS = 86_400_000;

// The batch INSERT, named (store/named-statement.ts): the same text every flush, planned once.
const INSERT = new NamedStatement('anima_request_log_insert');
const INSERT_SKIPPING = new NamedStatement('anima_request_log_insert_skipping');

function partitionName(day: number): string {
  return 'request_log_' + new Date(day * DAY_MS).toISOString().slice(0, 10).replace(/-/g, '');
}

export class RequestLog {
  private buf: RequestLogRow[] = [];
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> | null = null;
  private readonly made = new Set<number>();
  private maintainedAt = 0;
  written = 0;
  dropped = 0;
  failures = 0;
  lastError: string | null = null;

  constructor(
    private readonly db: Db,
    private readonly log: Logger,
    private readonly opts: RequestLogOptions,
  ) {}

  /** Called once per request as it ends; never waits, never throws. */
  record(ctx: RequestContext): void {
    if (this.buf.length >= this.opts.maxBuffered) {
      this.buf.shift();
      this.dropped++;
    }
    const elapsed = ctx.elapsedMs();
    this.buf.push({
      id: ctx.id,
      at: Date.now() - elapsed,
      app_id: ctx.app?.id ?? null,
      key_id: ctx.key?.id ?? null,
      alias: ctx.aliasName,
      dialect: ctx.dialect,
      channel: ctx.channel,
      upstream_model: ctx.upstreamModel,
      stream: ctx.stream,
      attempts: ctx.attempts,
      route: ctx.route, // the request is over: its route no longer changes
      status: ctx.status,
      outcome: ctx.outcome,
      error_code: ctx.error?.code ?? null,
      tokens_in: ctx.usage?.inputTokens ?? null,
      tokens_out: ctx.usage?.outputTokens ?? null,
      cost_micros: ctx.costMicros === null ? null : String(ctx.costMicros),
      sale_micros: ctx.saleMicros === null ? null : String(ctx.saleMicros),
      latency_ms: Math.round(elapsed * 10) / 10,
      ttfb_ms: ctx.ttfbMs === null ? null : Math.round(ctx.ttfbMs * 10) / 10,
      cache_hit: ctx.cacheHit,
      aborted: ctx.clientAborted,
    });
    // A write under way takes the next whole batch when it ends (drain).
    if (this.buf.length >= this.opts.batch) {
      if (!this.flushing) void this.drain(0);
    } else this.arm();
  }

  private arm(): void {
    if (this.timer || !this.buf.length) return;
    this.timer = setTimeout(() => void this.flush(), this.opts.flushMs);
    this.timer.unref();
  }

  /** Rows waiting to be written. */
  get pending(): number {
    return this.buf.length;
  }

  /** Writes the rows buffered now, batch after batch; resolves when they were handed to the database. */
  flush(): Promise<void> {
    return this.drain(this.buf.length);
  }

  /**
   * Writes the oldest `rows` rows, then whole batches while one waits, one write at a time; stops at a
   * failed write (its rows are kept for the retry). What arrives meanwhile waits for a whole batch or the
   * timer: draining to empty under load wrote the few rows that came in during the previous INSERT, ~64
   * rows per INSERT at ~2,700 requests/s, where a row costs PostgreSQL ~1.6× what it does in batches of
   * 1,000 (bench/request-log.ts).
   */
  private async drain(rows: number): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    let left = rows;
    for (;;) {
      while (this.flushing) await this.flushing;
      const n =
        left > 0 ? Math.min(left, this.opts.batch) : this.buf.length >= this.opts.batch ? this.opts.batch : 0;
      if (n === 0 || !this.buf.length) break;
      left -= n;
      const done: Promise<boolean> = this.write(this.buf.splice(0, n)).finally(() => (this.flushing = null));
      this.flushing = done.then(() => {});
      if (!(await done)) break;
    }
    this.arm();
  }

  /** false: the database refused the batch (its rows are back in the buffer, as room allows). */
  private async write(batch: RequestLogRow[]): Promise<boolean> {
    // A row older than the retention (a request that ran for days, a clock far off) has no partition to
    // go to: it is past keeping anyway.
    const oldest = (Math.floor(Date.now() / DAY_MS) - this.opts.retentionDays) * DAY_MS;
    const rows = batch.filter((r) => r.at >= oldest);
    this.dropped += batch.length - rows.length;
    if (!rows.length) return true;
    try {
      await this.maintain(rows);
      // A batch the database took but whose answer was lost comes back on the retry: the plain INSERT
      // then fails on the key and goes again skipping what is there. Only then: the conflict check on
      // every row was ~7% of the INSERT's CPU in a profile under bench/request-log.ts.
      await this.insert(rows, false).catch((e: unknown) => {
        if ((e as { code?: string })?.code !== '23505') throw e;
        return this.insert(rows, true);
      });
      this.written += rows.length;
      this.lastError = null;
      return true;
    } catch (e) {
      // The database is down or refused the batch: the rows are put back (bounded), tried again later.
      this.failures++;
      this.lastError = String((e as Error)?.message ?? e).slice(0, 200);
      if (this.failures === 1 || this.failures % 100 === 0)
        this.log.warn({ err: { message: this.lastError }, rows: rows.length }, 'request log write failed');
      const room = this.opts.maxBuffered - this.buf.length;
      if (room < rows.length) this.dropped += rows.length - Math.max(0, room);
      if (room > 0) this.buf.unshift(...rows.slice(Math.max(0, rows.length - room)));
      return false;
    }
  }

  /**
   * One multi-row INSERT: a column per field, each as one array literal (pgArray) that `unnest` zips back
   * into rows. Against one JSON text through json_to_recordset this halves PostgreSQL's CPU per row
   * (bench/request-log.ts: the JSON was parsed twice, once to check it and once to read it, with every
   * key repeated per row, and the large text copied through planning), and pgArray spares node-postgres
   * its per-element escaping (bench/HISTORY.md). An empty route goes as NULL: the column's default
   * without a jsonb parse, which most rows have.
   */
  private async insert(rows: RequestLogRow[], skipExisting: boolean): Promise<void> {
    const col = (f: (r: RequestLogRow) => string | number | boolean | null) =>
      pgArray(
        rows.map((r) => {
          const v = f(r);
          return v === null ? null : String(v);
        }),
      );
    await (skipExisting ? INSERT_SKIPPING : INSERT).execute(
      this.db,
      sql`INSERT INTO request_log (id, at, app_id, key_id, alias, dialect, channel, upstream_model,
          stream, attempts, route, status, outcome, error_code, tokens_in, tokens_out, cost_micros,
          sale_micros, latency_ms, ttfb_ms, cache_hit, aborted, instance)
        SELECT t.id, to_timestamp(t.at / 1000.0), t.app_id, t.key_id, t.alias, t.dialect, t.channel,
          t.upstream_model, t.stream, t.attempts, coalesce(t.route, '[]'), t.status, t.outcome, t.error_code,
          t.tokens_in, t.tokens_out, t.cost_micros, t.sale_micros, t.latency_ms, t.ttfb_ms, t.cache_hit,
          t.aborted, ${this.opts.instance}
        FROM unnest(${col((r) => r.id)}::text[], ${col((r) => r.at)}::float8[], ${col((r) => r.app_id)}::text[],
          ${col((r) => r.key_id)}::text[], ${col((r) => r.alias)}::text[], ${col((r) => r.dialect)}::text[],
          ${col((r) => r.channel)}::text[], ${col((r) => r.upstream_model)}::text[], ${col((r) => r.stream)}::boolean[],
          ${col((r) => r.attempts)}::int[], ${col((r) => (r.route.length ? JSON.stringify(r.route) : null))}::jsonb[],
          ${col((r) => r.status)}::int[], ${col((r) => r.outcome)}::text[], ${col((r) => r.error_code)}::text[],
          ${col((r) => r.tokens_in)}::int[], ${col((r) => r.tokens_out)}::int[], ${col((r) => r.cost_micros)}::bigint[],
          ${col((r) => r.sale_micros)}::bigint[], ${col((r) => r.latency_ms)}::real[], ${col((r) => r.ttfb_ms)}::real[],
          ${col((r) => r.cache_hit)}::boolean[], ${col((r) => r.aborted)}::boolean[])
          AS t (id, at, app_id, key_id, alias, dialect, channel, upstream_model, stream, attempts, route,
            status, outcome, error_code, tokens_in, tokens_out, cost_micros, sale_micros, latency_ms, ttfb_ms,
            cache_hit, aborted)
        ${skipExisting ? sql`ON CONFLICT DO NOTHING` : sql``}`.compile(this.db),
    );
  }

  /** The partitions these rows need exist; once an hour, partitions past retention are dropped. */
  private async maintain(rows: RequestLogRow[]): Promise<void> {
    const today = Math.floor(Date.now() / DAY_MS);
    if (Date.now() - this.maintainedAt > 3_600_000) {
      this.maintainedAt = Date.now();
      await this.dropExpired(today).catch((e: unknown) =>
        this.log.warn(
          { err: { message: String((e as Error)?.message ?? e) } },
          'request log retention failed',
        ),
      );
    }
    const days = new Set<number>([today, today + 1]);
    for (const r of rows) days.add(Math.floor(r.at / DAY_MS));
    for (const d of days) if (!this.made.has(d)) await this.makePartition(d);
  }

  private async makePartition(day: number): Promise<void> {
    const name = partitionName(day);
    const from = new Date(day * DAY_MS).toISOString();
    const to = new Date((day + 1) * DAY_MS).toISOString();
    try {
      await sql
        .raw(
          `CREATE TABLE IF NOT EXISTS ${name} PARTITION OF request_log FOR VALUES FROM ('${from}') TO ('${to}')`,
        )
        .execute(this.db);
    } catch (e) {
      // Another instance made it between our check and our CREATE: the same partition, fine.
      const code = (e as { code?: string }).code;
      if (code !== '42P07' && code !== '23505') throw e;
    }
    this.made.add(day);
  }

  private async dropExpired(today: number): Promise<void> {
    const oldest = today - this.opts.retentionDays;
    const { rows } = await sql<{ name: string }>`SELECT c.relname AS name FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'request_log'`.execute(this.db);
    for (const { name } of rows) {
      const m = /^request_log_(\d{4})(\d{2})(\d{2})$/.exec(name);
      if (!m) continue;
      const day = Math.floor(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) / DAY_MS);
      if (day < oldest) {
        await sql.raw(`DROP TABLE IF EXISTS ${name}`).execute(this.db);
        this.made.delete(day);
      }
    }
  }

  async close(): Promise<void> {
    await this.flush().catch(() => {});
  }
}

export interface RequestQuery {
  app?: string;
  key?: string;
  alias?: string;
  channel?: string;
  status?: number;
  /** 'error': every status >= 400. */
  errors?: boolean;
  code?: string;
  id?: string;
  from?: Date;
  to?: Date;
  limit: number;
  /** From a previous page: rows strictly older than this (at, id). */
  cursor?: { at: Date; id: string };
}

export function encodeCursor(row: { at: Date | string; id: string }): string {
  const at = row.at instanceof Date ? row.at.toISOString() : new Date(row.at).toISOString();
  return Buffer.from(JSON.stringify([at, row.id])).toString('base64url');
}

export function decodeCursor(c: string): { at: Date; id: string } | null {
  try {
    const [at, id] = JSON.parse(Buffer.from(c, 'base64url').toString('utf8')) as [string, string];
    const d = new Date(at);
    if (typeof id !== 'string' || Number.isNaN(d.getTime())) return null;
    return { at: d, id };
  } catch {
    return null;
  }
}

/** Newest first, `limit` rows and the cursor of the next page (null at the end). */
/** The request log narrowed by a query's filters (everything but the page's cursor and size). */
function filtered(db: Db, q: Omit<RequestQuery, 'limit' | 'cursor'>) {
  let qb = db.selectFrom('request_log');
  if (q.app) qb = qb.where('app_id', '=', q.app);
  if (q.key) qb = qb.where('key_id', '=', q.key);
  if (q.alias) qb = qb.where('alias', '=', q.alias);
  if (q.channel) qb = qb.where('channel', '=', q.channel);
  if (q.status !== undefined) qb = qb.where('status', '=', q.status);
  if (q.errors) qb = qb.where('status', '>=', 400);
  if (q.code) qb = qb.where('error_code', '=', q.code);
  if (q.id) qb = qb.where('id', '=', q.id);
  if (q.from) qb = qb.where('at', '>=', q.from);
  if (q.to) qb = qb.where('at', '<', q.to);
  return qb;
}

export async function queryRequests(
  db: Db,
  q: RequestQuery,
): Promise<{ data: Array<Record<string, unknown>>; next_cursor: string | null }> {
  let qb = filtered(db, q).selectAll();
  if (q.cursor) {
    const c = q.cursor;
    qb = qb.where((eb) => eb.or([eb('at', '<', c.at), eb.and([eb('at', '=', c.at), eb('id', '<', c.id)])]));
  }
  const rows = await qb
    .orderBy('at', 'desc')
    .orderBy('id', 'desc')
    .limit(q.limit + 1)
    .execute();
  const more = rows.length > q.limit;
  const page = more ? rows.slice(0, q.limit) : rows;
  return {
    data: page.map((r) => ({
      ...r,
      at: new Date(r.at).toISOString(),
      cost_micros: r.cost_micros === null ? null : String(r.cost_micros),
      sale_micros: r.sale_micros === null ? null : String(r.sale_micros),
    })),
    next_cursor: more ? encodeCursor(page[page.length - 1]!) : null,
  };
}

/** Counts over the same filters (a key's page: requests, errors, tokens, sale in a window). */
export async function summarizeRequests(
  db: Db,
  q: Omit<RequestQuery, 'limit' | 'cursor'>,
): Promise<Record<string, string | number>> {
  const r = await filtered(db, q)
    .select([
      sql<string>`count(*)::text`.as('requests'),
      sql<string>`(count(*) FILTER (WHERE status >= 400))::text`.as('errors'),
      sql<string>`coalesce(sum(tokens_in), 0)::text`.as('tokens_in'),
      sql<string>`coalesce(sum(tokens_out), 0)::text`.as('tokens_out'),
      sql<string>`coalesce(sum(sale_micros), 0)::text`.as('sale_micros'),
      sql<string>`coalesce(sum(cost_micros), 0)::text`.as('cost_micros'),
      sql<number | null>`percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)`.as('p50_ms'),
    ])
    .executeTakeFirstOrThrow();
  return {
    requests: Number(r.requests),
    errors: Number(r.errors),
    tokens_in: Number(r.tokens_in),
    tokens_out: Number(r.tokens_out),
    sale_micros: r.sale_micros,
    cost_micros: r.cost_micros,
    p50_ms: r.p50_ms === null ? 0 : Math.round(Number(r.p50_ms) * 10) / 10,
  };
}
