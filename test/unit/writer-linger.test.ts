/**
 * The journal writer's linger: light load writes after lingerMs; under load it waits until about
 * targetBatch records should be waiting at the rate it reads them, so that N instances' writers sharing
 * one queue still commit batches of that size (PostgreSQL's cost per batch is fixed).
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { Ledger } from '../../src/billing/ledger.js';
import { MemoryBilling } from '../../src/billing/memory.js';
import { JournalWriter, type WriterOptions } from '../../src/billing/writer.js';
import { systemClock } from '../../src/lib/clock.js';

const writer = (o: Partial<WriterOptions> = {}) =>
  new JournalWriter(new MemoryBilling(systemClock), null as unknown as Ledger, pino({ level: 'silent' }), {
    batch: 500,
    idleMs: 100,
    retryMs: 500,
    lingerMs: 20,
    ...o,
  });

describe('journal writer linger', () => {
  it('light load: lingerMs, whatever the batch', () => {
    const w = writer();
    expect(w.lingerFor(1, 20, 20)).toBe(20); // 50 rps
    expect(w.lingerFor(1, 200, 20)).toBe(20);
    expect(w.lingerFor(2, 21, 20)).toBe(20); // ~95 rps: a full busy linger would gather < 50
  });

  it('one busy writer (2,400 records/s): lingers until ~256 should be waiting', () => {
    expect(writer().lingerFor(48, 20, 20)).toBeCloseTo(256 / 2.4, 5);
  });

  it('one of three writers sharing 1,100 records/s: capped at busyLingerMs (25 x lingerMs)', () => {
    const w = writer();
    expect(w.lingerFor(7, 19, 20)).toBe(500);
    // The batch it then reads is ~0.37 records/ms x 500 ms: the next linger stays at the cap.
    expect(w.lingerFor(185, 502, 20)).toBe(500);
  });

  it('a heavy writer never lingers below lingerMs; targetBatch and busyLingerMs are options', () => {
    expect(writer().lingerFor(400, 10, 20)).toBe(20);
    const w = writer({ targetBatch: 100, busyLingerMs: 200 });
    expect(w.lingerFor(50, 20, 20)).toBe(40); // 2.5/ms: 100 records in 40 ms
    expect(w.lingerFor(5, 20, 20)).toBe(200); // 0.25/ms x 200 = 50: busy; 100 / 0.25 = 400, capped
  });
});
