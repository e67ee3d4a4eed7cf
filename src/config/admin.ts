/**
 * The control plane's write path. Every change: one transaction that takes a per-entity advisory lock,
 * checks the optimistic lock (version_no), checks effective windows don't overlap, writes the row and
 * exactly one audit row; then, after commit, an invalidation event so every instance reloads.
 */
import { sql } from 'kysely';
import { GatewayError } from '../core/errors.js';
import { randomId } from '../core/ids.js';
import type { Db } from '../store/db.js';
import { hashKey, newSecretKey } from './repo.js';
import { isSealed, openSecret } from './secrets.js';
import { PRICE_COLUMNS } from './price.js';

function openSecretSafe(s: string): string {
  try {
    return openSecret(s);
  } catch {
    return '????';
  }
}
import { type Entity, validateWrite } from './validate.js';

export interface Actor {
  id: string;
  name: string;
  role: 'admin' | 'viewer';
}

export interface Invalidation {
  table: Entity | 'admin_token' | 'setting' | 'all';
  key?: string;
}

type Row = Record<string, any>;
type Dto = Record<string, unknown>;

const KEY_COL: Record<Entity, string> = {
  channel: 'code',
  alias: 'name',
  app: 'id',
  api_key: 'id',
  quota: 'id',
  token_group: 'id',
  price: 'id',
};

const iso = (d: unknown) => (d === null || d === undefined ? null : new Date(d as string).toISOString());

/** Row -> API shape. Secrets never leave: a channel shows whether it has a credential and its last 4. */
export function toDto(entity: Entity, r: Row): Dto {
  const common = {
    version_no: r.version_no,
    effective_from: iso(r.effective_from),
    effective_to: iso(r.effective_to),
    created_at: iso(r.created_at),
    updated_at: iso(r.updated_at),
    ...(r.deleted_at ? { deleted_at: iso(r.deleted_at) } : {}),
  };
  switch (entity) {
    case 'channel':
      return {
        id: String(r.id),
        code: r.code,
        name: r.name,
        provider: r.provider,
        base_url: r.base_url,
        credential_set: !!r.credential,
        credential_hint: r.credential ? '…' + openSecretSafe(String(r.credential)).slice(-4) : null,
        credential_encrypted: isSealed(String(r.credential ?? '')),
        enabled: r.enabled,
        weight: r.weight,
        settings: r.settings,
        ...common,
      };
    case 'alias':
      return {
        id: String(r.id),
        name: r.name,
        description: r.description,
        enabled: r.enabled,
        chain: r.chain,
        max_attempts: r.max_attempts,
        deadline_ms: r.deadline_ms,
        cache_ttl_s: r.cache_ttl_s ?? 0,
        ...common,
      };
    case 'app':
      return { id: r.id, name: r.name, enabled: r.enabled, billing: r.billing ?? 'postpaid', ...common };
    case 'api_key':
      return {
        id: r.id,
        app_id: r.app_id,
        name: r.name,
        key_prefix: r.key_prefix,
        enabled: r.enabled,
        allowed_aliases: r.allowed_aliases,
        queue_mode: r.queue_mode,
        wait_timeout_ms: r.wait_timeout_ms,
        max_queue: r.max_queue,
        token_group_id: r.token_group_id,
        webhook_url: r.webhook_url ?? null,
        webhook_secret_set: !!r.webhook_secret,
        ...common,
      };
    case 'quota':
      return {
        id: String(r.id),
        scope: r.scope,
        scope_id: r.scope_id,
        max_concurrency: r.max_concurrency,
        qps: Number(r.qps),
        qps_burst: r.qps_burst,
        tokens_per_minute: Number(r.tokens_per_minute),
        tokens_per_day: Number(r.tokens_per_day),
        cost_per_day: String(r.cost_per_day),
        cost_per_month: String(r.cost_per_month),
        ...common,
      };
    case 'price':
      return {
        id: String(r.id),
        alias: r.alias,
        channel: r.channel,
        ...Object.fromEntries(PRICE_COLUMNS.map((c) => [c, String(r[c])])),
        ...common,
      };
    case 'token_group':
      return {
        id: r.id,
        name: r.name,
        price_multiplier_ppm: String(r.price_multiplier_ppm),
        enabled: r.enabled,
        ...common,
      };
  }
}

export interface ListQuery {
  limit?: number;
  offset?: number;
  includeDeleted?: boolean;
  /** Exact-match filters on columns (e.g. provider, enabled, app_id) or prefix on key_prefix. */
  where?: Record<string, string | boolean>;
}

interface Target {
  /** A specific row id (versions of one code/name). */
  rowId?: string;
  /** api_key rows belong to an app. */
  appId?: string;
}

export class ConfigAdmin {
  constructor(
    private readonly db: Db,
    private readonly publish: (inv: Invalidation) => Promise<void>,
    private readonly now: () => number = Date.now,
  ) {}

  private t(entity: Entity) {
    return this.db.selectFrom(entity as any) as any;
  }

  async list(
    entity: Entity,
    q: ListQuery = {},
  ): Promise<{ data: Dto[]; total: number; limit: number; offset: number }> {
    const limit = Math.min(Math.max(q.limit ?? 50, 1), 500);
    const offset = Math.max(q.offset ?? 0, 0);
    let base = this.t(entity);
    if (!q.includeDeleted) base = base.where('deleted_at', 'is', null);
    for (const [k, v] of Object.entries(q.where ?? {})) {
      base =
        k === 'key_prefix'
          ? base.where('key_prefix', 'like', String(v).replace(/[%_]/g, '') + '%')
          : base.where(k, '=', v);
    }
    const [{ n }] = await base.select(sql<string>`count(*)`.as('n')).execute();
    const rows = await base
      .selectAll()
      .orderBy(KEY_COL[entity])
      .orderBy('effective_from')
      .limit(limit)
      .offset(offset)
      .execute();
    return { data: rows.map((r: Row) => toDto(entity, r)), total: Number(n), limit, offset };
  }

  /** All non-deleted versions of one code/name (channels and aliases may have several, by window). */
  async versions(entity: Entity, key: string, t: Target = {}): Promise<Dto[]> {
    let q = this.t(entity).selectAll().where(KEY_COL[entity], '=', key).where('deleted_at', 'is', null);
    if (t.appId) q = q.where('app_id', '=', t.appId);
    const rows: Row[] = await q.orderBy('effective_from').execute();
    return rows.map((r) => toDto(entity, r));
  }

  async get(entity: Entity, key: string, t: Target = {}): Promise<Dto> {
    return toDto(entity, await this.resolve(this.db, entity, key, t));
  }

  /**
   * The row a request names: an explicit version id, else the version in force now, else the next
   * scheduled one, else the most recent. 404 when none.
   */
  private async resolve(db: Db, entity: Entity, key: string, t: Target): Promise<Row> {
    let q = (db.selectFrom(entity as any) as any)
      .selectAll()
      .where(KEY_COL[entity], '=', key)
      .where('deleted_at', 'is', null);
    if (t.appId) q = q.where('app_id', '=', t.appId);
    if (t.rowId) q = q.where('id', '=', t.rowId);
    const rows: Row[] = await q.orderBy('effective_from').execute();
    const now = this.now();
    const from = (r: Row) => new Date(r.effective_from).getTime();
    const to = (r: Row) => (r.effective_to ? new Date(r.effective_to).getTime() : Infinity);
    const row =
      rows.find((r) => from(r) <= now && now < to(r)) ??
      rows.find((r) => from(r) > now) ??
      rows[rows.length - 1];
    if (!row) throw new GatewayError('not_found', `${entity} '${key}' not found`);
    return row;
  }

  private async lock(db: Db, entity: Entity, key: string): Promise<void> {
    await sql`SELECT pg_advisory_xact_lock(hashtext(${entity + ':' + key}))`.execute(db);
  }

  private async checkWindow(
    db: Db,
    entity: Entity,
    key: string,
    from: Date,
    to: Date | null,
    selfId?: string,
  ): Promise<void> {
    if (entity !== 'channel' && entity !== 'alias') return;
    let q = (db.selectFrom(entity as any) as any)
      .select(['id', 'effective_from', 'effective_to'])
      .where(KEY_COL[entity], '=', key)
      .where('deleted_at', 'is', null);
    if (selfId) q = q.where('id', '!=', selfId);
    const others: Row[] = await q.execute();
    const a0 = from.getTime();
    const a1 = to ? to.getTime() : Infinity;
    for (const o of others) {
      const b0 = new Date(o.effective_from).getTime();
      const b1 = o.effective_to ? new Date(o.effective_to).getTime() : Infinity;
      if (a0 < b1 && b0 < a1) {
        throw new GatewayError(
          'window_overlap',
          `${entity} '${key}' already has a version in force during that window (id ${o.id}); end it first (PATCH effective_to)`,
          {
            details: { conflicting_id: String(o.id) },
          },
        );
      }
    }
  }

  private async audit(
    db: Db,
    actor: Actor,
    action: string,
    entity: string,
    key: string,
    before: unknown,
    after: unknown,
    requestId?: string,
  ) {
    await db
      .insertInto('audit_log')
      .values({
        actor: `${actor.name} (${actor.id})`,
        action,
        entity,
        entity_key: key,
        before: before === null || before === undefined ? null : JSON.stringify(before),
        after: after === null || after === undefined ? null : JSON.stringify(after),
        request_id: requestId ?? null,
      } as never)
      .execute();
  }

  async create(
    actor: Actor,
    entity: Entity,
    body: unknown,
    opts: { appId?: string; requestId?: string } = {},
  ): Promise<{ row: Dto; sk?: string }> {
    const v = validateWrite(entity, body, 'create');
    let sk: string | undefined;
    if (entity === 'app' && !v.id) v.id = 'app_' + randomId(16);
    if (entity === 'channel' && !v.name) v.name = v.code;
    if (entity === 'api_key') {
      if (!opts.appId) throw new GatewayError('invalid_request', 'a key belongs to an app');
      sk = newSecretKey();
      Object.assign(v, {
        id: 'key_' + randomId(16),
        app_id: opts.appId,
        key_hash: hashKey(sk),
        key_prefix: sk.slice(0, 13),
      });
    }
    const key =
      entity === 'quota'
        ? `${v.scope}:${v.scope_id}`
        : entity === 'price'
          ? `${v.alias}:${v.channel ?? '*'}`
          : String(v[KEY_COL[entity]]);
    const row = await this.db.transaction().execute(async (trx) => {
      await this.lock(trx, entity, key);
      if (entity === 'api_key') {
        const app = await trx
          .selectFrom('app')
          .select('id')
          .where('id', '=', opts.appId!)
          .where('deleted_at', 'is', null)
          .executeTakeFirst();
        if (!app) throw new GatewayError('not_found', `app '${opts.appId}' not found`);
      }
      if (entity === 'alias') await this.checkChainChannels(trx, v.chain as string);
      if (entity === 'app' || entity === 'token_group') {
        const dup = await (trx.selectFrom(entity as 'app') as any)
          .select('id')
          .where('id', '=', key)
          .executeTakeFirst();
        if (dup) throw new GatewayError('already_exists', `${entity} '${key}' already exists`);
      }
      await this.checkWindow(
        trx,
        entity,
        key,
        (v.effective_from as Date) ?? new Date(this.now()),
        (v.effective_to as Date | null) ?? null,
      );
      const created: Row = await (trx.insertInto(entity as any) as any)
        .values(v)
        .returningAll()
        .executeTakeFirstOrThrow();
      await this.audit(trx, actor, 'create', entity, key, null, toDto(entity, created), opts.requestId);
      return created;
    });
    await this.publish({
      table: entity,
      key: entity === 'quota' || entity === 'price' ? String(row.id) : key,
    });
    return { row: toDto(entity, row), ...(sk ? { sk } : {}) };
  }

  private async checkChainChannels(db: Db, chainJson: string): Promise<void> {
    const tiers = JSON.parse(chainJson) as Array<{ targets: Array<{ channel: string }> }>;
    const codes = [...new Set(tiers.flatMap((t) => t.targets.map((x) => x.channel)))];
    const found = await db
      .selectFrom('channel')
      .select('code')
      .where('code', 'in', codes)
      .where('deleted_at', 'is', null)
      .execute();
    const have = new Set(found.map((f) => f.code));
    const missing = codes.filter((c) => !have.has(c));
    if (missing.length)
      throw new GatewayError('invalid_request', `chain names unknown channel(s): ${missing.join(', ')}`, {
        param: 'chain',
      });
  }

  /** PATCH with the optimistic lock: `versionNo` must be the version the caller read. */
  async update(
    actor: Actor,
    entity: Entity,
    key: string,
    versionNo: number | undefined,
    body: unknown,
    t: Target & { requestId?: string } = {},
  ): Promise<Dto> {
    if (versionNo === undefined)
      throw new GatewayError(
        'version_required',
        'Name the version you read: If-Match header or version_no in the body.',
      );
    const v = validateWrite(entity, body, 'patch');
    const out = await this.db.transaction().execute(async (trx) => {
      await this.lock(trx, entity, key);
      const cur = await this.resolve(trx, entity, key, t);
      if (cur.version_no !== versionNo) {
        throw new GatewayError(
          'version_conflict',
          `${entity} '${key}' is at version ${cur.version_no}, not ${versionNo}: re-read and retry`,
          {
            details: { current: toDto(entity, cur) },
          },
        );
      }
      if (entity === 'alias' && v.chain) await this.checkChainChannels(trx, v.chain as string);
      const changed = Object.entries(v).filter(([k, val]) => !same(cur[k], val));
      if (changed.length === 0) return { row: cur, wrote: false };
      if ('effective_from' in v || 'effective_to' in v) {
        const from = (v.effective_from as Date | undefined) ?? new Date(cur.effective_from);
        const to =
          'effective_to' in v
            ? (v.effective_to as Date | null)
            : cur.effective_to
              ? new Date(cur.effective_to)
              : null;
        if (to && to.getTime() <= from.getTime())
          throw new GatewayError('invalid_request', 'effective_to must be after effective_from', {
            param: 'effective_to',
          });
        await this.checkWindow(trx, entity, key, from, to, String(cur.id));
      }
      const updated: Row | undefined = await (trx.updateTable(entity as any) as any)
        .set({ ...Object.fromEntries(changed), version_no: sql`version_no + 1`, updated_at: new Date() })
        .where('id', '=', cur.id)
        .where('version_no', '=', versionNo)
        .returningAll()
        .executeTakeFirst();
      if (!updated)
        throw new GatewayError('version_conflict', `${entity} '${key}' changed meanwhile: re-read and retry`);
      await this.audit(
        trx,
        actor,
        'update',
        entity,
        key,
        toDto(entity, cur),
        toDto(entity, updated),
        t.requestId,
      );
      return { row: updated, wrote: true };
    });
    if (out.wrote) await this.publish({ table: entity, key });
    return toDto(entity, out.row);
  }

  /** Soft delete, with the optimistic lock. */
  async remove(
    actor: Actor,
    entity: Entity,
    key: string,
    versionNo: number | undefined,
    t: Target & { requestId?: string } = {},
  ): Promise<void> {
    if (versionNo === undefined)
      throw new GatewayError(
        'version_required',
        'Name the version you read: If-Match header or version_no in the body.',
      );
    await this.db.transaction().execute(async (trx) => {
      await this.lock(trx, entity, key);
      const cur = await this.resolve(trx, entity, key, t);
      if (cur.version_no !== versionNo) {
        throw new GatewayError(
          'version_conflict',
          `${entity} '${key}' is at version ${cur.version_no}, not ${versionNo}`,
          { details: { current: toDto(entity, cur) } },
        );
      }
      const deleted: Row = await (trx.updateTable(entity as any) as any)
        .set({ deleted_at: new Date(), version_no: sql`version_no + 1`, updated_at: new Date() })
        .where('id', '=', cur.id)
        .returningAll()
        .executeTakeFirstOrThrow();
      await this.audit(
        trx,
        actor,
        'delete',
        entity,
        key,
        toDto(entity, cur),
        toDto(entity, deleted),
        t.requestId,
      );
    });
    await this.publish({ table: entity, key });
  }

  /** A new secret for an existing key: the old sk stops working at once; the new one is shown once. */
  async rotateKey(
    actor: Actor,
    appId: string,
    keyId: string,
    versionNo: number | undefined,
    requestId?: string,
  ): Promise<{ row: Dto; sk: string }> {
    if (versionNo === undefined)
      throw new GatewayError(
        'version_required',
        'Name the version you read: If-Match header or version_no in the body.',
      );
    const sk = newSecretKey();
    const row = await this.db.transaction().execute(async (trx) => {
      await this.lock(trx, 'api_key', keyId);
      const cur = await this.resolve(trx, 'api_key', keyId, { appId });
      if (cur.version_no !== versionNo)
        throw new GatewayError(
          'version_conflict',
          `key '${keyId}' is at version ${cur.version_no}, not ${versionNo}`,
          { details: { current: toDto('api_key', cur) } },
        );
      const updated: Row = await trx
        .updateTable('api_key')
        .set({
          key_hash: hashKey(sk),
          key_prefix: sk.slice(0, 13),
          version_no: sql`version_no + 1`,
          updated_at: new Date(),
        })
        .where('id', '=', keyId)
        .returningAll()
        .executeTakeFirstOrThrow();
      await this.audit(
        trx,
        actor,
        'rotate',
        'api_key',
        keyId,
        toDto('api_key', cur),
        toDto('api_key', updated),
        requestId,
      );
      return updated;
    });
    await this.publish({ table: 'api_key', key: keyId });
    return { row: toDto('api_key', row), sk };
  }

  /** Records an operator action that is not a config row (breaker, kill switch, cache). */
  async record(
    actor: Actor,
    action: string,
    entity: string,
    key: string,
    before: unknown,
    after: unknown,
    requestId?: string,
  ): Promise<void> {
    await this.audit(this.db, actor, action, entity, key, before, after, requestId);
  }

  async auditLog(q: { entity?: string; key?: string; limit?: number; offset?: number }): Promise<Dto[]> {
    let s = this.db.selectFrom('audit_log').selectAll();
    if (q.entity) s = s.where('entity', '=', q.entity);
    if (q.key) s = s.where('entity_key', '=', q.key);
    const rows = await s
      .orderBy('id', 'desc')
      .limit(Math.min(q.limit ?? 100, 1000))
      .offset(q.offset ?? 0)
      .execute();
    return rows.map((r) => ({ ...r, id: String(r.id), at: iso(r.at) }));
  }

  // --- gateway-wide settings (kill switch) ---

  async getSetting<T>(key: string): Promise<{ value: T; version_no: number } | null> {
    const r = await this.db
      .selectFrom('gateway_setting')
      .selectAll()
      .where('key', '=', key)
      .executeTakeFirst();
    return r ? { value: r.value as T, version_no: r.version_no } : null;
  }

  async putSetting(actor: Actor, key: string, value: unknown, requestId?: string): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      const before = await trx
        .selectFrom('gateway_setting')
        .selectAll()
        .where('key', '=', key)
        .forUpdate()
        .executeTakeFirst();
      await trx
        .insertInto('gateway_setting')
        .values({ key, value: JSON.stringify(value) })
        .onConflict((oc) =>
          oc
            .column('key')
            .doUpdateSet({
              value: JSON.stringify(value),
              version_no: sql`gateway_setting.version_no + 1`,
              updated_at: new Date(),
            }),
        )
        .execute();
      await this.audit(trx, actor, 'set', 'setting', key, before?.value ?? null, value, requestId);
    });
    await this.publish({ table: 'setting', key });
  }
}

function same(a: unknown, b: unknown): boolean {
  if (a instanceof Date || b instanceof Date) {
    const x = a === null || a === undefined ? null : new Date(a as string).getTime();
    const y = b === null || b === undefined ? null : new Date(b as string).getTime();
    return x === y;
  }
  if (typeof b === 'string' && a !== null && typeof a === 'object') {
    // jsonb columns come back parsed (keys reordered); writes are JSON text
    return canonicalJson(a) === canonicalJson(JSON.parse(b));
  }
  if (typeof b === 'string' && (a === null || a === undefined) && b === 'null') return true;
  return a === b;
}

/** JSON with object keys sorted, so equal values compare equal whatever their key order. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return '[' + v.map(canonicalJson).join(',') + ']';
  if (v && typeof v === 'object') {
    return (
      '{' +
      Object.keys(v as object)
        .sort()
        .map((k) => JSON.stringify(k) + ':' + canonicalJson((v as Record<string, unknown>)[k]))
        .join(',') +
      '}'
    );
  }
  return JSON.stringify(v);
}
