/**
 * The shared tier's side of the overhead bench: what the Redis and PostgreSQL servers spend per request
 * (Redis from INFO cpu / commandstats, PostgreSQL from /proc of its server processes), sampled around
 * each gateway run by bench/overhead.ts.
 */
import { readdirSync, readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** What the Redis and PostgreSQL servers spent during one run, per request (and per journal). */
export interface TierCost {
  /** Redis server CPU (user + system, all its threads), µs per request. */
  redisUs: number;
  /**
   * Redis commands per request (INFO commandstats, the bench's own INFO calls left out). Commandstats
   * counts the commands a script calls as well as the script, so this is not round trips.
   */
  redisCmds: number;
  /** Script calls (EVALSHA and kin) per request, and the time Redis spent in them, µs per request. */
  redisScriptCalls: number;
  redisScriptUs: number;
  /** Calls per request of each Redis command. */
  redisPerCmd: Record<string, number>;
  /** PostgreSQL server processes' CPU, µs per request; absent when they are not visible here. */
  pgUs?: number;
  /** Sale journals committed per request, and PostgreSQL CPU per journal. */
  journalsPerReq?: number;
  pgUsPerJournal?: number;
}

/** The median of each figure over a target's runs (undefined unless every run has one). */
export const medTier = (xs: Array<{ tier?: TierCost }>): TierCost | undefined => {
  if (!xs.every((x) => x.tier)) return undefined;
  const ts = xs.map((x) => x.tier!);
  const m = (k: 'pgUs' | 'journalsPerReq' | 'pgUsPerJournal') =>
    ts.every((t) => t[k] !== undefined) ? { [k]: median(ts.map((t) => t[k]!)) } : {};
  return {
    redisUs: median(ts.map((t) => t.redisUs)),
    redisCmds: median(ts.map((t) => t.redisCmds)),
    redisScriptCalls: median(ts.map((t) => t.redisScriptCalls)),
    redisScriptUs: median(ts.map((t) => t.redisScriptUs)),
    redisPerCmd: Object.fromEntries(
      [...new Set(ts.flatMap((t) => Object.keys(t.redisPerCmd)))].map((c) => [
        c,
        median(ts.map((t) => t.redisPerCmd[c] ?? 0)),
      ]),
    ),
    ...m('pgUs'),
    ...m('journalsPerReq'),
    ...m('pgUsPerJournal'),
  };
};
/** Redis server CPU (seconds, all threads) and per-command calls / usec, from INFO. */
export async function redisStats(
  r: Redis,
): Promise<{ cpuS: number; cmds: Map<string, { calls: number; usec: number }> }> {
  const [cpu, cs] = await Promise.all([r.info('cpu'), r.info('commandstats')]);
  const num = (k: string) => Number(new RegExp(`^${k}:([\\d.]+)`, 'm').exec(cpu)?.[1] ?? 0);
  const cmds = new Map<string, { calls: number; usec: number }>();
  for (const m of cs.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm))
    cmds.set(m[1]!, { calls: Number(m[2]), usec: Number(m[3]) });
  return { cpuS: num('used_cpu_sys') + num('used_cpu_user'), cmds };
}

/**
 * CPU (ms) used so far by each PostgreSQL server process on this machine (comm starting 'postgres'),
 * by pid: a backend that starts during a run counts from zero, one that ends loses only its last slice.
 * Null when none is visible (the server runs elsewhere, or /proc hides other users' processes).
 */
export function pgCpu(): Map<number, number> | null {
  const out = new Map<number, number>();
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return null;
  }
  for (const d of pids) {
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      if (!comm.startsWith('postgres')) continue;
      const f = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
      out.set(Number(d), ((Number(f[11]) + Number(f[12])) * 1000) / 100);
    } catch {
      // gone between the listing and the read, or not ours to read
    }
  }
  return out.size ? out : null;
}
export const pgDelta = (a: Map<number, number>, b: Map<number, number>) => {
  let ms = 0;
  for (const [pid, v] of b) ms += v - (a.get(pid) ?? 0);
  return ms;
};
