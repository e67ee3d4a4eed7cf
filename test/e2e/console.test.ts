/**
 * The operator console in a real browser (Debian's headless Chromium driven by playwright-core) against a
 * gateway on real PostgreSQL and Redis with two fake upstreams: sign in; open a breaker with its button
 * and see traffic fail over to the next channel; create a key and use it; ban it and see it refused; a
 * version conflict when two tabs edit one channel; reorder an alias chain and set its response-cache TTL;
 * cancel a task; the kill switch behind its confirmation; a token group made and re-priced (with a version
 * conflict); a viewer admin token made in the console, used and revoked; a viewer token that sees
 * everything and can change nothing. A screenshot of every page goes to test-artifacts/console/.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { createServer as createHttpServer } from 'node:http';
import { type BrowserContext, type Page, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../fakes/common.js';
import { startFakeOpenAI } from '../../fakes/index.js';
import { TaskStore } from '../../src/tasks/store.js';
import {
  ADMIN_TOKEN,
  REDIS_URL,
  type TestDatabase,
  adminApi,
  cleanupRedis,
  createTestDatabase,
  startTestGateway,
  testRedisPrefix,
  waitFor,
} from '../helpers.js';

const CHROMIUM = process.env.ANIMA_CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = join('test-artifacts', 'console');
const APP = 'console-e2e';

type TGateway = Awaited<ReturnType<typeof startTestGateway>>;
let tdb: TestDatabase;
let prefix: string;
let gw: TGateway;
let pri: FakeUpstream;
let sec: FakeUpstream;
let browser: BrowserContext;
let profile: string;
let page: Page;
let sk: string;
let seedKeyId: string;
let viewerToken: string;
let taskId: string;
const admin = adminApi(() => gw.url);
/** Script errors and console errors (a CSP violation is one) in any tab; failed API calls are expected noise. */
const browserErrors: string[] = [];
function watch(p: Page): void {
  p.on('pageerror', (e) => browserErrors.push(`pageerror: ${e.message}`));
  p.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource'))
      browserErrors.push(`console: ${m.text()}`);
  });
}

const chat = (key = sk, model = 'main') =>
  fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({
      model,
      messages: [{ role: 'user', content: 'hello from the console test' }],
      max_tokens: 16,
    }),
  });

async function shot(p: Page, name: string): Promise<void> {
  await p.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** A new tab, signed in with `token`, on `hash`. */
async function signedIn(token: string, hash = '#/overview'): Promise<Page> {
  const p = await browser.newPage();
  watch(p);
  await p.goto(`${gw.url}/console/${hash}`);
  await p.fill('#token', token);
  await p.click('form.signin button[type=submit]');
  await p.waitForSelector('nav.nav');
  return p;
}

async function go(p: Page, hash: string): Promise<void> {
  await p.evaluate(
    (h) => ((globalThis as unknown as { location: { hash: string } }).location.hash = h),
    hash,
  );
  await p.waitForSelector(`.page[data-page="${hash.slice(2).split('?')[0]}"][data-ready]`);
}

/** Clicks the confirm button of the open confirmation dialog. */
async function confirm(p: Page, fill: Record<string, string> = {}): Promise<void> {
  const dlg = p.locator('.modal');
  await dlg.waitFor();
  for (const [name, value] of Object.entries(fill)) await dlg.locator(`input[name="${name}"]`).fill(value);
  await dlg.locator('[data-confirm]').click();
  await dlg.waitFor({ state: 'detached' });
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM))
    throw new Error(
      `${CHROMIUM} not found: install Debian's chromium (apt-get install chromium); .ci/run does it`,
    );
  // The console is served from its build (npm run build makes it); build it if this checkout hasn't.
  if (!existsSync(join('dist', 'console', 'build.json')))
    execFileSync(process.execPath, ['scripts/build-console.mjs'], { stdio: 'inherit' });
  mkdirSync(ARTIFACTS, { recursive: true });
  tdb = await createTestDatabase();
  prefix = testRedisPrefix();
  pri = await startFakeOpenAI({ name: 'primary' });
  sec = await startFakeOpenAI({ name: 'secondary' });
  gw = await startTestGateway({ databaseUrl: tdb.url, redisUrl: REDIS_URL, redisPrefix: prefix });

  const fast = { timeouts: { connectMs: 500, firstByteMs: 2_000, idleMs: 2_000, totalMs: 5_000 } };
  await admin('POST', '/channels', {
    code: 'pri',
    name: 'primary',
    provider: 'openai',
    base_url: pri.url + '/v1',
    credential: 'pri-secret-1234',
    settings: fast,
  });
  await admin('POST', '/channels', {
    code: 'sec',
    name: 'secondary',
    provider: 'openai',
    base_url: sec.url + '/v1',
    credential: 'sec-secret-5678',
    settings: fast,
  });
  await admin('POST', '/aliases', {
    name: 'main',
    chain: [
      { targets: [{ channel: 'pri', model: 'gpt-p' }] },
      { targets: [{ channel: 'sec', model: 'gpt-s' }] },
    ],
  });
  await admin('POST', '/prices', {
    alias: 'main',
    sale_input_per_mtok: '3000000',
    sale_output_per_mtok: '12000000',
    cost_input_per_mtok: '1000000',
    cost_output_per_mtok: '4000000',
    sale_per_request: '100',
  });
  await admin('POST', '/apps', { id: APP, name: 'Console E2E', billing: 'prepaid' });
  await admin('POST', `/apps/${APP}/wallet/fund`, { amount_micros: '50000000', idempotency_key: 'seed' });
  const k = await admin('POST', `/apps/${APP}/keys`, { name: 'seed key' });
  sk = k.sk;
  seedKeyId = k.key.id;
  await admin('POST', '/quotas', {
    scope: 'app',
    scope_id: APP,
    max_concurrency: 20,
    qps: 0,
    tokens_per_minute: 0,
  });
  viewerToken = (await admin('POST', '/admin-tokens', { name: 'e2e viewer', role: 'viewer' })).token;
  // A task nobody will run for an hour: something to inspect and cancel.
  const task = await new TaskStore(gw.dbh.db).create({
    kind: 'chat',
    appId: APP,
    keyId: k.key.id,
    request: { model: 'main', messages: [{ role: 'user', content: 'later' }] },
    deadline: new Date(Date.now() + 86_400_000),
    notBefore: new Date(Date.now() + 3_600_000),
  });
  taskId = task.id;
  for (let i = 0; i < 6; i++) expect((await chat()).status).toBe(200);

  profile = mkdtempSync(join(tmpdir(), 'anima-chromium-'));
  // playwright-core refuses --user-data-dir in args: a persistent context is how it takes a fresh profile.
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1360, height: 900 },
  });
}, 60_000);

afterAll(async () => {
  await browser?.close().catch(() => {});
  if (profile) rmSync(profile, { recursive: true, force: true });
  await gw?.close();
  await pri?.close();
  await sec?.close();
  if (prefix) await cleanupRedis(prefix);
  await tdb?.drop();
}, 30_000);

describe('operator console (headless Chromium)', () => {
  it('signs in with an admin token and shows the overview from the admin API', async () => {
    page = await browser.newPage();
    watch(page);
    const res = await page.goto(`${gw.url}/console`);
    expect(res!.status()).toBe(200);
    expect(res!.headers()['content-security-policy']).toContain("default-src 'self'");
    await page.fill('#token', 'ak-not-a-real-token-000000');
    await page.click('form.signin button[type=submit]');
    await expect
      .poll(() => page.locator('form.signin .error').textContent())
      .toContain('not an admin or viewer token');
    await shot(page, '00-sign-in');
    await page.fill('#token', ADMIN_TOKEN);
    await page.click('form.signin button[type=submit]');
    await page.waitForSelector('nav.nav');
    expect(await page.locator('#role').textContent()).toBe('admin');
    await page.waitForSelector('#traffic-tiles [data-tile="requests"]');
    await expect
      .poll(async () =>
        Number(
          (await page.locator('#traffic-tiles [data-tile="requests"] .tile-value').textContent())!.replace(
            /,/g,
            '',
          ),
        ),
      )
      .toBeGreaterThanOrEqual(6);
    expect(await page.locator('figure.chart').count()).toBe(5);
    await expect.poll(() => page.locator('#live').textContent(), { timeout: 5_000 }).toBe('live');
    await expect.poll(() => page.locator('[data-tile="breakers"] .tile-value').textContent()).toBe('0 / 2');
    // Money is shown from integer micro-units: 6 requests at least 100 micro-units each.
    // ... in the account currency (ANIMA_CURRENCY, USD by default), named beside the amounts.
    expect(await page.locator('[data-tile="money"] .tile-value').textContent()).toMatch(
      /^\d+\.\d{2,6} \/ \d+\.\d{2,6} USD$/,
    );
    expect(await page.locator('#currency').textContent()).toBe('USD');
    // Cluster-wide figures: this test runs one instance, and the note says how many were summed.
    expect(await page.locator('#stats-scope').getAttribute('data-instances')).toBe('1');
    await shot(page, '01-overview');
  }, 30_000);

  it('opens a breaker with its button: traffic fails over to the next channel, and back after reset', async () => {
    let r = await chat();
    expect(r.headers.get('x-anima-channel')).toBe('pri');
    await go(page, '#/channels');
    const row = page.locator('tr[data-channel="pri"]');
    await row.locator('[data-breaker="closed"]').waitFor();
    await row.getByRole('button', { name: 'Open', exact: true }).click();
    await confirm(page, { reason: 'e2e: failover drill' });
    await row.locator('[data-breaker="forced_open"]').waitFor();

    const [priBefore, secBefore] = [pri.stats.requests, sec.stats.requests];
    r = await chat();
    expect(r.status).toBe(200);
    expect(r.headers.get('x-anima-channel')).toBe('sec');
    expect(r.headers.get('x-anima-route')).toContain('pri;skipped=breaker'); // breaker_forced_open
    expect(
      ((await r.json()) as { choices: Array<{ message: { content: string } }> }).choices[0]!.message.content,
    ).toContain('secondary');
    expect(sec.stats.requests).toBe(secBefore + 1);
    expect(pri.stats.requests).toBe(priBefore);
    await shot(page, '02-channels-breaker-open');

    await row.getByRole('button', { name: 'Reset', exact: true }).click();
    await row.locator('[data-breaker="closed"]').waitFor();
    r = await chat();
    expect(r.headers.get('x-anima-channel')).toBe('pri');

    // Live: a breaker opened elsewhere (the API, another operator) shows up without a reload.
    await admin('POST', '/circuits/sec/open', { reason: 'opened by another operator' });
    await page.locator('tr[data-channel="sec"] [data-breaker="forced_open"]').waitFor({ timeout: 5_000 });
    await admin('POST', '/circuits/sec/reset');
    await page.locator('tr[data-channel="sec"] [data-breaker="closed"]').waitFor({ timeout: 5_000 });
  }, 30_000);

  it('creates a key (the sk shown once) and uses it; bans it and sees it refused', async () => {
    await go(page, `#/apps?app=${APP}`);
    await page.waitForSelector(`#app-detail[data-app="${APP}"] #keys`);
    await page.fill('#new-key input[name="key_name"]', 'made in the console');
    await page.click('#new-key button[type=submit]');
    const secret = page.locator('.modal [data-sk]');
    await secret.waitFor();
    const newSk = (await secret.textContent())!.trim();
    expect(newSk).toMatch(/^sk-anima-/);
    await shot(page, '03-apps-new-key');
    await page.click('.modal [data-close-secret]');

    const ok = await chat(newSk);
    expect(ok.status).toBe(200);

    const row = page.locator(`tr[data-prefix="${newSk.slice(0, 13)}"]`);
    await row.getByRole('button', { name: 'Ban', exact: true }).click();
    await confirm(page);
    await row.locator('.badge', { hasText: 'banned' }).waitFor();
    await waitFor(async () => (await chat(newSk)).status === 403, 3_000, 50);
    const refused = await chat(newSk);
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('key_disabled');
    expect((await chat()).status).toBe(200); // the other key is untouched
    await shot(page, '04-apps-key-banned');
  }, 30_000);

  it('shows a version conflict when two tabs edit the same channel', async () => {
    const a = await signedIn(ADMIN_TOKEN, '#/channels');
    const b = await signedIn(ADMIN_TOKEN, '#/channels');
    try {
      for (const p of [a, b]) {
        await p.locator('tr[data-channel="sec"]').getByRole('button', { name: 'Edit', exact: true }).click();
        await p.waitForSelector('form[data-editing="sec"]');
      }
      const v = Number(await a.locator('form[data-editing="sec"]').getAttribute('data-version'));
      await b.fill('form[data-editing="sec"] input[name="name"]', 'secondary (edited in tab B)');
      await b.click('form[data-editing="sec"] button[type=submit]');
      await b.waitForSelector('[data-saved]');

      await a.fill('form[data-editing="sec"] input[name="weight"]', '5');
      await a.click('form[data-editing="sec"] button[type=submit]');
      const box = a.locator('[data-conflict]');
      await box.waitFor();
      expect(await box.textContent()).toContain(`you edited version ${v}, it is now version ${v + 1}`);
      await shot(a, '05-channels-version-conflict');
      expect((await admin('GET', '/channels/sec')).weight).toBe(1); // tab A's edit was not applied

      await box.getByRole('button', { name: 'Overwrite with mine' }).click();
      await a.waitForSelector('[data-saved]');
      const now = await admin('GET', '/channels/sec');
      expect(now).toMatchObject({ name: 'secondary (edited in tab B)', weight: 5, version_no: v + 2 });
    } finally {
      await a.close();
      await b.close();
    }
  }, 30_000);

  it('reorders an alias chain: the next request goes to the new first tier', async () => {
    await go(page, '#/aliases');
    const card = page.locator('section[data-alias="main"]');
    await card.waitFor();
    await card.getByRole('button', { name: 'Move tier 2 up' }).click();
    expect(await card.locator('li[data-tier="0"] li[data-target]').getAttribute('data-target')).toBe('sec');
    await card.getByRole('button', { name: 'Save chain' }).click();
    await page.locator('section[data-alias="main"] .badge', { hasText: 'version 2' }).waitFor();
    await waitFor(async () => (await chat()).headers.get('x-anima-channel') === 'sec', 3_000, 50);
    await shot(page, '06-aliases');
    // and back, through the same page
    const card2 = page.locator('section[data-alias="main"]');
    await card2.getByRole('button', { name: 'Move tier 2 up' }).click();
    await card2.getByRole('button', { name: 'Save chain' }).click();
    await page.locator('section[data-alias="main"] .badge', { hasText: 'version 3' }).waitFor();
    await waitFor(async () => (await chat()).headers.get('x-anima-channel') === 'pri', 3_000, 50);
  }, 30_000);

  it("sets an alias's response-cache TTL (and its other settings) through the settings form", async () => {
    await go(page, '#/aliases');
    const before = await admin('GET', '/aliases/main');
    expect(before.cache_ttl_s).toBe(0);
    const card = page.locator('section[data-alias="main"]');
    await card.getByRole('button', { name: 'Edit settings' }).click();
    const form = card.locator('form[data-settings="main"]');
    expect(await form.locator('input[name="max_attempts"]').inputValue()).toBe(String(before.max_attempts));
    await form.locator('input[name="cache_ttl_s"]').fill('120');
    await form.getByRole('button', { name: 'Save settings' }).click();
    await page
      .locator('section[data-alias="main"] .badge', { hasText: `version ${before.version_no + 1}` })
      .waitFor();
    expect(await page.locator('section[data-alias="main"] .card-head').textContent()).toContain(
      'response cache 120 s',
    );
    const after = await admin('GET', '/aliases/main');
    expect(after).toMatchObject({
      cache_ttl_s: 120,
      max_attempts: before.max_attempts,
      deadline_ms: before.deadline_ms,
      version_no: before.version_no + 1,
    });

    // A stale form: someone saves meanwhile; the save shows the conflict and writes nothing.
    await page.locator('section[data-alias="main"]').getByRole('button', { name: 'Edit settings' }).click();
    await admin('PATCH', '/aliases/main', { description: 'changed by another operator' }, after.version_no);
    const stale = page.locator('form[data-settings="main"]');
    await stale.locator('input[name="cache_ttl_s"]').fill('0');
    await stale.getByRole('button', { name: 'Save settings' }).click();
    const box = stale.locator('[data-conflict]');
    await box.waitFor();
    expect(await box.textContent()).toContain(
      `you edited version ${after.version_no}, it is now version ${after.version_no + 1}`,
    );
    expect((await admin('GET', '/aliases/main')).cache_ttl_s).toBe(120);
    await shot(page, '06-aliases-settings-conflict');
    // Overwrite: the cache goes off again (later tests count upstream calls and need every answer fresh).
    await box.getByRole('button', { name: 'Overwrite with mine' }).click();
    await page
      .locator('section[data-alias="main"] .badge', { hasText: `version ${after.version_no + 2}` })
      .waitFor();
    expect(await admin('GET', '/aliases/main')).toMatchObject({
      cache_ttl_s: 0,
      description: 'changed by another operator',
    });
  }, 30_000);

  it('lists, filters, inspects and cancels a task', async () => {
    await go(page, '#/tasks');
    await page.locator('#queues [data-queue="queued"] .tile-value', { hasText: '1' }).waitFor();
    await page.selectOption('#task-filter select[name="status"]', 'queued');
    await page.fill('#task-filter input[name="app_id"]', APP);
    await page.click('#task-filter button[type=submit]');
    const row = page.locator(`tr[data-task="${taskId}"]`);
    await row.getByRole('button', { name: 'Inspect' }).click();
    await page.waitForSelector(`#task-detail[data-task="${taskId}"] [data-task-status="queued"]`);
    expect(await page.locator('#task-detail pre.json').textContent()).toContain('later');
    await page.locator('#task-detail').getByRole('button', { name: 'Cancel task' }).click();
    await confirm(page);
    await page.waitForSelector(`#task-detail [data-task-status="cancelled"]`);
    expect((await admin('GET', `/tasks/${taskId}`)).status).toBe('cancelled');
    await shot(page, '07-tasks');
  }, 30_000);

  it('stops all traffic with the kill switch only after the confirmation, and resumes it', async () => {
    await go(page, '#/kill-switch');
    await page.getByRole('button', { name: 'Stop all traffic…' }).click();
    const dlg = page.locator('.modal');
    await dlg.locator('[data-confirm]').click(); // STOP not typed: refused, the dialog stays
    expect(await dlg.locator('input[name="confirm-text"]').getAttribute('class')).toContain('invalid');
    expect((await chat()).status).toBe(200);
    await confirm(page, { reason: 'e2e drill', 'confirm-text': 'STOP' });
    await page.waitForSelector('[data-kill-switch="on"]');
    await waitFor(async () => (await chat()).status === 503, 3_000, 50);
    const stopped = await chat();
    expect(((await stopped.json()) as { error: { code: string } }).error.code).toBe('gateway_disabled');
    await page.locator('.ks-banner', { hasText: 'Kill switch ON' }).waitFor();
    await shot(page, '08-kill-switch-on');
    await page.getByRole('button', { name: 'Resume traffic…' }).click();
    await confirm(page);
    await page.waitForSelector('[data-kill-switch="off"]');
    await waitFor(async () => (await chat()).status === 200, 3_000, 50);
  }, 30_000);

  it('tests a channel with its button: the answer is shown; recent calls and latency are columns', async () => {
    await go(page, '#/channels');
    const row = page.locator('tr[data-channel="pri"]');
    // The chats of the earlier tests went through pri: its 15-minute figures count them.
    expect(
      Number(
        (await row.locator('[data-col="usage"]').textContent())!
          .match(/^([\d,]+) calls/)![1]!
          .replace(/,/g, ''),
      ),
    ).toBeGreaterThanOrEqual(6);
    expect(await row.locator('[data-col="latency"]').textContent()).toMatch(/ms \/ .*ms$/);
    const before = pri.stats.requests;
    await row.locator('[data-action="test"]').click();
    const result = page.locator('#channel-test .test-result');
    await result.waitFor();
    expect(await result.getAttribute('data-ok')).toBe('true');
    expect(await result.textContent()).toContain('HTTP 200');
    expect((await result.locator('[data-answer]').textContent())!.length).toBeGreaterThan(0);
    expect(pri.stats.requests).toBe(before + 1); // one real request went to that channel
    await shot(page, '09a-channel-test');
  }, 30_000);

  it('shows every alias target with its weight (1 when the chain names none)', async () => {
    await go(page, '#/aliases');
    const targets = page.locator('section[data-alias="main"] li[data-target]');
    await targets.first().waitFor();
    for (const t of await targets.all()) expect(await t.textContent()).toMatch(/weight \d+/);
    expect(await page.locator('.page').textContent()).not.toContain('undefined');
  }, 30_000);

  it('is usable at phone width (375 × 812): no sideways scroll of the page, the nav works, tables scroll in their box', async () => {
    const p = await signedIn(ADMIN_TOKEN);
    try {
      await p.setViewportSize({ width: 375, height: 812 });
      // Every page the nav offers (pages added later are checked too).
      const pages = await p
        .locator('nav.nav a')
        .evaluateAll((as) => as.map((a) => (a as unknown as { dataset: { page: string } }).dataset.page));
      expect(pages.length).toBeGreaterThanOrEqual(11);
      for (const id of pages) {
        const hash = id === 'apps' ? `#/apps?app=${APP}` : `#/${id}`;
        await go(p, hash);
        const w = await p.evaluate(() => {
          const d = (
            globalThis as unknown as {
              document: {
                documentElement: { scrollWidth: number; clientWidth: number };
                body: { scrollWidth: number };
              };
            }
          ).document;
          return {
            doc: d.documentElement.scrollWidth,
            body: d.body.scrollWidth,
            view: d.documentElement.clientWidth,
          };
        });
        expect(w.view, hash).toBeLessThanOrEqual(375);
        expect(w.doc, hash).toBeLessThanOrEqual(w.view);
        expect(w.body, hash).toBeLessThanOrEqual(w.view);
      }
      await shot(p, '14-phone-last-page');
      // The nav collapses to one strip that scrolls sideways (not a column pushing the page down), every
      // link reachable in it, and a tap on one opens its page.
      const nav = (await p.locator('nav.nav').boundingBox())!;
      expect(nav.height).toBeLessThan(80);
      expect(nav.width).toBeLessThanOrEqual(375);
      const link = p.locator('nav.nav a[data-page="channels"]');
      await link.scrollIntoViewIfNeeded();
      await link.click();
      await p.waitForSelector('.page[data-page="channels"][data-ready]');
      // The channels table is wider than a phone: it scrolls inside its box, not the page.
      const box = await p
        .locator('.table-box')
        .first()
        .evaluate((el) => ({ sw: el.scrollWidth, cw: el.clientWidth }));
      expect(box.sw).toBeGreaterThan(box.cw);
      await shot(p, '15-phone-channels');
    } finally {
      await p.close();
    }
  }, 60_000);

  it('shows an empty state, not a scale of nothing, on charts with no traffic', async () => {
    // A fresh gateway of its own (embedded database, no traffic yet).
    const fresh = await startTestGateway();
    const p = await browser.newPage();
    watch(p);
    try {
      await p.goto(`${fresh.url}/console/#/overview`);
      await p.fill('#token', ADMIN_TOKEN);
      await p.click('form.signin button[type=submit]');
      await p.waitForSelector('.page[data-page="overview"][data-ready]');
      await p.waitForSelector('#traffic-tiles [data-tile="requests"]');
      expect(await p.locator('figure.chart').count()).toBe(5);
      expect(await p.locator('figure.chart[data-empty]').count()).toBe(5);
      expect(await p.locator('figure.chart svg').count()).toBe(0);
      expect(await p.locator('.charts').textContent()).toContain('No requests in this period');
      expect(await p.locator('.page').textContent()).not.toContain('0.000001');
      await shot(p, '16-overview-empty');
    } finally {
      await p.close();
      await fresh.close();
      await fresh.dbh.close();
    }
  }, 120_000);

  it('screens the remaining pages: prices, ledger (balanced), audit log', async () => {
    await go(page, '#/prices');
    await page.waitForSelector('tr[data-price]');
    expect(await page.locator('tr[data-price]').first().textContent()).toContain('in force');
    await shot(page, '09-prices');
    await go(page, '#/ledger');
    await page.locator('[data-tile="trial-balance"] .tile-value', { hasText: 'balanced' }).waitFor();
    await page.waitForSelector(`tr[data-account="wallet:${APP}"]`);
    await page.waitForSelector('#journals tr[data-journal]');
    await shot(page, '10-ledger');
    await go(page, '#/audit');
    await page.waitForSelector('#audit tr[data-audit]');
    const text = await page.locator('#audit').textContent();
    for (const action of ['circuit_open', 'circuit_reset', 'task_cancel', 'set', 'update', 'channel_test'])
      expect(text).toContain(action);
    await shot(page, '11-audit');
  }, 30_000);

  it('creates a token group with its multiplier as a factor (sent as integer ppm), and re-prices it through a version conflict', async () => {
    await go(page, '#/token-groups');
    await page.getByRole('button', { name: 'New token group' }).click();
    const form = page.locator('#new-token-group');
    await form.locator('input[name="id"]').fill('gold');
    await form.locator('input[name="name"]').fill('Gold customers');
    await form.locator('input[name="multiplier"]').fill('1.25');
    expect(await form.locator('[data-ppm]').textContent()).toBe('×1.25 = 1,250,000 ppm');
    await form.getByRole('button', { name: 'Create token group' }).click();
    const row = page.locator('tr[data-token-group="gold"]');
    await row.waitFor();
    expect(await row.locator('[data-col="multiplier"]').textContent()).toContain('×1.25');
    expect(await row.textContent()).toContain('in force');
    expect(await admin('GET', '/token-groups/gold')).toMatchObject({
      name: 'Gold customers',
      price_multiplier_ppm: '1250000',
      enabled: true,
      version_no: 1,
    });

    // Edit with version 1 while someone else renames it (version 2): the conflict, then overwrite.
    await row.getByRole('button', { name: 'Edit', exact: true }).click();
    const ed = page.locator('form[data-editing="gold"]');
    await ed.waitFor();
    await admin('PATCH', '/token-groups/gold', { name: 'Gold (renamed elsewhere)' }, 1);
    await ed.locator('input[name="multiplier"]').fill('1.5');
    await ed.getByRole('button', { name: 'Save' }).click();
    const box = page.locator('#token-group-editor [data-conflict]');
    await box.waitFor();
    expect(await box.textContent()).toContain('you edited version 1, it is now version 2');
    expect((await admin('GET', '/token-groups/gold')).price_multiplier_ppm).toBe('1250000');
    await box.getByRole('button', { name: 'Overwrite with mine' }).click();
    await page.waitForSelector('#token-group-editor [data-saved]');
    expect(await admin('GET', '/token-groups/gold')).toMatchObject({
      name: 'Gold (renamed elsewhere)',
      price_multiplier_ppm: '1500000',
      version_no: 3,
    });
    await page.locator('tr[data-token-group="gold"] [data-col="multiplier"]', { hasText: '×1.50' }).waitFor();
    await shot(page, '14-token-groups');

    // Put a key into the group from the app's keys table; the key then works at the group's terms.
    const k = await admin('POST', `/apps/${APP}/keys`, { name: 'for gold' });
    await go(page, `#/apps?app=${APP}`);
    const keyRow = page.locator(`tr[data-key="${k.key.id}"]`);
    await keyRow.waitFor();
    await keyRow.locator('select[name="token_group"]').selectOption('gold');
    await waitFor(
      async () => (await admin('GET', `/apps/${APP}/keys/${k.key.id}`)).token_group_id === 'gold',
      5_000,
      50,
    );
    await page.locator(`tr[data-key="${k.key.id}"] select[name="token_group"]`).waitFor();
    expect(await page.locator(`tr[data-key="${k.key.id}"] select[name="token_group"]`).inputValue()).toBe(
      'gold',
    );
    await waitFor(async () => (await chat(k.sk)).status === 200, 3_000, 50);
    await shot(page, '15-apps-key-token-group');
  }, 30_000);

  it('adds a notification target, disables and enables it, and its Test button shows the delivery', async () => {
    // A local receiver (loopback is in the test gateway's ANIMA_OUTBOUND_ALLOW).
    const seen: Array<{ event: string; signature: string }> = [];
    const rx = createHttpServer((req, res) => {
      req.resume();
      req.on('end', () => {
        seen.push({
          event: String(req.headers['x-anima-event']),
          signature: String(req.headers['x-anima-signature']),
        });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => rx.listen(0, '127.0.0.1', r));
    try {
      await go(page, '#/notifications');
      const form = page.locator('#new-notification-target');
      await form.locator('input[name="name"]').fill('e2e hook');
      await form
        .locator('input[name="url"]')
        .fill(`http://127.0.0.1:${(rx.address() as { port: number }).port}/hook`);
      await form.locator('select[name="format"]').selectOption('json');
      await form.locator('input[name="secret"]').fill('e2e-secret');
      await form.locator('input[name="event"][value="breaker.opened"]').check();
      await form.locator('button[type=submit]').click();
      const row = page.locator('tr[data-name="e2e hook"]');
      await row.waitFor();
      expect(await row.textContent()).toContain('breaker opened');
      expect(await row.textContent()).toContain('signed');
      await row.locator('[data-action="toggle"]').click();
      await row.locator('[data-enabled="false"]').waitFor();
      await row.locator('[data-action="toggle"]').click();
      await row.locator('[data-enabled="true"]').waitFor();
      await row.locator('[data-action="test"]').click();
      const result = page.locator('#notification-test .test-result');
      await result.waitFor();
      expect(await result.getAttribute('data-ok')).toBe('true');
      expect(await result.textContent()).toContain('HTTP 204');
      expect(seen).toEqual([{ event: 'test', signature: expect.stringMatching(/^t=\d+,v1=[0-9a-f]{64}$/) }]);
      await shot(page, '11b-notifications');
      // A URL inside the network that is not allowed: refused, the reason shown.
      await form.locator('input[name="name"]').fill('lan');
      await form.locator('input[name="url"]').fill('http://10.9.8.7/hook');
      await form.locator('button[type=submit]').click();
      await page.locator('.toast', { hasText: 'outbound policy' }).waitFor();
      expect(await page.locator('tr[data-name="lan"]').count()).toBe(0);
    } finally {
      await new Promise<void>((r) => rx.close(() => r()));
    }
  }, 30_000);

  it('finds a failed request by key and minute on the Requests page: the channels tried and why, and its cost', async () => {
    const pad = (n: number) => String(n).padStart(2, '0');
    const local = (d: Date) =>
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
    const minute = new Date(Math.floor(Date.now() / 60_000) * 60_000);
    // both channels out: the request fails, and its row says why each was passed over
    await admin('POST', '/circuits/pri/open', { reason: 'e2e: requests page' });
    await admin('POST', '/circuits/sec/open', { reason: 'e2e: requests page' });
    const failed = await chat();
    expect(failed.status).toBeGreaterThanOrEqual(500);
    const failedId = failed.headers.get('x-request-id')!;
    await admin('POST', '/circuits/pri/reset');
    await admin('POST', '/circuits/sec/reset');
    const served = await chat();
    expect(served.status).toBe(200);
    const servedId = served.headers.get('x-request-id')!;
    // A request's row is taken when its response has finished, which can be after fetch() resolves with
    // the headers: flush until both rows are in.
    await served.arrayBuffer();
    await waitFor(async () => {
      await gw.requestLog!.flush();
      const listed = (await admin('GET', '/requests?limit=20')) as { data: Array<{ id: string }> };
      return [servedId, failedId].every((id) => listed.data.some((r) => r.id === id));
    }, 10_000);

    await go(page, '#/requests');
    // The unfiltered list first (the newest requests, the served one among them), so that the search's
    // answer is told from it by the served row leaving.
    const servedRow = page.locator(`#requests-list tr[data-request="${servedId}"]`);
    await servedRow.waitFor();
    const form = page.locator('#requests-filters');
    await form.locator('input[name="key"]').fill(seedKeyId);
    await form.locator('input[name="from"]').fill(local(minute));
    await form.locator('input[name="to"]').fill(local(new Date(minute.getTime() + 120_000)));
    await form.locator('input[name="errors"]').check();
    await form.getByRole('button', { name: 'Search' }).click();
    await servedRow.waitFor({ state: 'detached' });
    const row = page.locator(`tr[data-request="${failedId}"]`);
    await row.waitFor();
    // errors only: every row listed is one (earlier tests' refusals of this key may share the minute),
    // and the served request is not among them
    const statuses = await page
      .locator('#requests-list tr[data-request]')
      .evaluateAll((rows) => rows.map((r) => Number(r.getAttribute('data-status'))));
    expect(statuses.length).toBeGreaterThanOrEqual(1);
    for (const st of statuses) expect(st).toBeGreaterThanOrEqual(400);
    expect(await servedRow.count()).toBe(0);
    await row.getByRole('button', { name: 'Details' }).click();
    const detail = page.locator(`#request-detail [data-detail="${failedId}"]`);
    await detail.waitFor();
    const tried = page.locator('#request-detail table');
    for (const ch of ['pri', 'sec']) expect(await tried.textContent()).toContain(ch);
    expect(await tried.textContent()).toContain('breaker');
    await shot(page, '17-requests-failed');
    // the served one, with its cost and sale in the account currency
    await form.locator('input[name="errors"]').uncheck();
    await form.getByRole('button', { name: 'Search' }).click();
    const ok = page.locator(`tr[data-request="${servedId}"]`);
    await ok.waitFor();
    await ok.getByRole('button', { name: 'Details' }).click();
    await page.locator(`#request-detail [data-detail="${servedId}"]`).waitFor();
    expect(await page.locator('#request-detail').textContent()).toMatch(
      /Cost \/ sale\d[\d.]* USD \/ \d[\d.]* USD/,
    );
    // a request id a customer quotes opens directly
    await go(page, `#/requests?id=${failedId}`);
    await page.locator(`#request-detail [data-detail="${failedId}"]`).waitFor();
    // the key's line on its app's page: this month's spend, the last day's requests and errors, a link
    await go(page, `#/apps?app=${APP}`);
    const figures = page.locator(`[data-key-figures="${seedKeyId}"]`);
    await figures.waitFor();
    expect(await figures.textContent()).toMatch(
      /^\d[\d.]* USD this month · \d+ requests, [1-9]\d* errors \(24 h\)/,
    );
    await figures.getByRole('link', { name: 'requests' }).click();
    await page.locator('.page[data-page="requests"][data-ready]').waitFor();
    expect(await page.locator('#requests-filters input[name="key"]').inputValue()).toBe(seedKeyId);
    await page.locator(`tr[data-request="${failedId}"]`).waitFor();
  }, 30_000);

  it('creates a viewer admin token (shown once) that reads and may not write; revoked, it is refused', async () => {
    await go(page, '#/admin-tokens');
    expect(await page.locator('[data-self]').count()).toBe(1); // the token this tab signed in with
    await page.fill('#new-admin-token input[name="token_name"]', 'made in the console');
    await page.selectOption('#new-admin-token select[name="role"]', 'viewer');
    await page.click('#new-admin-token button[type=submit]');
    const secret = page.locator('.modal [data-sk]');
    await secret.waitFor();
    const token = (await secret.textContent())!.trim();
    expect(token).toMatch(/^ak-anima-/);
    await page.click('.modal [data-close-secret]');
    const row = page.locator('tr[data-name="made in the console"]');
    await row.locator('[data-role="viewer"]').waitFor();
    expect(await page.locator('.page').textContent()).not.toContain(token); // shown once: only its prefix stays
    expect(await row.textContent()).toContain(token.slice(0, 12));
    await shot(page, '15-admin-tokens');

    const call = (method: string, path: string, body?: unknown) =>
      fetch(`${gw.url}/api/admin/v1${path}`, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body ? { 'content-type': 'application/json' } : {}),
        },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
    const me = await call('GET', '/whoami');
    expect(me.status).toBe(200);
    expect(await me.json()).toMatchObject({ name: 'made in the console', role: 'viewer' });
    expect((await call('GET', '/token-groups')).status).toBe(200);
    const write = await call('POST', '/token-groups', { id: 'viewer-made', name: 'never' });
    expect(write.status).toBe(403);
    expect(((await write.json()) as { error: { code: string } }).error.code).toBe('admin_forbidden');

    await row.getByRole('button', { name: 'Revoke…' }).click();
    await confirm(page);
    await row.waitFor({ state: 'detached' });
    await waitFor(async () => (await call('GET', '/whoami')).status === 401, 3_000, 50);
    expect((await call('GET', '/token-groups')).status).toBe(401);
    expect(
      (await admin('GET', '/admin-tokens')).data.some(
        (t: { name: string }) => t.name === 'made in the console',
      ),
    ).toBe(false);
  }, 30_000);

  it('a viewer token sees every page and no write control; the server refuses its writes', async () => {
    const v = await signedIn(viewerToken, '#/channels');
    try {
      expect(await v.locator('#role').textContent()).toBe('viewer');
      await v.waitForSelector('tr[data-channel="pri"] [data-breaker]');
      expect(await v.locator('[data-write]').count()).toBe(0);
      expect(await v.getByRole('button', { name: 'Open', exact: true }).count()).toBe(0);
      await v.locator('tr[data-channel="pri"]').getByRole('button', { name: 'View', exact: true }).click();
      expect(
        await v.locator('form[data-editing="pri"] input[name="name"]').getAttribute('readonly'),
      ).not.toBeNull();
      await shot(v, '12-viewer-channels');
      for (const hash of [
        '#/overview',
        '#/aliases',
        `#/apps?app=${APP}`,
        '#/token-groups',
        '#/prices',
        '#/ledger',
        '#/requests',
        '#/tasks',
        '#/audit',
        '#/admin-tokens',
        '#/notifications',
        '#/kill-switch',
      ]) {
        await go(v, hash);
        expect(await v.locator('.page .error').count(), hash).toBe(0);
        expect(await v.locator('[data-write]').count(), hash).toBe(0);
      }
      expect(await v.locator('#new-key').count()).toBe(0);
      expect(await v.locator('#new-admin-token').count()).toBe(0);
      expect(await v.getByRole('button', { name: 'Revoke…' }).count()).toBe(0);
      await go(v, '#/token-groups');
      await v
        .locator('tr[data-token-group="gold"]')
        .getByRole('button', { name: 'View', exact: true })
        .click();
      expect(
        await v.locator('form[data-editing="gold"] input[name="multiplier"]').getAttribute('readonly'),
      ).not.toBeNull();
      expect(await v.locator('form[data-editing="gold"] button[type=submit]').count()).toBe(0);
      // Even if a write were attempted, the server says no.
      const status = await v.evaluate(async () => {
        const token = (
          globalThis as unknown as { sessionStorage: { getItem(k: string): string | null } }
        ).sessionStorage.getItem('anima.console.token');
        const r = await fetch('/api/admin/v1/circuits/pri/open', {
          method: 'POST',
          headers: { authorization: `Bearer ${token}` },
        });
        return r.status;
      });
      expect(status).toBe(403);
      await shot(v, '13-viewer-kill-switch');
    } finally {
      await v.close();
    }
  }, 30_000);

  it('raised no script error and no content-security-policy violation in any tab', () => {
    expect(browserErrors).toEqual([]);
  });
});
