/**
 * The raw pass-through baseline: node:http + an undici Pool, bodies piped untouched, no governance.
 * What "a proxy and nothing else" costs on this machine, to compare the gateway against.
 *   node dist/bench/raw-proxy.js <upstream origin> [port]
 */
import { createServer } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { Pool } from 'undici';

const upstream = process.argv[2] ?? 'http://127.0.0.1:19001';
const pool = new Pool(upstream, { connections: 256, pipelining: 1 });
const server = createServer(async (req, res) => {
  try {
    const up = await pool.request({
      method: req.method as 'POST',
      path: req.url!,
      headers: {
        'content-type': req.headers['content-type'] ?? 'application/json',
        authorization: req.headers.authorization ?? '',
      },
      body: req,
    });
    res.writeHead(up.statusCode, {
      'content-type': String(up.headers['content-type'] ?? 'application/json'),
    });
    await pipeline(up.body, res);
  } catch {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  }
});
server.listen(Number(process.argv[3] ?? 0), '127.0.0.1', () => {
  const a = server.address() as { port: number };
  process.stdout.write(`raw proxy listening on http://127.0.0.1:${a.port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
