/**
 * Where instances leave their console figures on Redis (observability/cluster-stats.ts): one string key per
 * instance with a TTL, and a sorted set of instance ids scored by their keys' expiry so a reader finds them
 * without SCAN. Both under one hash tag, so MGET works on a Redis Cluster. A key that expired is simply
 * missing from the MGET; its id is pruned from the set a minute later.
 *
 * | state | source of truth | when Redis comes back empty |
 * | per-instance console figures | each instance's memory | written again at the next publish (≤ 5 s) |
 */
import type { Redis } from 'ioredis';

const PRUNE_AFTER_MS = 60_000;

export function redisStatsShare(cmd: Redis, prefix: string) {
  const base = `${prefix}{console-stats}`;
  const live = `${base}:live`;
  const key = (id: string) => `${base}:i:${id}`;
  return {
    async put(instance: string, json: string, ttlMs: number): Promise<void> {
      await Promise.all([
        cmd.set(key(instance), json, 'PX', ttlMs),
        cmd.zadd(live, Date.now() + ttlMs, instance),
      ]);
    },
    async all(): Promise<Array<{ instance: string; json: string }>> {
      await cmd.zremrangebyscore(live, '-inf', Date.now() - PRUNE_AFTER_MS);
      const ids = await cmd.zrange(live, 0, -1);
      if (!ids.length) return [];
      const vals = await cmd.mget(...ids.map(key));
      return ids.flatMap((instance, i) => (vals[i] ? [{ instance, json: vals[i] }] : []));
    },
    async remove(instance: string): Promise<void> {
      await Promise.all([cmd.del(key(instance)), cmd.zrem(live, instance)]);
    },
  };
}
