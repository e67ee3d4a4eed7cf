/**
 * Statements sent named, so that PostgreSQL parses and plans them once per connection and keeps them
 * prepared, where Kysely sends every statement unnamed, parsed and planned afresh on each call. Worth it
 * for a statement that runs all the time with the same text: the pollers' claims (an idle instance's
 * whole cost, bench/idle-pollers.ts) and the write paths' batch INSERTs, whose parse and plan were
 * ~1 ms of PostgreSQL CPU per batch whatever its size (bench/journal-writer.ts; bench/HISTORY.md,
 * 2026-12-02 "prepared batch statements").
 *
 * Kysely hands a compiled query's `sql` to the driver untouched, and node-postgres takes a query config
 * ({ name, text }) there; the PGlite dialect (pglite-dialect.ts) takes the same config and runs its text
 * unnamed (PGlite breaks on named statements). A server that loses a prepared statement or can't keep it
 * (a pooler in transaction mode, a table changed under the plan) gets the statement unnamed from then on:
 * those errors come before anything ran.
 */
import { CompiledQuery, type QueryResult } from 'kysely';
import type { Db } from './db.js';

const LOST_STATEMENT = new Set([
  '26000', // the server doesn't have it (a pooler handed the client another server connection)
  '42P05', // the server already has one by that name (the same, from another client of a pooler)
  '0A000', // cached plan must not change result type (a migration changed a table under it)
]);

export class NamedStatement<R> {
  private unnamed = false;

  /** `text`: the statement's SQL with $n parameters, or null to take the first compiled query's. */
  constructor(
    readonly name: string,
    public text: string | null = null,
  ) {}

  /** Runs the statement's own text with these parameters. */
  async run(db: Db, params: unknown[] = []): Promise<R[]> {
    return (await this.execute(db, CompiledQuery.raw(this.text!, params))).rows;
  }

  /**
   * Runs a query Kysely compiled (a `sql` template whose every interpolation is a parameter, so its text
   * is the same each time); a text other than the first goes unnamed (node-postgres would refuse one
   * name for two texts).
   */
  async execute(db: Db, q: CompiledQuery): Promise<QueryResult<R>> {
    if (this.text === null) this.text = q.sql;
    if (!this.unnamed && q.sql === this.text)
      try {
        const named = { ...q, sql: { name: this.name, text: q.sql } as unknown as string };
        return await db.executeQuery<R>(named);
      } catch (e) {
        if (!LOST_STATEMENT.has((e as { code?: string }).code ?? '')) throw e;
        this.unnamed = true;
      }
    return db.executeQuery<R>(q);
  }
}
