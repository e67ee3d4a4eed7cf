/**
 * CPU per request of the upstream transport alone (src/providers/transport.ts): N calls through
 * `Transport.send` against a node:http upstream in a child process, so this process's CPU time is the
 * transport's (and undici's) share of a relayed call, with no gateway around it.
 *
 *   node dist/bench/micro/transport.js [--requests N] [--concurrency C] [--rounds R] [--against FILE]
 *
 * `--against FILE`: another build of the transport (a compiled transport.js exporting `Transport`), run
 * in the same rounds, interleaved with this one: an A/B in one run. Two scenarios: `json` (a ~400-byte
 * JSON answer read whole) and `sse` (20 events read chunk by chunk). Prints medians over the rounds.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Abort } from '../../src/lib/abort.js';
import { Transport, type TransportTimeouts } from '../../src/providers/transport.js';

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const REQUESTS = arg('requests', 20_000);
const CONCURRENCY = arg('concurrency', 32);
const ROUNDS = arg('rounds', 5);
const against = process.argv.includes('--against')
  ? resolve(process.argv[process.argv.indexOf('--against') + 1]!)
  : null;

// The upstream: a plain node:http server in its own process (its CPU is not counted here).
const UPSTREAM = `
const http = require('node:http');
const json = JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion', model: 'm',
  choices: [{ index: 0, message: { role: 'assistant', content: 'x'.repeat(200) }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 10, completion_tokens: 20, total_tokens: 30 } });
const sse = Array.from({ length: 20 }, (_, i) => 'data: {"choices":[{"delta":{"content":"' + i + '"}}]}\\n\\n');
const s = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    if (req.url === '/sse') {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      let i = 0;
      const next = () => { if (i < sse.length) { res.write(sse[i++]); setImmediate(next); } else res.end('data: [DONE]\\n\\n'); };
      next();
    } else {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) });
      res.end(json);
    }
  });
});
s.keepAliveTimeout = 60000;
s.listen(0, '127.0.0.1', () => process.stdout.write(String(s.address().port) + '\\n'));
`;

interface Sendable {
  send: Transport['send'];
  close(): Promise<void>;
}

const T: TransportTimeouts = { connectMs: 2_000, firstByteMs: 10_000, idleMs: 10_000 };
const BODY = JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hello' }] });

async function run(tr: Sendable, base: string, path: string, n: number): Promise<number> {
  const call = { path, headers: { 'content-type': 'application/json' }, body: BODY, stream: path === '/sse' };
  let left = n;
  const worker = async () => {
    while (left-- > 0) {
      const up = await tr.send('bench', base, call, T, new Abort(), 64);
      if (call.stream) for await (const _ of up.chunks());
      else await up.bytes();
    }
  };
  const c0 = process.cpuUsage();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / n;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const child = spawn(process.execPath, ['-e', UPSTREAM], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await once(child.stdout, 'data')) as [Buffer];
  const base = `http://127.0.0.1:${line.toString().trim()}`;
  const impls: Array<[string, Sendable]> = [['this build', new Transport()]];
  if (against) {
    const mod = (await import(pathToFileURL(against).href)) as { Transport: new () => Sendable };
    impls.push([against, new mod.Transport()]);
  }
  try {
    for (const [label, path] of [
      ['json', '/json'],
      ['sse', '/sse'],
    ] as const) {
      const samples = new Map<string, number[]>(impls.map(([name]) => [name, []]));
      for (const [, tr] of impls) await run(tr, base, path, Math.min(REQUESTS, 5_000)); // warm-up
      for (let r = 0; r < ROUNDS; r++)
        for (const [name, tr] of r % 2 ? [...impls].reverse() : impls)
          samples.get(name)!.push(await run(tr, base, path, REQUESTS));
      for (const [name, xs] of samples)
        console.log(
          `${label.padEnd(5)} ${name.padEnd(40)} CPU ${median(xs).toFixed(1)} us/request (median of ${xs.length}; ` +
            `${xs.map((x) => x.toFixed(1)).join(' ')})`,
        );
    }
  } finally {
    for (const [, tr] of impls) await tr.close();
    child.kill();
  }
}

await main();
