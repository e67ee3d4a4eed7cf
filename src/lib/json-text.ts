/**
 * The text a parsed request body came from, so a passthrough can forward the client's own bytes with only
 * `model` changed instead of serializing the whole body again (a 64 KB conversation costs ~50-100 us of
 * JSON.stringify per attempt; embeddings inputs can be megabytes).
 *
 * Held by object identity (a WeakMap): a body built anew (a spread, a translation, a task read back from
 * the database) has no text, and is serialized as before. The parsed body must therefore never be
 * modified in place: code that needs a different body makes a new object.
 */
const texts = new WeakMap<object, string>();

export function rememberJsonText(value: object, text: string): void {
  texts.set(value, text);
}

export function jsonTextOf(value: object): string | undefined {
  return texts.get(value);
}

/**
 * `body`'s JSON text with its top-level `model` set to `model` and, with `addUsageOption`, a
 * `"stream_options":{"include_usage":true}` member appended (only for a body without `stream_options`).
 * null when that can't be done exactly from the text alone; the caller then serializes.
 *
 * Exact because: without a `\u` escape anywhere, the key "model" can only be written `"model"`, and the
 * parsed body has one at the top level, so when `"model"` occurs once in the text, that occurrence is the
 * top-level key (a string value containing it would be a second occurrence, an escaped quote before it
 * included). Its value must then read exactly as JSON.stringify writes the parsed one.
 */
export function withModel(body: Record<string, unknown>, model: string, addUsageOption: boolean): string | null {
  const text = texts.get(body);
  if (text === undefined || typeof body.model !== 'string') return null;
  if (addUsageOption && body.stream_options !== undefined) return null;
  if (text.indexOf('\\u') >= 0) return null;
  const key = text.indexOf('"model"');
  if (key < 0 || text.indexOf('"model"', key + 7) >= 0) return null;
  let i = skipSpace(text, key + 7);
  if (text.charCodeAt(i) !== 58 /* : */) return null;
  i = skipSpace(text, i + 1);
  const old = JSON.stringify(body.model);
  if (!text.startsWith(old, i)) return null;
  let out = text.slice(0, i) + JSON.stringify(model) + text.slice(i + old.length);
  if (addUsageOption) {
    const end = out.lastIndexOf('}');
    if (end < 0) return null;
    out = out.slice(0, end) + ',"stream_options":{"include_usage":true}' + out.slice(end);
  }
  return out;
}

function skipSpace(s: string, i: number): number {
  for (;;) {
    const c = s.charCodeAt(i);
    if (c === 32 || c === 9 || c === 10 || c === 13) i++;
    else return i;
  }
}
