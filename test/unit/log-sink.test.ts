/**
 * LogSink (batched, bounded writes to a descriptor) and the access-log line. The cases that run the built
 * logger in child processes are in test/integration/log-sink-processes.test.ts (they need the build).
 */
import { closeSync, mkdtempSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { LogSink } from '../../src/observability/log-sink.js';
import { createLogger, logAccess } from '../../src/observability/log.js';
import { waitFor } from '../wait.js';

const dir = mkdtempSync(join(tmpdir(), 'anima-logsink-'));
let n = 0;
const sinks: LogSink[] = [];
function fileSink(minLength = 4096, maxDelayMs = 100, maxBuffered?: number) {
  const path = join(dir, `log-${n++}`);
  const fd = openSync(path, 'w');
  const sink = new LogSink(fd, minLength, maxDelayMs, maxBuffered);
  sinks.push(sink);
  return { sink, fd, read: () => readFileSync(path, 'utf8') };
}
const flushed = (s: LogSink) =>
  new Promise<void>((resolve, reject) => s.flush((e) => (e ? reject(e) : resolve())));
afterEach(() => {
  for (const s of sinks.splice(0)) s.close();
});

describe('LogSink', () => {
  it('writes every line, in order, in batches of minLength, with multi-byte text intact', async () => {
    const { sink, read } = fileSink(1000);
    const lines = Array.from({ length: 2000 }, (_, i) => `{"i":${i},"s":"${'é✓'.repeat(i % 7)}"}\n`);
    for (const l of lines) sink.write(l);
    await flushed(sink);
    expect(read()).toBe(lines.join(''));
  });

  it('writes a lone short line after maxDelayMs without being asked', async () => {
    const { sink, read } = fileSink(4096, 30);
    sink.write('one line\n');
    expect(read()).toBe('');
    // The timer is what is under test: the line shows up with no flush asked for.
    await waitFor(() => read() === 'one line\n', 2_000, 5);
  });

  it('drops and counts lines beyond maxBuffered while a write is under way, and keeps the rest', async () => {
    const { sink, read } = fileSink(10, 100, 100);
    sink.write('x'.repeat(20) + '\n'); // starts a write; what follows gathers behind it
    for (let i = 0; i < 20; i++) sink.write('y'.repeat(9) + '\n'); // 10 chars each: the 11th write on finds >100 held
    await flushed(sink);
    expect(sink.dropped).toBe(9);
    expect(read()).toBe('x'.repeat(20) + '\n' + ('y'.repeat(9) + '\n').repeat(11));
  });

  it('stops on a descriptor that refuses (EBADF), without throwing, counting what it could not write', async () => {
    const { sink, fd } = fileSink(10);
    closeSync(fd);
    expect(() => sink.write('a line longer than ten\n')).not.toThrow();
    await expect(flushed(sink)).rejects.toThrow();
    expect(sink.write('later\n')).toBe(false);
    await expect(flushed(sink)).rejects.toThrow(); // a flush on the stopped sink answers at once
    expect(sink.dropped).toBeGreaterThanOrEqual(1);
  });

  it('flushSync writes what is held at once', () => {
    const { sink, read } = fileSink(1 << 20, 10_000);
    sink.write('held 1\n');
    sink.write('held 2\n');
    sink.flushSync();
    expect(read()).toBe('held 1\nheld 2\n');
  });

  it("takes pino's lines as a destination stream", () => {
    const { sink, read } = fileSink(1 << 20, 10_000);
    const log = pino({ base: null, timestamp: false }, sink);
    log.info({ a: 1 }, 'hello');
    sink.flushSync();
    expect(JSON.parse(read())).toEqual({ level: 30, a: 1, msg: 'hello' });
  });
});

describe('logAccess', () => {
  const collect = () => {
    const lines: string[] = [];
    return { lines, dest: { write: (s: string) => (lines.push(s), true) } };
  };
  const fields = {
    reqId: 'req_1',
    app: 'app "quoted" \\ \u2028 é',
    key: null,
    stream: false,
    attempts: 2,
    route: [{ channel: 'one', error: 'upstream_error' }],
    ms: 12.3,
    ttfbMs: undefined,
    bad: Number.NaN,
    aborted: true,
  };

  it("writes pino's own line for the same fields (level, time, svc, fields in order, msg)", () => {
    const mine = collect();
    logAccess(createLogger('info', mine.dest), fields);
    const theirs = collect();
    pino({ base: { svc: 'anima' }, timestamp: pino.stdTimeFunctions.isoTime }, theirs.dest).info(
      fields,
      'request',
    );
    expect(mine.lines).toHaveLength(1);
    const strip = (l: string) => l.replace(/"time":"[^"]+"/, '"time":"T"');
    expect(strip(mine.lines[0]!)).toBe(strip(theirs.lines[0]!));
    expect(JSON.parse(mine.lines[0]!)).toMatchObject({
      level: 30,
      svc: 'anima',
      app: fields.app,
      key: null,
      bad: null,
      msg: 'request',
    });
  });

  it('writes nothing below info, and goes through info() on a logger createLogger did not make', () => {
    const quiet = collect();
    logAccess(createLogger('warn', quiet.dest), fields);
    expect(quiet.lines).toHaveLength(0);
    const other = collect();
    logAccess(pino({ base: null }, other.dest), { reqId: 'req_2' });
    expect(JSON.parse(other.lines[0]!)).toMatchObject({ level: 30, reqId: 'req_2', msg: 'request' });
  });
});
