/**
 * `anima secrets rotate`: every sealed column re-written under the current ANIMA_SECRET_KEY.
 *
 * Small transactions (one batch of rows each, with their audit rows), so running gateways keep reading
 * and writing meanwhile; a row is re-written only if it still holds the value read (each seal has a fresh
 * IV, so any write in between shows), so a concurrent operator change is never overwritten. Rows already
 * under the current key are skipped, which makes a second run (or a run after a crash) finish the rest.
 *
 * version_no is not bumped: it is the optimistic lock operators hold (console forms, If-Match), and a
 * re-seal changes nothing they can see (same secret, same hint), so bumping it would only turn their next
 * save into a 409. Each re-sealed row gets an audit row (action `reseal`) in the same transaction instead.
 */
import { sql } from 'kysely';
import type { Db } from '../store/db.js';
import type { Actor } from './admin.js';
import { currentKeyId, currentSealPrefix, openSecret, sealSecret, sealedWith } from './secrets.js';

/** Every column holding a sealed secret (grep sealSecret): table, column, the key an operator knows it by. */
export const SEALED_COLUMNS = [
  { table: 'channel', column: 'credential', keyColumn: 'code' },
  { table: 'api_key', column: 'webhook_secret', keyColumn: 'id' },
  { table: 'notification_target', column: 'secret', keyColumn: 'id' },
] as const;

export interface RotateCount {
  table: string;
  column: string;
  /** Re-written under the current key. */
  resealed: number;
  /** Changed by someone else between the read and the write: left as they wrote it (run again to check). */
  raced: number;
  /** Sealed with a key that is not configured: left alone; their row keys. */
  unreadable: string[];
}

export interface RotateOptions {
  actor?: Actor;
  /** Rows per transaction (default 100). */
  batch?: number;
  /** Progress lines (one per batch). */
  progress?: (line: string) => void;
}

const ROTATE_ACTOR: Actor = { id: 'cli', name: 'anima secrets rotate', role: 'admin' };

/** Re-seals every sealed column under the current key. Safe to run again; needs ANIMA_SECRET_KEY set. */
export async function rotateSecrets(db: Db, opts: RotateOptions = {}): Promise<RotateCount[]> {
  const kid = currentKeyId();
  const prefix = currentSealPrefix();
  if (!kid || !prefix) throw new Error('secrets rotate needs ANIMA_SECRET_KEY (the key to seal under)');
  const actor = opts.actor ?? ROTATE_ACTOR;
  const batch = Math.max(1, opts.batch ?? 100);
  const out: RotateCount[] = [];
  for (const { table, column, keyColumn } of SEALED_COLUMNS) {
    const count: RotateCount = { table, column, resealed: 0, raced: 0, unreadable: [] };
    let after: string | null = null;
    for (;;) {
      // Keyset paging by id: every row is looked at once, whatever happens to the rows before it.
      const rows: Array<{ id: unknown; value: string; key: unknown }> = await (db as any)
        .selectFrom(table)
        .select(['id', `${column} as value`, `${keyColumn} as key`])
        .where(column, 'is not', null)
        .where(column, '!=', '')
        .where(column, 'not like', prefix.replace(/[\\%_]/g, '\\$&') + '%')
        .$if(after !== null, (q: any) => q.where('id', '>', after))
        .orderBy('id')
        .limit(batch)
        .execute();
      if (!rows.length) break;
      after = String(rows[rows.length - 1]!.id);
      let resealed = 0;
      await db.transaction().execute(async (trx) => {
        for (const r of rows) {
          let plain: string;
          try {
            plain = openSecret(r.value);
          } catch {
            count.unreadable.push(String(r.key));
            continue;
          }
          const sealed = sealSecret(plain);
          const u = await (trx as any)
            .updateTable(table)
            .set({ [column]: sealed })
            .where('id', '=', r.id)
            .where(column, '=', r.value)
            .executeTakeFirst();
          if (Number(u.numUpdatedRows) === 0) {
            count.raced++;
            continue;
          }
          await trx
            .insertInto('audit_log')
            .values({
              actor: `${actor.name} (${actor.id})`,
              action: 'reseal',
              entity: table,
              entity_key: String(r.key),
              before: JSON.stringify({ [column]: { sealed_with: sealedWith(r.value) ?? 'clear text' } }),
              after: JSON.stringify({ [column]: { sealed_with: kid } }),
              request_id: null,
            } as never)
            .execute();
          resealed++;
        }
      });
      count.resealed += resealed;
      opts.progress?.(`${table}.${column}: ${count.resealed} re-sealed under key ${kid} so far`);
    }
    out.push(count);
  }
  return out;
}

/** How many stored values each key (or clear text) holds, per sealed column: for `secrets status`. */
export async function sealedInventory(
  db: Db,
): Promise<Array<{ table: string; column: string; by: Record<string, number> }>> {
  const out = [];
  for (const { table, column } of SEALED_COLUMNS) {
    const rows: Array<{ k: string | null; n: string | number | bigint }> = await sql<{
      k: string | null;
      n: string;
    }>`SELECT CASE WHEN ${sql.ref(column)} LIKE 'enc:v2:%' THEN substr(${sql.ref(column)}, 8, 8)
                   WHEN ${sql.ref(column)} LIKE 'enc:v1:%' THEN 'v1' ELSE 'clear text' END AS k, count(*) AS n
         FROM ${sql.table(table)} WHERE ${sql.ref(column)} IS NOT NULL AND ${sql.ref(column)} <> '' GROUP BY 1`
      .execute(db)
      .then((r) => r.rows);
    out.push({ table, column, by: Object.fromEntries(rows.map((r) => [r.k ?? '?', Number(r.n)])) });
  }
  return out;
}
