import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigCache } from '../../src/config/cache.js';
import { hashKey, insertAlias, insertApp, insertChannel, insertKey } from '../../src/config/repo.js';
import { ManualClock } from '../../src/lib/clock.js';
import { toDto } from '../../src/config/dto.js';
import { setSecretKey } from '../../src/config/secrets.js';
import type { DbHandle } from '../../src/store/db.js';
import { openTestDb } from '../helpers.js';

let dbh: DbHandle;

beforeAll(async () => {
  dbh = await openTestDb(undefined); // PGlite: the migrations run on the embedded default too
}, 60_000);
afterAll(async () => dbh?.close());

describe('credentials at rest', () => {
  it('are sealed with AES-256-GCM when ANIMA_SECRET_KEY is set, opened only in memory, never shown', async () => {
    setSecretKey('test-secret-key');
    try {
      await insertChannel(dbh.db, {
        code: 'sealed',
        provider: 'openai',
        baseUrl: 'http://127.0.0.1:9/v1',
        credential: 'sk-upstream-very-secret',
      });
      const raw = await dbh.db
        .selectFrom('channel')
        .select('credential')
        .where('code', '=', 'sealed')
        .executeTakeFirstOrThrow();
      expect(raw.credential).toMatch(/^enc:v2:[0-9a-f]{8}:/); // the key id says which key opens it
      expect(raw.credential).not.toContain('very-secret');
      const cache = new ConfigCache(dbh.db, new ManualClock(Date.now() + 1000), pino({ level: 'silent' }));
      await cache.load();
      expect(cache.channel('sealed')?.credential).toBe('sk-upstream-very-secret');
      const dto = toDto(
        'channel',
        (await dbh.db
          .selectFrom('channel')
          .selectAll()
          .where('code', '=', 'sealed')
          .executeTakeFirstOrThrow()) as never,
      );
      expect(JSON.stringify(dto)).not.toContain('very-secret');
      expect(dto).toMatchObject({
        credential_set: true,
        credential_hint: '…cret',
        credential_encrypted: true,
      });
      setSecretKey('another-key');
      await expect(cache.load()).rejects.toThrow(); // a wrong key can't open it (GCM authenticates)
    } finally {
      setSecretKey(undefined);
      await dbh.db.deleteFrom('channel').where('code', '=', 'sealed').execute();
    }
  });
});

describe('config snapshot (L1)', () => {
  it('applies effective windows: a version scheduled for later takes over by itself at its time', async () => {
    const now = Date.now();
    const clock = new ManualClock(now);
    const later = new Date(now + 60_000);
    await insertChannel(dbh.db, {
      code: 'c1',
      provider: 'openai',
      baseUrl: 'http://127.0.0.1:1/v1',
      effectiveFrom: new Date(now - 1000),
      effectiveTo: later,
    });
    await insertChannel(dbh.db, {
      code: 'c1',
      provider: 'openai',
      baseUrl: 'http://127.0.0.1:2/v1',
      effectiveFrom: later,
    });
    await insertAlias(dbh.db, {
      name: 'future',
      tiers: [[{ channel: 'c1', model: 'm' }]],
      effectiveFrom: later,
    });
    const cache = new ConfigCache(dbh.db, clock, pino({ level: 'silent' }));
    await cache.load();
    expect(cache.channel('c1')?.baseUrl).toBe('http://127.0.0.1:1/v1');
    expect(cache.alias('future')).toBeUndefined();
    expect(cache.aliasNames()).not.toContain('future');
    clock.advance(60_001); // no reload: the snapshot already holds the scheduled rows
    expect(cache.channel('c1')?.baseUrl).toBe('http://127.0.0.1:2/v1');
    expect(cache.alias('future')?.tiers).toEqual([[{ channel: 'c1', model: 'm', weight: 1 }]]);
    expect(cache.channel('c1')?.versionNo).toBe(1);
  });

  it('stores keys hashed, finds a key created after the snapshot, and defaults channel settings', async () => {
    const clock = new ManualClock(Date.now());
    const cache = new ConfigCache(dbh.db, clock, pino({ level: 'silent' }));
    await cache.load();
    const app = await insertApp(dbh.db, 'late');
    const { sk, id } = await insertKey(dbh.db, app);
    const row = await dbh.db.selectFrom('api_key').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
    expect(row.key_hash).toBe(hashKey(sk));
    expect(JSON.stringify(row)).not.toContain(sk);
    const k = await cache.keyByHash(hashKey(sk));
    expect(k?.id).toBe(id);
    expect(await cache.keyByHash(hashKey('sk-anima-nope'))).toBeUndefined();
    expect(cache.channel('c1')?.timeouts.connectMs).toBe(5_000);
    expect(cache.channel('c1')?.breaker.minCalls).toBe(10);
  });
});
