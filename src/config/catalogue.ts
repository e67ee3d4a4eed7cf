/**
 * The price catalogue: public list prices per provider kind and upstream model, the COST side of a
 * request whose (alias, channel) has no explicit price row. The sale side is that cost times the app's
 * own markup (`app.sale_markup`) when it has one, else the default markup (`default_sale_markup` setting,
 * else ANIMA_DEFAULT_SALE_MARKUP, else x1), then the token group's multiplier as for any price. Explicit
 * price rows always win.
 *
 * Rounding: a markup is basis points (at most 4 decimals); each unit rate is marked up on its own and
 * rounded up to the next micro-unit (`applyMarkup`), and the request is then priced from those rates by
 * core/pricing.ts (rounded up once). So an app at x1.5 books sale = ceil(cost rates x 1.5) applied to its
 * usage: exactly cost x 1.5 when the rates are even, never less.
 *
 * Two layers: `data/prices.json`, shipped with the gateway (each entry names its source and the date its
 * figures were read), and the `price_catalogue` table that `anima prices import FILE` fills from a
 * LiteLLM `model_prices_and_context_window.json`; an imported entry replaces the shipped one.
 *
 * Money stays integer: LiteLLM's per-token floats are converted from their decimal text (the shortest
 * round-trip form of the number, which is what the file holds), never by multiplying floats.
 */
import { existsSync, readFileSync } from 'node:fs';
import { sql } from 'kysely';
import type { UnitPrices } from '../core/pricing.js';
import type { Db } from '../store/db.js';
import { PRICE_UNITS, type Price } from './price.js';

export type PriceUnit = (typeof PRICE_UNITS)[number];

export interface CatalogueEntry {
  /** A provider kind (the channel's `provider`), or LiteLLM's provider name for kinds Anima lacks. */
  provider: string;
  /** The upstream model name, as a channel target names it. */
  model: string;
  cost: UnitPrices;
  /** Where the figures come from (a URL). */
  source: string;
  /** When they were read from that source (YYYY-MM-DD). */
  asOf: string;
}

const FIELD: Record<PriceUnit, keyof UnitPrices> = {
  input_per_mtok: 'inputPerMTok',
  output_per_mtok: 'outputPerMTok',
  cached_per_mtok: 'cachedPerMTok',
  per_request: 'perRequest',
  per_image: 'perImage',
  per_video_second: 'perVideoSecond',
  per_track: 'perTrack',
  per_mchar: 'perMChar',
  per_audio_second: 'perAudioSecond',
  per_cache_hit: 'perCacheHit',
};

function zeroPrices(): UnitPrices {
  const p = {} as Record<keyof UnitPrices, bigint>;
  for (const u of PRICE_UNITS) p[FIELD[u]] = 0n;
  return p;
}

const keyOf = (provider: string, model: string) => `${provider}\0${model}`;

export class Catalogue {
  private readonly byKey = new Map<string, CatalogueEntry>();

  constructor(...layers: CatalogueEntry[][]) {
    // Later layers win (imported over shipped).
    for (const layer of layers) for (const e of layer) this.byKey.set(keyOf(e.provider, e.model), e);
  }

  get size(): number {
    return this.byKey.size;
  }

  get(provider: string, model: string): CatalogueEntry | undefined {
    return this.byKey.get(keyOf(provider, model));
  }
}

// ---------------------------------------------------------------------------------------------------
// Exact decimal arithmetic

/**
 * A decimal number's text (`2.5e-6`, `0.04`, `3`) times 10^shift, as an integer rounded UP (so a cost is
 * never understated), and whether that rounding changed it. Refuses negatives and anything not a plain
 * decimal.
 */
export function scaleDecimal(text: string, shift: number): { value: bigint; exact: boolean } {
  const m = /^(\d+)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(text.trim());
  if (!m) throw new RangeError(`not a non-negative decimal: ${JSON.stringify(text)}`);
  const frac = m[2] ?? '';
  const digits = BigInt((m[1] ?? '0') + frac);
  const exp = Number(m[3] ?? 0) - frac.length + shift;
  if (exp >= 0) return { value: digits * 10n ** BigInt(exp), exact: true };
  const div = 10n ** BigInt(-exp);
  const q = digits / div;
  return digits % div === 0n ? { value: q, exact: true } : { value: q + 1n, exact: false };
}

/** A JSON number as its decimal text: JavaScript prints the shortest text that reads back to it. */
function decimalText(v: unknown): string | null {
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return String(v);
  if (typeof v === 'string' && /^\d+(\.\d*)?([eE][+-]?\d+)?$/.test(v.trim())) return v.trim();
  return null;
}

/** A markup such as `1.2` (x1.2) in basis points (12000). */
export function markupBp(text: string): bigint {
  const { value, exact } = scaleDecimal(text, 4);
  if (!exact) throw new RangeError(`markup ${text}: at most 4 decimals`);
  return value;
}

/** Each rate times the markup (basis points), rounded up. */
export function applyMarkup(cost: UnitPrices, bp: bigint): UnitPrices {
  const out = {} as Record<keyof UnitPrices, bigint>;
  for (const u of PRICE_UNITS) {
    const f = FIELD[u];
    out[f] = (cost[f] * bp + 9_999n) / 10_000n;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// The shipped file

interface ShippedFile {
  entries: Array<Record<string, unknown>>;
}

function entryFromRecord(r: Record<string, unknown>, where: string): CatalogueEntry {
  const cost = zeroPrices();
  for (const u of PRICE_UNITS) {
    const v = r[u];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
      throw new RangeError(`${where}: ${u} must be a non-negative integer (micro-units)`);
    cost[FIELD[u]] = BigInt(v);
  }
  // Cached prompt tokens are part of the prompt: without a cache rate they cost the input rate.
  if (r.cached_per_mtok === undefined) cost.cachedPerMTok = cost.inputPerMTok;
  const { provider, model, source, as_of } = r;
  if (typeof provider !== 'string' || typeof model !== 'string' || !provider || !model)
    throw new RangeError(`${where}: provider and model are required`);
  if (typeof source !== 'string' || !/^https:\/\//.test(source))
    throw new RangeError(`${where}: source must be an https URL`);
  if (typeof as_of !== 'string' || !/^\d{4}-\d{2}-\d{2}$/.test(as_of))
    throw new RangeError(`${where}: as_of must be a date (YYYY-MM-DD)`);
  return { provider, model, cost, source, asOf: as_of };
}

export function parseShipped(doc: unknown): CatalogueEntry[] {
  const entries = (doc as ShippedFile | null)?.entries;
  if (!Array.isArray(entries)) throw new RangeError('catalogue: "entries" must be an array');
  return entries.map((r, i) => entryFromRecord(r, `catalogue entry ${i}`));
}

/** data/prices.json: beside src/ in the repository, beside dist/src/ once built. */
export function shippedCataloguePath(): string | null {
  for (const rel of ['../../data/prices.json', '../../../data/prices.json']) {
    const p = new URL(rel, import.meta.url);
    if (existsSync(p)) return p.pathname;
  }
  return null;
}

let shipped: CatalogueEntry[] | null = null;

/** The catalogue shipped with the gateway (read once). */
export function shippedEntries(): CatalogueEntry[] {
  if (!shipped) {
    const path = shippedCataloguePath();
    shipped = path ? parseShipped(JSON.parse(readFileSync(path, 'utf8'))) : [];
  }
  return shipped;
}

/**
 * The default sale markup for catalogue prices: the `default_sale_markup` setting, else `fallback` (the
 * ANIMA_DEFAULT_SALE_MARKUP environment value, read with the other settings in app/settings.ts), else x1.
 * An app's own markup (`app.sale_markup`) wins over both (ConfigCache.price).
 */
export function defaultMarkupBp(setting: unknown, fallback?: string): bigint {
  if (typeof setting === 'number' || typeof setting === 'string') {
    try {
      return markupBp(String(setting));
    } catch {
      // a malformed setting falls back to the environment's value rather than refusing to bill
    }
  }
  return fallback ? markupBp(fallback) : 10_000n;
}

/** A catalogue entry as the Price of (alias, channel): cost from the catalogue, sale = cost x markup. */
export function cataloguePrice(e: CatalogueEntry, alias: string, channel: string, bp: bigint): Price {
  return {
    id: `catalogue:${e.provider}/${e.model}`,
    alias,
    channel,
    cost: e.cost,
    sale: applyMarkup(e.cost, bp),
    versionNo: 0,
    effectiveFrom: 0,
    effectiveTo: null,
  };
}

// ---------------------------------------------------------------------------------------------------
// LiteLLM's model_prices_and_context_window.json

export interface ImportResult {
  entries: CatalogueEntry[];
  /** Keys left out, with why (no price Anima can bill, not an object, ...). */
  skipped: Array<{ key: string; reason: string }>;
  /** Keys with a figure that had to be rounded up to a whole micro-unit. */
  rounded: string[];
}

/** LiteLLM provider names that differ from Anima's provider kinds. */
const LITELLM_KINDS: Record<string, string> = {
  together_ai: 'together',
  fireworks_ai: 'fireworks',
  cohere_chat: 'cohere',
  lm_studio: 'lmstudio',
};

/** Unit -> LiteLLM field and the power of ten from USD per unit to micro-units per Anima unit. */
const LITELLM: Array<[PriceUnit, string, number]> = [
  ['input_per_mtok', 'input_cost_per_token', 12],
  ['output_per_mtok', 'output_cost_per_token', 12],
  ['cached_per_mtok', 'cache_read_input_token_cost', 12],
  ['per_mchar', 'input_cost_per_character', 12],
  ['per_request', 'input_cost_per_request', 6],
];

/**
 * Converts LiteLLM's format: token prices (USD per token) to micro-units per million tokens, per-image,
 * per-character and per-second prices where the mode uses them. An entry with none of these (pixel-priced
 * images, price-less listings, the `sample_spec` documentation entry) is skipped. Provider-prefixed keys
 * (`groq/llama-3.3-70b-versatile`) lose the prefix: the model is what a channel sends upstream. LiteLLM's
 * provider names become Anima's provider kinds where they differ (`together_ai` -> `together`).
 */
export function fromLiteLLM(doc: unknown, opts: { source: string; asOf: string }): ImportResult {
  if (!doc || typeof doc !== 'object' || Array.isArray(doc))
    throw new RangeError('not a LiteLLM price file: expected an object keyed by model');
  const out: ImportResult = { entries: [], skipped: [], rounded: [] };
  for (const [key, raw] of Object.entries(doc as Record<string, unknown>)) {
    if (key === 'sample_spec') {
      out.skipped.push({ key, reason: 'documentation entry' });
      continue;
    }
    if (!raw || typeof raw !== 'object') {
      out.skipped.push({ key, reason: 'not an object' });
      continue;
    }
    const r = raw as Record<string, unknown>;
    const provider = typeof r.litellm_provider === 'string' ? r.litellm_provider : '';
    if (!provider) {
      out.skipped.push({ key, reason: 'no litellm_provider' });
      continue;
    }
    const cost = zeroPrices();
    let priced = false;
    let rounded = false;
    let bad: string | null = null;
    const take = (unit: PriceUnit, field: string, shift: number) => {
      if (r[field] === undefined) return;
      const text = decimalText(r[field]);
      if (text === null) {
        bad = `${field} is not a non-negative number`;
        return;
      }
      const { value, exact } = scaleDecimal(text, shift);
      cost[FIELD[unit]] = value;
      priced = true;
      if (!exact) rounded = true;
    };
    for (const [unit, field, shift] of LITELLM) take(unit, field, shift);
    if (r.cache_read_input_token_cost === undefined) cost.cachedPerMTok = cost.inputPerMTok;
    const mode = typeof r.mode === 'string' ? r.mode : '';
    if (r.output_cost_per_image !== undefined) take('per_image', 'output_cost_per_image', 6);
    else take('per_image', 'input_cost_per_image', 6);
    if (mode === 'video_generation') take('per_video_second', 'output_cost_per_second', 6);
    else if (mode === 'audio_transcription') take('per_audio_second', 'input_cost_per_second', 6);
    if (bad) {
      out.skipped.push({ key, reason: bad });
      continue;
    }
    if (!priced) {
      out.skipped.push({ key, reason: 'no token, image, character or second price' });
      continue;
    }
    if (rounded) out.rounded.push(key);
    const model = key.startsWith(provider + '/') ? key.slice(provider.length + 1) : key;
    const kind = LITELLM_KINDS[provider] ?? provider;
    out.entries.push({ provider: kind, model, cost, source: opts.source, asOf: opts.asOf });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// The imported layer (price_catalogue table)

/** Imported entries, every one (the table holds one row per provider and model). */
export async function loadImported(db: Db): Promise<CatalogueEntry[]> {
  const { rows } = await sql<Record<string, unknown>>`SELECT * FROM price_catalogue`.execute(db);
  return rows.map((r) => {
    const cost = zeroPrices();
    for (const u of PRICE_UNITS) cost[FIELD[u]] = BigInt(String(r[u] ?? 0));
    return {
      provider: String(r.provider),
      model: String(r.model),
      cost,
      source: String(r.source),
      asOf: String(r.as_of),
    };
  });
}

/** Inserts or replaces imported entries, in batches, in one transaction; returns how many were new. */
export async function saveImported(
  db: Db,
  entries: CatalogueEntry[],
): Promise<{ added: number; replaced: number }> {
  let added = 0;
  await db.transaction().execute(async (tx) => {
    for (let i = 0; i < entries.length; i += 200) {
      const batch = entries.slice(i, i + 200);
      const values = sql.join(
        batch.map(
          (e) =>
            sql`(${e.provider}, ${e.model}, ${sql.join(PRICE_UNITS.map((u) => sql`${e.cost[FIELD[u]].toString()}::bigint`))}, ${e.source}, ${e.asOf})`,
        ),
      );
      const cols = sql.raw(PRICE_UNITS.join(', '));
      const updates = sql.raw(
        [...PRICE_UNITS, 'source', 'as_of'].map((c) => `${c} = EXCLUDED.${c}`).join(', ') +
          ', imported_at = now()',
      );
      const { rows } = await sql<{ inserted: boolean }>`
        INSERT INTO price_catalogue (provider, model, ${cols}, source, as_of) VALUES ${values}
        ON CONFLICT (provider, model) DO UPDATE SET ${updates}
        RETURNING (xmax = 0) AS inserted`.execute(tx);
      added += rows.filter((r) => r.inserted).length;
    }
  });
  return { added, replaced: entries.length - added };
}
