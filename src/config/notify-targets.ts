/**
 * Operator notification targets (table `notification_target`): where Anima posts its operator events
 * (observability/notify.ts) — a URL, a format (Slack-compatible or signed generic JSON), an optional
 * signing secret (sealed at rest like channel credentials: config/secrets.ts), which event kinds it wants
 * (empty: all), a per-minute rate and an enabled flag. Plain rows, not versioned: no effective windows;
 * every write is audited by the admin route.
 */
import { GatewayError } from '../core/errors.js';
import { randomId } from '../core/ids.js';
import type { Db } from '../store/db.js';
import { openSecret, sealSecret } from './secrets.js';

/** Every event kind a target may subscribe to (observability/notify.ts emits them). */
export const NOTIFY_EVENT_KINDS = [
  'breaker.opened',
  'breaker.closed',
  'credential.out',
  'budget.warning',
  'budget.exhausted',
  'journal.stuck',
  'journal.recovered',
  'dependency.down',
  'dependency.recovered',
] as const;
export type NotifyEventKind = (typeof NOTIFY_EVENT_KINDS)[number];

export const NOTIFY_FORMATS = ['slack', 'json'] as const;
export type NotifyFormat = (typeof NOTIFY_FORMATS)[number];

/** A target as the notifier uses it (the secret opened). */
export interface NotifyTarget {
  id: string;
  name: string;
  url: string;
  format: NotifyFormat;
  /** '' = unsigned; null = sealed under a key this process doesn't have (deliveries fail, never unsigned). */
  secret: string | null;
  /** Empty: every kind. */
  events: NotifyEventKind[];
  enabled: boolean;
  /** Notifications per minute at most; the rest are folded into one summary. */
  ratePerMinute: number;
}

export interface TargetRow {
  id: string;
  name: string;
  url: string;
  format: string;
  secret: string;
  events: unknown;
  enabled: boolean;
  rate_per_minute: number;
  created_at: Date | string;
  updated_at: Date | string;
}

const iso = (d: Date | string) => new Date(d).toISOString();
const eventsOf = (v: unknown): NotifyEventKind[] =>
  (typeof v === 'string' ? (JSON.parse(v) as unknown[]) : Array.isArray(v) ? v : []).filter(
    (k): k is NotifyEventKind => NOTIFY_EVENT_KINDS.includes(k as NotifyEventKind),
  );

function openOrNull(stored: string): string | null {
  try {
    return stored ? openSecret(stored) : '';
  } catch {
    return null;
  }
}

function toTarget(r: TargetRow): NotifyTarget {
  return {
    id: r.id,
    name: r.name,
    url: r.url,
    format: r.format as NotifyFormat,
    secret: openOrNull(r.secret),
    events: eventsOf(r.events),
    enabled: r.enabled,
    ratePerMinute: r.rate_per_minute,
  };
}

/** What the admin API shows: never the secret, only whether there is one. */
export function targetView(r: TargetRow): Record<string, unknown> {
  return {
    id: r.id,
    name: r.name,
    url: r.url,
    format: r.format,
    secret_set: !!r.secret,
    events: eventsOf(r.events),
    enabled: r.enabled,
    rate_per_minute: r.rate_per_minute,
    created_at: iso(r.created_at),
    updated_at: iso(r.updated_at),
  };
}

export interface TargetInput {
  name?: unknown;
  url?: unknown;
  format?: unknown;
  secret?: unknown;
  events?: unknown;
  enabled?: unknown;
  rate_per_minute?: unknown;
}

const bad = (param: string, msg: string) => new GatewayError('invalid_request', msg, { param });

/** Checks a body; `partial` for a PATCH (absent fields stay). Returns the columns to write. */
export function checkTarget(b: TargetInput, partial: boolean): Record<string, unknown> {
  if (!b || typeof b !== 'object' || Array.isArray(b)) throw bad('body', 'the body must be a JSON object');
  const known = ['name', 'url', 'format', 'secret', 'events', 'enabled', 'rate_per_minute', 'version_no'];
  for (const k of Object.keys(b)) if (!known.includes(k)) throw bad(k, `unknown field '${k}'`);
  const out: Record<string, unknown> = {};
  if (b.name !== undefined || !partial) {
    if (typeof b.name !== 'string' || !b.name.trim() || b.name.length > 200)
      throw bad('name', 'name: a non-empty string of at most 200 characters');
    out.name = b.name.trim();
  }
  if (b.url !== undefined || !partial) {
    let u: URL | null = null;
    try {
      u = typeof b.url === 'string' && b.url.length <= 2000 ? new URL(b.url) : null;
    } catch {
      u = null;
    }
    if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:'))
      throw bad('url', 'url: an absolute http(s) URL of at most 2000 characters');
    out.url = b.url;
  }
  if (b.format !== undefined || !partial) {
    const f = b.format ?? 'json';
    if (!NOTIFY_FORMATS.includes(f as NotifyFormat))
      throw bad('format', `format: one of ${NOTIFY_FORMATS.join(', ')}`);
    out.format = f;
  }
  if (b.secret !== undefined) {
    if (b.secret !== null && (typeof b.secret !== 'string' || b.secret.length > 500))
      throw bad('secret', 'secret: a string of at most 500 characters (null or "" removes it)');
    out.secret = b.secret ? sealSecret(b.secret) : '';
  }
  if (b.events !== undefined || !partial) {
    const ev = b.events ?? [];
    if (!Array.isArray(ev) || ev.some((k) => !NOTIFY_EVENT_KINDS.includes(k as NotifyEventKind)))
      throw bad('events', `events: a list of ${NOTIFY_EVENT_KINDS.join(', ')} (empty: all)`);
    out.events = JSON.stringify([...new Set(ev)]);
  }
  if (b.enabled !== undefined) {
    if (typeof b.enabled !== 'boolean') throw bad('enabled', 'enabled: true or false');
    out.enabled = b.enabled;
  }
  if (b.rate_per_minute !== undefined) {
    const n = b.rate_per_minute;
    if (!Number.isInteger(n) || (n as number) < 1 || (n as number) > 600)
      throw bad('rate_per_minute', 'rate_per_minute: an integer from 1 to 600');
    out.rate_per_minute = n;
  }
  return out;
}

export class NotifyTargets {
  constructor(private readonly db: Db) {}

  private async row(id: string): Promise<TargetRow> {
    const r = (await this.db
      .selectFrom('notification_target')
      .selectAll()
      .where('id', '=', id)
      .executeTakeFirst()) as TargetRow | undefined;
    if (!r) throw new GatewayError('not_found', `No notification target '${id}'.`);
    return r;
  }

  async list(): Promise<TargetRow[]> {
    return (await this.db
      .selectFrom('notification_target')
      .selectAll()
      .orderBy('created_at')
      .execute()) as TargetRow[];
  }

  /** Every target, secrets opened: what the notifier delivers to. */
  async load(): Promise<NotifyTarget[]> {
    return (await this.list()).map(toTarget);
  }

  async get(id: string): Promise<TargetRow> {
    return this.row(id);
  }

  async target(id: string): Promise<NotifyTarget> {
    return toTarget(await this.row(id));
  }

  async create(body: TargetInput): Promise<TargetRow> {
    const cols = checkTarget(body, false);
    const id = 'nt_' + randomId(16);
    await this.db
      .insertInto('notification_target')
      .values({ id, ...cols } as never)
      .execute();
    return this.row(id);
  }

  async update(id: string, body: TargetInput): Promise<{ before: TargetRow; after: TargetRow }> {
    const before = await this.row(id);
    const cols = checkTarget(body, true);
    await this.db
      .updateTable('notification_target')
      .set({ ...cols, updated_at: new Date() } as never)
      .where('id', '=', id)
      .execute();
    return { before, after: await this.row(id) };
  }

  async remove(id: string): Promise<TargetRow> {
    const before = await this.row(id);
    await this.db.deleteFrom('notification_target').where('id', '=', id).execute();
    return before;
  }
}
