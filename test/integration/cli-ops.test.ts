/**
 * The CLI as an operator meets it: help, one-line errors, a busy port, one process per embedded data
 * directory (a second `serve` and an `apply` are refused while a gateway holds it, and a crashed owner's
 * lock is taken over), migration progress on a first start, readable logs on request, and an access line
 * per admin call.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CONFIG_ENV, CONFIG_FILE } from '../fixtures/config-file.js';
import { waitFor } from '../wait.js';

/** Waits for `fn` to give a value, and returns it. */
async function until<T>(fn: () => T | undefined | null | false, timeoutMs = 5_000): Promise<T> {
  let v: T | undefined | null | false;
  await waitFor(() => (v = fn()), timeoutMs, 20);
  return v as T;
}

const CLI = 'dist/src/app/cli.js';
const dir = mkdtempSync(join(tmpdir(), 'anima-cli-ops-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const baseEnv = (over: Record<string, string> = {}) => ({
  ...process.env,
  DATABASE_URL: '',
  REDIS_URL: '',
  ANIMA_LOG_FORMAT: 'json',
  ...over,
});

function run(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [CLI, ...args], {
    env: baseEnv(env),
    encoding: 'utf8',
    timeout: 90_000,
  });
}

/** A `serve` child whose output is collected as it comes. */
function serve(args: string[], env: Record<string, string>) {
  const child: ChildProcess = spawn(process.execPath, [CLI, 'serve', ...args], { env: baseEnv(env) });
  const out = { stdout: '', stderr: '', exited: null as number | null };
  child.stdout!.on('data', (b: Buffer) => (out.stdout += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (out.stderr += b.toString()));
  // 'close', not 'exit': 'exit' can come before the last of stdout is read, and a test reading the
  // output once the child exited would then miss its last lines (seen under a loaded suite).
  child.on('close', (code, sig) => (out.exited = code ?? (sig ? 128 : -1)));
  return { child, out };
}

const noStack = (text: string) => expect(text).not.toMatch(/\n\s+at /);

describe('anima CLI', () => {
  it('--help lists every command, <command> --help its usage; an unknown command is one line and exit 2', () => {
    const help = run(['--help']);
    expect(help.status).toBe(0);
    for (const c of ['serve', 'apply', 'export', 'prices', 'secrets', 'migrate'])
      expect(help.stdout).toMatch(new RegExp(`^  ${c} `, 'm'));
    expect(run(['help', 'apply']).stdout).toContain('usage: anima apply -f FILE [--dry-run]');
    const sub = run(['apply', '--help']);
    expect([sub.status, sub.stdout.split('\n')[0]]).toEqual([0, 'usage: anima apply -f FILE [--dry-run]']);
    const bad = run(['frobnicate']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toBe("anima: unknown command 'frobnicate'. Run `anima --help` for the commands.\n");
  });

  it('a busy port is one line naming the port and the setting; --debug adds the stack', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const port = String((blocker.address() as { port: number }).port);
    try {
      const env = { ANIMA_PORT: port, ANIMA_DATA_DIR: 'memory://' };
      const r = run(['serve'], env);
      expect(r.status).toBe(1);
      expect(r.stderr).toContain(`anima: port ${port} on 127.0.0.1 is already in use`);
      expect(r.stderr).toContain('ANIMA_PORT');
      noStack(r.stderr);
      const d = run(['serve', '--debug'], env);
      expect(d.stderr).toMatch(/\n\s+at /);
    } finally {
      blocker.close();
    }
  }, 120_000);

  it('one process per data directory: a second serve and an apply are refused while a gateway holds it; a killed owner’s lock is taken over', async () => {
    const data = join(dir, 'db');
    const env = { ANIMA_DATA_DIR: data, ANIMA_PORT: '0', ANIMA_ADMIN_TOKEN: 'adm-' + 'x'.repeat(40) };
    const first = serve([], env);
    try {
      await until(() => /listening on (http:\/\/\S+)/.exec(first.out.stdout), 120_000);
      const url = /listening on (http:\/\/\S+)/.exec(first.out.stdout)![1]!;
      // a first start says what it is doing while migrations run
      expect(first.out.stderr).toMatch(/anima: preparing the database \(.*db\): \d+ migration\(s\) to run/);
      expect(first.out.stderr).toMatch(/anima: {3}\[1\/\d+\] /);

      const second = run(['serve'], env);
      expect(second.status).toBe(1);
      expect(second.stderr).toContain(`the data directory ${data} is in use by another Anima process`);
      expect(second.stderr).toContain(`serving ${url}`);
      noStack(second.stderr);

      const f = join(dir, 'anima.yaml');
      writeFileSync(f, CONFIG_FILE);
      const apply = run(['apply', '-f', f], { ...env, ...CONFIG_ENV });
      expect(apply.status).toBe(1);
      expect(apply.stderr).toContain(`admin API (${url}/api/admin/v1)`);
      expect(apply.stdout).not.toContain('applied');

      // an admin call leaves one access line: actor, action, target, status
      const res = await fetch(`${url}/api/admin/v1/channels/nope`, {
        headers: { authorization: `Bearer ${env.ANIMA_ADMIN_TOKEN}` },
      });
      expect(res.status).toBe(404);
      const line = await until(() =>
        first.out.stdout
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as Record<string, unknown>)
          .find((o) => o.msg === 'admin' && o.action === 'GET /api/admin/v1/channels/:code'),
      );
      expect(line).toMatchObject({ target: { code: 'nope' }, status: 404, role: 'admin' });

      // killed without a chance to clean up: the lock file stays, and is stale
      first.child.kill('SIGKILL');
      await waitFor(() => first.out.exited !== null);
      expect(existsSync(data + '.lock')).toBe(true);
      const after = run(['apply', '-f', f], { ...env, ...CONFIG_ENV });
      expect(after.stderr).not.toContain('in use');
      expect(after.stdout).toContain('applied 6 change(s)');
      expect(existsSync(data + '.lock')).toBe(false);
    } finally {
      first.child.kill('SIGKILL');
    }
  }, 240_000);

  it('ANIMA_LOG_FORMAT=pretty: log lines for a person, not JSON', async () => {
    const g = serve([], { ANIMA_DATA_DIR: 'memory://', ANIMA_PORT: '0', ANIMA_LOG_FORMAT: 'pretty' });
    try {
      await waitFor(() => /listening on/.test(g.out.stdout), 120_000);
      g.child.kill('SIGTERM');
      await until(() => g.out.exited !== null, 30_000);
      const line = g.out.stdout.split('\n').find((l) => l.includes('shutting down'));
      expect(line).toBeDefined();
      expect(line!.trim().startsWith('{')).toBe(false);
      expect(line).toMatch(/\d\d:\d\d:\d\d\.\d{3}/);
    } finally {
      g.child.kill('SIGKILL');
    }
  }, 180_000);
});
