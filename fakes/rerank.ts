/**
 * Fake rerank upstreams, in the two wire formats Anima's rerank route relays:
 *
 *  - `cohere`: Cohere's v2 API (https://docs.cohere.com/reference/rerank), `POST /v2/rerank`; documents are
 *    strings only (an object is a 400, as v2 answers), the answer has `id`, `results[{index,
 *    relevance_score}]` (no documents) and `meta.billed_units.search_units` (one per 100 documents).
 *  - `jina`: Jina's API (https://jina.ai/reranker/), `POST /v1/rerank`; documents are strings or {text},
 *    results carry `document: {text}` unless `return_documents: false`, usage is `usage.total_tokens`.
 *
 * Score: the share of the query's words found in the document (deterministic), ties by index; `top_n` cuts.
 * Tokens: ceil(chars / 4) of the query plus each document.
 */
import {
  type FakeContext,
  type FakeOptions,
  type FakeUpstream,
  isObject,
  type ProviderSpec,
  rid,
  sendError,
  sendJson,
  startFakeServer,
} from './common.js';
import { openaiErrorBody } from './openai.js';

export type RerankFlavor = 'cohere' | 'jina';

function score(query: string, doc: string): number {
  const words = query.toLowerCase().split(/\W+/).filter(Boolean);
  if (!words.length) return 0;
  const d = doc.toLowerCase();
  const hit = words.filter((w) => d.includes(w)).length;
  return Math.round((hit / words.length) * 0.98 * 1e6) / 1e6 + 0.01;
}

function rerank(ctx: FakeContext, spec: ProviderSpec, flavor: RerankFlavor): void {
  const b = ctx.body;
  if (!ctx.bodyIsJson || !isObject(b)) return sendError(ctx, spec, 400, 'invalid JSON body');
  if (typeof b.model !== 'string' || !b.model) return sendError(ctx, spec, 400, 'model is required');
  if (typeof b.query !== 'string' || !b.query) return sendError(ctx, spec, 400, 'query is required');
  const docs = b.documents;
  if (!Array.isArray(docs) || !docs.length) return sendError(ctx, spec, 400, 'documents is required');
  const texts: string[] = [];
  for (const d of docs) {
    if (typeof d === 'string') texts.push(d);
    else if (flavor === 'jina' && isObject(d) && typeof d.text === 'string') texts.push(d.text);
    else return sendError(ctx, spec, 400, 'invalid request: documents must be a list of strings');
  }
  if (flavor === 'cohere' && b.return_documents !== undefined)
    return sendError(ctx, spec, 400, 'invalid request: return_documents is not a v2 parameter');
  const topN = typeof b.top_n === 'number' && b.top_n > 0 ? b.top_n : texts.length;
  const ranked = texts
    .map((text, index) => ({ index, relevance_score: score(b.query as string, text), text }))
    .sort((x, y) => y.relevance_score - x.relevance_score || x.index - y.index)
    .slice(0, topN);
  if (flavor === 'cohere')
    return sendJson(ctx, 200, {
      id: rid(24),
      results: ranked.map(({ index, relevance_score }) => ({ index, relevance_score })),
      meta: {
        api_version: { version: '2' },
        billed_units: { search_units: Math.ceil(texts.length / 100) },
      },
    });
  const tokens = [b.query as string, ...texts].reduce((s, t) => s + Math.ceil(t.length / 4), 0);
  const withDocs = b.return_documents !== false;
  sendJson(ctx, 200, {
    model: b.model,
    usage: { total_tokens: tokens },
    results: ranked.map(({ index, relevance_score, text }) =>
      withDocs ? { index, document: { text }, relevance_score } : { index, relevance_score },
    ),
  });
}

function checkAuth(req: FakeContext['req'], expected: string | undefined): string | null {
  const h = req.headers.authorization;
  const m = typeof h === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
  if (!m) return 'no api key';
  if (expected !== undefined && m[1] !== expected) return 'invalid api token';
  return null;
}

/** Starts a fake rerank server: Cohere's `/v2/rerank` or Jina's `/v1/rerank`. */
export function startFakeRerank(opts: FakeOptions & { flavor?: RerankFlavor } = {}): Promise<FakeUpstream> {
  const flavor = opts.flavor ?? 'jina';
  const path = flavor === 'cohere' ? '/v2/rerank' : '/v1/rerank';
  const spec: ProviderSpec = {
    defaultName: `fake-${flavor}`,
    requestIdHeader: 'x-request-id',
    errorBody: openaiErrorBody,
    checkAuth,
    route(ctx, s) {
      if (ctx.method !== 'POST' || ctx.path !== path) return false;
      rerank(ctx, s, flavor);
      return true;
    },
  };
  return startFakeServer(spec, opts);
}
