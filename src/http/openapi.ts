/**
 * The OpenAPI 3.1 description of the admin API, built from one route table (so the document and the
 * routes are checked against each other by a test), and a self-contained HTML reference page.
 */
import { PRICE_UNITS } from '../config/price.js';
import { PROVIDER_KINDS } from '../providers/registry.js';

type Schema = Record<string, unknown>;

const versioned: Schema = {
  version_no: { type: 'integer', description: 'Optimistic lock: send it back in If-Match on PATCH/DELETE' },
  effective_from: { type: 'string', format: 'date-time' },
  effective_to: { type: ['string', 'null'], format: 'date-time' },
  created_at: { type: 'string', format: 'date-time' },
  updated_at: { type: 'string', format: 'date-time' },
};
const obj = (properties: Schema, required: string[] = []): Schema => ({
  type: 'object',
  properties,
  ...(required.length ? { required } : {}),
});
const money = { type: 'string', pattern: '^\\d+$', description: 'integer micro-units' };
const UNITS = PRICE_UNITS;

const SCHEMAS: Record<string, Schema> = {
  Error: obj({
    error: obj({
      message: { type: 'string' },
      type: { type: 'string' },
      param: { type: ['string', 'null'] },
      code: { type: 'string' },
      current: { type: 'object', description: 'on 409 version_conflict: the row as it is now' },
      outcome: {
        enum: ['not_applied', 'unknown'],
        description:
          "on a 503 to a write: 'not_applied' nothing changed; 'unknown' the connection died during the commit (re-read before retrying)",
      },
    }),
  }),
  Pending: obj({
    propagation: {
      ...obj({ published: { const: false }, within_ms: { type: 'integer' } }, ['published', 'within_ms']),
      description:
        'only when the change committed but its invalidation could not be published (Redis down): in force on the answering instance now, on the others within within_ms (their config refresh TTL)',
    },
    audit: {
      enum: ['deferred', 'dropped'],
      description:
        "only when the action took effect but its audit row could not be written (database down): 'deferred' it is queued and written once the database is back; 'dropped' the queue was full and the row is in the gateway's log only",
    },
  }),
  ProviderKinds: obj({
    data: {
      type: 'array',
      items: obj({
        kind: { type: 'string' },
        description: { type: 'string' },
        native_dialects: { type: 'array', items: { type: 'string' } },
        dialects: { type: 'array', items: { type: 'string' } },
        error_shape: { enum: ['openai', 'anthropic', 'google'] },
        auth: { enum: ['bearer', 'x-api-key', 'api-key', 'x-goog-api-key', 'query'] },
        quirks: { type: 'object', description: 'rename, refuse, drop, defaults applied on the OpenAI base' },
      }),
    },
  }),
  Channel: obj({
    id: { type: 'string' },
    code: { type: 'string' },
    name: { type: 'string' },
    provider: { enum: [...PROVIDER_KINDS], description: 'a kind from GET /provider-kinds' },
    base_url: { type: 'string', description: "what you'd give the provider's SDK as baseURL" },
    credential_set: { type: 'boolean' },
    credential_hint: {
      type: ['string', 'null'],
      description: 'last 4 characters; the credential itself is never returned',
    },
    credential_encrypted: { type: 'boolean' },
    enabled: { type: 'boolean' },
    weight: { type: 'integer' },
    settings: obj({
      timeouts: { type: 'object' },
      breaker: { type: 'object' },
      headers: { type: 'object' },
      maxConnections: { type: 'integer' },
    }),
    ...versioned,
  }),
  ChannelWrite: obj({
    code: { type: 'string' },
    name: { type: 'string' },
    provider: { enum: [...PROVIDER_KINDS], description: 'a kind from GET /provider-kinds' },
    base_url: { type: 'string' },
    credential: { type: 'string', writeOnly: true },
    enabled: { type: 'boolean' },
    weight: { type: 'integer' },
    settings: { type: 'object' },
    effective_from: { type: 'string' },
    effective_to: { type: ['string', 'null'] },
  }),
  Alias: obj({
    id: { type: 'string' },
    name: { type: 'string' },
    description: { type: 'string' },
    enabled: { type: 'boolean' },
    chain: {
      type: 'array',
      items: obj({
        targets: {
          type: 'array',
          items: obj({ channel: { type: 'string' }, model: { type: 'string' }, weight: { type: 'integer' } }),
        },
      }),
    },
    max_attempts: { type: 'integer' },
    deadline_ms: { type: 'integer' },
    cache_ttl_s: {
      type: 'integer',
      description: 'exact-match response cache: seconds an answer is kept (0 = off)',
    },
    ...versioned,
  }),
  App: obj({
    id: { type: 'string' },
    name: { type: 'string' },
    enabled: { type: 'boolean' },
    billing: { enum: ['prepaid', 'postpaid'] },
    ...versioned,
  }),
  Key: obj({
    id: { type: 'string' },
    app_id: { type: 'string' },
    name: { type: 'string' },
    key_prefix: { type: 'string' },
    enabled: { type: 'boolean' },
    allowed_aliases: { type: ['array', 'null'], items: { type: 'string' } },
    queue_mode: { enum: ['REJECT', 'WAIT', 'ASYNC'] },
    wait_timeout_ms: { type: 'integer' },
    max_queue: { type: 'integer' },
    token_group_id: { type: ['string', 'null'] },
    webhook_url: { type: ['string', 'null'] },
    webhook_secret_set: { type: 'boolean' },
    ...versioned,
  }),
  KeyWithSecret: obj({
    key: { $ref: '#/components/schemas/Key' },
    sk: { type: 'string', description: 'shown once, here only' },
  }),
  Quota: obj({
    id: { type: 'string' },
    scope: { enum: ['key', 'app', 'token_group'] },
    scope_id: { type: 'string' },
    max_concurrency: { type: 'integer' },
    qps: { type: 'number' },
    qps_burst: { type: 'integer' },
    tokens_per_minute: { type: 'integer' },
    tokens_per_day: { type: 'integer' },
    cost_per_day: money,
    cost_per_month: money,
    ...versioned,
  }),
  TokenGroup: obj({
    id: { type: 'string' },
    name: { type: 'string' },
    price_multiplier_ppm: money,
    enabled: { type: 'boolean' },
    ...versioned,
  }),
  Price: obj({
    id: { type: 'string' },
    alias: { type: 'string' },
    channel: { type: ['string', 'null'] },
    ...Object.fromEntries(['cost', 'sale'].flatMap((s) => UNITS.map((u) => [`${s}_${u}`, money]))),
    ...versioned,
  }),
  Circuit: obj({
    channel: { type: 'string' },
    enabled: { type: 'boolean' },
    state: { enum: ['closed', 'open', 'half_open', 'forced_open'] },
    gen: { type: 'integer' },
    since: { type: ['string', 'null'] },
    open_until: { type: ['string', 'null'] },
    reason: { type: ['string', 'null'] },
    window: obj({ calls: { type: 'integer' }, failures: { type: 'integer' }, slow: { type: 'integer' } }),
    health: obj({
      cooldown_until: { type: ['string', 'null'] },
      credential: { enum: ['ok', 'exhausted', 'invalid'] },
    }),
  }),
  KillSwitch: obj({
    enabled: { type: 'boolean' },
    reason: { type: 'string' },
    at: { type: 'string' },
    by: { type: 'string' },
  }),
  AuditEntry: obj({
    id: { type: 'string' },
    at: { type: 'string' },
    actor: { type: 'string' },
    action: { type: 'string' },
    entity: { type: 'string' },
    entity_key: { type: 'string' },
    before: {},
    after: {},
    request_id: { type: ['string', 'null'] },
  }),
  AdminToken: obj({
    id: { type: 'string' },
    name: { type: 'string' },
    role: { enum: ['admin', 'viewer'] },
    token_prefix: { type: 'string' },
    enabled: { type: 'boolean' },
    created_at: { type: 'string' },
  }),
  Fund: obj({ amount_micros: money, idempotency_key: { type: 'string' }, memo: { type: 'string' } }, [
    'amount_micros',
  ]),
  Wallet: obj({
    app_id: { type: 'string' },
    ledger_balance_micros: money,
    funded_micros: money,
    spent_micros: money,
    unwritten_micros: { type: ['string', 'null'] },
    reserved_micros: { type: ['string', 'null'] },
    spendable_micros: { type: 'string' },
    journal_id: { type: 'string' },
    duplicate: { type: 'boolean' },
  }),
  TrialBalance: obj({
    balanced: { type: 'boolean' },
    debits_micros: money,
    credits_micros: money,
    pending_debits_micros: money,
    pending_credits_micros: money,
    mismatches: { type: 'array', items: {} },
    accounts: { type: 'array', items: {} },
  }),
  BillingStatus: obj({
    backend: { enum: ['redis', 'memory'] },
    queued: { type: 'integer' },
    spilled: { type: 'integer' },
    unconfirmed: { type: 'integer' },
    oldest_unjournaled_seconds: { type: 'number' },
    stuck: { type: 'boolean' },
    resent: { type: 'integer' },
    written_by_this_instance: { type: 'integer' },
    blocked: { type: 'boolean' },
  }),
  List: obj({
    data: { type: 'array', items: {} },
    total: { type: 'integer' },
    limit: { type: 'integer' },
    offset: { type: 'integer' },
  }),
  WhoAmI: obj({ id: { type: 'string' }, name: { type: 'string' }, role: { enum: ['admin', 'viewer'] } }),
  StatsSeries: obj({
    instance: { type: 'boolean', description: "always true: these figures are the answering instance's own" },
    step_s: { type: 'integer' },
    minutes: { type: 'integer' },
    from: { type: 'integer', description: 'ms since epoch' },
    to: { type: 'integer' },
    points: { type: 'array', items: { $ref: '#/components/schemas/StatsPoint' } },
    totals: { $ref: '#/components/schemas/StatsPoint' },
  }),
  StatsPoint: obj({
    t: { type: 'integer', description: "start of the point's period, ms since epoch" },
    requests: { type: 'integer' },
    ok: { type: 'integer' },
    client_errors: { type: 'integer', description: '4xx (429 included)' },
    rate_limited: { type: 'integer' },
    server_errors: { type: 'integer', description: '5xx' },
    error_rate: { type: 'number', description: 'server_errors / requests' },
    p50_ms: { type: ['number', 'null'] },
    p99_ms: { type: ['number', 'null'] },
    overhead_p50_ms: { type: ['number', 'null'], description: 'total minus time waiting on upstreams' },
    overhead_p99_ms: { type: ['number', 'null'] },
    sale_micros: money,
    cost_micros: money,
  }),
  Queues: obj({
    at: { type: 'string' },
    waiting_here: { type: 'integer', description: 'requests waiting in a WAIT queue on this instance' },
    keys: {
      type: 'array',
      items: obj({
        key_id: { type: 'string' },
        app_id: { type: 'string' },
        name: { type: 'string' },
        key_prefix: { type: 'string' },
        waiting: { type: ['integer', 'null'] },
      }),
    },
    truncated: { type: 'boolean' },
    tasks: { type: ['object', 'null'], description: 'active tasks by status' },
    tasks_by_kind: { type: ['object', 'null'] },
  }),
  Task: obj({
    id: { type: 'string' },
    kind: { type: 'string' },
    status: { enum: ['queued', 'submitted', 'running', 'succeeded', 'failed', 'cancelled', 'expired'] },
    app_id: { type: 'string' },
    key_id: { type: 'string' },
    alias: { type: ['string', 'null'] },
    channel: { type: ['string', 'null'] },
    attempts: { type: 'integer' },
    progress: { type: 'integer' },
    created_at: { type: 'string' },
    completed_at: { type: ['string', 'null'] },
    deadline: { type: 'string' },
    transitions: { type: 'array', items: {} },
    request: { description: 'GET /tasks/{id} only' },
    result: {},
    error: {},
  }),
};

/** What a write may leave pending after it took effect (see the Pending schema and the Anima-* headers). */
type Pendable = 'propagation' | 'audit';

interface Route {
  method: 'get' | 'post' | 'patch' | 'delete';
  path: string;
  summary: string;
  tag: string;
  body?: string;
  ok: [number, string | null];
  query?: string[];
  ifMatch?: boolean;
  pending?: Pendable[];
}

const PROPAGATION: Pendable[] = ['propagation'];
const AUDIT: Pendable[] = ['audit'];
const BOTH: Pendable[] = ['propagation', 'audit'];

function crud(
  tag: string,
  base: string,
  param: string,
  schema: string,
  write: string,
  query: string[],
  versions = false,
): Route[] {
  const one = `${base}/{${param}}`;
  return [
    {
      method: 'get',
      path: base,
      summary: `List ${tag.toLowerCase()}`,
      tag,
      ok: [200, 'List'],
      query: [...query, 'limit', 'offset', 'include_deleted'],
    },
    {
      method: 'post',
      path: base,
      summary: `Create`,
      tag,
      body: write,
      ok: [201, schema],
      pending: PROPAGATION,
    },
    {
      method: 'get',
      path: one,
      summary: `Get one (the version in force; ?version_id= for another)`,
      tag,
      ok: [200, schema],
      query: ['version_id'],
    },
    ...(versions
      ? [
          {
            method: 'get' as const,
            path: `${one}/versions`,
            summary: 'All versions (effective windows)',
            tag,
            ok: [200, 'List'] as [number, string],
          },
        ]
      : []),
    {
      method: 'patch',
      path: one,
      summary: 'Update (If-Match: the version_no you read)',
      tag,
      body: write,
      ok: [200, schema],
      ifMatch: true,
      query: ['version_id'],
      pending: PROPAGATION,
    },
    {
      method: 'delete',
      path: one,
      summary: 'Soft delete (If-Match or ?version_no=)',
      tag,
      ok: [204, null],
      ifMatch: true,
      query: ['version_no'],
      pending: PROPAGATION,
    },
  ];
}

export const ADMIN_ROUTES: Route[] = [
  ...crud('Channels', '/channels', 'code', 'Channel', 'ChannelWrite', ['provider', 'enabled', 'code'], true),
  {
    method: 'post',
    path: '/channels/{code}/health/reset',
    summary: 'Clear a 429 cooldown or a credential marked exhausted/invalid',
    tag: 'Channels',
    ok: [200, null],
    pending: AUDIT,
  },
  {
    method: 'get',
    path: '/provider-kinds',
    summary:
      'The provider kinds a channel may name, from the provider registry: dialects, auth style, quirks',
    tag: 'Channels',
    ok: [200, 'ProviderKinds'],
  },
  ...crud('Aliases', '/aliases', 'name', 'Alias', 'Alias', ['enabled', 'name'], true),
  ...crud('Quotas', '/quotas', 'id', 'Quota', 'Quota', ['scope', 'scope_id']),
  ...crud('Token groups', '/token-groups', 'id', 'TokenGroup', 'TokenGroup', ['enabled']),
  ...crud('Prices', '/prices', 'id', 'Price', 'Price', ['alias', 'channel']),
  ...crud('Apps', '/apps', 'id', 'App', 'App', ['enabled']).filter((r) => !r.path.endsWith('/versions')),
  {
    method: 'get',
    path: '/apps/{id}/keys',
    summary: "An app's keys (never their secrets)",
    tag: 'Keys',
    ok: [200, 'List'],
    query: ['enabled', 'limit', 'offset'],
  },
  {
    method: 'post',
    path: '/apps/{id}/keys',
    summary: 'Create a key: the sk is in this answer only',
    tag: 'Keys',
    body: 'Key',
    ok: [201, 'KeyWithSecret'],
    pending: PROPAGATION,
  },
  { method: 'get', path: '/apps/{id}/keys/{kid}', summary: 'Get a key', tag: 'Keys', ok: [200, 'Key'] },
  {
    method: 'patch',
    path: '/apps/{id}/keys/{kid}',
    summary: 'Update a key (enabled=false bans it on every instance)',
    tag: 'Keys',
    body: 'Key',
    ok: [200, 'Key'],
    ifMatch: true,
    pending: PROPAGATION,
  },
  {
    method: 'delete',
    path: '/apps/{id}/keys/{kid}',
    summary: 'Soft delete a key',
    tag: 'Keys',
    ok: [204, null],
    ifMatch: true,
    query: ['version_no'],
    pending: PROPAGATION,
  },
  {
    method: 'post',
    path: '/apps/{id}/keys/{kid}/rotate',
    summary: 'New secret for a key; the old one stops working at once',
    tag: 'Keys',
    ok: [200, 'KeyWithSecret'],
    ifMatch: true,
    pending: PROPAGATION,
  },
  {
    method: 'get',
    path: '/keys',
    summary: 'Find keys by prefix across apps',
    tag: 'Keys',
    ok: [200, 'List'],
    query: ['prefix', 'limit', 'offset'],
  },
  {
    method: 'get',
    path: '/circuits',
    summary: "Every channel's breaker: state, since, window counts, health",
    tag: 'Escape hatches',
    ok: [200, 'List'],
  },
  {
    method: 'post',
    path: '/circuits/{channel}/open',
    summary: 'Force a breaker open until closed (body: {reason?})',
    tag: 'Escape hatches',
    ok: [200, 'Circuit'],
    pending: AUDIT,
  },
  {
    method: 'post',
    path: '/circuits/{channel}/close',
    summary: 'Close a breaker',
    tag: 'Escape hatches',
    ok: [200, 'Circuit'],
    pending: AUDIT,
  },
  {
    method: 'post',
    path: '/circuits/{channel}/reset',
    summary: 'Reset a breaker (closed, window forgotten)',
    tag: 'Escape hatches',
    ok: [200, 'Circuit'],
    pending: AUDIT,
  },
  {
    method: 'post',
    path: '/cache/invalidate',
    summary: 'Reload a config table (or all) on every instance (body: {table?, key?})',
    tag: 'Escape hatches',
    ok: [200, null],
    pending: BOTH,
  },
  {
    method: 'get',
    path: '/kill-switch',
    summary: 'Is the data plane stopped?',
    tag: 'Escape hatches',
    ok: [200, 'KillSwitch'],
  },
  {
    method: 'post',
    path: '/kill-switch',
    summary: 'Stop (enabled=true) or resume the whole data plane: 503 gateway_disabled meanwhile',
    tag: 'Escape hatches',
    body: 'KillSwitch',
    ok: [200, 'KillSwitch'],
    pending: PROPAGATION,
  },
  {
    method: 'post',
    path: '/apps/{id}/wallet/fund',
    summary: 'Top up a prepaid wallet (idempotent by idempotency_key)',
    tag: 'Billing',
    body: 'Fund',
    ok: [200, 'Wallet'],
    pending: AUDIT,
  },
  {
    method: 'get',
    path: '/apps/{id}/wallet',
    summary: "An app's wallet: ledger balance, charged but unwritten, reserved by requests in flight",
    tag: 'Billing',
    ok: [200, 'Wallet'],
  },
  {
    method: 'get',
    path: '/billing/journals',
    summary: 'Ledger journals, newest first, with entries',
    tag: 'Billing',
    ok: [200, 'List'],
    query: ['app_id', 'request_id', 'kind', 'alias', 'channel', 'limit', 'offset'],
  },
  {
    method: 'get',
    path: '/billing/report',
    summary: 'Revenue, cost and spread by app, alias, channel and day',
    tag: 'Billing',
    ok: [200, 'List'],
    query: ['from', 'to', 'group_by'],
  },
  {
    method: 'get',
    path: '/billing/trial-balance',
    summary:
      'Debits vs credits over the whole ledger, and any account whose totals disagree with its entries',
    tag: 'Billing',
    ok: [200, 'TrialBalance'],
  },
  {
    method: 'get',
    path: '/billing/status',
    summary:
      'Journal writer: records queued, spilled, awaiting the ledger, written; stuck when journals stop',
    tag: 'Billing',
    ok: [200, 'BillingStatus'],
  },
  {
    method: 'get',
    path: '/audit',
    summary: 'Audit log: who changed what, before and after',
    tag: 'Audit',
    ok: [200, 'List'],
    query: ['entity', 'key', 'limit', 'offset'],
  },
  {
    method: 'get',
    path: '/admin-tokens',
    summary: 'Admin tokens (never the secrets)',
    tag: 'Admin tokens',
    ok: [200, 'List'],
  },
  {
    method: 'post',
    path: '/admin-tokens',
    summary: 'Create an admin or viewer token: shown once (body: {name, role})',
    tag: 'Admin tokens',
    ok: [201, 'AdminToken'],
    pending: BOTH,
  },
  {
    method: 'delete',
    path: '/admin-tokens/{id}',
    summary: 'Revoke an admin token',
    tag: 'Admin tokens',
    ok: [204, null],
    pending: BOTH,
  },
  {
    method: 'get',
    path: '/whoami',
    summary: 'The caller: token name and role (the console shows write controls to admins only)',
    tag: 'Console',
    ok: [200, 'WhoAmI'],
  },
  {
    method: 'get',
    path: '/stats/timeseries',
    summary:
      "This instance's traffic, error rate, p50/p99 latency, overhead, sale and cost over the last minutes (1-60), in steps of 10-600 s",
    tag: 'Console',
    ok: [200, 'StatsSeries'],
    query: ['minutes', 'step'],
  },
  {
    method: 'get',
    path: '/queues',
    summary: 'WAIT queue length of every WAIT-mode key with a limit, and active tasks by status',
    tag: 'Console',
    ok: [200, 'Queues'],
  },
  {
    method: 'get',
    path: '/events',
    summary: 'Server-sent events: a `snapshot` (circuits, queues, kill switch) every second',
    tag: 'Console',
    ok: [200, null],
  },
  {
    method: 'get',
    path: '/tasks',
    summary: 'Tasks across apps, newest first',
    tag: 'Tasks',
    ok: [200, 'List'],
    query: ['status', 'app_id', 'kind', 'limit', 'offset'],
  },
  {
    method: 'get',
    path: '/tasks/{id}',
    summary: 'One task with its request, transitions and lease',
    tag: 'Tasks',
    ok: [200, 'Task'],
  },
  {
    method: 'post',
    path: '/tasks/{id}/cancel',
    summary: 'Cancel an active task (forwarded upstream; its hold released)',
    tag: 'Tasks',
    ok: [200, 'Task'],
  },
  { method: 'get', path: '/openapi.json', summary: 'This document', tag: 'Reference', ok: [200, null] },
  { method: 'get', path: '/docs', summary: 'This reference as a page', tag: 'Reference', ok: [200, null] },
];

const ref = (n: string) => ({ $ref: `#/components/schemas/${n}` });
const errors = {
  '400': { description: 'invalid_request', content: { 'application/json': { schema: ref('Error') } } },
  '401': {
    description: 'missing_admin_token / invalid_admin_token',
    content: { 'application/json': { schema: ref('Error') } },
  },
  '403': {
    description: 'admin_forbidden (viewer token on a write)',
    content: { 'application/json': { schema: ref('Error') } },
  },
  '404': { description: 'not_found', content: { 'application/json': { schema: ref('Error') } } },
  '503': {
    description:
      'service_unavailable: the database is unreachable (a write changed nothing unless error.outcome is "unknown"); for breaker and channel-health writes, Redis is. Never a 500 for an outage.',
    content: { 'application/json': { schema: ref('Error') } },
  },
};

/** Headers on a 2xx whose change took effect but is not everywhere yet; the body says the same (Pending). */
const PENDING_HEADERS: Record<Pendable, [string, string]> = {
  propagation: [
    'Anima-Propagation',
    '`deferred; within=<ms>`: committed, but other instances were not told (Redis down); they see it within <ms>, their config refresh TTL. The answering instance already applies it.',
  ],
  audit: [
    'Anima-Audit',
    '`deferred`: done, its audit row is written once the database is back; `dropped`: in the gateway log only',
  ],
};

export function buildAdminOpenApi(): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of ADMIN_ROUTES) {
    const params = [...r.path.matchAll(/\{(\w+)\}/g)].map((m) => ({
      name: m[1],
      in: 'path',
      required: true,
      schema: { type: 'string' },
    }));
    for (const q of r.query ?? [])
      params.push({ name: q, in: 'query', required: false, schema: { type: 'string' } });
    if (r.ifMatch)
      params.push({ name: 'If-Match', in: 'header', required: false, schema: { type: 'string' } } as never);
    const pending = r.pending ?? [];
    // A JSON object answer gains the Pending fields when something is pending.
    const okSchema =
      r.ok[1] && pending.length ? { allOf: [ref(r.ok[1]), ref('Pending')] } : r.ok[1] && ref(r.ok[1]);
    const responses: Record<string, unknown> = {
      [String(r.ok[0])]: {
        description: 'OK',
        ...(okSchema ? { content: { 'application/json': { schema: okSchema } } } : {}),
        ...(pending.length
          ? {
              headers: Object.fromEntries(
                pending.map((p) => [
                  PENDING_HEADERS[p][0],
                  { description: PENDING_HEADERS[p][1], schema: { type: 'string' } },
                ]),
              ),
            }
          : {}),
      },
      ...errors,
    };
    if (r.ifMatch) {
      responses['409'] = {
        description: 'version_conflict (error.current holds the row as it is now) / window_overlap',
        content: { 'application/json': { schema: ref('Error') } },
      };
      responses['428'] = {
        description: 'version_required: no If-Match / version_no',
        content: { 'application/json': { schema: ref('Error') } },
      };
    }
    (paths[r.path] ??= {})[r.method] = {
      tags: [r.tag],
      summary: r.summary,
      operationId: `${r.method}${r.path.replace(/[{}]/g, '').replace(/[^a-zA-Z0-9]+(.)/g, (_, c: string) => c.toUpperCase())}`,
      parameters: params,
      ...(r.body
        ? {
            requestBody: {
              required: r.method === 'post',
              content: { 'application/json': { schema: ref(r.body) } },
            },
          }
        : {}),
      responses,
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Anima admin API',
      version: '1',
      description: 'Control plane of the Anima AI gateway. Bearer admin token; viewer tokens may only read.',
    },
    servers: [{ url: '/api/admin/v1' }],
    security: [{ bearer: [] }],
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } }, schemas: SCHEMAS },
    paths,
  };
}

const esc = (s: string) =>
  s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

/** A self-contained reference page (no external assets: gateways often run without internet). */
export function renderAdminDocs(): string {
  const tags = [...new Set(ADMIN_ROUTES.map((r) => r.tag))];
  const section = (t: string) =>
    `<h2 id="${esc(t)}">${esc(t)}</h2>` +
    ADMIN_ROUTES.filter((r) => r.tag === t)
      .map(
        (r) =>
          `<div class="op"><code class="m ${r.method}">${r.method.toUpperCase()}</code> <code>/api/admin/v1${esc(r.path)}</code><p>${esc(r.summary)}</p>` +
          (r.query?.length
            ? `<p class="q">query: ${r.query.map((q) => `<code>${esc(q)}</code>`).join(', ')}</p>`
            : '') +
          (r.body ? `<p class="q">body: <code>${esc(r.body)}</code></p>` : '') +
          `<pre>curl -X ${r.method.toUpperCase()} "$ANIMA/api/admin/v1${esc(r.path)}" -H "Authorization: Bearer $ADMIN_TOKEN"${r.ifMatch ? ' -H \'If-Match: "3"\'' : ''}${r.body ? " -H 'content-type: application/json' -d '{…}'" : ''}</pre></div>`,
      )
      .join('');
  return `<!doctype html><html><head><meta charset="utf-8"><title>Anima admin API</title><style>
body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
code{font:13px ui-monospace,monospace}.op{border-top:1px solid #ddd;padding:.6em 0}.m{padding:2px 6px;border-radius:4px;color:#fff}
.get{background:#2a7}.post{background:#27c}.patch{background:#c80}.delete{background:#c33}pre{background:#f5f5f5;padding:.5em;overflow:auto}.q{margin:.2em 0;color:#555}
</style></head><body><h1>Anima admin API</h1><p>Base <code>/api/admin/v1</code>. Every call needs <code>Authorization: Bearer &lt;admin token&gt;</code>; viewer tokens may only GET.
Errors: <code>{"error":{"message","type","param","code"}}</code>. Writes to versioned rows need <code>If-Match: "&lt;version_no&gt;"</code> (428 without, 409 when stale).
In an outage: 503 <code>service_unavailable</code> when the database (for breakers: Redis) is unreachable; a change that took effect but is not everywhere yet answers 2xx with <code>Anima-Propagation: deferred; within=&lt;ms&gt;</code> or <code>Anima-Audit: deferred</code> (and the same as <code>propagation</code> / <code>audit</code> fields in a JSON body).
Machine-readable: <a href="openapi.json">openapi.json</a>.</p><ul>${tags.map((t) => `<li><a href="#${esc(t)}">${esc(t)}</a></li>`).join('')}</ul>${tags.map(section).join('')}</body></html>`;
}
