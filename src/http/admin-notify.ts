/**
 * Admin routes for operator notification targets (/api/admin/v1/notification-targets): list, create,
 * read, change (enable/disable, events, URL, secret), delete, and `POST /:id/test`, which sends one test
 * notification now and answers with the delivery result. Registered inside the admin plugin (same bearer
 * token and role checks). A URL is checked by the outbound policy as an operator's (private addresses only
 * when ANIMA_OUTBOUND_ALLOW lists them) when written, and again at every delivery. Every write is audited
 * (the secret never appears: only whether there is one).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import { GatewayError } from '../core/errors.js';
import type { Actor, AuditOutcome, ConfigAdmin } from '../config/admin.js';
import {
  NOTIFY_EVENT_KINDS,
  NOTIFY_FORMATS,
  type NotifyTargets,
  targetView,
} from '../config/notify-targets.js';
import type { OutboundPolicy } from '../lib/outbound.js';
import type { Notifier } from '../observability/notify.js';
import { testEvent } from '../observability/notify-events.js';

export interface NotifyAdminDeps {
  targets: NotifyTargets;
  notifier: Notifier;
  outbound: OutboundPolicy;
  /** Tells every instance to read the targets again (pub/sub). */
  changed(): Promise<void>;
}

const Kind = Type.Union(NOTIFY_EVENT_KINDS.map((k) => Type.Literal(k)));
const Format = Type.Union(NOTIFY_FORMATS.map((k) => Type.Literal(k)));
const S = Type.String();

/** The schemas of these routes, in the admin OpenAPI document (http/openapi.ts). */
export const NOTIFY_SCHEMAS = {
  NotificationTarget: Type.Object({
    id: S,
    name: S,
    url: S,
    format: Format,
    secret_set: Type.Boolean({ description: 'a signing secret is set (never shown)' }),
    events: Type.Array(Kind, { description: 'event kinds sent to this target; empty: all' }),
    enabled: Type.Boolean(),
    rate_per_minute: Type.Integer({
      description: 'at most this many a minute; the rest folded into a summary',
    }),
    created_at: S,
    updated_at: S,
  }),
  NotificationTargetCreate: Type.Object(
    {
      name: Type.String({ minLength: 1, maxLength: 200 }),
      url: Type.String({ description: 'http(s) URL: a Slack incoming webhook, or any JSON receiver' }),
      format: Type.Optional(Format),
      secret: Type.Optional(
        Type.Union([Type.String({ maxLength: 500 }), Type.Null()], {
          description:
            'signs deliveries: x-anima-signature t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>',
        }),
      ),
      events: Type.Optional(Type.Array(Kind)),
      enabled: Type.Optional(Type.Boolean()),
      rate_per_minute: Type.Optional(Type.Integer({ minimum: 1, maximum: 600 })),
    },
    { additionalProperties: false },
  ),
  NotificationTargetPatch: Type.Object(
    {
      name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
      url: Type.Optional(S),
      format: Type.Optional(Format),
      secret: Type.Optional(Type.Union([Type.String({ maxLength: 500 }), Type.Null()])),
      events: Type.Optional(Type.Array(Kind)),
      enabled: Type.Optional(Type.Boolean()),
      rate_per_minute: Type.Optional(Type.Integer({ minimum: 1, maximum: 600 })),
    },
    { additionalProperties: false },
  ),
  NotificationTest: Type.Object({
    delivered: Type.Boolean(),
    status: Type.Integer({ description: "the receiver's HTTP status (0: no answer)" }),
    error: Type.Union([S, Type.Null()]),
    ms: Type.Integer(),
  }),
};

const TAG = 'Notifications';
const BASE = '/notification-targets';
const ONE = `${BASE}/{id}`;
/** The routes, for the admin OpenAPI document (http/openapi.ts ADMIN_ROUTES). */
export const NOTIFY_ROUTES: Array<{
  method: 'get' | 'post' | 'patch' | 'delete';
  path: string;
  summary: string;
  tag: string;
  body?: string;
  ok: [number, string | null];
}> = [
  {
    method: 'get',
    path: BASE,
    summary: 'Notification targets (never the secrets)',
    tag: TAG,
    ok: [200, 'List'],
  },
  {
    method: 'post',
    path: BASE,
    summary: 'Add a webhook target for operator events (Slack-compatible or signed JSON)',
    tag: TAG,
    body: 'NotificationTargetCreate',
    ok: [201, 'NotificationTarget'],
  },
  { method: 'get', path: ONE, summary: 'One notification target', tag: TAG, ok: [200, 'NotificationTarget'] },
  {
    method: 'patch',
    path: ONE,
    summary: 'Change a notification target (enabled, events, URL, secret, rate)',
    tag: TAG,
    body: 'NotificationTargetPatch',
    ok: [200, 'NotificationTarget'],
  },
  { method: 'delete', path: ONE, summary: 'Delete a notification target', tag: TAG, ok: [204, null] },
  {
    method: 'post',
    path: `${ONE}/test`,
    summary: 'Send a test notification to this target now; answers with the delivery result',
    tag: TAG,
    ok: [200, 'NotificationTest'],
  },
];

/** Answers 400 when the outbound policy refuses the URL for an operator (resolving its name). */
async function checkUrl(outbound: OutboundPolicy, url: unknown): Promise<void> {
  if (typeof url !== 'string') return; // the body check words this one
  let v;
  try {
    v = await outbound.checkUrlResolved(url, 'operator');
  } catch {
    return; // not a URL: the body check words it
  }
  if (!v.ok)
    throw new GatewayError('invalid_request', `url: refused by the outbound policy: it ${v.reason}`, {
      param: 'url',
    });
}

export function registerNotifications(
  r: FastifyInstance,
  d: { admin: ConfigAdmin; notifications?: NotifyAdminDeps },
  auditHeader: string,
): void {
  const n = () => {
    if (!d.notifications)
      throw new GatewayError('not_found', 'Notifications are not set up on this gateway.');
    return d.notifications;
  };
  const actor = (req: FastifyRequest) => req.actor as Actor;
  const id = (req: FastifyRequest) => (req.params as { id: string }).id;
  const audited = (reply: FastifyReply, a: AuditOutcome) => {
    if (a !== 'written') reply.header(auditHeader, a);
  };
  const view = targetView;

  r.get(BASE, async () => {
    const rows = await n().targets.list();
    return { data: rows.map(view), event_kinds: NOTIFY_EVENT_KINDS, formats: NOTIFY_FORMATS };
  });
  r.post(BASE, async (req, reply) => {
    await checkUrl(n().outbound, (req.body as { url?: unknown } | null)?.url);
    const row = await n().targets.create(req.body as never);
    const after = view(row);
    audited(
      reply,
      await d.admin.record(actor(req), 'create', 'notification_target', row.id, null, after, req.id),
    );
    await n().changed();
    return reply.code(201).send(after);
  });
  r.get(`${BASE}/:id`, async (req) => view(await n().targets.get(id(req))));
  r.patch(`${BASE}/:id`, async (req, reply) => {
    await checkUrl(n().outbound, (req.body as { url?: unknown } | null)?.url);
    const { before, after } = await n().targets.update(id(req), req.body as never);
    const out = view(after);
    audited(
      reply,
      await d.admin.record(actor(req), 'update', 'notification_target', after.id, view(before), out, req.id),
    );
    await n().changed();
    return out;
  });
  r.delete(`${BASE}/:id`, async (req, reply) => {
    const before = await n().targets.remove(id(req));
    audited(
      reply,
      await d.admin.record(
        actor(req),
        'delete',
        'notification_target',
        before.id,
        view(before),
        null,
        req.id,
      ),
    );
    await n().changed();
    return reply.code(204).send();
  });
  r.post(`${BASE}/:id/test`, async (req) => {
    const t = await n().targets.target(id(req));
    const res = await n().notifier.test(t, testEvent(t.id, actor(req).name));
    return { delivered: res.ok, status: res.status, error: res.error ?? null, ms: res.ms };
  });
}
