import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import type { Database } from './schema.js';
import { pgliteDialect } from './pglite-dialect.js';
import { migrateToLatest } from './migrations.js';

export type Db = Kysely<Database>;

export interface DbHandle {
  db: Db;
  kind: 'postgres' | 'pglite';
  close(): Promise<void>;
}

// BIGINT (int8) comes back as a JS bigint: money is never a float, ids never lose digits.
pg.types.setTypeParser(20, (v: string) => BigInt(v));

/**
 * Opens the database: PostgreSQL when `databaseUrl` is given, otherwise an embedded PGlite data folder
 * (`dataDir`, or in memory when it is 'memory://'). Runs migrations before returning.
 */
export async function openDatabase(opts: {
  databaseUrl?: string | undefined;
  dataDir: string;
  poolSize?: number;
  /** How long a query waits for a pooled connection before failing (default 5 s). */
  connectTimeoutMs?: number;
}): Promise<DbHandle> {
  let handle: DbHandle;
  if (opts.databaseUrl) {
    const pool = new pg.Pool({
      connectionString: opts.databaseUrl,
      max: opts.poolSize ?? 10,
      connectionTimeoutMillis: opts.connectTimeoutMs ?? 5000,
    });
    pool.on('error', () => {}); // idle-client errors surface on the next query instead of crashing the process
    // A checked-out client has no pool listener: its connection dropping between two statements of a
    // transaction would emit an unhandled 'error' and kill the process. The statement in flight (or the
    // next one) fails instead, and the pool discards the client on release.
    pool.on('connect', (client) => client.on('error', () => {}));
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    handle = { db, kind: 'postgres', close: () => db.destroy() };
  } else {
    const { PGlite } = await import('@electric-sql/pglite');
    const parsers = { 20: (v: string) => BigInt(v) };
    const lite =
      opts.dataDir === 'memory://' ? new PGlite({ parsers }) : new PGlite(opts.dataDir, { parsers });
    await lite.waitReady;
    const db = new Kysely<Database>({ dialect: pgliteDialect(lite) });
    handle = { db, kind: 'pglite', close: () => db.destroy() };
  }
  await migrateToLatest(handle.db);
  return handle;
}
