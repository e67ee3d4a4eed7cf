/**
 * The upstream transport on a real local HTTP server: whole bodies, capped bodies, streamed bodies under
 * backpressure, first-byte and idle timeouts, an abandoned body, and aborts.
 */
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Transport, type TransportTimeouts } from '../../src/providers/transport.js';
import { Abort } from '../../src/lib/abort.js';

let server: Server;
let base: string;
const closed: string[] = [];
const routes = new Map<string, (req: IncomingMessage, res: ServerResponse) => void>();
const MB = Buffer.alloc(1 << 20, 'a');

beforeAll(async () => {
  server = createServer((req, res) => {
    req.resume();
    res.on('close', () => closed.push(req.url!));
    routes.get(req.url!)!(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  routes.set('/json', (_q, s) => {
    s.writeHead(200, { 'content-type': 'application/json', 'set-cookie': ['a=1', 'b=2'] });
    s.end(MB);
  });
  routes.set('/slow-headers', (_q, s) => setTimeout(() => s.end('late'), 1_000));
  routes.set('/hang-mid-body', (_q, s) => {
    s.writeHead(200, { 'content-type': 'text/event-stream' });
    s.write('data: 1\n\n');
  });
  // Writes 64 KiB chunks as fast as the socket takes them: how far it gets shows backpressure.
  const firehose = (total: number) => (_q: IncomingMessage, s: ServerResponse) => {
    s.writeHead(200, { 'content-type': 'text/event-stream' });
    let sent = 0;
    const chunk = Buffer.alloc(64 * 1024, 'x');
    const pump = () => {
      while (sent < total) {
        sent += chunk.length;
        firehoseSent = sent;
        if (!s.write(chunk)) return void s.once('drain', pump);
      }
      s.end();
    };
    pump();
  };
  routes.set('/firehose', firehose(8 * MB.length));
  routes.set('/firehose-big', firehose(64 * MB.length));
});

let firehoseSent = 0;

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const T: TransportTimeouts = { connectMs: 1_000, firstByteMs: 300, idleMs: 300 };
const call = (path: string) => ({
  path,
  headers: { 'content-type': 'application/json' },
  body: '{}',
  stream: false,
});

describe('Transport', () => {
  const tr = new Transport();
  afterAll(() => tr.close());

  it('reads a whole 1 MiB body; repeated headers come as a list', async () => {
    const up = await tr.send('t', base, call('/json'), T, new Abort());
    expect(up.status).toBe(200);
    expect(up.headers['content-type']).toBe('application/json');
    expect(up.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    expect((await up.bytes()).length).toBe(MB.length);
  });

  it('a capped read stops at its cap and ends the call', async () => {
    closed.length = 0;
    const up = await tr.send('t', base, call('/json'), T, new Abort());
    expect(await up.text(100)).toBe('a'.repeat(100));
  });

  it('no headers within the first-byte timeout: ANIMA_FIRST_BYTE_TIMEOUT', async () => {
    const t0 = Date.now();
    await expect(tr.send('t', base, call('/slow-headers'), T, new Abort())).rejects.toMatchObject({
      code: 'ANIMA_FIRST_BYTE_TIMEOUT',
    });
    expect(Date.now() - t0).toBeLessThan(900);
  });

  it('a body that goes silent: ANIMA_IDLE_TIMEOUT from the chunk reader', async () => {
    const up = await tr.send('t', base, call('/hang-mid-body'), T, new Abort());
    const got: string[] = [];
    await expect(
      (async () => {
        for await (const c of up.chunks()) got.push(c.toString());
      })(),
    ).rejects.toMatchObject({ code: 'ANIMA_IDLE_TIMEOUT' });
    expect(got.join('')).toBe('data: 1\n\n');
  });

  it('a slow reader holds the upstream back (backpressure), and still gets every byte', async () => {
    firehoseSent = 0;
    const up = await tr.send('t', base, call('/firehose-big'), { ...T, idleMs: 2_000 }, new Abort());
    const it = up.chunks()[Symbol.asyncIterator]();
    let got = (await it.next()).value!.length;
    await new Promise((r) => setTimeout(r, 300)); // not reading
    // Without backpressure the server would have sent all 64 MiB by now (loopback moves that in well under
    // 300 ms); with it, our queue's limit plus the kernel's socket buffers (a few MiB on loopback).
    expect(firehoseSent).toBeLessThan(24 * MB.length);
    for (let r = await it.next(); !r.done; r = await it.next()) got += r.value.length;
    expect(got).toBe(64 * MB.length);
  });

  it('a body nobody reads is ended by the idle timeout, not held forever', async () => {
    closed.length = 0;
    firehoseSent = 0;
    const up = await tr.send('t', base, call('/firehose'), T, new Abort());
    expect(up.status).toBe(200);
    const t0 = Date.now();
    while (!closed.includes('/firehose') && Date.now() - t0 < 3_000)
      await new Promise((r) => setTimeout(r, 20));
    expect(closed).toContain('/firehose');
    expect(firehoseSent).toBeLessThan(8 * MB.length); // it never got to send it all
  });

  it("the caller's abort ends a call in flight", async () => {
    const ac = new Abort();
    const p = tr.send('t', base, call('/slow-headers'), { ...T, firstByteMs: 5_000 }, ac);
    setTimeout(() => ac.abort(), 50);
    await expect(p).rejects.toBeDefined();
  });
});
