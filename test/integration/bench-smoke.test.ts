/**
 * The overhead benchmark still runs end to end (a short smoke run: CI timing is noise, so no targets).
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { PG_ADMIN_URL, REDIS_URL } from '../helpers.js';

describe('bench/overhead smoke', () => {
  it('prints its table and a JSON line with real measurements', () => {
    const r = spawnSync(process.execPath, ['dist/bench/overhead.js', '--duration', '1', '--rounds', '1', '--connections', '10'], {
      env: { ...process.env, DATABASE_URL: PG_ADMIN_URL, REDIS_URL },
      encoding: 'utf8',
      timeout: 90_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(r.stdout).toContain('scenario | direct rps');
    const j = JSON.parse(lines.at(-1)!) as Record<string, number | string>;
    console.log(lines.slice(-5).join('\n'));
    for (const k of ['json_ratio_vs_direct', 'stream_ratio_vs_direct', 'json_ratio_vs_raw_proxy', 'stream_ratio_vs_raw_proxy']) {
      expect(typeof j[k]).toBe('number');
      expect(j[k] as number).toBeGreaterThan(0);
    }
    expect(j.quota_json_rps as number).toBeGreaterThan(0);
    expect(r.stdout).toContain('gateway + quota admission rps');
    expect(j.gateway_errors).toBe(0);
    expect(j.mode).toBe('PostgreSQL + Redis');
  }, 120_000);
});
