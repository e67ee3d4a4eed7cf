/** Helpers both Gemini translation directions share (outbound.ts: Gemini as a channel; inbound.ts: Gemini as a client dialect). */
import { randomBytes } from 'node:crypto';
import { GatewayError, unsupported } from '../../core/errors.js';
import type { FunctionToolCall } from '../openai/wire.js';
import { isObj, type Obj } from '../outbound-refusals.js';

export { given, invalid, isObj, nonEmptyObj, type Obj } from '../outbound-refusals.js';
export { nowSeconds } from '../response-builders.js';
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
