/**
 * Money is integer micro-units (a decimal string from the API). Formatting and parsing use bigint and
 * string arithmetic only: 1 unit = 1,000,000 micro-units, never a float.
 */
const MICRO = 1_000_000n;

function group(digits: string): string {
  return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** "1234567" -> "1.234567"; at least `minDecimals` (2) decimals, trailing zeros beyond them dropped. */
export function formatMicros(v: string | bigint | number | null | undefined, minDecimals = 2): string {
  if (v === null || v === undefined || v === '') return '—';
  let m: bigint;
  try {
    m = typeof v === 'bigint' ? v : BigInt(typeof v === 'number' ? Math.trunc(v) : v);
  } catch {
    return String(v);
  }
  const neg = m < 0n;
  if (neg) m = -m;
  const whole = (m / MICRO).toString();
  let frac = (m % MICRO).toString().padStart(6, '0').replace(/0+$/, '');
  if (frac.length < minDecimals) frac = frac.padEnd(minDecimals, '0');
  return `${neg ? '−' : ''}${group(whole)}${frac ? '.' + frac : ''}`;
}

/** "1.25" -> 1250000n. Up to 6 decimals; throws on anything else. */
export function parseMoney(text: string): bigint {
  const t = text.trim().replace(/,/g, '');
  const m = /^(\d{1,12})(?:\.(\d{0,6}))?$/.exec(t);
  if (!m) throw new Error(`'${text}' is not an amount (digits, at most 6 decimals)`);
  return BigInt(m[1]!) * MICRO + BigInt((m[2] ?? '').padEnd(6, '0') || '0');
}

export function big(v: string | null | undefined): bigint {
  try {
    return v ? BigInt(v) : 0n;
  } catch {
    return 0n;
  }
}

/** part / whole as a percentage with two decimals, in bigint arithmetic ("12.34%"). */
export function percent(part: bigint, whole: bigint): string {
  if (whole === 0n) return '—';
  const neg = part < 0n !== whole < 0n && part !== 0n;
  const p = part < 0n ? -part : part;
  const w = whole < 0n ? -whole : whole;
  const bp = (p * 10_000n + w / 2n) / w; // basis points, rounded
  return `${neg ? '−' : ''}${bp / 100n}.${(bp % 100n).toString().padStart(2, '0')}%`;
}

/**
 * A multiplier in integer parts per million, shown as a factor: "1250000" -> "×1.25" (1,000,000 ppm = ×1).
 * Same fixed-point arithmetic as money (6 decimals), never a float.
 */
export function formatFactor(ppm: string | bigint | number | null | undefined): string {
  const f = formatMicros(ppm, 2);
  return f === '—' ? f : `×${f}`;
}

/** "1.25", "×1.25" or "x1.25" -> 1250000n (parts per million). Up to 6 decimals; throws on anything else. */
export function parseFactor(text: string): bigint {
  const t = text.trim().replace(/^[×xX]\s*/, '');
  if (!/^\d{1,12}(?:\.\d{0,6})?$/.test(t.replace(/,/g, '')))
    throw new Error(`'${text}' is not a multiplier (like 1.25: digits, at most 6 decimals)`);
  return parseMoney(t);
}

/** "1250000" -> "1,250,000 ppm" (bigint, any size). */
export function formatPpm(ppm: string | bigint | null | undefined): string {
  if (ppm === null || ppm === undefined || ppm === '') return '—';
  try {
    return `${group(BigInt(ppm).toString())} ppm`;
  } catch {
    return String(ppm);
  }
}

/** The account currency (GET /console-settings: ANIMA_CURRENCY), set once at sign-in. */
let currency = 'USD';
export function setCurrency(code: string | null | undefined): void {
  if (code && /^[A-Z]{3}$/.test(code)) currency = code;
}
export function currencyCode(): string {
  return currency;
}

/** An amount with its currency: "1,234.50 USD" (same exact formatting as formatMicros). */
export function formatMoney(v: string | bigint | number | null | undefined, minDecimals = 2): string {
  const f = formatMicros(v, minDecimals);
  return f === '—' ? f : `${f} ${currency}`;
}
