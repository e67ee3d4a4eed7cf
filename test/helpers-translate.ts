/**
 * Fixtures and assertions shared by the translation unit tests (OpenAI <-> Anthropic, OpenAI <-> Gemini):
 * a minimal chat request and the checks on the GatewayError a refused translation throws.
 */
import { expect } from 'vitest';
import { GatewayError } from '../src/core/errors.js';
import type { ChatRequest } from '../src/providers/openai/wire.js';

/** A tiny PNG's base64 head, enough for the image parts the translators carry. */
export const PNG = 'iVBORw0KGgo=';

/** A one-turn chat request ("hi") for the alias `model`, with `extra` on top. */
export const chatRequestOf = (model: string, extra: Partial<ChatRequest> = {}): ChatRequest => ({
  model,
  messages: [{ role: 'user', content: 'hi' }],
  ...extra,
});

/** The GatewayError `fn` throws (fails the test if it throws nothing or something else). */
export function thrown(fn: () => unknown): GatewayError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(GatewayError);
    return e as GatewayError;
  }
  throw new Error('expected a GatewayError');
}

/** `fn` refuses `param` as a 400 unsupported_parameter that says it cannot be translated. */
export function expectRefused(fn: () => unknown, param: string): void {
  const e = thrown(fn);
  expect({ status: e.status, code: e.code, param: e.param }).toEqual({
    status: 400,
    code: 'unsupported_parameter',
    param,
  });
  expect(e.message).toMatch(/cannot be translated/);
}
