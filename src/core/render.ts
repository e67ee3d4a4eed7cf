/**
 * One error renderer per wire dialect. Messages never carry secrets: upstream text is redacted with the
 * channel's credential where the error is built (relay, media adapters), and every rendered message
 * passes the credential-shape redactor once more here, whatever built it (a net for a path that forgot).
 */
import type { GatewayError, OpenAIErrorType } from './errors.js';
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
