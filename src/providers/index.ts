import { GatewayError } from '../core/errors.js';
import { anthropicExchange } from './anthropic/exchange.js';
import {
  openaiToAnthropicResponse,
  OpenAIToAnthropicStream,
  anthropicToOpenAIRequest,
} from './anthropic/translate.js';
import type { MessagesRequest } from './anthropic/wire.js';
import { geminiExchange } from './gemini/exchange.js';
import { geminiPivot } from './gemini/translate.js';
import { openaiExchange } from './openai/exchange.js';
import { responsesPivot } from './openai/responses.js';
import { type ChatPivot, PivotExchange, withUsage } from './pivot.js';
import { anthropicErrorFrame, anthropicFrames, TextTally } from './shared.js';
import { type Exchange, type InboundDialect, NATIVE, type UpstreamEndpoint } from './types.js';

/**
 * The provider registry. Each provider kind serves some dialects natively (NATIVE, in types.ts); a
 * chat-like dialect it doesn't speak is translated through OpenAI chat (the pivot, see pivot.ts), which
 * every chat provider speaks. Adding an OpenAI-compatible vendor is a base URL on an 'openai' channel; a new wire format is
 * one native exchange here plus, for a new client dialect, one pivot.
 */

function nativeExchange(
  dialect: InboundDialect,
  body: Record<string, unknown>,
  ep: UpstreamEndpoint,
  upstreamModel: string,
  alias: string,
  opts: { anthropicBeta?: string },
): Exchange {
  switch (ep.provider) {
    case 'openai':
      return openaiExchange(dialect, body, ep, upstreamModel, alias);
    case 'anthropic':
      return anthropicExchange(dialect, body, ep, upstreamModel, alias, opts.anthropicBeta);
    case 'gemini':
      return geminiExchange(dialect, body, ep, upstreamModel, alias);
    case 'jobs':
      throw new GatewayError('unsupported_operation', 'a jobs channel serves media generation only');
  }
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
