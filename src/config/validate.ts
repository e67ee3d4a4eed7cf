/**
 * Validation of admin writes against the TypeBox schemas of schema.ts (the same objects the OpenAPI
 * document shows), then the step from API value to DB column: seal secrets, serialise JSON, parse times,
 * check operator URLs against the outbound policy. Throws a 400 naming the field; the admin API and
 * `anima apply` (its dry run included) both come through here, so they refuse the same input alike.
 */
import type { Static, TObject, TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { GatewayError } from '../core/errors.js';
import { type OutboundPolicy, outboundPolicy } from '../lib/outbound.js';
import { PRICE_COLUMNS } from './price.js';
import { type Entity, RESOURCES } from './schema.js';
import { sealSecret } from './secrets.js';

export type { Entity } from './schema.js';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => !!v && typeof v === 'object' && !Array.isArray(v);
/** A map's own entry: a body's `constructor` or `__proto__` names no field. */
const own = <T>(m: Record<string, T>, k: string): T | undefined => (Object.hasOwn(m, k) ? m[k] : undefined);

function bad(param: string, msg: string, sep = ': '): GatewayError {
  return new GatewayError('invalid_request', `${param}${sep}${msg}`, { param });
}

/** The refusal of `v` by schema `s` (whose own check failed), in the words the API has always used. */
function describe(s: Obj, v: unknown): string {
  const text = (m: string) => m.replace('{value}', JSON.stringify(v) ?? 'undefined');
  if (typeof s['x-message'] === 'string') return text(s['x-message']);
  const range = `[${String(s.minimum)}, ${String(s.maximum)}]`;
  switch (s.type) {
    case 'string': {
      const min = (s.minLength as number | undefined) ?? 0;
      if (typeof v !== 'string' || v.length < min) return 'must be a non-empty string';
      if (s.maxLength !== undefined && v.length > (s.maxLength as number))
        return `must be at most ${String(s.maxLength)} characters`;
      return typeof s['x-pattern-message'] === 'string' ? s['x-pattern-message'] : 'has an invalid format';
    }
    case 'integer':
      return `must be an integer in ${range}`;
    case 'number':
      return `must be a number in ${range}`;
    case 'boolean':
      return 'must be a boolean';
    case 'object':
      return 'must be an object';
    case 'array':
      return 'must be a non-empty array';
    default:
      return 'has an invalid value';
  }
}

/**
 * Checks `value` against `schema`; on failure throws a 400 for the first error, naming its place
 * (`chain[0].targets[1].weight`) under `param`.
 */
export function checkValue(schema: TSchema, value: unknown, param: string, sep = ': '): void {
  const first = Value.Errors(schema, value).First();
  if (!first) return;
  // Walk down to the failing node: the error's own schema, unless an ancestor speaks for its insides.
  let s = schema as Obj;
  let p = param;
  let v = value;
  for (const seg of first.path.split('/').slice(1)) {
    if (s['x-whole']) break;
    const props = s.properties as Record<string, Obj> | undefined;
    const next =
      s.type === 'array'
        ? (s.items as Obj)
        : ((props && own(props, seg)) ??
          (Object.values((s.patternProperties ?? {}) as Obj)[0] as Obj | undefined));
    const at = s.type === 'array' ? `${p}[${seg}]` : p ? `${p}.${seg}` : seg;
    if (!next)
      throw bad(at, typeof s['x-unknown'] === 'string' ? s['x-unknown'] : 'is not a known field', sep);
    s = next;
    p = at;
    v = isObj(v) || Array.isArray(v) ? (v as Record<string, unknown>)[seg] : undefined;
  }
  throw bad(p, describe(s, v), sep);
}

/**
 * Checks a request body against an object schema, field by field in the body's order (so the first
 * wrong field is the one named), then its required fields. Messages read `<field><sep><what is wrong>`.
 */
export function checkBody<T extends TObject>(
  schema: T,
  body: unknown,
  sep = ': ',
  what = 'this request',
): Static<T> {
  if (!isObj(body)) throw new GatewayError('invalid_request', 'The request body must be a JSON object.');
  const props = schema.properties as Record<string, TSchema>;
  for (const [k, v] of Object.entries(body)) {
    const s = own(props, k);
    if (!s) {
      if (schema.additionalProperties === false) throw bad(k, `is not a field of ${what}`, sep);
      continue;
    }
    checkValue(s, v, k, sep);
  }
  // A required field's schema may word its absence (`x-required`), e.g. 'name is required'.
  for (const r of schema.required ?? [])
    if (!(r in body)) throw bad(r, String(props[r]?.['x-required'] ?? 'is required'), sep);
  return body as Static<T>;
}

/**
 * An operator-set URL against the outbound policy, without DNS (a name is checked again at each new
 * connection): a metadata address never, a private or loopback one only when ANIMA_OUTBOUND_ALLOW lists it.
 */
function operatorUrl(url: string, param: string, outbound: OutboundPolicy): void {
  const v = outbound.checkUrl(url, 'operator');
  if (!v.ok)
    throw new GatewayError('url_not_allowed', `${param}: ${v.reason}`, { param, details: { rule: v.rule } });
}

const when = (v: unknown): Date | null => (v === null ? null : new Date(v as string | number));

/** A field's DB column value, once its schema has passed it. Fields not listed are stored as sent. */
type ToColumn = (v: unknown, outbound: OutboundPolicy) => unknown;
const WINDOW: Record<string, ToColumn> = {
  effective_from: (v) => when(v) ?? new Date(),
  effective_to: when,
};
const money: Record<string, ToColumn> = Object.fromEntries(
  [...PRICE_COLUMNS, 'cost_per_day', 'cost_per_month', 'price_multiplier_ppm'].map((c) => [
    c,
    (v: unknown) => String(v),
  ]),
);
const TO_COLUMN: Record<Entity, Record<string, ToColumn>> = {
  channel: {
    base_url: (v, outbound) => {
      const s = v as string;
      const u = URL.canParse(s) ? new URL(s) : null;
      if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:'))
        throw bad('base_url', 'must be an absolute http(s) URL');
      operatorUrl(s, 'base_url', outbound);
      return s.replace(/\/+$/, '');
    },
    credential: (v) => sealSecret(v as string),
    settings: (v) => JSON.stringify(v),
    ...WINDOW,
  },
  alias: {
    description: (v) => (v as string).slice(0, 1000),
    // as stored: every target carries its weight (default 1), and nothing else
    chain: (v) => JSON.stringify(normalChain(v)),
    ...WINDOW,
  },
  app: WINDOW,
  api_key: {
    allowed_aliases: (v) => JSON.stringify(v),
    webhook_url: (v, outbound) => {
      if (v === null) return null;
      if (!URL.canParse(v as string)) throw bad('webhook_url', 'must be an http(s) URL');
      operatorUrl(v as string, 'webhook_url', outbound);
      return v;
    },
    webhook_secret: (v) => (v === null ? null : sealSecret(v as string)),
    ...WINDOW,
  },
  quota: { ...money, ...WINDOW },
  token_group: { ...money, ...WINDOW },
  price: { ...money, ...WINDOW },
};

/** A chain as stored (and as `apply` compares it): tiers of targets, each with its weight. */
export function normalChain(
  v: unknown,
): Array<{ targets: Array<{ channel: unknown; model: unknown; weight: unknown }> }> {
  return (v as Array<{ targets: Obj[] }>).map((t) => ({
    targets: t.targets.map((x) => ({ channel: x.channel, model: x.model, weight: x.weight ?? 1 })),
  }));
}

/** Fields the API accepts but that are not columns (handled by the caller). */
const META = new Set(['version_no', 'id_version']);

export function validateWrite(
  entity: Entity,
  body: unknown,
  mode: 'create' | 'patch',
  outbound: OutboundPolicy = outboundPolicy(),
  // The kinds a channel may name are the provider registry's, in the schema itself; kept for callers.
  _providerKinds?: readonly string[],
): Record<string, unknown> {
  if (!isObj(body)) throw new GatewayError('invalid_request', 'The request body must be a JSON object.');
  const res = RESOURCES[entity];
  const fields = res.create.properties as Record<string, TSchema>;
  const patchable = res.patch.properties as Record<string, TSchema>;
  const out: Record<string, unknown> = {};
  for (const [k, raw] of Object.entries(body)) {
    if (META.has(k)) continue;
    const s = own(fields, k);
    if (!s) throw bad(k, `is not a field of ${entity}`);
    if (mode === 'patch' && !own(patchable, k)) throw bad(k, 'cannot be changed; create a new row instead');
    // A tier may be written as the bare list of its targets.
    const v =
      k === 'chain' && Array.isArray(raw) ? raw.map((t) => (Array.isArray(t) ? { targets: t } : t)) : raw;
    checkValue(s, v, k);
    const to = own(TO_COLUMN[entity], k);
    out[k] = to ? to(v, outbound) : v;
  }
  if (mode === 'create')
    for (const r of (res.create.required as string[] | undefined) ?? [])
      if (!(r in out)) throw bad(r, 'is required');
  const from = out.effective_from as Date | undefined;
  const to = out.effective_to as Date | null | undefined;
  if (from && to && to.getTime() <= from.getTime()) throw bad('effective_to', 'must be after effective_from');
  return out;
}

/** Cross-reference: every channel an alias chain names must exist. Shared by the admin API and `apply`. */
export function checkChainChannels(chainJson: string, existing: ReadonlySet<string>): void {
  const tiers = JSON.parse(chainJson) as Array<{ targets: Array<{ channel: string }> }>;
  const codes = [...new Set(tiers.flatMap((t) => t.targets.map((x) => x.channel)))];
  const missing = codes.filter((c) => !existing.has(c));
  if (missing.length)
    throw new GatewayError('invalid_request', `chain names unknown channel(s): ${missing.join(', ')}`, {
      param: 'chain',
    });
}

/** The channel codes a chain (as stored) names. */
export function chainChannels(chainJson: string): string[] {
  const tiers = JSON.parse(chainJson) as Array<{ targets: Array<{ channel: string }> }>;
  return [...new Set(tiers.flatMap((t) => t.targets.map((x) => x.channel)))];
}
