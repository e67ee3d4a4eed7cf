import { GatewayError } from '../core/errors.js';
import type { Usage } from '../core/usage.js';
import type { Exchange, JsonResult, PreparedCall, UpstreamEndpoint } from './types.js';

/** Parses an upstream JSON object; anything else is a bad upstream response (counts against the channel). */
export function parseJsonObject(text: string): Record<string, any> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new GatewayError('upstream_bad_response', 'upstream sent a body that is not JSON');
  }
  if (!v || typeof v !== 'object' || Array.isArray(v))
    throw new GatewayError('upstream_bad_response', 'upstream sent JSON that is not an object');
  return v as Record<string, any>;
}

/** Request headers for an OpenAI-style upstream: the content type, the channel's own headers, its bearer key. */
export function bearerHeaders(
  ep: UpstreamEndpoint,
  contentType = 'application/json',
): Record<string, string> {
  const h: Record<string, string> = { 'content-type': contentType };
  for (const k in ep.headers) h[k] = ep.headers[k]!; // not a spread: one per attempt, and spreads are slow
  if (ep.credential) h.authorization = `Bearer ${ep.credential}`;
  return h;
}

/** The last model renameModel looked for, and its needle. */
let lastModel = '';
let lastNeedle = '"model":""';

/**
 * A passthrough answer's text with its top-level `model` renamed, without re-serializing the whole body
 * (an embeddings answer can be megabytes of floats). Only when `"model":"<upstream model>"` occurs
 * exactly once, which then must be the top-level field the parse found; otherwise null (re-serialize).
 */
export function renameModel(text: string, upstreamModel: unknown, alias: string): string | null {
  if (typeof upstreamModel !== 'string') return null;
  // A stream's chunks all name the same model: its needle is built once, not per chunk.
  if (upstreamModel !== lastModel) {
    lastModel = upstreamModel;
    lastNeedle = '"model":' + JSON.stringify(upstreamModel);
  }
  const needle = lastNeedle;
  const at = text.indexOf(needle);
  if (at < 0 || text.indexOf(needle, at + needle.length) >= 0) return null;
  return text.slice(0, at) + '"model":' + JSON.stringify(alias) + text.slice(at + needle.length);
}

/**
 * A passthrough's whole answer: the parsed body with `model` set to the alias, and the upstream's text
 * with the same rename done in place when that is exact (renameModel), so it is not serialized again.
 */
export function passthroughResult(
  text: string,
  j: { model?: unknown },
  alias: string,
  usage: Usage | null,
): JsonResult {
  const renamed = renameModel(text, j.model, alias);
  j.model = alias;
  const r: JsonResult = { body: j, usage };
  if (renamed !== null) r.text = renamed;
  return r;
}

const MAX_TALLY = 1 << 20;

/** The text a client has been sent, kept (up to 1 MiB) to estimate usage if the upstream never reports it. */
export class TextTally {
  text = '';
  add(s: string): void {
    if (this.text.length < MAX_TALLY) this.text += s;
  }
}

/** The same exchange with another prepared call (a vendor's path, headers or body on the OpenAI base). */
export function withCall(ex: Exchange, call: PreparedCall): Exchange {
  // A delegate, not a copy: the inner exchange keeps its own state (stream translators, usage).
  return {
    call,
    decodeJson: (t) => ex.decodeJson(t),
    ...(ex.decodeBody ? { decodeBody: (t: string, c: string) => ex.decodeBody!(t, c) } : {}),
    ...(ex.bytesUsage ? { bytesUsage: () => ex.bytesUsage!() } : {}),
    streamTranslator: () => ex.streamTranslator(),
  };
}
