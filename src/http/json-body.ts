/**
 * Request bodies: JSON.parse, then ONE walk over what it built.
 *
 * Fastify's default parser (secure-json-parse) runs two regular expressions over the whole text to look
 * for `__proto__` and `constructor` keys, and the nesting limit was a per-character scan of the text in
 * JavaScript before that. Both cost in proportion to the body's characters, all of it before the gateway
 * does any work of its own (measured by bench/overhead.ts --only json-large; microbenchmark figures in
 * bench/HISTORY.md). A walk over the parsed value costs in proportion to its objects and arrays, which a
 * chat body has few of (its bulk is strings).
 *
 * V8's JSON.parse is iterative, so it takes any nesting; what would overflow the stack is recursion
 * later (JSON.stringify, translators). The walk stops at MAX_JSON_DEPTH + 1, so it never recurses deeper.
 * The poisoning rules are secure-json-parse's 'remove' action: an own `__proto__` key is deleted, and so
 * is an own `constructor` whose value is an object with an own `prototype`.
 *
 * Text PostgreSQL refuses (a NUL, `\u0000`, in text and jsonb; an unpaired surrogate in jsonb) is refused
 * here, whichever route and whether or not the body is ever stored: a 400 at the door, not a 500 from the
 * database later (an ASYNC task's request, a media prompt, an admin row). Both can only come from a `\u`
 * escape. An ASCII body's strings are one-byte, where the check in the walk is a memchr per string (and
 * no surrogate can be): a small fraction of the parse. Any other body is first searched for the escapes
 * that could make either (one regex over the text), and walked with the per-string check only when one
 * is there, since a walk over two-byte strings costs several times the regex per character (the ASCII
 * path is what bench/overhead.ts --only json-large measures).
 */

import { isAscii, isUtf8 } from 'node:buffer';
import { rememberJsonBytes } from '../lib/json-text.js';

export const MAX_JSON_DEPTH = 128;

const hasOwn = Object.prototype.hasOwnProperty;
/** Set by checked() when it deletes a key. */
let removed = false;
/** Whether checked() looks at strings (see the header). */
let strings = false;

/** Why a body was refused. `invalid`: not JSON (the caller answers as for any malformed body). */
export type BodyRefusal = 'invalid' | 'too_deep' | 'nul' | 'lone_surrogate';

/** A `\u0000` or a surrogate escape somewhere in the text (or a backslash-escaped lookalike: the walk decides). */
const SUSPECT = /\\u(?:0000|[dD][89a-fA-F])/;

/** What PostgreSQL would refuse in a string, or null. */
function badText(s: string): 'nul' | 'lone_surrogate' | null {
  if (s.includes('\0')) return 'nul';
  return (s as unknown as { isWellFormed(): boolean }).isWellFormed() ? null : 'lone_surrogate';
}

/**
 * The parsed body, or why it was refused. A leading byte order mark is ignored, as Fastify did. Bytes
 * that aren't UTF-8 parse as Fastify's decoding reads them (U+FFFD for what can't be read), and their
 * bytes aren't remembered: forwarding them would send the upstream what the gateway didn't read.
 */
export function parseJsonBody(bytes: Buffer): { ok: true; value: unknown } | { ok: false; why: BodyRefusal } {
  const b = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? bytes.subarray(3) : bytes;
  let value: unknown;
  const text = b.toString('utf8');
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, why: 'invalid' };
  }
  strings = isAscii(b) || SUSPECT.test(text);
  if (typeof value === 'string') {
    const bad = strings ? badText(value) : null;
    if (bad) return { ok: false, why: bad };
  } else if (value !== null && typeof value === 'object') {
    removed = false;
    const why = checked(value as object, 1);
    if (why) return { ok: false, why };
    // The bytes are what a passthrough may forward (lib/json-text.ts), unless the walk changed the value.
    if (!removed && isUtf8(b)) rememberJsonBytes(value as object, b);
  }
  return { ok: true, value };
}

/**
 * Why `v` is refused: it nests deeper than MAX_JSON_DEPTH (`depth` is v's own level: the top is 1), or a
 * string or key holds what PostgreSQL refuses (when `strings`); null when it is fine. Removes poisoned keys.
 */
function checked(v: object, depth: number): Exclude<BodyRefusal, 'invalid'> | null {
  if (depth > MAX_JSON_DEPTH) return 'too_deep';
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const x: unknown = v[i];
      if (x !== null && typeof x === 'object') {
        const why = checked(x, depth + 1);
        if (why) return why;
      } else if (strings && typeof x === 'string') {
        const why = badText(x);
        if (why) return why;
      }
    }
    return null;
  }
  const o = v as Record<string, unknown>;
  if (hasOwn.call(o, '__proto__')) removed = Reflect.deleteProperty(o, '__proto__');
  if (hasOwn.call(o, 'constructor')) {
    const c = o.constructor;
    if (c !== null && typeof c === 'object' && hasOwn.call(c, 'prototype'))
      removed = Reflect.deleteProperty(o, 'constructor');
  }
  for (const k in o) {
    const x = o[k];
    if (strings) {
      const why = badText(k) ?? (typeof x === 'string' ? badText(x) : null);
      if (why) return why;
    }
    if (x !== null && typeof x === 'object') {
      const why = checked(x, depth + 1);
      if (why) return why;
    }
  }
  return null;
}
