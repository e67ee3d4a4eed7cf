/**
 * The provider registry: one declaration per provider kind. The exchange switch (index.ts), the dialects a
 * channel can serve (CAPABILITIES), the admin API's validation of `provider`, the OpenAPI enum and
 * `GET /api/admin/v1/provider-kinds` are all read from here, so a new kind is one entry (plus its name in the
 * ProviderKind union, which the compiler then holds to this table).
 *
 * An OpenAI-compatible vendor with quirks is a declaration on the OpenAI base (`openAICompatible`): auth
 * style, parameter renames, refusals, defaults and extra headers are applied to the OpenAI exchange's call
 * as the last step before it goes out. Kinds with a wire format of their own (anthropic, gemini) bring
 * their own exchange and state their auth style for the record.
 */
import { CHAT_LIKE } from '../core/dialects.js';
import { GatewayError, unsupported } from '../core/errors.js';
import { anthropicExchange } from './anthropic/exchange.js';
import { CountTokensPassthrough } from './anthropic/count-tokens.js';
import { azureExchange } from './azure.js';
import { classifyHttp, type UpstreamFailure } from './classify.js';
import type { Channel } from '../core/model.js';
import type { Transport } from './transport.js';
import { geminiExchange } from './gemini/exchange.js';
import type { ChatRequest } from './openai/wire.js';
import { openaiExchange } from './openai/exchange.js';
import { withCall } from './shared.js';
import { vendorDeclarations } from './vendors.js';
import { VERTEX_NATIVE, classifyVertex, vertexAuthorize, vertexExchange } from './vertex/exchange.js';
import { classifyBedrock } from './bedrock/classify.js';
import { bedrockAuthorize, bedrockExchange } from './bedrock/exchange.js';
import type {
  Exchange,
  ExchangeOptions,
  InboundDialect,
  PreparedCall,
  ProviderKind,
  UpstreamEndpoint,
} from './types.js';

/**
 * How the credential travels. `query`: `?key=` on the URL (Google's alternative; no header). `sigv4`: an AWS
 * Signature Version 4 over the request (Bedrock), made by the declaration's `authorize`.
 */
export type AuthStyle = 'bearer' | 'x-api-key' | 'api-key' | 'x-goog-api-key' | 'query' | 'sigv4';

/** The shape an upstream's error bodies have (what the classifier reads), one of core/render.ts's. */
export type { ErrorShape } from '../core/dialects.js';
import type { ErrorShape } from '../core/dialects.js';

export type ExchangeFactory = (
  dialect: InboundDialect,
  body: Record<string, unknown>,
  ep: UpstreamEndpoint,
  upstreamModel: string,
  alias: string,
  opts: ExchangeOptions,
) => Exchange;

export type Classifier = (
  status: number,
  headers: Record<string, string | string[] | undefined>,
  bodyText: string,
) => UpstreamFailure;

/** Request-body adjustments for an OpenAI-compatible vendor, keyed by the typed chat request. */
export interface Quirks {
  /** Parameter renamed on the way out (e.g. max_completion_tokens -> max_tokens). */
  rename?: Partial<Record<keyof ChatRequest, string>>;
  /** Parameters the vendor can't honour: a 400 naming them when given (never dropped silently). */
  refuse?: ReadonlyArray<keyof ChatRequest>;
  /** Pure hints the vendor rejects and that never change the output: removed. */
  drop?: ReadonlyArray<keyof ChatRequest>;
  /** Set when the client didn't. */
  defaults?: Partial<Record<keyof ChatRequest, unknown>>;
  /** Sent on every call (before the channel's own headers, which win). */
  headers?: Record<string, string>;
}

export interface ProviderDeclaration {
  kind: ProviderKind;
  description: string;
  /** Client dialects served by an exchange of its own; other chat-like ones go through the chat pivot. */
  native: ReadonlySet<InboundDialect>;
  exchange: ExchangeFactory;
  errorShape: ErrorShape;
  classify: Classifier;
  auth: AuthStyle;
  quirks?: Quirks;
  /**
   * A credential that must be exchanged before use (Vertex: a service account for an OAuth2 token): the
   * relay awaits this just before the call goes out, and sends what it returns. It throws
   * UpstreamFailureError (classify.ts) when it fails, reported as the attempt's failure.
   */
  authorize?: (ch: Channel, call: PreparedCall, transport: Transport) => Promise<PreparedCall>;
}

/** Client dialects that reach a chat provider through the chat pivot when it doesn't speak them (see pivot.ts). */
export const PIVOTED: ReadonlySet<InboundDialect> = new Set(
  [...CHAT_LIKE].filter((d) => d !== 'openai_chat'),
);

const OPENAI_NATIVE = new Set<InboundDialect>([
  'openai_chat',
  'openai_embeddings',
  'openai_responses',
  'gemini_embed',
  'openai_speech',
  'openai_transcription',
  'openai_translation',
  'openai_image_edit',
]);

// ---- quirk hooks (applied to the OpenAI base's prepared call) ----

function authHeaders(
  h: Record<string, string>,
  ep: UpstreamEndpoint,
  auth: AuthStyle,
): Record<string, string> {
  if (auth === 'bearer' || !ep.credential) return h;
  const out: Record<string, string> = {};
  for (const k in h) if (k !== 'authorization') out[k] = h[k]!;
  if (auth !== 'query') out[auth] = ep.credential;
  // A channel header that names the same field is the operator's explicit choice: it wins.
  for (const k in ep.headers) out[k] = ep.headers[k]!;
  return out;
}

/** The JSON body with renames, refusals, drops and defaults applied; the same text when nothing changed. */
export function applyQuirks(kind: string, body: PreparedCall['body'], q: Quirks): PreparedCall['body'] {
  if (typeof body !== 'string' || (!q.rename && !q.refuse && !q.drop && !q.defaults)) return body;
  let o: unknown;
  try {
    o = JSON.parse(body);
  } catch {
    return body;
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return body;
  const b = o as Record<string, unknown>;
  let changed = false;
  for (const p of q.refuse ?? [])
    if (b[p] !== undefined && b[p] !== null)
      throw unsupported(String(p), `${String(p)} is not supported by a ${kind} channel`);
  for (const p of q.drop ?? [])
    if (p in b) {
      delete b[p];
      changed = true;
    }
  for (const [from, to] of Object.entries(q.rename ?? {}) as Array<[string, string]>) {
    if (!(from in b)) continue;
    // Both spellings given: the client's newer one is what it meant.
    b[to] = b[from];
    delete b[from];
    changed = true;
  }
  for (const [p, v] of Object.entries(q.defaults ?? {}))
    if (b[p] === undefined) {
      b[p] = v;
      changed = true;
    }
  return changed ? JSON.stringify(b) : body;
}

/**
 * A declaration on the OpenAI base: the OpenAI exchange, then the vendor's auth style and quirks on the
 * prepared call. `native` narrows what the vendor serves (default: chat and embeddings).
 */
export function openAICompatible(d: {
  kind: ProviderKind;
  description: string;
  auth?: AuthStyle;
  quirks?: Quirks;
  native?: ReadonlySet<InboundDialect>;
}): ProviderDeclaration {
  const auth = d.auth ?? 'bearer';
  const quirks = d.quirks ?? {};
  return {
    kind: d.kind,
    description: d.description,
    native: d.native ?? new Set<InboundDialect>(['openai_chat', 'openai_embeddings']),
    errorShape: 'openai',
    classify: (s, h, t) => classifyHttp('openai', s, h, t),
    auth,
    quirks,
    exchange: (dialect, body, ep, upstreamModel, alias, opts) => {
      const ex = openaiExchange(dialect, body, ep, upstreamModel, alias, opts);
      const call = ex.call;
      let path = call.path;
      if (auth === 'query' && ep.credential)
        path += `${path.includes('?') ? '&' : '?'}key=${encodeURIComponent(ep.credential)}`;
      const headers = authHeaders({ ...quirks.headers, ...call.headers }, ep, auth);
      return withCall(ex, { ...call, path, headers, body: applyQuirks(d.kind, call.body, quirks) });
    },
  };
}

// ---- the declarations ----

const DECLARATIONS: Readonly<Record<ProviderKind, ProviderDeclaration>> = {
  openai: {
    kind: 'openai',
    description:
      'OpenAI, or any upstream that speaks its API in full (chat, responses, embeddings, audio, images)',
    // Legacy completions and moderations are OpenAI's own (Azure has neither as a deployment operation).
    native: new Set<InboundDialect>([...OPENAI_NATIVE, 'openai_completions', 'openai_moderations']),
    exchange: (dialect, body, ep, m, alias, opts) => openaiExchange(dialect, body, ep, m, alias, opts),
    errorShape: 'openai',
    classify: (s, h, t) => classifyHttp('openai', s, h, t),
    auth: 'bearer',
  },
  anthropic: {
    kind: 'anthropic',
    description: 'Anthropic Messages API',
    native: new Set<InboundDialect>(['openai_chat', 'anthropic_messages', 'anthropic_count_tokens']),
    exchange: (dialect, body, ep, m, alias, opts) =>
      dialect === 'anthropic_count_tokens'
        ? new CountTokensPassthrough(body, ep, m, opts.anthropicBeta)
        : anthropicExchange(dialect, body, ep, m, alias, opts.anthropicBeta),
    errorShape: 'anthropic',
    classify: (s, h, t) => classifyHttp('anthropic', s, h, t),
    auth: 'x-api-key',
  },
  gemini: {
    kind: 'gemini',
    description: 'Google Gemini API (generateContent, embedContent)',
    native: new Set<InboundDialect>(['openai_chat', 'gemini', 'gemini_embed']),
    exchange: (dialect, body, ep, m, alias) => geminiExchange(dialect, body, ep, m, alias),
    errorShape: 'google',
    classify: (s, h, t) => classifyHttp('gemini', s, h, t),
    auth: 'x-goog-api-key',
  },
  jobs: {
    kind: 'jobs',
    description: 'a submit/poll media vendor (images, video, music); serves no chat dialect',
    native: new Set<InboundDialect>(),
    exchange: () => {
      throw new GatewayError('unsupported_operation', 'a jobs channel serves media generation only');
    },
    errorShape: 'openai',
    classify: (s, h, t) => classifyHttp('openai', s, h, t),
    auth: 'bearer',
  },
  // The worked example of a quirk declaration (README, "Adding a provider kind"): an OpenAI-compatible
  // server that knows only the older `max_tokens` spelling and has no logprobs. A template, not a claim
  // about any one vendor: copy it, name the kind after the vendor, list what its docs say.
  openai_compatible: openAICompatible({
    kind: 'openai_compatible',
    description:
      'an OpenAI-compatible chat server of the older generation: max_completion_tokens sent as max_tokens, logprobs refused',
    quirks: {
      rename: { max_completion_tokens: 'max_tokens' },
      refuse: ['logprobs', 'top_logprobs'],
    },
    // Jina, vLLM, TEI and the like also serve Jina's rerank at {base}/rerank (providers/rerank.ts).
    native: new Set<InboundDialect>(['openai_chat', 'openai_embeddings', 'rerank']),
  }),
  // Azure OpenAI: OpenAI's wire format and error shape, addressed by deployment (or the v1 API), with the
  // credential in `api-key` unless the channel sets an Entra ID Authorization header (azure.ts).
  azure: {
    kind: 'azure',
    description:
      'Azure OpenAI: the resource endpoint (deployments, api-version setting) or its /openai/v1 API; api-key or Entra ID bearer',
    native: OPENAI_NATIVE,
    exchange: (dialect, body, ep, m, alias, opts) => azureExchange(dialect, body, ep, m, alias, opts),
    errorShape: 'openai',
    classify: (s, h, t) => classifyHttp('azure', s, h, t),
    auth: 'api-key',
  },
  // Google Vertex AI: Gemini and Claude models of one project, in their own wire formats (the Gemini and
  // Anthropic exchanges re-addressed), authorized by a service account's OAuth2 token (vertex/).
  vertex: {
    kind: 'vertex',
    description:
      'Google Vertex AI: Gemini (generateContent) and Claude (rawPredict) models of a project; credential = service account JSON key',
    native: VERTEX_NATIVE,
    exchange: (dialect, body, ep, m, alias, opts) => vertexExchange(dialect, body, ep, m, alias, opts),
    errorShape: 'google',
    classify: classifyVertex,
    auth: 'bearer', // an OAuth2 access token, exchanged for the service account by `authorize`
    authorize: vertexAuthorize,
  },
  // AWS Bedrock: every Converse model (Anthropic, Nova, Llama, ...) in one wire format, signed with SigV4
  // (bedrock/; credential = JSON {accessKeyId, secretAccessKey, sessionToken?, region?} or AKID:SECRET[:TOKEN]).
  bedrock: {
    kind: 'bedrock',
    description:
      'AWS Bedrock runtime: the Converse and ConverseStream APIs (any Converse model, inference profiles too); SigV4 with the channel credential or the AWS_* environment',
    native: new Set<InboundDialect>(['openai_chat']),
    exchange: (dialect, body, ep, m, alias) => bedrockExchange(dialect, body, ep, m, alias),
    errorShape: 'openai', // never passed through: classifyBedrock keeps no body, the relay re-renders
    classify: classifyBedrock,
    auth: 'sigv4',
    authorize: (ch, call) => bedrockAuthorize(ch, call),
  },
  // Named vendors on the OpenAI base, each with its documented quirks (vendors.ts).
  ...vendorDeclarations(openAICompatible),
};

export const PROVIDER_KINDS: readonly ProviderKind[] = Object.keys(DECLARATIONS) as ProviderKind[];

export function isProviderKind(v: unknown): v is ProviderKind {
  return typeof v === 'string' && Object.hasOwn(DECLARATIONS, v);
}

export function providerDeclaration(kind: ProviderKind): ProviderDeclaration {
  return DECLARATIONS[kind];
}

/** The dialects each provider kind serves with an exchange of its own. */
export const NATIVE: Readonly<Record<ProviderKind, ReadonlySet<InboundDialect>>> = Object.fromEntries(
  PROVIDER_KINDS.map((k) => [k, DECLARATIONS[k].native]),
) as Record<ProviderKind, ReadonlySet<InboundDialect>>;

/**
 * Client dialects a chat channel that doesn't speak them answers locally, without an upstream call
 * (index.ts `createExchange`): Anthropic's token count, estimated with the local tokenizer.
 */
export const LOCAL: ReadonlySet<InboundDialect> = new Set<InboundDialect>(['anthropic_count_tokens']);

/** Which operations a provider kind can serve (the router refuses the rest up front with a 400). */
export const CAPABILITIES: Readonly<Record<ProviderKind, ReadonlySet<InboundDialect>>> = Object.fromEntries(
  PROVIDER_KINDS.map((k) => {
    const native = DECLARATIONS[k].native;
    return [k, native.has('openai_chat') ? new Set([...native, ...PIVOTED, ...LOCAL]) : native];
  }),
) as Record<ProviderKind, ReadonlySet<InboundDialect>>;

export interface ProviderKindView {
  kind: ProviderKind;
  description: string;
  native_dialects: InboundDialect[];
  dialects: InboundDialect[];
  error_shape: ErrorShape;
  auth: AuthStyle;
  quirks: {
    rename: Record<string, string>;
    refuse: string[];
    drop: string[];
    defaults: Record<string, unknown>;
  };
}

/** What `GET /api/admin/v1/provider-kinds` answers: the declarations as data. */
export function providerKindsView(): ProviderKindView[] {
  return PROVIDER_KINDS.map((k) => {
    const d = DECLARATIONS[k];
    return {
      kind: k,
      description: d.description,
      native_dialects: [...d.native],
      dialects: [...CAPABILITIES[k]],
      error_shape: d.errorShape,
      auth: d.auth,
      quirks: {
        rename: { ...(d.quirks?.rename as Record<string, string> | undefined) },
        refuse: (d.quirks?.refuse ?? []).map(String),
        drop: (d.quirks?.drop ?? []).map(String),
        defaults: { ...d.quirks?.defaults },
      },
    };
  });
}
