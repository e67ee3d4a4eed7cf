/**
 * The hot path's counters and histograms scrape exactly as prom-client's own would for the same updates.
 */
import client from 'prom-client';
import { describe, expect, it } from 'vitest';
import { FastCounter, FastHistogram } from '../../src/observability/fast-metrics.js';

describe('fast metrics', () => {
  it('a histogram scrapes line for line as prom-client’s', async () => {
    const a = new client.Registry();
    const b = new client.Registry();
    const bounds = [0.005, 0.01, 0.025, 0.05, 0.1, 1];
    const ref = new client.Histogram({
      name: 'h_seconds',
      help: 'a "help" \\ text',
      labelNames: ['dialect', 'alias'] as const,
      buckets: bounds,
      registers: [a],
    });
    const fast = new FastHistogram('h_seconds', 'a "help" \\ text', ['dialect', 'alias'], bounds, [b]);
    const obs: Array<[string, string, number]> = [
      ['openai_chat', 'main', 0.004],
      ['openai_chat', 'main', 0.005], // on a bound: counted in it (le is inclusive)
      ['openai_chat', 'main', 0.07],
      ['openai_chat', 'we"ird\\al\nias', 3],
      ['anthropic_messages', 'main', 0.2],
      ['openai_chat', 'main', 0],
    ];
    for (const [d, al, v] of obs) {
      ref.labels(d, al).observe(v);
      fast.with(d, al).observe(v);
    }
    expect(await b.metrics()).toBe(await a.metrics());
  });

  it('a counter scrapes as prom-client’s; a held series keeps counting after a reset', async () => {
    const a = new client.Registry();
    const b = new client.Registry();
    const ref = new client.Counter({
      name: 'c_total',
      help: 'c',
      labelNames: ['channel', 'result'] as const,
      registers: [a],
    });
    const fast = new FastCounter('c_total', 'c', ['channel', 'result'], [b]);
    const held = fast.with('one', 'ok');
    for (const [ch, r, n] of [
      ['one', 'ok', 1],
      ['two', 'http_5xx', 3],
      ['one', 'ok', 2.5],
    ] as const) {
      ref.labels(ch, r).inc(n);
      fast.with(ch, r).inc(n);
    }
    expect(await b.metrics()).toBe(await a.metrics());
    b.resetMetrics();
    held.inc(4);
    expect(await b.metrics()).toContain('c_total{channel="one",result="ok"} 4');
    expect(await b.metrics()).toContain('c_total{channel="two",result="http_5xx"} 0');
  });
});
