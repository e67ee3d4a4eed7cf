/**
 * Metrics an operator can run on: after a scripted mix of traffic the scrape (parsed with a real
 * Prometheus text parser) holds the expected counts and states; every metric the dashboards query
 * exists; each dashboard has Grafana's shape; a scrape with a large config stays cheap.
 */
import type { SlicedQuota } from '../../src/quota/slices.js';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
// @ts-expect-error: the package ships no types
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { Metrics } from '../../src/observability/metrics.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import {
  ADMIN_TOKEN,
  REDIS_URL,
  type TestDatabase,
  cleanupRedis,
  createTestDatabase,
  startTestGateway,
  testRedisPrefix,
  waitFor,
} from '../helpers.js';

type Family = {
  name: string;
  type: string;
  metrics: Array<{
    labels?: Record<string, string>;
    value?: string;
    buckets?: Record<string, string>;
    count?: string;
  }>;
};
let tdb: TestDatabase;
let prefix: string;
let G: Awaited<ReturnType<typeof startTestGateway>>;
let up: FakeUpstream;
let broken: FakeUpstream;
let sk: string;
let asyncSk: string;

async function admin(method: string, path: string, body?: unknown) {
  const r = await fetch(`${G.url}/api/admin/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  const t = await r.text();
  if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${t}`);
  return t ? (JSON.parse(t) as any) : null;
}
const chat = (key: string, model = 'main') =>
  fetch(G.url + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'metrics please' }] }),
  });

async function scrape(): Promise<Map<string, Family>> {
  const text = await (await fetch(G.url + '/actuator/prometheus')).text();
  const fams = parsePrometheusTextFormat(text) as Family[];
  return new Map(fams.map((f) => [f.name, f]));
}
/** A histogram's `_count` series with their labels (the text parser drops a histogram's labels). */
function histogramCounts(text: string, name: string): Array<{ labels: Record<string, string>; n: number }> {
  const out: Array<{ labels: Record<string, string>; n: number }> = [];
  for (const m of text.matchAll(new RegExp(`^${name}_count\\{([^}]*)\\} (\\S+)$`, 'gm'))) {
    const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1]!, l[2]!]));
    out.push({ labels, n: Number(m[2]) });
  }
  return out;
}
const countOf = (text: string, name: string, match: Record<string, string>) =>
  histogramCounts(text, name)
    .filter((c) => Object.entries(match).every(([k, v]) => c.labels[k] === v))
    .reduce((a, c) => a + c.n, 0);
const sum = (f: Family | undefined, match: Record<string, string> = {}) =>
  (f?.metrics ?? [])
    .filter((m) => Object.entries(match).every(([k, v]) => m.labels?.[k] === v))
    .reduce((a, m) => a + Number(m.value ?? m.count ?? 0), 0);

beforeAll(async () => {
  tdb = await createTestDatabase();
  prefix = testRedisPrefix();
  up = await startFakeOpenAI({ name: 'o' });
  broken = await startFakeOpenAI({ name: 'broken' });
  broken.setFault({ status: 500 });
  G = await startTestGateway(
    { databaseUrl: tdb.url, redisUrl: REDIS_URL, redisPrefix: prefix },
    { defaultMetrics: true },
  );
  const fast = { breaker: { minCalls: 2, failureRate: 0.5, openMs: 60_000 } };
  await admin('POST', '/channels', {
    code: 'bad',
    provider: 'openai',
    base_url: broken.url + '/v1',
    credential: 'k',
    settings: fast,
  });
  await admin('POST', '/channels', {
    code: 'good',
    provider: 'openai',
    base_url: up.url + '/v1',
    credential: 'k',
  });
  await admin('POST', '/aliases', { name: 'main', chain: [{ targets: [{ channel: 'good', model: 'm' }] }] });
  await admin('POST', '/aliases', {
    name: 'flaky',
    chain: [{ targets: [{ channel: 'bad', model: 'fail' }] }, { targets: [{ channel: 'good', model: 'm' }] }],
  });
  const app = await admin('POST', '/apps', { name: 'obs' });
  const k = await admin('POST', `/apps/${app.id}/keys`, { name: 'k' });
  sk = k.sk;
  await admin('POST', '/quotas', { scope: 'key', scope_id: k.key.id, qps: 2, qps_burst: 0 });
  const ak = await admin('POST', `/apps/${app.id}/keys`, { name: 'async', queue_mode: 'ASYNC' });
  asyncSk = ak.sk;
  await admin('POST', '/quotas', { scope: 'key', scope_id: ak.key.id, max_concurrency: 1 });
  await admin('POST', '/prices', {
    alias: 'main',
    sale_input_per_mtok: 3_000_000,
    sale_output_per_mtok: 6_000_000,
    cost_input_per_mtok: 1_000_000,
    cost_output_per_mtok: 2_000_000,
  });
  await waitFor(() => !!G.config.alias('flaky') && !!G.config.price('main', null), 2_000);
}, 60_000);

afterAll(async () => {
  await G?.close();
  await up?.close();
  await broken?.close();
  await cleanupRedis(prefix);
  await tdb?.drop();
});

describe('metrics after a scripted mix of traffic', () => {
  it('from start: a breaker state per configured channel (in step with config), labelled counters at 0', async () => {
    const m = await scrape();
    const channels = G.config.channelCodes();
    expect(channels).toEqual(['bad', 'good']);
    // Before any traffic or transition, every configured channel is there, closed.
    for (const c of channels) {
      expect(m.get('anima_breaker_state')?.metrics.some((x) => x.labels?.channel === c)).toBe(true);
      expect(sum(m.get('anima_breaker_state'), { channel: c })).toBe(0);
    }
    // The series the dashboards rate() exist at 0 before their first event.
    const has = (name: string, labels: Record<string, string>) =>
      m.get(name)?.metrics.some((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
    expect(has('anima_quota_rejections_total', { limit: 'qps', mode: 'REJECT' })).toBe(true);
    expect(has('anima_quota_rejections_total', { limit: 'queue_full', mode: 'WAIT' })).toBe(true);
    expect(sum(m.get('anima_quota_rejections_total'))).toBe(0);
    expect(has('anima_billing_refusals_total', { reason: 'unavailable' })).toBe(true);
    expect(has('anima_billing_refusals_total', { reason: 'insufficient_balance' })).toBe(true);
    expect(has('anima_redis_data_loss_total', { reason: 'epoch' })).toBe(true);
    expect(has('anima_redis_data_loss_total', { reason: 'server' })).toBe(true);
    expect(has('anima_tasks_total', { kind: 'chat', state: 'succeeded' })).toBe(true);
    expect(has('anima_tasks_total', { kind: 'video', state: 'failed' })).toBe(true);
    expect(has('anima_webhook_deliveries_total', { result: 'failed' })).toBe(true);
    expect(sum(m.get('anima_tasks_total'))).toBe(0);

    // A channel added later appears (closed); once removed, it disappears.
    const late = (await admin('POST', '/channels', {
      code: 'late',
      provider: 'openai',
      base_url: up.url + '/v1',
      credential: 'k',
    })) as { version_no: number };
    await waitFor(
      async () =>
        (await scrape()).get('anima_breaker_state')!.metrics.some((x) => x.labels?.channel === 'late'),
      5_000,
      50,
    );
    const del = await fetch(`${G.url}/api/admin/v1/channels/late`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'if-match': `"${late.version_no}"` },
    });
    expect(del.status).toBe(204);
    await waitFor(
      async () =>
        !(await scrape()).get('anima_breaker_state')!.metrics.some((x) => x.labels?.channel === 'late'),
      5_000,
      50,
    );
  });

  it('count successes, fallbacks, quota rejections, breaker states and async tasks', async () => {
    // The key's QPS pacing is part of what is counted, so the next request waits real time: exactly as long
    // as the gateway says (x-ratelimit-reset-requests on an answer, retry-after-ms on a refusal).
    const nextSlot = async (r: Response, header: string) => {
      const ms = Number.parseInt(r.headers.get(header) ?? '', 10);
      if (!Number.isFinite(ms)) throw new Error(`no ${header} header`);
      await new Promise((res) => setTimeout(res, ms + 1));
    };
    const r1 = await chat(sk);
    expect(r1.status).toBe(200); // ok
    await nextSlot(r1, 'x-ratelimit-reset-requests');
    expect((await chat(sk)).status).toBe(200);
    const r3 = await chat(sk);
    expect(r3.status).toBe(429); // qps 2, no burst: the third right away is refused
    await nextSlot(r3, 'retry-after-ms');
    const r4 = await chat(sk, 'flaky');
    expect(r4.headers.get('x-anima-channel')).toBe('good'); // fallback
    await nextSlot(r4, 'x-ratelimit-reset-requests');
    expect((await chat(sk, 'flaky')).headers.get('x-anima-channel')).toBe('good'); // fallback; breaker 'bad' opens
    await admin('POST', '/circuits/good/open');
    await admin('POST', '/circuits/good/reset');
    up.setFault({ latencyMs: 300 });
    const holder = chat(asyncSk);
    await waitFor(() => up.stats.inFlight === 1, 5_000, 5); // the holder has the only slot
    const queued = await chat(asyncSk);
    expect(queued.status).toBe(202);
    const { task_id } = (await queued.json()) as { task_id: string };
    await (await holder).arrayBuffer();
    await waitFor(
      async () =>
        (
          (await (
            await fetch(`${G.url}/v1/tasks/${task_id}`, { headers: { authorization: `Bearer ${asyncSk}` } })
          ).json()) as { status: string }
        ).status === 'succeeded',
      10_000,
      50,
    );
    up.setFault(null);

    const m = await scrape();
    expect(sum(m.get('anima_requests_total'), { outcome: 'ok' })).toBeGreaterThanOrEqual(3);
    expect(sum(m.get('anima_requests_total'), { outcome: 'fallback' })).toBe(2);
    expect(sum(m.get('anima_requests_total'), { outcome: 'rejected', status_class: '4xx' })).toBe(1);
    expect(sum(m.get('anima_requests_total'), { outcome: 'queued' })).toBe(1);
    expect(sum(m.get('anima_quota_rejections_total'), { limit: 'qps', mode: 'REJECT' })).toBe(1);
    expect(sum(m.get('anima_upstream_attempts_total'), { channel: 'bad', result: 'server_error' })).toBe(2);
    expect(sum(m.get('anima_breaker_state'), { channel: 'bad' })).toBe(2); // open
    expect(sum(m.get('anima_breaker_state'), { channel: 'good' })).toBe(0); // forced open, then reset
    expect(sum(m.get('anima_breaker_transitions_total'), { channel: 'good', to: 'forced_open' })).toBe(1);
    expect(sum(m.get('anima_tasks_total'), { kind: 'chat', state: 'queued' })).toBe(1);
    expect(sum(m.get('anima_tasks_total'), { kind: 'chat', state: 'succeeded' })).toBe(1);
    expect(sum(m.get('anima_dependency_up'), { dependency: 'db' })).toBe(1);
    const sale = sum(m.get('anima_sale_micros_total'), { alias: 'main' });
    const cost = sum(m.get('anima_cost_micros_total'), { alias: 'main' });
    expect(sale).toBeGreaterThan(0);
    expect(sale).toBeGreaterThan(cost); // the spread is visible
    const line = G.logs.records().find((l) => l.alias === 'main' && l.saleMicros);
    expect(line).toMatchObject({
      reqId: expect.any(String),
      app: expect.any(String),
      key: expect.any(String),
      channel: 'good',
      attempts: 1,
      status: 200,
    });
    // Latency by channel and by app: the served requests' series carry both.
    const text = await (await fetch(G.url + '/actuator/prometheus')).text();
    const appId = line!.app as string;
    const D = 'anima_request_duration_seconds';
    expect(countOf(text, D, { alias: 'main', channel: 'good', app: appId })).toBeGreaterThanOrEqual(3);
    expect(countOf(text, D, { alias: 'flaky', channel: 'good', app: appId, outcome: 'fallback' })).toBe(2);
    expect(sum(m.get('anima_degraded'))).toBe(0);
    expect(sum(m.get('anima_config_invalidations_total'))).toBeGreaterThan(0);
    // Quota slices: the scrape reads the backend's own counts (this test's keys are small or paced, so
    // mostly exact; what matters is that the figures are the backend's).
    const sq = G.quota as SlicedQuota;
    expect(sum(m.get('anima_quota_slice_admissions_total'), { path: 'exact' })).toBe(sq.stats.remote);
    expect(sum(m.get('anima_quota_slice_admissions_total'), { path: 'local' })).toBe(sq.stats.local);
    expect(sq.stats.remote + sq.stats.local).toBeGreaterThan(0);
    expect(sum(m.get('anima_quota_slice_calls_total'))).toBe(sq.stats.sliceCalls);
    expect(sum(m.get('anima_quota_slices_held'))).toBe(sq.held());
    expect(m.has('process_cpu_user_seconds_total')).toBe(true); // default Node metrics keep their names
    for (const name of m.keys())
      if (!name.startsWith('process_') && !name.startsWith('nodejs_'))
        expect(name.startsWith('anima_')).toBe(true);
    const labels = JSON.stringify([...m.values()].flatMap((f) => f.metrics.map((x) => x.labels ?? {})));
    expect(labels).not.toContain('req_'); // no request ids
    expect(labels).not.toContain(sk);

    const ready = await (await fetch(G.url + '/actuator/health/readiness')).json();
    expect(ready).toMatchObject({
      status: 'UP',
      components: { db: { status: 'UP' }, coordination: { status: 'UP' }, migrations: { status: 'UP' } },
    });
  }, 30_000);

  it("every metric in every dashboard exists in a scrape; each dashboard has Grafana's shape", async () => {
    const m = await scrape();
    const files = readdirSync('dashboards').filter((f) => f.endsWith('.json'));
    expect(files.length).toBeGreaterThanOrEqual(5);
    for (const f of files) {
      const d = JSON.parse(readFileSync(`dashboards/${f}`, 'utf8')) as {
        uid: string;
        title: string;
        panels: Array<{
          datasource: unknown;
          targets: Array<{ expr: string; refId: string }>;
          gridPos: unknown;
          type: string;
        }>;
      };
      expect(typeof d.uid).toBe('string');
      expect(typeof d.title).toBe('string');
      expect(d.panels.length).toBeGreaterThan(0);
      for (const p of d.panels) {
        expect(p.datasource).toBeTruthy();
        expect(p.gridPos).toBeTruthy();
        expect(p.targets.length).toBeGreaterThan(0);
        for (const t of p.targets) {
          for (const metric of t.expr.match(/anima_[a-z_]+/g) ?? []) {
            const base = metric.replace(/_(bucket|sum|count)$/, '');
            expect(m.has(base), `${f}: ${metric}`).toBe(true);
          }
        }
      }
    }
  });

  it('every shipped alert rule is well formed and every metric it uses exists in a scrape', async () => {
    const m = await scrape();
    const doc = parseYaml(readFileSync('dashboards/alerts.yml', 'utf8')) as {
      groups: Array<{ name: string; rules: Array<Record<string, unknown>> }>;
    };
    expect(Array.isArray(doc.groups) && doc.groups.length > 0).toBe(true);
    const rules = doc.groups.flatMap((g) => g.rules);
    // The events operators are told about (README "Alerts and notifications") each have a rule.
    for (const a of [
      'AnimaJournalsNotWritten',
      'AnimaDegraded',
      'AnimaBreakerOpen',
      'AnimaBreakerFlapping',
      'AnimaChannelCredentialOut',
      'AnimaErrorRate',
      'AnimaBudgetThreshold',
      'AnimaBudgetExhausted',
    ])
      expect(rules.map((r) => r.alert)).toContain(a);
    expect(new Set(rules.map((r) => r.alert)).size).toBe(rules.length);
    for (const r of rules) {
      const name = String(r.alert);
      // The keys Prometheus accepts on an alerting rule, and the ones our receivers route on.
      for (const k of Object.keys(r))
        expect(['alert', 'expr', 'for', 'keep_firing_for', 'labels', 'annotations'], name).toContain(k);
      expect(name).toMatch(/^Anima[A-Za-z]+$/);
      expect(typeof r.expr, name).toBe('string');
      if (r.for !== undefined) expect(String(r.for), name).toMatch(/^\d+[smh]$/);
      expect(['info', 'warning', 'critical'], name).toContain((r.labels as { severity?: string })?.severity);
      expect(typeof (r.annotations as { summary?: unknown })?.summary, name).toBe('string');
      const names = String(r.expr).match(/anima_[a-z_]+/g) ?? [];
      expect(names.length, name).toBeGreaterThan(0);
      for (const metric of names) expect(m.has(metric), `${name}: ${metric}`).toBe(true);
    }
  });

  // promtool ships with Debian's `prometheus` package: where it is installed, the rules are checked by
  // Prometheus's own parser, and dashboards/alerts.test.yml proves the breaker and budget rules fire.
  it.runIf(existsSync('/usr/bin/promtool'))(
    'promtool accepts the rules and their unit tests pass (promtool check rules, test rules)',
    () => {
      const check = spawnSync('/usr/bin/promtool', ['check', 'rules', 'dashboards/alerts.yml'], {
        encoding: 'utf8',
      });
      expect(check.status, check.stdout + check.stderr).toBe(0);
      expect(check.stdout).toMatch(/SUCCESS: \d+ rules found/);
      const test = spawnSync('/usr/bin/promtool', ['test', 'rules', 'dashboards/alerts.test.yml'], {
        encoding: 'utf8',
      });
      expect(test.status, test.stdout + test.stderr).toBe(0);
      expect(test.stdout + test.stderr).toContain('SUCCESS');
    },
  );

  it('a scrape with 200 channels, 1,000 keys and 100 aliases takes under 50 ms and stays under 2 MB', async () => {
    const db = G.dbh.db;
    await db
      .insertInto('channel')
      .values(
        Array.from({ length: 200 }, (_, i) => ({
          code: `c${i}`,
          name: `c${i}`,
          provider: 'openai',
          base_url: up.url + '/v1',
          credential: 'k',
          settings: '{}',
        })),
      )
      .execute();
    await db
      .insertInto('alias')
      .values(
        Array.from({ length: 100 }, (_, i) => ({
          name: `a${i}`,
          chain: JSON.stringify([
            {
              targets: [
                { channel: `c${i}`, model: 'm' },
                { channel: `c${i + 100}`, model: 'm' },
              ],
            },
          ]),
        })),
      )
      .execute();
    const app = (await db.selectFrom('app').select('id').executeTakeFirstOrThrow()).id;
    await db
      .insertInto('api_key')
      .values(
        Array.from({ length: 1000 }, (_, i) => ({
          id: `key_bulk_${i}`,
          name: '',
          app_id: app,
          key_hash: `h${i}`,
          key_prefix: 'sk-anima-xxxx',
          allowed_aliases: 'null',
        })),
      )
      .execute();
    await admin('POST', '/cache/invalidate', { table: 'all' });
    await waitFor(() => !!G.config.channel('c199') && !!G.config.alias('a99'), 3_000);
    // Every channel gets a breaker state series: the worst case for the exposition size.
    await Promise.all(Array.from({ length: 200 }, (_, i) => G.breakers.reset(`c${i}`)));
    await scrape();
    const times: number[] = [];
    let size = 0;
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const text = await (await fetch(G.url + '/actuator/prometheus')).text();
      times.push(performance.now() - t0);
      size = Buffer.byteLength(text);
    }
    times.sort((a, b) => a - b);
    console.log(
      `scrape with 200 channels / 1000 keys / 100 aliases: best ${times[0]!.toFixed(1)} ms, median ${times[2]!.toFixed(1)} ms, ${(size / 1024).toFixed(0)} KiB`,
    );
    // The best of five is the scrape's own cost; the median also carries CPU taken by suites running beside it.
    expect(times[0]!).toBeLessThan(50);
    expect(size).toBeLessThan(2 * 1024 * 1024);
  });
});

describe('the app label cap (ANIMA_METRICS_APP_LABEL=off)', () => {
  const served = (app: string) =>
    ({
      dialect: 'openai_chat',
      alias: { name: 'main' },
      channel: 'good',
      app: { id: app },
      status: 200,
      outcome: 'ok',
      ttfbMs: 5,
      attempts: 1,
      upstreamMs: 8,
      saleMicros: null,
      costMicros: null,
      cacheHit: false,
      extraHeaders: {},
      usage: null,
      elapsedMs: () => 10,
    }) as unknown as Parameters<Metrics['request']>[0];

  it('folds every app into "other" in the latency histogram; the counters keep the app', async () => {
    const on = new Metrics({ defaultMetrics: false });
    const off = new Metrics({ defaultMetrics: false, appLabel: false });
    for (const m of [on, off]) for (const a of ['app_1', 'app_2', 'app_3']) m.request(served(a));
    const count = (text: string) =>
      histogramCounts(text, 'anima_request_duration_seconds').map((c) => c.labels.app);
    expect(count(await on.registry.metrics()).sort()).toEqual(['app_1', 'app_2', 'app_3']);
    expect(count(await off.registry.metrics())).toEqual(['other']);
    expect(await off.registry.metrics()).toMatch(/anima_requests_total\{[^}]*app="app_2"/);
  });
});
