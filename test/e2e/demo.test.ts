/**
 * The README's first command, as a newcomer runs it: `anima serve --demo` on the embedded default prints
 * a URL, a demo key and a curl line, and the official openai client gets answers from it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

let child: ChildProcess;
let out = '';
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'anima-demo-'));
  child = spawn(process.execPath, ['dist/src/app/cli.js', 'serve', '--demo'], {
    env: {
      ...process.env,
      DATABASE_URL: '',
      REDIS_URL: '',
      ANIMA_ADMIN_TOKEN: '',
      ANIMA_PORT: '0',
      ANIMA_DATA_DIR: join(dir, 'db'),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('demo did not start: ' + out)), 40_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('Or with the official openai client')) {
        clearTimeout(t);
        resolve();
      }
    });
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (c) => reject(new Error(`demo exited ${c}: ${out}`)));
  });
}, 60_000);

afterAll(async () => {
  child?.kill('SIGTERM');
  await new Promise((r) => (child.exitCode !== null ? r(null) : child.on('exit', r)));
  rmSync(dir, { recursive: true, force: true });
});

describe('npm start (demo)', () => {
  it('prints a URL, a demo key and a curl line that work with the official client, JSON and streamed', async () => {
    const url = /listening on (http:\/\/[\d.:]+)/.exec(out)![1]!;
    const sk = /Demo key:\s+(sk-anima-\S+)/.exec(out)![1]!;
    expect(out).toContain(`curl -s ${url}/v1/chat/completions`);
    const client = new OpenAI({ apiKey: sk, baseURL: url + '/v1', maxRetries: 0 });
    const r = await client.chat.completions.create({
      model: 'demo',
      messages: [{ role: 'user', content: 'Hello, Anima!' }],
    });
    expect(r.choices[0]!.message.content).toContain('Hello, Anima!');
    let text = '';
    for await (const c of await client.chat.completions.create({
      model: 'demo-claude',
      messages: [{ role: 'user', content: 'Stream it' }],
      stream: true,
    })) {
      text += c.choices[0]?.delta?.content ?? '';
    }
    expect(text).toContain('Stream it');
    const admin = /Bearer (ak-anima-\S+)"/.exec(out)![1]!;
    const circuits = await fetch(url + '/api/admin/v1/circuits', {
      headers: { authorization: `Bearer ${admin}` },
    });
    expect(circuits.status).toBe(200);
  });
});
