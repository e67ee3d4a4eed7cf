import { createHash } from 'node:crypto';
import { GatewayError } from '../core/errors.js';
import { randomId } from '../core/ids.js';
import type { Db } from '../store/db.js';
import type { Actor } from './admin.js';

const hash = (t: string) => createHash('sha256').update(t).digest('hex');

export function newAdminToken(): string {
  return 'ak-anima-' + randomId(40);
}

/**
 * Admin bearer tokens, stored as sha256 hashes, each with a role: `admin` (read and write) or `viewer`
 * (read only). The first token comes from ANIMA_ADMIN_TOKEN on start; more are created through the API.
 * Lookups hit an in-memory map refreshed on invalidation, so an admin call costs no DB read to authorize.
 */
export class AdminTokens {
  private byHash = new Map<string, Actor>();

  constructor(private readonly db: Db) {}

  async load(): Promise<void> {
    const rows = await this.db
      .selectFrom('admin_token')
      .selectAll()
      .where('deleted_at', 'is', null)
      .where('enabled', '=', true)
      .execute();
    this.byHash = new Map(
      rows.map((r) => [r.token_hash, { id: r.id, name: r.name, role: r.role as Actor['role'] }]),
    );
  }

  /** Stores the environment's bootstrap token (hashed) if it isn't there yet. */
  async bootstrap(token: string | undefined): Promise<void> {
    if (!token) return;
    if (token.length < 16) throw new Error('ANIMA_ADMIN_TOKEN must be at least 16 characters');
    const h = hash(token);
    const existing = await this.db
      .selectFrom('admin_token')
      .select('id')
      .where('token_hash', '=', h)
      .executeTakeFirst();
    if (!existing) {
      await this.db
        .insertInto('admin_token')
        .values({
          id: 'adm_' + randomId(12),
          name: 'bootstrap (ANIMA_ADMIN_TOKEN)',
          role: 'admin',
          token_hash: h,
          token_prefix: token.slice(0, 12),
        })
        .onConflict((oc) => oc.column('token_hash').doNothing())
        .execute();
    }
  }

  authenticate(authorization: string | undefined): Actor {
    if (!authorization || !/^bearer\s+/i.test(authorization)) {
      throw new GatewayError('missing_admin_token', 'Admin API: send "Authorization: Bearer <admin token>".');
    }
    const actor = this.byHash.get(hash(authorization.replace(/^bearer\s+/i, '').trim()));
    if (!actor) throw new GatewayError('invalid_admin_token', 'Admin API: unknown admin token.');
    return actor;
  }

  async list(): Promise<Array<Record<string, unknown>>> {
    const rows = await this.db
      .selectFrom('admin_token')
      .select(['id', 'name', 'role', 'token_prefix', 'enabled', 'created_at'])
      .where('deleted_at', 'is', null)
      .orderBy('created_at')
      .execute();
    return rows.map((r) => ({ ...r, created_at: new Date(r.created_at).toISOString() }));
  }

  async create(name: string, role: Actor['role']): Promise<{ id: string; token: string }> {
    const token = newAdminToken();
    const id = 'adm_' + randomId(12);
    await this.db
      .insertInto('admin_token')
      .values({ id, name, role, token_hash: hash(token), token_prefix: token.slice(0, 12) })
      .execute();
    return { id, token };
  }

  async remove(id: string): Promise<boolean> {
    const r = await this.db
      .updateTable('admin_token')
      .set({ deleted_at: new Date() })
      .where('id', '=', id)
      .where('deleted_at', 'is', null)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }
}
