/**
 * Google service-account credentials -> OAuth2 access tokens for Vertex AI channels: the JWT bearer grant
 * (RFC 7523) as Google documents it for server-to-server use,
 * https://developers.google.com/identity/protocols/oauth2/service-account#httprest : an RS256 JWT
 * {iss: client_email, scope, aud: token_uri, iat, exp <= iat + 1 h} signed with the key file's private key,
 * POSTed as `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<jwt>` to the key file's
 * `token_uri`, answered `{access_token, expires_in, token_type}`.
 *
 * Not google-auth-library: its JWT client (10.9.1, checked in node_modules) posts to a hard-coded
 * https://oauth2.googleapis.com/token and signs that as `aud` (gtoken/getToken.js, gtoken/jwsSign.js),
 * ignoring the key file's token_uri, and it fetches outside the gateway's outbound policy. Signing is a few
 * lines of node:crypto; the POST goes over the relay's transport (the policy's connector, the channel's
 * timeouts) on a pool of its own.
 *
 * Tokens are cached per credential and refreshed ahead of expiry (5 min, or half the lifetime of a shorter
 * token) in the background while the old one still serves; a credential has at most one refresh in flight,
 * which every request needing it awaits.
 */
import { type KeyObject, createPrivateKey, sign } from 'node:crypto';
import type { Channel } from '../../core/model.js';
import { Abort } from '../../lib/abort.js';
import { UpstreamFailureError, classifyTransport, failure, parseRetryAfter } from '../classify.js';
import type { Transport } from '../transport.js';

export const CLOUD_PLATFORM_SCOPE = 'https://www.googleapis.com/auth/cloud-platform';
export const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
export const GOOGLE_TOKEN_URI = 'https://oauth2.googleapis.com/token';
/** Google refuses an assertion living longer than an hour. */
const ASSERTION_LIFETIME_S = 3600;
const EARLY_REFRESH_MS = 5 * 60_000;
/** After a failed background refresh (the old token still valid), the next try waits this long. */
const BACKGROUND_RETRY_MS = 10_000;
const MAX_ENTRIES = 1_000;
const MAX_TOKEN_ANSWER = 64 * 1024;

export interface ServiceAccount {
  clientEmail: string;
  privateKey: KeyObject;
  privateKeyId?: string;
  projectId?: string;
  tokenUri: string;
}

/** The credential itself can't be used (not a service-account key file): the channel's credential goes out. */
function badCredential(why: string): UpstreamFailureError {
  return new UpstreamFailureError(
    failure('auth_failed', `vertex credential is not a usable service account key: ${why}`, {
      credential: 'invalid',
    }),
  );
}

const parsed = new Map<string, ServiceAccount>();

/** The service-account key file a Vertex channel's credential holds (parsed once per credential). */
export function serviceAccount(credential: string): ServiceAccount {
  const hit = parsed.get(credential);
  if (hit) return hit;
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(credential) as Record<string, unknown>;
  } catch {
    throw badCredential('not JSON');
  }
  if (!j || typeof j !== 'object') throw badCredential('not a JSON object');
  if (j.type !== undefined && j.type !== 'service_account')
    throw badCredential(`type is ${JSON.stringify(j.type)}, not "service_account"`);
  if (typeof j.client_email !== 'string' || !j.client_email) throw badCredential('no client_email');
  if (typeof j.private_key !== 'string' || !j.private_key) throw badCredential('no private_key');
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(j.private_key);
  } catch {
    throw badCredential('private_key is not a PEM private key');
  }
  if (privateKey.asymmetricKeyType !== 'rsa') throw badCredential('private_key is not an RSA key');
  const tokenUri = typeof j.token_uri === 'string' && j.token_uri ? j.token_uri : GOOGLE_TOKEN_URI;
  if (!/^https?:\/\//i.test(tokenUri)) throw badCredential('token_uri is not an http(s) URL');
  const sa: ServiceAccount = {
    clientEmail: j.client_email,
    privateKey,
    tokenUri,
    ...(typeof j.private_key_id === 'string' ? { privateKeyId: j.private_key_id } : {}),
    ...(typeof j.project_id === 'string' && j.project_id ? { projectId: j.project_id } : {}),
  };
  if (parsed.size >= MAX_ENTRIES) parsed.clear();
  parsed.set(credential, sa);
  return sa;
}

const b64url = (s: string): string => Buffer.from(s, 'utf8').toString('base64url');

/** The signed JWT asserting the service account's identity to its token endpoint. */
export function signedAssertion(sa: ServiceAccount, nowMs: number, scope = CLOUD_PLATFORM_SCOPE): string {
  const iat = Math.floor(nowMs / 1000);
  const header = { alg: 'RS256', typ: 'JWT', ...(sa.privateKeyId ? { kid: sa.privateKeyId } : {}) };
  const claims = { iss: sa.clientEmail, scope, aud: sa.tokenUri, iat, exp: iat + ASSERTION_LIFETIME_S };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  // An RSA key signs RSASSA-PKCS1-v1_5 by default: RS256 with sha256.
  return `${input}.${sign('sha256', Buffer.from(input), sa.privateKey).toString('base64url')}`;
}

export interface IssuedToken {
  token: string;
  /** Lifetime from when the request was sent, ms. */
  lifetimeMs: number;
}

/** Turns the token endpoint's answer into a token or the failure it means for the channel. */
export function readTokenAnswer(
  status: number,
  headers: Record<string, string | string[] | undefined>,
  text: string,
): IssuedToken {
  let j: Record<string, unknown> | null = null;
  try {
    const v = JSON.parse(text) as unknown;
    if (v && typeof v === 'object' && !Array.isArray(v)) j = v as Record<string, unknown>;
  } catch {
    /* classified by status below */
  }
  if (status >= 200 && status < 300) {
    const token = j?.access_token;
    const expiresIn = j?.expires_in;
    if (typeof token !== 'string' || !token || typeof expiresIn !== 'number' || !(expiresIn > 0))
      throw new UpstreamFailureError(
        failure('bad_response', 'token endpoint answered without access_token and expires_in'),
      );
    return { token, lifetimeMs: expiresIn * 1000 };
  }
  // OAuth2's error body (RFC 6749 section 5.2): {error, error_description}.
  const code = typeof j?.error === 'string' ? j.error : undefined;
  const desc = typeof j?.error_description === 'string' ? j.error_description : undefined;
  const message = `token endpoint answered ${status}${code ? `: ${code}` : ''}${desc ? ` (${desc})` : ''}`;
  const extra = { status, ...(code ? { upstreamCode: code } : {}) };
  if (status === 429)
    return throwing(
      failure('rate_limited', message, { ...extra, cooldownMs: parseRetryAfter(headers) ?? 1000 }),
    );
  if (status >= 500 || status === 408) return throwing(failure('server_error', message, extra));
  // invalid_grant (bad signature, unknown or disabled account), invalid_client, invalid_scope...: the
  // service account is refused, exactly like an API's 401: the credential goes out until an operator acts.
  return throwing(failure('auth_failed', message, { ...extra, credential: 'invalid' }));
}

function throwing(f: ReturnType<typeof failure>): never {
  throw new UpstreamFailureError(f);
}

/** One exchange with the token endpoint: POST the form, answer status, headers and text. */
export type TokenPost = (
  url: string,
  body: string,
) => Promise<{ status: number; headers: Record<string, string | string[] | undefined>; text: string }>;

/** The token endpoint reached over the relay's transport: the channel's timeouts, a pool of its own. */
export function transportPost(transport: Transport, ch: Channel): TokenPost {
  return async (url, body) => {
    const u = new URL(url);
    // Not the request's abort: the refresh is shared by every request waiting on this credential.
    const ac = new Abort();
    const timer = setTimeout(() => {
      const e = new Error('token request exceeded its time budget');
      e.name = 'TimeoutError'; // classified as total_timeout
      ac.abort(e);
    }, ch.timeouts.totalMs);
    try {
      const r = await transport.send(
        `${ch.code}#token`,
        u.origin,
        {
          path: u.pathname + u.search,
          headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
          body,
          stream: false,
        },
        ch.timeouts,
        ac,
        4,
      );
      return { status: r.status, headers: r.headers, text: await r.text(MAX_TOKEN_ANSWER) };
    } catch (e) {
      if (e instanceof UpstreamFailureError) throw e;
      const f = classifyTransport(e, 'connect');
      throw new UpstreamFailureError({ ...f, message: `token endpoint: ${f.message}` });
    } finally {
      clearTimeout(timer);
    }
  };
}

interface Entry {
  token: string | null;
  /** Past this the token is not sent. */
  expiresAt: number;
  /** Past this a refresh starts (in the background while the token is still valid). */
  refreshAt: number;
  /** No background refresh before this (one failed recently). */
  retryAt: number;
  inflight: Promise<string> | null;
}

/**
 * Access tokens per credential. `now` is injectable for tests; `fetch` does one token exchange for a
 * service account (signing included), so one credential's refresh is exactly one call of it.
 */
export class TokenCache {
  private readonly entries = new Map<string, Entry>();
  constructor(private readonly now: () => number = Date.now) {}

  /** A valid token for the credential: the cached one, or the refresh every caller shares. */
  get(credential: string, fetch: (sa: ServiceAccount) => Promise<IssuedToken>): string | Promise<string> {
    const now = this.now();
    let e = this.entries.get(credential);
    const valid = e?.token != null && now < e.expiresAt;
    if (e && valid && (now < e.refreshAt || e.inflight || now < e.retryAt)) return e.token!;
    if (e?.inflight) return e.inflight;
    const sa = serviceAccount(credential); // throws a credential failure before anything is sent
    if (!e) {
      if (this.entries.size >= MAX_ENTRIES) this.entries.clear();
      e = { token: null, expiresAt: 0, refreshAt: 0, retryAt: 0, inflight: null };
      this.entries.set(credential, e);
    }
    const entry = e;
    const started = now;
    const p = fetch(sa).then(
      (t) => {
        entry.token = t.token;
        entry.expiresAt = started + t.lifetimeMs;
        entry.refreshAt = started + Math.max(t.lifetimeMs - EARLY_REFRESH_MS, t.lifetimeMs / 2);
        entry.retryAt = 0;
        entry.inflight = null;
        return t.token;
      },
      (err: unknown) => {
        entry.inflight = null;
        entry.retryAt = this.now() + BACKGROUND_RETRY_MS;
        throw err;
      },
    );
    entry.inflight = p;
    if (valid) {
      // Refreshing early: this request keeps the current token; a failure shows when it has expired.
      p.catch(() => {});
      return entry.token!;
    }
    return p;
  }

  /** Forgets every token (tests; a credential change needs nothing: the new credential is a new key). */
  clear(): void {
    this.entries.clear();
  }
}

/** The process's tokens: shared by every channel and request (a credential used by two channels: one token). */
export const TOKENS = new TokenCache();

/** One token exchange for `sa` over `post`. */
export async function fetchToken(
  sa: ServiceAccount,
  post: TokenPost,
  nowMs = Date.now(),
): Promise<IssuedToken> {
  const form = new URLSearchParams({ grant_type: JWT_BEARER_GRANT, assertion: signedAssertion(sa, nowMs) });
  const r = await post(sa.tokenUri, form.toString());
  return readTokenAnswer(r.status, r.headers, r.text);
}
