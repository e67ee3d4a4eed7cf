/**
 * Bedrock's failures, as a table from the exception name to what it means for the request and the channel.
 *
 * An HTTP error names its exception in the `x-amzn-ErrorType` header (e.g.
 * `ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/`), its body being only
 * `{"message": "..."}` (restJson1; the SDKs read the header first, then the body's `__type`/`code`:
 * aws-sdk-js-v3 loadRestJsonErrorCode). Statuses and meanings:
 * https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html#API_runtime_Converse_Errors
 * and https://docs.aws.amazon.com/bedrock/latest/userguide/troubleshooting-api-error-codes.html.
 * A stream carries the same exceptions as `:message-type exception` messages, camel-cased
 * (`throttlingException`): https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStreamOutput.html
 */
import {
  classifyHttp,
  DEFAULT_COOLDOWN_MS,
  failure,
  type FailureKind,
  parseRetryAfter,
  type UpstreamFailure,
  UpstreamFailureError,
} from '../classify.js';

/** Exception name (PascalCase) -> failure kind. */
export const BEDROCK_EXCEPTIONS: Record<string, FailureKind> = {
  ThrottlingException: 'rate_limited', // 429: the account's quota for the model; another channel may serve
  ServiceQuotaExceededException: 'rate_limited', // 400 or 429: same, for on-demand quotas
  ModelNotReadyException: 'server_error', // 429 in the docs, but the model is not serving: the channel's failure
  ServiceUnavailableException: 'server_error', // 503
  InternalServerException: 'server_error', // 500
  InternalFailure: 'server_error',
  ModelErrorException: 'server_error', // 424: the model failed the request
  ModelStreamErrorException: 'server_error', // 424, mid-stream
  ModelTimeoutException: 'request_timeout', // 408
  ValidationException: 'client_error', // 400: the request's fault
  ResourceNotFoundException: 'client_error', // 404: no such model id for this request
  AccessDeniedException: 'auth_failed', // 403: the credential lacks the permission or model access
  UnrecognizedClientException: 'auth_failed', // 403: unknown access key
  InvalidSignatureException: 'auth_failed', // 403: wrong secret
  InvalidClientTokenId: 'auth_failed',
  ExpiredTokenException: 'auth_failed', // 403: a session token past its expiry
  IncompleteSignature: 'auth_failed',
  MissingAuthenticationTokenException: 'auth_failed',
};

/** `ThrottlingException:http://…`, `aws.protocols#Foo`, `throttlingException` -> `ThrottlingException`. */
export function exceptionName(raw: string): string {
  let s = raw.split(',')[0]!.split(':')[0]!;
  if (s.includes('#')) s = s.slice(s.lastIndexOf('#') + 1);
  s = s.trim();
  return s ? s[0]!.toUpperCase() + s.slice(1) : '';
}

function header(h: Record<string, string | string[] | undefined>, name: string): string {
  const v = h[name];
  return typeof v === 'string' ? v : Array.isArray(v) ? (v[0] ?? '') : '';
}

function bodyFields(text: string): { type?: string; message?: string } {
  try {
    const j = JSON.parse(text) as Record<string, unknown>;
    if (j && typeof j === 'object') {
      const type = [j['__type'], j['code'], j['Code']].find((v) => typeof v === 'string') as
        string | undefined;
      const message = [j['message'], j['Message']].find((v) => typeof v === 'string') as string | undefined;
      return { ...(type ? { type } : {}), ...(message ? { message } : {}) };
    }
  } catch {
    /* not JSON: classified by the header or the status */
  }
  return {};
}

function byKind(
  kind: FailureKind,
  message: string,
  extra: Partial<UpstreamFailure>,
  headers: Record<string, string | string[] | undefined>,
): UpstreamFailure {
  switch (kind) {
    case 'rate_limited':
      return failure(kind, message, {
        ...extra,
        cooldownMs: parseRetryAfter(headers) ?? DEFAULT_COOLDOWN_MS,
      });
    case 'auth_failed':
      return failure(kind, message, { ...extra, credential: 'invalid' });
    default:
      return failure(kind, message, extra);
  }
}

/**
 * A non-2xx Bedrock answer. The body is not kept for passthrough (`body` unset): `{"message"}` is no
 * client dialect's error shape, so the relay re-renders the words in the client's.
 */
export function classifyBedrock(
  status: number,
  headers: Record<string, string | string[] | undefined>,
  bodyText: string,
): UpstreamFailure {
  const b = bodyFields(bodyText);
  const name = exceptionName(header(headers, 'x-amzn-errortype') || b.type || '');
  const message = b.message ?? `upstream answered ${status}${name ? ` (${name})` : ''}`;
  const extra: Partial<UpstreamFailure> = { status, ...(name ? { upstreamType: name } : {}) };
  const kind = BEDROCK_EXCEPTIONS[name];
  if (kind === 'client_error') {
    // A validation error may still be a context-length or content refusal: the generic rules tell.
    const { body: _b, ...g } = classifyHttp(
      'openai',
      status >= 400 && status < 500 ? status : 400,
      headers,
      JSON.stringify({ error: { message } }),
    );
    return { ...g, ...extra };
  }
  if (kind) return byKind(kind, message, extra, headers);
  // An exception this table doesn't know: the status decides, as for any upstream.
  const g = classifyHttp('openai', status, headers, JSON.stringify({ error: { message } }));
  const { body: _drop, ...rest } = g;
  return { ...rest, ...extra };
}

/** An exception message inside a ConverseStream (`exception:<type>` from the decoder) as an error to throw. */
export function streamException(type: string, payload: string): UpstreamFailureError {
  const b = bodyFields(payload);
  const name = exceptionName(type);
  const message = `upstream stream error: ${b.message ?? name}`;
  const kind = BEDROCK_EXCEPTIONS[name] ?? 'server_error';
  return new UpstreamFailureError(byKind(kind, message, { upstreamType: name }, {}));
}
