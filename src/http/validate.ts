import { GatewayError } from '../core/errors.js';
import type { FastifyRequest } from 'fastify';
import type { InboundDialect } from '../providers/types.js';
import { uploadsOf } from '../lib/multipart.js';
import { validateMore } from './validate-more.js';

const isObj = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/** Largest token or choice count passed on: beyond it a number is a mistake or a probe, not a request. */
export const MAX_COUNT = 1_000_000_000;

/**
 * A count (max_tokens, n ...) an upstream can take: absent, null, or an integer from `min` to MAX_COUNT.
 * `1e308` or `-1` would otherwise reach the upstream as sent (and the quota estimate as a huge reservation).
 */
function count(v: unknown, param: string, min = 0): void {
  if (v === undefined || v === null) return;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > MAX_COUNT)
    throw new GatewayError('invalid_request', `'${param}' must be an integer from ${min} to ${MAX_COUNT}.`, {
      param,
    });
}

/**
 * The shape checks Anima itself needs (model, messages, stream...). Everything else is the upstream's to
 * judge, so fields Anima doesn't know still reach OpenAI-compatible channels unchanged.
 */
export function validateBody(dialect: InboundDialect, body: unknown): Record<string, unknown> {
  if (!isObj(body)) throw new GatewayError('invalid_request', 'The request body must be a JSON object.');
  modelOf(body);
  streamOf(body);
  switch (dialect) {
    case 'openai_chat':
      if (!Array.isArray(body.messages) || body.messages.length === 0) {
        throw new GatewayError('invalid_request', "'messages' must be a non-empty array.", {
          param: 'messages',
        });
      }
      if (!body.messages.every(isObj))
        throw new GatewayError('invalid_request', "Each entry of 'messages' must be an object.", {
          param: 'messages',
        });
      if (body.stream_options !== undefined && body.stream_options !== null && !isObj(body.stream_options)) {
        throw new GatewayError('invalid_request', "'stream_options' must be an object.", {
          param: 'stream_options',
        });
      }
      count(body.max_tokens, 'max_tokens');
      count(body.max_completion_tokens, 'max_completion_tokens');
      count(body.n, 'n');
      break;
    case 'anthropic_messages':
      if (!Array.isArray(body.messages) || body.messages.length === 0) {
        throw new GatewayError('invalid_request', 'messages: must be a non-empty array', {
          param: 'messages',
        });
      }
      if (
        !Number.isInteger(body.max_tokens) ||
        (body.max_tokens as number) < 1 ||
        (body.max_tokens as number) > MAX_COUNT
      ) {
        throw new GatewayError(
          'invalid_request',
          `max_tokens: a positive integer (at most ${MAX_COUNT}) is required`,
          { param: 'max_tokens' },
        );
      }
      break;
    case 'openai_embeddings': {
      const input = body.input;
      const tokens = (a: unknown) => Array.isArray(a) && a.length > 0 && a.every((t) => Number.isInteger(t));
      const ok =
        typeof input === 'string' ||
        (Array.isArray(input) &&
          input.length > 0 &&
          (input.every((x) => typeof x === 'string') || tokens(input) || input.every(tokens)));
      if (!ok)
        throw new GatewayError(
          'invalid_request',
          "'input' must be a string, an array of strings, an array of token ids, or an array of token-id arrays.",
          { param: 'input' },
        );
      if (body.stream === true)
        throw new GatewayError('invalid_request', 'Embeddings do not stream.', { param: 'stream' });
      break;
    }
  }
  return body;
}

/** What the data plane needs from a request, whatever its dialect: the body to relay, alias, stream flag. */
export interface InboundRequest {
  body: Record<string, unknown>;
  model: string;
  stream: boolean;
  /** An API key sent outside the usual headers (Gemini's `?key=`). */
  key?: string;
}

export type Inbound = (req: FastifyRequest) => InboundRequest;

const MAX_SPEECH_CHARS = 4096;
const MAX_AUDIO_BYTES = 25 * 1024 * 1024;

function modelOf(body: Record<string, unknown>): string {
  const model = body.model;
  if (model === undefined || model === null || model === '')
    throw new GatewayError('missing_model', 'You must provide a model parameter.', { param: 'model' });
  if (typeof model !== 'string' || model.length > 256)
    throw new GatewayError('invalid_request', "'model' must be a string of at most 256 characters.", {
      param: 'model',
    });
  return model;
}

function streamOf(body: Record<string, unknown>): boolean {
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean')
    throw new GatewayError('invalid_request', "'stream' must be a boolean.", { param: 'stream' });
  return body.stream === true;
}

function jsonBody(req: FastifyRequest): Record<string, unknown> {
  if (!isObj(req.body)) throw new GatewayError('invalid_request', 'The request body must be a JSON object.');
  return req.body;
}

/**
 * A Gemini route's model and method: `models/{model}:{method}` rides in the path's last segment, which
 * the router can't split. Null when there is no method (or the path doesn't decode).
 */
export function geminiMethod(req: FastifyRequest): { model: string; method: string } | null {
  let tail: string;
  try {
    tail = decodeURIComponent((req.params as Record<string, string>)['*'] ?? '');
  } catch {
    return null;
  }
  const i = tail.lastIndexOf(':');
  return i > 0 ? { model: tail.slice(0, i).replace(/^models\//, ''), method: tail.slice(i + 1) } : null;
}

const EMBED_METHODS = new Set(['embedContent', 'batchEmbedContents']);
/** Gemini embedding methods go to the gemini_embed dialect, the rest to gemini. */
export const isGeminiEmbed = (req: FastifyRequest): boolean =>
  EMBED_METHODS.has(geminiMethod(req)?.method ?? '');

function geminiTarget(req: FastifyRequest, methods: string[]): { model: string; method: string } {
  const m = geminiMethod(req);
  if (!m || !methods.includes(m.method)) {
    const tail = String((req.params as Record<string, string>)['*'] ?? '').slice(0, 120);
    throw new GatewayError('not_found', `Unknown method: models/${tail} (use :${methods.join(' or :')}).`);
  }
  return m;
}

/** The Gemini API key a client sent: `x-goog-api-key`, or `?key=` in the URL. */
export function googleKey(req: FastifyRequest): string | undefined {
  const h = req.headers['x-goog-api-key'];
  if (typeof h === 'string' && h.trim()) return h.trim();
  const q = (req.query as Record<string, unknown> | undefined)?.key;
  return typeof q === 'string' && q ? q : undefined;
}

function checkUpload(body: Record<string, unknown>, fields: string[], required: boolean, max: number): void {
  const files = uploadsOf(body).filter((f) => fields.includes(f.field));
  if (required && files.length === 0)
    throw new GatewayError(
      'invalid_request',
      `Upload a file in the '${fields[0]}' field (multipart/form-data).`,
      { param: fields[0]! },
    );
  for (const f of files) {
    if (f.data.size === 0)
      throw new GatewayError('invalid_request', `The file in '${f.field}' is empty.`, { param: f.field });
    if (f.data.size > max)
      throw new GatewayError(
        'body_too_large',
        `The file in '${f.field}' is larger than ${Math.round(max / 1024 / 1024)} MB.`,
        { param: f.field },
      );
  }
}

function multipartBody(req: FastifyRequest): Record<string, unknown> {
  const ct = String(req.headers['content-type'] ?? '');
  if (!/^multipart\/form-data/i.test(ct))
    throw new GatewayError('unsupported_media_type', 'Send this request as multipart/form-data.');
  if (!isObj(req.body)) throw new GatewayError('invalid_request', 'The multipart body could not be parsed.');
  return req.body;
}

/** Each dialect's inbound parser: validation of the shape Anima itself needs. */
export function inboundFor(dialect: InboundDialect): Inbound {
  switch (dialect) {
    case 'openai_chat':
    case 'anthropic_messages':
    case 'openai_embeddings':
      return (req) => {
        const body = validateBody(dialect, req.body);
        return { body, model: body.model as string, stream: body.stream === true };
      };
    case 'openai_responses':
      return (req) => {
        const body = jsonBody(req);
        const model = modelOf(body);
        const stream = streamOf(body);
        const input = body.input;
        if (
          !(typeof input === 'string' && input !== '') &&
          !(Array.isArray(input) && input.length > 0 && input.every(isObj))
        ) {
          throw new GatewayError(
            'invalid_request',
            "'input' must be a non-empty string or a non-empty array of input items.",
            { param: 'input' },
          );
        }
        if (
          body.max_output_tokens != null &&
          (!Number.isInteger(body.max_output_tokens) ||
            (body.max_output_tokens as number) < 1 ||
            (body.max_output_tokens as number) > MAX_COUNT)
        ) {
          throw new GatewayError(
            'invalid_request',
            `'max_output_tokens' must be a positive integer (at most ${MAX_COUNT}).`,
            { param: 'max_output_tokens' },
          );
        }
        if (body.background === true)
          throw new GatewayError(
            'unsupported_parameter',
            "'background' responses need stored state, which Anima does not keep.",
            { param: 'background' },
          );
        return { body, model, stream };
      };
    case 'gemini':
      return (req) => {
        const { model, method } = geminiTarget(req, ['generateContent', 'streamGenerateContent']);
        const stream = method === 'streamGenerateContent';
        if (stream && (req.query as Record<string, unknown>)?.alt !== 'sse')
          throw new GatewayError(
            'invalid_request',
            'streamGenerateContent is served as server-sent events: add ?alt=sse.',
            { param: 'alt' },
          );
        const body = jsonBody(req);
        if (!Array.isArray(body.contents) || body.contents.length === 0 || !body.contents.every(isObj)) {
          throw new GatewayError(
            'invalid_request',
            "'contents' must be a non-empty array of content objects.",
            { param: 'contents' },
          );
        }
        // Google's JSON takes snake_case names as well (generation_config.max_output_tokens).
        const gc = body.generationConfig ?? body.generation_config;
        if (isObj(gc)) {
          count(gc.maxOutputTokens ?? gc.max_output_tokens, 'generationConfig.maxOutputTokens');
          count(gc.candidateCount ?? gc.candidate_count, 'generationConfig.candidateCount');
        }
        return { body: { ...body, model, stream }, model, stream, key: googleKey(req) };
      };
    case 'gemini_embed':
      return (req) => {
        const { model, method } = geminiTarget(req, [...EMBED_METHODS]);
        const body = jsonBody(req);
        const batch = method === 'batchEmbedContents';
        if (
          batch &&
          (!Array.isArray(body.requests) || body.requests.length === 0 || !body.requests.every(isObj))
        ) {
          throw new GatewayError(
            'invalid_request',
            "'requests' must be a non-empty array of embed requests.",
            { param: 'requests' },
          );
        }
        if (!batch && !isObj(body.content))
          throw new GatewayError('invalid_request', "'content' is required.", { param: 'content' });
        return { body: { ...body, model, stream: false }, model, stream: false, key: googleKey(req) };
      };
    case 'openai_speech':
      return (req) => {
        const body = jsonBody(req);
        const model = modelOf(body);
        if (typeof body.input !== 'string' || body.input === '')
          throw new GatewayError('invalid_request', "'input' must be a non-empty string.", {
            param: 'input',
          });
        if ([...body.input].length > MAX_SPEECH_CHARS)
          throw new GatewayError(
            'invalid_request',
            `'input' must be at most ${MAX_SPEECH_CHARS} characters.`,
            { param: 'input' },
          );
        if (typeof body.voice !== 'string' && !isObj(body.voice))
          throw new GatewayError('invalid_request', "'voice' is required.", { param: 'voice' });
        if (
          body.speed !== undefined &&
          (typeof body.speed !== 'number' || body.speed < 0.25 || body.speed > 4)
        )
          throw new GatewayError('invalid_request', "'speed' must be a number from 0.25 to 4.", {
            param: 'speed',
          });
        return { body, model, stream: false };
      };
    case 'openai_transcription':
    case 'openai_translation':
      return (req) => {
        const body = multipartBody(req);
        const model = modelOf(body);
        checkUpload(body, ['file'], true, MAX_AUDIO_BYTES);
        const rf = body.response_format;
        if (
          rf !== undefined &&
          !['json', 'text', 'srt', 'verbose_json', 'vtt', 'diarized_json'].includes(rf as string)
        ) {
          throw new GatewayError(
            'invalid_request',
            "'response_format' must be one of json, text, srt, verbose_json, vtt.",
            { param: 'response_format' },
          );
        }
        return { body, model, stream: false };
      };
    case 'anthropic_count_tokens':
    case 'openai_completions':
    case 'openai_moderations':
    case 'rerank':
      return (req) => validateMore(dialect, jsonBody(req), modelOf, streamOf, count);
    case 'openai_image_edit':
      return (req) => {
        const body = multipartBody(req);
        const model = modelOf(body);
        checkUpload(body, ['image', 'image[]'], true, MAX_AUDIO_BYTES);
        checkUpload(body, ['mask'], false, MAX_AUDIO_BYTES);
        if (typeof body.prompt !== 'string' || body.prompt === '')
          throw new GatewayError('invalid_request', "'prompt' is required.", { param: 'prompt' });
        if (body.n !== undefined && !/^(10|[1-9])$/.test(String(body.n)))
          throw new GatewayError('invalid_request', "'n' must be an integer from 1 to 10.", { param: 'n' });
        return { body, model, stream: false };
      };
  }
}
