/**
 * The CLI's commands (app/cli.ts reads the command line and loads this module only for a command that
 * runs: `anima --help` and a usage error answer without loading the gateway).
 */
import { PROVIDER_KINDS } from '../providers/registry.js';
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import { sql } from 'kysely';
import { AdminTokens, newAdminToken } from '../config/admin-tokens.js';
import { openSecret, setSecretKey } from '../config/secrets.js';
import { ConfigAdmin } from '../config/admin.js';
import { GatewayError } from '../core/errors.js';
import { applyPlan, exportConfig, formatPlan, parseConfigDoc, planApply } from '../config/config-file.js';
import { RedisCoordinator } from '../coord/redis.js';
import { hashKey, insertAlias, insertApp, insertChannel, insertKey } from '../config/repo.js';
import { openDatabase, type DbHandle } from '../store/db.js';
import { OutboundPolicy, setOutboundPolicy } from '../lib/outbound.js';
import { startFakeAnthropic, startFakeOpenAI } from '../../fakes/index.js';
import { startGateway } from './gateway.js';
import { clusterActuator, startManagementListener } from './management.js';
import { StartupRefused, managementListenerAccess, secretsAtRest } from './security.js';
import { createLogger } from '../observability/log.js';
import { rotateSecrets, sealedInventory } from '../config/rotate.js';
import { settingsFromEnv } from './settings.js';
import { fromLiteLLM, saveImported } from '../config/catalogue.js';

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
        [{ channel: 'demo-anthropic', model: 'claude-haiku-4-5' }],
      ],
    ],
    [
      'demo-claude',
      [
        [{ channel: 'demo-anthropic', model: 'claude-haiku-4-5' }],
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
  // Checked here, not only in each worker: a refused worker would be restarted forever.
  const atRest = secretsAtRest(settings);
  if (atRest.refuse) throw new StartupRefused(atRest.refuse);
  if (atRest.warn) process.stderr.write(`anima: WARNING: ${atRest.warn}\n`);
  // Migrate once, before any worker opens the database.
  const dbh = await openDatabase({
    databaseUrl: settings.databaseUrl,
    dataDir: settings.dataDir,
    poolSize: 1,
  });
  const cluster = (await import('node:cluster')).default;
  cluster.setupPrimary({ args: ['serve', '--worker'] });
  // Workers are numbered 1..n; a worker started in place of a dead one takes its number (the `worker`
  // label of the merged metrics stays bounded).
  const slots = new Map<number, number>();
  let management: Awaited<ReturnType<typeof startManagementListener>> | null = null;
  let tokensTimer: NodeJS.Timeout | null = null;
  if (settings.managementPort !== undefined) {
    // The primary serves the management port for all workers (see app/management.ts); it reads admin
    // tokens itself when a bearer is asked, so an admin token works as on a single process.
    const tokens = settings.managementToken ? new AdminTokens(dbh.db) : null;
    if (tokens) {
      await tokens.load();
      tokensTimer = setInterval(() => void tokens.load().catch(() => {}), settings.configRefreshMs);
      tokensTimer.unref();
    } else await dbh.close();
    management = await startManagementListener(
      settings.managementHost ?? '127.0.0.1',
      settings.managementPort,
      clusterActuator(cluster, (w) => slots.get(w.id) ?? 0),
      managementListenerAccess(settings, tokens),
      createLogger(settings.logLevel, undefined, settings.logFormat),
    );
  } else await dbh.close();
  let listening = 0;
  let stopping = false;
  const fork = (slot: number) => {
    const w = cluster.fork();
    slots.set(w.id, slot);
    w.on('message', (m: { listening?: string }) => {
      if (m?.listening && ++listening === n) {
        process.stdout.write(`\nAnima gateway listening on ${m.listening}  [${n} workers]\n`);
        if (management) process.stdout.write(`Management endpoints: ${management.url}/actuator\n`);
      }
    });
  };
  for (let i = 1; i <= n; i++) fork(i);
  cluster.on('exit', (w, code, signal) => {
    const slot = slots.get(w.id) ?? 0;
    slots.delete(w.id);
    if (stopping) return;
    process.stderr.write(`worker exited (${signal ?? code}); starting another\n`);
    fork(slot);
  });
  const stop = () => {
    if (stopping) return;
    stopping = true;
    if (tokensTimer) clearInterval(tokensTimer);
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

export async function serve(args: string[]): Promise<void> {
  const wi = args.indexOf('--workers');
  const workers = wi >= 0 ? Number(args[wi + 1]) : 1;
  if (!Number.isInteger(workers) || workers < 1 || workers > 64)
    throw new Error('--workers takes a number from 1 to 64');
  if (workers > 1) return serveCluster(workers);
  const settings = settingsFromEnv();
  const demo = args.includes('--demo');
  // Refused before the database is touched (startGateway checks again, and warns when allowed).
  const atRest = secretsAtRest(settings);
  if (atRest.refuse) throw new StartupRefused(atRest.refuse);
  // The demo upstreams listen on loopback: the demo lets operator-set URLs reach it, explicitly.
  if (demo) settings.outboundAllow = [...settings.outboundAllow, '127.0.0.0/8', '::1'];
  // The demo's models are in the price catalogue; a markup on their list price makes its spread visible.
  if (demo) settings.defaultSaleMarkup ??= '1.2';
  setSecretKey(settings.secretKey, settings.secretKeyPrevious);
  if (!settings.databaseUrl && settings.dataDir !== 'memory://')
    mkdirSync(settings.dataDir, { recursive: true });
  const dbh = await openDatabase({
    databaseUrl: settings.databaseUrl,
    dataDir: settings.dataDir,
    poolSize: settings.dbPoolSize,
    lockFor: demo ? 'serve --demo' : 'serve',
    onMigrate: migrationProgress(settings.databaseUrl ? 'PostgreSQL' : settings.dataDir),
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
  const gw = await startGateway(settings, { dbh, managementOverIpc: args.includes('--worker') });
  dbh.lock?.serving(gw.url);
  stops.unshift(() => gw.close());
  stops.push(() => dbh.close());
  const mode = `${settings.databaseUrl ? 'PostgreSQL' : `PGlite (${settings.dataDir})`} + ${settings.redisClusterNodes?.length ? 'Redis Cluster' : settings.redisUrl ? 'Redis' : 'in-process coordination'}`;
  if (args.includes('--worker') && process.send) process.send({ listening: gw.url });
  else process.stdout.write(`\nAnima gateway listening on ${gw.url}  [${mode}]\n`);
  if (gw.managementUrl) process.stdout.write(`Management endpoints: ${gw.managementUrl}/actuator\n`);
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
async function adminFromEnv(command: string) {
  const settings = settingsFromEnv();
  setSecretKey(settings.secretKey, settings.secretKeyPrevious);
  setOutboundPolicy(new OutboundPolicy({ allow: settings.outboundAllow })); // `apply` checks URLs as the gateway does
  const dbh = await openDatabase({
    databaseUrl: settings.databaseUrl,
    dataDir: settings.dataDir,
    lockFor: command,
    onMigrate: migrationProgress(settings.databaseUrl ? 'PostgreSQL' : settings.dataDir),
  });
  const coord = settings.redisUrl
    ? new RedisCoordinator({ url: settings.redisUrl, prefix: settings.redisPrefix })
    : null;
  const admin = new ConfigAdmin(
    dbh.db,
    async (inv) => {
      if (coord) await coord.publish('config', JSON.stringify({ ...inv, at: Date.now() }));
    },
    Date.now,
    { providerKinds: PROVIDER_KINDS },
  );
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
  return {
    admin,
    dbh,
    readCredential,
    close: async () => (coord ? coord.close() : undefined, dbh.close()),
  };
}

/** Progress on stderr while migrations run: a first start on PGlite takes a while and should say so. */
function migrationProgress(where: string) {
  return (step: { index: number; total: number; name: string }) => {
    if (step.index === 1)
      process.stderr.write(
        `anima: preparing the database (${where}): ${step.total} migration(s) to run` +
          (step.total > 5 ? ', a first start takes up to a minute' : '') +
          '\n',
      );
    process.stderr.write(`anima:   [${step.index}/${step.total}] ${step.name}\n`);
  };
}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

export async function applyCommand(args: string[]): Promise<void> {
  const file = flag(args, '-f') ?? flag(args, '--file');
  if (!file) throw new Error('usage: anima apply -f anima.yaml [--dry-run]');
  // A refused file is the operator's to fix: its message names the row and field; a stack would bury it.
  const refused = (e: unknown) => {
    if (!(e instanceof GatewayError)) throw e;
    process.stderr.write(`anima: apply refused, nothing written: ${e.message}\n`);
    process.exitCode = 1;
  };
  let doc;
  try {
    doc = parseConfigDoc(readFileSync(file, 'utf8'));
  } catch (e) {
    return refused(e);
  }
  // apply writes credentials: the gateway's rule for storing them in clear text holds here too.
  const atRest = secretsAtRest(settingsFromEnv());
  if (atRest.refuse)
    throw new StartupRefused(atRest.refuse.replace('refusing to start', 'refusing to apply'));
  if (atRest.warn) process.stderr.write(`anima: WARNING: ${atRest.warn}\n`);
  const { admin, readCredential, close } = await adminFromEnv(
    args.includes('--dry-run') ? 'apply --dry-run' : 'apply',
  );
  const dryRun = args.includes('--dry-run');
  try {
    const plan = await planApply(admin, doc, process.env, readCredential);
    process.stdout.write(formatPlan(plan) + '\n');
    if (!plan.length) return;
    // The dry run is the apply itself, rolled back: it refuses what the apply would, in the same words.
    const actor = { id: 'cli', name: process.env.USER ?? 'cli', role: 'admin' as const };
    const late = await applyPlan(admin, actor, plan, { dryRun });
    process.stdout.write(
      dryRun
        ? `dry run: ${plan.length} change(s) pass every check; nothing written\n`
        : `applied ${plan.length} change(s)\n`,
    );
    if (late)
      process.stdout.write(
        `running gateways were not told (Redis unreachable): they pick it up within ${late.within_ms} ms\n`,
      );
  } catch (e) {
    refused(e);
  } finally {
    await close();
  }
}

/**
 * `prices import FILE`: LiteLLM's model_prices_and_context_window.json into the price catalogue table,
 * replacing earlier imports of the same provider and model; the gateways reload it with the price table.
 */
export async function pricesCommand(args: string[]): Promise<void> {
  const file = args[0] === 'import' ? args[1] : undefined;
  if (!file || file.startsWith('--'))
    throw new StartupRefused('usage: anima prices import FILE [--source URL] [--dry-run]');
  const doc: unknown = JSON.parse(readFileSync(file, 'utf8'));
  const source = flag(args, '--source') ?? pathToFileURL(resolvePath(file)).href;
  const asOf = new Date().toISOString().slice(0, 10);
  const r = fromLiteLLM(doc, { source, asOf });
  const byProvider = new Map<string, number>();
  for (const e of r.entries) byProvider.set(e.provider, (byProvider.get(e.provider) ?? 0) + 1);
  const top = [...byProvider].sort((a, b) => b[1] - a[1]).slice(0, 10);
  process.stdout.write(
    `read ${r.entries.length + r.skipped.length} entries: ${r.entries.length} priced, ${r.skipped.length} skipped (no price Anima bills)` +
      (r.rounded.length ? `, ${r.rounded.length} rounded up to a whole micro-unit` : '') +
      `\nby provider: ${top.map(([p, n]) => `${p} ${n}`).join(', ')}${byProvider.size > 10 ? ', …' : ''}\n`,
  );
  if (args.includes('--dry-run')) return;
  const { admin, dbh, close } = await adminFromEnv('prices import');
  try {
    const { added, replaced } = await saveImported(dbh.db, r.entries);
    // The imported layer reloads with the price table.
    await admin.propagate({ table: 'price' });
    process.stdout.write(`imported: ${added} new, ${replaced} replaced\n`);
  } finally {
    await close();
  }
}

export async function exportCommand(args: string[]): Promise<void> {
  const { admin, close } = await adminFromEnv('export');
  try {
    const text = await exportConfig(admin);
    const out = flag(args, '-o');
    if (out) writeFileSync(out, text);
    else process.stdout.write(text);
  } finally {
    await close();
  }
}

/**
 * `anima secrets rotate`: every sealed value re-written under ANIMA_SECRET_KEY (see config/rotate.ts);
 * `anima secrets status`: how many values each key (or clear text) still holds.
 */
export async function secretsCommand(args: string[]): Promise<void> {
  const sub = args[0];
  if (sub !== 'rotate' && sub !== 'status')
    throw new StartupRefused('usage: anima secrets rotate [--batch N] | anima secrets status');
  const settings = settingsFromEnv();
  if (sub === 'rotate' && !settings.secretKey)
    throw new StartupRefused('anima secrets rotate: set ANIMA_SECRET_KEY to the key to seal under');
  const { admin, dbh, close } = await adminFromEnv(`secrets ${sub}`);
  try {
    if (sub === 'status') {
      for (const c of await sealedInventory(dbh.db))
        process.stdout.write(`${c.table}.${c.column}: ${JSON.stringify(c.by)}\n`);
      return;
    }
    const batch = Number(flag(args, '--batch') ?? 100);
    const counts = await rotateSecrets(dbh.db, {
      batch: Number.isInteger(batch) && batch > 0 ? batch : 100,
      actor: { id: 'cli', name: `secrets rotate (${process.env.USER ?? 'cli'})`, role: 'admin' },
      progress: (line) => process.stdout.write(line + '\n'),
    });
    let bad = 0;
    for (const c of counts) {
      process.stdout.write(
        `${c.table}.${c.column}: re-sealed ${c.resealed}, changed meanwhile ${c.raced}, unreadable ${c.unreadable.length}` +
          (c.unreadable.length
            ? ` (${c.unreadable.slice(0, 20).join(', ')}${c.unreadable.length > 20 ? ', …' : ''})`
            : '') +
          '\n',
      );
      bad += c.unreadable.length + c.raced;
    }
    // The plain values are unchanged, but the instances' L2 copies (Redis) hold the old ciphertexts: reload.
    for (const table of ['channel', 'api_key'] as const) await admin.propagate({ table });
    if (bad) {
      process.stdout.write(
        'not done: run again (values changed meanwhile are re-checked); an unreadable value needs its key in ANIMA_SECRET_KEY_PREVIOUS\n',
      );
      process.exitCode = 3;
    } else process.stdout.write('done: every sealed value is under the current key\n');
  } finally {
    await close();
  }
}

/** `anima migrate`: run the database migrations and exit. */
export async function migrateCommand(): Promise<void> {
  const s = settingsFromEnv();
  const dbh = await openDatabase({
    databaseUrl: s.databaseUrl,
    dataDir: s.dataDir,
    lockFor: 'migrate',
    onMigrate: migrationProgress(s.databaseUrl ? 'PostgreSQL' : s.dataDir),
  });
  await dbh.close();
  process.stdout.write('migrations applied\n');
}
