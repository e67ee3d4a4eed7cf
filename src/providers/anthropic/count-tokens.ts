/**
 * Anthropic's token count (`POST /v1/messages/count_tokens`, https://docs.anthropic.com/en/api/messages-count-tokens):
 * a Messages body without max_tokens in, `{"input_tokens": N}` out.
 *
 * - Anthropic channels: passthrough to the upstream's own count (exact for its model), `model` renamed.
 * - Any other chat channel: counted here with gpt-tokenizer (o200k), the way Anima estimates every prompt
 *   before admission: the system prompt, each message's text (tool use and results as their JSON), the
 *   tools' JSON, plus a few tokens per message. The answer then carries `anima-estimate: true`: it is an
 *   approximation of what another vendor's tokenizer would count, not that vendor's figure.
 *
 * Not billed: counting is free at Anthropic, so the answer reports no usage and nothing is booked (the
 * request still passes admission and is counted in the metrics).
 */
import { countTokens } from 'gpt-tokenizer';
import { GatewayError } from '../../core/errors.js';
import { bodyWithModel } from '../../lib/json-text.js';
import { parseJsonObject } from '../shared.js';
import { noStream } from '../stream.js';
import type { Exchange, JsonResult, PreparedCall, UpstreamEndpoint } from '../types.js';
import { ANTHROPIC_VERSION } from './exchange.js';

type Obj = Record<string, unknown>;

/** The header an estimated count carries. */
export const ESTIMATE_HEADER = 'anima-estimate';
const PER_MESSAGE = 4;
const PER_IMAGE = 765;

function blocks(content: unknown, out: string[], images: { n: number }): void {
  if (typeof content === 'string') out.push(content);
  else if (Array.isArray(content))
    for (const b of content as Obj[]) {
      if (!b || typeof b !== 'object') continue;
      if (typeof b.text === 'string') out.push(b.text);
      else if (b.type === 'image' || b.type === 'document') images.n++;
      else if (b.type === 'tool_use') out.push(JSON.stringify(b.input ?? {}));
      else if (b.type === 'tool_result') blocks(b.content, out, images);
      else if (typeof b.thinking === 'string') out.push(b.thinking);
    }
}

/** A Messages request's input tokens, counted locally. */
export function estimateInputTokens(body: Obj): number {
  const texts: string[] = [];
  const images = { n: 0 };
  blocks(body.system, texts, images);
  const messages = Array.isArray(body.messages) ? (body.messages as Obj[]) : [];
  for (const m of messages) blocks(m?.content, texts, images);
  if (body.tools !== undefined) texts.push(JSON.stringify(body.tools));
  let n = 0;
  for (const t of texts) n += countTokens(t);
  return n + messages.length * PER_MESSAGE + images.n * PER_IMAGE;
}

/** Anthropic in, Anthropic out: the upstream's own count. */
export class CountTokensPassthrough implements Exchange {
  readonly call: PreparedCall;
  constructor(body: Obj, ep: UpstreamEndpoint, upstreamModel: string, beta?: string) {
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'anthropic-version': ANTHROPIC_VERSION,
      ...ep.headers,
    };
    if (ep.credential) headers['x-api-key'] = ep.credential;
    if (beta && !headers['anthropic-beta']) headers['anthropic-beta'] = beta;
    this.call = {
      path: '/v1/messages/count_tokens',
      headers,
      body: bodyWithModel(body, upstreamModel),
      stream: false,
    };
  }
  decodeJson(text: string): JsonResult {
    const j = parseJsonObject(text);
    if (typeof j.input_tokens !== 'number')
      throw new GatewayError('upstream_bad_response', 'upstream token count has no input_tokens');
    return { body: j, text, usage: null };
  }
  streamTranslator = noStream('token counts');
}

/** Any other chat channel: the count made here, marked as an estimate. No upstream call. */
export class CountTokensEstimate implements Exchange {
  readonly local = true;
  readonly call: PreparedCall = { path: '', headers: {}, body: '', stream: false };
  constructor(private readonly body: Obj) {}
  decodeJson(): JsonResult {
    return {
      body: { input_tokens: estimateInputTokens(this.body) },
      usage: null,
      headers: { [ESTIMATE_HEADER]: 'true' },
    };
  }
  streamTranslator = noStream('token counts');
}
