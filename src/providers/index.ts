import { GatewayError } from '../core/errors.js';
import { anthropicPivot } from './anthropic/inbound.js';
import { geminiPivot } from './gemini/inbound.js';
import { responsesPivot } from './openai/responses.js';
import { type ChatPivot, PivotExchange } from './pivot.js';
import { LOCAL, NATIVE, providerDeclaration } from './registry.js';
import { CountTokensEstimate } from './anthropic/count-tokens.js';
import { completionsPivot } from './openai/completions.js';
import type { Exchange, ExchangeOptions, InboundDialect, UpstreamEndpoint } from './types.js';

/**
 * Exchanges by provider kind. Each kind serves some dialects natively (its declaration in registry.ts); a
 * chat-like dialect it doesn't speak is translated through OpenAI chat (the pivot, see pivot.ts), which
 * every chat provider speaks. A new kind is a declaration in registry.ts; a new client dialect is one pivot.
 */

function nativeExchange(
  dialect: InboundDialect,
  body: Record<string, unknown>,
  ep: UpstreamEndpoint,
  upstreamModel: string,
  alias: string,
  opts: ExchangeOptions,
): Exchange {
  return providerDeclaration(ep.provider).exchange(dialect, body, ep, upstreamModel, alias, opts);
}

function pivotFor(dialect: InboundDialect, body: Record<string, unknown>, alias: string): ChatPivot | null {
  switch (dialect) {
    case 'openai_responses':
      return responsesPivot(body, alias);
    case 'gemini':
      return geminiPivot(body, body.stream === true, alias);
    case 'anthropic_messages':
      return anthropicPivot(body, alias);
    case 'openai_completions':
      return completionsPivot(body, alias);
    default:
      return null;
  }
}

export function createExchange(
  dialect: InboundDialect,
  body: Record<string, unknown>,
  ep: UpstreamEndpoint,
  upstreamModel: string,
  alias: string,
  opts: ExchangeOptions = {},
): Exchange {
  const native =
    NATIVE[ep.provider].has(dialect) && !(dialect === 'openai_responses' && ep.nativeResponses === false);
  if (native) return nativeExchange(dialect, body, ep, upstreamModel, alias, opts);
  // A chat channel without the operation answers it here (a token count, estimated locally).
  if (LOCAL.has(dialect) && NATIVE[ep.provider].has('openai_chat')) return new CountTokensEstimate(body);
  const pivot = pivotFor(dialect, body, alias);
  if (!pivot || !NATIVE[ep.provider].has('openai_chat'))
    throw new GatewayError('unsupported_operation', `a ${ep.provider} channel cannot serve this operation`);
  const inner = nativeExchange('openai_chat', pivot.chat, ep, upstreamModel, alias, {
    ...opts,
    pivoted: true,
  });
  return new PivotExchange(pivot, inner);
}

export * from './types.js';
export * from './classify.js';
export { Transport } from './transport.js';
export * from './registry.js';
