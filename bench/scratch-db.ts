/**
 * What the write-path benches (journal-writer.ts, request-log.ts) share: their arguments, a database of
 * their own on the server, and the CPU its backends spent (so other databases' load stays out).
 */
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { type DbHandle, openDatabase } from '../src/store/db.js';

export const arg = (name: string, dflt: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
};

/** CPU (ms, user + system) of each process by pid, from /proc/<pid>/stat. */
export function cpuOf(pids: number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
      out.set(pid, ((Number(f[11]) + Number(f[12])) * 1000) / 100);
    } catch {
      // ended between the listing and the read
    }
  }
  return out;
}

/** CPU (ms) the pids spent between two cpuOf readings (a pid that ended counts nothing). */
export function spent(before: Map<number, number>, after: Map<number, number>): number {
  let ms = 0;
  for (const [pid, v] of after) ms += v - (before.get(pid) ?? v);
  return ms;
}

/**
 * A new database on the server at `adminUrl` (PG_URL), migrated: `pids()` lists its backends, `drop()`
 * closes the handle and drops it.
 */
export async function scratchDatabase(
  adminUrl: string,
  prefix: string,
  poolSize: number,
): Promise<{ name: string; dbh: DbHandle; pids(): Promise<number[]>; drop(): Promise<void> }> {
  const name = `${prefix}${Math.random().toString(36).slice(2, 10)}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const u = new URL(adminUrl);
  u.pathname = '/' + name;
  const dbh = await openDatabase({ databaseUrl: u.toString(), dataDir: 'memory://', poolSize });
  return {
    name,
    dbh,
    pids: async () =>
      (
        await admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [name])
      ).rows.map((r) => r.pid),
    drop: async () => {
      await dbh.close();
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    },
  };
}
