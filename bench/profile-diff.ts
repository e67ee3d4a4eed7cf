/**
 * Where the time per request goes, set against another process: self time by module and by function from
 * two V8 CPU profiles (node --cpu-prof), each divided by the requests that process served.
 *
 *   node dist/bench/profile-diff.js A.cpuprofile <requests served by A> B.cpuprofile <requests served by B>
 *
 * Typical use: `ANIMA_BENCH_PROFILE=/tmp/p node dist/bench/overhead.js --only json --twin-bare` profiles
 * the full gateway and a bare twin (no quota, no billing) in the same run; requests served = rps x
 * (duration x rounds + 1 s of warm-up). Only the JavaScript thread is sampled: time in syscalls made from
 * JavaScript (socket writes) counts, polling does not.
 */
import { readFileSync } from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
}

function load(file: string): { byModule: Map<string, number>; byFunction: Map<string, number> } {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  const byModule = new Map<string, number>();
  const byFunction = new Map<string, number>();
  for (const [id, us] of self) {
    const cf = byId.get(id)!.callFrame;
    if (cf.functionName === '(idle)') continue;
    let mod = cf.url
      .replace(/^file:\/\/.*?\/node_modules\/((@[^/]+\/)?[^/]+).*/, '$1')
      .replace(/^file:\/\/.*?\/dist\/src\/([^/]+)\/.*/, 'src/$1')
      .replace(/^node:internal\/([^/]+).*/, 'node:internal/$1');
    if (mod === '') mod = `(${cf.functionName})`;
    byModule.set(mod, (byModule.get(mod) ?? 0) + us);
    const fn = `${cf.functionName || '(anonymous)'} ${cf.url.split('/').slice(-2).join('/')}:${cf.lineNumber}`;
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + us);
  }
  return { byModule, byFunction };
}

const [fa, na, fb, nb] = process.argv.slice(2);
if (!fa || !na || !fb || !nb) {
  console.error('usage: profile-diff A.cpuprofile requestsA B.cpuprofile requestsB');
  process.exit(2);
}
const A = load(fa);
const B = load(fb);
for (const [title, a, b, rows] of [
  ['module', A.byModule, B.byModule, 25],
  ['function', A.byFunction, B.byFunction, 40],
] as const) {
  const keys = new Set([...a.keys(), ...b.keys()]);
  const per = [...keys]
    .map((k) => ({ k, a: (a.get(k) ?? 0) / Number(na), b: (b.get(k) ?? 0) / Number(nb) }))
    .sort((x, y) => y.a - y.b - (x.a - x.b));
  const ta = per.reduce((s, r) => s + r.a, 0);
  const tb = per.reduce((s, r) => s + r.b, 0);
  console.log(
    `\nby ${title}: µs per request, A ${ta.toFixed(0)} / B ${tb.toFixed(0)} (A - B = ${(ta - tb).toFixed(0)})`,
  );
  console.log('      A       B   A - B');
  for (const r of per.slice(0, rows))
    console.log(
      `${r.a.toFixed(1).padStart(7)} ${r.b.toFixed(1).padStart(7)} ${(r.a - r.b).toFixed(1).padStart(7)}  ${r.k}`,
    );
}
