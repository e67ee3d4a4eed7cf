/**
 * Gemini embeddings inbound: `models/{m}:embedContent` ({content}) and `:batchEmbedContents`
 * ({requests: [{model, content}]}). A Gemini channel serves them natively; an OpenAI channel through
 * `/embeddings` (the texts as `input`, `outputDimensionality` as `dimensions`), answered in Gemini's shape.
 *
 * Gemini's embedding answers carry no token counts, so natively served requests are metered by counting
 * the texts' tokens locally (marked estimated by billing, like any usage the upstream never reported).
 */
import { countTokens } from 'gpt-tokenizer';
import { GatewayError } from '../../core/errors.js';
import type { Usage } from '../../core/usage.js';
import { openaiUsage } from '../openai/wire.js';
import { bearerHeaders, parseJsonObject } from '../shared.js';
import { noStream } from '../stream.js';
import type { Exchange, JsonResult, PreparedCall, UpstreamEndpoint } from '../types.js';
import { geminiHeaders } from './wire.js';

type Obj = Record<string, any>;
const isObj = (v: unknown): v is Obj => !!v && typeof v === 'object' && !Array.isArray(v);
const bad = (param: string, why: string) =>
  new GatewayError('invalid_request', `${param}: ${why}`, { param });

/** The embed requests of a body: one for embedContent, each of `requests` for a batch. */
function requestsOf(body: Obj): Obj[] {
  return Array.isArray(body.requests) ? (body.requests as Obj[]) : [body];
}

function textOf(content: unknown, param: string): string {
  if (!isObj(content) || !Array.isArray(content.parts) || content.parts.length === 0)
    throw bad(param, 'must have parts');
  let s = '';
  for (const [i, p] of (content.parts as unknown[]).entries()) {
    if (!isObj(p) || typeof p.text !== 'string')
      throw bad(`${param}.parts[${i}]`, 'only text parts can be embedded');
    s += p.text;
  }
  return s;
}

/** The texts to embed, validated (what Anima needs to route, meter and translate the request). */
export function embedTexts(body: Obj): string[] {
  const reqs = requestsOf(body);
  if (reqs.length === 0 || reqs.length > 2048) throw bad('requests', 'must hold 1 to 2048 requests');
  return reqs.map((r, i) => {
    if (!isObj(r)) throw bad(`requests[${i}]`, 'must be an object');
    return textOf(r.content, Array.isArray(body.requests) ? `requests[${i}].content` : 'content');
  });
}

function dimensionsOf(body: Obj): number | undefined {
  const dims = new Set(requestsOf(body).map((r) => r.outputDimensionality as unknown));
  if (dims.size > 1)
    throw bad('requests', 'every request must ask for the same outputDimensionality on this channel');
  const d = [...dims][0];
  if (d === undefined || d === null) return undefined;
  if (!Number.isInteger(d) || (d as number) < 1)
    throw bad('outputDimensionality', 'must be a positive integer');
  return d as number;
}

const estimated = (texts: string[]): Usage => ({
  inputTokens: texts.reduce((n, t) => n + countTokens(t), 0),
  outputTokens: 0,
  cachedTokens: 0,
  cacheWriteTokens: 0,
});

/** Gemini embeddings on a Gemini channel: the body passes through (batch requests name the upstream model). */
export class GeminiEmbedPassthrough implements Exchange {
  readonly call: PreparedCall;
  private readonly texts: string[];
  private readonly batch: boolean;
  constructor(body: Obj, ep: UpstreamEndpoint, upstreamModel: string) {
    this.texts = embedTexts(body);
    this.batch = Array.isArray(body.requests);
    const model = upstreamModel.replace(/^models\//, '');
    const { model: _m, stream: _s, ...rest } = body;
    const out = this.batch
      ? { ...rest, requests: (rest.requests as Obj[]).map((r) => ({ ...r, model: `models/${model}` })) }
      : rest;
    this.call = {
      path: `/models/${encodeURIComponent(model)}:${this.batch ? 'batchEmbedContents' : 'embedContent'}`,
      headers: geminiHeaders(ep),
      body: JSON.stringify(out),
      stream: false,
    };
  }
  decodeJson(text: string): JsonResult {
    const j = parseJsonObject(text);
    const ok = this.batch ? Array.isArray(j.embeddings) : isObj(j.embedding);
    if (!ok) throw new GatewayError('upstream_bad_response', 'upstream embedding answer has no embedding');
    return { body: j, usage: estimated(this.texts), text };
  }
  streamTranslator = noStream('embeddings');
}

/** Gemini embeddings served by an OpenAI channel's /embeddings. */
export class GeminiEmbedViaOpenAI implements Exchange {
  readonly call: PreparedCall;
  private readonly batch: boolean;
  private readonly count: number;
  constructor(body: Obj, ep: UpstreamEndpoint, upstreamModel: string) {
    const texts = embedTexts(body);
    this.batch = Array.isArray(body.requests);
    this.count = texts.length;
    const dims = dimensionsOf(body);
    this.call = {
      path: '/embeddings',
      headers: bearerHeaders(ep),
      body: JSON.stringify({
        model: upstreamModel,
        input: texts,
        encoding_format: 'float',
        ...(dims ? { dimensions: dims } : {}),
      }),
      stream: false,
    };
  }
  decodeJson(text: string): JsonResult {
    const j = parseJsonObject(text);
    if (!Array.isArray(j.data) || j.data.length !== this.count)
      throw new GatewayError(
        'upstream_bad_response',
        'upstream embeddings answer does not match the request',
      );
    const values = [...(j.data as Obj[])]
      .sort((a, b) => Number(a.index ?? 0) - Number(b.index ?? 0))
      .map((d) => {
        if (!Array.isArray(d.embedding))
          throw new GatewayError('upstream_bad_response', 'upstream embedding is not a float array');
        return { values: d.embedding as number[] };
      });
    return {
      body: this.batch ? { embeddings: values } : { embedding: values[0] },
      usage: openaiUsage(j.usage),
    };
  }
  streamTranslator = noStream('embeddings');
}
