/**
 * The OpenAPI 3.1 description of the admin API, built from one route table (so the document and the
 * routes are checked against each other by a test), and a self-contained HTML reference page. Every body
 * schema is a TypeBox object the API validates with (config/schema.ts, http/schemas.ts): the document
 * holds those very objects, so it changes when they do.
 */
import type { TSchema } from '@sinclair/typebox';
import { RESOURCES } from '../config/schema.js';
import * as http from './schemas.js';
import { NOTIFY_ROUTES, NOTIFY_SCHEMAS } from './admin-notify.js';
import { RequestLogEntry, RequestSummary } from './admin-requests.js';

/** components.schemas: the admin resources (row, create, patch) and the other bodies, by name. */
export const SCHEMAS: Record<string, TSchema> = {
  Error: http.ErrorBody,
  Pending: http.Pending,
  ProviderKinds: http.ProviderKinds,
  ...Object.fromEntries(
    Object.values(RESOURCES).flatMap((r) => [
      [r.name, r.row],
      [`${r.name}Create`, r.create],
      [`${r.name}Patch`, r.patch],
    ]),
  ),
  KeyWithSecret: http.KeyWithSecret,
  Circuit: http.Circuit,
  CircuitAction: http.CircuitAction,
  CacheInvalidate: http.CacheInvalidate,
  Invalidated: http.Invalidated,
  KillSwitch: http.KillSwitch,
  KillSwitchWrite: http.KillSwitchWrite,
  AuditEntry: http.AuditEntry,
  AdminToken: http.AdminToken,
  AdminTokenCreate: http.AdminTokenCreate,
  AdminTokenCreated: http.AdminTokenCreated,
  Fund: http.Fund,
  Wallet: http.Wallet,
  TrialBalance: http.TrialBalance,
  BillingStatus: http.BillingStatus,
  List: http.List,
  WhoAmI: http.WhoAmI,
  StatsSeries: http.StatsSeries,
  StatsPoint: http.StatsPoint,
  Queues: http.Queues,
  Task: http.Task,
  ...NOTIFY_SCHEMAS,
  RequestLogEntry,
  RequestSummary,
};

/** What a write may leave pending after it took effect (see the Pending schema and the Anima-* headers). */
type Pendable = 'propagation' | 'audit';

interface Route {
  method: 'get' | 'post' | 'patch' | 'delete';
  path: string;
  summary: string;
  tag: string;
  body?: string;
  /** The body may be left out (every field optional). */
  bodyOptional?: boolean;
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
      body: `${schema}Create`,
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
      body: `${schema}Patch`,
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
  ...crud('Channels', '/channels', 'code', 'Channel', ['provider', 'enabled', 'code'], true),
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
  ...crud('Aliases', '/aliases', 'name', 'Alias', ['enabled', 'name'], true),
  ...crud('Quotas', '/quotas', 'id', 'Quota', ['scope', 'scope_id']),
  ...crud('Token groups', '/token-groups', 'id', 'TokenGroup', ['enabled']),
  ...crud('Prices', '/prices', 'id', 'Price', ['alias', 'channel']),
  ...crud('Apps', '/apps', 'id', 'App', ['enabled']).filter((r) => !r.path.endsWith('/versions')),
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
    body: 'KeyCreate',
    bodyOptional: true,
    ok: [201, 'KeyWithSecret'],
    pending: PROPAGATION,
  },
  { method: 'get', path: '/apps/{id}/keys/{kid}', summary: 'Get a key', tag: 'Keys', ok: [200, 'Key'] },
  {
    method: 'patch',
    path: '/apps/{id}/keys/{kid}',
    summary: 'Update a key (enabled=false bans it on every instance)',
    tag: 'Keys',
    body: 'KeyPatch',
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
    body: 'CircuitAction',
    bodyOptional: true,
    ok: [200, 'Circuit'],
    pending: AUDIT,
  },
  {
    method: 'post',
    path: '/circuits/{channel}/close',
    summary: 'Close a breaker',
    tag: 'Escape hatches',
    body: 'CircuitAction',
    bodyOptional: true,
    ok: [200, 'Circuit'],
    pending: AUDIT,
  },
  {
    method: 'post',
    path: '/circuits/{channel}/reset',
    summary: 'Reset a breaker (closed, window forgotten)',
    tag: 'Escape hatches',
    body: 'CircuitAction',
    bodyOptional: true,
    ok: [200, 'Circuit'],
    pending: AUDIT,
  },
  {
    method: 'post',
    path: '/cache/invalidate',
    summary: 'Reload a config table (or all) on every instance (body: {table?, key?})',
    tag: 'Escape hatches',
    body: 'CacheInvalidate',
    bodyOptional: true,
    ok: [200, 'Invalidated'],
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
    body: 'KillSwitchWrite',
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
    summary: 'Revenue, cost and spread by app, key, alias, channel and day (filter: app, key)',
    tag: 'Billing',
    ok: [200, 'List'],
    query: ['from', 'to', 'group_by', 'app', 'key'],
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
    path: '/requests',
    summary:
      'The request log, newest first: app, key, alias, channels tried and why, status, tokens, cost and sale, latency',
    tag: 'Requests',
    ok: [200, 'List'],
    query: ['app', 'key', 'alias', 'channel', 'status', 'errors', 'code', 'from', 'to', 'limit', 'cursor'],
  },
  {
    method: 'get',
    path: '/requests/summary',
    summary: 'Requests, errors, tokens, cost and sale over the same filters (a key’s page)',
    tag: 'Requests',
    ok: [200, 'RequestSummary'],
    query: ['app', 'key', 'alias', 'channel', 'status', 'errors', 'code', 'from', 'to'],
  },
  {
    method: 'get',
    path: '/requests/{id}',
    summary: 'One request of the request log, by the id its client got in x-request-id',
    tag: 'Requests',
    ok: [200, 'RequestLogEntry'],
    query: ['from', 'to'],
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
    body: 'AdminTokenCreate',
    ok: [201, 'AdminTokenCreated'],
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
      'Traffic, error rate, p50/p99 latency, overhead, sale and cost over the last minutes (1-60), in steps of 10-600 s, summed over live instances (scope, instances)',
    tag: 'Console',
    ok: [200, 'StatsSeries'],
    query: ['minutes', 'step'],
  },
  {
    method: 'get',
    path: '/stats/channels',
    summary:
      'Per channel over the last minutes (1-15): upstream attempts, failures, error rate, p50/p95 latency, summed over live instances',
    tag: 'Console',
    ok: [200, null],
    query: ['minutes'],
  },
  {
    method: 'get',
    path: '/console-settings',
    summary:
      'What the console formats with: the account currency (ANIMA_CURRENCY) of the integer micro-units',
    tag: 'Console',
    ok: [200, null],
  },
  {
    method: 'post',
    path: '/channels/{code}/test',
    summary:
      'Send one small real request through the channel (chat: 1 token; embeddings: one word), bypassing the alias chain and breaker; not billed; audited. Body: optional {model, operation: chat | embeddings}',
    tag: 'Channels',
    ok: [200, null],
    pending: AUDIT,
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
  ...NOTIFY_ROUTES,
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
              required: r.method === 'post' && !r.bodyOptional,
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
