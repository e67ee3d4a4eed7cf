import { fstatSync, write as fsWrite, writeSync } from 'node:fs';

/**
 * Where log lines go (stdout by default): lines are kept as they come and leave in one write once 4 KiB
 * have gathered, or 100 ms after the first of them, whichever is first.
 *
 * Why not pino.destination (sonic-boom): it appends each line to the last buffered string and then asks
 * that string's byte length, which flattens it, so every line copied the whole buffer gathered so far
 * (figures in bench/HISTORY.md; the gateway's CPU per request is measured by bench/overhead.ts). Here a
 * line is kept as it is and the batch is joined once. And a quiet gateway's lines still show within
 * 100 ms (sonic-boom's minLength held them until 4 KiB had gathered).
 *
 * A write the descriptor takes in part is continued from where it stopped; EAGAIN (a full non-blocking
 * pipe) is retried after a pause. While a reader falls behind, lines wait in memory up to `maxBuffered`
 * characters and are then dropped and counted (a log never takes the gateway down); a descriptor that
 * refuses for good (EPIPE, EBADF) stops the sink. Whatever is left is written synchronously at exit.
 */
export class LogSink {
  /** Lines not yet written: parts[head..]. (An index, not shift() or slice(): a reader falling behind lets thousands gather.) */
  private parts: string[] = [];
  private head = 0;
  /** Characters per write: PIPE_BUF into a pipe or socket (see take), else up to 1 MiB. */
  private readonly maxWrite: number;
  private chars = 0;
  private writing = false;
  private timer: NodeJS.Timeout | null = null;
  private broken = false;
  /** A write the descriptor refused with EAGAIN, waiting to be tried again. */
  private retry: { buf: Buffer; off: number } | null = null;
  private waiters: Array<(err?: Error) => void> = [];
  /** Lines dropped because the reader fell more than `maxBuffered` characters behind, or the descriptor broke. */
  dropped = 0;

  constructor(
    private readonly fd: number,
    private readonly minLength = 4096,
    private readonly maxDelayMs = 100,
    private readonly maxBuffered = 16 * 1024 * 1024,
  ) {
    this.maxWrite = pipeLike(fd) ? PIPE_BUF : 1 << 20;
    SINKS.add(this);
    if (!exitHooked) {
      exitHooked = true;
      process.once('exit', flushAllAtExit);
    }
  }

  write(line: string): boolean {
    if (this.broken || this.chars > this.maxBuffered) {
      this.dropped++;
      return false;
    }
    this.parts.push(line);
    this.chars += line.length;
    if (!this.writing) this.next();
    return true;
  }

  /**
   * Writes what has gathered now (asynchronously; a write already under way takes the rest when done).
   * `done` (pino's logger.flush) is called once everything held so far has been written.
   */
  flush(done?: (err?: Error) => void): void {
    if (done) {
      if (this.broken) return done(new Error('the log sink can no longer write'));
      if (!this.writing && this.held() === 0) return done();
      this.waiters.push(done);
    }
    if (this.writing || this.held() === 0 || this.broken) return;
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const buf = this.take();
    this.writing = true;
    this.send(buf, 0);
  }

  /** Writes everything still held, synchronously (at exit; a write under way is left to finish). */
  flushSync(): void {
    if (this.broken) return;
    if (this.retry) {
      const { buf, off } = this.retry;
      this.retry = null;
      this.writeAllSync(buf, off);
    }
    while (this.held()) this.writeAllSync(this.take(), 0);
  }

  private writeAllSync(buf: Buffer, off: number): void {
    for (let tries = 0; off < buf.length && tries < 1000;) {
      try {
        off += writeSync(this.fd, buf, off, buf.length - off);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') return;
        tries++;
      }
    }
  }

  /** Stops the sink: what is held is written synchronously and later lines are dropped. */
  close(): void {
    this.flushSync();
    this.broken = true;
    if (this.timer !== null) clearTimeout(this.timer);
    SINKS.delete(this);
  }

  private settleWaiters(err?: Error): void {
    if (this.waiters.length === 0) return;
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f(err);
  }

  /**
   * The next write: whole lines, together at most maxWrite characters (a longer line goes alone). Into a
   * pipe that is PIPE_BUF: POSIX keeps a pipe write of at most PIPE_BUF bytes in one piece, so processes
   * sharing one pipe (the workers of `serve --workers N` inherit the primary's stdout) never split each
   * other's lines. (Multi-byte text can pass PIPE_BUF bytes in fewer characters; log lines are ASCII but
   * for user-given names.) A file takes a whole batch per write: the kernel doesn't interleave writes to
   * one open file.
   */
  private take(): Buffer {
    const parts = this.parts;
    const from = this.head;
    let n = from + 1;
    let chars = parts[from]!.length;
    while (n < parts.length && chars + parts[n]!.length <= this.maxWrite) chars += parts[n++]!.length;
    const s = n === from + 1 ? parts[from]! : parts.slice(from, n).join('');
    if (n === parts.length) {
      this.parts = [];
      this.head = 0;
    } else {
      this.head = n;
      if (n > 1024 && n > parts.length / 2) {
        this.parts = parts.slice(n);
        this.head = 0;
      }
    }
    this.chars -= chars;
    return Buffer.from(s, 'utf8');
  }

  private held(): number {
    return this.parts.length - this.head;
  }

  private send(buf: Buffer, off: number): void {
    fsWrite(this.fd, buf, off, buf.length - off, null, (err, n) => {
      if (err) {
        if (err.code === 'EAGAIN') {
          this.retry = { buf, off };
          setTimeout(() => {
            if (this.retry?.buf !== buf) return; // written at exit meanwhile
            this.retry = null;
            this.send(buf, off);
          }, 10).unref();
          return;
        }
        // The descriptor is gone (the reader closed the pipe): nothing more can be written.
        this.broken = true;
        this.writing = false;
        this.dropped += this.held();
        this.parts = [];
        this.head = 0;
        this.chars = 0;
        this.settleWaiters(err);
        return;
      }
      if (off + n < buf.length) return this.send(buf, off + n);
      this.writing = false;
      this.next();
    });
  }

  /** With no write under way: write now if a batch has gathered (or someone waits), else make sure a timer will. */
  private next(): void {
    if (this.held() === 0) this.settleWaiters();
    else if (this.chars >= this.minLength || this.waiters.length) this.flush();
    else if (this.timer === null) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.flush();
      }, this.maxDelayMs);
      this.timer.unref();
    }
  }
}

/** PIPE_BUF on Linux (POSIX asks for at least 512). */
const PIPE_BUF = 4096;
function pipeLike(fd: number): boolean {
  try {
    const st = fstatSync(fd);
    return st.isFIFO() || st.isSocket();
  } catch {
    return true;
  }
}

const SINKS = new Set<LogSink>();
let exitHooked = false;
function flushAllAtExit(): void {
  for (const s of SINKS) s.flushSync();
}

let stdoutSink: LogSink | null = null;
/** The process's one sink on stdout (every logger made without a destination shares it, so lines stay in order). */
export function stdoutLogSink(): LogSink {
  return (stdoutSink ??= new LogSink(1));
}
