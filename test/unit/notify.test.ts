/**
 * Operator notifications, in process against a real local HTTP receiver: the Slack and generic formats,
 * the signature (same scheme as task webhooks), retries with backoff, the per-target rate limit folding
 * a burst into one summary, the outbound policy on target URLs, cross-instance dedup through a shared
 * claim, state events, and the event builders' choices (which breaker transitions are news).
 */
import { createHmac } from 'node:crypto';
import { type IncomingHttpHeaders, type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { NotifyTarget } from '../../src/config/notify-targets.js';
import { OutboundPolicy } from '../../src/lib/outbound.js';
import { signBody } from '../../src/lib/webhook-post.js';
import { type DeliveryResult, Notifier, type NotifyEvent } from '../../src/observability/notify.js';
import { breakerEvent, credentialEvent, testEvent } from '../../src/observability/notify-events.js';
import { slackEscape } from '../../src/observability/notify-format.js';
import { signWebhook } from '../../src/tasks/webhooks.js';
import { CLOSED_INITIAL, HEALTHY } from '../../src/coord/types.js';
import { waitFor } from '../wait.js';

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

let server: Server;
let base = '';
const got: Received[] = [];
/** Per path: answer this many requests with 500 first. */
const failFirst = new Map<string, number>();

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const path = req.url ?? '/';
      got.push({ path, headers: req.headers, body });
      const n = failFirst.get(path) ?? 0;
      if (n > 0) {
        failFirst.set(path, n - 1);
        res.writeHead(500).end('nope');
      } else res.writeHead(200).end('ok');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));
beforeEach(() => {
  got.length = 0;
  failFirst.clear();
});

const log = pino({ level: 'silent' });
const allowLoopback = new OutboundPolicy({ allow: ['127.0.0.0/8'] });

function target(over: Partial<NotifyTarget> = {}): NotifyTarget {
  return {
    id: 'nt_1',
    name: 'ops',
    url: `${base}/hook`,
    format: 'json',
    secret: '',
    events: [],
    enabled: true,
    ratePerMinute: 10,
    ...over,
  };
}

function notifier(
  targets: NotifyTarget[],
  results: DeliveryResult[] = [],
  more: Partial<ConstructorParameters<typeof Notifier>[0]> = {},
  opts: Partial<ConstructorParameters<typeof Notifier>[1]> = {},
): Notifier {
  return new Notifier(
    {
      targets: async () => targets,
      policy: allowLoopback,
      log,
      instance: 'test-1',
      onResult: (r) => results.push(r),
      ...more,
    },
    { backoffMs: 20, ...opts },
  );
}

const opened = (channel: string, gen: number): NotifyEvent =>
  breakerEvent(channel, 'closed', {
    ...CLOSED_INITIAL,
    state: 'open',
    gen,
    since: Date.now(),
    openUntil: Date.now() + 30_000,
    reason: 'failure rate 100% over 5 calls',
  })!;

describe('notification formats', () => {
  it('generic JSON: the event, signed with HMAC-SHA256 over "<t>.<body>" (the task-webhook scheme)', async () => {
    const n = notifier([target({ secret: 's3cret' })]);
    await n.reload();
    n.emit(opened('c1', 4));
    await waitFor(() => got.length === 1);
    await n.settled();
    const r = got[0]!;
    expect(r.headers['content-type']).toBe('application/json');
    expect(r.headers['x-anima-event']).toBe('breaker.opened');
    expect(r.headers['x-anima-delivery']).toBe('breaker:c1:4/nt_1');
    const body = JSON.parse(r.body) as Record<string, unknown>;
    expect(body).toMatchObject({
      id: 'breaker:c1:4',
      kind: 'breaker.opened',
      severity: 'warning',
      subject: 'c1',
      instance: 'test-1',
      details: { channel: 'c1', from: 'closed', to: 'open', generation: 4 },
    });
    expect(String(body.summary)).toContain('channel c1 taken out of rotation');
    // The receiver's check: recompute over the raw body with the shared secret.
    const ts = r.headers['x-anima-timestamp'] as string;
    const sig = r.headers['x-anima-signature'] as string;
    const want = createHmac('sha256', 's3cret').update(`${ts}.${r.body}`).digest('hex');
    expect(sig).toBe(`t=${ts},v1=${want}`);
    expect(sig).toBe(signWebhook('s3cret', Number(ts), r.body)); // one verifier for both kinds of webhook
    expect(signBody('other', Number(ts), r.body)).not.toBe(sig);
  });

  it('Slack: {"text": ...} with &, < and > escaped; unsigned without a secret', async () => {
    const n = notifier([target({ format: 'slack', url: `${base}/slack` })]);
    await n.reload();
    n.emit(
      breakerEvent('c<2>', 'closed', {
        ...CLOSED_INITIAL,
        state: 'forced_open',
        gen: 9,
        since: Date.now(),
        openUntil: Number.MAX_SAFE_INTEGER,
        reason: 'maintenance & <@here>',
      })!,
    );
    await waitFor(() => got.length === 1);
    const body = JSON.parse(got[0]!.body) as Record<string, unknown>;
    expect(Object.keys(body)).toEqual(['text']);
    const text = String(body.text);
    expect(text).toContain('channel c&lt;2&gt; taken out of rotation: breaker forced open');
    expect(text).toContain('maintenance &amp; &lt;@here&gt;');
    expect(text).not.toMatch(/<@here>/);
    expect(got[0]!.headers['x-anima-signature']).toBeUndefined();
    expect(slackEscape('a&b<c>')).toBe('a&amp;b&lt;c&gt;');
  });
});

describe('delivery', () => {
  it('a receiver failing twice gets the third attempt, with backoff; results counted', async () => {
    const results: DeliveryResult[] = [];
    const n = notifier([target({ url: `${base}/flaky` })], results);
    await n.reload();
    failFirst.set('/flaky', 2);
    n.emit(opened('c1', 10));
    await waitFor(() => results.includes('delivered'), 5_000);
    await n.settled();
    expect(got.map((g) => g.path)).toEqual(['/flaky', '/flaky', '/flaky']);
    expect(results).toEqual(['retry', 'retry', 'delivered']);
    // Same delivery id on every attempt: the receiver can dedup retries itself.
    expect(new Set(got.map((g) => g.headers['x-anima-delivery'])).size).toBe(1);
  });

  it('gives up after maxAttempts and counts a failure', async () => {
    const results: DeliveryResult[] = [];
    const n = notifier([target({ url: `${base}/down` })], results, {}, { maxAttempts: 3 });
    await n.reload();
    failFirst.set('/down', 99);
    n.emit(opened('c1', 11));
    await waitFor(() => results.includes('failed'), 5_000);
    await n.settled();
    expect(results).toEqual(['retry', 'retry', 'failed']);
    expect(got.length).toBe(3);
  });

  it('the rate limit folds a burst into one summary at the end of the window', async () => {
    const results: DeliveryResult[] = [];
    const n = notifier([target({ ratePerMinute: 3 })], results, {}, { windowMs: 400 });
    await n.reload();
    for (let i = 0; i < 10; i++) n.emit(opened(`c${i}`, 1));
    await waitFor(() => got.length === 4, 5_000);
    await n.settled();
    const bodies = got.map((g) => JSON.parse(g.body) as { kind: string; details: Record<string, unknown> });
    expect(bodies.slice(0, 3).every((b) => b.kind === 'breaker.opened')).toBe(true);
    const summary = bodies[3]!;
    expect(summary.kind).toBe('summary');
    expect(summary.details.count).toBe(7);
    expect(summary.details.kinds).toEqual({ 'breaker.opened': 7 });
    expect(results.filter((r) => r === 'folded').length).toBe(7);
    expect(results.filter((r) => r === 'delivered').length).toBe(4);
  });

  it('only targets that want the kind get it; disabled ones get nothing', async () => {
    const n = notifier([
      target({ id: 'a', url: `${base}/a`, events: ['credential.out'] }),
      target({ id: 'b', url: `${base}/b`, events: ['breaker.opened', 'breaker.closed'] }),
      target({ id: 'c', url: `${base}/c`, enabled: false }),
    ]);
    await n.reload();
    n.emit(opened('c1', 20));
    n.emit(credentialEvent('c1', 'invalid', HEALTHY));
    await waitFor(() => got.length === 2);
    await n.settled();
    expect(got.map((g) => `${g.path} ${g.headers['x-anima-event']}`).sort()).toEqual([
      '/a credential.out',
      '/b breaker.opened',
    ]);
  });

  it('a URL inside the network is refused unless ANIMA_OUTBOUND_ALLOW lists it (no retry)', async () => {
    const results: DeliveryResult[] = [];
    const strict = new OutboundPolicy({ allow: [] });
    const n = notifier([target()], results, { policy: strict });
    await n.reload();
    const res = await n.test(target(), testEvent('nt_1', 'test'));
    expect(res.ok).toBe(false);
    expect(res.refused).toBe(true);
    expect(res.error).toMatch(/refused by the outbound policy.*loopback/);
    n.emit(opened('c1', 30));
    await waitFor(() => results.length === 1);
    expect(results).toEqual(['failed']); // final at once
    expect(got.length).toBe(0);
    // The metadata address is refused even when allowed ranges are listed.
    const meta = await notifier([], [], { policy: new OutboundPolicy({ allow: ['169.254.0.0/16'] }) }).test(
      target({ url: 'http://169.254.169.254/latest' }),
      testEvent('nt_1', 'test'),
    );
    expect(meta.refused).toBe(true);
    // Allowed: delivered.
    const ok = await notifier([]).test(target(), testEvent('nt_1', 'test'));
    expect(ok).toMatchObject({ ok: true, status: 200 });
  });
});

describe('dedup across instances', () => {
  it('two notifiers sharing a claim store deliver an event once; a new generation again', async () => {
    const shared = new Map<string, number>();
    const claim = async (k: string) => {
      if (shared.has(k)) return false;
      shared.set(k, 1);
      return true;
    };
    const a = notifier([target()], [], { claim });
    const b = notifier([target()], [], { claim });
    await Promise.all([a.reload(), b.reload()]);
    a.emit(opened('c1', 40));
    b.emit(opened('c1', 40));
    await Promise.all([a.settled(), b.settled()]);
    expect(got.length).toBe(1);
    b.emit(opened('c1', 42));
    a.emit(opened('c1', 42));
    await Promise.all([a.settled(), b.settled()]);
    expect(got.length).toBe(2);
  });

  it('an unreachable claim store: each instance decides alone (one each, not none)', async () => {
    const claim = async () => {
      throw new Error('Redis down');
    };
    const a = notifier([target()], [], { claim });
    const b = notifier([target()], [], { claim });
    await Promise.all([a.reload(), b.reload()]);
    a.emit(opened('c1', 50));
    a.emit(opened('c1', 50));
    b.emit(opened('c1', 50));
    await Promise.all([a.settled(), b.settled()]);
    expect(got.length).toBe(2);
  });

  it('state events: the instance that flips the shared state sends; a first "up" is no news', async () => {
    const state = new Map<string, string>();
    const swap = async (k: string, v: string) => {
      const prev = state.get(k) ?? null;
      state.set(k, v);
      return prev;
    };
    const a = notifier([target()], [], { swap });
    const b = notifier([target()], [], { swap });
    await Promise.all([a.reload(), b.reload()]);
    const ev = (up: boolean): NotifyEvent => ({
      id: `dep:${up}:${Math.random()}`,
      kind: up ? 'dependency.recovered' : 'dependency.down',
      severity: 'info',
      at: Date.now(),
      summary: up ? 'db up' : 'db down',
      subject: 'db',
      details: {},
    });
    a.observe('dependency:db', 'up', 'up', () => ev(true));
    b.observe('dependency:db', 'up', 'up', () => ev(true));
    await Promise.all([a.settled(), b.settled()]);
    expect(got.length).toBe(0);
    a.observe('dependency:db', 'down', 'up', () => ev(false));
    await a.settled();
    b.observe('dependency:db', 'down', 'up', () => ev(false));
    a.observe('dependency:db', 'down', 'up', () => ev(false)); // the next probe: nothing new
    await Promise.all([a.settled(), b.settled()]);
    b.observe('dependency:db', 'up', 'up', () => ev(true));
    await b.settled();
    a.observe('dependency:db', 'up', 'up', () => ev(true));
    await a.settled();
    expect(got.map((g) => (JSON.parse(g.body) as { kind: string }).kind)).toEqual([
      'dependency.down',
      'dependency.recovered',
    ]);
  });
});

describe('event builders', () => {
  const st = (state: 'open' | 'half_open' | 'closed' | 'forced_open', gen: number) => ({
    ...CLOSED_INITIAL,
    state,
    gen,
    since: 1,
    reason: 'r',
  });
  it('breaker: opened from closed, closed from anything else; half-open and a re-open after a probe are not news', () => {
    expect(breakerEvent('c', 'closed', st('open', 1))?.kind).toBe('breaker.opened');
    expect(breakerEvent('c', 'open', st('half_open', 2))).toBeNull();
    expect(breakerEvent('c', 'half_open', st('open', 3))).toBeNull();
    expect(breakerEvent('c', 'half_open', st('closed', 4))?.kind).toBe('breaker.closed');
    expect(breakerEvent('c', 'closed', st('forced_open', 5))?.kind).toBe('breaker.opened');
    expect(breakerEvent('c', 'forced_open', st('closed', 6))?.kind).toBe('breaker.closed');
    expect(breakerEvent('c', 'closed', st('open', 7))?.id).toBe('breaker:c:7');
  });
  it('credential: the id names the health state replaced, so a reset makes the next take-out new', () => {
    const a = credentialEvent('c', 'invalid', { ...HEALTHY, updatedAt: 100 });
    const b = credentialEvent('c', 'invalid', { ...HEALTHY, updatedAt: 100 });
    const c = credentialEvent('c', 'invalid', { ...HEALTHY, updatedAt: 200 });
    expect(a.id).toBe(b.id);
    expect(a.id).not.toBe(c.id);
    expect(a.kind).toBe('credential.out');
  });
});
