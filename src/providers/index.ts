import { GatewayError } from '../core/errors.js';
import {
  openaiToAnthropicResponse,
  OpenAIToAnthropicStream,
  anthropicToOpenAIRequest,
} from './anthropic/inbound.js';
import type { MessagesRequest } from './anthropic/wire.js';
import { geminiPivot } from './gemini/inbound.js';
import { responsesPivot } from './openai/responses.js';
import { type ChatPivot, PivotExchange, withUsage } from './pivot.js';
import { NATIVE, providerDeclaration } from './registry.js';
import { anthropicErrorFrame, anthropicFrames, TextTally } from './shared.js';
import type { Exchange, InboundDialect, UpstreamEndpoint } from './types.js';

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
  opts: { anthropicBeta?: string },
): Exchange {
  return providerDeclaration(ep.provider).exchange(dialect, body, ep, upstreamModel, alias, opts);
}

/** Anthropic Messages as a pivot (for channels that speak neither Anthropic nor OpenAI natively). */
function anthropicPivot(body: Record<string, unknown>, alias: string): ChatPivot {
  const chat = anthropicToOpenAIRequest(
    body as unknown as MessagesRequest,
    String(body.model),
  ) as unknown as Record<string, unknown>;
  return {
    chat: withUsage(chat),
    fromChat: (c) => openaiToAnthropicResponse(c, alias),
    stream: () => {
      const t = new OpenAIToAnthropicStream({ model: alias });
      const tally = new TextTally();
      const frames = (evs: Array<{ event: string; data: object }>) => anthropicFrames(evs, tally);
      return {
        push: (chunk) => frames(t.push(chunk as unknown as Record<string, any>)),
        finish: () => frames(t.finish()),
        get emittedText() {
          return tally.text;
        },
      };
    },
    errorFrame: anthropicErrorFrame,
  };
}

function pivotFor(dialect: InboundDialect, body: Record<string, unknown>, alias: string): ChatPivot | null {
  switch (dialect) {
    case 'openai_responses':
      return responsesPivot(body, alias);
    case 'gemini':
      return geminiPivot(body, body.stream === true, alias);
    case 'anthropic_messages':
      return anthropicPivot(body, alias);
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
  opts: { anthropicBeta?: string } = {},
): Exchange {
  const native =
    NATIVE[ep.provider].has(dialect) && !(dialect === 'openai_responses' && ep.nativeResponses === false);
  if (native) return nativeExchange(dialect, body, ep, upstreamModel, alias, opts);
  const pivot = pivotFor(dialect, body, alias);
  if (!pivot || !NATIVE[ep.provider].has('openai_chat'))
    throw new GatewayError('unsupported_operation', `a ${ep.provider} channel cannot serve this operation`);
  return new PivotExchange(pivot, nativeExchange('openai_chat', pivot.chat, ep, upstreamModel, alias, opts));
}

export * from './types.js';
export * from './classify.js';
export { Transport } from './transport.js';
export * from './registry.js';
