import type { PGlite } from '@electric-sql/pglite';
import { PostgresDialect } from 'kysely';

/**
 * Kysely on PGlite through Kysely's own PostgresDialect: PGlite is presented as a one-connection pool.
 * (Chosen over the kysely-pglite package, which pulls a CLI toolchain — oclif, kysely-codegen — into
 * production installs.) PGlite runs one query at a time on one session, so connections are handed out
 * one at a time: a transaction holds the only connection until it releases it.
 */
export function pgliteDialect(db: PGlite): PostgresDialect {
  let queue: Promise<void> = Promise.resolve();
  const client = {
    // A named statement's config (store/named-statement.ts) runs as its text: PGlite breaks on names.
    async query(q: string | { text: string }, params: unknown[]) {
      const sql = typeof q === 'string' ? q : q.text;
      const res = await db.query(sql, params as never[]);
      const command = (/^\s*(\w+)/.exec(sql)?.[1] ?? '').toUpperCase();
      return { command, rowCount: res.affectedRows ?? 0, rows: res.rows };
    },
    release: () => {},
  };
  const pool = {
    connect(): Promise<typeof client> {
      let release!: () => void;
      const mine = new Promise<void>((r) => (release = r));
      const prev = queue;
      queue = queue.then(() => mine);
      return prev.then(() => ({ ...client, release }));
    },
    async end() {
      await db.close();
    },
  };
  return new PostgresDialect({ pool: pool as never });
}
