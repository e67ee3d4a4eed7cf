import { hash } from 'node:crypto';
import { sql } from 'kysely';
import { randomId } from '../core/ids.js';
import { openSecret, sealSecret } from './secrets.js';
import { markupBp } from './catalogue.js';
import type { Db } from '../store/db.js';
import type { ChainTierRow } from '../store/schema.js';
import {
  type Alias,
  type ApiKey,
  type App,
  type BreakerSettings,
  type Channel,
  type ProviderKind,
  type Quota,
  type TokenGroup,
  type Timeouts,
  type VertexSettings,
  DEFAULT_BREAKER,
  DEFAULT_TIMEOUTS,
} from '../core/model.js';

/** Keys are stored as sha256(sk) in hex; the sk itself is shown once, at creation. */
export function hashKey(sk: string): string {
  // One-shot crypto.hash: runs on every request, and a Hash object per call costs ~4x as much.
  return hash('sha256', sk, 'hex');
}

export function newSecretKey(): string {
  return 'sk-anima-' + randomId(40);
}

const ms = (d: Date | string | null): number | null => (d === null ? null : new Date(d).getTime());

function num(v: unknown, dflt: number): number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : dflt;
}

function obj(v: unknown): Record<string, unknown> {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

/** A Vertex channel's addressing settings (validated on write; strings only here). */
function parseVertex(v: unknown): VertexSettings {
  const o = obj(v);
  const out: VertexSettings = {};
  if (typeof o.project === 'string' && o.project) out.project = o.project;
  if (typeof o.location === 'string' && o.location) out.location = o.location;
  if (o.publisher === 'google' || o.publisher === 'anthropic') out.publisher = o.publisher;
  return out;
}

export function parseTimeouts(v: unknown): Timeouts {
  const o = obj(v);
  return {
    connectMs: num(o.connectMs, DEFAULT_TIMEOUTS.connectMs),
    firstByteMs: num(o.firstByteMs, DEFAULT_TIMEOUTS.firstByteMs),
    idleMs: num(o.idleMs, DEFAULT_TIMEOUTS.idleMs),
    totalMs: num(o.totalMs, DEFAULT_TIMEOUTS.totalMs),
  };
}

export function parseBreaker(v: unknown, timeouts: Timeouts): BreakerSettings {
  const o = obj(v);
  return {
    windowMs: num(o.windowMs, DEFAULT_BREAKER.windowMs),
    minCalls: Math.max(1, num(o.minCalls, DEFAULT_BREAKER.minCalls)),
    failureRate: Math.min(1, num(o.failureRate, DEFAULT_BREAKER.failureRate)),
    slowCallMs: num(o.slowCallMs, DEFAULT_BREAKER.slowCallMs),
    slowCallRate: Math.min(1, num(o.slowCallRate, DEFAULT_BREAKER.slowCallRate)),
    openMs: num(o.openMs, DEFAULT_BREAKER.openMs),
    halfOpenProbes: Math.max(1, Math.floor(num(o.halfOpenProbes, DEFAULT_BREAKER.halfOpenProbes))),
    probeTimeoutMs: num(o.probeTimeoutMs, Math.min(DEFAULT_BREAKER.probeTimeoutMs, timeouts.totalMs)),
  };
}

export interface ConfigRows {
  channels: Channel[];
  aliases: Alias[];
  apps: App[];
  keys: ApiKey[];
}

type KeyRow = {
  id: string;
  app_id: string;
  name: string;
  key_hash: string;
  key_prefix: string;
  enabled: boolean;
  allowed_aliases: string[] | null;
  queue_mode?: string;
  wait_timeout_ms?: number;
  max_queue?: number;
  token_group_id?: string | null;
  webhook_url?: string | null;
  webhook_secret?: string | null;
  version_no: number;
  effective_from: Date;
  effective_to: Date | null;
};

export function toKey(r: KeyRow): ApiKey {
  return {
    id: r.id,
    appId: r.app_id,
    name: r.name,
    keyHash: r.key_hash,
    keyPrefix: r.key_prefix,
    enabled: r.enabled,
    allowedAliases: Array.isArray(r.allowed_aliases) ? new Set(r.allowed_aliases) : null,
    queueMode: (r.queue_mode ?? 'REJECT') as ApiKey['queueMode'],
    waitTimeoutMs: r.wait_timeout_ms ?? 30_000,
    maxQueue: r.max_queue ?? 100,
    tokenGroupId: r.token_group_id ?? null,
    webhookUrl: r.webhook_url ?? null,
    webhookSecret: r.webhook_secret ? openSecret(r.webhook_secret) : null,
    versionNo: r.version_no,
    effectiveFrom: ms(r.effective_from)!,
    effectiveTo: ms(r.effective_to),
  };
}

/**
 * Loads every live (not deleted, not yet expired) config row. Future rows are included so that a change
 * scheduled with effective_from takes effect by itself at that time, without another load.
 */
export type ConfigTable =
  'channel' | 'alias' | 'app' | 'api_key' | 'quota' | 'token_group' | 'price' | 'setting';
export const CONFIG_TABLES: ConfigTable[] = [
  'channel',
  'alias',
  'app',
  'api_key',
  'quota',
  'token_group',
  'price',
  'setting',
];

export interface SettingRow {
  key: string;
  value: unknown;
}

/** Raw live rows of one table (not deleted, not yet expired; future rows included). */
export async function fetchRows(db: Db, table: ConfigTable): Promise<Array<Record<string, unknown>>> {
  if (table === 'setting') return db.selectFrom('gateway_setting').select(['key', 'value']).execute();
  const live = sql<boolean>`deleted_at IS NULL AND (effective_to IS NULL OR effective_to > now())`;
  return (db.selectFrom(table as 'channel') as any).selectAll().where(live).execute();
}

export function toChannel(r: any): Channel {
  const settings = obj(r.settings);
  const timeouts = parseTimeouts(settings.timeouts);
  return {
    id: String(r.id),
    code: r.code,
    name: r.name,
    provider: r.provider as ProviderKind,
    baseUrl: String(r.base_url).replace(/\/+$/, ''),
    credential: openSecret(String(r.credential ?? '')),
    enabled: r.enabled,
    weight: r.weight,
    timeouts,
    breaker: parseBreaker(settings.breaker, timeouts),
    headers: Object.fromEntries(Object.entries(obj(settings.headers)).map(([k, v]) => [k, String(v)])),
    maxConnections: Math.max(1, num(settings.maxConnections, 256)),
    nativeResponses: settings.nativeResponses !== false,
    ...(typeof settings.apiVersion === 'string' ? { apiVersion: settings.apiVersion } : {}),
    ...(settings.vertex ? { vertex: parseVertex(settings.vertex) } : {}),
    versionNo: r.version_no,
    effectiveFrom: ms(r.effective_from)!,
    effectiveTo: ms(r.effective_to),
  };
}

export function toAlias(r: any): Alias {
  return {
    id: String(r.id),
    name: r.name,
    description: r.description,
    enabled: r.enabled,
    tiers: ((r.chain ?? []) as ChainTierRow[]).map((tier) =>
      (tier.targets ?? []).map((t) => ({ channel: t.channel, model: t.model, weight: t.weight ?? 1 })),
    ),
    maxAttempts: r.max_attempts,
    deadlineMs: r.deadline_ms,
    cacheTtlS: r.cache_ttl_s ?? 0,
    versionNo: r.version_no,
    effectiveFrom: ms(r.effective_from)!,
    effectiveTo: ms(r.effective_to),
  };
}

/** An app's markup column as basis points; a value that doesn't parse (the check forbids it) is no override. */
function saleMarkupOf(v: unknown): bigint | null {
  if (typeof v !== 'string' || v === '') return null;
  try {
    return markupBp(v);
  } catch {
    return null;
  }
}

export function toApp(r: any): App {
  return {
    id: r.id,
    name: r.name,
    enabled: r.enabled,
    billing: r.billing === 'prepaid' ? 'prepaid' : 'postpaid',
    saleMarkupBp: saleMarkupOf(r.sale_markup),
    versionNo: r.version_no,
    effectiveFrom: ms(r.effective_from)!,
    effectiveTo: ms(r.effective_to),
  };
}

export function toQuota(r: any): Quota {
  return {
    id: String(r.id),
    scope: r.scope,
    scopeId: r.scope_id,
    maxConcurrency: r.max_concurrency,
    qps: Number(r.qps),
    qpsBurst: r.qps_burst,
    tokensPerMinute: Number(r.tokens_per_minute),
    tokensPerDay: Number(r.tokens_per_day),
    costPerDay: Number(r.cost_per_day),
    costPerMonth: Number(r.cost_per_month),
    versionNo: r.version_no,
    effectiveFrom: ms(r.effective_from)!,
    effectiveTo: ms(r.effective_to),
  };
}

export function toTokenGroup(r: any): TokenGroup {
  return {
    id: r.id,
    name: r.name,
    priceMultiplierPpm: BigInt(r.price_multiplier_ppm),
    enabled: r.enabled,
    versionNo: r.version_no,
    effectiveFrom: ms(r.effective_from)!,
    effectiveTo: ms(r.effective_to),
  };
}

export async function loadConfig(db: Db): Promise<ConfigRows> {
  const [channels, aliases, apps, keys] = await Promise.all(
    (['channel', 'alias', 'app', 'api_key'] as const).map((t) => fetchRows(db, t)),
  );
  return {
    channels: channels!.map(toChannel),
    aliases: aliases!.map(toAlias),
    apps: apps!.map(toApp),
    keys: keys!.map((r) => toKey(r as KeyRow)),
  };
}

/** One key by hash, for a key created after the last snapshot load. */
export async function loadKeyByHash(db: Db, keyHash: string): Promise<ApiKey | undefined> {
  const r = await db
    .selectFrom('api_key')
    .selectAll()
    .where('key_hash', '=', keyHash)
    .where('deleted_at', 'is', null)
    .executeTakeFirst();
  return r ? toKey(r as KeyRow) : undefined;
}

// ---- writes used by bootstrap, the demo and tests (the admin API builds on these) ----

export interface ChannelInput {
  code: string;
  name?: string;
  provider: ProviderKind;
  baseUrl: string;
  credential?: string;
  enabled?: boolean;
  weight?: number;
  settings?: {
    timeouts?: Partial<Timeouts>;
    breaker?: Partial<BreakerSettings>;
    headers?: Record<string, string>;
    maxConnections?: number;
  };
  effectiveFrom?: Date;
  effectiveTo?: Date | null;
}

export async function insertChannel(db: Db, c: ChannelInput): Promise<void> {
  await db
    .insertInto('channel')
    .values({
      code: c.code,
      name: c.name ?? c.code,
      provider: c.provider,
      base_url: c.baseUrl,
      credential: sealSecret(c.credential ?? ''),
      enabled: c.enabled ?? true,
      weight: c.weight ?? 1,
      settings: JSON.stringify(c.settings ?? {}),
      ...(c.effectiveFrom ? { effective_from: c.effectiveFrom } : {}),
      ...(c.effectiveTo ? { effective_to: c.effectiveTo } : {}),
    })
    .execute();
}

export interface AliasInput {
  name: string;
  tiers: Array<Array<{ channel: string; model: string; weight?: number }>>;
  maxAttempts?: number;
  deadlineMs?: number;
  description?: string;
  effectiveFrom?: Date;
  effectiveTo?: Date | null;
}

export async function insertAlias(db: Db, a: AliasInput): Promise<void> {
  await db
    .insertInto('alias')
    .values({
      name: a.name,
      description: a.description ?? '',
      chain: JSON.stringify(a.tiers.map((targets) => ({ targets }))),
      max_attempts: a.maxAttempts ?? 3,
      deadline_ms: a.deadlineMs ?? 300_000,
      ...(a.effectiveFrom ? { effective_from: a.effectiveFrom } : {}),
      ...(a.effectiveTo ? { effective_to: a.effectiveTo } : {}),
    })
    .execute();
}

export async function insertApp(
  db: Db,
  name: string,
  id = 'app_' + randomId(16),
  billing: 'prepaid' | 'postpaid' = 'postpaid',
): Promise<string> {
  await db.insertInto('app').values({ id, name, billing }).execute();
  return id;
}

/** Creates a key and returns its secret: the only time it exists in clear. */
export async function insertKey(
  db: Db,
  appId: string,
  opts: { name?: string; allowedAliases?: string[] | null; enabled?: boolean; sk?: string } = {},
): Promise<{ id: string; sk: string }> {
  const sk = opts.sk ?? newSecretKey();
  const id = 'key_' + randomId(16);
  await db
    .insertInto('api_key')
    .values({
      id,
      app_id: appId,
      name: opts.name ?? '',
      key_hash: hashKey(sk),
      key_prefix: sk.slice(0, 13),
      enabled: opts.enabled ?? true,
      allowed_aliases: JSON.stringify(opts.allowedAliases ?? null),
    })
    .execute();
  return { id, sk };
}

/** Sets a key's enabled flag with the optimistic lock (version_no must match when given). */
export async function setKeyEnabled(db: Db, keyId: string, enabled: boolean): Promise<void> {
  await db
    .updateTable('api_key')
    .set({ enabled, version_no: sql`version_no + 1`, updated_at: new Date() })
    .where('id', '=', keyId)
    .execute();
}

export async function setChannelEnabled(db: Db, code: string, enabled: boolean): Promise<void> {
  await db
    .updateTable('channel')
    .set({ enabled, version_no: sql`version_no + 1`, updated_at: new Date() })
    .where('code', '=', code)
    .where('deleted_at', 'is', null)
    .execute();
}
