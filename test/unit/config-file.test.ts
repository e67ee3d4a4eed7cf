/**
 * anima apply / export: idempotent, diff-exact, secret-free, through the versioned write path.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigAdmin } from '../../src/config/admin.js';
import {
  applyPlan,
  exportConfig,
  formatPlan,
  parseConfigDoc,
  planApply,
  isPlaceholder,
} from '../../src/config/config-file.js';
import type { DbHandle } from '../../src/store/db.js';
import { CONFIG_ENV, CONFIG_FILE } from '../fixtures/config-file.js';
import { openTestDb } from '../helpers.js';

let dbh: DbHandle;
let admin: ConfigAdmin;
const published: unknown[] = [];
const actor = { id: 't', name: 'test', role: 'admin' as const };
const env = CONFIG_ENV;
const FILE = CONFIG_FILE;
const readCredential = async (code: string) =>
  (await dbh.db.selectFrom('channel').select('credential').where('code', '=', code).executeTakeFirst())
    ?.credential ?? null;

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
    // a new channel can't be made without its credential
    await expect(
      planApply(admin, parseConfigDoc(FILE.replace(/code: oai\b/, 'code: oai-new')), {}, readCredential),
    ).rejects.toThrow(/OPENAI_KEY is not set \(a new channel needs its credential\)/);
  });

  it('an export re-applied without its secrets keeps the stored credentials; a placeholder never replaces one', async () => {
    const stored = await readCredential('oai');
    expect(stored).toBeTruthy();
    // unset: the existing channel keeps its credential, and the plan has nothing to say about it
    const kept = await planApply(admin, parseConfigDoc(FILE), {}, readCredential);
    expect(kept.filter((c) => c.entity === 'channel')).toEqual([]);
    for (const placeholder of ['', 'changeme', 'REPLACE_ME', '<your key>', '${OPENAI_KEY}', '***', '(set)'])
      await expect(
        planApply(admin, parseConfigDoc(FILE), { OPENAI_KEY: placeholder }, readCredential),
      ).rejects.toThrow(/holds a placeholder/);
    expect(await readCredential('oai')).toBe(stored);
    expect(isPlaceholder('sk-live-abc123')).toBe(false);
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
});
