#!/usr/bin/env node
/**
 * anima serve [--demo]    start a gateway (embedded PGlite + in-process coordination unless DATABASE_URL /
 *                         REDIS_URL are set); --demo also starts the built-in demo upstreams and seeds a
 *                         demo app, key, channels and aliases, then prints a working curl line.
 * anima migrate           run database migrations and exit.
 * anima prices import FILE [--source URL] [--dry-run]
 *                         load list prices from a LiteLLM model_prices_and_context_window.json into the
 *                         price catalogue (the cost of a model with no price row; config/catalogue.ts).
 * anima secrets rotate    re-seal every stored credential / webhook secret under ANIMA_SECRET_KEY;
 * anima secrets status    how many stored values each key (or clear text) holds.
 */
import { DataDirInUse } from '../store/dir-lock.js';
import { StartupRefused } from './security.js';

/** Every command: its usage line and what it does (`anima --help`, `anima <command> --help`). */
const COMMANDS: Record<string, { usage: string; about: string; more?: string }> = {
  serve: {
    usage: 'anima serve [--demo] [--workers N]',
    about: 'start a gateway',
    more: [
      'Embedded PGlite (ANIMA_DATA_DIR, default .anima-data/db) and in-process coordination unless',
      'DATABASE_URL / REDIS_URL are set. --demo also starts two demo upstreams, seeds a demo app, key,',
      'channels and aliases, and prints a working curl line. --workers N: N processes on one port',
      '(production mode only). The port is ANIMA_PORT (default 8787), the address ANIMA_HOST.',
      'Logs: ANIMA_LOG_FORMAT=json|pretty (pretty on a terminal), ANIMA_LOG_LEVEL.',
    ].join('\n'),
  },
  apply: {
    usage: 'anima apply -f FILE [--dry-run]',
    about: 'make the configuration what FILE says (one transaction; --dry-run checks it, writes nothing)',
    more: [
      "A channel's credential comes from the environment variable its credential_env names. An unset",
      'variable keeps the stored credential of an existing channel; a placeholder value is refused.',
      'On the embedded default, stop the gateway first (or use its admin API): one process per data directory.',
    ].join('\n'),
  },
  export: {
    usage: 'anima export [-o FILE]',
    about: 'write the configuration in force as a file `apply` takes (credentials as variable names)',
  },
  prices: {
    usage: 'anima prices import FILE [--source URL] [--dry-run]',
    about: "load list prices from LiteLLM's model_prices_and_context_window.json into the price catalogue",
  },
  secrets: {
    usage: 'anima secrets rotate [--batch N] | anima secrets status',
    about: 're-seal stored credentials under ANIMA_SECRET_KEY, or count what each key holds',
  },
  migrate: { usage: 'anima migrate', about: 'run database migrations and exit' },
  help: { usage: 'anima help [COMMAND]', about: 'this text, or one command’s' },
};

function helpText(cmd?: string): string {
  const c = cmd ? COMMANDS[cmd] : undefined;
  if (c) return `usage: ${c.usage}\n\n${c.about}${c.more ? '\n\n' + c.more : ''}\n`;
  const w = Math.max(...Object.keys(COMMANDS).map((k) => k.length));
  return [
    'usage: anima <command> [options]   (no command: serve)',
    '',
    'commands:',
    ...Object.entries(COMMANDS).map(([k, v]) => `  ${k.padEnd(w)}  ${v.about}`),
    '',
    'anima <command> --help   options of one command',
    '--debug                  print the stack trace of an error (else one line)',
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2).filter((a) => a !== '--debug');
  if (argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    process.stdout.write(helpText(argv[1]));
    return;
  }
  const [cmd = 'serve', ...args] = argv;
  if (args.includes('--help') || args.includes('-h')) {
    if (!COMMANDS[cmd]) throw new UsageError(`unknown command '${cmd}'`);
    process.stdout.write(helpText(cmd));
    return;
  }
  if (!COMMANDS[cmd]) throw new UsageError(`unknown command '${cmd}'`);
  // Loaded only now: the gateway's modules take a second or more to load, which --help need not wait for.
  const c = await import('./commands.js');
  switch (cmd) {
    case 'serve':
      return c.serve(args);
    case 'apply':
      return c.applyCommand(args);
    case 'export':
      return c.exportCommand(args);
    case 'secrets':
      return c.secretsCommand(args);
    case 'prices':
      return c.pricesCommand(args);
    case 'migrate':
      return c.migrateCommand();
    default:
      throw new UsageError(`unknown command '${cmd}'`);
  }
}

/** A command line Anima can't read: one line, the help pointer, exit 2. */
class UsageError extends Error {}

main().catch((e: unknown) => {
  process.stderr.write(`anima: ${errorLine(e)}\n`);
  process.exit(e instanceof UsageError ? 2 : 1);
});

/**
 * An error as the operator needs it: one line saying what to fix. A refused start, a busy port or a data
 * directory in use is a setting to change, and a stack trace would only bury it; `--debug` (or
 * ANIMA_DEBUG=1) prints the stack as well.
 */
function errorLine(e: unknown): string {
  const debug = process.argv.includes('--debug') || process.env.ANIMA_DEBUG === '1';
  const err = e as NodeJS.ErrnoException & { address?: string; port?: number };
  let line: string;
  if (e instanceof UsageError) line = `${err.message}. Run \`anima --help\` for the commands.`;
  else if (err?.code === 'EADDRINUSE')
    line =
      `port ${err.port ?? '?'} on ${err.address ?? 'this host'} is already in use (another Anima, or another program, listens there): ` +
      'stop it, or choose another port with ANIMA_PORT.';
  else if (err?.code === 'EACCES' && err.syscall === 'listen')
    line = `not allowed to listen on port ${err.port ?? '?'}: choose a port above 1023 with ANIMA_PORT.`;
  else if (e instanceof StartupRefused || e instanceof DataDirInUse) line = err.message;
  else line = String(err?.message ?? e).split('\n')[0]!;
  if (debug && e instanceof Error && e.stack) return `${line}\n${e.stack}`;
  if (!(e instanceof StartupRefused || e instanceof DataDirInUse || e instanceof UsageError))
    line += ' (run with --debug for the stack trace)';
  return line;
}
