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
import { azureExchange } from './azure.js';
import { classifyHttp, type UpstreamFailure } from './classify.js';
import { geminiExchange } from './gemini/exchange.js';
import type { ChatRequest } from './openai/wire.js';
import { openaiExchange } from './openai/exchange.js';
import { withCall } from './shared.js';
import { vendorDeclarations } from './vendors.js';
import type {
  Exchange,
  ExchangeOptions,
  InboundDialect,
  PreparedCall,
  ProviderKind,
  UpstreamEndpoint,
} from './types.js';

/** How the credential travels. `query`: `?key=` on the URL (Google's alternative; no header). */
export type AuthStyle = 'bearer' | 'x-api-key' | 'api-key' | 'x-goog-api-key' | 'query';

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
    native: OPENAI_NATIVE,
    exchange: (dialect, body, ep, m, alias, opts) => openaiExchange(dialect, body, ep, m, alias, opts),
    errorShape: 'openai',
    classify: (s, h, t) => classifyHttp('openai', s, h, t),
    auth: 'bearer',
  },
  anthropic: {
    kind: 'anthropic',
    description: 'Anthropic Messages API',
    native: new Set<InboundDialect>(['openai_chat', 'anthropic_messages']),
    exchange: (dialect, body, ep, m, alias, opts) =>
      anthropicExchange(dialect, body, ep, m, alias, opts.anthropicBeta),
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

/** Which operations a provider kind can serve (the router refuses the rest up front with a 400). */
export const CAPABILITIES: Readonly<Record<ProviderKind, ReadonlySet<InboundDialect>>> = Object.fromEntries(
  PROVIDER_KINDS.map((k) => {
    const native = DECLARATIONS[k].native;
    return [k, native.has('openai_chat') ? new Set([...native, ...PIVOTED]) : native];
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
