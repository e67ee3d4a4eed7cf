import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';

/**
 * Structured JSON logs. Secrets never reach a log line: request bodies are not logged, and these paths
 * are redacted wherever an object carrying them is logged by accident.
 */
export function createLogger(
  level: string,
  destination?: pino.DestinationStream,
  format: 'json' | 'pretty' = 'json',
): Logger {
  const dest = destination ?? (format === 'pretty' ? prettyDestination() : stdoutDestination());
  const log = pino(
    {
      level,
      base: { svc: 'anima' },
      redact: {
        paths: [
          'req.headers.authorization',
          'req.headers["x-api-key"]',
          'req.headers["x-goog-api-key"]',
          'headers.authorization',
          'headers["x-api-key"]',
          'headers["x-goog-api-key"]',
          'credential',
          '*.credential',
          'sk',
          '*.sk',
        ],
        censor: '[redacted]',
      },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    dest,
  );
  ACCESS.set(log, { log, dest });
  return log;
}

let pinoStdout: pino.DestinationStream | null = null;
/**
 * pino's own destination on stdout (sonic-boom), one per process so lines stay in order: lines leave in
 * batches of about 4 KiB, or 100 ms after they were written on a quiet gateway, and pino flushes what is
 * left at exit. Writes of at most PIPE_BUF (4 KiB) bytes: a pipe takes each whole, so workers sharing the
 * primary's stdout never split each other's lines (sonic-boom wants minLength below maxWrite). A
 * hand-written sink saved a few µs per line but no measurable share of the gateway's CPU per request
 * (bench/HISTORY.md, 2026-12-02).
 */
function stdoutDestination(): pino.DestinationStream {
  return (pinoStdout ??= pino.destination({
    dest: 1,
    minLength: 4000,
    maxWrite: 4096,
    periodicFlush: 100,
    sync: false,
  }));
}

let prettyStdout: pino.DestinationStream | null = null;
/**
 * For a person at a terminal: the same lines (access lines too, which are written to this stream as JSON
 * and formatted by it) as one readable line each. Never the default off a terminal: it costs CPU per line.
 */
function prettyDestination(): pino.DestinationStream {
  return (prettyStdout ??= pretty({
    colorize: true,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname,svc',
    singleLine: true,
    sync: true,
  }));
}

const ACCESS = new WeakMap<Logger, { log: Logger; dest: pino.DestinationStream }>();

/** A field of the access line: left out when undefined; an object (plain data) is written as its JSON. */
export type AccessValue = string | number | boolean | null | undefined | object;

/**
 * Writes one access line ("request", at info) straight to the logger's destination, in pino's own format
 * (level, time, svc, the fields in order, msg), so readers of the log see no difference.
 *
 * Why not through pino: the line has known fields only (ids, codes, numbers: never a header, a body or a
 * credential), so redaction, serializers, hooks and formatters have nothing to do, and pino's generic
 * object walk made garbage and cost CPU on every request (measured by bench/overhead.ts; figures in
 * bench/HISTORY.md). A logger not made by createLogger (a test's
 * own pino, say) gets the same line through its info().
 */
export function logAccess(log: Logger, fields: Record<string, AccessValue>): void {
  const a = ACCESS.get(log);
  if (!a) {
    log.info(fields, 'request');
    return;
  }
  if (!a.log.isLevelEnabled('info')) return;
  let line = '{"level":30,"time":"' + new Date().toISOString() + '","svc":"anima"';
  for (const k in fields) {
    const v = fields[k];
    if (v === undefined) continue;
    line += ',"' + k + '":';
    if (typeof v === 'string') line += JSON.stringify(v);
    else if (typeof v === 'number') line += Number.isFinite(v) ? String(v) : 'null';
    else if (typeof v === 'boolean') line += v ? 'true' : 'false';
    else if (v === null) line += 'null';
    else line += JSON.stringify(v);
  }
  a.dest.write(line + ',"msg":"request"}\n');
}

type LogFn = (...args: unknown[]) => void;
/**
 * Fastify gives every request a child logger (req.log, bound to its request id) made with pino's child():
 * a bindings string and the redaction paths parsed again, per request (seen in a heap profile of
 * bench/overhead.ts). Anima's handlers
 * never log through req.log (the access line is its own), so the child is made only if something does.
 */
class LazyChildLogger {
  private made: Logger | null = null;
  constructor(
    private readonly parent: Logger,
    private readonly bindings: pino.Bindings,
    private readonly opts: pino.ChildLoggerOptions,
  ) {}
  private get log(): Logger {
    return (this.made ??= this.parent.child(this.bindings, this.opts));
  }
  get level(): string {
    return this.made?.level ?? this.parent.level;
  }
  set level(l: string) {
    this.log.level = l;
  }
  fatal(...a: unknown[]): void {
    (this.log.fatal as LogFn).apply(this.log, a);
  }
  error(...a: unknown[]): void {
    (this.log.error as LogFn).apply(this.log, a);
  }
  warn(...a: unknown[]): void {
    (this.log.warn as LogFn).apply(this.log, a);
  }
  info(...a: unknown[]): void {
    (this.log.info as LogFn).apply(this.log, a);
  }
  debug(...a: unknown[]): void {
    (this.log.debug as LogFn).apply(this.log, a);
  }
  trace(...a: unknown[]): void {
    (this.log.trace as LogFn).apply(this.log, a);
  }
  silent(): void {}
  child(bindings: pino.Bindings, opts?: pino.ChildLoggerOptions): Logger {
    return this.log.child(bindings, opts);
  }
}

/** Fastify's childLoggerFactory option: a request's logger, made on first use. */
export function lazyChildLogger(
  logger: unknown,
  bindings: pino.Bindings,
  opts: pino.ChildLoggerOptions,
): Logger {
  return new LazyChildLogger(logger as Logger, bindings, opts) as unknown as Logger;
}
