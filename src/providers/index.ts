import { GatewayError } from '../core/errors.js';
import { anthropicExchange } from './anthropic/exchange.js';
import { openaiExchange } from './openai/exchange.js';
import type { Exchange, InboundDialect, ProviderKind, UpstreamEndpoint } from './types.js';

/**
 * The provider registry: a provider kind is a function that builds an Exchange. Adding an
 * OpenAI-compatible vendor is a base URL on an 'openai' channel; a new wire format is one entry here.
 */
const REGISTRY: Record<ProviderKind, typeof openaiExchange> = {
  openai: openaiExchange,
  anthropic: anthropicExchange,
  jobs: () => {
    throw new GatewayError('unsupported_operation', 'a jobs channel serves media generation only');
  },
};

export function createExchange(
  dialect: InboundDialect,
  body: Record<string, unknown>,
  ep: UpstreamEndpoint,
  upstreamModel: string,
  alias: string,
  opts: { anthropicBeta?: string } = {},
): Exchange {
  if (ep.provider === 'anthropic') return anthropicExchange(dialect, body, ep, upstreamModel, alias, opts.anthropicBeta);
  return REGISTRY[ep.provider](dialect, body, ep, upstreamModel, alias);
}

export * from './types.js';
export * from './classify.js';
export { Transport } from './transport.js';
