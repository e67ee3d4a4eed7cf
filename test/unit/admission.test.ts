/**
 * The admission stage's decisions on the in-process backend: scopes (key, app, token group), modes,
 * and the degraded path when the shared backend is unreachable.
 */
import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/core/errors.js';
import type { ApiKey, Quota } from '../../src/core/model.js';
import { ManualClock } from '../../src/lib/clock.js';
import { Admission } from '../../src/quota/admission.js';
import { MemoryQuota } from '../../src/quota/memory.js';
import type { QuotaBackend } from '../../src/quota/types.js';
import { Abort } from '../../src/lib/abort.js';
import { waitFor } from '../wait.js';

const key: ApiKey = {
  id: 'key_1',
  appId: 'app_1',
  name: '',
  keyHash: 'h',
  keyPrefix: 'sk',
  enabled: true,
  allowedAliases: null,
  queueMode: 'REJECT',
  waitTimeoutMs: 1000,
  maxQueue: 10,
  tokenGroupId: 'tg_1',
  webhookUrl: null,
  webhookSecret: null,
  versionNo: 1,
  effectiveFrom: 0,
  effectiveTo: null,
};
const q = (scope: Quota['scope'], scopeId: string, over: Partial<Quota>): Quota => ({
  id: '1',
  scope,
  scopeId,
  maxConcurrency: 0,
  qps: 0,
  qpsBurst: 1,
  tokensPerMinute: 0,
  tokensPerDay: 0,
  costPerDay: 0,
  costPerMonth: 0,
  versionNo: 1,
  effectiveFrom: 0,
  effectiveTo: null,
  ...over,
});

function source(quotas: Quota[]) {
  return {
    quota: (scope: Quota['scope'], id: string) => quotas.find((x) => x.scope === scope && x.scopeId === id),
  };
}
const est = () => ({ tokens: 10, cost: 0 });
const signal = new Abort();

describe('admission', () => {
  it('no quota configured: no backend call at all', async () => {
    const backend = {
      admit: () => {
        throw new Error('must not be called');
      },
    } as unknown as QuotaBackend;
    expect(await new Admission(backend, source([])).admit(key, est, signal)).toBeNull();
  });

  it('key, app and token-group scopes all apply; the tightest refuses with its own code', async () => {
    const mem = new MemoryQuota(new ManualClock());
    const a = new Admission(
      mem,
      source([
        q('key', 'key_1', { maxConcurrency: 5 }),
        q('app', 'app_1', { maxConcurrency: 3 }),
        q('token_group', 'tg_1', { tokensPerDay: 25 }),
      ]),
    );
    const l1 = await a.admit(key, est, signal);
    const l2 = await a.admit(key, est, signal);
    const e = await a.admit(key, est, signal).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(GatewayError);
    expect((e as GatewayError).code).toBe('tokens_limit_exceeded'); // 3 x 10 > 25 in the group
    expect((e as GatewayError).details).toMatchObject({ scope: 'token_group:tg_1' });
    for (const l of [l1, l2]) if (l && 'settle' in l) await l.settle(1, 0);
    const l3 = await a.admit(key, est, signal);
    expect(l3 && 'settle' in l3).toBe(true);
  });

  it("shared backend down: protective limits run on this instance's share; a cost budget fails closed with 503", async () => {
    const down = {
      admit: async () => {
        throw new Error('ECONNREFUSED');
      },
      onWake: async () => {},
    } as unknown as QuotaBackend;
    let degraded = 0;
    const local = new MemoryQuota(new ManualClock());
    const a = new Admission(
      down,
      source([q('key', 'key_1', { maxConcurrency: 4 })]),
      { leaseTtlMs: 10_000 },
      { onDegraded: () => degraded++ },
      { backend: local, share: 0.5 },
    );
    const ok1 = await a.admit(key, est, signal);
    const ok2 = await a.admit(key, est, signal);
    const no = await a.admit(key, est, signal).catch((x: unknown) => x);
    expect(ok1 && ok2).toBeTruthy();
    expect((no as GatewayError).code).toBe('concurrency_limit_exceeded'); // 4 * 0.5 = 2 here
    expect(degraded).toBe(3);
    const b = new Admission(
      down,
      source([q('key', 'key_1', { costPerDay: 1000 })]),
      { leaseTtlMs: 10_000 },
      {},
      { backend: local, share: 0.5 },
    );
    const e = await b.admit(key, est, signal).catch((x: unknown) => x);
    expect((e as GatewayError).code).toBe('service_unavailable');
    expect((e as GatewayError).status).toBe(503);
  });

  it('ASYNC over a limit is deferred (no lease kept); WAIT in-process admits in order when a slot frees', async () => {
    const mem = new MemoryQuota();
    const a = new Admission(mem, source([q('key', 'key_1', { maxConcurrency: 1 })]), {
      leaseTtlMs: 10_000,
      pollMs: 1000,
    });
    const held = await a.admit(key, est, signal);
    const d = await a.admit({ ...key, queueMode: 'ASYNC' }, est, signal);
    expect(d).toMatchObject({ deferred: true, limit: 'concurrency' });
    const waiting = a.admit({ ...key, queueMode: 'WAIT' }, est, signal);
    await waitFor(() => a.waitingNow === 1); // queued before the slot frees
    if (held && 'settle' in held) await held.settle(1, 0);
    const t0 = Date.now();
    const got = await waiting;
    expect(got && 'settle' in got).toBe(true);
    expect(Date.now() - t0).toBeLessThan(200); // woken by the release, not by the 1 s poll
  });
});
