import type { Logger } from 'pino';
import type { Clock } from '../lib/clock.js';
import type { Db } from '../store/db.js';
import { type Alias, type ApiKey, type App, type Channel, pickEffective } from './model.js';
import { type ConfigRows, loadConfig, loadKeyByHash } from './repo.js';

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

class Snapshot {
  readonly channels: Map<string, Channel[]>;
  readonly aliases: Map<string, Alias[]>;
  readonly apps: Map<string, App[]>;
  readonly keys: Map<string, ApiKey[]>;
  constructor(rows: ConfigRows, readonly loadedAt: number) {
    this.channels = group(rows.channels, (c) => c.code);
    this.aliases = group(rows.aliases, (a) => a.name);
    this.apps = group(rows.apps, (a) => a.id);
    this.keys = group(rows.keys, (k) => k.keyHash);
  }
}

/**
 * L1: the whole live configuration in process memory, swapped atomically on reload. Lookups never touch
 * the database, except a key hash absent from the snapshot (a key created since the last load), which is
 * read once and cached, misses included, for a few seconds.
 */
export class ConfigCache {
  private snap: Snapshot;
  private readonly extraKeys = new Map<string, { key: ApiKey | undefined; at: number }>();
  private timer: NodeJS.Timeout | null = null;
  private reloading: Promise<void> | null = null;
  private reloadAgain = false;

  constructor(
    private readonly db: Db,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly opts: { refreshMs: number; missTtlMs?: number } = { refreshMs: 30_000 },
  ) {
    this.snap = new Snapshot({ channels: [], aliases: [], apps: [], keys: [] }, 0);
  }

  get loadedAt(): number {
    return this.snap.loadedAt;
  }

  async load(): Promise<void> {
    const rows = await loadConfig(this.db);
    this.snap = new Snapshot(rows, this.clock.now());
    this.extraKeys.clear();
  }

  /** Reload, coalescing concurrent calls; a failure keeps the previous snapshot. */
  reload(): Promise<void> {
    if (this.reloading) {
      this.reloadAgain = true;
      return this.reloading;
    }
    this.reloading = (async () => {
      do {
        this.reloadAgain = false;
        try {
          await this.load();
        } catch (err) {
          this.log.warn({ err: (err as Error).message }, 'config reload failed; serving the previous snapshot');
        }
      } while (this.reloadAgain);
    })().finally(() => (this.reloading = null));
    return this.reloading;
  }

  start(): void {
    this.timer = setInterval(() => void this.reload(), this.opts.refreshMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  channel(code: string, now = this.clock.now()): Channel | undefined {
    return pickEffective(this.snap.channels.get(code), now);
  }

  alias(name: string, now = this.clock.now()): Alias | undefined {
    return pickEffective(this.snap.aliases.get(name), now);
  }

  aliasNames(now = this.clock.now()): string[] {
    const out: string[] = [];
    for (const [name, versions] of this.snap.aliases) {
      const a = pickEffective(versions, now);
      if (a?.enabled) out.push(name);
    }
    return out.sort();
  }

  app(id: string, now = this.clock.now()): App | undefined {
    return pickEffective(this.snap.apps.get(id), now);
  }

  /** The key row for this hash whatever its window (the caller tells "expired" from "unknown"). */
  keyByHash(hash: string): ApiKey | undefined | Promise<ApiKey | undefined> {
    const versions = this.snap.keys.get(hash);
    if (versions) return versions[0];
    const extra = this.extraKeys.get(hash);
    const now = this.clock.now();
    if (extra && now - extra.at < (this.opts.missTtlMs ?? 5_000)) return extra.key;
    return loadKeyByHash(this.db, hash).then(
      (key) => {
        if (this.extraKeys.size > 10_000) this.extraKeys.clear(); // bound memory under a flood of bad keys
        this.extraKeys.set(hash, { key, at: now });
        return key;
      },
      () => extra?.key,
    );
  }
}
