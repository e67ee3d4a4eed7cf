/**
 * The outbound URL policy (SSRF): the address classifier as a table, the two policies, the allow list,
 * and the connect-time checks (literal addresses, names, DNS rebinding) against a loopback listener.
 * Nothing here connects anywhere but 127.0.0.1: resolvers are fakes.
 */
import { type Server, createServer } from 'node:http';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type OutboundResolver,
  OutboundPolicy,
  OutboundRefusedError,
  classifyAddress,
  parseOutboundAllow,
} from '../../src/lib/outbound.js';
import { Transport } from '../../src/providers/transport.js';
import { Abort } from '../../src/lib/abort.js';

describe('classifyAddress', () => {
  const table: Array<[string, string, string?]> = [
    // [address, kind, deciding address when it differs]
    ['8.8.8.8', 'public'],
    ['93.184.216.34', 'public'],
    ['2606:4700:4700::1111', 'public'],
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['::1', 'loopback'],
    ['[::1]', 'loopback'],
    ['169.254.169.254', 'metadata'],
    ['169.254.170.2', 'metadata'],
    ['100.100.100.200', 'metadata'],
    ['192.0.0.192', 'metadata'],
    ['fd00:ec2::254', 'metadata'],
    ['169.254.1.1', 'link_local'],
    ['fe80::1', 'link_local'],
    ['febf::1', 'link_local'],
    ['10.0.0.1', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['172.32.0.1', 'public'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'private'],
    ['100.127.255.255', 'private'],
    ['100.128.0.1', 'public'],
    ['fc00::1', 'private'],
    ['fd12:3456::1', 'private'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['ff02::1', 'multicast'],
    ['0.0.0.0', 'unspecified'],
    ['::', 'unspecified'],
    ['255.255.255.255', 'broadcast'],
    ['0.1.2.3', 'reserved'],
    ['192.0.2.1', 'reserved'],
    ['198.18.0.1', 'reserved'],
    ['203.0.113.9', 'reserved'],
    ['240.0.0.1', 'reserved'],
    ['2001:db8::1', 'reserved'],
    ['100::1', 'reserved'],
    ['4000::1', 'reserved'], // outside global unicast 2000::/3
    // IPv6 forms carrying an IPv4 address: the IPv4 decides
    ['::ffff:127.0.0.1', 'loopback', '127.0.0.1'],
    ['::ffff:7f00:1', 'loopback', '127.0.0.1'],
    ['::ffff:169.254.169.254', 'metadata', '169.254.169.254'],
    ['::ffff:10.0.0.1', 'private', '10.0.0.1'],
    ['::ffff:8.8.8.8', 'public', '8.8.8.8'],
    ['::ffff:0:127.0.0.1', 'loopback', '127.0.0.1'],
    ['::127.0.0.1', 'loopback', '127.0.0.1'],
    ['64:ff9b::127.0.0.1', 'loopback', '127.0.0.1'],
    ['64:ff9b::a9fe:a9fe', 'metadata', '169.254.169.254'],
    ['2002:7f00:1::', 'loopback', '127.0.0.1'],
    ['2002:a00:1::1', 'private', '10.0.0.1'],
    ['fe80::1%eth0', 'link_local'],
  ];
  it.each(table)('%s is %s', (addr, kind, via) => {
    const c = classifyAddress(addr);
    expect(c?.kind).toBe(kind);
    if (via) expect(c?.address).toBe(via);
  });

  it('a name is not an address', () => {
    expect(classifyAddress('localhost')).toBeNull();
    expect(classifyAddress('2130706433')).toBeNull();
  });
});

describe('parseOutboundAllow', () => {
  it('takes CIDRs, addresses, names and suffixes; refuses the rest', () => {
    const a = parseOutboundAllow([
      '10.0.0.0/8',
      ' ::1 ',
      '[fd00::]/8',
      'llm.internal',
      '*.svc.local',
      '.corp',
    ]);
    expect(a.nets.check('10.1.2.3', 'ipv4')).toBe(true);
    expect(a.nets.check('::1', 'ipv6')).toBe(true);
    expect(a.names.has('llm.internal')).toBe(true);
    expect(a.suffixes).toEqual(['.svc.local', '.corp']);
    for (const bad of ['10.0.0.0/33', '::1/129', 'not a host', 'http://x', '1.2.3.4/8/1', 'a/8'])
      expect(() => parseOutboundAllow([bad]), bad).toThrow(/ANIMA_OUTBOUND_ALLOW/);
  });
});

describe('OutboundPolicy.checkUrl (write time, no DNS)', () => {
  const strict = new OutboundPolicy();
  const loop = new OutboundPolicy({ allow: ['127.0.0.0/8', '::1'] });
  const priv = new OutboundPolicy({ allow: ['10.0.0.0/8', 'llm.internal', '*.svc.local', '169.254.0.0/16'] });

  const tenantRefused: Array<[string, string]> = [
    ['http://127.0.0.1:8080/x', 'loopback'],
    ['http://[::1]/x', 'loopback'],
    ['http://169.254.169.254/latest/meta-data/', 'metadata'],
    ['http://10.0.0.1/', 'private'],
    ['http://[::ffff:127.0.0.1]/', 'loopback'],
    ['http://2130706433/', 'loopback'],
    ['http://0x7f000001/', 'loopback'],
    ['http://0177.0.0.1/', 'loopback'],
    ['http://127.1/', 'loopback'],
    ['http://0/', 'unspecified'],
    ['http://localhost:9/', 'loopback'],
    ['http://LOCALHOST./', 'loopback'],
    ['http://api.localhost/', 'loopback'],
    ['http://metadata.google.internal/computeMetadata/v1/', 'metadata'],
    ['https://user:pw@hooks.example.com/', 'credentials'],
    ['ftp://hooks.example.com/', 'scheme'],
    ['not a url', 'scheme'],
  ];
  it.each(tenantRefused)('tenant %s: refused (%s), whatever the allow list', (url, rule) => {
    for (const p of [strict, loop, priv]) {
      const v = p.checkUrl(url, 'tenant');
      expect(v.ok).toBe(false);
      if (!v.ok) expect(v.rule).toBe(rule);
    }
  });

  it('tenant: a public address or an unresolved name passes; the reason names the rule', () => {
    expect(strict.checkUrl('https://hooks.example.com/x', 'tenant').ok).toBe(true);
    expect(strict.checkUrl('http://8.8.8.8/x', 'tenant').ok).toBe(true);
    const v = strict.checkUrl('http://127.0.0.1:9/x', 'tenant');
    expect(!v.ok && v.reason).toBe(
      'is a loopback address 127.0.0.1; URLs a tenant supplies (callbacks) may only reach public addresses',
    );
    const m = strict.checkUrl('http://[::ffff:127.0.0.1]/', 'tenant');
    expect(!m.ok && m.reason).toMatch(/loopback address 127\.0\.0\.1 \(as ::ffff:7f00:1\)/);
  });

  it('operator: metadata, unspecified, multicast and broadcast never, even when listed', () => {
    const all = new OutboundPolicy({ allow: ['0.0.0.0/0', '::/0', 'metadata.google.internal'] });
    for (const url of [
      'http://169.254.169.254/',
      'http://[fd00:ec2::254]/',
      'http://100.100.100.200/',
      'http://[::ffff:169.254.169.254]/',
      'http://metadata.google.internal/',
      'http://0.0.0.0:6379/',
      'http://[::]/',
      'http://224.0.0.1/',
      'http://255.255.255.255/',
    ]) {
      const v = all.checkUrl(url, 'operator');
      expect(v.ok, url).toBe(false);
      expect(!v.ok && v.reason, url).toMatch(/no outbound URL may reach it/);
    }
  });

  it('operator: loopback, private and link-local only when listed (CIDR or host name)', () => {
    expect(strict.checkUrl('http://127.0.0.1:11434/v1', 'operator').ok).toBe(false);
    expect(strict.checkUrl('http://localhost:6379/', 'operator').ok).toBe(false);
    expect(strict.checkUrl('http://10.1.2.3/v1', 'operator').ok).toBe(false);
    const v = strict.checkUrl('http://10.1.2.3/v1', 'operator');
    expect(!v.ok && v.reason).toMatch(/private address 10\.1\.2\.3; .*ANIMA_OUTBOUND_ALLOW/);
    expect(loop.checkUrl('http://127.0.0.1:11434/v1', 'operator').ok).toBe(true);
    expect(loop.checkUrl('http://localhost:11434/v1', 'operator').ok).toBe(true);
    expect(loop.checkUrl('http://[::1]:11434/v1', 'operator').ok).toBe(true);
    expect(loop.checkUrl('http://10.1.2.3/v1', 'operator').ok).toBe(false);
    expect(priv.checkUrl('http://10.1.2.3/v1', 'operator').ok).toBe(true);
    expect(priv.checkUrl('http://169.254.10.10/v1', 'operator').ok).toBe(true);
    expect(priv.checkUrl('http://169.254.169.254/v1', 'operator').ok).toBe(false);
    expect(priv.checkUrl('http://127.0.0.1/v1', 'operator').ok).toBe(false);
    // operators may keep credentials in a base URL
    expect(strict.checkUrl('https://u:p@api.example.com/v1', 'operator').ok).toBe(true);
  });
});

describe('OutboundPolicy.checkUrlResolved (write time, with DNS)', () => {
  const fake =
    (map: Record<string, string[]>): OutboundResolver =>
    async (host) => {
      const a = map[host];
      if (!a) throw Object.assign(new Error('ENOTFOUND'), { code: 'ENOTFOUND' });
      return a.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
    };
  const p = new OutboundPolicy({
    allow: ['127.0.0.0/8', 'internal.example'],
    resolve: fake({
      'hooks.example.com': ['93.184.216.34'],
      'sneaky.example.com': ['93.184.216.34', '127.0.0.1'],
      'meta.example.com': ['169.254.169.254'],
      'v6.example.com': ['::ffff:10.0.0.1'],
      'internal.example': ['10.9.9.9'],
    }),
  });

  it('every address of a name must pass', async () => {
    expect((await p.checkUrlResolved('https://hooks.example.com/x', 'tenant')).ok).toBe(true);
    const s = await p.checkUrlResolved('https://sneaky.example.com/x', 'tenant');
    expect(!s.ok && s.reason).toBe(
      'resolves to a loopback address 127.0.0.1; URLs a tenant supplies (callbacks) may only reach public addresses',
    );
    expect((await p.checkUrlResolved('http://meta.example.com/', 'operator')).ok).toBe(false);
    expect((await p.checkUrlResolved('http://v6.example.com/', 'tenant')).ok).toBe(false);
    // a listed name may reach the private addresses it resolves to (operator only)
    expect((await p.checkUrlResolved('http://internal.example/', 'operator')).ok).toBe(true);
    expect((await p.checkUrlResolved('http://internal.example/', 'tenant')).ok).toBe(false);
    // nothing to reach now: passes, the connection is checked again
    expect((await p.checkUrlResolved('http://nowhere.example/', 'tenant')).ok).toBe(true);
  });

  it('a resolver slower than its budget is skipped, not waited for', async () => {
    const slow = new OutboundPolicy({
      resolve: () => new Promise(() => {}), // never answers: only the budget can end the wait
      resolveTimeoutMs: 50,
    });
    const t0 = Date.now();
    expect((await slow.checkUrlResolved('http://slow.example/', 'tenant')).ok).toBe(true);
    expect(Date.now() - t0).toBeLessThan(1_000);
  });
});

describe('connect time (a loopback listener; fake resolvers)', () => {
  let server: Server;
  let port = 0;
  const seen: string[] = [];
  beforeAll(async () => {
    server = createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      if (req.url === '/redirect') {
        res.writeHead(302, { location: `http://127.0.0.1:${port}/elsewhere` }).end();
        return;
      }
      res.end('ok');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as { port: number }).port;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  /** Public when the write-time check asks, loopback when a connection is made: DNS rebinding. */
  const rebinding: OutboundResolver = async (_host, phase) =>
    phase === 'check' ? [{ address: '93.184.216.34', family: 4 }] : [{ address: '127.0.0.1', family: 4 }];

  it('DNS rebinding: public at validation, loopback at connect: refused, nothing reaches the listener', async () => {
    const p = new OutboundPolicy({ resolve: rebinding });
    const url = `http://rebind.example:${port}/hook`;
    expect((await p.checkUrlResolved(url, 'tenant')).ok).toBe(true);
    seen.length = 0;
    const err = await request(url, { method: 'POST', body: '{}', dispatcher: p.dispatcher('tenant') }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(OutboundRefusedError);
    expect((err as OutboundRefusedError).message).toMatch(/resolves to a loopback address 127\.0\.0\.1/);
    // operator-set, not allowed either
    const op = await request(url, { dispatcher: p.dispatcher('operator') }).catch((e: unknown) => e);
    expect(op).toBeInstanceOf(OutboundRefusedError);
    expect(seen).toEqual([]);
    await p.close();
  });

  it('a literal address (which net connects to without a lookup) is checked by the connector', async () => {
    const p = new OutboundPolicy();
    seen.length = 0;
    for (const host of ['127.0.0.1', '[::ffff:127.0.0.1]']) {
      const err = await request(`http://${host}:${port}/x`, { dispatcher: p.dispatcher('operator') }).catch(
        (e: unknown) => e,
      );
      expect(err, host).toBeInstanceOf(OutboundRefusedError);
    }
    expect(seen).toEqual([]);
    await p.close();
  });

  it('allowed: the connection goes to the checked address; a 302 is not followed', async () => {
    const p = new OutboundPolicy({
      allow: ['127.0.0.0/8'],
      resolve: async () => [{ address: '127.0.0.1', family: 4 }],
    });
    seen.length = 0;
    const r = await request(`http://upstream.example:${port}/fine`, { dispatcher: p.dispatcher('operator') });
    expect(r.statusCode).toBe(200);
    expect(await r.body.text()).toBe('ok');
    const red = await request(`http://127.0.0.1:${port}/redirect`, {
      method: 'POST',
      body: '{}',
      dispatcher: p.dispatcher('operator'),
    });
    expect(red.statusCode).toBe(302);
    await red.body.dump();
    expect(seen).toEqual(['GET /fine', 'POST /redirect']);
    await p.close();
  });

  it('mixed answers: only the allowed addresses are connected to', async () => {
    const p = new OutboundPolicy({
      allow: ['127.0.0.1'],
      // 127.0.0.2 (loopback, not listed) first: were it used, the connect would fail (nothing listens there)
      resolve: async () => [
        { address: '127.0.0.2', family: 4 },
        { address: '127.0.0.1', family: 4 },
      ],
    });
    seen.length = 0;
    const r = await request(`http://mixed.example:${port}/mixed`, { dispatcher: p.dispatcher('operator') });
    expect(r.statusCode).toBe(200);
    await r.body.dump();
    expect(seen).toEqual(['GET /mixed']);
    await p.close();
  });

  it("the channel transport's pools enforce the operator policy per new connection", async () => {
    const T = { connectMs: 1_000, firstByteMs: 1_000, idleMs: 1_000 };
    const call = { path: '/x', headers: {}, body: '{}', stream: false };
    seen.length = 0;
    const strict = new Transport(new OutboundPolicy({ resolve: rebinding }));
    await expect(strict.send('c1', `http://127.0.0.1:${port}`, call, T, new Abort())).rejects.toBeInstanceOf(
      OutboundRefusedError,
    );
    await expect(
      strict.send('c2', `http://rebind.example:${port}`, call, T, new Abort()),
    ).rejects.toBeInstanceOf(OutboundRefusedError);
    expect(seen).toEqual([]);
    await strict.close();
    const allowed = new Transport(new OutboundPolicy({ allow: ['127.0.0.1'], resolve: rebinding }));
    const up = await allowed.send('c3', `http://rebind.example:${port}`, call, T, new Abort());
    expect(up.status).toBe(200);
    await up.text();
    expect(seen).toEqual(['POST /x']);
    await allowed.close();
  });
});
