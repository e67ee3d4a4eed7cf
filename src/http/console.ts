/**
 * Serves the operator console: the static files `npm run build` writes to dist/console (see
 * scripts/build-console.mjs), at /console/. The files are read once into memory and looked up by exact
 * name, so no request touches the file system and no path can climb out of the folder. Every answer is
 * revalidated (ETag), and the pages may load nothing from elsewhere (CSP): gateways often run offline.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { GatewayError } from '../core/errors.js';

export const CONSOLE_PATH = '/console';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
};

const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

/**
 * Where the built console is: dist/console beside the compiled server (dist/src/http -> dist/console),
 * or, when the server runs from its TypeScript sources (tests), <root>/dist/console.
 */
export function consoleDir(): string | null {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const c of [join(here, '..', '..', 'console'), join(here, '..', '..', 'dist', 'console')]) {
    if (existsSync(join(c, 'index.html')) && existsSync(join(c, 'build.json'))) return c;
  }
  return null;
}

function load(dir: string): Map<string, Asset> {
  const out = new Map<string, Asset>();
  const walk = (d: string) => {
    for (const f of readdirSync(d)) {
      const p = join(d, f);
      if (statSync(p).isDirectory()) walk(p);
      else {
        const type = TYPES[extname(f)];
        if (!type) continue; // only known kinds of file are served
        const body = readFileSync(p);
        out.set(relative(dir, p).split(sep).join('/'), {
          body,
          type,
          etag: `"${createHash('sha1').update(body).digest('base64url').slice(0, 20)}"`,
        });
      }
    }
  };
  walk(dir);
  return out;
}

export function registerConsole(app: FastifyInstance, opts: { dir?: string } = {}): void {
  let assets: Map<string, Asset> | null = null;
  let lastTry = 0;
  /** Loaded at the first request (and retried every 5 s while the console isn't built). */
  const files = (): Map<string, Asset> | null => {
    if (assets || Date.now() - lastTry < 5_000) return assets;
    lastTry = Date.now();
    const dir = opts.dir ?? consoleDir();
    if (dir) assets = load(dir);
    return assets;
  };

  const send = (req: FastifyRequest, reply: FastifyReply, name: string) => {
    const all = files();
    if (!all) {
      return reply
        .code(503)
        .type('text/plain; charset=utf-8')
        .header('cache-control', 'no-store')
        .send(
          'The operator console is not built: run `npm run build` (it builds the console into dist/console).',
        );
    }
    const a = all.get(name);
    if (!a) throw new GatewayError('not_found', `No console file '${name.slice(0, 100)}'.`);
    void reply.headers(SECURITY_HEADERS).header('cache-control', 'no-cache').header('etag', a.etag);
    if (req.headers['if-none-match'] === a.etag) return reply.code(304).send();
    return reply.type(a.type).send(a.body);
  };

  app.get(CONSOLE_PATH, async (_req, reply) => reply.redirect(CONSOLE_PATH + '/', 302));
  app.get(CONSOLE_PATH + '/', async (req, reply) => send(req, reply, 'index.html'));
  app.get(CONSOLE_PATH + '/*', async (req, reply) => send(req, reply, (req.params as { '*': string })['*']));
}
