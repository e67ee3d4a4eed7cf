/**
 * Every error Anima can answer with, in one table.
 *
 * A `code` is stable: programs branch on it. `status` is the HTTP status, `type` the OpenAI error `type`
 * (Anthropic's renderer maps it to its own vocabulary in src/http/render.ts). `retryable` tells a client
 * whether the same request may succeed later without change.
 */
export type OpenAIErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'insufficient_quota'
  | 'api_error'
  | 'server_error'
  | 'overloaded_error';

interface ErrorSpec {
  status: number;
  type: OpenAIErrorType;
  retryable: boolean;
}

export const ERRORS = {
  // --- client input ---
  invalid_json: { status: 400, type: 'invalid_request_error', retryable: false },
  invalid_request: { status: 400, type: 'invalid_request_error', retryable: false },
  missing_model: { status: 400, type: 'invalid_request_error', retryable: false },
  unsupported_parameter: { status: 400, type: 'invalid_request_error', retryable: false },
  unsupported_operation: { status: 400, type: 'invalid_request_error', retryable: false },
  unsupported_media_type: { status: 415, type: 'invalid_request_error', retryable: false },
  body_too_large: { status: 413, type: 'invalid_request_error', retryable: false },
  not_found: { status: 404, type: 'not_found_error', retryable: false },
  model_not_found: { status: 404, type: 'not_found_error', retryable: false },
  method_not_allowed: { status: 405, type: 'invalid_request_error', retryable: false },
  /** A URL the outbound policy refuses (src/lib/outbound.ts); `error.rule` names the rule. */
  url_not_allowed: { status: 400, type: 'invalid_request_error', retryable: false },
  // --- identity ---
  missing_api_key: { status: 401, type: 'authentication_error', retryable: false },
  invalid_api_key: { status: 401, type: 'authentication_error', retryable: false },
  key_disabled: { status: 403, type: 'permission_error', retryable: false },
  key_expired: { status: 403, type: 'permission_error', retryable: false },
  app_disabled: { status: 403, type: 'permission_error', retryable: false },
  token_group_disabled: { status: 403, type: 'permission_error', retryable: false },
  model_not_allowed: { status: 403, type: 'permission_error', retryable: false },
  // --- upstream, after the chain is exhausted ---
  upstream_error: { status: 502, type: 'api_error', retryable: true },
  upstream_bad_response: { status: 502, type: 'api_error', retryable: true },
  upstream_stream_interrupted: { status: 502, type: 'api_error', retryable: true },
  upstream_timeout: { status: 504, type: 'api_error', retryable: true },
  upstream_rate_limited: { status: 429, type: 'rate_limit_error', retryable: true },
  upstream_overloaded: { status: 529, type: 'overloaded_error', retryable: true },
  no_available_channel: { status: 503, type: 'api_error', retryable: true },
  deadline_exceeded: { status: 504, type: 'api_error', retryable: true },
  // --- quotas (429: the key's own limits) ---
  rate_limit_exceeded: { status: 429, type: 'rate_limit_error', retryable: true },
  concurrency_limit_exceeded: { status: 429, type: 'rate_limit_error', retryable: true },
  tokens_limit_exceeded: { status: 429, type: 'rate_limit_error', retryable: true },
  budget_exceeded: { status: 429, type: 'insufficient_quota', retryable: false },
  insufficient_balance: { status: 402, type: 'insufficient_quota', retryable: false },
  queue_full: { status: 429, type: 'rate_limit_error', retryable: true },
  queue_timeout: { status: 429, type: 'rate_limit_error', retryable: true },
  client_closed: { status: 499, type: 'invalid_request_error', retryable: false },
  // --- admin API ---
  missing_admin_token: { status: 401, type: 'authentication_error', retryable: false },
  invalid_admin_token: { status: 401, type: 'authentication_error', retryable: false },
  admin_forbidden: { status: 403, type: 'permission_error', retryable: false },
  version_required: { status: 428, type: 'invalid_request_error', retryable: false },
  version_conflict: { status: 409, type: 'invalid_request_error', retryable: false },
  already_exists: { status: 409, type: 'invalid_request_error', retryable: false },
  window_overlap: { status: 409, type: 'invalid_request_error', retryable: false },
  // --- the gateway itself ---
  service_unavailable: { status: 503, type: 'api_error', retryable: true },
  gateway_disabled: { status: 503, type: 'api_error', retryable: true },
  internal_error: { status: 500, type: 'server_error', retryable: true },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly type: OpenAIErrorType;
  readonly retryable: boolean;
  /** Name of the offending request parameter, when there is one (OpenAI's `param`). */
  readonly param: string | null;
  /** Extra response headers (e.g. retry-after). */
  readonly headers: Record<string, string>;
  /** Extra fields for the error body (e.g. the current row on a version conflict). */
  readonly details: Record<string, unknown> | null;

  constructor(
    code: ErrorCode,
    message: string,
    opts: {
      param?: string | null;
      status?: number;
      headers?: Record<string, string>;
      cause?: unknown;
      details?: Record<string, unknown>;
    } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    const spec: ErrorSpec = ERRORS[code];
    this.name = 'GatewayError';
    this.code = code;
    this.status = opts.status ?? spec.status;
    this.type = spec.type;
    this.retryable = spec.retryable;
    this.param = opts.param ?? null;
    this.headers = opts.headers ?? {};
    this.details = opts.details ?? null;
  }
}

export function isGatewayError(e: unknown): e is GatewayError {
  return e instanceof GatewayError;
}

/** A 400 for a parameter that has no faithful translation to the channel's wire format. */
export function unsupported(param: string, message: string): GatewayError {
  return new GatewayError('unsupported_parameter', message, { param });
}
