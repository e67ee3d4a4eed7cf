/**
 * The built logger in real processes (needs `npm run build`): a child that exits at once still has every
 * line out, and several processes writing one pipe never split each other's lines.
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';

describe('createLogger in child processes', () => {
  it("createLogger's default (stdout) has every line out when the process exits (the built module, in a child)", async () => {
    // A child logs 3,000 lines and exits at once: the last batch goes out in the exit hook.
    const code = `
      const { createLogger } = await import(${JSON.stringify(new URL('../../dist/src/observability/log.js', import.meta.url).pathname)});
      const log = createLogger('info');
      for (let i = 0; i < 3000; i++) log.info({ i }, 'line');
      setImmediate(() => process.exit(0));`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    await new Promise((r) => child.on('close', r));
    const got = out
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { i: number }).i);
    expect(got).toEqual(Array.from({ length: 3000 }, (_, i) => i));
  });

  it("processes writing into one pipe (workers sharing stdout) never split each other's lines", async () => {
    // Three children log 10,000 lines of ~1,000 characters each, as fast as they can, into the same pipe,
    // which a fourth process drains. Every line read back must be one whole line of one writer.
    const reader = spawn('cat', [], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    reader.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    const code = (w: string) => `
      const { createLogger } = await import(${JSON.stringify(new URL('../../dist/src/observability/log.js', import.meta.url).pathname)});
      const log = createLogger('info');
      const pad = 'x'.repeat(950);
      for (let i = 0; i < 10000; i++) log.info({ w: '${w}', i, pad }, 'line');
      setImmediate(() => process.exit(0));`;
    const writers = ['a', 'b', 'c'].map((w) =>
      spawn(process.execPath, ['--input-type=module', '-e', code(w)], {
        stdio: ['ignore', reader.stdin, 'inherit'],
      }),
    );
    await Promise.all(writers.map((c) => new Promise((r) => c.on('close', r))));
    reader.stdin.end();
    await new Promise((r) => reader.on('close', r));
    const lines = out.trim().split('\n');
    expect(lines).toHaveLength(30_000);
    const seen = { a: [] as number[], b: [] as number[], c: [] as number[] };
    for (const l of lines) {
      const j = JSON.parse(l) as { w: 'a' | 'b' | 'c'; i: number };
      seen[j.w].push(j.i);
    }
    for (const w of ['a', 'b', 'c'] as const)
      expect(seen[w]).toEqual(Array.from({ length: 10000 }, (_, i) => i));
  }, 30_000);
});
