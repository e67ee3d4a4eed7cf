/**
 * The one redactor for text that came from outside (upstream error messages and error bodies, stream
 * error events, media job failures) before it reaches a client, a stored task or a log line.
 *
 * Two layers:
 *  - the channel's own secrets (its credential, and header values whose name says key/token/secret):
 *    any run of SHARED_RUN characters it shares with one is masked (ASCII case-insensitive), so a whole
 *    quote, a quote cut at either end, or a fragment is masked wherever it sits; and so is a masked quote
 *    (`sk-abc...wxyz`, `sk-proj-****wxyz`) whose visible start or end is the secret's start or end;
 *  - credential-shaped tokens whoever's they are: `sk-…` (proj, ant, svcacct, admin), `AIza…`,
 *    `Bearer …`, AWS access key ids (`AKIA…`/`ASIA…`), `key=`/`token=` URL parameters and header echoes.
 *
 * Only error paths call it, so its cost (linear in the text, a Set lookup per position when there is a
 * secret) is never on a served request's path.
 */

export const REDACTED = '[redacted]';

/** Shorter secrets are not matched as such (a 1-character test credential would mask every letter). */
const MIN_SECRET = 6;
/** A run this long shared with a secret is masked: long enough not to hit ordinary words by chance. */
const SHARED_RUN = 6;
/** A masked quote's visible start or end, matched against the secret's own start or end. */
const QUOTE_END = 4;

const SECRET_HEADER = /auth|key|token|secret|signature|password/i;

/** The secrets of a channel (structural: providers' UpstreamEndpoint and config's Channel both fit). */
export function secretsOf(ep: {
  credential?: string | null;
  headers?: Record<string, string> | null;
}): string[] {
  const out: string[] = [];
  if (ep.credential) out.push(ep.credential);
  const h = ep.headers;
  if (h) for (const k in h) if (SECRET_HEADER.test(k) && h[k]) out.push(h[k]!);
  return out;
}

/** A-Z to a-z only: keeps every index where it was (String#toLowerCase may not, outside ASCII). */
function asciiLower(s: string): string {
  return s.replace(/[A-Z]+/g, (m) => m.toLowerCase());
}

/** What of a secret to look for: a `Bearer x`/`Basic x` header value's token (the scheme is no secret). */
function forms(secret: string): string[] {
  const s = secret.trim();
  const m = /^(?:bearer|basic|token)\s+(\S+)$/i.exec(s);
  return [m ? m[1]! : s];
}

const QUOTE_RE = /[A-Za-z0-9_-]*(?:\.{2,}|\*{2,}|…+)[A-Za-z0-9_-]*/g;

/** `pre` (a masked quote's visible start) ends with at least QUOTE_END leading characters of `sec`. */
function endsWithStartOf(pre: string, sec: string): boolean {
  for (let k = Math.min(pre.length, sec.length); k >= QUOTE_END; k--)
    if (pre.endsWith(sec.slice(0, k))) return true;
  return false;
}

/** `post` (a masked quote's visible end) starts with at least QUOTE_END trailing characters of `sec`. */
function startsWithEndOf(post: string, sec: string): boolean {
  for (let k = Math.min(post.length, sec.length); k >= QUOTE_END; k--)
    if (post.startsWith(sec.slice(sec.length - k))) return true;
  return false;
}

/** Index ranges of `text` to mask for `secrets` (merged later). */
function secretRanges(text: string, secrets: readonly string[]): Array<[number, number]> {
  const ranges: Array<[number, number]> = [];
  let lower: string | null = null;
  for (const raw of secrets) {
    for (const secret of forms(raw)) {
      if (secret.length < MIN_SECRET) continue;
      lower ??= asciiLower(text);
      const sec = asciiLower(secret);
      if (lower.length < SHARED_RUN) continue;
      const grams = new Set<string>();
      for (let i = 0; i + SHARED_RUN <= sec.length; i++) grams.add(sec.slice(i, i + SHARED_RUN));
      for (let i = 0; i + SHARED_RUN <= lower.length; i++) {
        if (grams.has(lower.slice(i, i + SHARED_RUN))) ranges.push([i, i + SHARED_RUN]);
      }
      // A masked quote whose visible ends give part of the secret away (the prefix, or the last chars).
      QUOTE_RE.lastIndex = 0;
      for (let m = QUOTE_RE.exec(lower); m; m = QUOTE_RE.exec(lower)) {
        if (m[0].length === 0) {
          QUOTE_RE.lastIndex++;
          continue;
        }
        const pre = /^[a-z0-9_-]*/.exec(m[0])![0];
        const post = /[a-z0-9_-]*$/.exec(m[0])![0];
        if (endsWithStartOf(pre, sec) || startsWithEndOf(post, sec))
          ranges.push([m.index, m.index + m[0].length]);
      }
    }
  }
  return ranges;
}

function applyRanges(text: string, ranges: Array<[number, number]>): string {
  if (ranges.length === 0) return text;
  ranges.sort((a, b) => a[0] - b[0]);
  let out = '';
  let at = 0;
  let cur: [number, number] | null = null;
  for (const r of ranges) {
    if (cur && r[0] <= cur[1]) {
      cur[1] = Math.max(cur[1], r[1]);
      continue;
    }
    if (cur) {
      out += text.slice(at, cur[0]) + REDACTED;
      at = cur[1];
    }
    cur = [r[0], r[1]];
  }
  out += text.slice(at, cur![0]) + REDACTED;
  return out + text.slice(cur![1]);
}

/** A token that looks random (a digit in it, or long), not an English word after "Bearer". */
const tokenLike = (t: string) => t.length >= 20 || /\d/.test(t);

/** Credential-shaped tokens, whoever they belong to (what is kept of each names its kind, nothing more). */
const GENERIC: Array<[RegExp, string | ((m: string, ...g: string[]) => string)]> = [
  [/(?<![A-Za-z0-9])(sk-(?:proj-|ant-|svcacct-|admin-)?)[A-Za-z0-9_-]{8,}/g, `$1${REDACTED}`],
  [/(?<![A-Za-z0-9])AIza[0-9A-Za-z_-]{20,}/g, `AIza${REDACTED}`],
  [
    /\b(bearer\s+)([A-Za-z0-9._~+/=-]{8,})/gi,
    (m: string, pre: string, tok: string) => (tokenLike(tok) ? pre + REDACTED : m),
  ],
  [/(?<![A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])/g, `$1${REDACTED}`],
  [
    /([?&](?:key|api[_-]?key|token|access_token|auth|signature|sig|x-goog-api-key)=)[^&\s"'#<>]+/gi,
    `$1${REDACTED}`,
  ],
  [
    /((?:x-api-key|x-goog-api-key|api-key|authorization)["']?\s*[:=]\s*["']?)(?!bearer\b)([^\s"',;]{8,})/gi,
    (m: string, pre: string, tok: string) => (tokenLike(tok) ? pre + REDACTED : m),
  ],
];

/**
 * `text` with `secrets` (a channel's, see secretsOf) and every credential-shaped token masked. Safe on
 * any string; returns it unchanged when nothing matched.
 */
export function redact(text: string, secrets?: readonly string[] | null): string {
  let s = secrets && secrets.length ? applyRanges(text, secretRanges(text, secrets)) : text;
  for (const [re, to] of GENERIC) s = s.replace(re, to as (m: string, ...g: string[]) => string);
  return s;
}

/** Masks credential-shaped tokens only (no channel known): log lines, stacks, Anima's own renderings. */
export function redactSecrets(s: string): string {
  return redact(s);
}

/**
 * An upstream error body: every string of the JSON value redacted (keys too) and the JSON written again,
 * so a body relayed as the upstream sent it stays valid JSON. A body with nothing to mask is returned as
 * it came (byte for byte); text that is not JSON is redacted as text.
 */
export function redactJsonText(text: string, secrets?: readonly string[] | null): string {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return redact(text, secrets);
  }
  let changed = false;
  const str = (x: string) => {
    const r = redact(x, secrets);
    if (r !== x) changed = true;
    return r;
  };
  const walk = (x: unknown, depth: number): unknown => {
    if (typeof x === 'string') return str(x);
    if (x === null || typeof x !== 'object') return x;
    if (depth > 64) {
      changed = true;
      return REDACTED; // nothing legitimate nests this deep in an error body
    }
    if (Array.isArray(x)) return x.map((y) => walk(y, depth + 1));
    const o: Record<string, unknown> = {};
    for (const [k, y] of Object.entries(x)) o[str(k)] = walk(y, depth + 1);
    return o;
  };
  const out = walk(v, 0);
  return changed ? JSON.stringify(out) : text;
}
