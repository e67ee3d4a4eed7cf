import { describe, expect, it } from 'vitest';
import { BreakerRegistry } from '../../src/breaker/breaker.js';
import { DEFAULT_BREAKER, type BreakerSettings } from '../../src/core/model.js';
import { MemoryCoordinator } from '../../src/coord/memory.js';
import { ManualClock } from '../../src/lib/clock.js';

const cfg: BreakerSettings = {
  ...DEFAULT_BREAKER,
  windowMs: 10_000,
  minCalls: 4,
  failureRate: 0.5,
  openMs: 5_000,
  halfOpenProbes: 2,
  probeTimeoutMs: 1_000,
};

function setup() {
  const clock = new ManualClock();
  const coord = new MemoryCoordinator(clock);
  const published: string[] = [];
  const reg = new BreakerRegistry(coord.breakers, clock, (ch, st) => published.push(`${ch}:${st.state}`));
  return { clock, coord, reg, published };
}

async function call(reg: BreakerRegistry, ch: string, failure: boolean, durationMs = 10) {
  const a = await reg.acquire(ch, cfg);
  if (!a.ok) return a.reason;
  await reg.onResult(a.permit, cfg, { failure, durationMs });
  return 'called';
}

describe('circuit breaker', () => {
  it('stays closed below minCalls, opens when the failure rate passes the threshold', async () => {
    const { reg, published } = setup();
    for (let i = 0; i < 3; i++) expect(await call(reg, 'a', true)).toBe('called');
    expect(reg.state('a').state).toBe('closed'); // 3 calls < minCalls 4
    expect(await call(reg, 'a', true)).toBe('called');
    expect(reg.state('a').state).toBe('open');
    expect(published).toEqual(['a:open']);
    expect(await call(reg, 'a', false)).toBe('breaker_open');
    expect(reg.refusesNow('a')).toBe('breaker_open');
  });

  it('does not open while failures stay under the rate', async () => {
    const { reg } = setup();
    for (let i = 0; i < 20; i++) await call(reg, 'a', i % 3 === 2); // at most 1 in 3 fail
    expect(reg.state('a').state).toBe('closed');
  });

  it('forgets failures that slid out of the window', async () => {
    const { reg, clock } = setup();
    for (let i = 0; i < 3; i++) await call(reg, 'a', true);
    clock.advance(11_000);
    await call(reg, 'a', true);
    expect(reg.state('a').state).toBe('closed'); // only 1 call in the window now
  });

  it('opens on the slow-call rate', async () => {
    const { reg } = setup();
    const slowCfg = { ...cfg, slowCallMs: 100, slowCallRate: 0.5 };
    for (let i = 0; i < 4; i++) {
      const a = await reg.acquire('s', slowCfg);
      if (a.ok) await reg.onResult(a.permit, slowCfg, { failure: false, durationMs: 500 });
    }
    expect(reg.state('s').state).toBe('open');
    expect(reg.state('s').reason).toMatch(/slow-call/);
  });

  it('half-opens after the wait, lets exactly the permitted probes through, closes on their success', async () => {
    const { reg, clock } = setup();
    for (let i = 0; i < 4; i++) await call(reg, 'a', true);
    clock.advance(5_001);
    const acquired = await Promise.all(Array.from({ length: 100 }, () => reg.acquire('a', cfg)));
    const probes = acquired.filter((a) => a.ok);
    expect(probes).toHaveLength(2);
    expect(reg.state('a').state).toBe('half_open');
    for (const p of probes) if (p.ok) await reg.onResult(p.permit, cfg, { failure: false, durationMs: 5 });
    expect(reg.state('a').state).toBe('closed');
    expect(await call(reg, 'a', false)).toBe('called');
  });

  it('a failed probe reopens for another wait', async () => {
    const { reg, clock } = setup();
    for (let i = 0; i < 4; i++) await call(reg, 'a', true);
    clock.advance(5_001);
    const p = await reg.acquire('a', cfg);
    expect(p.ok).toBe(true);
    if (p.ok) await reg.onResult(p.permit, cfg, { failure: true, durationMs: 5 });
    expect(reg.state('a').state).toBe('open');
    expect(await call(reg, 'a', false)).toBe('breaker_open');
  });

  it('a hung probe never leaves the breaker half-open for good', async () => {
    const { reg, clock } = setup();
    for (let i = 0; i < 4; i++) await call(reg, 'a', true);
    clock.advance(5_001);
    const p1 = await reg.acquire('a', cfg);
    const p2 = await reg.acquire('a', cfg);
    expect(p1.ok && p2.ok).toBe(true);
    expect((await reg.acquire('a', cfg)).ok).toBe(false); // permits gone, probes "hung"
    clock.advance(cfg.probeTimeoutMs * 2 + 1);
    const fresh = await reg.acquire('a', cfg); // stale half-open: a fresh generation of probes
    expect(fresh.ok).toBe(true);
    if (p1.ok) await reg.onResult(p1.permit, cfg, { failure: false, durationMs: 1 }); // late report of an old gen: ignored
    expect(reg.state('a').state).toBe('half_open');
  });

  it('forced open holds regardless of successes until reset', async () => {
    const { reg, clock } = setup();
    await reg.forceOpen('a');
    expect(await call(reg, 'a', false)).toBe('breaker_forced_open');
    clock.advance(1e9);
    expect(await call(reg, 'a', false)).toBe('breaker_forced_open');
    await reg.reset('a');
    expect(await call(reg, 'a', false)).toBe('called');
    expect(reg.state('a').state).toBe('closed');
  });

  it('neutral outcomes (client errors, cancellations) never count', async () => {
    const { reg } = setup();
    for (let i = 0; i < 10; i++) {
      const a = await reg.acquire('a', cfg);
      if (a.ok) await reg.onResult(a.permit, cfg, { failure: false, neutral: true, durationMs: 1 });
    }
    for (let i = 0; i < 3; i++) await call(reg, 'a', true);
    expect(reg.state('a').state).toBe('closed');
  });

  it('two registries on one backend: the loser of a race adopts the winner, remote states apply by generation', async () => {
    const clock = new ManualClock();
    const coord = new MemoryCoordinator(clock);
    const a = new BreakerRegistry(coord.breakers, clock, (ch, st) => b.applyRemote(ch, st));
    const b: BreakerRegistry = new BreakerRegistry(coord.breakers, clock, (ch, st) => a.applyRemote(ch, st));
    for (let i = 0; i < 4; i++) await call(a, 'x', true);
    expect(b.state('x').state).toBe('open');
    expect(await call(b, 'x', false)).toBe('breaker_open');
    clock.advance(5_001);
    // Both race to half-open; only cfg.halfOpenProbes permits exist across both.
    const res = await Promise.all([...Array(10)].flatMap(() => [a.acquire('x', cfg), b.acquire('x', cfg)]));
    expect(res.filter((r) => r.ok)).toHaveLength(2);
    expect(a.state('x').gen).toBe(b.state('x').gen);
  });
});
