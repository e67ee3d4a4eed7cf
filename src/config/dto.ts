/**
 * The admin API's view of config rows: a row as the API shows it (secrets never leave: a channel shows
 * whether it has a credential and its last 4), the column each entity is keyed by, and value comparison
 * for "what did this write change" (jsonb comes back parsed with its keys reordered).
 */
import { isSealed, openSecret } from './secrets.js';
import { PRICE_COLUMNS } from './price.js';
import type { Entity } from './validate.js';

function openSecretSafe(s: string): string {
  try {
    return openSecret(s);
  } catch {
    return '????';
  }
}

export type Row = Record<string, any>;
export type Dto = Record<string, unknown>;

export const KEY_COL: Record<Entity, string> = {
  channel: 'code',
  alias: 'name',
  app: 'id',
  api_key: 'id',
  quota: 'id',
  token_group: 'id',
  price: 'id',
};

/** Entities keyed by their bigserial row id (the others by a code, a name or a text id). */
export const NUMERIC_ID: ReadonlySet<Entity> = new Set(['quota', 'price']);
export const isRowId = (s: unknown) => typeof s === 'string' && /^\d{1,18}$/.test(s);

export const iso = (d: unknown) =>
  d === null || d === undefined ? null : new Date(d as string).toISOString();

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
      return {
        id: r.id,
        name: r.name,
        enabled: r.enabled,
        billing: r.billing ?? 'postpaid',
        sale_markup: r.sale_markup ?? null,
        ...common,
      };
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

export function same(a: unknown, b: unknown): boolean {
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
