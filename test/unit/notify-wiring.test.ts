/**
 * The notification wiring (app/notify-wiring.ts) on the in-process coordinator: real breaker and channel
 * health registries, the dependency probe's results and the journal writer's health, each reaching a
 * local receiver once per change; the credential gauge follows the health registry. (The same on Redis
 * with two instances: test/integration/notify.test.ts.)
 */
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Notifications, startNotifications, watchJournal } from '../../src/app/notify-wiring.js';
import { BreakerRegistry } from '../../src/breaker/breaker.js';
import { ChannelHealthRegistry } from '../../src/breaker/health.js';
import { MemoryCoordinator } from '../../src/coord/memory.js';
import { systemClock } from '../../src/lib/clock.js';
import { OutboundPolicy } from '../../src/lib/outbound.js';
import { Metrics } from '../../src/observability/metrics.js';
import type { Db } from '../../src/store/db.js';
import { waitFor } from '../wait.js';

let rx: Server;
const got: Array<{ kind: string; body: Record<string, unknown> }> = [];
let n: Notifications;
let breakers: BreakerRegistry;
let health: ChannelHealthRegistry;
let metrics: Metrics;
let coord: MemoryCoordinator;

/** The one query NotifyTargets.load makes (selectFrom → selectAll → orderBy → execute), answered from memory. */
function fakeDb(rows: unknown[]): Db {
  const q = { selectAll: () => q, orderBy: () => q, execute: async () => rows };
  return { selectFrom: () => q } as unknown as Db;
}

beforeAll(async () => {
  rx = createServer((req, res) => {
    let b = '';
    req.on('data', (c: Buffer) => (b += c.toString()));
    req.on('end', () => {
      got.push({
        kind: String(req.headers['x-anima-event']),
        body: JSON.parse(b) as Record<string, unknown>,
      });
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((r) => rx.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(rx.address() as AddressInfo).port}/hook`;
  coord = new MemoryCoordinator(systemClock);
  breakers = new BreakerRegistry(coord.breakers, systemClock, () => {});
  health = new ChannelHealthRegistry(coord.breakers, systemClock, () => {});
  metrics = new Metrics({ defaultMetrics: false });
  n = await startNotifications({
    db: fakeDb([
      {
        id: 'nt_1',
        name: 'ops',
        url,
        format: 'json',
        secret: '',
        events: [],
        enabled: true,
        rate_per_minute: 100,
        created_at: new Date(),
        updated_at: new Date(),
      },
    ]),
    coord,
    redisPrefix: 'test:',
    breakers,
    health,
    metrics,
    log: pino({ level: 'silent' }),
    outbound: new OutboundPolicy({ allow: ['127.0.0.0/8'] }),
  });
});
afterAll(async () => {
  await n.close();
  await coord.close();
  await new Promise<void>((r) => rx.close(() => r()));
});

const kinds = () => got.map((g) => g.kind);

describe('notification wiring (in process)', () => {
  it('breaker opened and closed again by the registry: one each', async () => {
    got.length = 0;
    await breakers.forceOpen('c1', 'maintenance');
    await waitFor(() => got.length === 1);
    await breakers.reset('c1');
    await waitFor(() => got.length === 2);
    await n.notifier.settled();
    expect(kinds()).toEqual(['breaker.opened', 'breaker.closed']);
    expect(got[0]!.body).toMatchObject({
      subject: 'c1',
      details: { to: 'forced_open', reason: 'maintenance' },
    });
  });

  it('a credential taken out: one notification, once however many failures; the gauge shows it', async () => {
    got.length = 0;
    await health.markCredential('c2', 'invalid');
    await health.markCredential('c2', 'invalid');
    await waitFor(() => got.length === 1);
    await n.notifier.settled();
    expect(kinds()).toEqual(['credential.out']);
    expect(await metrics.registry.getSingleMetricAsString('anima_channel_credential_out')).toMatch(
      /anima_channel_credential_out\{channel="c2"\} 1/,
    );
    await health.reset('c2');
    expect(await metrics.registry.getSingleMetricAsString('anima_channel_credential_out')).not.toContain(
      'c2',
    );
  });

  it('PostgreSQL and Redis down and back: down once, recovered once, nothing for steady probes', async () => {
    got.length = 0;
    n.dependencies(true, true); // first probe: up is no news
    n.dependencies(false, true);
    await n.notifier.settled();
    n.dependencies(false, true); // still down: nothing new
    n.dependencies(false, false);
    await n.notifier.settled();
    n.dependencies(true, true);
    await n.notifier.settled();
    await waitFor(() => got.length === 4);
    expect(got.map((g) => `${g.kind} ${String(g.body.subject)}`).sort()).toEqual([
      'dependency.down db',
      'dependency.down redis',
      'dependency.recovered db',
      'dependency.recovered redis',
    ]);
  });

  it('the journal writer stuck and writing again: one each', async () => {
    got.length = 0;
    let stuck = false;
    const stop = watchJournal(n, { stuck: () => stuck, oldestUnjournaledMs: () => (stuck ? 61_000 : 0) }, 10);
    try {
      stuck = true;
      await waitFor(() => got.length === 1);
      stuck = false;
      await waitFor(() => got.length === 2);
      await n.notifier.settled();
      expect(kinds()).toEqual(['journal.stuck', 'journal.recovered']);
      expect(got[0]!.body).toMatchObject({
        severity: 'critical',
        details: { oldest_unjournaled_seconds: 61 },
      });
    } finally {
      stop();
    }
  });
});
