/**
 * The price catalogue: exact decimal conversion of LiteLLM's per-token floats into integer micro-units,
 * the import of a real LiteLLM file (a verbatim subset, test/fixtures/litellm-model-prices.json), the
 * shipped data/prices.json (every figure traceable to that source), and the markup arithmetic.
 */
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  Catalogue,
  applyMarkup,
  cataloguePrice,
  fromLiteLLM,
  markupBp,
  parseShipped,
  scaleDecimal,
  shippedEntries,
} from '../../src/config/catalogue.js';
import { priceOf } from '../../src/core/pricing.js';

const fixture = JSON.parse(readFileSync('test/fixtures/litellm-model-prices.json', 'utf8')) as unknown;
const SRC = { source: 'https://example.test/prices.json', asOf: '2026-12-02' };

describe('scaleDecimal: decimal text x 10^n, exactly', () => {
  it.each([
    ['2.5e-6', 12, 2_500_000n, true],
    ['2.5e-06', 12, 2_500_000n, true],
    ['1.5e-07', 12, 150_000n, true],
    ['5.46875e-07', 12, 546_875n, true],
    ['2.1875e-06', 12, 2_187_500n, true],
    // 1.1e-6 * 1e12 in floating point is 1100000.0000000002: the string route is exact.
    ['1.1e-06', 12, 1_100_000n, true],
    ['0.00018', 12, 180_000_000n, true],
    ['0.04', 6, 40_000n, true],
    ['0.4', 6, 400_000n, true],
    ['3', 6, 3_000_000n, true],
    ['0', 12, 0n, true],
    ['0.0', 12, 0n, true],
    // Below a micro-unit: rounded up, never down, and flagged.
    ['3.083e-05', 6, 31n, false],
    ['1e-13', 12, 1n, false],
    ['0.30000000000000004', 6, 300_001n, false],
  ])('%s x 10^%d = %s', (text, shift, value, exact) => {
    expect(scaleDecimal(text, shift)).toEqual({ value, exact });
  });

  it('refuses what is not a non-negative decimal', () => {
    for (const bad of ['-1e-6', 'abc', '', '1e', 'NaN', 'Infinity', '0x10'])
      expect(() => scaleDecimal(bad, 12)).toThrow(RangeError);
  });

  it('any price of up to 15 significant digits survives the trip through a JSON number', () => {
    // A file that holds p USD/token is parsed to the double nearest p; its shortest text is p again.
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 999_999_999_999_999n }), (microPerMTok) => {
        const usdPerToken = Number(microPerMTok) / 1e12;
        expect(scaleDecimal(String(usdPerToken), 12)).toEqual({ value: microPerMTok, exact: true });
      }),
      { numRuns: 2_000 },
    );
  });
});

describe('fromLiteLLM on a real LiteLLM file', () => {
  const r = fromLiteLLM(fixture, SRC);
  const get = (p: string, m: string) => r.entries.find((e) => e.provider === p && e.model === m);

  it('counts: priced entries imported, documentation, pixel-priced and price-less entries skipped', () => {
    expect(r.entries).toHaveLength(30);
    expect(r.skipped.map((s) => s.key).sort()).toEqual([
      '1024-x-1024/dall-e-2',
      'gradient_ai/openai-gpt-4o-mini',
      'sample_spec',
    ]);
    expect(r.rounded.sort()).toEqual(['groq/whisper-large-v3', 'groq/whisper-large-v3-turbo']);
  });

  it('token prices per million tokens, the cached rate where listed', () => {
    expect(get('openai', 'gpt-4o-mini')?.cost).toMatchObject({
      inputPerMTok: 150_000n,
      outputPerMTok: 600_000n,
      cachedPerMTok: 75_000n,
    });
    expect(get('anthropic', 'claude-opus-4-1')?.cost).toMatchObject({
      inputPerMTok: 15_000_000n,
      outputPerMTok: 75_000_000n,
      cachedPerMTok: 1_500_000n,
    });
    expect(get('bedrock_converse', 'amazon.nova-2-pro-preview-20251202-v1:0')?.cost).toMatchObject({
      inputPerMTok: 2_187_500n,
      outputPerMTok: 17_500_000n,
      cachedPerMTok: 546_875n,
    });
  });

  it('without a cache-read price, cached prompt tokens cost the input rate (never zero)', () => {
    expect(get('bedrock', 'ai21.jamba-1-5-large-v1:0')?.cost).toMatchObject({
      inputPerMTok: 2_000_000n,
      cachedPerMTok: 2_000_000n,
      outputPerMTok: 8_000_000n,
    });
  });

  it('per character, per image, per second of audio or video', () => {
    expect(get('groq', 'playai-tts')?.cost.perMChar).toBe(50_000_000n);
    expect(get('groq', 'whisper-large-v3')?.cost.perAudioSecond).toBe(31n); // 30.83, rounded up
    expect(get('gemini', 'imagen-4.0-generate-001')?.cost.perImage).toBe(40_000n);
    expect(get('black_forest_labs', 'flux-pro-1.1')?.cost.perImage).toBe(40_000n);
    expect(get('gemini', 'veo-3.1-generate-preview')?.cost.perVideoSecond).toBe(400_000n);
  });

  it('the provider prefix leaves the key; the rest is the upstream model, slashes and all', () => {
    expect(get('groq', 'openai/gpt-oss-120b')?.cost.inputPerMTok).toBe(150_000n);
    expect(get('gemini', 'gemini-2.5-pro')?.cost.inputPerMTok).toBe(1_250_000n);
  });

  it("LiteLLM's provider names become Anima's provider kinds where they differ", () => {
    const r2 = fromLiteLLM(
      {
        'together_ai/m': { litellm_provider: 'together_ai', input_cost_per_token: 1e-6 },
        'fireworks_ai/accounts/x/models/y': { litellm_provider: 'fireworks_ai', input_cost_per_token: 1e-6 },
      },
      SRC,
    );
    expect(r2.entries.map((e) => `${e.provider} ${e.model}`)).toEqual([
      'together m',
      'fireworks accounts/x/models/y',
    ]);
  });

  it('refuses a file that is not an object of entries; skips a negative price', () => {
    expect(() => fromLiteLLM([], SRC)).toThrow(RangeError);
    const bad = fromLiteLLM({ m: { litellm_provider: 'openai', input_cost_per_token: -1 } }, SRC);
    expect(bad.entries).toHaveLength(0);
    expect(bad.skipped[0]?.reason).toMatch(/input_cost_per_token/);
  });
});

describe('the shipped catalogue (data/prices.json)', () => {
  const shipped = shippedEntries();
  const imported = new Catalogue(fromLiteLLM(fixture, SRC).entries);

  it('lists the major providers, each figure with an https source and the date it was read', () => {
    expect(shipped.length).toBeGreaterThanOrEqual(20);
    for (const p of ['openai', 'anthropic', 'gemini'])
      expect(shipped.some((e) => e.provider === p)).toBe(true);
    for (const e of shipped) {
      expect(e.source).toMatch(/^https:\/\//);
      expect(e.asOf).toMatch(/^\d{4}-\d{2}-\d{2}$/);
    }
  });

  it('every figure sourced from LiteLLM is what that file says (converted by the importer)', () => {
    for (const e of shipped.filter((x) => x.source.includes('BerriAI/litellm'))) {
      expect(imported.get(e.provider, e.model)?.cost, `${e.provider}/${e.model}`).toEqual(e.cost);
    }
  });

  it('refuses an entry without a source, a date, or with a non-integer price', () => {
    const ok = {
      provider: 'openai',
      model: 'm',
      input_per_mtok: 1,
      source: 'https://x.test',
      as_of: '2026-01-01',
    };
    expect(parseShipped({ entries: [ok] })).toHaveLength(1);
    expect(() => parseShipped({ entries: [{ ...ok, source: undefined }] })).toThrow(/source/);
    expect(() => parseShipped({ entries: [{ ...ok, as_of: 'recently' }] })).toThrow(/as_of/);
    expect(() => parseShipped({ entries: [{ ...ok, input_per_mtok: 1.5 }] })).toThrow(/integer/);
  });
});

describe('sale = cost x markup', () => {
  it('markups in basis points', () => {
    expect(markupBp('1')).toBe(10_000n);
    expect(markupBp('1.2')).toBe(12_000n);
    expect(markupBp('1.0125')).toBe(10_125n);
    expect(() => markupBp('1.00001')).toThrow(RangeError);
  });

  it('each rate is marked up and rounded up; the price of a request follows', () => {
    const cost = new Catalogue(fromLiteLLM(fixture, SRC).entries).get('openai', 'gpt-4o-mini')!;
    const p = cataloguePrice(cost, 'a', 'ch', 12_000n);
    expect(p.sale).toMatchObject({ inputPerMTok: 180_000n, outputPerMTok: 720_000n, cachedPerMTok: 90_000n });
    expect(applyMarkup({ ...p.cost, inputPerMTok: 1n }, 12_000n).inputPerMTok).toBe(2n);
    const usage = { inputTokens: 1_000, outputTokens: 500, cachedTokens: 200 };
    // 800 x 150,000 + 200 x 75,000 + 500 x 600,000 = 435,000,000 millionths -> 435 micro-units.
    expect(priceOf(p.cost, usage)).toBe(435n);
    expect(priceOf(p.sale, usage)).toBe(522n);
  });
});
