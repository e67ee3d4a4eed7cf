/**
 * The admin API under /api/admin/v1: CRUD for every config table with optimistic locking, and the
 * escape hatches (breakers, channel and key switches, cache invalidation, kill switch). Every caller
 * needs an admin bearer token; `viewer` tokens may only read. Every write is audited by ConfigAdmin.
 *
 * In an outage an answer never claims less or more than happened: a database that can't be reached gives
 * 503 service_unavailable (never 500); a change that took effect but is not everywhere yet answers 2xx and
 * says so (see markDeferred); breaker state lives in Redis, so breaker and health writes without it get 503.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { GatewayError } from '../core/errors.js';
import {
  type Actor,
  type AuditOutcome,
  type ConfigAdmin,
  type DeferredPropagation,
  type Invalidation,
  isDbUnavailable,
} from '../config/admin.js';
import type { AdminTokens } from '../config/admin-tokens.js';
import type { ConfigCache, KillSwitch } from '../config/cache.js';
import type { Entity } from '../config/validate.js';
import type { ChannelHealth, SharedBreakerState } from '../coord/types.js';
import type { Billing } from '../billing/service.js';
import { providerKindsView } from '../providers/registry.js';
import { checkBody } from '../config/validate.js';
import {
  AdminTokenCreate,
  CacheInvalidate,
  CircuitAction,
  Fund,
  INVALIDATE_TABLES,
  KillSwitchWrite,
} from './schemas.js';
import { buildAdminOpenApi, renderAdminDocs } from './openapi.js';
import { type ConsoleDeps, registerConsoleRoutes } from './admin-console.js';
import { registerConsole } from './console.js';
import { type NotifyAdminDeps, registerNotifications } from './admin-notify.js';
import { type RequestsReader, registerRequestLog } from './admin-requests.js';

export const ADMIN_PREFIX = '/api/admin/v1';

/** Every admin route as registered (method, full URL), for the test that holds the OpenAPI document to them. */
export const registeredAdminRoutes: Array<{ method: string; url: string }> = [];

/** What the admin API needs from the breaker registries (BreakerRegistry and ChannelHealthRegistry fit). */
export interface CircuitControl {
  state(channel: string): SharedBreakerState;
  windowCounts(channel: string): { calls: number; failures: number; slow: number };
  forceOpen(channel: string, reason?: string): Promise<SharedBreakerState>;
  reset(channel: string, reason?: string): Promise<SharedBreakerState>;
}
export interface HealthControl {
  get(channel: string): ChannelHealth;
  reset(channel: string): Promise<void>;
}

export interface AdminDeps {
  admin: ConfigAdmin;
  tokens: AdminTokens;
  config: ConfigCache;
  breakers: CircuitControl;
  health: HealthControl;
  /** Billing (absent: the billing routes answer 404 not_found). */
  billing?: Billing;
  /** The request log's reader (absent: the log is off, /requests answers 404). */
  requests?: RequestsReader;
  /** Operator notification targets (absent: those routes answer 404 not_found). */
  notifications?: NotifyAdminDeps;
  /** Optional: the OpenAPI document and its rendered page. */
  openapi?: { spec: unknown; html: () => string };
  /** What the operator console reads besides config: traffic stats, queues, tasks across apps. */
  console?: ConsoleDeps;
}

/** Set on a committed change other instances see late: `deferred; within=<ms>` (their refresh TTL). */
export const PROPAGATION_HEADER = 'anima-propagation';
/** Set on an action that took effect whose audit row is not written yet: `deferred` or `dropped`. */
export const AUDIT_HEADER = 'anima-audit';

/** What is still pending after a change took effect. */
interface Pending {
  propagation?: DeferredPropagation | null;
  audit?: AuditOutcome;
}

/**
 * Marks an answer whose change took effect but is not everywhere yet: a header (a 204 has no body) and, when
 * the body is a JSON object, the same as fields `propagation` / `audit`. A healthy answer is unchanged.
 */
function markDeferred<T>(reply: FastifyReply, body: T, p: Pending): T {
  const extra: Record<string, unknown> = {};
  if (p.propagation) {
    reply.header(PROPAGATION_HEADER, `deferred; within=${p.propagation.within_ms}`);
    extra.propagation = p.propagation;
  }
  if (p.audit && p.audit !== 'written') {
    reply.header(AUDIT_HEADER, p.audit);
    extra.audit = p.audit;
  }
  if (!Object.keys(extra).length || !body || typeof body !== 'object' || Array.isArray(body)) return body;
  return { ...body, ...extra };
}

/** Breaker and health state live in Redis: without it they can't change, and nothing else did. */
async function inRedis<T>(what: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    if (err instanceof GatewayError) throw err;
    throw new GatewayError(
      'service_unavailable',
      `${what} lives in Redis, which did not confirm the change: retry when it is reachable.`,
      { cause: err },
    );
  }
}

declare module 'fastify' {
  interface FastifyRequest {
    actor: Actor | null;
  }
}

/** The version the caller read: If-Match ("3", W/"3", 3), body.version_no, or ?version_no=. */
function versionOf(req: FastifyRequest): number | undefined {
  const h = req.headers['if-match'];
  if (typeof h === 'string' && h.trim()) {
    const m = /^(?:W\/)?"?(\d+)"?$/.exec(h.trim());
    if (!m)
      throw new GatewayError('invalid_request', 'If-Match must carry the version_no, e.g. If-Match: "3"', {
        param: 'If-Match',
      });
    return Number(m[1]);
  }
  const b = req.body as Record<string, unknown> | undefined;
  if (b && b.version_no !== undefined) {
    if (!Number.isInteger(b.version_no))
      throw new GatewayError('invalid_request', 'version_no must be an integer', { param: 'version_no' });
    return b.version_no as number;
  }
  const q = (req.query as Record<string, string>).version_no;
  if (q !== undefined) {
    if (!/^\d+$/.test(q))
      throw new GatewayError('invalid_request', 'version_no must be an integer', { param: 'version_no' });
    return Number(q);
  }
  return undefined;
}

function listQuery(req: FastifyRequest, filters: string[]) {
  const q = req.query as Record<string, string>;
  const where: Record<string, string | boolean> = {};
  for (const f of filters)
    if (q[f] !== undefined) where[f] = q[f] === 'true' ? true : q[f] === 'false' ? false : q[f];
  const int = (v: string | undefined, name: string) => {
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v))
      throw new GatewayError('invalid_request', `${name} must be a non-negative integer`, { param: name });
    return Number(v);
  };
  return {
    limit: int(q.limit, 'limit'),
    offset: int(q.offset, 'offset'),
    includeDeleted: q.include_deleted === 'true',
    where,
  };
}

export function registerAdmin(app: FastifyInstance, d: AdminDeps): void {
  app.decorateRequest('actor', null);
  // The operator console (static pages at /console) is a client of this API: served wherever it is.
  registerConsole(app);

  void app.register(
    async (r) => {
      r.addHook('onRoute', (route) => {
        for (const m of [route.method].flat())
          if (m !== 'HEAD') registeredAdminRoutes.push({ method: m, url: route.url });
      });
      r.addHook('onRequest', async (req) => {
        if (req.url.startsWith(ADMIN_PREFIX + '/docs') || req.url.startsWith(ADMIN_PREFIX + '/openapi.json'))
          return;
        req.actor = d.tokens.authenticate(req.headers.authorization);
        if (req.method !== 'GET' && req.method !== 'HEAD' && req.actor.role !== 'admin') {
          throw new GatewayError('admin_forbidden', `Admin API: the '${req.actor.role}' role may only read.`);
        }
      });

      // One access line per admin call, refused ones included: who did what to which object, and how it
      // ended. The audit log holds the committed changes; this line also shows reads and refusals.
      r.addHook('onResponse', async (req, reply) => {
        const params = req.params as Record<string, string> | undefined;
        app.log.info(
          {
            reqId: req.id,
            actor: req.actor?.name ?? null,
            role: req.actor?.role ?? null,
            action: `${req.method} ${req.routeOptions.url ?? req.url.split('?')[0]}`,
            ...(params && Object.keys(params).length ? { target: params } : {}),
            status: reply.statusCode,
            ms: Math.round(reply.elapsedTime),
          },
          'admin',
        );
      });

      // A database that can't be reached is an outage, not a bug: 503, retryable. Anything else goes on to
      // the server's handler unchanged.
      r.setErrorHandler(async (err) => {
        throw isDbUnavailable(err)
          ? new GatewayError('service_unavailable', 'The database is unreachable: retry when it is back.', {
              cause: err,
            })
          : err;
      });

      const actor = (req: FastifyRequest) => req.actor!;
      const vid = (req: FastifyRequest) => (req.query as Record<string, string>).version_id;

      r.get('/provider-kinds', async () => ({ data: providerKindsView() }));

      // ---- versioned config tables: channels (by code) and aliases (by name) ----
      for (const [entity, path, param, filters] of [
        ['channel', 'channels', 'code', ['provider', 'enabled', 'code']],
        ['alias', 'aliases', 'name', ['enabled', 'name']],
      ] as Array<[Entity, string, string, string[]]>) {
        r.get(`/${path}`, async (req) => d.admin.list(entity, listQuery(req, filters)));
        r.post(`/${path}`, async (req, reply) => {
          const { row, propagation } = await d.admin.create(actor(req), entity, req.body, {
            requestId: req.id,
          });
          reply.code(201).header('etag', `"${row.version_no}"`);
          return reply.send(markDeferred(reply, row, { propagation }));
        });
        r.get(`/${path}/:${param}`, async (req, reply) => {
          const row = await d.admin.get(entity, (req.params as Record<string, string>)[param]!, {
            rowId: vid(req),
          });
          return reply.header('etag', `"${row.version_no}"`).send(row);
        });
        r.get(`/${path}/:${param}/versions`, async (req) => ({
          data: await d.admin.versions(entity, (req.params as Record<string, string>)[param]!),
        }));
        r.patch(`/${path}/:${param}`, async (req, reply) => {
          const { row, propagation } = await d.admin.update(
            actor(req),
            entity,
            (req.params as Record<string, string>)[param]!,
            versionOf(req),
            req.body,
            { rowId: vid(req), requestId: req.id },
          );
          reply.header('etag', `"${row.version_no}"`);
          return reply.send(markDeferred(reply, row, { propagation }));
        });
        r.delete(`/${path}/:${param}`, async (req, reply) => {
          const { propagation } = await d.admin.remove(
            actor(req),
            entity,
            (req.params as Record<string, string>)[param]!,
            versionOf(req),
            { rowId: vid(req), requestId: req.id },
          );
          markDeferred(reply, null, { propagation });
          return reply.code(204).send();
        });
      }
      r.post('/channels/:code/health/reset', async (req, reply) => {
        const code = (req.params as { code: string }).code;
        const before = d.health.get(code);
        await inRedis('Channel health', () => d.health.reset(code));
        const audit = await d.admin.record(
          actor(req),
          'health_reset',
          'channel',
          code,
          before,
          d.health.get(code),
          req.id,
        );
        return markDeferred(reply, { channel: code, health: d.health.get(code) }, { audit });
      });

      // ---- quotas (by row id) and token groups ----
      for (const [entity, path, filters] of [
        ['quota', 'quotas', ['scope', 'scope_id']],
        ['token_group', 'token-groups', ['enabled']],
        ['price', 'prices', ['alias', 'channel']],
      ] as Array<[Entity, string, string[]]>) {
        r.get(`/${path}`, async (req) => d.admin.list(entity, listQuery(req, filters)));
        r.post(`/${path}`, async (req, reply) => {
          const { row, propagation } = await d.admin.create(actor(req), entity, req.body, {
            requestId: req.id,
          });
          return reply.code(201).send(markDeferred(reply, row, { propagation }));
        });
        r.get(`/${path}/:id`, async (req) => d.admin.get(entity, (req.params as { id: string }).id));
        r.patch(`/${path}/:id`, async (req, reply) => {
          const { row, propagation } = await d.admin.update(
            actor(req),
            entity,
            (req.params as { id: string }).id,
            versionOf(req),
            req.body,
            { requestId: req.id },
          );
          return markDeferred(reply, row, { propagation });
        });
        r.delete(`/${path}/:id`, async (req, reply) => {
          const { propagation } = await d.admin.remove(
            actor(req),
            entity,
            (req.params as { id: string }).id,
            versionOf(req),
            { requestId: req.id },
          );
          markDeferred(reply, null, { propagation });
          return reply.code(204).send();
        });
      }

      // ---- apps and their keys ----
      r.get('/apps', async (req) => d.admin.list('app', listQuery(req, ['enabled'])));
      r.post('/apps', async (req, reply) => {
        const { row, propagation } = await d.admin.create(actor(req), 'app', req.body, { requestId: req.id });
        return reply.code(201).send(markDeferred(reply, row, { propagation }));
      });
      r.get('/apps/:id', async (req) => d.admin.get('app', (req.params as { id: string }).id));
      r.patch('/apps/:id', async (req, reply) => {
        const { row, propagation } = await d.admin.update(
          actor(req),
          'app',
          (req.params as { id: string }).id,
          versionOf(req),
          req.body,
          { requestId: req.id },
        );
        return markDeferred(reply, row, { propagation });
      });
      r.delete('/apps/:id', async (req, reply) => {
        const { propagation } = await d.admin.remove(
          actor(req),
          'app',
          (req.params as { id: string }).id,
          versionOf(req),
          { requestId: req.id },
        );
        markDeferred(reply, null, { propagation });
        return reply.code(204).send();
      });
      r.get('/apps/:id/keys', async (req) => {
        const q = listQuery(req, ['enabled']);
        return d.admin.list('api_key', {
          ...q,
          where: { ...q.where, app_id: (req.params as { id: string }).id },
        });
      });
      r.post('/apps/:id/keys', async (req, reply) => {
        const { row, sk, propagation } = await d.admin.create(actor(req), 'api_key', req.body ?? {}, {
          appId: (req.params as { id: string }).id,
          requestId: req.id,
        });
        return reply.code(201).send(markDeferred(reply, { key: row, sk }, { propagation }));
      });
      const keyTarget = (req: FastifyRequest) => req.params as { id: string; kid: string };
      r.get('/apps/:id/keys/:kid', async (req) =>
        d.admin.get('api_key', keyTarget(req).kid, { appId: keyTarget(req).id }),
      );
      r.patch('/apps/:id/keys/:kid', async (req, reply) => {
        const { row, propagation } = await d.admin.update(
          actor(req),
          'api_key',
          keyTarget(req).kid,
          versionOf(req),
          req.body,
          { appId: keyTarget(req).id, requestId: req.id },
        );
        return markDeferred(reply, row, { propagation });
      });
      r.delete('/apps/:id/keys/:kid', async (req, reply) => {
        const { propagation } = await d.admin.remove(
          actor(req),
          'api_key',
          keyTarget(req).kid,
          versionOf(req),
          {
            appId: keyTarget(req).id,
            requestId: req.id,
          },
        );
        markDeferred(reply, null, { propagation });
        return reply.code(204).send();
      });
      r.post('/apps/:id/keys/:kid/rotate', async (req, reply) => {
        const { row, sk, propagation } = await d.admin.rotateKey(
          actor(req),
          keyTarget(req).id,
          keyTarget(req).kid,
          versionOf(req),
          req.id,
        );
        return markDeferred(reply, { key: row, sk }, { propagation });
      });
      r.get('/keys', async (req) => {
        const q = listQuery(req, []);
        const prefix = (req.query as Record<string, string>).prefix;
        return d.admin.list('api_key', { ...q, where: prefix ? { key_prefix: prefix } : {} });
      });

      // ---- escape hatches ----
      r.get('/circuits', async () => {
        const data = d.config.channelCodes().map((code) => circuitView(d, code));
        return { data };
      });
      for (const action of ['open', 'close', 'reset'] as const) {
        r.post(`/circuits/:channel/${action}`, async (req, reply) => {
          const ch = (req.params as { channel: string }).channel;
          if (!d.config.channel(ch)) throw new GatewayError('not_found', `channel '${ch}' not found`);
          const { reason } = checkBody(CircuitAction, req.body ?? {}, ' ');
          const before = d.breakers.state(ch);
          const after = await inRedis('Breaker state', () =>
            action === 'open'
              ? d.breakers.forceOpen(ch, reason ?? `forced open by ${actor(req).name}`)
              : d.breakers.reset(ch, reason ?? `${action} by ${actor(req).name}`),
          );
          const audit = await d.admin.record(
            actor(req),
            `circuit_${action}`,
            'circuit',
            ch,
            before,
            after,
            req.id,
          );
          return markDeferred(reply, circuitView(d, ch), { audit });
        });
      }
      r.post('/cache/invalidate', async (req, reply) => {
        const b = checkBody(CacheInvalidate, req.body ?? {}, ' ');
        const table: (typeof INVALIDATE_TABLES)[number] = b.table ?? 'all';
        const inv: Invalidation = { table, ...(b.key !== undefined ? { key: b.key } : {}) };
        const propagation = await d.admin.propagate(inv);
        const audit = await d.admin.record(actor(req), 'cache_invalidate', 'cache', table, null, inv, req.id);
        return markDeferred(reply, { invalidated: inv }, { propagation, audit });
      });
      r.get(
        '/kill-switch',
        async () => (await d.admin.getSetting<KillSwitch>('kill_switch'))?.value ?? { enabled: false },
      );
      r.post('/kill-switch', async (req, reply) => {
        const b = checkBody(KillSwitchWrite, req.body ?? {}, ' ');
        const value: KillSwitch = {
          enabled: b.enabled,
          at: new Date().toISOString(),
          by: actor(req).name,
          ...(b.reason !== undefined ? { reason: b.reason.slice(0, 500) } : {}),
        };
        // A database setting: refused (503) without the database, like every other config write.
        const { propagation } = await d.admin.putSetting(actor(req), 'kill_switch', value, req.id);
        return markDeferred(reply, value, { propagation });
      });
      // ---- billing ----
      const billing = () => {
        if (!d.billing) throw new GatewayError('not_found', 'Billing is off on this gateway.');
        return d.billing;
      };
      const appParam = async (req: FastifyRequest) => {
        const id = (req.params as { id: string }).id;
        await d.admin.get('app', id); // 404 when there is no such app
        return id;
      };
      r.post('/apps/:id/wallet/fund', async (req, reply) => {
        const id = await appParam(req);
        const b = checkBody(Fund, req.body ?? {}, ' ');
        const raw = String(b.amount_micros);
        const idemKey = b.idempotency_key ?? req.id;
        const r = await billing()
          .fund(id, BigInt(raw), `fund:${id}:${idemKey}`, b.memo?.slice(0, 500))
          .catch((err: unknown) => {
            if (!isDbUnavailable(err)) throw err;
            // The journal may have been posted before the connection died: a retry with this key can't fund twice.
            throw new GatewayError(
              'service_unavailable',
              `The database is unreachable: the funding may or may not have been posted. Retry with idempotency_key '${idemKey}' (safe: it is posted at most once).`,
              { cause: err, details: { outcome: 'unknown', idempotency_key: idemKey } },
            );
          });
        const done = { journal_id: String(r.journalId), duplicate: r.duplicate };
        const audit = await d.admin.record(
          actor(req),
          'wallet_fund',
          'app',
          id,
          null,
          { amount_micros: raw, ...done },
          req.id,
        );
        // Posted: a wallet that can't be read back now doesn't undo that.
        const wallet = await billing()
          .wallet(id)
          .catch(() => ({ app_id: id, ledger_balance_micros: r.available.toString() }));
        return markDeferred(reply, { ...wallet, ...done }, { audit });
      });
      r.get('/apps/:id/wallet', async (req) => billing().wallet(await appParam(req)));
      r.get('/billing/journals', async (req) => {
        const q = listQuery(req, []);
        const f = req.query as Record<string, string>;
        const kinds = ['fund', 'sale', 'cost', 'correction', 'hold', 'post', 'void'];
        if (f.kind !== undefined && !kinds.includes(f.kind))
          throw new GatewayError('invalid_request', `kind must be one of ${kinds.join(', ')}`, {
            param: 'kind',
          });
        const rows = await billing().ledger.journals({
          appId: f.app_id,
          requestId: f.request_id,
          kind: f.kind as never,
          alias: f.alias,
          channel: f.channel,
          limit: q.limit,
          offset: q.offset,
        });
        return { data: rows.map(journalView), limit: q.limit ?? 100, offset: q.offset ?? 0 };
      });
      r.get('/billing/report', async (req) => {
        const f = req.query as Record<string, string>;
        const date = (v: string | undefined, name: string) => {
          if (v === undefined) return undefined;
          const t = new Date(v);
          if (Number.isNaN(t.getTime()))
            throw new GatewayError('invalid_request', `${name} must be an ISO date or date-time`, {
              param: name,
            });
          return t;
        };
        const dims = (f.group_by ?? 'app,alias,channel,day')
          .split(',')
          .map((x) => x.trim())
          .filter(Boolean);
        for (const g of dims)
          if (!['app', 'key', 'alias', 'channel', 'day'].includes(g))
            throw new GatewayError(
              'invalid_request',
              'group_by is a comma list of app, key, alias, channel, day',
              { param: 'group_by' },
            );
        const from = date(f.from, 'from');
        const to = date(f.to, 'to');
        return {
          data: await billing().report({
            ...(from ? { from } : {}),
            ...(to ? { to } : {}),
            groupBy: dims as Array<'app' | 'key' | 'alias' | 'channel' | 'day'>,
            ...(f.app ? { app: f.app } : {}),
            ...(f.key ? { key: f.key } : {}),
          }),
        };
      });
      r.get('/billing/trial-balance', async () => {
        const t = await billing().ledger.trialBalance();
        return {
          balanced: t.balanced && t.mismatches.length === 0,
          debits_micros: t.debits.toString(),
          credits_micros: t.credits.toString(),
          pending_debits_micros: t.pendingDebits.toString(),
          pending_credits_micros: t.pendingCredits.toString(),
          mismatches: t.mismatches.map((m) => ({
            account: m.code,
            field: m.field,
            stored: m.stored.toString(),
            from_entries: m.fromEntries.toString(),
          })),
          accounts: t.byAccount.map((a) => ({
            code: a.code,
            kind: a.kind,
            debits_posted: a.stored.debitsPosted.toString(),
            credits_posted: a.stored.creditsPosted.toString(),
            debits_pending: a.stored.debitsPending.toString(),
            credits_pending: a.stored.creditsPending.toString(),
          })),
        };
      });
      r.get('/billing/status', async () => billing().status());

      r.get('/audit', async (req) => {
        const q = req.query as Record<string, string>;
        return {
          data: await d.admin.auditLog({
            entity: q.entity,
            key: q.key,
            limit: q.limit ? Number(q.limit) : undefined,
            offset: q.offset ? Number(q.offset) : undefined,
          }),
        };
      });

      // ---- the console's reads: whoami, traffic stats, queues, tasks across apps, live stream ----
      registerConsoleRoutes(r, d, () => d.config.channelCodes().map((code) => circuitView(d, code)));
      registerNotifications(r, d, AUDIT_HEADER);
      registerRequestLog(r, d.requests);

      // ---- admin tokens ----
      r.get('/admin-tokens', async () => ({ data: await d.tokens.list() }));
      r.post('/admin-tokens', async (req, reply) => {
        const b = checkBody(AdminTokenCreate, req.body ?? {}, ' ');
        const created = await d.tokens.create(b.name, b.role);
        const audit = await d.admin.record(
          actor(req),
          'create',
          'admin_token',
          created.id,
          null,
          { id: created.id, name: b.name, role: b.role },
          req.id,
        );
        const propagation = await d.admin.propagate({ table: 'admin_token' });
        const body = { id: created.id, name: b.name, role: b.role, token: created.token };
        return reply.code(201).send(markDeferred(reply, body, { propagation, audit }));
      });
      r.delete('/admin-tokens/:id', async (req, reply) => {
        const id = (req.params as { id: string }).id;
        if (!(await d.tokens.remove(id)))
          throw new GatewayError('not_found', `admin token '${id}' not found`);
        const audit = await d.admin.record(actor(req), 'delete', 'admin_token', id, { id }, null, req.id);
        const propagation = await d.admin.propagate({ table: 'admin_token' });
        markDeferred(reply, null, { propagation, audit });
        return reply.code(204).send();
      });

      const spec = d.openapi?.spec ?? buildAdminOpenApi();
      const html = d.openapi?.html ?? renderAdminDocs;
      r.get('/openapi.json', async () => spec);
      r.get('/docs', async (_req: FastifyRequest, reply: FastifyReply) =>
        reply.type('text/html; charset=utf-8').send(html()),
      );
    },
    { prefix: ADMIN_PREFIX },
  );
}

function journalView(j: import('../billing/ledger.js').JournalView) {
  return {
    id: String(j.id),
    kind: j.kind,
    state: j.state,
    pending_of: j.pendingOf === null ? null : String(j.pendingOf),
    request_id: j.requestId,
    task_id: j.taskId,
    app_id: j.appId,
    alias: j.alias,
    channel: j.channel,
    usage: j.usage,
    memo: j.memo,
    created_at: j.createdAt.toISOString(),
    entries: j.entries.map((e) => ({
      account: e.account,
      debit_micros: e.debit.toString(),
      credit_micros: e.credit.toString(),
      pending: e.pending,
    })),
  };
}

function circuitView(d: AdminDeps, code: string) {
  const s = d.breakers.state(code);
  const h = d.health.get(code);
  const ch = d.config.channel(code);
  return {
    channel: code,
    enabled: ch?.enabled ?? false,
    state: s.state,
    gen: s.gen,
    since: s.since ? new Date(s.since).toISOString() : null,
    open_until: s.state === 'open' ? new Date(s.openUntil).toISOString() : null,
    reason: s.reason || null,
    window: d.breakers.windowCounts(code),
    health: {
      cooldown_until: h.cooldownUntil > Date.now() ? new Date(h.cooldownUntil).toISOString() : null,
      credential: h.credential,
    },
  };
}
