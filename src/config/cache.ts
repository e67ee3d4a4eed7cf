import type { Logger } from 'pino';
import type { Clock } from '../lib/clock.js';
import type { Db } from '../store/db.js';
import {
  type Alias,
  type ApiKey,
  type App,
  type Channel,
  type Quota,
  type TokenGroup,
  pickEffective,
} from '../core/model.js';
import { type Price, toPrice } from './price.js';
import { Catalogue, cataloguePrice, defaultMarkupBp, loadImported, shippedEntries } from './catalogue.js';
import {
  CONFIG_TABLES,
  type ConfigTable,
  fetchRows,
  loadKeyByHash,
  toAlias,
  toApp,
  toChannel,
  toKey,
  toQuota,
  toTokenGroup,
} from './repo.js';

function group<T>(rows: T[], key: (t: T) => string): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const r of rows) {
    const k = key(r);
    const list = m.get(k);
    if (list) list.push(r);
    else m.set(k, [r]);
  }
  return m;
}

/** The L2: a shared copy of each table's rows (Redis in production), read when the database is not. */
export interface SharedCache {
  getValue(key: string): Promise<string | null>;
  setValue(key: string, value: string, ttlMs: number): Promise<void>;
}

export interface KillSwitch {
  enabled: boolean;
  reason?: string;
  at?: string;
  by?: string;
}

const L2_TTL_MS = 10 * 60_000;
const bigintSafe = (_k: string, v: unknown) => (typeof v === 'bigint' ? v.toString() : v);

/**
 * L1: each config table's live rows in process memory, swapped atomically per table. The data plane's
 * lookups never touch the database, except a key hash absent from the snapshot (a key created since the
 * last load), which is read once and cached, misses included, for a few seconds.
 *
 * Refresh: an invalidation event reloads the named table at once; every `refreshMs` all tables reload
 * anyway, so a lost event heals by itself. A load reads the database and refreshes L2; when the database
 * can't be read, the table comes from L2, and failing both the previous L1 copy stays in use.
 */
export class ConfigCache {
  private channels = new Map<string, Channel[]>();
  private aliases = new Map<string, Alias[]>();
  private apps = new Map<string, App[]>();
  private keys = new Map<string, ApiKey[]>();
  private keysById = new Map<string, ApiKey>();
  private settings = new Map<string, unknown>();
  private quotas = new Map<string, Quota[]>();
  private tokenGroups = new Map<string, TokenGroup[]>();
  private prices = new Map<string, Price[]>();
  /** List prices for (provider kind, model): the cost when no price row applies (config/catalogue.ts). */
  private catalogue = new Catalogue(shippedEntries());
  /** Catalogue prices resolved per alias/channel/model; emptied at every table swap. */
  private catalogueMemo = new Map<string, Price | null>();
  private readonly loadedAtByTable = new Map<ConfigTable, number>();
  private readonly extraKeys = new Map<string, { key: ApiKey | undefined; at: number }>();
  private timer: NodeJS.Timeout | null = null;
  private readonly inflight = new Map<ConfigTable, Promise<void>>();
  private readonly again = new Set<ConfigTable>();
  /** Called after each table swap (metrics, tests). */
  onReload: ((table: ConfigTable, source: 'db' | 'l2') => void) | null = null;
  /** Called for each key lookup (cache metrics). */
  onKeyLookup: ((layer: 'l1' | 'db', result: 'hit' | 'miss') => void) | null = null;

  constructor(
    private readonly db: Db,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly opts: {
      refreshMs: number;
      missTtlMs?: number;
      l2?: SharedCache | null;
      /** ANIMA_DEFAULT_SALE_MARKUP (app/settings.ts): the catalogue markup when no setting names one. */
      defaultSaleMarkup?: string;
    } = {
      refreshMs: 30_000,
    },
  ) {}

  /** Oldest table load time: how stale the snapshot may be. */
  get loadedAt(): number {
    let min = Infinity;
    for (const t of CONFIG_TABLES) min = Math.min(min, this.loadedAtByTable.get(t) ?? 0);
    return min === Infinity ? 0 : min;
  }

  /** First load: every table must load (from the DB or L2), or startup fails. */
  async load(): Promise<void> {
    for (const t of CONFIG_TABLES) await this.loadTable(t, true);
  }

  private apply(table: ConfigTable, rows: Array<Record<string, unknown>>): void {
    switch (table) {
      case 'channel':
        this.channels = group(rows.map(toChannel), (c) => c.code);
        break;
      case 'alias':
        this.aliases = group(rows.map(toAlias), (a) => a.name);
        break;
      case 'app':
        this.apps = group(rows.map(toApp), (a) => a.id);
        break;
      case 'api_key':
        this.keys = group(
          rows.map((r) => toKey(r as never)),
          (k) => k.keyHash,
        );
        this.keysById = new Map([...this.keys.values()].flat().map((k) => [k.id, k]));
        this.extraKeys.clear();
        break;
      case 'quota':
        this.quotas = group(rows.map(toQuota), (q) => `${q.scope}:${q.scopeId}`);
        break;
      case 'token_group':
        this.tokenGroups = group(rows.map(toTokenGroup), (g) => g.id);
        break;
      case 'price':
        this.prices = group(rows.map(toPrice), (p) => `${p.alias}\0${p.channel ?? ''}`);
        break;
      case 'setting':
        this.settings = new Map(rows.map((r) => [String(r.key), r.value]));
        break;
    }
    this.catalogueMemo = new Map();
    this.loadedAtByTable.set(table, this.clock.now());
  }

  /** The imported catalogue layer rides on the price table's reloads (and its invalidations). */
  private async loadCatalogue(): Promise<void> {
    try {
      this.catalogue = new Catalogue(shippedEntries(), await loadImported(this.db));
      this.catalogueMemo = new Map();
    } catch (err) {
      this.log.warn(
        { err: (err as Error).message },
        'price catalogue: imported prices unreadable, keeping the previous copy',
      );
    }
  }

  private async loadTable(table: ConfigTable, strict: boolean): Promise<void> {
    const l2Key = `config:l2:${table}`;
    try {
      const rows = await fetchRows(this.db, table);
      if (table === 'price') await this.loadCatalogue();
      this.apply(table, rows);
      this.onReload?.(table, 'db');
      void this.opts.l2?.setValue(l2Key, JSON.stringify(rows, bigintSafe), L2_TTL_MS).catch(() => {});
      return;
    } catch (err) {
      const cached = await this.opts.l2?.getValue(l2Key).catch(() => null);
      if (cached) {
        this.apply(table, JSON.parse(cached) as Array<Record<string, unknown>>);
        this.onReload?.(table, 'l2');
        this.log.warn(
          { table, err: (err as Error).message },
          'config: database unreadable, table loaded from L2',
        );
        return;
      }
      if (strict) throw err;
      this.log.warn(
        { table, err: (err as Error).message },
        'config reload failed; serving the previous L1 copy',
      );
    }
  }

  /** Reloads one table (or all), coalescing concurrent calls per table. */
  async reload(table: ConfigTable | 'all' = 'all'): Promise<void> {
    const tables = table === 'all' ? CONFIG_TABLES : [table];
    await Promise.all(tables.map((t) => this.reloadOne(t)));
  }

  private reloadOne(t: ConfigTable): Promise<void> {
    const cur = this.inflight.get(t);
    if (cur) {
      this.again.add(t);
      return cur;
    }
    const p = (async () => {
      do {
        this.again.delete(t);
        await this.loadTable(t, false);
      } while (this.again.has(t));
    })().finally(() => this.inflight.delete(t));
    this.inflight.set(t, p);
    return p;
  }

  start(): void {
    this.timer = setInterval(() => void this.reload('all'), this.opts.refreshMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  channel(code: string, now = this.clock.now()): Channel | undefined {
    return pickEffective(this.channels.get(code), now);
  }

  channelCodes(): string[] {
    return [...this.channels.keys()].sort();
  }

  alias(name: string, now = this.clock.now()): Alias | undefined {
    return pickEffective(this.aliases.get(name), now);
  }

  aliasNames(now = this.clock.now()): string[] {
    const out: string[] = [];
    for (const [name, versions] of this.aliases) {
      const a = pickEffective(versions, now);
      if (a?.enabled) out.push(name);
    }
    return out.sort();
  }

  app(id: string, now = this.clock.now()): App | undefined {
    return pickEffective(this.apps.get(id), now);
  }

  quota(scope: Quota['scope'], id: string, now = this.clock.now()): Quota | undefined {
    return pickEffective(this.quotas.get(`${scope}:${id}`), now);
  }

  /**
   * The price in force at `at` for this alias on this channel (a channel-specific row wins over the
   * alias-wide one). No row: the catalogue's list price for the channel's provider kind and the model the
   * alias sends it (`model`, else the alias's first target on that channel), sold at the markup of the app
   * (`app`, when it has one) or else the default markup.
   */
  price(
    alias: string,
    channel: string | null,
    at = this.clock.now(),
    model?: string | null,
    app?: string | null,
  ): Price | undefined {
    const row =
      (channel ? pickEffective(this.prices.get(`${alias}\0${channel}`), at) : undefined) ??
      pickEffective(this.prices.get(`${alias}\0`), at);
    if (row || !channel) return row;
    const ch = this.channel(channel, at);
    const upstream =
      model ??
      this.alias(alias, at)
        ?.tiers.flat()
        .find((t) => t.channel === channel)?.model;
    if (!ch || !upstream) return undefined;
    const appBp = app ? (this.app(app, at)?.saleMarkupBp ?? null) : null;
    // Keyed by what the answer depends on (the default markup comes from settings and an app's from its
    // row: a swap of either table empties the memo).
    const memoKey = `${ch.provider}\0${upstream}\0${alias}\0${channel}\0${appBp ?? ''}`;
    const memo = this.catalogueMemo.get(memoKey);
    if (memo !== undefined) return memo ?? undefined;
    const entry = this.catalogue.get(ch.provider, upstream);
    const bp =
      appBp ?? defaultMarkupBp(this.settings.get('default_sale_markup'), this.opts.defaultSaleMarkup);
    const p = entry ? cataloguePrice(entry, alias, channel, bp) : undefined;
    this.catalogueMemo.set(memoKey, p ?? null);
    return p;
  }

  tokenGroup(id: string, now = this.clock.now()): TokenGroup | undefined {
    return pickEffective(this.tokenGroups.get(id), now);
  }

  setting<T>(key: string): T | undefined {
    return this.settings.get(key) as T | undefined;
  }

  killSwitch(): KillSwitch | null {
    const k = this.settings.get('kill_switch') as KillSwitch | undefined;
    return k?.enabled ? k : null;
  }

  /** Every key in the snapshot (the console's queue view walks the WAIT-mode ones). */
  allKeys(): ApiKey[] {
    return [...this.keysById.values()];
  }

  keyById(id: string): ApiKey | undefined {
    return this.keysById.get(id);
  }

  /** The key row for this hash whatever its window (the caller tells "expired" from "unknown"). */
  keyByHash(hash: string): ApiKey | undefined | Promise<ApiKey | undefined> {
    const versions = this.keys.get(hash);
    if (versions) {
      this.onKeyLookup?.('l1', 'hit');
      return versions[0];
    }
    const extra = this.extraKeys.get(hash);
    const now = this.clock.now();
    if (extra && now - extra.at < (this.opts.missTtlMs ?? 5_000)) {
      this.onKeyLookup?.('l1', extra.key ? 'hit' : 'miss');
      return extra.key;
    }
    this.onKeyLookup?.('l1', 'miss');
    return loadKeyByHash(this.db, hash).then(
      (key) => {
        this.onKeyLookup?.('db', key ? 'hit' : 'miss');
        if (this.extraKeys.size > 10_000) this.extraKeys.clear(); // bound memory under a flood of bad keys
        this.extraKeys.set(hash, { key, at: now });
        return key;
      },
      () => extra?.key,
    );
  }
}
