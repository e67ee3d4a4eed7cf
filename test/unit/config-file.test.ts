/**
 * anima apply / export: idempotent, diff-exact, secret-free, through the versioned write path.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigAdmin } from '../../src/config/admin.js';
import {
  applyPlan,
  exportConfig,
  formatPlan,
  parseConfigDoc,
  planApply,
} from '../../src/config/config-file.js';
import type { DbHandle } from '../../src/store/db.js';
import { openTestDb } from '../helpers.js';

let dbh: DbHandle;
let admin: ConfigAdmin;
const published: unknown[] = [];
const actor = { id: 't', name: 'test', role: 'admin' as const };
const env = { OPENAI_KEY: 'sk-upstream-secret-1' };
const readCredential = async (code: string) =>
  (await dbh.db.selectFrom('channel').select('credential').where('code', '=', code).executeTakeFirst())
    ?.credential ?? null;

const FILE = `
apiVersion: anima/v1
channels:
  - code: oai
    provider: openai
    base_url: https://api.openai.com/v1
    credential_env: OPENAI_KEY
    settings: { timeouts: { firstByteMs: 20000 }, breaker: { minCalls: 5 } }
token_groups:
  - id: gold
    name: Gold
    price_multiplier_ppm: 900000
aliases:
  - name: gpt
    chain:
      - targets: [{ channel: oai, model: gpt-4o }]
    max_attempts: 2
apps:
  - id: app_acme
    name: Acme
quotas:
  - scope: app
    scope_id: app_acme
    qps: 50
    cost_per_day: 5000000
prices:
  - alias: gpt
    sale_input_per_mtok: 2500000
    cost_input_per_mtok: 2000000
`;

beforeAll(async () => {
  dbh = await openTestDb(undefined);
  admin = new ConfigAdmin(dbh.db, async (inv) => void published.push(inv));
}, 60_000);
afterAll(async () => dbh?.close());

describe('anima apply', () => {
  it('creates everything, then a second apply of the same file changes nothing and bumps no version', async () => {
    const doc = parseConfigDoc(FILE);
    const plan = await planApply(admin, doc, env, readCredential);
    expect(plan.map((c) => `${c.op} ${c.entity}`)).toEqual([
      'create channel',
      'create token_group',
      'create alias',
      'create app',
      'create quota',
      'create price',
    ]);
    expect(formatPlan(plan)).not.toContain('sk-upstream-secret-1');
    await applyPlan(admin, actor, plan);
    const again = await planApply(admin, doc, env, readCredential);
    expect(formatPlan(again)).toBe('no changes');
    expect((await admin.get('channel', 'oai')).version_no).toBe(1);
    expect((await admin.get('alias', 'gpt')).version_no).toBe(1);
  });

  it('one changed field: exactly that diff, and that row alone moves one version', async () => {
    const doc = parseConfigDoc(FILE.replace('max_attempts: 2', 'max_attempts: 4'));
    const plan = await planApply(admin, doc, env, readCredential);
    expect(plan).toHaveLength(1);
    expect(formatPlan(plan)).toBe('~ alias gpt: max_attempts 2 -> 4');
    await applyPlan(admin, actor, plan);
    expect((await admin.get('alias', 'gpt')).version_no).toBe(2);
    expect((await admin.get('channel', 'oai')).version_no).toBe(1);
    // a rotated credential shows as changed, never as its value
    const rot = await planApply(admin, doc, { OPENAI_KEY: 'sk-upstream-secret-2' }, readCredential);
    expect(formatPlan(rot)).toBe('~ channel oai: credential "(secret)" -> "(changed)"');
  });

  it('refuses secrets in clear, unknown sections and fields, and a missing environment variable', async () => {
    expect(() =>
      parseConfigDoc('apiVersion: anima/v1\nchannels:\n  - code: x\n    credential: sk-123\n'),
    ).toThrow(/secrets never go in the file/);
    expect(() => parseConfigDoc('apiVersion: anima/v1\nkeys: []\n')).toThrow(/unknown section 'keys'/);
    expect(() => parseConfigDoc('apiVersion: anima/v1\napps:\n  - id: a\n    colour: red\n')).toThrow(
      /colour is not a field/,
    );
    await expect(planApply(admin, parseConfigDoc(FILE), {}, readCredential)).rejects.toThrow(
      /OPENAI_KEY is not set/,
    );
  });

  it('no phantom diffs or duplicates: a trailing slash, an app without id, a channel that only has a scheduled version', async () => {
    const slash = parseConfigDoc(
      FILE.replace('https://api.openai.com/v1', 'https://api.openai.com/v1/').replace(
        'max_attempts: 2',
        'max_attempts: 4',
      ),
    );
    expect(formatPlan(await planApply(admin, slash, env, readCredential))).toBe('no changes');
    expect(() => parseConfigDoc('apiVersion: anima/v1\napps:\n  - name: nameless\n')).toThrow(
      /id is required/,
    );
    expect(() =>
      parseConfigDoc(
        'apiVersion: anima/v1\nchannels:\n  - code: x\n    settings: { headers: { x-key: sk-anima-abc } }\n',
      ),
    ).toThrow(/secrets never go in the file/);
    const later = new Date(Date.now() + 3_600_000).toISOString();
    await admin.create(actor, 'channel', {
      code: 'future',
      provider: 'openai',
      base_url: 'https://example.com/v1',
      effective_from: later,
    });
    const doc = parseConfigDoc(
      'apiVersion: anima/v1\nchannels:\n  - code: future\n    provider: openai\n    base_url: https://example.com/v2\n',
    );
    const plan = await planApply(admin, doc, env, readCredential);
    expect(formatPlan(plan)).toBe(
      '~ channel future: base_url "https://example.com/v1" -> "https://example.com/v2"',
    );
    await applyPlan(admin, actor, plan);
    expect((await admin.versions('channel', 'future')).length).toBe(1);
  });

  it('export -> apply is a round trip with no changes, and holds no secret', async () => {
    const text = await exportConfig(admin);
    expect(text).not.toContain('sk-upstream');
    expect(text).toContain('credential_env: ANIMA_CHANNEL_OAI_CREDENTIAL');
    const plan = await planApply(
      admin,
      parseConfigDoc(text),
      { ANIMA_CHANNEL_OAI_CREDENTIAL: 'sk-upstream-secret-1' },
      readCredential,
    );
    expect(formatPlan(plan)).toBe('no changes');
  });

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
      expect(badDry.stderr).toContain(
        'anima: apply refused, nothing written: aliases gpt: chain names unknown channel(s): nowhere\n',
      );
      expect(badApply.stderr).toBe(badDry.stderr);
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
