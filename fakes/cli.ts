/**
 * Runs the fake upstreams:
 * `node dist/fakes/cli.js [--openai-port N] [--anthropic-port N] [--gemini-port N] [--name X]`.
 * Prints one JSON line {"openai":"http://127.0.0.1:...","anthropic":"http://127.0.0.1:...","gemini":"http://127.0.0.1:..."}
 * and stops on SIGTERM/SIGINT.
 */
import { startFakeAnthropic } from './anthropic.js';
import { startFakeGemini } from './gemini.js';
import { startFakeOpenAI } from './openai.js';

const USAGE = 'usage: fakes/cli.js [--openai-port N] [--anthropic-port N] [--gemini-port N] [--name X]';

function parseArgs(argv: string[]): {
  openaiPort: number;
  anthropicPort: number;
  geminiPort: number;
  name: string | undefined;
} {
  const out = { openaiPort: 0, anthropicPort: 0, geminiPort: 0, name: undefined as string | undefined };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i]!.split('=', 2) as [string, string | undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`missing value for ${flag}`);
      return v;
    };
    const port = (): number => {
      const v = value();
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`invalid port for ${flag}: ${v}`);
      return n;
    };
    if (flag === '--openai-port') out.openaiPort = port();
    else if (flag === '--anthropic-port') out.anthropicPort = port();
    else if (flag === '--gemini-port') out.geminiPort = port();
    else if (flag === '--name') out.name = value();
    else throw new Error(`unknown argument: ${flag}\n${USAGE}`);
  }
  return out;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const named = args.name ? { name: args.name } : {};
  const openai = await startFakeOpenAI({ port: args.openaiPort, ...named });
  const anthropic = await startFakeAnthropic({ port: args.anthropicPort, ...named });
  const gemini = await startFakeGemini({ port: args.geminiPort, ...named });
  process.stdout.write(
    JSON.stringify({ openai: openai.url, anthropic: anthropic.url, gemini: gemini.url }) + '\n',
  );
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    void Promise.all([openai.close(), anthropic.close(), gemini.close()]).then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
