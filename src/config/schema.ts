/**
 * The admin resources as TypeBox schemas: one source for the validation of admin writes (validate.ts, used
 * by the admin API and by `anima apply`), their TypeScript types (Static<>) and the OpenAPI document
 * (http/openapi.ts puts these very objects in components.schemas).
 *
 * Beside the JSON Schema keywords, a schema may carry the wording of its refusal: `x-message` (the whole
 * message for this value), `x-pattern-message` (a string that fails its pattern), `x-unknown` (a property
 * an object doesn't know) and `x-whole` (a failure anywhere inside is reported here). OpenAPI ignores them.
 */
import { type Static, type TObject, type TProperties, type TSchema, Type } from '@sinclair/typebox';
import { FormatRegistry } from '@sinclair/typebox';
import { PROVIDER_KINDS } from '../providers/registry.js';
import { PRICE_COLUMNS } from './price.js';

// A timestamp is what `new Date()` can read (ISO-8601 in practice), as the database column takes it.
if (!FormatRegistry.Has('date-time'))
  FormatRegistry.Set('date-time', (v) => !Number.isNaN(new Date(v).getTime()));

export const CODE_RE = /^[a-zA-Z0-9][a-zA-Z0-9._:-]{0,63}$/;
const CODE_MSG = 'letters, digits, . _ : - (1-64 characters, starting with a letter or digit)';

/** A non-empty string of at most `max` characters. */
const str = (max = 256, opts: Record<string, unknown> = {}) =>
  Type.String({ minLength: 1, maxLength: max, ...opts });
const code = (description?: string) =>
  str(64, {
    pattern: CODE_RE.source,
    'x-pattern-message': CODE_MSG,
    ...(description ? { description } : {}),
  });
const int = (minimum: number, maximum: number, opts: Record<string, unknown> = {}) =>
  Type.Integer({ minimum, maximum, ...opts });
const num = (minimum: number, maximum: number) => Type.Number({ minimum, maximum });
const oneOf = <T extends string>(values: readonly T[], message: string, description?: string) =>
  Type.Union(
    values.map((v) => Type.Literal(v)),
    { 'x-message': message, ...(description ? { description } : {}) },
  );

const When = Type.Union([Type.String({ format: 'date-time' }), Type.Number(), Type.Null()], {
  'x-message': 'must be an ISO-8601 timestamp or null',
});
/** Money and other large integers: a JSON integer or a digit string (for values past 2^53). */
const BigIntIn = (message: string) =>
  Type.Union([int(0, Number.MAX_SAFE_INTEGER), Type.String({ pattern: '^\\d{1,18}$' })], {
    'x-message': message,
    description: 'integer micro-units: a JSON integer or a digit string',
  });
const BIGINT_MSG = 'must be a non-negative integer (a JSON integer or a digit string)';
/** Money as the API answers it: always a digit string (bigint). */
export const MoneyOut = Type.String({ pattern: '^\\d+$', description: 'integer micro-units' });

const window = {
  effective_from: Type.Optional(When),
  effective_to: Type.Optional(When),
};
/** What every versioned row answers with besides its fields. */
const versioned = {
  version_no: Type.Integer({ description: 'Optimistic lock: send it back in If-Match on PATCH/DELETE' }),
  effective_from: Type.String({ format: 'date-time' }),
  effective_to: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  created_at: Type.String({ format: 'date-time' }),
  updated_at: Type.String({ format: 'date-time' }),
  deleted_at: Type.Optional(Type.String({ format: 'date-time', description: 'only with include_deleted' })),
};

// ---- channel ----

const timeouts = Type.Object(
  {
    connectMs: Type.Optional(num(1, 600_000)),
    firstByteMs: Type.Optional(num(1, 3_600_000)),
    idleMs: Type.Optional(num(1, 3_600_000)),
    totalMs: Type.Optional(num(1, 86_400_000)),
  },
  { additionalProperties: false, 'x-unknown': 'is not a known setting' },
);
const breaker = Type.Object(
  {
    windowMs: Type.Optional(num(100, 86_400_000)),
    minCalls: Type.Optional(num(1, 1_000_000)),
    failureRate: Type.Optional(num(0, 1)),
    slowCallMs: Type.Optional(num(1, 3_600_000)),
    slowCallRate: Type.Optional(num(0, 1)),
    openMs: Type.Optional(num(1, 86_400_000)),
    halfOpenProbes: Type.Optional(num(1, 1000)),
    probeTimeoutMs: Type.Optional(num(1, 3_600_000)),
  },
  { additionalProperties: false, 'x-unknown': 'is not a known setting' },
);
export const ChannelSettings = Type.Object(
  {
    timeouts: Type.Optional(timeouts),
    breaker: Type.Optional(breaker),
    headers: Type.Optional(
      Type.Record(Type.String(), Type.String(), {
        'x-message': 'must map header names to strings',
        'x-whole': true,
      }),
    ),
    maxConnections: Type.Optional(int(1, 10_000)),
    nativeResponses: Type.Optional(Type.Boolean()),
    apiVersion: Type.Optional(
      str(64, {
        pattern: '^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$|^(preview|latest)$',
        'x-pattern-message': 'must be an Azure api-version such as 2024-10-21 or 2025-04-01-preview',
        description: 'azure channels in deployments mode: the api-version query parameter',
      }),
    ),
    vertex: Type.Optional(
      Type.Object(
        {
          project: Type.Optional(
            str(128, { description: "the Google Cloud project (default: the key file's project_id)" }),
          ),
          location: Type.Optional(
            str(64, {
              pattern: '^[a-z0-9-]+$',
              'x-pattern-message': 'must be a Google Cloud location such as us-east5 or global',
              description: 'default: read from the base URL host, else us-central1',
            }),
          ),
          publisher: Type.Optional(
            oneOf(
              ['google', 'anthropic'] as const,
              'must be google or anthropic',
              'for model names that do not say (default: claude-* anthropic, else google)',
            ),
          ),
        },
        { additionalProperties: false, 'x-unknown': 'is not a known vertex setting' },
      ),
    ),
  },
  { additionalProperties: false, 'x-unknown': 'is not a known setting' },
);

const PROVIDER_MSG = `unknown provider kind {value}; known: ${PROVIDER_KINDS.join(', ')} (GET /api/admin/v1/provider-kinds)`;
const provider = oneOf(PROVIDER_KINDS, PROVIDER_MSG, 'a kind from GET /provider-kinds');

export const ChannelCreate = Type.Object(
  {
    code: code('how aliases and the API name the channel'),
    name: Type.Optional(str(256, { description: 'defaults to the code' })),
    provider,
    base_url: str(2048, {
      pattern: '^[hH][tT][tT][pP][sS]?://',
      'x-pattern-message': 'must be an absolute http(s) URL',
      description: "what you'd give the provider's SDK as baseURL",
    }),
    credential: Type.Optional(
      Type.String({ writeOnly: true, 'x-message': 'must be a string', description: 'stored sealed' }),
    ),
    enabled: Type.Optional(Type.Boolean()),
    weight: Type.Optional(int(0, 1_000_000)),
    settings: Type.Optional(ChannelSettings),
    ...window,
  },
  { additionalProperties: false },
);

export const Channel = Type.Object({
  id: Type.String(),
  code: Type.String(),
  name: Type.String(),
  provider: oneOf(PROVIDER_KINDS, PROVIDER_MSG, 'a kind from GET /provider-kinds'),
  base_url: Type.String(),
  credential_set: Type.Boolean(),
  credential_hint: Type.Union([Type.String(), Type.Null()], {
    description: 'last 4 characters; the credential itself is never returned',
  }),
  credential_encrypted: Type.Boolean(),
  enabled: Type.Boolean(),
  weight: Type.Integer(),
  settings: ChannelSettings,
  ...versioned,
});

// ---- alias ----

export const ChainTarget = Type.Object({
  channel: str(64),
  model: str(256),
  weight: Type.Optional(int(0, 1_000_000, { default: 1 })),
});
export const Chain = Type.Array(
  Type.Object({
    targets: Type.Array(ChainTarget, { minItems: 1, 'x-message': 'must be a non-empty array' }),
  }),
  {
    minItems: 1,
    'x-message': 'must be a non-empty array of tiers',
    description: 'ordered fallback tiers; within a tier, targets are picked by weight',
  },
);

export const AliasCreate = Type.Object(
  {
    name: str(128, { pattern: '^[^\\s]+$', 'x-pattern-message': 'must not contain whitespace' }),
    description: Type.Optional(
      Type.String({ 'x-message': 'must be a string', description: 'kept to 1000 characters' }),
    ),
    enabled: Type.Optional(Type.Boolean()),
    chain: Chain,
    max_attempts: Type.Optional(int(1, 20)),
    deadline_ms: Type.Optional(int(100, 3_600_000)),
    cache_ttl_s: Type.Optional(
      int(0, 2_592_000, { description: 'exact-match response cache: seconds an answer is kept (0 = off)' }),
    ),
    ...window,
  },
  { additionalProperties: false },
);

export const Alias = Type.Object({
  id: Type.String(),
  name: Type.String(),
  description: Type.Union([Type.String(), Type.Null()]),
  enabled: Type.Boolean(),
  chain: Type.Array(
    Type.Object({
      targets: Type.Array(
        Type.Object({ channel: Type.String(), model: Type.String(), weight: Type.Integer() }),
      ),
    }),
  ),
  max_attempts: Type.Integer(),
  deadline_ms: Type.Integer(),
  cache_ttl_s: Type.Integer({
    description: 'exact-match response cache: seconds an answer is kept (0 = off)',
  }),
  ...versioned,
});

// ---- app ----

const billing = oneOf(['prepaid', 'postpaid'] as const, "must be 'prepaid' or 'postpaid'");
/**
 * An app's markup over catalogue list prices, written like the default_sale_markup setting: a decimal
 * string, at most 4 decimals (rates are marked up in basis points, rounded up; config/catalogue.ts).
 */
const SaleMarkup = Type.Union([Type.String({ pattern: '^[0-9]{1,6}(\\.[0-9]{1,4})?$' }), Type.Null()], {
  'x-message': "must be a decimal string such as '1.5' (at most 4 decimals), or null",
  description:
    "sale = catalogue cost x this, for an alias without a price row ('1.5' = x1.5); null = the default markup",
});
export const AppCreate = Type.Object(
  {
    id: Type.Optional(code('generated when absent')),
    name: str(),
    enabled: Type.Optional(Type.Boolean()),
    billing: Type.Optional(billing),
    sale_markup: Type.Optional(SaleMarkup),
    ...window,
  },
  { additionalProperties: false },
);
export const App = Type.Object({
  id: Type.String(),
  name: Type.String(),
  enabled: Type.Boolean(),
  billing,
  sale_markup: Type.Union([Type.String(), Type.Null()], {
    description: "markup over catalogue list prices ('1.5' = x1.5); null = the default markup",
  }),
  ...versioned,
});

// ---- api key ----

const queueMode = oneOf(['REJECT', 'WAIT', 'ASYNC'] as const, "must be 'REJECT', 'WAIT' or 'ASYNC'");
export const KeyCreate = Type.Object(
  {
    name: Type.Optional(
      Type.String({ maxLength: 256, 'x-message': 'must be a string of at most 256 characters' }),
    ),
    enabled: Type.Optional(Type.Boolean()),
    allowed_aliases: Type.Optional(
      Type.Union([Type.Array(Type.String()), Type.Null()], {
        'x-message': 'must be an array of alias names or null',
      }),
    ),
    queue_mode: Type.Optional(queueMode),
    wait_timeout_ms: Type.Optional(int(1, 3_600_000)),
    max_queue: Type.Optional(int(1, 1_000_000)),
    token_group_id: Type.Optional(
      Type.Union([str(64), Type.Null()], { 'x-message': 'must be a non-empty string or null' }),
    ),
    webhook_url: Type.Optional(
      Type.Union([str(2048, { pattern: '^https?://' }), Type.Null()], {
        'x-message': 'must be an http(s) URL',
      }),
    ),
    webhook_secret: Type.Optional(
      Type.Union([str(256, { writeOnly: true }), Type.Null()], {
        'x-message': 'must be a non-empty string of at most 256 characters, or null',
      }),
    ),
    ...window,
  },
  { additionalProperties: false },
);
export const Key = Type.Object({
  id: Type.String(),
  app_id: Type.String(),
  name: Type.String(),
  key_prefix: Type.String(),
  enabled: Type.Boolean(),
  allowed_aliases: Type.Union([Type.Array(Type.String()), Type.Null()]),
  queue_mode: queueMode,
  wait_timeout_ms: Type.Integer(),
  max_queue: Type.Integer(),
  token_group_id: Type.Union([Type.String(), Type.Null()]),
  webhook_url: Type.Union([Type.String(), Type.Null()]),
  webhook_secret_set: Type.Boolean(),
  ...versioned,
});

// ---- quota ----

const scope = oneOf(['key', 'app', 'token_group'] as const, "must be 'key', 'app' or 'token_group'");
export const QuotaCreate = Type.Object(
  {
    scope,
    scope_id: str(64),
    max_concurrency: Type.Optional(int(0, 1_000_000)),
    qps: Type.Optional(num(0, 1_000_000)),
    qps_burst: Type.Optional(int(0, 1_000_000)),
    tokens_per_minute: Type.Optional(int(0, Number.MAX_SAFE_INTEGER)),
    tokens_per_day: Type.Optional(int(0, Number.MAX_SAFE_INTEGER)),
    cost_per_day: Type.Optional(BigIntIn(BIGINT_MSG)),
    cost_per_month: Type.Optional(BigIntIn(BIGINT_MSG)),
    ...window,
  },
  { additionalProperties: false },
);
export const Quota = Type.Object({
  id: Type.String(),
  scope,
  scope_id: Type.String(),
  max_concurrency: Type.Integer(),
  qps: Type.Number(),
  qps_burst: Type.Integer(),
  tokens_per_minute: Type.Integer(),
  tokens_per_day: Type.Integer(),
  cost_per_day: MoneyOut,
  cost_per_month: MoneyOut,
  ...versioned,
});

// ---- token group ----

export const TokenGroupCreate = Type.Object(
  {
    id: code(),
    name: str(),
    price_multiplier_ppm: Type.Optional(BigIntIn(BIGINT_MSG)),
    enabled: Type.Optional(Type.Boolean()),
    ...window,
  },
  { additionalProperties: false },
);
export const TokenGroup = Type.Object({
  id: Type.String(),
  name: Type.String(),
  price_multiplier_ppm: MoneyOut,
  enabled: Type.Boolean(),
  ...versioned,
});

// ---- price ----

const PRICE_MSG = 'must be a non-negative integer number of micro-units (a JSON integer or a digit string)';
export const PriceCreate = Type.Object(
  {
    alias: str(128),
    channel: Type.Optional(
      Type.Union([str(64), Type.Null()], {
        'x-message': 'must be a non-empty string or null',
        description: 'null: any channel of the alias (a channel-specific row wins)',
      }),
    ),
    ...Object.fromEntries(PRICE_COLUMNS.map((c) => [c, Type.Optional(BigIntIn(PRICE_MSG))])),
    ...window,
  },
  { additionalProperties: false },
);
export const Price = Type.Object({
  id: Type.String(),
  alias: Type.String(),
  channel: Type.Union([Type.String(), Type.Null()]),
  ...Object.fromEntries(PRICE_COLUMNS.map((c) => [c, MoneyOut])),
  ...versioned,
});

// ---- per entity ----

export type Entity = 'channel' | 'alias' | 'app' | 'api_key' | 'quota' | 'token_group' | 'price';

/** The fields that name a row: a create sets them, a PATCH can't change them. */
const IMMUTABLE: Record<Entity, string[]> = {
  channel: ['code'],
  alias: ['name'],
  app: ['id'],
  api_key: [],
  quota: ['scope', 'scope_id'],
  token_group: ['id'],
  price: ['alias', 'channel'],
};

/** A PATCH body: every field optional, the naming ones gone, and the version read (or send If-Match). */
function patchOf<T extends TProperties>(create: TObject<T>, entity: Entity) {
  const props: TProperties = {};
  for (const [k, s] of Object.entries(create.properties))
    if (!IMMUTABLE[entity].includes(k)) props[k] = Type.Optional(s as TSchema);
  props.version_no = Type.Optional(
    Type.Integer({ description: 'the version you read (alternative to If-Match)' }),
  );
  return Type.Object(props, { additionalProperties: false });
}

export const ChannelPatch = patchOf(ChannelCreate, 'channel');
export const AliasPatch = patchOf(AliasCreate, 'alias');
export const AppPatch = patchOf(AppCreate, 'app');
export const KeyPatch = patchOf(KeyCreate, 'api_key');
export const QuotaPatch = patchOf(QuotaCreate, 'quota');
export const TokenGroupPatch = patchOf(TokenGroupCreate, 'token_group');
export const PricePatch = patchOf(PriceCreate, 'price');

/** Every admin resource: its write schemas (create, patch) and the row the API answers with. */
export const RESOURCES = {
  channel: { name: 'Channel', create: ChannelCreate, patch: ChannelPatch, row: Channel },
  alias: { name: 'Alias', create: AliasCreate, patch: AliasPatch, row: Alias },
  app: { name: 'App', create: AppCreate, patch: AppPatch, row: App },
  api_key: { name: 'Key', create: KeyCreate, patch: KeyPatch, row: Key },
  quota: { name: 'Quota', create: QuotaCreate, patch: QuotaPatch, row: Quota },
  token_group: { name: 'TokenGroup', create: TokenGroupCreate, patch: TokenGroupPatch, row: TokenGroup },
  price: { name: 'Price', create: PriceCreate, patch: PricePatch, row: Price },
} satisfies Record<Entity, { name: string; create: TObject; patch: TObject; row: TObject }>;

export type ChannelCreate = Static<typeof ChannelCreate>;
export type ChannelPatch = Static<typeof ChannelPatch>;
export type Channel = Static<typeof Channel>;
export type AliasCreate = Static<typeof AliasCreate>;
export type Alias = Static<typeof Alias>;
export type AppCreate = Static<typeof AppCreate>;
export type App = Static<typeof App>;
export type KeyCreate = Static<typeof KeyCreate>;
export type Key = Static<typeof Key>;
export type QuotaCreate = Static<typeof QuotaCreate>;
export type Quota = Static<typeof Quota>;
export type TokenGroupCreate = Static<typeof TokenGroupCreate>;
export type TokenGroup = Static<typeof TokenGroup>;
export type PriceCreate = Static<typeof PriceCreate>;
export type Price = Static<typeof Price>;
