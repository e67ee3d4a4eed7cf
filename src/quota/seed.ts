/**
 * The ledger's side of quota windows: what a scope spent today and this month, read from the sale journals
 * so the windows can start from it when the store that keeps them (Redis, or this process) starts without
 * them. Without it a Redis restart, FLUSHALL or failover to a lagging replica would let a key spend its
 * daily budget twice.
 *
 * What the windows count, and so what is summed here (the lease true-up in governance/pipeline.ts):
 *   tokens  input + output tokens of the upstream's usage (cached tokens are part of input, not added)
 *   cost    the SALE price (with the token-group multiplier), not the upstream cost: usage.sale_micros
 * Every sale journal with the key's id counts: requests (chat-like, embeddings, audio, image edits, cache
 * hits, ASYNC runs) and media jobs, whose journals (booked by the worker, tasks/media.ts) carry the same
 * usage.key_id and sale_micros but no token figures (a media job's window true-up has no tokens either).
 *
 * Bounds (the figures can be lower than what the windows knew, never higher):
 *   - requests settled but not yet journaled (the billing stream's backlog: normally well under a second,
 *     a few seconds under load or a database hiccup) are not in the ledger;
 *   - a request with no price (sale and cost 0) is never journaled, so its tokens aren't either;
 *   - with billing off there is no ledger at all: windows restart at zero;
 *   - token-group windows are summed over the keys in the group now (any version of the key row), which
 *     counts a key moved into the group today as if it had been in it all day (the safe side).
 * Per-minute tokens aren't seeded: they restart, at most one minute's worth spent twice.
 */
import { type Kysely, sql } from 'kysely';
import type { QuotaSeedSource, ScopeLimits, SeedFigures, WindowBounds } from './types.js';

export class LedgerSeed implements QuotaSeedSource {
  constructor(private readonly db: Kysely<any>) {}

  async figures(scope: ScopeLimits['scope'], id: string, w: WindowBounds): Promise<SeedFigures> {
    // Every branch finds the sales by key through ledger_journal_key (key_id, occurred_at), partial on
    // key_id IS NOT NULL, which `key_id = x` and `key_id = ANY(...)` imply: an app's sales are its keys'
    // sales (a key id names one app), so no query reads other apps' journals or the app's older months.
    // (Adding "AND app_id = ..." made the planner AND in the (app_id, id) index: the app's whole history.)
    const keys =
      scope === 'key'
        ? sql`key_id = ${id}`
        : scope === 'app'
          ? sql`key_id = ANY(ARRAY(SELECT DISTINCT id FROM api_key WHERE app_id = ${id}))`
          : sql`key_id = ANY(ARRAY(SELECT DISTINCT id FROM api_key WHERE token_group_id = ${id}))`;
    const day = sql`occurred_at >= ${new Date(w.dayStart)} AND occurred_at < ${new Date(w.dayEnd)}`;
    const r = await sql<{ tokens_day: string; cost_day: string; cost_month: string }>`
      SELECT
        coalesce(sum(coalesce((usage->>'input_tokens')::numeric, 0)
          + coalesce((usage->>'output_tokens')::numeric, 0)) FILTER (WHERE ${day}), 0)::text AS tokens_day,
        coalesce(sum((usage->>'sale_micros')::numeric) FILTER (WHERE ${day}), 0)::text AS cost_day,
        coalesce(sum((usage->>'sale_micros')::numeric), 0)::text AS cost_month
      FROM ledger_journal
      WHERE kind = 'sale' AND ${keys}
        AND occurred_at >= ${new Date(w.monthStart)} AND occurred_at < ${new Date(w.monthEnd)}`.execute(
      this.db,
    );
    const row = r.rows[0];
    return {
      tokensDay: Math.ceil(Number(row?.tokens_day ?? 0)),
      costDay: Math.ceil(Number(row?.cost_day ?? 0)),
      costMonth: Math.ceil(Number(row?.cost_month ?? 0)),
    };
  }
}
