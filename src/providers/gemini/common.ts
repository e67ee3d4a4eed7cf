/** Helpers both Gemini translation directions share (outbound.ts: Gemini as a channel; inbound.ts: Gemini as a client dialect). */
import { randomBytes } from 'node:crypto';
import { GatewayError, unsupported } from '../../core/errors.js';
import type { FunctionToolCall } from '../openai/wire.js';

export type Obj = Record<string, unknown>;
export const isObj = (x: unknown): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x);
/** OpenAI accepts `null` for most optional fields; null means "not given". */
export const given = (x: unknown): boolean => x !== undefined && x !== null;
export const nonEmptyObj = (x: unknown): boolean => given(x) && !(isObj(x) && Object.keys(x).length === 0);
export const nowSeconds = (): number => Math.floor(Date.now() / 1000);
export const randomId = (): string => randomBytes(12).toString('hex');

export function toGemini(param: string, why?: string): GatewayError {
  return unsupported(param, `${param} cannot be translated for a Gemini channel${why ? `: ${why}` : ''}`);
}
export function fromGemini(param: string, why?: string): GatewayError {
  return unsupported(
    param,
    `${param} cannot be translated from the Gemini format for this channel${why ? `: ${why}` : ''}`,
  );
}
export function invalid(param: string, message: string): GatewayError {
  return new GatewayError('invalid_request', message, { param });
}
export function badUpstream(message: string): GatewayError {
  return new GatewayError('upstream_bad_response', message);
}

/**
 * Google's documented placeholder for a function-call turn whose real thought signature is unknown
 * (history from another model, or a client that dropped it): https://ai.google.dev/gemini-api/docs/thought-signatures
 */
export const SKIP_THOUGHT_SIGNATURE = 'skip_thought_signature_validator';

/** A tool call as OpenAI clients see it, with Google's extension carrying the thought signature. */
export type SignedToolCall = FunctionToolCall & { extra_content?: { google: { thought_signature: string } } };

export function signatureOf(tc: Obj): string | undefined {
  const ec = tc['extra_content'];
  const g = isObj(ec) ? ec['google'] : undefined;
  const s = isObj(g) ? g['thought_signature'] : undefined;
  return typeof s === 'string' && s !== '' ? s : undefined;
}
