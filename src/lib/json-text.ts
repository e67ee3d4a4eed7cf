/**
 * The bytes a parsed request body came from, so a passthrough can forward the client's own bytes with
 * only `model` changed instead of serializing the whole body again (JSON.stringify per attempt costs in
 * proportion to the body; embeddings inputs can be megabytes). Bytes, not the decoded text: the text can
 * go as soon as it is parsed, the bytes live outside the JavaScript heap (nothing for the scavenger to
 * copy while the request is in flight), and they go to the socket without another UTF-8 encoding
 * (measured by bench/overhead.ts --only json-large; figures in bench/HISTORY.md).
 *
 * Held by object identity (a WeakMap): a body built anew (a spread, a translation, a task read back from
 * the database) has no bytes, and is serialized as before. The parsed body must therefore never be
 * modified in place: code that needs a different body makes a new object.
 */
const bytesOf = new WeakMap<object, Buffer>();

export function rememberJsonBytes(value: object, bytes: Buffer): void {
  bytesOf.set(value, bytes);
}

export function jsonBytesOf(value: object): Buffer | undefined {
  return bytesOf.get(value);
}

const USAGE_OPTION = Buffer.from(',"stream_options":{"include_usage":true}');

/**
 * `body`'s JSON bytes with its top-level `model` set to `model` and, with `addUsageOption`, a
 * `"stream_options":{"include_usage":true}` member appended (only for a body without `stream_options`).
 * null when that can't be done exactly from the bytes alone; the caller then serializes.
 *
 * Exact because: without a `\u` escape anywhere, the key "model" can only be written `"model"`, and the
 * parsed body has one at the top level, so when `"model"` occurs once, that occurrence is the top-level
 * key (a string value containing it would be a second occurrence, an escaped quote before it included).
 * Its value must then read exactly as JSON.stringify writes the parsed one. (UTF-8 keeps every byte of a
 * multi-byte character >= 0x80, so none of these ASCII searches can match inside one.)
 */
export function withModel(
  body: Record<string, unknown>,
  model: string,
  addUsageOption: boolean,
): Buffer | null {
  const b = bytesOf.get(body);
  if (b === undefined || typeof body.model !== 'string') return null;
  if (addUsageOption && body.stream_options !== undefined) return null;
  if (b.indexOf('\\u') >= 0) return null;
  const key = b.indexOf('"model"');
  if (key < 0 || b.indexOf('"model"', key + 7) >= 0) return null;
  let i = skipSpace(b, key + 7);
  if (b[i] !== 58 /* : */) return null;
  i = skipSpace(b, i + 1);
  const old = Buffer.from(JSON.stringify(body.model));
  if (i + old.length > b.length || b.compare(old, 0, old.length, i, i + old.length) !== 0) return null;
  const parts = [b.subarray(0, i), Buffer.from(JSON.stringify(model))];
  if (!addUsageOption) parts.push(b.subarray(i + old.length));
  else {
    const end = b.lastIndexOf(0x7d /* } */);
    if (end < i + old.length) return null;
    parts.push(b.subarray(i + old.length, end), USAGE_OPTION, b.subarray(end));
  }
  return Buffer.concat(parts);
}

/** The body to send with `model` as its model: the client's bytes spliced when exact (withModel), else serialized. */
export function bodyWithModel(body: Record<string, unknown>, model: string): Buffer | string {
  return withModel(body, model, false) ?? JSON.stringify({ ...body, model });
}

function skipSpace(b: Buffer, i: number): number {
  for (;;) {
    const c = b[i];
    if (c === 32 || c === 9 || c === 10 || c === 13) i++;
    else return i;
  }
}
