/**
 * The upstream transport on a real local HTTP server: whole bodies, capped bodies, streamed bodies under
 * backpressure, first-byte and idle timeouts, an abandoned body, and aborts.
 */
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { EventEmitter, once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Dispatcher } from 'undici';
import {
  type SendResult,
  Transport,
  type TransportTimeouts,
  UpstreamCall,
} from '../../src/providers/transport.js';
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
        if (!s.write(chunk)) {
          firehoseBlocked.emit('blocked');
          return void s.once('drain', pump);
        }
      }
      s.end();
    };
    pump();
  };
  routes.set('/firehose', firehose(8 * MB.length));
  routes.set('/early-hints', (_q, s) => {
    s.writeEarlyHints({ link: '</a.css>; rel=preload' });
    s.writeHead(200, { 'content-type': 'application/json' });
    s.end('{"ok":true}');
  });
  // Header names that are also Object.prototype's keys.
  routes.set('/odd-headers', (_q, s) => {
    s.writeHead(200, [
      ['constructor', 'c'],
      ['toString', 't'],
      ['X-Dup', '1'],
      ['x-dup', '2'],
    ]);
    s.end();
  });
  routes.set('/counted', (_q, s) => {
    counted++;
    s.end('{}');
  });
  routes.set('/firehose-big', firehose(64 * MB.length));
});

let firehoseSent = 0;
const firehoseBlocked = new EventEmitter();
let counted = 0;

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

  it('skips a 1xx informational answer and resolves on the real one', async () => {
    const up = await tr.send('t', base, call('/early-hints'), T, new Abort());
    expect(up.status).toBe(200);
    expect(up.headers.link).toBeUndefined();
    expect(await up.text()).toBe('{"ok":true}');
  });

  it("header names are lower-cased, repeats become a list, Object.prototype's names are plain headers", async () => {
    const up = await tr.send('t', base, call('/odd-headers'), T, new Abort());
    expect(up.headers.constructor).toBe('c');
    expect(up.headers.tostring).toBe('t');
    expect(up.headers['x-dup']).toEqual(['1', '2']);
    await up.bytes();
  });

  it('an abort that came before the call: rejected with its reason, nothing answered', async () => {
    const ac = new Abort();
    const reason = new Error('client went away');
    ac.abort(reason);
    const before = counted;
    await expect(tr.send('t', base, call('/counted'), T, ac)).rejects.toBe(reason);
    // The pool still serves the next call, and the aborted one never reached the handler.
    const up = await tr.send('t', base, call('/counted'), T, new Abort());
    await up.bytes();
    expect(counted).toBe(before + 1);
  });

  it('a body queued before anyone read it (the socket paused) is read whole by bytes()', async () => {
    firehoseSent = 0;
    const blocked = once(firehoseBlocked, 'blocked');
    const up = await tr.send('t', base, call('/firehose'), { ...T, idleMs: 2_000 }, new Abort());
    await blocked; // the upstream can't write any more: the socket is paused
    expect(firehoseSent).toBeLessThan(8 * MB.length);
    expect((await up.bytes()).length).toBe(8 * MB.length);
  });
});

/** A stand-in for undici's controller: what the handler asked of it. */
class FakeController implements Dispatcher.DispatchController {
  paused = false;
  aborted = false;
  reason: Error | null = null;
  pauses = 0;
  resumes = 0;
  pause(): void {
    this.pauses++;
    this.paused = true;
  }
  resume(): void {
    this.resumes++;
    this.paused = false;
  }
  abort(reason: Error): void {
    this.aborted = true;
    this.reason = reason;
  }
}

/** Drives the handler as undici would, up to the response headers. */
async function started(ac = new Abort()) {
  let resolve!: (r: SendResult) => void;
  const result = new Promise<SendResult>((r) => (resolve = r));
  const h = new UpstreamCall({ connectMs: 1_000, firstByteMs: 1_000, idleMs: 1_000 }, ac, resolve, () => {});
  const c = new FakeController();
  h.onRequestStart(c);
  h.onResponseStart(c, 200, { 'content-type': 'text/event-stream' });
  return { h, c, up: await result };
}

describe('UpstreamCall on the controller', () => {
  const KB40 = Buffer.alloc(40 * 1024, 'x');

  it('pauses past the high-water mark and resumes when the reader takes the queue', async () => {
    const { h, c, up } = await started();
    h.onResponseData(c, KB40);
    expect(c.pauses).toBe(0);
    h.onResponseData(c, KB40); // 80 KiB waiting
    expect(c.paused).toBe(true);
    const it = up.chunks()[Symbol.asyncIterator]();
    expect((await it.next()).value!.length).toBe(80 * 1024);
    expect(c.paused).toBe(false);
    expect(c.resumes).toBe(1);
    h.onResponseEnd();
    expect((await it.next()).done).toBe(true);
    expect(c.aborted).toBe(false);
  });

  it('a whole read never pauses, and lifts a pause already in place', async () => {
    const { h, c, up } = await started();
    h.onResponseData(c, KB40);
    h.onResponseData(c, KB40);
    expect(c.paused).toBe(true);
    const all = up.bytes();
    expect(c.paused).toBe(false);
    for (let i = 0; i < 4; i++) h.onResponseData(c, KB40);
    expect(c.pauses).toBe(1);
    h.onResponseEnd();
    expect((await all).length).toBe(6 * KB40.length);
  });

  it("the caller's abort and an abandoned body abort through the controller", async () => {
    const ac = new Abort();
    const a = await started(ac);
    ac.abort(new Error('gone'));
    expect(a.c.reason?.message).toBe('gone');
    a.h.onResponseError(a.c, a.c.reason!); // what undici does next
    await expect(a.up.bytes()).rejects.toThrow('gone');

    const b = await started();
    b.h.onResponseData(b.c, KB40);
    for await (const _ of b.up.chunks()) break; // the consumer breaks off
    expect(b.c.reason?.message).toBe('upstream body abandoned');
  });
});
