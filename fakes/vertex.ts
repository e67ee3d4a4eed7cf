/**
 * Fake Google Vertex AI upstream with its own OAuth2 token endpoint, so Vertex channels are tested on the
 * real wire formats, the real addresses and the real token exchange:
 *
 *   POST /token  the JWT bearer grant (RFC 7523) as Google's token endpoint answers it: a form
 *                `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<RS256 JWT>`; the JWT's
 *                signature is checked against the public key of a service account this fake made
 *                (`serviceAccount()`), its `iss` (that account), `aud` (this endpoint's URL), `scope`
 *                (cloud-platform), `iat`/`exp` (an hour at most, not expired). Answers
 *                `{access_token, expires_in, token_type: "Bearer"}` (expires_in: the `tokenExpiresIn` switch)
 *                or OAuth2's `{error, error_description}` 400.
 *   POST /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent
 *        (v1beta1 as well: @google/genai's default in Vertex mode)
 *        ... :streamGenerateContent?alt=sse        the fake Gemini's answers (fakes/gemini.ts)
 *   POST /v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:rawPredict
 *        ... :streamRawPredict                     the fake Anthropic's answers (fakes/anthropic.ts) to a
 *                Messages body without `model` and with `anthropic_version: "vertex-2023-10-16"`
 *
 * Model calls need `Authorization: Bearer <a token this fake issued, not expired>` (else Google's 401
 * UNAUTHENTICATED) and the fake's project (else 403 PERMISSION_DENIED). Errors of Vertex's front are in
 * Google's envelope `{"error":{"code","message","status"}}`; Claude's own refusals in Anthropic's shape,
 * as on the real service. A fault's `errorCode` ending in `_error` (e.g. `overloaded_error`) answers in
 * Anthropic's shape, any other in Google's. The usual faults of fakes/common.ts apply to every route.
 */
import { type KeyObject, createPublicKey, generateKeyPairSync, verify } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { anthropicErrorBody, anthropicSpec } from './anthropic.js';
import {
  type AuthFailure,
  type FakeContext,
  type FakeOptions,
  type FakeUpstream,
  isObject,
  type ProviderSpec,
  rid,
  sendJson,
  startFakeServer,
} from './common.js';
import { geminiErrorBody, geminiSpec } from './gemini.js';

export const FAKE_VERTEX_PROJECT = 'anima-test-project';
const SCOPE = 'https://www.googleapis.com/auth/cloud-platform';
const GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

export interface VertexSwitches {
  /** `expires_in` of the tokens issued from now on, seconds (Google's: 3599). */
  tokenExpiresIn: number;
  /** The token endpoint refuses every assertion (400 invalid_grant), as for a disabled account. */
  refuseTokens: boolean;
}

export interface VertexTokenStats {
  /** Token requests answered with a token. */
  issued: number;
  /** Token requests refused. */
  refused: number;
}

export interface FakeVertexUpstream extends FakeUpstream {
  readonly vertex: VertexSwitches;
  readonly tokenStats: VertexTokenStats;
  readonly project: string;
  /** Access tokens issued, oldest first. */
  readonly issuedTokens: readonly string[];
  /**
   * A new service account trusted by this fake: its JSON key file, with a key pair made now (nothing
   * committed). `trusted: false` makes a key file whose key this fake doesn't know (a bad signature).
   */
  serviceAccount(opts?: { projectId?: string | null; trusted?: boolean }): string;
}

export interface FakeVertexOptions extends FakeOptions {
  project?: string;
}

function oauthError(ctx: FakeContext, error: string, description: string): void {
  sendJson(ctx, 400, { error, error_description: description });
}

const b64json = (s: string): Record<string, unknown> | null => {
  try {
    const v = JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as unknown;
    return isObject(v) ? v : null;
  } catch {
    return null;
  }
};

interface TokenState {
  sw: VertexSwitches;
  stats: VertexTokenStats;
  keys: Map<string, KeyObject>;
  tokens: Map<string, number>;
  issued: string[];
  url: () => string;
}

/** The token endpoint: checks the grant as Google's does (messages are Google's where known). */
function token(ctx: FakeContext, st: TokenState): void {
  const refuse = (error: string, description: string) => {
    st.stats.refused++;
    oauthError(ctx, error, description);
  };
  if (!/^application\/x-www-form-urlencoded/i.test(ctx.req.headers['content-type'] ?? ''))
    return refuse('invalid_request', 'Content-Type must be application/x-www-form-urlencoded');
  const form = new URLSearchParams(ctx.rawBody.toString('utf8'));
  if (form.get('grant_type') !== GRANT)
    return refuse('unsupported_grant_type', `Invalid grant_type: ${form.get('grant_type') ?? ''}`);
  const parts = (form.get('assertion') ?? '').split('.');
  if (parts.length !== 3) return refuse('invalid_grant', 'Invalid JWT: not three dot-separated parts.');
  const [h, p, sig] = parts as [string, string, string];
  const header = b64json(h);
  const claims = b64json(p);
  if (!header || !claims) return refuse('invalid_grant', 'Invalid JWT: header or claims not JSON.');
  if (header.alg !== 'RS256') return refuse('invalid_grant', 'Invalid JWT: alg must be RS256.');
  const key = typeof claims.iss === 'string' ? st.keys.get(claims.iss) : undefined;
  if (!key) return refuse('invalid_grant', 'Invalid grant: account not found');
  if (!verify('sha256', Buffer.from(`${h}.${p}`), key, Buffer.from(sig, 'base64url')))
    return refuse('invalid_grant', 'Invalid JWT Signature.');
  if (claims.aud !== `${st.url()}/token`)
    return refuse('invalid_grant', 'Invalid JWT: Failed audience check.');
  const scopes = typeof claims.scope === 'string' ? claims.scope.split(' ') : [];
  if (!scopes.includes(SCOPE))
    return refuse('invalid_scope', 'Invalid OAuth scope or ID token audience provided.');
  const now = Math.floor(Date.now() / 1000);
  const { iat, exp } = claims;
  if (typeof iat !== 'number' || typeof exp !== 'number' || exp <= now || iat > now + 60 || exp - iat > 3600)
    return refuse(
      'invalid_grant',
      'Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.',
    );
  if (st.sw.refuseTokens) return refuse('invalid_grant', 'Invalid grant: account not found');
  const accessToken = `ya29.fake-${rid(40)}`;
  st.tokens.set(accessToken, Date.now() + st.sw.tokenExpiresIn * 1000);
  st.issued.push(accessToken);
  st.stats.issued++;
  sendJson(ctx, 200, { access_token: accessToken, expires_in: st.sw.tokenExpiresIn, token_type: 'Bearer' });
}

function checkAuth(st: TokenState) {
  return (req: IncomingMessage): AuthFailure | null => {
    if ((req.url ?? '').split('?')[0] === '/token') return null;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    const until = m ? st.tokens.get(m[1]!) : undefined;
    if (until !== undefined && Date.now() < until) return null;
    return {
      status: 401,
      message:
        'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.',
      code: 'UNAUTHENTICATED',
    };
  };
}

const MODEL_RE =
  /^\/v1(?:beta1)?\/projects\/([^/]+)\/locations\/([^/]+)\/publishers\/(google|anthropic)\/models\/([^/:]+):([A-Za-z]+)$/;

async function route(ctx: FakeContext, st: TokenState, project: string): Promise<boolean> {
  if (ctx.method === 'POST' && ctx.path === '/token') return (token(ctx, st), true);
  let path: string;
  try {
    path = decodeURIComponent(ctx.path);
  } catch {
    return false;
  }
  const m = MODEL_RE.exec(path);
  if (!m || ctx.method !== 'POST') return false;
  const [, proj, location, publisher, model, verb] = m as unknown as [
    string,
    string,
    string,
    string,
    string,
    string,
  ];
  const resource = `projects/${proj}/locations/${location}/publishers/${publisher}/models/${model}`;
  if (proj !== project) {
    sendJson(
      ctx,
      403,
      geminiErrorBody(
        403,
        `Permission 'aiplatform.endpoints.predict' denied on resource '//aiplatform.googleapis.com/${resource}' (or it may not exist).`,
      ),
    );
    return true;
  }
  if (publisher === 'google') {
    if (verb !== 'generateContent' && verb !== 'streamGenerateContent') return false;
    ctx.path = `/v1/models/${encodeURIComponent(model)}:${verb}`;
    return geminiSpec.route(ctx, geminiSpec);
  }
  if (verb !== 'rawPredict' && verb !== 'streamRawPredict') return false;
  const b = ctx.body;
  if (!ctx.bodyIsJson || !isObject(b)) return false;
  // Vertex's own checks on the Anthropic body, then the Messages API's (model from the path).
  if (b.anthropic_version !== 'vertex-2023-10-16') {
    sendJson(
      ctx,
      400,
      anthropicErrorBody(
        400,
        'anthropic_version: Input should be "vertex-2023-10-16"',
        'invalid_request_error',
      ),
    );
    return true;
  }
  if ('model' in b) {
    sendJson(ctx, 400, anthropicErrorBody(400, 'model: Extra inputs are not permitted'));
    return true;
  }
  if ((verb === 'streamRawPredict') !== (b.stream === true)) {
    sendJson(
      ctx,
      400,
      geminiErrorBody(400, `${verb} ${verb === 'streamRawPredict' ? 'needs' : 'refuses'} "stream": true`),
    );
    return true;
  }
  // A new object: the recorded request keeps the body as it arrived.
  const { anthropic_version: _version, ...messages } = b;
  ctx.body = { ...messages, model };
  ctx.req.headers['anthropic-version'] = '2023-06-01';
  ctx.path = '/v1/messages';
  return anthropicSpec.route(ctx, anthropicSpec);
}

/** Starts a fake Vertex AI (and token endpoint) on 127.0.0.1 (port 0 = random). */
export async function startFakeVertex(opts: FakeVertexOptions = {}): Promise<FakeVertexUpstream> {
  const project = opts.project ?? FAKE_VERTEX_PROJECT;
  const vertex: VertexSwitches = { tokenExpiresIn: 3599, refuseTokens: false };
  const tokenStats: VertexTokenStats = { issued: 0, refused: 0 };
  let url = '';
  const st: TokenState = {
    sw: vertex,
    stats: tokenStats,
    keys: new Map(),
    tokens: new Map(),
    issued: [],
    url: () => url,
  };
  const spec: ProviderSpec = {
    defaultName: 'fake-vertex',
    requestIdHeader: 'x-request-id',
    errorBody: (status, message, code) =>
      code?.endsWith('_error')
        ? anthropicErrorBody(status, message, code)
        : geminiErrorBody(status, message, code),
    checkAuth: checkAuth(st),
    isStream: (ctx) => /:stream(GenerateContent|RawPredict)$/.test(ctx.path),
    route: (ctx) => route(ctx, st, project),
  };
  const up = await startFakeServer(spec, { name: 'fake-vertex', ...opts });
  url = up.url;
  let seq = 0;
  const serviceAccount = (o: { projectId?: string | null; trusted?: boolean } = {}): string => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const email = `gateway-${++seq}-${rid(6).toLowerCase()}@${project}.iam.gserviceaccount.com`;
    if (o.trusted !== false)
      st.keys.set(email, createPublicKey(publicKey.export({ type: 'spki', format: 'pem' })));
    return JSON.stringify({
      type: 'service_account',
      ...(o.projectId === null ? {} : { project_id: o.projectId ?? project }),
      private_key_id: rid(40).toLowerCase(),
      private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }),
      client_email: email,
      client_id: String(100_000_000_000 + seq),
      auth_uri: 'https://accounts.google.com/o/oauth2/auth',
      token_uri: `${url}/token`,
      auth_provider_x509_cert_url: 'https://www.googleapis.com/oauth2/v1/certs',
      universe_domain: 'googleapis.com',
    });
  };
  return Object.assign(up, { vertex, tokenStats, project, issuedTokens: st.issued, serviceAccount });
}
