import { countTokens } from 'gpt-tokenizer';
import { DIALECTS, type InboundDialect } from '../core/dialects.js';
import { priceOf } from '../core/pricing.js';

/** What a request reserves when it names no max_tokens. */
export const DEFAULT_OUTPUT_RESERVATION = 1024;
const PER_MESSAGE_OVERHEAD = 4;
const PER_IMAGE = 765; // a high-detail 512px tile pair, OpenAI's usual figure

function textOf(content: unknown, acc: string[], images: { n: number }): void {
  if (typeof content === 'string') acc.push(content);
  else if (Array.isArray(content)) {
    for (const p of content as Array<Record<string, unknown>>) {
      if (!p || typeof p !== 'object') continue;
      if (typeof p.text === 'string') acc.push(p.text);
      else if (p.type === 'image_url' || p.type === 'image') images.n++;
      else if (p.type === 'tool_result' || p.type === 'tool_use')
        acc.push(JSON.stringify(p.content ?? p.input ?? ''));
    }
  }
}

/**
 * Tokens a request will use at most, before the upstream says: the prompt counted with gpt-tokenizer
 * (o200k) plus the output it may produce (max_tokens, else DEFAULT_OUTPUT_RESERVATION). Settlement trues
 * it up to the upstream's reported usage.
 */
/** A Gemini content's parts: text counted as text, inline or file data as an image, anything else as its JSON. */
function geminiParts(c: unknown, parts: string[], images: { n: number }): void {
  const ps = (c as { parts?: unknown } | null | undefined)?.parts;
  for (const p of Array.isArray(ps) ? (ps as Array<Record<string, unknown>>) : []) {
    if (typeof p?.text === 'string') parts.push(p.text);
    else if (p?.inlineData || p?.fileData) images.n++;
    else if (p) parts.push(JSON.stringify(p));
  }
}

/**
 * Token counts of recently seen texts. A conversation resends its whole history (and its system prompt)
 * every turn, so most of a prompt was counted before: BPE was the single largest cost of admitting a
 * request with a token limit. Bounded: the oldest entries go first; long texts aren't kept.
 *
 * A long text is looked up by a sample of itself (length, head, middle, tail), not by the whole text:
 * every request's texts are new strings, and a Map keyed by them hashes each one in full, a cost that
 * grows with the conversation (measured by bench/overhead.ts --only json-large; figures in
 * bench/HISTORY.md).
 * Each entry keeps its text, and a hit is one only when the texts are equal, so a sample shared by two
 * texts costs a recount, never a wrong count.
 */
const COUNTED = new Map<string, { text: string; n: number }>();
/** Characters held in entries, at most (~16 MB of strings). */
const COUNTED_MAX_CHARS = 8_000_000;
const COUNTED_MAX_TEXT = 32_768;
/** Texts up to this long are their own key. */
const SAMPLED_FROM = 256;
let countedChars = 0;

function memoKey(t: string): string {
  if (t.length <= SAMPLED_FROM) return t;
  const mid = t.length >> 1;
  return `${t.length}|${t.slice(0, 48)}|${t.slice(mid, mid + 32)}|${t.slice(-48)}`;
}

function tokensOf(text: string): number {
  if (text.length === 0) return 0;
  if (text.length > COUNTED_MAX_TEXT) return countTokens(text);
  const key = memoKey(text);
  const e = COUNTED.get(key);
  if (e !== undefined && e.text === text) return e.n;
  const n = countTokens(text);
  if (e !== undefined) {
    // Another text with the same sample: the newer one takes its place.
    COUNTED.delete(key);
    countedChars -= e.text.length;
  }
  countedChars += text.length;
  while (countedChars > COUNTED_MAX_CHARS && COUNTED.size > 0) {
    const [oldest, o] = COUNTED.entries().next().value!;
    COUNTED.delete(oldest);
    countedChars -= o.text.length;
  }
  COUNTED.set(key, { text, n });
  return n;
}

/** `dialect` is the inbound wire format, when the caller knows it. */
export function estimateTokens(
  body: Record<string, unknown>,
  dialect?: InboundDialect,
): { prompt: number; total: number } {
  const parts: string[] = [];
  const images = { n: 0 };
  let messages = 0;
  if (typeof body.instructions === 'string') parts.push(body.instructions);
  // Gemini embeddings: content.parts, or each of requests[].content.parts
  for (const r of Array.isArray(body.requests)
    ? (body.requests as Array<Record<string, unknown>>)
    : body.content
      ? [body]
      : [])
    geminiParts(r?.content, parts, images);
  if (Array.isArray(body.contents)) {
    // Gemini: systemInstruction.parts and contents[].parts
    const sys = body.systemInstruction;
    for (const c of [...(sys ? [sys] : []), ...(body.contents as unknown[])]) {
      messages++;
      geminiParts(c, parts, images);
    }
  }
  if (typeof body.system === 'string') parts.push(body.system);
  else textOf(body.system, parts, images);
  if (Array.isArray(body.messages)) {
    for (const m of body.messages as Array<Record<string, unknown>>) {
      messages++;
      textOf(m?.content, parts, images);
      if (m?.tool_calls) parts.push(JSON.stringify(m.tool_calls));
    }
  }
  if (body.input !== undefined)
    parts.push(typeof body.input === 'string' ? body.input : JSON.stringify(body.input));
  // Legacy completions' prompt; rerank's query and documents.
  if (body.prompt !== undefined)
    parts.push(typeof body.prompt === 'string' ? body.prompt : JSON.stringify(body.prompt));
  if (typeof body.query === 'string') parts.push(body.query);
  if (Array.isArray(body.documents))
    for (const d of body.documents as unknown[]) parts.push(typeof d === 'string' ? d : JSON.stringify(d));
  if (body.tools) parts.push(JSON.stringify(body.tools));
  let text = parts.length ? parts.length - 1 : 0; // the separators a joined text would have
  for (const p of parts) text += tokensOf(p);
  const prompt = text + messages * PER_MESSAGE_OVERHEAD + images.n * PER_IMAGE;
  const gc = body.generationConfig as { maxOutputTokens?: unknown } | undefined;
  const maxOut = [
    body.max_completion_tokens,
    body.max_tokens,
    body.max_output_tokens,
    gc?.maxOutputTokens,
  ].find((v) => Number.isInteger(v) && (v as number) > 0) as number | undefined;
  // Embeddings (and speech) produce no output tokens; everything else may produce up to its maximum.
  const noOutput = dialect
    ? DIALECTS[dialect].noOutput
    : body.input !== undefined && body.messages === undefined;
  const output = noOutput ? 0 : (maxOut ?? DEFAULT_OUTPUT_RESERVATION);
  return { prompt, total: prompt + output };
}

/** Anything that can price a request for an alias (the config cache). */
export interface PriceSource {
  price(
    alias: string,
    channel: string | null,
    at?: number,
    model?: string | null,
    app?: string | null,
  ): { sale: import('../core/pricing.js').UnitPrices } | undefined;
  tokenGroup(id: string, at?: number): { priceMultiplierPpm: bigint } | undefined;
}

/**
 * The sale price a request may reach, for cost budgets: its estimated prompt plus max output, at the
 * alias's price (the alias-wide row, else the first channel's), times the key's token-group multiplier.
 * No price configured: 0.
 */
export function estimateCost(
  prices: PriceSource,
  alias: { name: string; tiers: Array<Array<{ channel: string }>> },
  tokenGroupId: string | null,
  tokens: { prompt: number; total: number },
  at: number,
  /** The app whose own catalogue markup applies (when the alias has no price row). */
  app?: string | null,
): number {
  const p =
    prices.price(alias.name, null, at, undefined, app) ??
    prices.price(alias.name, alias.tiers[0]?.[0]?.channel ?? null, at, undefined, app);
  if (!p) return 0;
  const mult = tokenGroupId
    ? (prices.tokenGroup(tokenGroupId, at)?.priceMultiplierPpm ?? 1_000_000n)
    : 1_000_000n;
  return Number(
    priceOf(
      p.sale,
      { inputTokens: tokens.prompt, outputTokens: tokens.total - tokens.prompt, cachedTokens: 0 },
      mult,
    ),
  );
}

/** The sale price of what a request actually used (settlement of cost budgets). */
export function actualCost(
  prices: PriceSource,
  alias: string,
  channel: string | null,
  tokenGroupId: string | null,
  usage: import('../core/usage.js').Usage | null,
  at: number,
): number {
  if (!usage) return 0;
  const p = prices.price(alias, channel, at);
  if (!p) return 0;
  const mult = tokenGroupId
    ? (prices.tokenGroup(tokenGroupId, at)?.priceMultiplierPpm ?? 1_000_000n)
    : 1_000_000n;
  return Number(priceOf(p.sale, usage, mult));
}
