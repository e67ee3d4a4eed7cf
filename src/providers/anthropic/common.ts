/** Helpers both Anthropic translation directions share (outbound.ts: Anthropic as a channel; inbound.ts: Anthropic as a client dialect). */
import { GatewayError, unsupported } from '../../core/errors.js';

export { given, invalid, isObj, nonEmptyObj, type Obj } from '../outbound-refusals.js';
export { nowSeconds } from '../response-builders.js';

export function toAnthropic(param: string, why?: string): GatewayError {
  return unsupported(param, `${param} cannot be translated for an Anthropic channel${why ? `: ${why}` : ''}`);
}
export function toOpenAI(param: string, why?: string): GatewayError {
  return unsupported(param, `${param} cannot be translated for an OpenAI channel${why ? `: ${why}` : ''}`);
}

/** SSE payloads arrive parsed, but a raw JSON string is accepted too. */
export function eventData(data: unknown): any {
  if (typeof data !== 'string') return data ?? {};
  try {
    return JSON.parse(data);
  } catch {
    throw new GatewayError('upstream_bad_response', 'upstream sent a stream event that is not JSON');
  }
}
