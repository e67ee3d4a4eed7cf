#!/usr/bin/env node
/**
 * anima serve [--demo]    start a gateway (embedded PGlite + in-process coordination unless DATABASE_URL /
 *                         REDIS_URL are set); --demo also starts the built-in demo upstreams and seeds a
 *                         demo app, key, channels and aliases, then prints a working curl line.
 * anima migrate           run database migrations and exit.
 */
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { sql } from 'kysely';
import { newAdminToken } from '../config/admin-tokens.js';
import { openSecret, setSecretKey } from '../config/secrets.js';
import { ConfigAdmin } from '../config/admin.js';
import { applyPlan, exportConfig, formatPlan, parseConfigDoc, planApply } from '../config/config-file.js';
import { RedisCoordinator } from '../coord/redis.js';
import { hashKey, insertAlias, insertApp, insertChannel, insertKey } from '../config/repo.js';
import { openDatabase, type DbHandle } from '../store/db.js';
import { startFakeAnthropic, startFakeOpenAI } from '../../fakes/index.js';
import { startGateway } from './gateway.js';
import { settingsFromEnv } from './settings.js';

const DEMO_APP = 'app_demo';

async function seedDemo(
  dbh: DbHandle,
  openaiUrl: string,
  anthropicUrl: string,
  skFile: string,
): Promise<string> {
  const db = dbh.db;
  if (!(await db.selectFrom('app').select('id').where('id', '=', DEMO_APP).executeTakeFirst())) {
    await insertApp(db, 'Demo app', DEMO_APP);
  }
  // The demo upstreams listen on fresh ports at each start: point the demo channels at them.
  for (const [code, provider, url] of [
    ['demo-openai', 'openai', openaiUrl + '/v1'],
    ['demo-anthropic', 'anthropic', anthropicUrl],
  ] as const) {
    const row = await db
      .selectFrom('channel')
      .select('id')
      .where('code', '=', code)
      .where('deleted_at', 'is', null)
      .executeTakeFirst();
    if (row) {
      await db
        .updateTable('channel')
        .set({ base_url: url, version_no: sql`version_no + 1`, updated_at: new Date() })
        .where('id', '=', row.id)
        .execute();
    } else {
      await insertChannel(db, { code, provider, baseUrl: url, credential: 'demo-upstream-key' });
    }
  }
  for (const [name, tiers] of [
    [
      'demo',
      [
        [{ channel: 'demo-openai', model: 'gpt-4o-mini' }],
        [{ channel: 'demo-anthropic', model: 'claude-3-5-haiku' }],
      ],
    ],
    [
      'demo-claude',
      [
        [{ channel: 'demo-anthropic', model: 'claude-3-5-haiku' }],
        [{ channel: 'demo-openai', model: 'gpt-4o-mini' }],
      ],
    ],
  ] as const) {
    if (!(await db.selectFrom('alias').select('id').where('name', '=', name).executeTakeFirst())) {
      await insertAlias(db, { name, tiers: tiers.map((t) => [...t]) });
    }
  }
  // The demo key lives in a file beside the data folder (demo only: real keys are shown once, never stored).
  if (existsSync(skFile)) {
    const sk = readFileSync(skFile, 'utf8').trim();
    if (await db.selectFrom('api_key').select('id').where('key_hash', '=', hashKey(sk)).executeTakeFirst())
      return sk;
  }
  const { sk } = await insertKey(db, DEMO_APP, { name: 'demo' });
  mkdirSync(dirname(skFile), { recursive: true });
  writeFileSync(skFile, sk + '\n', { mode: 0o600 });
  return sk;
}

/**
 * `serve --workers N`: N gateway processes (node:cluster) sharing one listening port, so all of a
 * machine's cores serve. They share state the way separate instances do (PostgreSQL + Redis), so this
 * needs DATABASE_URL and REDIS_URL. The primary only forks, restarts a worker that dies, and forwards
 * SIGTERM/SIGINT; it prints one "listening on" line once every worker listens.
 */
async function serveCluster(n: number): Promise<void> {
  const settings = settingsFromEnv();
  if (!settings.databaseUrl || !(settings.redisUrl || settings.redisClusterNodes?.length)) {
    throw new Error(
      '--workers needs DATABASE_URL and REDIS_URL: the workers share state through them (the embedded mode is one process)',
    );
  }
  // Migrate once, before any worker opens the database.
  const dbh = await openDatabase({
    databaseUrl: settings.databaseUrl,
    dataDir: settings.dataDir,
    poolSize: 1,
  });
  await dbh.close();
  const cluster = (await import('node:cluster')).default;
  cluster.setupPrimary({ args: ['serve', '--worker'] });
  let listening = 0;
  let stopping = false;
  const fork = () => {
    const w = cluster.fork();
    w.on('message', (m: { listening?: string }) => {
      if (m?.listening && ++listening === n)
        process.stdout.write(`\nAnima gateway listening on ${m.listening}  [${n} workers]\n`);
    });
  };
  for (let i = 0; i < n; i++) fork();
  cluster.on('exit', (_w, code, signal) => {
    if (stopping) return;
    process.stderr.write(`worker exited (${signal ?? code}); starting another\n`);
    fork();
  });
  const stop = () => {
    if (stopping) return;
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    const t = setTimeout(() => process.exit(0), settings.drainMs + 5_000);
    t.unref();
    cluster.on('exit', () => {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
    });
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

async function serve(args: string[]): Promise<void> {
  const wi = args.indexOf('--workers');
  const workers = wi >= 0 ? Number(args[wi + 1]) : 1;
  if (!Number.isInteger(workers) || workers < 1 || workers > 64)
    throw new Error('--workers takes a number from 1 to 64');
  if (workers > 1) return serveCluster(workers);
  const settings = settingsFromEnv();
  const demo = args.includes('--demo');
  setSecretKey(settings.secretKey);
  if (!settings.databaseUrl && settings.dataDir !== 'memory://')
    mkdirSync(settings.dataDir, { recursive: true });
  const dbh = await openDatabase({
    databaseUrl: settings.databaseUrl,
    dataDir: settings.dataDir,
    poolSize: settings.dbPoolSize,
  });
  const stops: Array<() => Promise<void>> = [];
  let sk = '';
  if (demo) {
    const fo = await startFakeOpenAI({ name: 'demo-openai' });
    const fa = await startFakeAnthropic({ name: 'demo-anthropic' });
    stops.push(
      () => fo.close(),
      () => fa.close(),
    );
    sk = await seedDemo(
      dbh,
      fo.url,
      fa.url,
      join(settings.dataDir === 'memory://' ? '.anima-data' : dirname(settings.dataDir), 'demo-sk.txt'),
    );
  }
  let demoAdmin = '';
  if (demo && !settings.adminToken) {
    // Demo only: an admin token kept beside the data folder so the admin API can be tried at once.
    const f = join(
      settings.dataDir === 'memory://' ? '.anima-data' : dirname(settings.dataDir),
      'demo-admin-token.txt',
    );
    demoAdmin = existsSync(f) ? readFileSync(f, 'utf8').trim() : newAdminToken();
    mkdirSync(dirname(f), { recursive: true });
    writeFileSync(f, demoAdmin + '\n', { mode: 0o600 });
    settings.adminToken = demoAdmin;
  }
  const gw = await startGateway(settings, { dbh });
  stops.unshift(() => gw.close());
  stops.push(() => dbh.close());
  const mode = `${settings.databaseUrl ? 'PostgreSQL' : `PGlite (${settings.dataDir})`} + ${settings.redisClusterNodes?.length ? 'Redis Cluster' : settings.redisUrl ? 'Redis' : 'in-process coordination'}`;
  if (args.includes('--worker') && process.send) process.send({ listening: gw.url });
  else process.stdout.write(`\nAnima gateway listening on ${gw.url}  [${mode}]\n`);
  if (demo) {
    process.stdout.write(
      [
        '',
        `Demo key:   ${sk}`,
        `Aliases:    demo (OpenAI-style upstream, falls back to Anthropic-style), demo-claude (the reverse)`,
        ...(demoAdmin
          ? [`Admin:      curl -s ${gw.url}/api/admin/v1/circuits -H "Authorization: Bearer ${demoAdmin}"`]
          : []),
        `Console:    ${gw.url}/console/  (sign in with ${demoAdmin ? 'the admin token above' : 'your ANIMA_ADMIN_TOKEN'})`,
        '',
        'Try it:',
        `  curl -s ${gw.url}/v1/chat/completions -H "Authorization: Bearer ${sk}" -H "Content-Type: application/json" \\`,
        `    -d '{"model":"demo","messages":[{"role":"user","content":"Hello, Anima!"}]}'`,
        '',
        'Or with the official openai client:',
        `  OPENAI_BASE_URL=${gw.url}/v1 OPENAI_API_KEY=${sk} node -e "new (require('openai').OpenAI)().chat.completions.create({model:'demo',messages:[{role:'user',content:'hi'}]}).then(r=>console.log(r.choices[0].message.content))"`,
        '',
      ].join('\n') + '\n',
    );
  }
  let stopping = false;
  const stop = async (sig: string) => {
    if (stopping) return;
    stopping = true;
    gw.log.info({ sig }, 'shutting down');
    for (const s of stops) await s().catch(() => {});
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  // A stray rejection (a client library's own fire-and-forget command failing during a Redis or database
  // flap) is logged, not fatal: the process serving every other request stays up.
  process.on('unhandledRejection', (e) =>
    gw.log.error({ err: { message: String((e as Error)?.message ?? e) } }, 'unhandled rejection'),
  );
}

/** The admin write path against the database, publishing invalidations to running gateways (if Redis). */
async function adminFromEnv() {
  const settings = settingsFromEnv();
  setSecretKey(settings.secretKey);
  const dbh = await openDatabase({ databaseUrl: settings.databaseUrl, dataDir: settings.dataDir });
  const coord = settings.redisUrl
    ? new RedisCoordinator({ url: settings.redisUrl, prefix: settings.redisPrefix })
    : null;
  const admin = new ConfigAdmin(dbh.db, async (inv) => {
    if (coord) await coord.publish('config', JSON.stringify({ ...inv, at: Date.now() }));
  });
  const readCredential = async (code: string) => {
    // the version apply compares against: in force now, else the next scheduled one
    const rows = await dbh.db
      .selectFrom('channel')
      .select(['credential', 'effective_from', 'effective_to'])
      .where('code', '=', code)
      .where('deleted_at', 'is', null)
      .orderBy('effective_from')
      .execute();
    const now = Date.now();
    const r =
      rows.find(
        (x) =>
          new Date(x.effective_from).getTime() <= now &&
          (!x.effective_to || now < new Date(x.effective_to).getTime()),
      ) ?? rows.find((x) => new Date(x.effective_from).getTime() > now);
    return r ? openSecret(r.credential) : null;
  };
  return { admin, readCredential, close: async () => (coord ? coord.close() : undefined, dbh.close()) };
}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

async function applyCommand(args: string[]): Promise<void> {
  const file = flag(args, '-f') ?? flag(args, '--file');
  if (!file) throw new Error('usage: anima apply -f anima.yaml [--dry-run]');
  const doc = parseConfigDoc(readFileSync(file, 'utf8'));
  const { admin, readCredential, close } = await adminFromEnv();
  try {
    const plan = await planApply(admin, doc, process.env, readCredential);
    process.stdout.write(formatPlan(plan) + '\n');
    if (!args.includes('--dry-run') && plan.length) {
      await applyPlan(admin, { id: 'cli', name: process.env.USER ?? 'cli', role: 'admin' }, plan);
      process.stdout.write(`applied ${plan.length} change(s)\n`);
    }
  } finally {
    await close();
  }
}

async function exportCommand(args: string[]): Promise<void> {
  const { admin, close } = await adminFromEnv();
  try {
    const text = await exportConfig(admin);
    const out = flag(args, '-o');
    if (out) writeFileSync(out, text);
    else process.stdout.write(text);
  } finally {
    await close();
  }
}

async function main(): Promise<void> {
  const [cmd = 'serve', ...args] = process.argv.slice(2);
  switch (cmd) {
    case 'serve':
      return serve(args);
    case 'apply':
      return applyCommand(args);
    case 'export':
      return exportCommand(args);
    case 'migrate': {
      const s = settingsFromEnv();
      const dbh = await openDatabase({ databaseUrl: s.databaseUrl, dataDir: s.dataDir });
      await dbh.close();
      process.stdout.write('migrations applied\n');
      return;
    }
    default:
      process.stderr.write(
        `unknown command '${cmd}'. Commands: serve [--demo], apply -f FILE [--dry-run], export [-o FILE], migrate\n`,
      );
      process.exit(2);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`anima: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
