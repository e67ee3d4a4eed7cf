/**
 * RespConnection against a scripted server: replies of every RESP2 type, however the bytes are split
 * on the way, reach their callbacks in order; an error reply fails only its own command.
 */
import net from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RespConnection, ReplyError, RespWriter, encodeCommand, type Reply } from '../../src/coord/resp.js';

const REPLIES = Buffer.from(
  [
    '+OK\r\n',
    ':42\r\n',
    '$5\r\nhello\r\n',
    '$-1\r\n',
    '*2\r\n:1\r\n*2\r\n$3\r\nabc\r\n:-7\r\n',
    '-ERR boom\r\n',
    '$6\r\nhéllo\r\n', // 6 bytes in UTF-8
    '*0\r\n',
    '$0\r\n\r\n',
  ].join(''),
  'utf8',
);
const EXPECTED: Reply[] = [
  'OK',
  42,
  'hello',
  null,
  [1, ['abc', -7]],
  new ReplyError('ERR boom'),
  'héllo',
  [],
  '',
];

/** Each connection gets the canned replies once its first bytes arrive, cut at `cuts` (byte offsets). */
let cuts: number[] = [];
let received = '';
let server: net.Server;
let port = 0;

beforeAll(async () => {
  server = net.createServer((s) => {
    s.setNoDelay(true);
    let greeted = false;
    let sent = false;
    s.on('data', async (d) => {
      if (!greeted) {
        // The connection's handshake: ready once the server answers its PING.
        greeted = true;
        expect(d.toString('utf8')).toBe('*1\r\n$4\r\nPING\r\n');
        s.write('+PONG\r\n');
        return;
      }
      received += d.toString('utf8');
      if (sent) return;
      sent = true;
      let from = 0;
      for (const at of [...cuts, REPLIES.length]) {
        if (at <= from) continue;
        s.write(REPLIES.subarray(from, at));
        from = at;
        await new Promise((r) => setTimeout(r, 1)); // separate reads on the client
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as net.AddressInfo).port;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

async function roundTrip(): Promise<Reply[]> {
  const c = new RespConnection({ host: '127.0.0.1', port });
  try {
    await c.whenReady();
    const got: Reply[] = [];
    await new Promise<void>((resolve, reject) => {
      const cbs = EXPECTED.map((_, i) => (err: Error | null, v?: Reply) => {
        if (err) return reject(err);
        got[i] = v!;
        if (i === EXPECTED.length - 1) resolve();
      });
      c.write(encodeCommand(['PING']).join(''), cbs);
    });
    return got;
  } finally {
    c.close();
  }
}

describe('RespConnection', () => {
  it('encodes commands as RESP arrays of bulk strings, lengths in UTF-8 bytes', () => {
    expect(encodeCommand(['SET', 'k', 'é', 5]).join('')).toBe(
      '*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\né\r\n$1\r\n5\r\n',
    );
  });

  it('RespWriter writes the same bytes as the string encoding, for any arguments (property)', () => {
    const w = new RespWriter();
    const arg = fc.oneof(
      fc.string(),
      fc.string({ unit: 'grapheme' }),
      fc.nat(),
      fc.integer(),
      fc.maxSafeNat(),
      fc.double({ noNaN: true }),
      fc.string({ minLength: 5_000, maxLength: 40_000 }),
    );
    fc.assert(
      fc.property(
        fc.array(fc.array(arg, { minLength: 1, maxLength: 30 }), { minLength: 1, maxLength: 5 }),
        (commands) => {
          for (const c of commands) {
            w.command(c.length);
            for (const a of c) w.arg(a);
          }
          const expected = commands.map((c) => encodeCommand(c).join('')).join('');
          expect(w.take().toString('utf8')).toBe(expected);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('parses every reply type, in one piece', async () => {
    cuts = [];
    received = '';
    expect(await roundTrip()).toEqual(EXPECTED);
    expect(received).toBe('*1\r\n$4\r\nPING\r\n');
  });

  it('parses the same replies however they are split', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.integer({ min: 1, max: REPLIES.length - 1 }), { maxLength: 12 }),
        async (at) => {
          cuts = [...at].sort((a, b) => a - b);
          expect(await roundTrip()).toEqual(EXPECTED);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('is not ready until Redis answers: a server that accepts and says nothing gets no writes', async () => {
    const accepted: net.Socket[] = [];
    let bytes = 0;
    const mute = net.createServer((s) => {
      accepted.push(s);
      s.on('data', (d) => (bytes += d.length));
    });
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
    const c = new RespConnection({
      host: '127.0.0.1',
      port: (mute.address() as net.AddressInfo).port,
      connectTimeoutMs: 300,
    });
    try {
      const failed = new Promise<string>((resolve) =>
        c.write(encodeCommand(['PING']).join(''), [(err) => resolve(String(err?.message))]),
      );
      await new Promise((r) => setTimeout(r, 200));
      expect(c.isReady()).toBe(false);
      expect(bytes).toBe(14); // the handshake's PING, not the write
      // The connect timeout covers the handshake: unanswered, the attempts fail and so does the write.
      expect(await failed).toBe('Redis is not reachable');
    } finally {
      c.close();
      for (const s of accepted) s.destroy();
      await new Promise<void>((r) => mute.close(() => r()));
    }
  });

  it('with nothing listening, a first write waits through a few connect attempts, then fails once', async () => {
    const dead = net.createServer();
    await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
    const deadPort = (dead.address() as net.AddressInfo).port;
    await new Promise<void>((r) => dead.close(() => r()));
    const c = new RespConnection({ host: '127.0.0.1', port: deadPort });
    const calls: string[] = [];
    const done = new Promise<void>((resolve) => {
      c.write(encodeCommand(['PING']).join(''), [
        (err) => {
          calls.push(String(err?.message));
          resolve();
        },
      ]);
    });
    await done; // before the first connection, a write waits for a few attempts, then fails
    c.close();
    expect(calls).toEqual(['Redis is not reachable']);
  });
});
