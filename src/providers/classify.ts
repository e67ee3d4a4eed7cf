/**
 * What an upstream failure means for the request (try the next channel?) and for the channel's health
 * (count against the breaker? rest the channel? take its credential out?). One table, tested as a table
 * in test/unit/classify.test.ts.
 */
import { redact, redactJsonText } from '../core/redact.js';
import type { ProviderKind } from './types.js';

export type FailureKind =
  | 'server_error' // 5xx
  | 'overloaded' // 529 / overloaded_error
  | 'request_timeout' // 408
  | 'rate_limited' // 429 (not a quota problem)
  | 'quota_exhausted' // 429 insufficient_quota / billing
  | 'auth_failed' // 401 / 403 from the upstream: our credential
  | 'client_error' // 400 / 404 / 413 / 422 ...: the request itself
  | 'context_length'
  | 'content_policy'
  | 'connect_refused'
  | 'connect_timeout'
  | 'connection_reset'
  | 'tls_error'
  | 'first_byte_timeout'
  | 'idle_timeout'
  | 'total_timeout'
  | 'stream_reset' // the stream ended without its terminator
  | 'bad_response' // 2xx with a body that isn't the provider's format
  | 'cancelled'; // the client went away

export interface UpstreamFailure {
  kind: FailureKind;
  status: number | null;
  /** Counts toward the breaker's failure rate. */
  countsAsFailure: boolean;
  /** Another channel may succeed where this one failed (before the first byte reached the client). */
  tryNext: boolean;
  /** Take the channel out of rotation this long (429 Retry-After). */
  cooldownMs?: number;
  /** An overloaded upstream's own Retry-After: passed on to the client when the chain is exhausted. */
  retryAfterMs?: number;
  /** Take the channel's credential out until reset. */
  credential?: 'exhausted' | 'invalid';
  message: string;
  /** The upstream's error body, for client errors returned as they are. */
  body?: string;
  upstreamType?: string;
  upstreamCode?: string;
}

interface Rule {
  countsAsFailure: boolean;
  tryNext: boolean;
}

export const FAILURE_RULES: Record<FailureKind, Rule> = {
  server_error: { countsAsFailure: true, tryNext: true },
  overloaded: { countsAsFailure: true, tryNext: true },
  request_timeout: { countsAsFailure: true, tryNext: true },
  rate_limited: { countsAsFailure: false, tryNext: true },
  quota_exhausted: { countsAsFailure: false, tryNext: true },
  auth_failed: { countsAsFailure: false, tryNext: true },
  client_error: { countsAsFailure: false, tryNext: false },
  context_length: { countsAsFailure: false, tryNext: false },
  content_policy: { countsAsFailure: false, tryNext: false },
  connect_refused: { countsAsFailure: true, tryNext: true },
  connect_timeout: { countsAsFailure: true, tryNext: true },
  connection_reset: { countsAsFailure: true, tryNext: true },
  tls_error: { countsAsFailure: true, tryNext: true },
  first_byte_timeout: { countsAsFailure: true, tryNext: true },
  idle_timeout: { countsAsFailure: true, tryNext: true },
  total_timeout: { countsAsFailure: true, tryNext: true },
  stream_reset: { countsAsFailure: true, tryNext: true },
  bad_response: { countsAsFailure: true, tryNext: true },
  cancelled: { countsAsFailure: false, tryNext: false },
};

export function failure(
  kind: FailureKind,
  message: string,
  extra: Partial<UpstreamFailure> = {},
): UpstreamFailure {
  return { kind, status: null, ...FAILURE_RULES[kind], message, ...extra };
}

/**
 * The failure with the upstream's words made safe to show and log: its message and body pass the one
 * redactor with the channel's secrets (see core/redact.ts). Applied wherever a failure is built with the
 * channel at hand, after classification (which reads the words as the upstream wrote them).
 */
export function redactFailure(f: UpstreamFailure, secrets: readonly string[]): UpstreamFailure {
  const message = redact(f.message, secrets);
  const body = f.body === undefined ? undefined : redactJsonText(f.body, secrets);
  return {
    ...f,
    message,
    ...(body === undefined ? {} : { body }),
    ...(f.upstreamType === undefined ? {} : { upstreamType: redact(f.upstreamType, secrets) }),
    ...(f.upstreamCode === undefined ? {} : { upstreamCode: redact(f.upstreamCode, secrets) }),
  };
}

/** Default rest for a 429 that names no Retry-After. */
export const DEFAULT_COOLDOWN_MS = 1_000;
const MAX_COOLDOWN_MS = 10 * 60_000;

/** Retry-After: delta-seconds or an HTTP date. Also OpenAI's retry-after-ms. */
export function parseRetryAfter(
  headers: Record<string, string | string[] | undefined>,
  now = Date.now(),
): number | null {
  const msH = headers['retry-after-ms'];
  if (typeof msH === 'string' && /^\d+(\.\d+)?$/.test(msH)) return Math.min(MAX_COOLDOWN_MS, Number(msH));
  const h = headers['retry-after'];
  if (typeof h !== 'string' || h === '') return null;
  if (/^\d+(\.\d+)?$/.test(h)) return Math.min(MAX_COOLDOWN_MS, Number(h) * 1000);
  const t = Date.parse(h);
  return Number.isNaN(t) ? null : Math.min(MAX_COOLDOWN_MS, Math.max(0, t - now));
}

function errorFields(bodyText: string): { type?: string; code?: string; message?: string } {
  try {
    const j = JSON.parse(bodyText) as { error?: { type?: unknown; code?: unknown; message?: unknown } };
    const e = j?.error;
    if (e && typeof e === 'object') {
      return {
        type: typeof e.type === 'string' ? e.type : undefined,
        code: typeof e.code === 'string' ? e.code : undefined,
        message: typeof e.message === 'string' ? e.message : undefined,
      };
    }
  } catch {
    /* not JSON: classified by status alone */
  }
  return {};
}

/**
 * Gemini answers with Google's envelope `{error:{code,message,status,details}}`: `status` is a google.rpc.Code
 * name, `details` may hold an ErrorInfo `reason` (API_KEY_INVALID) and a RetryInfo `retryDelay` ("38s").
 */
interface GoogleFields {
  status?: string;
  reasons: string[];
  retryDelayMs?: number;
}

function googleFields(bodyText: string): GoogleFields {
  const out: GoogleFields = { reasons: [] };
  try {
    let j = JSON.parse(bodyText) as unknown;
    if (Array.isArray(j) && j.length === 1) j = j[0]; // streamGenerateContent without alt=sse wraps it in a list
    const e = (j as { error?: { status?: unknown; details?: unknown } } | null)?.error;
    if (!e || typeof e !== 'object') return out;
    if (typeof e.status === 'string') out.status = e.status;
    for (const d of Array.isArray(e.details) ? (e.details as Array<Record<string, unknown>>) : []) {
      if (typeof d?.reason === 'string') out.reasons.push(d.reason);
      const m = typeof d?.retryDelay === 'string' ? /^(\d+(?:\.\d+)?)s$/.exec(d.retryDelay) : null;
      if (m) out.retryDelayMs = Math.min(MAX_COOLDOWN_MS, Math.round(Number(m[1]) * 1000));
    }
  } catch {
    /* not JSON: classified by status alone */
  }
  return out;
}

/**
 * What a Google status means for the channel. client_error statuses are left to the generic rules below
 * (which also tell context-length and content-policy refusals apart), as is any status not listed.
 */
const GOOGLE_STATUS_KINDS: Record<string, FailureKind> = {
  RESOURCE_EXHAUSTED: 'rate_limited',
  UNAUTHENTICATED: 'auth_failed',
  PERMISSION_DENIED: 'auth_failed',
  UNAVAILABLE: 'server_error',
  INTERNAL: 'server_error',
  UNKNOWN: 'server_error',
  DEADLINE_EXCEEDED: 'server_error',
  INVALID_ARGUMENT: 'client_error',
  NOT_FOUND: 'client_error',
  FAILED_PRECONDITION: 'client_error',
};

/** A bad key comes back as 400 INVALID_ARGUMENT, told apart only by its reason or message. */
const GOOGLE_BAD_KEY_RE = /API_KEY_INVALID|API key not valid|API key expired/i;
const GOOGLE_CREDITS_RE = /prepayment credits are depleted|credits? (?:are|is) exhausted/i;
const GOOGLE_CONTEXT_RE = /input token count.*exceeds the maximum/i;

/** Gemini's failures; null when the generic rules decide. */
function classifyGoogle(
  status: number,
  headers: Record<string, string | string[] | undefined>,
  bodyText: string,
  message: string,
  extra: Partial<UpstreamFailure>,
): UpstreamFailure | null {
  const g = googleFields(bodyText);
  if (g.reasons.some((r) => GOOGLE_BAD_KEY_RE.test(r)) || GOOGLE_BAD_KEY_RE.test(message)) {
    return failure('auth_failed', message, { ...extra, credential: 'invalid' });
  }
  const kind = g.status ? GOOGLE_STATUS_KINDS[g.status] : undefined;
  if (kind === 'rate_limited' || status === 429) {
    if (GOOGLE_CREDITS_RE.test(message))
      return failure('quota_exhausted', message, { ...extra, credential: 'exhausted' });
    return failure('rate_limited', message, {
      ...extra,
      cooldownMs: parseRetryAfter(headers) ?? g.retryDelayMs ?? DEFAULT_COOLDOWN_MS,
    });
  }
  if (kind === 'auth_failed') return failure('auth_failed', message, { ...extra, credential: 'invalid' });
  if (kind === 'server_error') return failure('server_error', message, extra);
  if (GOOGLE_CONTEXT_RE.test(message)) return failure('context_length', message, extra);
  return null;
}

const CONTEXT_RE = /context[_ ]length|maximum context|too many tokens|prompt is too long|context window/i;
const POLICY_RE = /content[_ ]?policy|content[_ ]?filter|safety system|flagged/i;
/** Azure names its content filter in `innererror.code`, which errorFields does not read. */
const AZURE_POLICY_RE = /"code"\s*:\s*"ResponsibleAIPolicyViolation"/;

/** Classifies a non-2xx upstream answer. */
export function classifyHttp(
  provider: ProviderKind,
  status: number,
  headers: Record<string, string | string[] | undefined>,
  bodyText: string,
): UpstreamFailure {
  const f = errorFields(bodyText);
  const message = f.message ?? `upstream answered ${status}`;
  const extra = { status, body: bodyText, upstreamType: f.type, upstreamCode: f.code };
  const sig = `${f.type ?? ''} ${f.code ?? ''}`;
  if (provider === 'gemini') {
    const g = classifyGoogle(status, headers, bodyText, message, extra);
    if (g) return g;
  }
  if (status === 429 || (provider === 'anthropic' && f.type === 'rate_limit_error')) {
    if (
      /insufficient_quota|billing|credit/i.test(sig) ||
      /insufficient_quota|credit balance/i.test(message)
    ) {
      return failure('quota_exhausted', message, { ...extra, credential: 'exhausted' });
    }
    return failure('rate_limited', message, {
      ...extra,
      cooldownMs: parseRetryAfter(headers) ?? DEFAULT_COOLDOWN_MS,
    });
  }
  if (status === 401 || status === 403)
    return failure('auth_failed', message, { ...extra, credential: 'invalid' });
  if (status === 402) return failure('quota_exhausted', message, { ...extra, credential: 'exhausted' });
  if (status === 408) return failure('request_timeout', message, extra);
  if (status === 529 || f.type === 'overloaded_error') {
    const ra = parseRetryAfter(headers);
    return failure('overloaded', message, ra === null ? extra : { ...extra, retryAfterMs: ra });
  }
  if (status >= 500) return failure('server_error', message, extra);
  if (CONTEXT_RE.test(sig) || CONTEXT_RE.test(message)) return failure('context_length', message, extra);
  if (POLICY_RE.test(sig) || POLICY_RE.test(message) || AZURE_POLICY_RE.test(bodyText))
    return failure('content_policy', message, extra);
  return failure('client_error', message, extra);
}

/** Classifies a transport-level error (undici / node net). */
export function classifyTransport(err: unknown, phase: 'connect' | 'headers' | 'body'): UpstreamFailure {
  const e = err as { code?: string; name?: string; message?: string; cause?: { code?: string } };
  const code = e?.code ?? e?.cause?.code ?? '';
  const msg = e?.message ?? String(err);
  switch (code) {
    case 'UND_ERR_CONNECT_TIMEOUT':
      return failure('connect_timeout', 'connect timeout');
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'ANIMA_FIRST_BYTE_TIMEOUT':
      return failure('first_byte_timeout', 'no response headers within the first-byte timeout');
    case 'UND_ERR_BODY_TIMEOUT':
    case 'ANIMA_IDLE_TIMEOUT':
      return failure('idle_timeout', 'upstream went silent past the idle timeout');
    case 'ECONNREFUSED':
      return failure('connect_refused', 'connection refused');
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
      return failure(phase === 'body' ? 'stream_reset' : 'connection_reset', `connection reset (${code})`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return failure('connect_refused', `upstream unreachable (${code})`);
    default:
      break;
  }
  if (/^(ERR_TLS|ERR_SSL|CERT_|DEPTH_ZERO|UNABLE_TO_VERIFY|SELF_SIGNED)/.test(code))
    return failure('tls_error', `TLS failure (${code})`);
  if (e?.name === 'AbortError' || code === 'UND_ERR_ABORTED' || code === 'ABORT_ERR')
    return failure('cancelled', 'aborted');
  if (e?.name === 'TimeoutError') return failure('total_timeout', 'attempt exceeded the total timeout');
  return failure(phase === 'body' ? 'stream_reset' : 'connection_reset', msg);
}

/**
 * An attempt that failed before its call went out (a provider's credential exchange, e.g. Vertex's OAuth2
 * token): thrown by a declaration's `authorize`, reported by the relay as the attempt's failure.
 */
export class UpstreamFailureError extends Error {
  constructor(readonly failure: UpstreamFailure) {
    super(failure.message);
    this.name = 'UpstreamFailureError';
  }
}
