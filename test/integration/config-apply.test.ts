/**
 * `anima apply` against real PostgreSQL: one transaction (a file whose second change is refused writes
 * nothing, not even its valid first change), and a dry run that refuses what the apply refuses, in the
 * same words, while writing nothing itself.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigAdmin, type Invalidation } from '../../src/config/admin.js';
import { applyPlan, parseConfigDoc, planApply } from '../../src/config/config-file.js';
import type { DbHandle } from '../../src/store/db.js';
import { createTestDatabase, openTestDb, type TestDatabase } from '../helpers.js';

let tdb: TestDatabase;
let dbh: DbHandle;
let admin: ConfigAdmin;
const published: Invalidation[] = [];
const actor = { id: 't', name: 'test', role: 'admin' as const };
const readCredential = async () => null;

const BASE = `
apiVersion: anima/v1
channels:
  - code: oa
    provider: openai
    base_url: https://api.openai.com/v1
aliases:
  - name: gpt
    chain:
      - targets: [{ channel: oa, model: gpt-4o }]
`;

/** Every row of the config tables and the audit log: what "nothing changed" compares. */
async function snapshot() {
  const out: Record<string, unknown[]> = {};
  for (const t of ['channel', 'alias', 'app', 'quota', 'price', 'token_group', 'audit_log'] as const)
    out[t] = await dbh.db.selectFrom(t).selectAll().orderBy('id').execute();
  return out;
}

/** The apply's refusal of a file, as the dry run or the real run. */
async function refusal(text: string, dryRun: boolean): Promise<string> {
  const plan = await planApply(admin, parseConfigDoc(text), {}, readCredential);
  const err = await applyPlan(admin, actor, plan, { dryRun }).then(
    () => null,
    (e: Error) => e,
  );
  expect(err, `${dryRun ? 'dry run' : 'apply'} should refuse:\n${text}`).toBeInstanceOf(Error);
  return err!.message;
}

beforeAll(async () => {
  tdb = await createTestDatabase();
  dbh = await openTestDb(tdb.url);
  admin = new ConfigAdmin(dbh.db, async (inv) => void published.push(inv));
  await applyPlan(admin, actor, await planApply(admin, parseConfigDoc(BASE), {}, readCredential));
}, 60_000);
afterAll(async () => {
  await dbh?.close();
  await tdb?.drop();
});

describe('anima apply on PostgreSQL', () => {
  it('is one transaction: a valid first change and a refused second one leave everything as it was', async () => {
    const before = await snapshot();
    const pubs = published.length;
    // first: a valid change to an existing row and a new channel; second: an alias naming no channel
    const text =
      BASE.replace('model: gpt-4o', 'model: gpt-4.1') +
      `  - name: bad\n    chain:\n      - targets: [{ channel: nowhere, model: m }]\n`;
    const plan = await planApply(admin, parseConfigDoc(text), {}, readCredential);
    expect(plan.map((c) => `${c.op} ${c.entity} ${c.key}`)).toEqual(['update alias gpt', 'create alias bad']);
    await expect(applyPlan(admin, actor, plan)).rejects.toThrow(
      'aliases bad: chain names unknown channel(s): nowhere',
    );
    expect(await snapshot()).toEqual(before);
    expect(published.length).toBe(pubs); // nothing was announced either
  });

  it('the dry run refuses what the apply refuses, with the same message', async () => {
    const files = [
      // an alias naming an unknown channel
      BASE + `  - name: bad\n    chain:\n      - targets: [{ channel: nowhere, model: m }]\n`,
      // a weight that is not a number, on a new channel and on an existing one
      BASE + `  - name: w\n    chain:\n      - targets: [{ channel: oa, model: m, weight: abc }]\n`,
      BASE.replace(
        'base_url: https://api.openai.com/v1',
        'base_url: https://api.openai.com/v1\n    weight: abc',
      ),
      // a settings key the channel doesn't know
      BASE.replace(
        'base_url: https://api.openai.com/v1',
        'base_url: https://api.openai.com/v1\n    settings: { timeouts: { connectMs: -1 } }',
      ),
    ];
    const before = await snapshot();
    const messages: string[] = [];
    for (const f of files) {
      const dry = await refusal(f, true);
      expect(await refusal(f, false)).toBe(dry);
      messages.push(dry);
    }
    expect(messages).toEqual([
      'aliases bad: chain names unknown channel(s): nowhere',
      'aliases w: chain[0].targets[0].weight: must be an integer in [0, 1000000]',
      'channels oa: weight: must be an integer in [0, 1000000]',
      'channels oa: settings.timeouts.connectMs: must be a number in [1, 600000]',
    ]);
    expect(await snapshot()).toEqual(before);
  });

  it('a dry run of a valid file passes every check and writes nothing; the apply then writes it', async () => {
    const text = BASE + `apps:\n  - id: app_acme\n    name: Acme\n`;
    const plan = await planApply(admin, parseConfigDoc(text), {}, readCredential);
    expect(plan.map((c) => `${c.op} ${c.entity}`)).toEqual(['create app']);
    const before = await snapshot();
    await applyPlan(admin, actor, plan, { dryRun: true });
    expect(await snapshot()).toEqual(before);
    const pubs = published.length;
    await applyPlan(admin, actor, plan);
    expect((await admin.get('app', 'app_acme')).name).toBe('Acme');
    expect(published.slice(pubs)).toEqual([{ table: 'app', key: 'app_acme' }]);
  });
});
