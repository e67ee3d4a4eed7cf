/**
 * The shared harness of the library A/B microbenchmarks (bench/micro/*.ts but transport and pivot): a
 * hand-written piece and the library it replaces do the same work in one process, in interleaved rounds
 * (the order flips every round), and each is charged the process's CPU time (user + system, all threads)
 * per operation. Each bench checks that both produce the same output before it times anything.
 *
 * With `--json` a bench ends with one line per workload, `{"micro":…}`, which bench/micro/all.ts reads.
 */
import { setImmediate as tick } from 'node:timers/promises';

export interface Impl {
  name: string;
  /** Does `n` operations (awaited when it returns a promise). */
  run(n: number): void | Promise<void>;
}

export interface Row {
  micro: string;
  workload: string;
  /** Hand-written, then library: medians of CPU µs per operation. */
  mine: { name: string; us: number; samples: number[] };
  lib: { name: string; us: number; samples: number[] };
  /** Extra figures a bench reports (for example Redis's own CPU per call). */
  extra?: Record<string, number>;
}

export function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}

export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** CPU µs per operation of `n` operations of `impl`. */
export async function cpuPerOp(impl: Impl, n: number): Promise<number> {
  await tick(); // start from an empty event loop turn
  const c0 = process.cpuUsage();
  await impl.run(n);
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / n;
}

/** Warms both, then `rounds` interleaved rounds of `n` operations each; medians. */
export async function ab(
  micro: string,
  workload: string,
  mine: Impl,
  lib: Impl,
  n: number,
  rounds = arg('rounds', 7),
): Promise<Row> {
  await mine.run(Math.max(1, n >> 2));
  await lib.run(Math.max(1, n >> 2));
  const xs: number[] = [];
  const ys: number[] = [];
  for (let r = 0; r < rounds; r++) {
    if (r % 2 === 0) {
      xs.push(await cpuPerOp(mine, n));
      ys.push(await cpuPerOp(lib, n));
    } else {
      ys.push(await cpuPerOp(lib, n));
      xs.push(await cpuPerOp(mine, n));
    }
  }
  return {
    micro,
    workload,
    mine: { name: mine.name, us: median(xs), samples: xs },
    lib: { name: lib.name, us: median(ys), samples: ys },
  };
}

const fmt = (x: number): string => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

/** Prints the rows readably, and as `{"micro":…}` lines with --json. */
export function report(rows: Row[]): void {
  for (const r of rows) {
    const saving = 1 - r.mine.us / r.lib.us;
    console.log(
      `${r.micro} / ${r.workload}: ${r.mine.name} ${fmt(r.mine.us)} µs/op vs ${r.lib.name} ${fmt(r.lib.us)} µs/op` +
        ` (${saving >= 0 ? '' : '+'}${(Math.abs(saving) * 100).toFixed(0)}% ${saving >= 0 ? 'less' : 'more'} CPU;` +
        ` rounds ${r.mine.samples.map(fmt).join(' ')} | ${r.lib.samples.map(fmt).join(' ')})` +
        (r.extra
          ? ' ' +
            Object.entries(r.extra)
              .map(([k, v]) => `${k} ${fmt(v)}`)
              .join(', ')
          : ''),
    );
  }
  if (process.argv.includes('--json')) for (const r of rows) console.log(JSON.stringify(r));
}

/** Fails the bench when the two outputs differ: a faster wrong answer is no result. */
export function sameOutput(what: string, a: unknown, b: unknown): void {
  const x = typeof a === 'string' || Buffer.isBuffer(a) ? String(a) : JSON.stringify(a);
  const y = typeof b === 'string' || Buffer.isBuffer(b) ? String(b) : JSON.stringify(b);
  if (x !== y) {
    let i = 0;
    while (i < x.length && x[i] === y[i]) i++;
    throw new Error(
      `${what}: the two implementations differ at character ${i}: ${JSON.stringify(x.slice(i, i + 80))} vs ${JSON.stringify(y.slice(i, i + 80))}`,
    );
  }
}
