/**
 * Rerank (`POST /v1/rerank`): a query and documents in, `results[]` of `{index, relevance_score,
 * document?}` out, in the shape Cohere and Jina share. Served natively by the kinds whose upstream has it:
 *
 * - `cohere`: Cohere's v2 API (https://docs.cohere.com/reference/rerank), `POST {base}/rerank` with a base
 *   of `https://api.cohere.com/v2` (Cohere's native API: its Compatibility API has no rerank). v2 takes
 *   documents as strings only and dropped `return_documents` (https://docs.cohere.com/changelog/rerank-v3.5):
 *   `{text}` documents are sent as their text, and `return_documents: true` is honoured here, by adding
 *   each result's document from the request. Cohere bills search units (`meta.billed_units.search_units`,
 *   one per query over up to 100 documents) and reports them in the answer, which the client receives.
 * - `openai_compatible` and `vllm` (Jina, vLLM, TEI, Infinity...): Jina's format
 *   (https://jina.ai/reranker/, `POST {base}/rerank`), passed through with `model` renamed; they report
 *   `usage.total_tokens`.
 *
 * Metering: the tokens the upstream reports (Jina/vLLM `usage.total_tokens`, Cohere `meta.tokens.input_tokens`)
 * as input tokens; when it reports none, the query and documents are counted locally (gpt-tokenizer) and the
 * booking is marked estimated. So an alias is priced per input token and/or per request (`per_request` is
 * Cohere's basis for a query of up to 100 documents); a per-search-unit rate is not a price unit of its own.
 */
import { countTokens } from 'gpt-tokenizer';
import { GatewayError } from '../core/errors.js';
import type { Usage } from '../core/usage.js';
import { bodyWithModel } from '../lib/json-text.js';
import { bearerHeaders, parseJsonObject, passthroughResult } from './shared.js';
import { noStream } from './stream.js';
import type { Exchange, JsonResult, PreparedCall, UpstreamEndpoint } from './types.js';

type Obj = Record<string, unknown>;

const docText = (d: unknown): string =>
  typeof d === 'string' ? d : String((d as { text?: unknown } | null)?.text ?? '');

/** Query and document tokens counted locally (when the upstream reports none). */
export function rerankTokens(body: Obj): number {
  let n = countTokens(String(body.query ?? ''));
  for (const d of Array.isArray(body.documents) ? body.documents : []) n += countTokens(docText(d));
  return n;
}

const usageOf = (tokens: number): Usage => ({
  inputTokens: tokens,
  outputTokens: 0,
  cachedTokens: 0,
  cacheWriteTokens: 0,
});

const positive = (v: unknown): number | null =>
  typeof v === 'number' && Number.isFinite(v) && v > 0 ? Math.ceil(v) : null;

export class RerankExchange implements Exchange {
  readonly call: PreparedCall;
  private readonly cohere: boolean;
  constructor(
    private readonly body: Obj,
    ep: UpstreamEndpoint,
    upstreamModel: string,
    private readonly alias: string,
  ) {
    this.cohere = ep.provider === 'cohere';
    let sent: string | Buffer;
    if (this.cohere) {
      const out: Obj = {
        model: upstreamModel,
        query: body.query,
        documents: (body.documents as unknown[]).map(docText),
      };
      if (body.top_n !== undefined && body.top_n !== null) out.top_n = body.top_n;
      if (body.max_tokens_per_doc !== undefined) out.max_tokens_per_doc = body.max_tokens_per_doc;
      sent = JSON.stringify(out);
    } else sent = bodyWithModel(body, upstreamModel);
    this.call = { path: '/rerank', headers: bearerHeaders(ep), body: sent, stream: false };
  }

  decodeJson(text: string): JsonResult {
    const j = parseJsonObject(text);
    if (!Array.isArray(j.results))
      throw new GatewayError('upstream_bad_response', 'upstream rerank answer has no results');
    const reported = this.cohere
      ? positive(j.meta?.tokens?.input_tokens)
      : positive(j.usage?.total_tokens ?? j.usage?.prompt_tokens);
    const usage = usageOf(reported ?? rerankTokens(this.body));
    const estimated = reported === null;
    if (this.cohere) {
      // Cohere v2 returns no documents: add them back when the client asked (Jina's default is to return them).
      if (this.body.return_documents === true) {
        const docs = this.body.documents as unknown[];
        for (const r of j.results as Array<Obj>)
          if (typeof r.index === 'number' && docs[r.index] !== undefined)
            r.document = { text: docText(docs[r.index]) };
      }
      j.model = this.alias;
      return { body: j, usage, estimated };
    }
    return { ...passthroughResult(text, j, this.alias, usage), estimated };
  }

  streamTranslator = noStream('rerank answers');
}
