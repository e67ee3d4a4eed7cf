/** Helpers both Anthropic translation directions share (outbound.ts: Anthropic as a channel; inbound.ts: Anthropic as a client dialect). */
import { GatewayError, unsupported } from '../../core/errors.js';

export type Obj = Record<string, unknown>;
export const isObj = (x: unknown): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x);
/** OpenAI accepts `null` for most optional fields; null means "not given". */
export const given = (x: unknown): boolean => x !== undefined && x !== null;
export const nonEmptyObj = (x: unknown): boolean => given(x) && !(isObj(x) && Object.keys(x).length === 0);

export function toAnthropic(param: string, why?: string): GatewayError {
  return unsupported(param, `${param} cannot be translated for an Anthropic channel${why ? `: ${why}` : ''}`);
}
export function toOpenAI(param: string, why?: string): GatewayError {
  return unsupported(param, `${param} cannot be translated for an OpenAI channel${why ? `: ${why}` : ''}`);
}
export function invalid(param: string, message: string): GatewayError {
  return new GatewayError('invalid_request', message, { param });
}
export const nowSeconds = (): number => Math.floor(Date.now() / 1000);

/** SSE payloads arrive parsed, but a raw JSON string is accepted too. */
export function eventData(data: unknown): any {
  if (typeof data !== 'string') return data ?? {};
  try {
    return JSON.parse(data);
  } catch {
    throw new GatewayError('upstream_bad_response', 'upstream sent a stream event that is not JSON');
  }
}
