/**
 * The overhead benchmark still runs end to end (a short smoke run: CI timing is noise, so no targets).
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { PG_ADMIN_URL, REDIS_URL } from '../helpers.js';

const pgVisible = () =>
  readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .some((d) => {
      try {
        return readFileSync(`/proc/${d}/comm`, 'utf8').startsWith('postgres');
      } catch {
        return false;
      }
    });

describe('bench/overhead smoke', () => {
  it('prints its table and a JSON line with real measurements', () => {
    const r = spawnSync(
      process.execPath,
      ['dist/bench/overhead.js', '--duration', '1', '--rounds', '1', '--connections', '10', '--rate', '200'],
      {
        env: { ...process.env, DATABASE_URL: PG_ADMIN_URL, REDIS_URL },
        encoding: 'utf8',
        timeout: 110_000,
      },
    );
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(r.stdout).toContain('scenario | direct | raw proxy | gateway');
    const j = JSON.parse(lines.at(-1)!) as Record<string, number | string>;
    console.log(lines.slice(-4).join('\n'));
    for (const k of [
      'json_ratio',
      'stream_ratio',
      'rss_mb',
      'json_rps',
      'billing_off_json_rps',
      'journals_per_s',
    ]) {
      expect(typeof j[k], k).toBe('number');
      expect(j[k] as number, k).toBeGreaterThan(0);
    }
    for (const k of [
      'added_p50_ms',
      'added_p99_ms',
      'fallback_added_p99_ms',
      'fallback_fast_fail_added_p99_ms',
    ])
      expect(typeof j[k], k).toBe('number');
    // The shared tier's cost beside the gateway's: a row per gateway target, every figure a number >= 0.
    expect(r.stdout).toContain('Redis CPU µs/req');
    for (const k of [
      'json_redis_cpu_us_per_req',
      'json_redis_cmds_per_req',
      'json_redis_script_us_per_req',
      // PostgreSQL's CPU is read from its processes: only when it runs where /proc shows them.
      ...(pgVisible() ? ['json_pg_cpu_us_per_req', 'json_pg_cpu_us_per_journal'] : []),
      'many_redis_cpu_us_per_req',
      'near_redis_cpu_us_per_req',
      'near_rejected',
    ]) {
      expect(typeof j[k], k).toBe('number');
      expect(j[k] as number, k).toBeGreaterThanOrEqual(0);
    }
    // Admission ran, so each request made Redis calls; the billed gateway wrote journals, so PostgreSQL worked.
    expect(j.json_redis_cmds_per_req as number).toBeGreaterThan(0);
    if (pgVisible()) expect(j.json_pg_cpu_us_per_journal as number).toBeGreaterThan(0);
    const rows = lines.filter((l) => /^json(-many|-near)? \| (gateway|billing off) \| /.test(l));
    expect(rows.length).toBe(6);
    for (const row of rows) {
      const cells = row.split(' | ').slice(2, 9);
      for (const c of cells)
        for (const v of c.split(', ')) if (v !== '-') expect(Number(v), row).toBeGreaterThanOrEqual(0);
    }
    expect(j.gateway_errors).toBe(0);
    expect(j.mode).toBe('PostgreSQL + Redis, one gateway process');
  }, 120_000);
});
