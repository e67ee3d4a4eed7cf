import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import type { Database } from './schema.js';
import { pgliteDialect } from './pglite-dialect.js';
import { migrateToLatest } from './migrations.js';
import { DirLock } from './dir-lock.js';

export type Db = Kysely<Database>;

export interface DbHandle {
  db: Db;
  kind: 'postgres' | 'pglite';
  /** The embedded data directory's lock, when one was asked for (see dir-lock.ts). */
  lock?: DirLock;
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
  /**
   * The command opening an embedded data directory: it is locked for this process (a second process is
   * refused with DataDirInUse). Unset: no lock (tests open one directory from several handles).
   */
  lockFor?: string;
  /** Called before each pending migration runs (a first start on PGlite takes a while: say so). */
  onMigrate?: (step: { index: number; total: number; name: string }) => void;
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
    const lock =
      opts.lockFor && opts.dataDir !== 'memory://' ? DirLock.acquire(opts.dataDir, opts.lockFor) : undefined;
    const { PGlite } = await import('@electric-sql/pglite');
    const parsers = { 20: (v: string) => BigInt(v) };
    const lite =
      opts.dataDir === 'memory://' ? new PGlite({ parsers }) : new PGlite(opts.dataDir, { parsers });
    try {
      await lite.waitReady;
    } catch (e) {
      lock?.release();
      throw e;
    }
    const db = new Kysely<Database>({ dialect: pgliteDialect(lite) });
    handle = {
      db,
      kind: 'pglite',
      ...(lock ? { lock } : {}),
      close: async () => {
        try {
          await db.destroy();
        } finally {
          lock?.release();
        }
      },
    };
  }
  try {
    await migrateToLatest(handle.db, opts.onMigrate);
  } catch (e) {
    await handle.close().catch(() => {});
    throw e;
  }
  return handle;
}
