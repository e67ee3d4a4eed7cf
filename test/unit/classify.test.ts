import { describe, expect, it } from 'vitest';
import { classifyHttp, classifyTransport, parseRetryAfter } from '../../src/providers/classify.js';

const oai = (type: string, code: string | null, message = 'm') =>
  JSON.stringify({ error: { message, type, param: null, code } });
const ant = (type: string, message = 'm') => JSON.stringify({ type: 'error', error: { type, message } });

// provider, status, headers, body -> kind, countsAsFailure, tryNext, extra
const HTTP_TABLE: Array<
  [
    string,
    'openai' | 'anthropic',
    number,
    Record<string, string>,
    string,
    string,
    boolean,
    boolean,
    Record<string, unknown>?,
  ]
> = [
  ['500', 'openai', 500, {}, oai('server_error', null), 'server_error', true, true],
  ['502 non-JSON', 'openai', 502, {}, '<html>bad gateway</html>', 'server_error', true, true],
  ['503', 'openai', 503, {}, '', 'server_error', true, true],
  ['529 overloaded', 'anthropic', 529, {}, ant('overloaded_error'), 'overloaded', true, true],
  ['408', 'openai', 408, {}, '', 'request_timeout', true, true],
  [
    '429 retry-after',
    'openai',
    429,
    { 'retry-after': '7' },
    oai('rate_limit_error', 'rate_limit_exceeded'),
    'rate_limited',
    false,
    true,
    { cooldownMs: 7000 },
  ],
  [
    '429 no retry-after',
    'anthropic',
    429,
    {},
    ant('rate_limit_error'),
    'rate_limited',
    false,
    true,
    { cooldownMs: 1000 },
  ],
  [
    '429 insufficient_quota',
    'openai',
    429,
    {},
    oai('insufficient_quota', 'insufficient_quota'),
    'quota_exhausted',
    false,
    true,
    { credential: 'exhausted' },
  ],
  [
    '401',
    'openai',
    401,
    {},
    oai('invalid_request_error', 'invalid_api_key'),
    'auth_failed',
    false,
    true,
    { credential: 'invalid' },
  ],
  [
    '403',
    'anthropic',
    403,
    {},
    ant('permission_error'),
    'auth_failed',
    false,
    true,
    { credential: 'invalid' },
  ],
  ['400', 'openai', 400, {}, oai('invalid_request_error', 'invalid_value'), 'client_error', false, false],
  ['413', 'openai', 413, {}, '', 'client_error', false, false],
  ['422', 'openai', 422, {}, '', 'client_error', false, false],
  ['404 unknown model', 'anthropic', 404, {}, ant('not_found_error'), 'client_error', false, false],
  [
    'context length',
    'openai',
    400,
    {},
    oai('invalid_request_error', 'context_length_exceeded'),
    'context_length',
    false,
    false,
  ],
  [
    'anthropic prompt too long',
    'anthropic',
    400,
    {},
    ant('invalid_request_error', 'prompt is too long: 210000 tokens > 200000 maximum'),
    'context_length',
    false,
    false,
  ],
  [
    'content policy',
    'openai',
    400,
    {},
    oai('invalid_request_error', 'content_policy_violation'),
    'content_policy',
    false,
    false,
  ],
];

describe('upstream HTTP failure classification', () => {
  it.each(HTTP_TABLE)('%s', (_n, provider, status, headers, body, kind, counts, next, extra) => {
    const f = classifyHttp(provider, status, headers, body);
    expect(f.kind).toBe(kind);
    expect(f.countsAsFailure).toBe(counts);
    expect(f.tryNext).toBe(next);
    expect(f.status).toBe(status);
    for (const [k, v] of Object.entries(extra ?? {}))
      expect((f as unknown as Record<string, unknown>)[k]).toEqual(v);
    if (!extra?.credential) expect(f.credential).toBeUndefined();
  });
});

const TRANSPORT_TABLE: Array<[string, unknown, 'connect' | 'headers' | 'body', string, boolean, boolean]> = [
  ['refused', { code: 'ECONNREFUSED' }, 'connect', 'connect_refused', true, true],
  ['connect timeout', { code: 'UND_ERR_CONNECT_TIMEOUT' }, 'connect', 'connect_timeout', true, true],
  ['first byte timeout', { code: 'UND_ERR_HEADERS_TIMEOUT' }, 'connect', 'first_byte_timeout', true, true],
  ['idle timeout', { code: 'UND_ERR_BODY_TIMEOUT' }, 'body', 'idle_timeout', true, true],
  ['reset before headers', { code: 'ECONNRESET' }, 'connect', 'connection_reset', true, true],
  ['socket closed mid-stream', { code: 'UND_ERR_SOCKET' }, 'body', 'stream_reset', true, true],
  ['tls', { code: 'ERR_TLS_CERT_ALTNAME_INVALID' }, 'connect', 'tls_error', true, true],
  ['self-signed', { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' }, 'connect', 'tls_error', true, true],
  ['client cancelled', { name: 'AbortError' }, 'body', 'cancelled', false, false],
];

describe('transport failure classification', () => {
  it.each(TRANSPORT_TABLE)('%s', (_n, err, phase, kind, counts, next) => {
    const f = classifyTransport(err, phase);
    expect(f.kind).toBe(kind);
    expect(f.countsAsFailure).toBe(counts);
    expect(f.tryNext).toBe(next);
  });
});

describe('Retry-After', () => {
  it('reads seconds, HTTP dates and retry-after-ms', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(parseRetryAfter({ 'retry-after': '3' }, now)).toBe(3000);
    expect(parseRetryAfter({ 'retry-after': 'Thu, 01 Jan 2026 00:00:05 GMT' }, now)).toBe(5000);
    expect(parseRetryAfter({ 'retry-after-ms': '250' }, now)).toBe(250);
    expect(parseRetryAfter({ 'retry-after': 'soon' }, now)).toBeNull();
    expect(parseRetryAfter({ 'retry-after': '999999' }, now)).toBe(600_000);
  });
});
