/**
 * The access-log line: pino's own line for the same fields, written straight to the logger's destination.
 * The cases that run the built logger in child processes are in test/integration/log-sink-processes.test.ts
 * (they need the build).
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createLogger, logAccess } from '../../src/observability/log.js';

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
