/**
 * TypeBox schemas of the admin API's bodies that are not config rows (those are in config/schema.ts):
 * escape hatches, billing, tokens, the console's reads. The routes validate with them and the OpenAPI
 * document shows them, so neither can drift from the other.
 */
import { type Static, Type } from '@sinclair/typebox';
import { CONFIG_TABLES } from '../config/repo.js';
import { Key as KeyRow, MoneyOut } from '../config/schema.js';

const S = Type.String();
const NullableStr = Type.Union([Type.String(), Type.Null()]);
const Int = Type.Integer();

export const ErrorBody = Type.Object({
  error: Type.Object({
    message: S,
    type: S,
    param: NullableStr,
    code: S,
    current: Type.Optional(Type.Object({}, { description: 'on 409 version_conflict: the row as it is now' })),
    outcome: Type.Optional(
      Type.Union([Type.Literal('not_applied'), Type.Literal('unknown')], {
        description:
          "on a 503 to a write: 'not_applied' nothing changed; 'unknown' the connection died during the commit (re-read before retrying)",
      }),
    ),
  }),
});

export const Pending = Type.Object({
  propagation: Type.Optional(
    Type.Object(
      { published: Type.Literal(false), within_ms: Int },
      {
        description:
          'only when the change committed but its invalidation could not be published (Redis down): in force on the answering instance now, on the others within within_ms (their config refresh TTL)',
      },
    ),
  ),
  audit: Type.Optional(
    Type.Union([Type.Literal('deferred'), Type.Literal('dropped')], {
      description:
        "only when the action took effect but its audit row could not be written (database down): 'deferred' it is queued and written once the database is back; 'dropped' the queue was full and the row is in the gateway's log only",
    }),
  ),
});

export const ProviderKinds = Type.Object({
  data: Type.Array(
    Type.Object({
      kind: S,
      description: S,
      native_dialects: Type.Array(S),
      dialects: Type.Array(S),
      error_shape: Type.Union([Type.Literal('openai'), Type.Literal('anthropic'), Type.Literal('google')]),
      auth: Type.Union(
        ['bearer', 'x-api-key', 'api-key', 'x-goog-api-key', 'query', 'sigv4'].map((a) => Type.Literal(a)),
      ),
      quirks: Type.Object({}, { description: 'rename, refuse, drop, defaults applied on the OpenAI base' }),
    }),
  ),
});

export const CircuitAction = Type.Object({
  reason: Type.Optional(Type.String({ 'x-message': 'must be a string' })),
});

export const Circuit = Type.Object({
  channel: S,
  enabled: Type.Boolean(),
  state: Type.Union(['closed', 'open', 'half_open', 'forced_open'].map((s) => Type.Literal(s))),
  gen: Int,
  since: NullableStr,
  open_until: NullableStr,
  reason: NullableStr,
  window: Type.Object({ calls: Int, failures: Int, slow: Int }),
  health: Type.Object({
    cooldown_until: NullableStr,
    credential: Type.Union(['ok', 'exhausted', 'invalid'].map((s) => Type.Literal(s))),
  }),
});

/** The config tables, plus the admin tokens and `all`: what a cache invalidation may name. */
export const INVALIDATE_TABLES = [...CONFIG_TABLES, 'admin_token', 'all'] as const;
export const CacheInvalidate = Type.Object({
  table: Type.Optional(
    Type.Union(
      INVALIDATE_TABLES.map((t) => Type.Literal(t)),
      { 'x-message': `must be one of ${INVALIDATE_TABLES.join(', ')}`, default: 'all' },
    ),
  ),
  key: Type.Optional(Type.String({ 'x-message': 'must be a string', description: 'one entry of the table' })),
});
export const Invalidated = Type.Object({
  invalidated: Type.Object({ table: S, key: Type.Optional(S) }),
});

export const KillSwitchWrite = Type.Object({
  enabled: Type.Boolean({ 'x-message': 'must be a boolean', 'x-required': 'must be a boolean' }),
  reason: Type.Optional(
    Type.String({ 'x-message': 'must be a string', description: 'kept to 500 characters' }),
  ),
});
export const KillSwitch = Type.Object({
  enabled: Type.Boolean(),
  reason: Type.Optional(S),
  at: Type.Optional(S),
  by: Type.Optional(S),
});

export const AuditEntry = Type.Object({
  id: S,
  at: S,
  actor: S,
  action: S,
  entity: S,
  entity_key: S,
  before: Type.Unknown(),
  after: Type.Unknown(),
  request_id: NullableStr,
});

const role = Type.Union([Type.Literal('admin'), Type.Literal('viewer')], {
  'x-message': "must be 'admin' or 'viewer'",
  'x-required': "must be 'admin' or 'viewer'",
});
export const AdminTokenCreate = Type.Object({
  name: Type.String({ minLength: 1, 'x-message': 'is required' }),
  role,
});
export const AdminToken = Type.Object({
  id: S,
  name: S,
  role,
  token_prefix: S,
  enabled: Type.Boolean(),
  created_at: S,
});
export const AdminTokenCreated = Type.Object({
  id: S,
  name: S,
  role,
  token: Type.String({ description: 'shown once, here only' }),
});

export const Fund = Type.Object({
  amount_micros: Type.Union(
    [
      Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
      Type.String({ pattern: '^[1-9]\\d{0,17}$' }),
    ],
    {
      'x-message': 'must be a positive integer number of micro-units (a decimal string or a safe integer)',
      'x-required': 'must be a positive integer number of micro-units (a decimal string or a safe integer)',
    },
  ),
  idempotency_key: Type.Optional(
    Type.String({ minLength: 1, maxLength: 200, 'x-message': 'must be a string of 1..200 characters' }),
  ),
  memo: Type.Optional(
    Type.String({ 'x-message': 'must be a string', description: 'kept to 500 characters' }),
  ),
});
export const Wallet = Type.Object({
  app_id: S,
  ledger_balance_micros: MoneyOut,
  funded_micros: Type.Optional(MoneyOut),
  spent_micros: Type.Optional(MoneyOut),
  unwritten_micros: Type.Optional(NullableStr),
  reserved_micros: Type.Optional(NullableStr),
  spendable_micros: Type.Optional(S),
  owed_micros: Type.Optional(S),
  journal_id: Type.Optional(S),
  duplicate: Type.Optional(Type.Boolean()),
});

export const TrialBalance = Type.Object({
  balanced: Type.Boolean(),
  debits_micros: MoneyOut,
  credits_micros: MoneyOut,
  pending_debits_micros: MoneyOut,
  pending_credits_micros: MoneyOut,
  mismatches: Type.Array(Type.Object({ account: S, field: S, stored: MoneyOut, from_entries: MoneyOut })),
  accounts: Type.Array(
    Type.Object({
      code: S,
      kind: S,
      debits_posted: MoneyOut,
      credits_posted: MoneyOut,
      debits_pending: MoneyOut,
      credits_pending: MoneyOut,
    }),
  ),
});

export const BillingStatus = Type.Object({
  backend: Type.Union([Type.Literal('redis'), Type.Literal('memory')]),
  queued: Int,
  spilled: Int,
  unconfirmed: Int,
  oldest_unjournaled_seconds: Type.Number(),
  stuck: Type.Boolean(),
  resent: Int,
  written_by_this_instance: Int,
  blocked: Type.Boolean(),
});

export const List = Type.Object({
  data: Type.Array(Type.Unknown()),
  total: Type.Optional(Int),
  limit: Type.Optional(Int),
  offset: Type.Optional(Int),
});

export const WhoAmI = Type.Object({ id: S, name: S, role });

export const StatsPoint = Type.Object({
  t: Type.Integer({ description: "start of the point's period, ms since epoch" }),
  requests: Int,
  ok: Int,
  client_errors: Type.Integer({ description: '4xx (429 included)' }),
  rate_limited: Int,
  server_errors: Type.Integer({ description: '5xx' }),
  error_rate: Type.Number({ description: 'server_errors / requests' }),
  p50_ms: Type.Union([Type.Number(), Type.Null()]),
  p99_ms: Type.Union([Type.Number(), Type.Null()]),
  overhead_p50_ms: Type.Union([Type.Number(), Type.Null()], {
    description: 'total minus time waiting on upstreams',
  }),
  overhead_p99_ms: Type.Union([Type.Number(), Type.Null()]),
  sale_micros: MoneyOut,
  cost_micros: MoneyOut,
});
export const StatsSeries = Type.Object({
  scope: Type.Union([Type.Literal('cluster'), Type.Literal('instance')], {
    description:
      "cluster: summed over every live instance; instance: the answering one's own (Redis unreachable)",
  }),
  instances: Type.Integer({ description: 'how many instances the figures sum' }),
  step_s: Int,
  minutes: Int,
  from: Type.Integer({ description: 'ms since epoch' }),
  to: Int,
  points: Type.Array(StatsPoint),
  totals: StatsPoint,
});

export const Queues = Type.Object({
  at: S,
  waiting_here: Type.Integer({ description: 'requests waiting in a WAIT queue on this instance' }),
  keys: Type.Array(
    Type.Object({
      key_id: S,
      app_id: S,
      name: S,
      key_prefix: S,
      waiting: Type.Union([Int, Type.Null()]),
    }),
  ),
  truncated: Type.Boolean(),
  tasks: Type.Union([Type.Record(S, Int), Type.Null()], { description: 'active tasks by status' }),
  tasks_by_kind: Type.Union([Type.Record(S, Int), Type.Null()]),
});

export const Task = Type.Object({
  id: S,
  kind: S,
  status: Type.Union(
    ['queued', 'submitted', 'running', 'succeeded', 'failed', 'cancelled', 'expired'].map((s) =>
      Type.Literal(s),
    ),
  ),
  app_id: S,
  key_id: S,
  alias: NullableStr,
  channel: NullableStr,
  attempts: Int,
  progress: Int,
  created_at: S,
  completed_at: NullableStr,
  deadline: S,
  transitions: Type.Array(Type.Unknown()),
  request: Type.Optional(Type.Unknown({ description: 'GET /tasks/{id} only' })),
  result: Type.Optional(Type.Unknown()),
  error: Type.Optional(Type.Unknown()),
});

export type KillSwitchWrite = Static<typeof KillSwitchWrite>;
export type AdminTokenCreate = Static<typeof AdminTokenCreate>;
export type Fund = Static<typeof Fund>;
export type CacheInvalidate = Static<typeof CacheInvalidate>;
export type CircuitAction = Static<typeof CircuitAction>;

export const KeyWithSecret = Type.Object({
  key: KeyRow,
  sk: Type.String({ description: 'shown once, here only' }),
});
