/**
 * Redis key names kept by NameCache (src/lib/name-cache.ts) against the same names built anew per use
 * (template strings, as src/quota/redis.ts builds them), each carried through what the names go through
 * on the hot path: TickPipeline's key dedupe (`indexOf` over the turn's keys) and RespWriter's encoding.
 * CPU per request, in turns of 10 requests from 2 apps and 5 keys, each request naming its two scopes'
 * keys and its tag's four queue keys. Both sides must encode the same bytes first.
 *
 *   node dist/bench/micro/name-cache.js [--requests N] [--rounds R] [--json]
 */
import { RespWriter } from '../../src/coord/resp.js';
import { NameCache } from '../../src/lib/name-cache.js';
import { ab, arg, type Impl, report, sameOutput } from './ab.js';

const REQUESTS = arg('requests', 200_000);
const TURN = 10;
const PREFIX = 'anima:';
const APPS = ['app_7f3k2a9q', 'app_2m8x1c4v'];
const KEYS = ['key_a1', 'key_b2', 'key_c3', 'key_d4', 'key_e5'].map((k) => k + 'x9f8e7d6c5b4a');

const k = (tag: string, rest: string) => `${PREFIX}{q:${tag}}:${rest}`;

type Names = (tag: string, scope: string, id: string, queue: string) => string[];

const cached = (): Names => {
  const scopes = new NameCache<[string, string]>();
  const queues = new NameCache<[string, string, string, string]>();
  return (tag, scope, id, queue) => [
    ...scopes.get(tag, scope, id, () => [k(tag, `c:${scope}:${id}`), k(tag, `s:${scope}:${id}`)]),
    ...queues.get(tag, queue, '', () => [
      k(tag, `w:${queue}`),
      k(tag, `wd:${queue}`),
      k(tag, 'res'),
      k(tag, 'resx'),
    ]),
  ];
};
const built = (): Names => (tag, scope, id, queue) => [
  k(tag, `c:${scope}:${id}`),
  k(tag, `s:${scope}:${id}`),
  k(tag, `w:${queue}`),
  k(tag, `wd:${queue}`),
  k(tag, 'res'),
  k(tag, 'resx'),
];

/** `n` requests' names through the dedupe and the encoder; the bytes written. */
function turns(names: Names, n: number, w: RespWriter, keep: boolean): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < n; i += TURN) {
    const keys: string[] = [];
    for (let j = i; j < Math.min(n, i + TURN); j++) {
      const app = APPS[j % 2]!;
      const key = KEYS[(j >> 1) % 5]!;
      for (const [scope, id] of [
        ['app', app],
        ['key', key],
      ] as const)
        for (const name of names(app, scope, id, key)) if (keys.indexOf(name) < 0) keys.push(name);
    }
    w.command(keys.length);
    for (const name of keys) w.arg(name);
    const b = w.take();
    if (keep) out.push(b);
  }
  return out;
}

const impl = (name: string, names: Names): Impl => {
  const w = new RespWriter();
  return { name, run: (n) => void turns(names, n, w, false) };
};

sameOutput(
  'encoded turns',
  Buffer.concat(turns(cached(), 1_000, new RespWriter(), true)),
  Buffer.concat(turns(built(), 1_000, new RespWriter(), true)),
);
report([
  await ab(
    'name-cache',
    'a request naming 2 scopes and its queue',
    impl('NameCache', cached()),
    impl('built per use', built()),
    REQUESTS,
  ),
]);
