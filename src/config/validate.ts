/**
 * Validation of admin writes: each field an operator may set, its type and range. Returns DB column
 * values; throws a 400 naming the field otherwise.
 */
import { GatewayError } from '../core/errors.js';
import { type OutboundPolicy, outboundPolicy } from '../lib/outbound.js';
import { PRICE_COLUMNS } from './price.js';
import { sealSecret } from './secrets.js';

export type Entity = 'channel' | 'alias' | 'app' | 'api_key' | 'quota' | 'token_group' | 'price';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => !!v && typeof v === 'object' && !Array.isArray(v);

function bad(param: string, msg: string): GatewayError {
  return new GatewayError('invalid_request', `${param}: ${msg}`, { param });
}

/**
 * An operator-set URL against the outbound policy, without DNS (a name is checked again at each new
 * connection): a metadata address never, a private or loopback one only when ANIMA_OUTBOUND_ALLOW lists it.
 */
function operatorUrl(url: string, param: string, c: Ctx): void {
  const v = c.outbound.checkUrl(url, 'operator');
  if (!v.ok)
    throw new GatewayError('url_not_allowed', `${param}: ${v.reason}`, { param, details: { rule: v.rule } });
}

function str(v: unknown, param: string, opts: { max?: number; re?: RegExp; reMsg?: string } = {}): string {
  if (typeof v !== 'string' || v.length === 0) throw bad(param, 'must be a non-empty string');
  if (v.length > (opts.max ?? 256)) throw bad(param, `must be at most ${opts.max ?? 256} characters`);
  if (opts.re && !opts.re.test(v)) throw bad(param, opts.reMsg ?? 'has an invalid format');
  return v;
}

function bool(v: unknown, param: string): boolean {
  if (typeof v !== 'boolean') throw bad(param, 'must be a boolean');
  return v;
}

function int(v: unknown, param: string, min: number, max: number): number {
  if (!Number.isInteger(v) || (v as number) < min || (v as number) > max)
    throw bad(param, `must be an integer in [${min}, ${max}]`);
  return v as number;
}

/** Money and other large integers: a JSON integer or a digit string (for values past 2^53). */
function bigint(v: unknown, param: string): string {
  const ok =
    (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) ||
    (typeof v === 'string' && /^\d{1,18}$/.test(v));
  if (!ok) throw bad(param, 'must be a non-negative integer (a JSON integer or a digit string)');
  return String(v);
}

function date(v: unknown, param: string): Date | null {
  if (v === null) return null;
  if (typeof v !== 'string' && typeof v !== 'number')
    throw bad(param, 'must be an ISO-8601 timestamp or null');
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) throw bad(param, 'must be an ISO-8601 timestamp or null');
  return d;
}

const CODE_RE = /^[a-zA-Z0-9][a-zA-Z0-9._:-]{0,63}$/;
const CODE_MSG = 'letters, digits, . _ : - (1-64 characters, starting with a letter or digit)';

const NUMERIC_SETTINGS: Record<string, Record<string, [number, number]>> = {
  timeouts: {
    connectMs: [1, 600_000],
    firstByteMs: [1, 3_600_000],
    idleMs: [1, 3_600_000],
    totalMs: [1, 86_400_000],
  },
  breaker: {
    windowMs: [100, 86_400_000],
    minCalls: [1, 1_000_000],
    failureRate: [0, 1],
    slowCallMs: [1, 3_600_000],
    slowCallRate: [0, 1],
    openMs: [1, 86_400_000],
    halfOpenProbes: [1, 1000],
    probeTimeoutMs: [1, 3_600_000],
  },
};

function settings(v: unknown): Obj {
  if (!isObj(v)) throw bad('settings', 'must be an object');
  const out: Obj = {};
  for (const [k, val] of Object.entries(v)) {
    if (k in NUMERIC_SETTINGS) {
      if (!isObj(val)) throw bad(`settings.${k}`, 'must be an object');
      const o: Obj = {};
      for (const [f, n] of Object.entries(val)) {
        const range = NUMERIC_SETTINGS[k]![f];
        if (!range) throw bad(`settings.${k}.${f}`, 'is not a known setting');
        if (typeof n !== 'number' || !Number.isFinite(n) || n < range[0] || n > range[1])
          throw bad(`settings.${k}.${f}`, `must be a number in [${range[0]}, ${range[1]}]`);
        o[f] = n;
      }
      out[k] = o;
    } else if (k === 'headers') {
      if (!isObj(val) || !Object.values(val).every((h) => typeof h === 'string'))
        throw bad('settings.headers', 'must map header names to strings');
      out[k] = val;
    } else if (k === 'maxConnections') {
      out[k] = int(val, 'settings.maxConnections', 1, 10_000);
    } else if (k === 'nativeResponses') {
      out[k] = bool(val, 'settings.nativeResponses');
    } else throw bad(`settings.${k}`, 'is not a known setting');
  }
  return out;
}

function chain(v: unknown, param = 'chain'): string {
  if (!Array.isArray(v) || v.length === 0) throw bad(param, 'must be a non-empty array of tiers');
  const tiers = v.map((tier, i) => {
    const targets = isObj(tier) ? tier.targets : tier;
    if (!Array.isArray(targets) || targets.length === 0)
      throw bad(`${param}[${i}].targets`, 'must be a non-empty array');
    return {
      targets: targets.map((t, j) => {
        if (!isObj(t)) throw bad(`${param}[${i}].targets[${j}]`, 'must be an object');
        return {
          channel: str(t.channel, `${param}[${i}].targets[${j}].channel`, { max: 64 }),
          model: str(t.model, `${param}[${i}].targets[${j}].model`),
          weight:
            t.weight === undefined ? 1 : int(t.weight, `${param}[${i}].targets[${j}].weight`, 0, 1_000_000),
        };
      }),
    };
  });
  return JSON.stringify(tiers);
}

/** What a validator may need besides the value. */
interface Ctx {
  outbound: OutboundPolicy;
  /** The provider registry's kinds, when the caller knows them. */
  providerKinds?: readonly string[];
}

const KIND_RE = /^[a-z][a-z0-9_]{0,63}$/;

/** Fields per entity: validator to DB column (name, value). */
const FIELDS: Record<Entity, Record<string, (v: unknown, c: Ctx) => [string, unknown]>> = {
  channel: {
    code: (v) => ['code', str(v, 'code', { max: 64, re: CODE_RE, reMsg: CODE_MSG })],
    name: (v) => ['name', str(v, 'name')],
    provider: (v, c) => {
      // The kinds are the provider registry's (providers/registry.ts), which config may not import: the
      // caller passes them (the admin API does); without them, only the name's form is checked here.
      if (
        c.providerKinds ? !c.providerKinds.includes(v as string) : typeof v !== 'string' || !KIND_RE.test(v)
      )
        throw bad(
          'provider',
          c.providerKinds
            ? `unknown provider kind ${JSON.stringify(v)}; known: ${c.providerKinds.join(', ')}`
            : 'must be a provider kind name (see GET /api/admin/v1/provider-kinds)',
        );
      return ['provider', v];
    },
    base_url: (v, c) => {
      const s = str(v, 'base_url', { max: 2048 });
      let u: URL;
      try {
        u = new URL(s);
      } catch {
        throw bad('base_url', 'must be an absolute http(s) URL');
      }
      if (u.protocol !== 'http:' && u.protocol !== 'https:')
        throw bad('base_url', 'must be an absolute http(s) URL');
      operatorUrl(s, 'base_url', c);
      return ['base_url', s.replace(/\/+$/, '')];
    },
    credential: (v) => {
      if (typeof v !== 'string') throw bad('credential', 'must be a string');
      return ['credential', sealSecret(v)];
    },
    enabled: (v) => ['enabled', bool(v, 'enabled')],
    weight: (v) => ['weight', int(v, 'weight', 0, 1_000_000)],
    settings: (v) => ['settings', JSON.stringify(settings(v))],
    effective_from: (v) => ['effective_from', date(v, 'effective_from') ?? new Date()],
    effective_to: (v) => ['effective_to', date(v, 'effective_to')],
  },
  alias: {
    name: (v) => ['name', str(v, 'name', { max: 128, re: /^[^\s]+$/, reMsg: 'must not contain whitespace' })],
    description: (v) => [
      'description',
      typeof v === 'string'
        ? v.slice(0, 1000)
        : (() => {
            throw bad('description', 'must be a string');
          })(),
    ],
    enabled: (v) => ['enabled', bool(v, 'enabled')],
    chain: (v) => ['chain', chain(v)],
    max_attempts: (v) => ['max_attempts', int(v, 'max_attempts', 1, 20)],
    deadline_ms: (v) => ['deadline_ms', int(v, 'deadline_ms', 100, 3_600_000)],
    cache_ttl_s: (v) => ['cache_ttl_s', int(v, 'cache_ttl_s', 0, 2_592_000)],
    effective_from: (v) => ['effective_from', date(v, 'effective_from') ?? new Date()],
    effective_to: (v) => ['effective_to', date(v, 'effective_to')],
  },
  app: {
    id: (v) => ['id', str(v, 'id', { max: 64, re: CODE_RE, reMsg: CODE_MSG })],
    name: (v) => ['name', str(v, 'name')],
    enabled: (v) => ['enabled', bool(v, 'enabled')],
    billing: (v) => {
      if (v !== 'prepaid' && v !== 'postpaid') throw bad('billing', "must be 'prepaid' or 'postpaid'");
      return ['billing', v];
    },
    effective_from: (v) => ['effective_from', date(v, 'effective_from') ?? new Date()],
    effective_to: (v) => ['effective_to', date(v, 'effective_to')],
  },
  api_key: {
    name: (v) => [
      'name',
      typeof v === 'string' && v.length <= 256
        ? v
        : (() => {
            throw bad('name', 'must be a string of at most 256 characters');
          })(),
    ],
    enabled: (v) => ['enabled', bool(v, 'enabled')],
    allowed_aliases: (v) => {
      if (v !== null && (!Array.isArray(v) || !v.every((a) => typeof a === 'string')))
        throw bad('allowed_aliases', 'must be an array of alias names or null');
      return ['allowed_aliases', JSON.stringify(v)];
    },
    queue_mode: (v) => {
      if (v !== 'REJECT' && v !== 'WAIT' && v !== 'ASYNC')
        throw bad('queue_mode', "must be 'REJECT', 'WAIT' or 'ASYNC'");
      return ['queue_mode', v];
    },
    wait_timeout_ms: (v) => ['wait_timeout_ms', int(v, 'wait_timeout_ms', 1, 3_600_000)],
    max_queue: (v) => ['max_queue', int(v, 'max_queue', 1, 1_000_000)],
    token_group_id: (v) => ['token_group_id', v === null ? null : str(v, 'token_group_id', { max: 64 })],
    webhook_url: (v, c) => {
      if (v === null) return ['webhook_url', null];
      const s = str(v, 'webhook_url', { max: 2048 });
      if (!/^https?:\/\//.test(s) || !URL.canParse(s)) throw bad('webhook_url', 'must be an http(s) URL');
      operatorUrl(s, 'webhook_url', c);
      return ['webhook_url', s];
    },
    webhook_secret: (v) => [
      'webhook_secret',
      v === null ? null : sealSecret(str(v, 'webhook_secret', { max: 256 })),
    ],
    effective_from: (v) => ['effective_from', date(v, 'effective_from') ?? new Date()],
    effective_to: (v) => ['effective_to', date(v, 'effective_to')],
  },
  quota: {
    scope: (v) => {
      if (v !== 'key' && v !== 'app' && v !== 'token_group')
        throw bad('scope', "must be 'key', 'app' or 'token_group'");
      return ['scope', v];
    },
    scope_id: (v) => ['scope_id', str(v, 'scope_id', { max: 64 })],
    max_concurrency: (v) => ['max_concurrency', int(v, 'max_concurrency', 0, 1_000_000)],
    qps: (v) => {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 1_000_000)
        throw bad('qps', 'must be a number in [0, 1000000]');
      return ['qps', v];
    },
    qps_burst: (v) => ['qps_burst', int(v, 'qps_burst', 0, 1_000_000)],
    tokens_per_minute: (v) => ['tokens_per_minute', int(v, 'tokens_per_minute', 0, Number.MAX_SAFE_INTEGER)],
    tokens_per_day: (v) => ['tokens_per_day', int(v, 'tokens_per_day', 0, Number.MAX_SAFE_INTEGER)],
    cost_per_day: (v) => ['cost_per_day', bigint(v, 'cost_per_day')],
    cost_per_month: (v) => ['cost_per_month', bigint(v, 'cost_per_month')],
    effective_from: (v) => ['effective_from', date(v, 'effective_from') ?? new Date()],
    effective_to: (v) => ['effective_to', date(v, 'effective_to')],
  },
  price: {
    alias: (v) => ['alias', str(v, 'alias', { max: 128 })],
    channel: (v) => ['channel', v === null ? null : str(v, 'channel', { max: 64 })],
    ...Object.fromEntries(
      PRICE_COLUMNS.map((c) => [
        c,
        (v: unknown): [string, unknown] => {
          // money: integer micro-units, as a JSON integer or a decimal string (for amounts past 2^53)
          const ok =
            (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) ||
            (typeof v === 'string' && /^\d{1,18}$/.test(v));
          if (!ok)
            throw bad(
              c,
              'must be a non-negative integer number of micro-units (a JSON integer or a digit string)',
            );
          return [c, String(v)];
        },
      ]),
    ),
    effective_from: (v) => ['effective_from', date(v, 'effective_from') ?? new Date()],
    effective_to: (v) => ['effective_to', date(v, 'effective_to')],
  },
  token_group: {
    id: (v) => ['id', str(v, 'id', { max: 64, re: CODE_RE, reMsg: CODE_MSG })],
    name: (v) => ['name', str(v, 'name')],
    price_multiplier_ppm: (v) => ['price_multiplier_ppm', bigint(v, 'price_multiplier_ppm')],
    enabled: (v) => ['enabled', bool(v, 'enabled')],
    effective_from: (v) => ['effective_from', date(v, 'effective_from') ?? new Date()],
    effective_to: (v) => ['effective_to', date(v, 'effective_to')],
  },
};

/** Fields a create must carry. */
const REQUIRED: Record<Entity, string[]> = {
  channel: ['code', 'provider', 'base_url'],
  alias: ['name', 'chain'],
  app: ['name'],
  api_key: [],
  quota: ['scope', 'scope_id'],
  token_group: ['id', 'name'],
  price: ['alias'],
};

/** Keys that name the row and can't be changed by PATCH. */
const IMMUTABLE: Record<Entity, string[]> = {
  channel: ['code'],
  alias: ['name'],
  app: ['id'],
  api_key: [],
  quota: ['scope', 'scope_id'],
  token_group: ['id'],
  price: ['alias', 'channel'],
};

/** Fields the API accepts but that are not columns (handled by the caller). */
const META = new Set(['version_no', 'id_version']);

export function validateWrite(
  entity: Entity,
  body: unknown,
  mode: 'create' | 'patch',
  outbound: OutboundPolicy = outboundPolicy(),
  providerKinds?: readonly string[],
): Record<string, unknown> {
  if (!isObj(body)) throw new GatewayError('invalid_request', 'The request body must be a JSON object.');
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(body)) {
    if (META.has(k)) continue;
    const f = FIELDS[entity][k];
    if (!f) throw bad(k, `is not a field of ${entity}`);
    if (mode === 'patch' && IMMUTABLE[entity].includes(k))
      throw bad(k, 'cannot be changed; create a new row instead');
    const [col, val] = f(v, { outbound, providerKinds });
    out[col] = val;
  }
  if (mode === 'create') for (const r of REQUIRED[entity]) if (!(r in out)) throw bad(r, 'is required');
  const from = out.effective_from as Date | undefined;
  const to = out.effective_to as Date | null | undefined;
  if (from && to && to.getTime() <= from.getTime()) throw bad('effective_to', 'must be after effective_from');
  return out;
}
