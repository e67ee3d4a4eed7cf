/**
 * The control plane's write path. Every change: one transaction that takes a per-entity advisory lock,
 * checks the optimistic lock (version_no), checks effective windows don't overlap, writes the row and
 * exactly one audit row; then, after commit, an invalidation event so every instance reloads.
 *
 * In an outage the answer tells what happened: a database that can't be reached refuses the write with
 * 503 before anything changed (or says the outcome is unknown if the connection died during COMMIT); once
 * committed, a write never fails: an invalidation that can't be published (Redis down) reloads this
 * instance at once and reaches the others within their refresh TTL, and says so.
 */
import type { Logger } from 'pino';
import { sql } from 'kysely';
import { GatewayError } from '../core/errors.js';
import { randomId } from '../core/ids.js';
import type { Db } from '../store/db.js';
import { hashKey, newSecretKey } from './repo.js';
import { type Dto, KEY_COL, NUMERIC_ID, type Row, isRowId, iso, same, toDto } from './dto.js';
import { chainChannels, checkChainChannels, type Entity, validateWrite } from './validate.js';
import type { OutboundPolicy } from '../lib/outbound.js';

export interface Actor {
  id: string;
  name: string;
  role: 'admin' | 'viewer';
}

export interface Invalidation {
  table: Entity | 'admin_token' | 'setting' | 'all';
  key?: string;
}

/** A committed change the other instances learn of late: its invalidation could not be published. */
export interface DeferredPropagation {
  published: false;
  /** Every instance reloads all config this often: the change reaches them within it. */
  within_ms: number;
}

/** Where an operator action's audit row is: written, queued until the database is back, or only logged. */
export type AuditOutcome = 'written' | 'deferred' | 'dropped';

export interface ConfigAdminOptions {
  /** The instances' config refresh TTL (default 30 s). */
  refreshMs?: number;
  /** Reloads a table on this instance alone, from the database: used when an invalidation can't be published. */
  reloadLocal?: (table: Invalidation['table']) => Promise<void>;
  log?: Logger;
  /** How often queued audit rows are retried (default 1 s). */
  auditRetryMs?: number;
  /** The provider kinds a channel may name (the provider registry's, handed in: config sits below it). */
  providerKinds?: readonly string[];
  /** The outbound URL policy channel and key URLs are checked against (default: the process's). */
  outbound?: OutboundPolicy;
}

const DEFAULT_REFRESH_MS = 30_000;
/** Audit rows kept in memory while the database is away; past this, a row is logged and dropped. */
const MAX_PENDING_AUDIT = 1_000;

const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
/** pg reports a lost, refused or timed-out connection as a plain Error with one of these messages. */
const CONNECTION_MESSAGE =
  /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Client was closed)/i;

/** True when the database could not be reached, as opposed to having refused the statement. */
export function isDbUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (CONNECTION_CODES.has(code)) return true;
    // SQLSTATE 08xxx: connection exception; 57P01-03: shutting down or starting; 53300: too many connections
    if (code.startsWith('08') || /^57P0[123]$/.test(code) || code === '53300') return true;
  }
  if (err instanceof AggregateError && err.errors.some(isDbUnavailable)) return true;
  return CONNECTION_MESSAGE.test(err.message);
}

const errText = (err: unknown) => (err instanceof Error ? err.message : String(err));

interface AuditRow {
  actor: Actor;
  action: string;
  entity: string;
  key: string;
  before: unknown;
  after: unknown;
  requestId?: string | undefined;
  /** A deferred row keeps the time of the action, not of its late insert. */
  at?: Date;
}

/** An audit row as a log line carries it (when it is dropped, the log is all that is left of it). */
const auditView = (r: AuditRow) => ({
  at: r.at?.toISOString(),
  actor: `${r.actor.name} (${r.actor.id})`,
  action: r.action,
  entity: r.entity,
  key: r.key,
  before: r.before,
  after: r.after,
  request_id: r.requestId ?? null,
});

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
  /** Audit rows of actions that took effect while the database was away, oldest first. */
  private readonly pendingAudit: AuditRow[] = [];
  private auditTimer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> | null = null;

  constructor(
    private readonly db: Db,
    private readonly publish: (inv: Invalidation) => Promise<void>,
    private readonly now: () => number = Date.now,
    private readonly opts: ConfigAdminOptions = {},
  ) {}

  /** Set on the ConfigAdmin that atomically() hands out: its db is that transaction. */
  private joined = false;

  /**
   * Several writes as one transaction (`anima apply`): all of them land or none does. The ConfigAdmin given
   * to `work` joins the transaction; invalidations go out once it committed. `rollback` undoes everything
   * at the end: a dry run that passes every check the real run does.
   */
  async atomically<T>(
    work: (tx: ConfigAdmin) => Promise<T>,
    opts: { rollback?: boolean } = {},
  ): Promise<{ result: T; propagation: DeferredPropagation | null }> {
    const invs: Invalidation[] = [];
    const rolledBack = Symbol('rollback');
    let result!: T;
    try {
      await this.commit(async (trx) => {
        const tx = new ConfigAdmin(trx, async (inv) => void invs.push(inv), this.now, this.opts);
        tx.joined = true;
        result = await work(tx);
        if (opts.rollback) throw rolledBack;
      });
    } catch (err) {
      if (err !== rolledBack) throw err;
      return { result, propagation: null };
    }
    let propagation: DeferredPropagation | null = null;
    const seen = new Set<string>();
    for (const inv of invs) {
      const id = `${inv.table}:${inv.key ?? ''}`;
      if (seen.has(id)) continue;
      seen.add(id);
      propagation = (await this.propagate(inv)) ?? propagation;
    }
    return { result, propagation };
  }

  /** Audit rows waiting for the database. */
  get auditBacklog(): number {
    return this.pendingAudit.length;
  }

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
    // A row id is a bigint: anything else names no row (and would be PostgreSQL's error, a 500).
    if (
      (KEY_COL[entity] === 'id' && NUMERIC_ID.has(entity) && !isRowId(key)) ||
      (t.rowId && !isRowId(t.rowId))
    )
      throw new GatewayError('not_found', `${entity} '${key.slice(0, 100)}' not found`);
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

  private async audit(db: Db, r: AuditRow) {
    await db
      .insertInto('audit_log')
      .values({
        actor: `${r.actor.name} (${r.actor.id})`,
        action: r.action,
        entity: r.entity,
        entity_key: r.key,
        before: r.before === null || r.before === undefined ? null : JSON.stringify(r.before),
        after: r.after === null || r.after === undefined ? null : JSON.stringify(r.after),
        request_id: r.requestId ?? null,
        ...(r.at ? { at: r.at } : {}),
      } as never)
      .execute();
  }

  /**
   * Runs a write transaction. A database that can't be reached becomes 503: "nothing changed" when the
   * work never finished, "outcome unknown" when the connection died during COMMIT (it may have landed).
   */
  private async commit<T>(work: (trx: Db) => Promise<T>): Promise<T> {
    if (this.joined) return work(this.db); // inside atomically(): its transaction commits
    let committing = false;
    try {
      return await this.db.transaction().execute(async (trx) => {
        const out = await work(trx);
        committing = true;
        return out;
      });
    } catch (err) {
      if (err instanceof GatewayError || !isDbUnavailable(err)) throw err;
      throw committing
        ? new GatewayError(
            'service_unavailable',
            'The database connection was lost while committing: the change may or may not have been applied. Re-read before retrying (a retry naming the version you read gets 409 if it was).',
            { cause: err, details: { outcome: 'unknown' } },
          )
        : new GatewayError(
            'service_unavailable',
            'The database is unreachable: nothing was changed. Retry when it is back.',
            { cause: err, details: { outcome: 'not_applied' } },
          );
    }
  }

  /**
   * Tells every instance about a committed change. When that fails (Redis down) the change still stands:
   * this instance reloads from the database at once, the others at their next refresh; the caller says so.
   */
  async propagate(inv: Invalidation): Promise<DeferredPropagation | null> {
    try {
      await this.publish(inv);
      return null;
    } catch (err) {
      this.opts.log?.warn(
        { table: inv.table, key: inv.key, err: errText(err) },
        'config change committed but not published: other instances pick it up at their next refresh',
      );
      await this.opts.reloadLocal?.(inv.table).catch(() => {});
      return { published: false, within_ms: this.opts.refreshMs ?? DEFAULT_REFRESH_MS };
    }
  }

  async create(
    actor: Actor,
    entity: Entity,
    body: unknown,
    opts: { appId?: string; requestId?: string } = {},
  ): Promise<{ row: Dto; sk?: string; propagation: DeferredPropagation | null }> {
    const v = validateWrite(entity, body, 'create', this.opts.outbound, this.opts.providerKinds);
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
    const row = await this.commit(async (trx) => {
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
      await this.audit(trx, {
        actor,
        action: 'create',
        entity,
        key,
        before: null,
        after: toDto(entity, created),
        requestId: opts.requestId,
      });
      return created;
    });
    const propagation = await this.propagate({
      table: entity,
      key: entity === 'quota' || entity === 'price' ? String(row.id) : key,
    });
    return { row: toDto(entity, row), ...(sk ? { sk } : {}), propagation };
  }

  private async checkChainChannels(db: Db, chainJson: string): Promise<void> {
    const found = await db
      .selectFrom('channel')
      .select('code')
      .where('code', 'in', chainChannels(chainJson))
      .where('deleted_at', 'is', null)
      .execute();
    checkChainChannels(chainJson, new Set(found.map((f) => f.code)));
  }

  /** PATCH with the optimistic lock: `versionNo` must be the version the caller read. */
  async update(
    actor: Actor,
    entity: Entity,
    key: string,
    versionNo: number | undefined,
    body: unknown,
    t: Target & { requestId?: string } = {},
  ): Promise<{ row: Dto; propagation: DeferredPropagation | null }> {
    if (versionNo === undefined)
      throw new GatewayError(
        'version_required',
        'Name the version you read: If-Match header or version_no in the body.',
      );
    const v = validateWrite(entity, body, 'patch', this.opts.outbound, this.opts.providerKinds);
    const out = await this.commit(async (trx) => {
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
      await this.audit(trx, {
        actor,
        action: 'update',
        entity,
        key,
        before: toDto(entity, cur),
        after: toDto(entity, updated),
        requestId: t.requestId,
      });
      return { row: updated, wrote: true };
    });
    const propagation = out.wrote ? await this.propagate({ table: entity, key }) : null;
    return { row: toDto(entity, out.row), propagation };
  }

  /** Soft delete, with the optimistic lock. */
  async remove(
    actor: Actor,
    entity: Entity,
    key: string,
    versionNo: number | undefined,
    t: Target & { requestId?: string } = {},
  ): Promise<{ propagation: DeferredPropagation | null }> {
    if (versionNo === undefined)
      throw new GatewayError(
        'version_required',
        'Name the version you read: If-Match header or version_no in the body.',
      );
    await this.commit(async (trx) => {
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
      await this.audit(trx, {
        actor,
        action: 'delete',
        entity,
        key,
        before: toDto(entity, cur),
        after: toDto(entity, deleted),
        requestId: t.requestId,
      });
    });
    return { propagation: await this.propagate({ table: entity, key }) };
  }

  /** A new secret for an existing key: the old sk stops working at once; the new one is shown once. */
  async rotateKey(
    actor: Actor,
    appId: string,
    keyId: string,
    versionNo: number | undefined,
    requestId?: string,
  ): Promise<{ row: Dto; sk: string; propagation: DeferredPropagation | null }> {
    if (versionNo === undefined)
      throw new GatewayError(
        'version_required',
        'Name the version you read: If-Match header or version_no in the body.',
      );
    const sk = newSecretKey();
    const row = await this.commit(async (trx) => {
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
      await this.audit(trx, {
        actor,
        action: 'rotate',
        entity: 'api_key',
        key: keyId,
        before: toDto('api_key', cur),
        after: toDto('api_key', updated),
        requestId,
      });
      return updated;
    });
    const propagation = await this.propagate({ table: 'api_key', key: keyId });
    return { row: toDto('api_key', row), sk, propagation };
  }

  /**
   * Records an operator action that is not a config row (breaker, cache, token, wallet). The action has
   * already taken effect, so this never fails: a row the database can't take now is queued and retried
   * (in order, keeping its time) until it can.
   */
  async record(
    actor: Actor,
    action: string,
    entity: string,
    key: string,
    before: unknown,
    after: unknown,
    requestId?: string,
  ): Promise<AuditOutcome> {
    const at = new Date();
    const row: AuditRow = { actor, action, entity, key, before, after, requestId };
    if (this.pendingAudit.length) await this.flushAudit(); // older rows first
    if (!this.pendingAudit.length) {
      try {
        await this.audit(this.db, row);
        return 'written';
      } catch (err) {
        this.opts.log?.warn({ err: errText(err), action, entity, key }, 'audit: row deferred');
      }
    }
    return this.deferAudit({ ...row, at });
  }

  private deferAudit(row: AuditRow): AuditOutcome {
    if (this.pendingAudit.length >= MAX_PENDING_AUDIT) {
      this.opts.log?.warn(
        { audit: auditView(row) },
        'audit: too many rows waiting for the database; dropped',
      );
      return 'dropped';
    }
    this.pendingAudit.push(row);
    if (!this.auditTimer) {
      this.auditTimer = setInterval(() => void this.flushAudit(), this.opts.auditRetryMs ?? 1_000);
      this.auditTimer.unref();
    }
    return 'deferred';
  }

  /** Writes queued audit rows in order; stops at the first the database can't take, for the next tick. */
  flushAudit(): Promise<void> {
    this.flushing ??= (async () => {
      while (this.pendingAudit.length) {
        const row = this.pendingAudit[0]!;
        try {
          await this.audit(this.db, row);
        } catch (err) {
          if (isDbUnavailable(err)) return;
          // The database is there and refuses this row: retrying would block every row behind it.
          this.opts.log?.error(
            { err: errText(err), audit: auditView(row) },
            'audit: deferred row refused; dropped',
          );
        }
        this.pendingAudit.shift();
      }
      if (this.auditTimer) clearInterval(this.auditTimer);
      this.auditTimer = null;
    })().finally(() => (this.flushing = null));
    return this.flushing;
  }

  /** Shutdown: a last try at the queued audit rows; those the database still can't take are logged and dropped. */
  async close(): Promise<void> {
    if (this.pendingAudit.length) await this.flushAudit();
    if (this.auditTimer) clearInterval(this.auditTimer);
    this.auditTimer = null;
    if (!this.pendingAudit.length) return;
    this.opts.log?.warn(
      { dropped: this.pendingAudit.length, audit: this.pendingAudit.map(auditView) },
      'audit: rows still waiting for the database at shutdown were dropped',
    );
    this.pendingAudit.length = 0;
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

  async putSetting(
    actor: Actor,
    key: string,
    value: unknown,
    requestId?: string,
  ): Promise<{ propagation: DeferredPropagation | null }> {
    await this.commit(async (trx) => {
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
          oc.column('key').doUpdateSet({
            value: JSON.stringify(value),
            version_no: sql`gateway_setting.version_no + 1`,
            updated_at: new Date(),
          }),
        )
        .execute();
      await this.audit(trx, {
        actor,
        action: 'set',
        entity: 'setting',
        key,
        before: before?.value ?? null,
        after: value,
        requestId,
      });
    });
    return { propagation: await this.propagate({ table: 'setting', key }) };
  }
}
