/**
 * The model splice (src/lib/json-text.ts: the client's bytes with `model` replaced) against what it
 * replaces: serializing the parsed body again, `JSON.stringify({ ...body, model })`, plus the UTF-8
 * encoding the socket write would do for that string. The body is parsed either way (the route
 * validates it), so the parse is not part of either side. CPU per upstream attempt, for the overhead
 * bench's bodies: the one-line prompt (`json`), the same streamed with the usage option added
 * (`stream`), and the 8-turn ~16 KB conversation (`json-large`). Both must give the same bytes first.
 *
 *   node dist/bench/micro/json-text.js [--ops N] [--rounds R] [--json]
 */
import { rememberJsonBytes, withModel } from '../../src/lib/json-text.js';
import { ab, arg, type Impl, report, sameOutput } from './ab.js';

const OPS = arg('ops', 100_000);

const turn =
  'A gateway sits between applications and many upstream providers; it authenticates, admits, routes, streams and bills. '.repeat(
    18,
  );
const bodies = {
  'one-line prompt': { model: 'bench-alias', messages: [{ role: 'user', content: 'Say hello.' }] },
  'one-line prompt, streamed (+ usage option)': {
    model: 'bench-alias',
    stream: true,
    messages: [{ role: 'user', content: 'Say hello.' }],
  },
  '~16 KB conversation': {
    model: 'bench-alias',
    messages: Array.from({ length: 8 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: turn })),
    max_tokens: 256,
  },
};

const rows = [];
for (const [workload, value] of Object.entries(bodies)) {
  // As the route has it: the parsed body with the bytes it came from.
  const bytes = Buffer.from(JSON.stringify(value));
  const body = JSON.parse(bytes.toString()) as Record<string, unknown>;
  rememberJsonBytes(body, bytes);
  const usage = body.stream === true;
  const splice = () => withModel(body, 'upstream-model-2026', usage)!;
  const serialize = () =>
    Buffer.from(
      JSON.stringify(
        usage
          ? { ...body, model: 'upstream-model-2026', stream_options: { include_usage: true } }
          : { ...body, model: 'upstream-model-2026' },
      ),
    );
  sameOutput(workload, splice(), serialize());
  const size = splice().length;
  const loop = (name: string, f: () => Buffer): Impl => ({
    name,
    run(n) {
      let len = 0;
      for (let i = 0; i < n; i++) len += f().length;
      if (len !== n * size) throw new Error('wrong length');
    },
  });
  rows.push(
    await ab(
      'json-text',
      workload,
      loop('splice', splice),
      loop('stringify', serialize),
      bytes.length > 4096 ? OPS / 10 : OPS,
    ),
  );
}
report(rows);
