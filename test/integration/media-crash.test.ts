/**
 * Media tasks survive a SIGKILL: 20 tasks in flight on a gateway process that is killed; a restarted
 * instance takes them over when their (short) leases lapse. Every task reaches one final state exactly
 * once, each succeeded task is billed exactly once, nothing else is billed, and the ledger balances.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type FakeMediaUpstream, startFakeJobs } from '../../fakes/index.js';
import {
  REDIS_URL,
  type TestDatabase,
  adminApi,
  cleanupRedis,
  createTestDatabase,
  spawnGateway,
  startTestGateway,
  testRedisPrefix,
  waitFor,
  testPool,
} from '../helpers.js';

let tdb: TestDatabase;
let prefix: string;
let jobs: FakeMediaUpstream;
let sk: string;

beforeAll(async () => {
  tdb = await createTestDatabase();
  prefix = testRedisPrefix();
  jobs = await startFakeJobs({ name: 'crash-jobs' });
  const A = await startTestGateway({ databaseUrl: tdb.url, redisUrl: REDIS_URL, redisPrefix: prefix });
  try {
    const admin = adminApi(() => A.url);
    await admin('POST', '/channels', {
      code: 'jobs',
      provider: 'jobs',
      base_url: jobs.url + '/v1',
      credential: 'k',
    });
    await admin('POST', '/aliases', {
      name: 'suno',
      chain: [{ targets: [{ channel: 'jobs', model: 'chirp' }] }],
    });
    await admin('POST', '/prices', { alias: 'suno', sale_per_track: 30_000, cost_per_track: 10_000 });
    const app = (await admin('POST', '/apps', { name: 'crash', billing: 'prepaid' })).id as string;
    await admin('POST', `/apps/${app}/wallet/fund`, { amount_micros: '100000000' });
    sk = (await admin('POST', `/apps/${app}/keys`, { name: 'k' })).sk as string;
  } finally {
    await A.close();
  }
}, 60_000);

afterAll(async () => {
  await jobs?.close();
  await cleanupRedis(prefix);
  await tdb?.drop();
});

it('kill -9 with 20 tasks in flight: after restart each reaches a final state once and is billed at most once', async () => {
  const env = {
    DATABASE_URL: tdb.url,
    REDIS_URL,
    ANIMA_REDIS_PREFIX: prefix,
    ANIMA_TASK_LEASE_MS: '1500',
    ANIMA_MEDIA_POLL_MS: '50',
    ANIMA_MEDIA_POLL_CAP_MS: '200',
    ANIMA_TASK_POLL_MS: '100',
  };
  const { child, url: urlP } = spawnGateway(env);
  const url = await urlP;
  jobs.book.setMedia({ jobMs: 2_500, pollLatencyMs: 10 });
  const ids: string[] = [];
  for (let i = 0; i < 20; i++) {
    const r = await fetch(url + '/v1/music', {
      method: 'POST',
      headers: { authorization: `Bearer ${sk}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'suno', prompt: `song ${i}` }),
    });
    expect(r.status).toBe(202);
    ids.push(((await r.json()) as { id: string }).id);
  }
  // Let the killed instance get them going: submitted upstream, some polled.
  await waitFor(() => jobs.book.mediaStats.submits >= 15, 10_000, 20);
  child.kill('SIGKILL');
  await new Promise((r) =>
    child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r),
  );
  const submitsAtKill = jobs.book.mediaStats.submits;

  const B = await startTestGateway({
    databaseUrl: tdb.url,
    redisUrl: REDIS_URL,
    redisPrefix: prefix,
    taskLeaseMs: 1_500,
  });
  const db = testPool(tdb.url, 1);
  try {
    await waitFor(
      async () => {
        const { rows } = await db.query(
          `SELECT count(*)::int AS n FROM task WHERE id = ANY($1) AND status IN ('succeeded', 'failed', 'cancelled', 'expired')`,
          [ids],
        );
        return rows[0].n === 20;
      },
      30_000,
      100,
    );
    await B.billing!.writer.flush();
    const { rows: tasks } = await db.query(
      `SELECT id, status, transitions, billing_state FROM task WHERE id = ANY($1)`,
      [ids],
    );
    for (const t of tasks) {
      expect(t.status).toBe('succeeded');
      const finals = (t.transitions as Array<{ status: string }>).filter((x) =>
        ['succeeded', 'failed', 'cancelled', 'expired'].includes(x.status),
      );
      expect(finals, t.id).toHaveLength(1);
      expect(t.billing_state).toBe('done');
    }
    const { rows: js } = await db.query(
      `SELECT task_id, count(*)::int AS n FROM ledger_journal WHERE task_id = ANY($1) GROUP BY task_id`,
      [ids],
    );
    expect(js).toHaveLength(20);
    for (const j of js) expect(j.n).toBe(1);
    // A task whose submit the kill interrupted may be submitted again (at-least-once upstream); no task is lost.
    expect(jobs.book.mediaStats.submits).toBeGreaterThanOrEqual(20);
    console.log(
      `[media-crash] submits at kill ${submitsAtKill}, total submits ${jobs.book.mediaStats.submits}, max concurrent polls of one job ${jobs.book.mediaStats.maxConcurrentPolls}`,
    );
    const w = await fetch(`${B.url}/api/admin/v1/billing/trial-balance`, {
      headers: { authorization: 'Bearer ak-test-admin-token-0123456789' },
    });
    const tb = (await w.json()) as { balanced: boolean; mismatches: unknown[] };
    expect(tb.mismatches).toEqual([]);
    expect(tb.balanced).toBe(true);
  } finally {
    await db.end();
    await B.close();
  }
}, 90_000);
