/**
 * OpenAI moderations (`POST /v1/moderations`, https://platform.openai.com/docs/api-reference/moderations)
 * on OpenAI channels: passthrough, only `model` renamed. The answer (`results[]` with flagged, categories,
 * category_scores, category_applied_input_types) reaches the client as the upstream wrote it.
 *
 * Metering: OpenAI reports no usage for moderations (and charges nothing for them). The booking counts the
 * input's text tokens locally (gpt-tokenizer; images are not counted) and marks them estimated, so an
 * operator's per-token or per-request price for the alias applies, and an alias without one books nothing.
 */
import { countTokens } from 'gpt-tokenizer';
import { GatewayError } from '../../core/errors.js';
import type { Usage } from '../../core/usage.js';
import { bodyWithModel } from '../../lib/json-text.js';
import { bearerHeaders, parseJsonObject, passthroughResult } from '../shared.js';
import { noStream } from '../stream.js';
import type { Exchange, JsonResult, PreparedCall, UpstreamEndpoint } from '../types.js';

/** Text tokens of a moderation input: a string, strings, or text parts (image parts carry none). */
export function moderationTokens(input: unknown): number {
  const texts: string[] = [];
  if (typeof input === 'string') texts.push(input);
  else if (Array.isArray(input))
    for (const x of input) {
      if (typeof x === 'string') texts.push(x);
      else if (x && typeof x === 'object' && typeof (x as { text?: unknown }).text === 'string')
        texts.push((x as { text: string }).text);
    }
  let n = 0;
  for (const t of texts) n += countTokens(t);
  return n;
}

export class ModerationsPassthrough implements Exchange {
  readonly call: PreparedCall;
  private readonly usage: Usage;
  constructor(
    body: Record<string, unknown>,
    ep: UpstreamEndpoint,
    upstreamModel: string,
    private readonly alias: string,
  ) {
    this.usage = {
      inputTokens: moderationTokens(body.input),
      outputTokens: 0,
      cachedTokens: 0,
      cacheWriteTokens: 0,
    };
    this.call = {
      path: '/moderations',
      headers: bearerHeaders(ep),
      body: bodyWithModel(body, upstreamModel),
      stream: false,
    };
  }
  decodeJson(text: string): JsonResult {
    const j = parseJsonObject(text);
    if (!Array.isArray(j.results))
      throw new GatewayError('upstream_bad_response', 'upstream moderation answer has no results');
    return { ...passthroughResult(text, j, this.alias, { ...this.usage }), estimated: true };
  }
  streamTranslator = noStream('moderations');
}
