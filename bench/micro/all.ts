/**
 * `npm run bench:micro`: every library A/B microbenchmark (each in its own process, one after another),
 * then one table: the hand-written piece's CPU per operation, the library's, and what the piece saves.
 * `--only a,b` runs just those; other arguments (`--rounds R`) are passed on. `resp` needs Redis
 * (REDIS_URL, default 127.0.0.1:6379).
 *
 *   node dist/bench/micro/all.js [--only metrics,sse,json-text,name-cache,resp] [--rounds R]
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Row } from './ab.js';

const ALL = ['metrics', 'sse', 'json-text', 'name-cache', 'resp'];
const i = process.argv.indexOf('--only');
const only = i > 0 ? process.argv[i + 1]!.split(',') : ALL;
const pass = process.argv.slice(2).filter((a, j, xs) => a !== '--only' && xs[j - 1] !== '--only');
const here = dirname(fileURLToPath(import.meta.url));

const rows: Row[] = [];
let failed = 0;
for (const name of only) {
  if (!ALL.includes(name)) throw new Error(`unknown microbenchmark ${name}; one of ${ALL.join(', ')}`);
  const child = spawn(process.execPath, [join(here, `${name}.js`), '--json', ...pass], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  for (const line of out.split('\n')) {
    if (line.startsWith('{"micro"')) rows.push(JSON.parse(line) as Row);
    else if (line) console.log(line);
  }
  if (code !== 0) {
    failed++;
    console.error(`${name} failed (exit ${code})`);
  }
}

const fmt = (x: number): string => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const table = [
  ['piece', 'workload', 'hand-written', 'µs/op', 'library', 'µs/op', 'saves'],
  ...rows.map((r) => [
    r.micro,
    r.workload,
    r.mine.name,
    fmt(r.mine.us),
    r.lib.name,
    fmt(r.lib.us),
    `${((1 - r.mine.us / r.lib.us) * 100).toFixed(0)}%`,
  ]),
];
const widths = table[0]!.map((_, c) => Math.max(...table.map((r) => r[c]!.length)));
console.log('');
for (const [n, r] of table.entries()) {
  console.log('| ' + r.map((v, c) => v.padEnd(widths[c]!)).join(' | ') + ' |');
  if (n === 0) console.log('| ' + widths.map((w) => '-'.repeat(w)).join(' | ') + ' |');
}
process.exitCode = failed ? 1 : 0;
