/**
 * The dialect registry and the one error renderer: every dialect declared once, every path answered in its
 * clients' shape, every stream error frame parseable by its clients' parser.
 */
import { describe, expect, it } from 'vitest';
import {
  CHAT_LIKE,
  DIALECT_NAMES,
  DIALECTS,
  dialectOfPath,
  dialectOfTask,
  errorShapeOf,
} from '../../src/core/dialects.js';
import { GatewayError } from '../../src/core/errors.js';
import { errorFrame, renderError, renderErrorFor, renderUpstreamRefusal } from '../../src/core/render.js';
import { SseParser } from '../../src/lib/sse.js';

const SECRET = 'sk-live-0123456789abcdefghijklmnop';

function events(frame: string): Array<{ event?: string; data: unknown }> {
  const p = new SseParser();
  return p.push(frame).map((e) => ({ event: e.event, data: JSON.parse(e.data) }));
}

describe('dialect registry', () => {
  it('every route path belongs to one dialect, except the Gemini pair that shares its routes', () => {
    const owners = new Map<string, string[]>();
    for (const d of DIALECT_NAMES)
      for (const p of DIALECTS[d].paths) owners.set(p, [...(owners.get(p) ?? []), d]);
    for (const [p, ds] of owners)
      if (ds.length > 1) expect({ p, ds }).toEqual({ p, ds: ['gemini', 'gemini_embed'] });
  });

  it('task kinds are unique and map back to their dialect', () => {
    const kinds = DIALECT_NAMES.map((d) => DIALECTS[d].taskKind);
    expect(new Set(kinds).size).toBe(kinds.length);
    for (const d of DIALECT_NAMES)
      expect(dialectOfTask(DIALECTS[d].taskKind)).toBe(DIALECTS[d].deferrable ? d : undefined);
  });

  it('the chat-like set is what the pivot serves', () => {
    expect([...CHAT_LIKE].sort()).toEqual([
      'anthropic_messages',
      'gemini',
      'openai_chat',
      'openai_completions',
      'openai_responses',
    ]);
  });

  it.each([
    ['POST', '/v1/chat/completions', 'openai_chat'],
    ['POST', '/v1/messages', 'anthropic_messages'],
    ['POST', '/v1/messages/count_tokens', 'anthropic_messages'],
    ['GET', '/v1/responses/resp_1', 'openai_responses'],
    ['POST', '/v1beta/models/m:generateContent?key=x', 'gemini'],
    ['GET', '/v1beta/models', 'gemini'],
    ['GET', '/v1beta/models/m', 'gemini'],
    ['POST', '/v1/models/m:embedContent', 'gemini'],
    ['GET', '/v1/models/m', 'openai_chat'],
    ['POST', '/v1/nothing-here', 'openai_chat'],
  ])('%s %s is answered as %s', (method, url, d) => {
    expect(dialectOfPath(method, url)).toBe(d);
  });
});

describe('one renderer per shape', () => {
  const overload = new GatewayError('upstream_overloaded', `busy ${SECRET}`);

  it('OpenAI: the error object, the status from the error table', () => {
    const r = renderError('openai', new GatewayError('upstream_timeout', 'slow'));
    expect(r.status).toBe(new GatewayError('upstream_timeout', 'slow').status);
    expect(r.body).toMatchObject({ error: { code: 'upstream_timeout', type: expect.any(String) } });
  });

  it('Anthropic: 529 for overload, the error type its SDK maps', () => {
    const r = renderErrorFor('anthropic_messages', overload);
    expect(r.status).toBe(529);
    expect(r.body).toMatchObject({ type: 'error', error: { type: 'overloaded_error' } });
  });

  it("Google: the status envelope with Anima's code as the ErrorInfo reason", () => {
    const r = renderErrorFor('gemini_embed', new GatewayError('not_found', 'no'));
    expect(r.status).toBe(404);
    expect(r.body).toMatchObject({
      error: { code: 404, status: 'NOT_FOUND', details: [{ reason: 'NOT_FOUND', domain: 'anima' }] },
    });
  });

  it("new-api's {code, message, data}", () => {
    expect(renderError('newapi', new GatewayError('invalid_request', 'bad')).body).toEqual({
      code: 'invalid_request',
      message: 'bad',
      data: null,
    });
  });

  it('no shape lets a credential out', () => {
    for (const shape of ['openai', 'anthropic', 'google', 'newapi'] as const)
      expect(JSON.stringify(renderError(shape, overload).body)).not.toContain(SECRET);
    for (const d of DIALECT_NAMES) expect(errorFrame(d, overload)).not.toContain(SECRET);
  });

  it("every streaming dialect's error frame parses as its clients' SSE", () => {
    const e = new GatewayError('upstream_stream_interrupted', 'cut');
    expect(events(errorFrame('openai_chat', e))).toEqual([
      { event: '', data: { error: expect.objectContaining({ code: 'upstream_stream_interrupted' }) } },
    ]);
    expect(events(errorFrame('anthropic_messages', e))).toEqual([
      { event: 'error', data: { type: 'error', error: expect.objectContaining({ type: 'api_error' }) } },
    ]);
    expect(events(errorFrame('openai_responses', e))[0]).toMatchObject({
      event: 'error',
      data: { type: 'error', code: 'upstream_stream_interrupted', message: 'cut' },
    });
    const g = errorFrame('gemini', e);
    expect(g.endsWith('\r\n\r\n')).toBe(true);
    expect(events(g)[0]!.data).toMatchObject({ error: { code: 502, status: 'UNAVAILABLE' } });
    expect(errorFrame('openai_speech', e)).toBe('');
  });

  it("an upstream's refusal in each shape, the classifier's kind giving OpenAI's code", () => {
    const f = { message: `too long ${SECRET}`, kind: 'context_length' };
    expect(renderUpstreamRefusal('openai', f, 400)).toEqual({
      error: {
        message: 'too long sk-[redacted]',
        type: 'invalid_request_error',
        param: null,
        code: 'context_length_exceeded',
      },
    });
    expect(renderUpstreamRefusal('anthropic', { ...f, type: 'invalid_request_error' }, 400)).toEqual({
      type: 'error',
      error: { type: 'invalid_request_error', message: 'too long sk-[redacted]' },
    });
    expect(renderUpstreamRefusal('google', f, 400)).toMatchObject({
      error: { code: 400, status: 'INVALID_ARGUMENT' },
    });
    expect(errorShapeOf('openai_image_edit')).toBe('openai');
  });
});
