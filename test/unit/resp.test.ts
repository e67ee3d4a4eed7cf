/**
 * RespConnection against a scripted server: replies of every RESP2 type, however the bytes are split
 * on the way, reach their callbacks in order; an error reply fails only its own command.
 */
import net from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisCoordinator } from '../../src/coord/redis.js';
import { parseClusterNodes, parseRedisUrl } from '../../src/coord/redis-url.js';
import { settingsFromEnv } from '../../src/app/settings.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  RespConnection,
  ReplyError,
  RespWriter,
  encodeCommand,
  respOptionsFor,
  type Reply,
  type RespOptions,
} from '../../src/coord/resp.js';

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

/** Answers the handshake's PING, then sends the canned replies (cut at `cuts`) once. */
function scripted(s: net.Socket): void {
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
}

beforeAll(async () => {
  server = net.createServer(scripted);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as net.AddressInfo).port;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

async function roundTrip(where: Partial<RespOptions> = {}): Promise<Reply[]> {
  const c = new RespConnection({ host: '127.0.0.1', port, ...where });
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

describe('RespConnection over a unix socket', () => {
  it('connects to the path, not to a default host and port', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'anima-resp-'));
    const path = join(dir, 'r.sock');
    const unixServer = net.createServer(scripted);
    await new Promise<void>((r) => unixServer.listen(path, r));
    try {
      cuts = [];
      received = '';
      // host/port point nowhere: only the path can answer
      expect(await roundTrip({ path, host: '127.0.0.1', port: 1 })).toEqual(EXPECTED);
      expect(received).toBe('*1\r\n$4\r\nPING\r\n');
    } finally {
      await new Promise<void>((r) => unixServer.close(() => r()));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('REDIS_URL: accepted forms', () => {
  it.each([
    ['redis://127.0.0.1:6380', { host: '127.0.0.1', port: 6380 }],
    ['redis://cache', { host: 'cache', port: 6379 }],
    ['cache', { host: 'cache', port: 6379 }],
    ['10.0.0.5:6380', { host: '10.0.0.5', port: 6380 }],
    ['redis://:s%40cret@cache:6379/2', { host: 'cache', port: 6379, password: 's@cret', db: 2 }],
    [
      'redis://app:pw@cache/0?family=6',
      { host: 'cache', port: 6379, username: 'app', password: 'pw', db: 0, family: 6 },
    ],
    ['redis://[::1]:6380', { host: '::1', port: 6380 }],
    ['rediss://cache:6380', { host: 'cache', port: 6380, tls: {} }],
    ['redis+unix:///run/redis/r.sock', { path: '/run/redis/r.sock' }],
    ['unix:///run/redis/r.sock?db=3&password=pw', { path: '/run/redis/r.sock', db: 3, password: 'pw' }],
    ['/run/redis/r.sock?db=1', { path: '/run/redis/r.sock', db: 1 }],
  ])('%s', (url, expected) => {
    expect(parseRedisUrl(url)).toEqual(expected);
  });

  it('the hot-path connection follows a unix socket, TLS and the address family as ioredis does', () => {
    expect(
      respOptionsFor({ ...parseRedisUrl('unix:///run/r.sock?db=2'), host: 'localhost', port: 6379 }),
    ).toMatchObject({
      path: '/run/r.sock',
      db: 2,
    });
    expect(respOptionsFor(parseRedisUrl('rediss://u:p@cache:6390?family=4'))).toMatchObject({
      host: 'cache',
      port: 6390,
      family: 4,
      username: 'u',
      password: 'p',
      tls: {},
    });
    const ca = '-----BEGIN CERTIFICATE-----';
    expect(respOptionsFor({ host: 'c', port: 1, tls: { ca, servername: 'redis.internal' } }).tls).toEqual({
      ca,
      servername: 'redis.internal',
    });
  });

  it('cluster seed nodes are host:port', () => {
    expect(parseClusterNodes(['10.0.0.1:7000', 'redis-2:7001', '[::1]:7002'])).toEqual([
      { host: '10.0.0.1', port: 7000 },
      { host: 'redis-2', port: 7001 },
      { host: '::1', port: 7002 },
    ]);
  });
});

describe('REDIS_URL: refused forms name what is refused', () => {
  it.each([
    ['redis-sentinel://s1:26379,s2:26379/mymaster', /Sentinel/],
    ['redis+sentinel://s1:26379/mymaster', /Sentinel/],
    ['redis://s1:26379?sentinels=s1:26379&name=mymaster', /'sentinels'.*Sentinel/],
    ['redis://cache?connectionName=anima', /'connectionName'/],
    ['redis://cache?tls=true', /'tls'/],
    ['redis://cache?path=/tmp/r.sock', /'path'/],
    ['redis://cache?family=5', /family must be 4 or 6/],
    ['redis://cache/x', /db must be a non-negative integer/],
    ['redis://cache/1?db=2', /db is given twice/],
    ['unix:///r.sock?family=4', /family applies to TCP only/],
    ['unix://host/r.sock', /names no host/],
    ['redis+unix://', /needs the socket path/],
    ['rediss+unix:///r.sock', /TLS over a unix socket/],
    ['memcached://cache', /scheme 'memcached:'/],
    ['cache:port', /scheme 'cache:'/],
    ['cache/0', /no scheme/],
  ])('%s', (url, why) => {
    expect(() => parseRedisUrl(url)).toThrow(why);
    expect(() => parseRedisUrl(url)).toThrow(/^REDIS_URL: /);
  });

  it.each([['cache'], ['redis://cache:7000'], ['cache:0'], ['cache:70000'], ['user:pw@cache:7000']])(
    'REDIS_CLUSTER_NODES %s',
    (n) => {
      expect(() => parseClusterNodes([n])).toThrow(/^REDIS_CLUSTER_NODES: .* is not host:port/);
    },
  );

  it('settings refuse them at start', () => {
    expect(() => settingsFromEnv({ REDIS_URL: 'redis-sentinel://s1:26379/mymaster' })).toThrow(
      /REDIS_URL: Redis Sentinel/,
    );
    expect(() => settingsFromEnv({ REDIS_URL: 'redis://cache?connectionName=x' })).toThrow(
      /'connectionName'/,
    );
    expect(() => settingsFromEnv({ REDIS_CLUSTER_NODES: 'a:7000,b' })).toThrow(/REDIS_CLUSTER_NODES: 'b'/);
  });

  it('the coordinator refuses them before connecting anywhere', async () => {
    const accepted = [0, 0];
    const listen = async (i: number) => {
      const l = net.createServer((s) => {
        accepted[i]!++;
        s.destroy();
      });
      await new Promise<void>((r) => l.listen(0, '127.0.0.1', r));
      return { l, at: `127.0.0.1:${(l.address() as net.AddressInfo).port}` };
    };
    const [refused, control] = [await listen(0), await listen(1)];
    const at = refused.at;
    try {
      expect(() => new RedisCoordinator({ url: `redis://${at}?connectionName=x` })).toThrow(
        /'connectionName'/,
      );
      expect(() => new RedisCoordinator({ url: `redis-sentinel://${at}/mymaster` })).toThrow(/Sentinel/);
      expect(() => new RedisCoordinator({ url: `redis://${at}/0?tls=1` })).toThrow(/'tls'/);
      expect(() => new RedisCoordinator({ url: '', clusterNodes: [at, 'nope'] })).toThrow(/'nope'/);
      // An accepted URL, made after them, reaches its server: had any refused one opened a connection, it
      // would have arrived by then.
      const ok = new RedisCoordinator({ url: `redis://${control.at}` });
      try {
        for (let i = 0; i < 500 && accepted[1] === 0; i++) await new Promise((r) => setTimeout(r, 10));
      } finally {
        await ok.close();
      }
      expect(accepted[1]).toBeGreaterThan(0);
      expect(accepted[0]).toBe(0);
    } finally {
      for (const { l } of [refused, control]) await new Promise<void>((r) => l.close(() => r()));
    }
  });

  it('the hot-path connection refuses ioredis options it cannot follow, by name', () => {
    expect(() => respOptionsFor({ sentinels: [{ host: 's1', port: 26379 }], name: 'mymaster' })).toThrow(
      /'sentinels'.*Sentinel/,
    );
    expect(() => respOptionsFor({ host: 'c', connectionName: 'anima' })).toThrow(/'connectionName'/);
    expect(() => respOptionsFor({ host: 'c', readOnly: true })).toThrow(/'readOnly'/);
    expect(() => respOptionsFor({ host: 'c', family: 5 })).toThrow(/'family'/);
  });
});
