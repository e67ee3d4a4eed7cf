/**
 * Google Vertex AI as a channel: two publishers' models behind one Google Cloud project, one OAuth2
 * bearer token (auth.ts), each publisher in its own wire format, which the existing exchanges already
 * translate. This module only re-addresses their calls; no translation is duplicated.
 *
 * - Gemini (publisher `google`): the Gemini exchange's body (generateContent is the same format on Vertex),
 *   POSTed to `{prefix}/publishers/google/models/{model}:generateContent` or
 *   `:streamGenerateContent?alt=sse`.
 *   https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/inference
 * - Claude (publisher `anthropic`): the Anthropic exchange's Messages body without `model` (it is in the
 *   path) and with `anthropic_version: "vertex-2023-10-16"` in the body instead of the header, POSTed to
 *   `{prefix}/publishers/anthropic/models/{model}:rawPredict` or `:streamRawPredict`.
 *   https://docs.anthropic.com/en/api/claude-on-vertex-ai
 *
 * `{prefix}` is `/v1/projects/{project}/locations/{location}`. The host is the channel's base URL:
 * `https://{location}-aiplatform.googleapis.com`, or `https://aiplatform.googleapis.com` for the `global`
 * location (https://cloud.google.com/vertex-ai/generative-ai/docs/learn/locations#global-endpoint).
 * A base URL already ending in `/v1` (or `/v1beta1`) keeps its version.
 *
 * Settings (`settings.vertex`): `project` (default: the key file's project_id), `location` (default: read
 * from a Google host, else us-central1, the default of Google's SDKs), `publisher` (see vertexTarget).
 * The credential is the service account's JSON key file.
 */
import { GatewayError } from '../../core/errors.js';
import type { Channel } from '../../core/model.js';
import { anthropicExchange } from '../anthropic/exchange.js';
import { anthropicPivot } from '../anthropic/inbound.js';
import { UpstreamFailureError, type UpstreamFailure, classifyHttp, failure } from '../classify.js';
import { geminiExchange } from '../gemini/exchange.js';
import { geminiPivot } from '../gemini/inbound.js';
import { PivotExchange } from '../pivot.js';
import { withCall } from '../shared.js';
import type { Transport } from '../transport.js';
import type { Exchange, ExchangeOptions, InboundDialect, PreparedCall, UpstreamEndpoint } from '../types.js';
import { TOKENS, type ServiceAccount, fetchToken, serviceAccount, transportPost } from './auth.js';

/** The body field that replaces Anthropic's `anthropic-version` header on Vertex. */
export const VERTEX_ANTHROPIC_VERSION = 'vertex-2023-10-16';

export type VertexPublisher = 'google' | 'anthropic';

/** Client dialects a Vertex channel serves with exchanges of its own (OpenAI Responses comes through the chat pivot). */
export const VERTEX_NATIVE: ReadonlySet<InboundDialect> = new Set<InboundDialect>([
  'openai_chat',
  'gemini',
  'anthropic_messages',
]);

/**
 * Which publisher serves the upstream model, and its name there. In order: an explicit prefix on the
 * alias target's model (`anthropic/claude-sonnet-4@20250514`, `google/gemini-2.5-flash`); the channel's
 * `settings.vertex.publisher`; the name itself (`claude-*` is Anthropic's, anything else Google's).
 */
export function vertexTarget(
  ep: UpstreamEndpoint,
  upstreamModel: string,
): { publisher: VertexPublisher; model: string } {
  const m = /^(google|anthropic)\/(.+)$/.exec(upstreamModel);
  if (m) return { publisher: m[1] as VertexPublisher, model: m[2]! };
  const model = upstreamModel.replace(/^models\//, '');
  const publisher = ep.vertex?.publisher ?? (/^claude-/i.test(model) ? 'anthropic' : 'google');
  return { publisher, model };
}

/** `global` for the global host, `{location}` for `{location}-aiplatform.googleapis.com`, else null. */
export function locationOfHost(baseUrl: string): string | null {
  let host: string;
  try {
    host = new URL(baseUrl).hostname.toLowerCase();
  } catch {
    return null;
  }
  if (host === 'aiplatform.googleapis.com') return 'global';
  const m = /^([a-z0-9-]+)-aiplatform\.googleapis\.com$/.exec(host);
  return m ? m[1]! : null;
}

const DEFAULT_LOCATION = 'us-central1';

/** The service account if the credential holds one (its errors are reported by authorize, not here). */
function accountOf(credential: string): ServiceAccount | null {
  try {
    return serviceAccount(credential);
  } catch {
    return null;
  }
}

/** `/v1/projects/{project}/locations/{location}`, or null when no project is known. */
export function vertexPrefix(ep: UpstreamEndpoint, sa: ServiceAccount | null): string | null {
  const project = ep.vertex?.project ?? sa?.projectId;
  if (!project) return null;
  const location = ep.vertex?.location ?? locationOfHost(ep.baseUrl) ?? DEFAULT_LOCATION;
  const versioned = /\/v1(beta1)?\/?$/.test(ep.baseUrl);
  return `${versioned ? '' : '/v1'}/projects/${encodeURIComponent(project)}/locations/${encodeURIComponent(location)}`;
}

/** A model id in the path: escaped, except Claude's `@version` separator, which the API's ids use as is. */
const modelSegment = (model: string): string => encodeURIComponent(model).replace(/%40/g, '@');

/** The channel's own headers and the exchange's, less any credential of the direct APIs (the bearer token goes in at authorize). */
function vertexHeaders(h: Record<string, string>, ep: UpstreamEndpoint): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k in h) {
    const l = k.toLowerCase();
    if (l === 'x-goog-api-key' || l === 'x-api-key' || l === 'anthropic-version') continue;
    if (l === 'authorization' && !hasOwnAuthorization(ep)) continue;
    out[k] = h[k]!;
  }
  return out;
}

function hasOwnAuthorization(ep: UpstreamEndpoint): boolean {
  for (const k in ep.headers) if (k.toLowerCase() === 'authorization') return true;
  return false;
}

/** The JSON body as an Anthropic-on-Vertex body: `model` removed, `anthropic_version` set. */
function vertexAnthropicBody(body: PreparedCall['body']): string {
  const text = typeof body === 'string' ? body : Buffer.from(body as Uint8Array).toString('utf8');
  const o = JSON.parse(text) as Record<string, unknown>;
  delete o.model;
  o.anthropic_version = VERTEX_ANTHROPIC_VERSION;
  return JSON.stringify(o);
}

/** The no-project marker: authorize refuses such a call before it goes out (see vertexAuthorize). */
const NO_PROJECT = '/!no-project';

function onVertex(ex: Exchange, ep: UpstreamEndpoint, publisher: VertexPublisher, model: string): Exchange {
  const prefix = vertexPrefix(ep, accountOf(ep.credential)) ?? NO_PROJECT;
  const stream = ex.call.stream;
  const verb =
    publisher === 'google'
      ? stream
        ? 'streamGenerateContent?alt=sse'
        : 'generateContent'
      : stream
        ? 'streamRawPredict'
        : 'rawPredict';
  const call: PreparedCall = {
    ...ex.call,
    path: `${prefix}/publishers/${publisher}/models/${modelSegment(model)}:${verb}`,
    headers: vertexHeaders(ex.call.headers, ep),
    ...(publisher === 'anthropic' ? { body: vertexAnthropicBody(ex.call.body) } : {}),
  };
  return withCall(ex, call);
}

/**
 * The exchange for one request on a Vertex channel. A client dialect the publisher doesn't speak (a
 * Gemini client on Claude, an Anthropic client on Gemini) goes through the chat pivot, as it would to the
 * direct API.
 */
export function vertexExchange(
  dialect: InboundDialect,
  body: Record<string, unknown>,
  ep: UpstreamEndpoint,
  upstreamModel: string,
  alias: string,
  opts: ExchangeOptions,
): Exchange {
  const { publisher, model } = vertexTarget(ep, upstreamModel);
  if (publisher === 'anthropic') {
    if (dialect === 'gemini') {
      const pivot = geminiPivot(body, body.stream === true, alias);
      const inner = vertexExchange('openai_chat', pivot.chat, ep, upstreamModel, alias, {
        ...opts,
        pivoted: true,
      });
      return new PivotExchange(pivot, inner);
    }
    if (dialect !== 'anthropic_messages' && dialect !== 'openai_chat')
      throw new GatewayError('unsupported_operation', `Claude on Vertex does not serve ${dialect} requests`);
    return onVertex(
      anthropicExchange(dialect, body, ep, model, alias, opts.anthropicBeta),
      ep,
      publisher,
      model,
    );
  }
  if (dialect === 'anthropic_messages') {
    const pivot = anthropicPivot(body, alias);
    const inner = vertexExchange('openai_chat', pivot.chat, ep, upstreamModel, alias, {
      ...opts,
      pivoted: true,
    });
    return new PivotExchange(pivot, inner);
  }
  if (dialect !== 'gemini' && dialect !== 'openai_chat')
    throw new GatewayError('unsupported_operation', `Gemini on Vertex does not serve ${dialect} requests`);
  return onVertex(geminiExchange(dialect, body, ep, model, alias), ep, publisher, model);
}

/** Google's envelope `{"error":{"code":<number>,"message","status"}}` (or a list of one, from a stream). */
function isGoogleError(bodyText: string): boolean {
  try {
    let j = JSON.parse(bodyText) as unknown;
    if (Array.isArray(j) && j.length === 1) j = j[0];
    const e = (j as { error?: { code?: unknown; status?: unknown } } | null)?.error;
    return !!e && typeof e === 'object' && (typeof e.status === 'string' || typeof e.code === 'number');
  } catch {
    return false;
  }
}

/**
 * Vertex's failures. Its front (auth, quota, routing) answers in Google's envelope, classified as a Gemini
 * error is: RESOURCE_EXHAUSTED 429 rate limited, UNAVAILABLE 503 a channel failure, INVALID_ARGUMENT 400
 * the request's fault, 401/403 the credential. Claude's own refusals come through rawPredict in Anthropic's
 * shape (`{"type":"error","error":{"type","message"}}`), classified as Anthropic's; their body is not
 * passed on as it is (the channel's declared error shape is Google's), so a client gets them re-rendered
 * in its own dialect's shape.
 */
export function classifyVertex(
  status: number,
  headers: Record<string, string | string[] | undefined>,
  bodyText: string,
): UpstreamFailure {
  if (isGoogleError(bodyText)) return classifyHttp('gemini', status, headers, bodyText);
  const { body: _body, ...f } = classifyHttp('anthropic', status, headers, bodyText);
  return f;
}

/**
 * The call with the service account's access token as its bearer (cached; refreshed ahead of expiry). A
 * channel header `Authorization` is the operator's explicit choice (a token minted elsewhere): sent as it
 * is, no exchange. Throws UpstreamFailureError when no token can be had: a refused service account takes
 * the channel's credential out, as a 401 does.
 */
export async function vertexAuthorize(
  ch: Channel,
  call: PreparedCall,
  transport: Transport,
): Promise<PreparedCall> {
  if (hasOwnAuthorization(ch)) return call;
  serviceAccount(ch.credential); // a credential that is no key file is reported as such, first
  if (call.path.startsWith(NO_PROJECT))
    throw new UpstreamFailureError(
      failure(
        'auth_failed',
        'vertex channel has no project: set settings.vertex.project or use a key file with project_id',
        { credential: 'invalid' },
      ),
    );
  const post = transportPost(transport, ch);
  const token = await TOKENS.get(ch.credential, (account) => fetchToken(account, post));
  return { ...call, headers: { ...call.headers, authorization: `Bearer ${token}` } };
}
