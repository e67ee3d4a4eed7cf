/**
 * `anima apply` through the built CLI, on the embedded default: the dry run refuses what the apply refuses
 * with the same message, writes nothing, and a second apply finds no changes.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFIG_ENV as env, CONFIG_FILE as FILE } from '../fixtures/config-file.js';

describe('anima apply (CLI)', () => {
  it('the CLI: apply --dry-run prints the plan, refuses what apply refuses, writes nothing; apply twice says no changes', () => {
    const dir = mkdtempSync(join(tmpdir(), 'anima-apply-'));
    try {
      const f = join(dir, 'anima.yaml');
      writeFileSync(f, FILE);
      const run = (...a: string[]) =>
        spawnSync(process.execPath, ['dist/src/app/cli.js', ...a], {
          env: { ...process.env, ...env, DATABASE_URL: '', REDIS_URL: '', ANIMA_DATA_DIR: join(dir, 'db') },
          encoding: 'utf8',
          timeout: 60_000,
        });
      // an alias naming a channel the file doesn't have: the dry run refuses it as the apply does
      const bad = join(dir, 'bad.yaml');
      writeFileSync(bad, FILE.replace('{ channel: oai, model: gpt-4o }', '{ channel: nowhere, model: m }'));
      const badDry = run('apply', '-f', bad, '--dry-run');
      const badApply = run('apply', '-f', bad);
      expect([badDry.status, badApply.status]).toEqual([1, 1]);
      // (the first run also says which migrations it ran, on the same stream)
      const refusal = (e: string) => e.replace(/^anima: (preparing the database| {2}\[\d+\/\d+\]).*\n/gm, '');
      expect(refusal(badDry.stderr)).toBe(
        'anima: apply refused, nothing written: aliases gpt: chain names unknown channel(s): nowhere\n',
      );
      expect(refusal(badApply.stderr)).toBe(refusal(badDry.stderr));
      const dry = run('apply', '-f', f, '--dry-run');
      expect(dry.status, dry.stderr).toBe(0);
      expect(dry.stdout).toContain('+ channel oai (create)');
      expect(dry.stdout).toContain('dry run: 6 change(s) pass every check; nothing written');
      expect(run('apply', '-f', f, '--dry-run').stdout).toContain('+ channel oai (create)'); // nothing was written
      expect(run('apply', '-f', f).stdout).toContain('applied 6 change(s)');
      expect(run('apply', '-f', f).stdout.trim()).toBe('no changes');
      expect(run('export').stdout).toContain('name: gpt');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 240_000);
});
