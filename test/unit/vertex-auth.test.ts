/**
 * Vertex's service-account auth: the RS256 assertion (verified with the key's public half), the token
 * endpoint's answers classified (a refusal takes the credential out; an outage counts against the
 * channel), the token cache on a fake clock (one refresh in flight shared by every caller, refreshed
 * ahead of expiry in the background, awaited once expired), and the whole exchange against the fake's
 * token endpoint over the gateway's own Transport.
 */
import { createPublicKey, verify } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeVertexUpstream, startFakeVertex } from '../../fakes/index.js';
import { type Channel, DEFAULT_BREAKER, DEFAULT_TIMEOUTS } from '../../src/core/model.js';
import { UpstreamFailureError } from '../../src/providers/classify.js';
import { Transport } from '../../src/providers/transport.js';
import {
  CLOUD_PLATFORM_SCOPE,
  type IssuedToken,
  TokenCache,
  fetchToken,
  readTokenAnswer,
  serviceAccount,
  signedAssertion,
  transportPost,
} from '../../src/providers/vertex/auth.js';

let fake: FakeVertexUpstream;
let transport: Transport;
beforeAll(async () => {
  fake = await startFakeVertex();
  transport = new Transport();
});
afterAll(async () => {
  await transport?.close();
  await fake?.close();
});

const channel = (credential: string): Channel => ({
  id: '1',
  code: 'vx',
  name: 'vx',
  provider: 'vertex',
  baseUrl: fake.url,
  credential,
  enabled: true,
  weight: 1,
  timeouts: { ...DEFAULT_TIMEOUTS, totalMs: 5_000 },
  breaker: DEFAULT_BREAKER,
  headers: {},
  maxConnections: 8,
  nativeResponses: true,
  versionNo: 1,
  effectiveFrom: 0,
  effectiveTo: null,
});

/** The failure an UpstreamFailureError carries, from a thrown or rejected call. */
async function failureOf(f: () => unknown) {
  try {
    await f();
  } catch (e) {
    expect(e).toBeInstanceOf(UpstreamFailureError);
    return (e as UpstreamFailureError).failure;
  }
  throw new Error('expected a failure');
}

describe('the assertion', () => {
  it('is an RS256 JWT of the service account for its token_uri, an hour at most', () => {
    const json = fake.serviceAccount();
    const sa = serviceAccount(json);
    const now = 1_760_000_000_000;
    const [h, p, s] = signedAssertion(sa, now).split('.') as [string, string, string];
    const header = JSON.parse(Buffer.from(h, 'base64url').toString()) as Record<string, unknown>;
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
    const key = JSON.parse(json) as { private_key: string; private_key_id: string; client_email: string };
    expect(header).toEqual({ alg: 'RS256', typ: 'JWT', kid: key.private_key_id });
    expect(claims).toEqual({
      iss: key.client_email,
      scope: CLOUD_PLATFORM_SCOPE,
      aud: `${fake.url}/token`,
      iat: now / 1000,
      exp: now / 1000 + 3600,
    });
    const pub = createPublicKey(key.private_key);
    expect(verify('sha256', Buffer.from(`${h}.${p}`), pub, Buffer.from(s, 'base64url'))).toBe(true);
    expect(verify('sha256', Buffer.from(`${h}.${p}x`), pub, Buffer.from(s, 'base64url'))).toBe(false);
  });

  // Differential, against the signer google-auth-library uses (its gtoken signs with `jws`, and builds the
  // claims with buildPayloadForJwsSign): the same header and claims give the same JWS byte for byte
  // (RS256 is deterministic), and the claims are the library's for a key whose token_uri is Google's. The
  // library itself can't be the differential's other side end to end: it posts to Google's fixed URL,
  // ignoring token_uri (why the grant is written here, on the gateway's transport and outbound policy).
  it("is the JWS google-auth-library's signer makes of the same header and claims, with the library's claims", async () => {
    const jws = (await import('jws' as string)).default as {
      sign(o: { header: Record<string, unknown>; payload: unknown; secret: string }): string;
      verify(signature: string, alg: string, key: string): boolean;
    };
    const { buildPayloadForJwsSign } = (await import(
      'google-auth-library/build/src/gtoken/jwsSign.js' as string
    )) as { buildPayloadForJwsSign: (o: { iss: string; scope: string }) => Record<string, unknown> };
    const key = JSON.parse(fake.serviceAccount()) as Record<string, string>;
    for (const withKid of [true, false]) {
      const file: Record<string, string> = { ...key, token_uri: 'https://oauth2.googleapis.com/token' };
      if (!withKid) delete file.private_key_id;
      const sa = serviceAccount(JSON.stringify(file));
      const now = Date.now();
      const ours = signedAssertion(sa, now);
      const [h, p] = ours.split('.') as [string, string];
      const header = JSON.parse(Buffer.from(h, 'base64url').toString()) as Record<string, unknown>;
      const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
      expect(jws.sign({ header, payload: claims, secret: key.private_key! })).toBe(ours);
      expect(jws.verify(ours, 'RS256', key.private_key!)).toBe(true);
      const lib = buildPayloadForJwsSign({ iss: key.client_email!, scope: CLOUD_PLATFORM_SCOPE });
      // The library reads the clock itself: compare the lifetime, not the instant.
      const { iat, exp, sub, ...rest } = lib as { iat: number; exp: number; sub?: string };
      expect(sub).toBeUndefined();
      expect(exp - iat).toBe((claims.exp as number) - (claims.iat as number));
      expect(Math.abs(iat - (claims.iat as number))).toBeLessThanOrEqual(2);
      expect({ ...claims, iat: 0, exp: 0 }).toEqual({ ...rest, iat: 0, exp: 0 });
    }
  });

  it('a credential that is not a service-account key file is a credential failure', async () => {
    const good = JSON.parse(fake.serviceAccount()) as Record<string, unknown>;
    const bad = [
      'not json',
      JSON.stringify({ ...good, type: 'authorized_user' }),
      JSON.stringify({ ...good, client_email: undefined }),
      JSON.stringify({ ...good, private_key: 'nope' }),
      JSON.stringify({ ...good, token_uri: 'file:///etc/passwd' }),
    ];
    for (const c of bad) {
      const f = await failureOf(() => serviceAccount(c));
      expect(f).toMatchObject({ kind: 'auth_failed', credential: 'invalid' });
      expect(f.message).not.toContain('PRIVATE KEY');
    }
    // No token_uri: Google's.
    expect(serviceAccount(JSON.stringify({ ...good, token_uri: undefined })).tokenUri).toBe(
      'https://oauth2.googleapis.com/token',
    );
  });
});

describe("the token endpoint's answers", () => {
  const rows: Array<[string, number, string, Record<string, unknown>]> = [
    [
      '400 invalid_grant',
      400,
      '{"error":"invalid_grant","error_description":"Invalid JWT Signature."}',
      { kind: 'auth_failed', credential: 'invalid', upstreamCode: 'invalid_grant' },
    ],
    ['401 invalid_client', 401, '{"error":"invalid_client"}', { kind: 'auth_failed', credential: 'invalid' }],
    ['429', 429, '{"error":"rate_limit_exceeded"}', { kind: 'rate_limited', countsAsFailure: false }],
    ['500', 500, 'oops', { kind: 'server_error', countsAsFailure: true, tryNext: true }],
    ['503', 503, '', { kind: 'server_error', countsAsFailure: true }],
    ['200 without a token', 200, '{"token_type":"Bearer"}', { kind: 'bad_response', countsAsFailure: true }],
  ];
  it.each(rows)('%s', async (_n, status, text, want) => {
    const f = await failureOf(() => readTokenAnswer(status, {}, text));
    expect(f).toMatchObject(want);
    if (f.credential) expect(f.message).toMatch(/token endpoint answered/);
    else expect(f.credential).toBeUndefined();
  });
  it('200 with access_token and expires_in', () => {
    expect(
      readTokenAnswer(200, {}, '{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}'),
    ).toEqual({
      token: 'ya29.x',
      lifetimeMs: 3_599_000,
    });
  });
});

describe('the token cache', () => {
  /** A fetch whose answers the test releases one by one. */
  function gate() {
    const calls: Array<{ resolve: (t: IssuedToken) => void; reject: (e: unknown) => void }> = [];
    const fetch = () =>
      new Promise<IssuedToken>((resolve, reject) => {
        calls.push({ resolve, reject });
      });
    return { calls, fetch };
  }

  it('one refresh in flight, shared; cached; refreshed 5 min early in the background; awaited once expired', async () => {
    let now = 1_000_000;
    const cache = new TokenCache(() => now);
    const cred = fake.serviceAccount();
    const g = gate();
    const waiting = Array.from({ length: 20 }, () => cache.get(cred, g.fetch));
    expect(g.calls).toHaveLength(1);
    g.calls[0]!.resolve({ token: 't1', lifetimeMs: 3_600_000 });
    expect(await Promise.all(waiting)).toEqual(Array(20).fill('t1'));
    // Cached: answered at once, no call.
    now += 3_600_000 - 300_001;
    expect(cache.get(cred, g.fetch)).toBe('t1');
    expect(g.calls).toHaveLength(1);
    // Inside the last 5 minutes: a background refresh starts, the current token still serves.
    now += 2;
    expect(cache.get(cred, g.fetch)).toBe('t1');
    expect(cache.get(cred, g.fetch)).toBe('t1');
    expect(g.calls).toHaveLength(2);
    g.calls[1]!.resolve({ token: 't2', lifetimeMs: 3_600_000 });
    await Promise.resolve();
    await Promise.resolve();
    expect(cache.get(cred, g.fetch)).toBe('t2');
    // Expired with no refresh done: callers wait for the one in flight.
    now += 3_600_001;
    const a = cache.get(cred, g.fetch);
    const b = cache.get(cred, g.fetch);
    expect(a).toBeInstanceOf(Promise);
    expect(g.calls).toHaveLength(3);
    g.calls[2]!.resolve({ token: 't3', lifetimeMs: 2_000 });
    expect(await a).toBe('t3');
    expect(await b).toBe('t3');
    // A short-lived token is refreshed at half its life, not 5 minutes before it was issued.
    now += 999;
    expect(cache.get(cred, g.fetch)).toBe('t3');
    now += 2;
    expect(cache.get(cred, g.fetch)).toBe('t3');
    expect(g.calls).toHaveLength(4);
  });

  it('a failed refresh rejects every waiter; the next request tries again', async () => {
    const now = 5_000_000;
    const cache = new TokenCache(() => now);
    const cred = fake.serviceAccount();
    const g = gate();
    const waiters = [cache.get(cred, g.fetch), cache.get(cred, g.fetch)];
    const refused = new UpstreamFailureError({
      kind: 'auth_failed',
      status: 400,
      countsAsFailure: false,
      tryNext: true,
      credential: 'invalid',
      message: 'refused',
    });
    g.calls[0]!.reject(refused);
    for (const w of waiters) await expect(w).rejects.toBe(refused);
    const again = cache.get(cred, g.fetch);
    expect(g.calls).toHaveLength(2);
    g.calls[1]!.resolve({ token: 'ok', lifetimeMs: 60_000 });
    expect(await again).toBe('ok');
  });
});

describe("the exchange with the fake's token endpoint over the Transport", () => {
  it('issues a token the fake then accepts; each refusal is a credential failure', async () => {
    const cred = fake.serviceAccount();
    const post = transportPost(transport, channel(cred));
    const t = await fetchToken(serviceAccount(cred), post);
    expect(t.lifetimeMs).toBe(3_599_000);
    expect(fake.issuedTokens).toContain(t.token);
    const ok = await fetch(
      `${fake.url}/v1/projects/${fake.project}/locations/global/publishers/google/models/gemini-2.5-flash:generateContent`,
      {
        method: 'POST',
        headers: { authorization: `Bearer ${t.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
      },
    );
    expect(ok.status).toBe(200);

    // A key the endpoint doesn't know (bad signature), an assertion past its time, a refusing endpoint.
    const stranger = fake.serviceAccount({ trusted: false });
    const f1 = await failureOf(() =>
      fetchToken(serviceAccount(stranger), transportPost(transport, channel(stranger))),
    );
    expect(f1).toMatchObject({ kind: 'auth_failed', credential: 'invalid', status: 400 });
    const stale = await failureOf(() => fetchToken(serviceAccount(cred), post, Date.now() - 2 * 3_600_000));
    expect(stale.message).toMatch(/short-lived token/);
    fake.vertex.refuseTokens = true;
    try {
      const f3 = await failureOf(() => fetchToken(serviceAccount(cred), post));
      expect(f3).toMatchObject({ kind: 'auth_failed', credential: 'invalid', upstreamCode: 'invalid_grant' });
    } finally {
      fake.vertex.refuseTokens = false;
    }
  });

  it('an unreachable token endpoint is a channel failure, not a credential one', async () => {
    const dead = JSON.stringify({
      ...JSON.parse(fake.serviceAccount()),
      token_uri: 'http://127.0.0.1:1/token',
    });
    const f = await failureOf(() =>
      fetchToken(serviceAccount(dead), transportPost(transport, channel(dead))),
    );
    expect(f).toMatchObject({ kind: 'connect_refused', countsAsFailure: true, tryNext: true });
    expect(f.credential).toBeUndefined();
    expect(f.message).toMatch(/^token endpoint: /);
  });
});
