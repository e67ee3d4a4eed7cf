/**
 * All error rendering: one renderer per error shape (openai, anthropic, google) giving the status and
 * body of a JSON answer, the frame that ends a stream in each client dialect, and the body of an upstream's
 * refusal passed through in the client's shape. Every handler picks the shape by dialect (core/dialects.ts).
 *
 * Messages never carry secrets: upstream text is redacted with the channel's credential where the error is
 * built (relay, media adapters), and every rendered message passes the credential-shape redactor once more
 * here, whatever built it (a net for a path that forgot).
 */
import { type ErrorShape, type InboundDialect, errorShapeOf } from './dialects.js';
import { GatewayError, type OpenAIErrorType } from './errors.js';
import { redactSecrets } from './redact.js';

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string; [extra: string]: unknown };
}

export function toOpenAIError(e: GatewayError): OpenAIErrorBody {
  return {
    error: {
      message: redactSecrets(e.message),
      type: e.type,
      param: e.param,
      code: e.code,
      ...(e.details ?? {}),
    },
  };
}

const ANTHROPIC_TYPES: Record<OpenAIErrorType, string> = {
  invalid_request_error: 'invalid_request_error',
  authentication_error: 'authentication_error',
  permission_error: 'permission_error',
  not_found_error: 'not_found_error',
  rate_limit_error: 'rate_limit_error',
  insufficient_quota: 'billing_error',
  api_error: 'api_error',
  server_error: 'api_error',
  overloaded_error: 'overloaded_error',
};

export interface AnthropicErrorBody {
  type: 'error';
  error: { type: string; message: string; code: string };
}

export function toAnthropicError(e: GatewayError): AnthropicErrorBody {
  return {
    type: 'error',
    error: { type: ANTHROPIC_TYPES[e.type], message: redactSecrets(e.message), code: e.code },
  };
}

const GOOGLE_STATUS: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  402: 'FAILED_PRECONDITION',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  409: 'ABORTED',
  413: 'INVALID_ARGUMENT',
  415: 'INVALID_ARGUMENT',
  429: 'RESOURCE_EXHAUSTED',
  499: 'CANCELLED',
  500: 'INTERNAL',
  502: 'UNAVAILABLE',
  503: 'UNAVAILABLE',
  504: 'DEADLINE_EXCEEDED',
};

export interface GoogleErrorBody {
  error: { code: number; message: string; status: string; details: Array<Record<string, unknown>> };
}

/** Google's error envelope (Gemini clients), with Anima's code as an ErrorInfo reason. */
export function toGoogleError(e: GatewayError, status = e.status): GoogleErrorBody {
  return {
    error: {
      code: status,
      message: redactSecrets(e.message),
      status: GOOGLE_STATUS[status] ?? (status >= 500 ? 'INTERNAL' : 'INVALID_ARGUMENT'),
      details: [
        {
          '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
          reason: e.code.toUpperCase(),
          domain: 'anima',
        },
      ],
    },
  };
}

/** Anthropic clients know 529 as "overloaded"; OpenAI clients get 503 for the same condition. */
export function anthropicStatus(e: GatewayError): number {
  return e.code === 'upstream_overloaded' ? 529 : e.status;
}

/** The one redactor lives in redact.ts; this name stays for the modules that import it from here. */
export { redactSecrets };

/** The shapes of JSON error answers: a dialect's, or new-api's `{code, message, data}` (its /suno/ routes). */
export type RenderShape = ErrorShape | 'newapi';

/** An error as a shape's clients expect it: status (Anthropic's 529 for overload) and body. */
export function renderError(shape: RenderShape, err: GatewayError): { status: number; body: unknown } {
  switch (shape) {
    case 'newapi':
      return {
        status: err.status,
        body: { code: err.code, message: redactSecrets(err.message), data: null },
      };
    case 'anthropic':
      return { status: anthropicStatus(err), body: toAnthropicError(err) };
    case 'google':
      return { status: err.status, body: toGoogleError(err) };
    default:
      return { status: err.status, body: toOpenAIError(err) };
  }
}

/** An error in the body a dialect's clients parse. */
export function renderErrorFor(d: InboundDialect, err: GatewayError): { status: number; body: unknown } {
  return renderError(errorShapeOf(d), err);
}

/**
 * The last frame of a stream that fails after its headers went out, in the client's dialect: OpenAI chat's
 * `data:` error object, Anthropic's `event: error`, the Responses API's `error` event, Google's envelope
 * as a `data:` line framed with CRLF as the Gemini API frames its events; nothing inside speech audio.
 */
export function errorFrame(d: InboundDialect, err: GatewayError): string {
  switch (d) {
    case 'anthropic_messages':
      return 'event: error\ndata: ' + JSON.stringify(toAnthropicError(err)) + '\n\n';
    case 'gemini':
    case 'gemini_embed':
      return 'data: ' + JSON.stringify(toGoogleError(err)) + '\r\n\r\n';
    case 'openai_responses': {
      const e = toOpenAIError(err).error;
      const ev = { type: 'error', code: e.code, message: e.message, param: e.param, sequence_number: 0 };
      return 'event: error\ndata: ' + JSON.stringify(ev) + '\n\n';
    }
    case 'openai_speech':
      return ''; // audio bytes: nothing can be said inside them, the answer is cut
    default:
      return 'data: ' + JSON.stringify(toOpenAIError(err)) + '\n\n';
  }
}

/** What of an upstream's 4xx (the request's fault) is passed on when its own body can't be. */
export interface UpstreamRefusal {
  message: string;
  /** The upstream's error code / type, when it gave one. */
  code?: string;
  type?: string;
  /** What the classifier made of it: context_length, content_policy, or another request error. */
  kind: string;
}

/**
 * An upstream's refusal in the client's shape (its message already redacted by the caller). Anthropic
 * clients read the upstream's error type; OpenAI clients a code; Google clients their status envelope.
 */
export function renderUpstreamRefusal(shape: ErrorShape, f: UpstreamRefusal, status: number): unknown {
  const message = redactSecrets(f.message);
  switch (shape) {
    case 'anthropic':
      return { type: 'error', error: { type: f.type ?? 'invalid_request_error', message } };
    case 'google':
      return toGoogleError(new GatewayError('invalid_request', message), status);
    default: {
      const code =
        f.code ??
        (f.kind === 'context_length'
          ? 'context_length_exceeded'
          : f.kind === 'content_policy'
            ? 'content_policy_violation'
            : 'invalid_request');
      return { error: { message, type: 'invalid_request_error', param: null, code } };
    }
  }
}
