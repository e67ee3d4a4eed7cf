import { GatewayError } from '../core/errors.js';
import type { InboundDialect } from '../providers/types.js';

const isObj = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/**
 * The shape checks Anima itself needs (model, messages, stream...). Everything else is the upstream's to
 * judge, so fields Anima doesn't know still reach OpenAI-compatible channels unchanged.
 */
export function validateBody(dialect: InboundDialect, body: unknown): Record<string, unknown> {
  if (!isObj(body)) throw new GatewayError('invalid_request', 'The request body must be a JSON object.');
  const model = body.model;
  if (model === undefined || model === null || model === '') {
    throw new GatewayError('missing_model', 'You must provide a model parameter.', { param: 'model' });
  }
  if (typeof model !== 'string' || model.length > 256) throw new GatewayError('invalid_request', "'model' must be a string of at most 256 characters.", { param: 'model' });
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean') {
    throw new GatewayError('invalid_request', "'stream' must be a boolean.", { param: 'stream' });
  }
  switch (dialect) {
    case 'openai_chat':
      if (!Array.isArray(body.messages) || body.messages.length === 0) {
        throw new GatewayError('invalid_request', "'messages' must be a non-empty array.", { param: 'messages' });
      }
      if (!body.messages.every(isObj)) throw new GatewayError('invalid_request', "Each entry of 'messages' must be an object.", { param: 'messages' });
      if (body.stream_options !== undefined && body.stream_options !== null && !isObj(body.stream_options)) {
        throw new GatewayError('invalid_request', "'stream_options' must be an object.", { param: 'stream_options' });
      }
      break;
    case 'anthropic_messages':
      if (!Array.isArray(body.messages) || body.messages.length === 0) {
        throw new GatewayError('invalid_request', 'messages: must be a non-empty array', { param: 'messages' });
      }
      if (!Number.isInteger(body.max_tokens) || (body.max_tokens as number) < 1) {
        throw new GatewayError('invalid_request', 'max_tokens: a positive integer is required', { param: 'max_tokens' });
      }
      break;
    case 'openai_embeddings': {
      const input = body.input;
      const tokens = (a: unknown) => Array.isArray(a) && a.length > 0 && a.every((t) => Number.isInteger(t));
      const ok =
        typeof input === 'string' ||
        (Array.isArray(input) && input.length > 0 && (input.every((x) => typeof x === 'string') || tokens(input) || input.every(tokens)));
      if (!ok) throw new GatewayError('invalid_request', "'input' must be a string, an array of strings, an array of token ids, or an array of token-id arrays.", { param: 'input' });
      if (body.stream === true) throw new GatewayError('invalid_request', 'Embeddings do not stream.', { param: 'stream' });
      break;
    }
  }
  return body;
}
