/**
 * The overhead benchmark still runs end to end (a short smoke run: CI timing is noise, so no targets).
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { PG_ADMIN_URL, REDIS_URL } from '../helpers.js';

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
    expect(j.gateway_errors).toBe(0);
    expect(j.mode).toBe('PostgreSQL + Redis, one gateway process');
  }, 120_000);
});
