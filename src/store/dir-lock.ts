/**
 * One process per embedded data directory. PGlite has no server: two processes opening one directory are
 * two writers on the same files (a corrupt database at worst, and at best an `anima apply` that writes to
 * a copy the running gateway never reads again). The lock is a file beside the directory
 * (`<dataDir>.lock`), created exclusively, holding the owner's pid, command and URL; it goes when the
 * handle closes or the process exits. A lock whose pid is gone, or is no longer a Node.js process (the pid
 * was reused after a crash), is stale and taken over.
 */
import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';

export interface DirOwner {
  pid: number;
  command: string;
  /** Where the owner serves, once it listens (the admin API to use instead). */
  url?: string;
  since: string;
}

/** Refused: another live process holds the directory. The message says who and what to do instead. */
export class DataDirInUse extends Error {
  override readonly name = 'DataDirInUse';
  constructor(
    readonly dir: string,
    readonly owner: DirOwner,
  ) {
    super(
      `the data directory ${dir} is in use by another Anima process (pid ${owner.pid}, \`anima ${owner.command}\`` +
        (owner.url ? `, serving ${owner.url}` : '') +
        '). Two processes must not open one embedded database: ' +
        (owner.url
          ? `change the configuration through that gateway's admin API (${owner.url}/api/admin/v1), or stop it first`
          : 'stop it first') +
        ', or set ANIMA_DATA_DIR to another directory.',
    );
  }
}

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
  } catch (e) {
    // EPERM: it exists, owned by another user
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A reused pid: on Linux the command line tells a Node.js process from anything else.
  try {
    return /node|anima/i.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
  } catch {
    return true; // no /proc: trust the pid
  }
}

export class DirLock {
  private released = false;
  private readonly onExit = () => this.release();

  private constructor(
    readonly path: string,
    private owner: DirOwner,
  ) {
    process.once('exit', this.onExit);
  }

  /** Takes the lock on `dir` for this process, or throws DataDirInUse. */
  static acquire(dir: string, command: string): DirLock {
    const path = dir.replace(/\/+$/, '') + '.lock';
    const owner: DirOwner = { pid: process.pid, command, since: new Date().toISOString() };
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(path, 'wx', 0o600);
        try {
          writeSync(fd, JSON.stringify(owner) + '\n');
        } finally {
          closeSync(fd);
        }
        return new DirLock(path, owner);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      let held: DirOwner | null = null;
      try {
        held = JSON.parse(readFileSync(path, 'utf8')) as DirOwner;
      } catch {
        held = null; // half-written or unreadable: treated as stale
      }
      if (held && Number.isInteger(held.pid) && alive(held.pid)) throw new DataDirInUse(dir, held);
      rmSync(path, { force: true });
    }
    throw new Error(`could not lock ${dir}: ${path} keeps reappearing`);
  }

  /** Records where the owner serves, so a refused second process can point to its admin API. */
  serving(url: string): void {
    if (this.released) return;
    this.owner = { ...this.owner, url };
    try {
      const fd = openSync(this.path, 'w', 0o600);
      try {
        writeSync(fd, JSON.stringify(this.owner) + '\n');
      } finally {
        closeSync(fd);
      }
    } catch {
      // the lock still stands; only the hint is lost
    }
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    process.removeListener('exit', this.onExit);
    try {
      const held = JSON.parse(readFileSync(this.path, 'utf8')) as DirOwner;
      if (held.pid === process.pid) rmSync(this.path, { force: true });
    } catch {
      // already gone
    }
  }
}
