/**
 * Inbound validation of the token count, legacy completions, moderations and rerank dialects: the shape
 * Anima itself needs to route, estimate and translate them. Everything else is the upstream's to judge.
 * Messages name the field in the dialect's words (Anthropic's `field: problem`, OpenAI's quoted names).
 */
import { GatewayError } from '../core/errors.js';
import type { InboundDialect } from '../core/dialects.js';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => !!v && typeof v === 'object' && !Array.isArray(v);
const bad = (param: string, message: string) => new GatewayError('invalid_request', message, { param });

/** The helpers of validate.ts this module shares (passed in: the two modules don't import each other). */
type ModelOf = (body: Obj) => string;
type StreamOf = (body: Obj) => boolean;
type Count = (v: unknown, param: string, min?: number) => void;

/** OpenAI's documented default moderation model, used when a request names none. */
export const DEFAULT_MODERATION_MODEL = 'omni-moderation-latest';

/** Rerank: at most this many documents in one request (Cohere's documented ceiling is 1,000). */
export const MAX_RERANK_DOCUMENTS = 10_000;

const isTokens = (a: unknown): boolean =>
  Array.isArray(a) && a.length > 0 && a.every((t) => Number.isInteger(t) && (t as number) >= 0);

export function validateMore(
  dialect: InboundDialect,
  body: Obj,
  modelOf: ModelOf,
  streamOf: StreamOf,
  count: Count,
): { body: Obj; model: string; stream: boolean } {
  switch (dialect) {
    case 'anthropic_count_tokens': {
      const model = modelOf(body);
      // https://docs.anthropic.com/en/api/messages-count-tokens: the Messages body without max_tokens.
      if (!Array.isArray(body.messages) || body.messages.length === 0 || !body.messages.every(isObj))
        throw bad('messages', 'messages: must be a non-empty array of message objects');
      if (body.stream !== undefined)
        throw bad('stream', 'stream: Extra inputs are not permitted (a token count does not stream)');
      return { body, model, stream: false };
    }
    case 'openai_completions': {
      const model = modelOf(body);
      const stream = streamOf(body);
      // https://platform.openai.com/docs/api-reference/completions/create: a string, an array of strings,
      // an array of token ids or an array of token-id arrays.
      const p = body.prompt;
      const ok =
        typeof p === 'string' ||
        (Array.isArray(p) &&
          p.length > 0 &&
          (p.every((x) => typeof x === 'string') || isTokens(p) || p.every(isTokens)));
      if (!ok)
        throw bad(
          'prompt',
          "'prompt' must be a string, an array of strings, an array of token ids, or an array of token-id arrays.",
        );
      if (body.stream_options !== undefined && body.stream_options !== null && !isObj(body.stream_options))
        throw bad('stream_options', "'stream_options' must be an object.");
      count(body.max_tokens, 'max_tokens');
      count(body.n, 'n', 1);
      count(body.best_of, 'best_of', 1);
      if (body.logprobs !== undefined && body.logprobs !== null) count(body.logprobs, 'logprobs');
      return { body, model, stream };
    }
    case 'openai_moderations': {
      if (body.model === undefined || body.model === null) body.model = DEFAULT_MODERATION_MODEL;
      const model = modelOf(body);
      const input = body.input;
      const part = (x: unknown) =>
        isObj(x) &&
        ((x.type === 'text' && typeof x.text === 'string') ||
          (x.type === 'image_url' && isObj(x.image_url) && typeof x.image_url.url === 'string'));
      const ok =
        typeof input === 'string' ||
        (Array.isArray(input) &&
          input.length > 0 &&
          (input.every((x) => typeof x === 'string') || input.every(part)));
      if (!ok)
        throw bad(
          'input',
          "'input' must be a string, an array of strings, or an array of text and image_url objects.",
        );
      if (body.stream === true) throw bad('stream', 'Moderations do not stream.');
      return { body, model, stream: false };
    }
    case 'rerank': {
      const model = modelOf(body);
      // Cohere v2 (https://docs.cohere.com/reference/rerank) and Jina (https://jina.ai/reranker/):
      // a query and documents as strings (Jina also takes {text} objects).
      if (typeof body.query !== 'string' || body.query === '')
        throw bad('query', "'query' must be a non-empty string.");
      const docs = body.documents;
      if (
        !Array.isArray(docs) ||
        docs.length === 0 ||
        !docs.every((d) => typeof d === 'string' || (isObj(d) && typeof d.text === 'string'))
      )
        throw bad(
          'documents',
          '\'documents\' must be a non-empty array of strings or {"text": ...} objects.',
        );
      if (docs.length > MAX_RERANK_DOCUMENTS)
        throw bad('documents', `'documents' may hold at most ${MAX_RERANK_DOCUMENTS} entries.`);
      count(body.top_n, 'top_n', 1);
      if (body.return_documents !== undefined && typeof body.return_documents !== 'boolean')
        throw bad('return_documents', "'return_documents' must be a boolean.");
      if (body.stream === true) throw bad('stream', 'Rerank does not stream.');
      return { body, model, stream: false };
    }
    default:
      throw new GatewayError('internal_error', `no validator for ${dialect}`);
  }
}
