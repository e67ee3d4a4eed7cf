/**
 * Authentication before anything reads the request: every data-plane route checks the caller's key in
 * an onRequest hook, before Fastify parses the body, so an anonymous caller learns nothing about the
 * validators (a garbage, oversized or wrongly typed body still gets the 401) and costs no body parse.
 *
 * Deny by default: every route is a data-plane route unless its path is one of PUBLIC_PREFIXES (the admin
 * API checks its own tokens; health, metrics and the console's static files are open). A route added
 * later is authenticated without anyone remembering to ask for it.
 *
 * The same hook then refuses path ids and query values holding a NUL (PostgreSQL refuses the byte in
 * text and jsonb): 404 for an id (no id can contain one), 400 for a query parameter, before any query;
 * and paging values (`limit`, `offset`) that are not small non-negative integers. Other routes get the
 * same check as a preValidation hook (after their own authentication).
 */
import type { FastifyReply, FastifyRequest, RouteOptions } from 'fastify';
import type { ConfigCache } from '../config/cache.js';
import type { ApiKey, App } from '../core/model.js';
import { GatewayError } from '../core/errors.js';
import type { InboundDialect } from '../providers/types.js';
import { authenticate } from '../relay/auth.js';
import { type Authenticated, RequestContext } from '../core/context.js';
import { DIALECTS, dialectOfPath, errorShapeOf } from '../core/dialects.js';
import { type RenderShape, renderError } from '../core/render.js';
import { googleKey, isGeminiEmbed } from './validate.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The caller the onRequest hook authenticated (data-plane routes). */
    animaAuth: { key: ApiKey; app: App } | null;
  }
  interface FastifyInstance {
    /** Every route as it was declared (method, full URL, data plane or not): tests walk it. */
    animaRoutes: RouteEntry[];
  }
}

export interface RouteEntry {
  method: string;
  url: string;
  dataPlane: boolean;
}

/** Paths that are not the data plane: no API key asked (each has its own rule, or is public). */
export const PUBLIC_PREFIXES = ['/api/admin/', '/actuator/', '/console'];

export function isDataPlanePath(url: string): boolean {
  for (const p of PUBLIC_PREFIXES) if (url.startsWith(p)) return false;
  return true;
}

/** The error shape a path's clients parse: its dialect's (core/dialects.ts), or new-api's on /suno/. */
export function shapeOf(method: string, url: string): RenderShape {
  return url.startsWith('/suno/') ? 'newapi' : errorShapeOf(dialectOfPath(method, url));
}

/** Copies the hook's caller into `ctx`, or authenticates here when no hook ran (a route built elsewhere). */
export async function authed(
  config: ConfigCache,
  req: FastifyRequest,
  ctx: RequestContext,
  now: number,
  otherKey?: string,
): Promise<Authenticated> {
  const a = req.animaAuth;
  if (a) return ctx.authenticated(a.key, a.app);
  return authenticate(config, ctx, req.headers, now, otherKey);
}

/** Paging parameters, wherever they appear: a database takes only a modest non-negative integer. */
const PAGING = new Set(['limit', 'offset']);

/**
 * A NUL in a path parameter (404: no id holds one) or a query parameter (400), or a paging parameter
 * (`limit`, `offset`) that is not a non-negative integer of at most 9 digits (400), else null.
 */
export function paramRefusal(req: FastifyRequest): GatewayError | null {
  const p = req.params as Record<string, unknown> | undefined;
  if (p)
    for (const k in p) {
      const v = p[k];
      if (typeof v === 'string' && v.includes('\0'))
        return new GatewayError(
          'not_found',
          'Nothing here: the path holds a NUL character, which no id contains.',
        );
    }
  const q = req.query as Record<string, unknown> | undefined;
  if (q)
    for (const k in q) {
      const v = q[k];
      const bad =
        k.includes('\0') ||
        (typeof v === 'string'
          ? v.includes('\0')
          : Array.isArray(v) && v.some((x) => typeof x === 'string' && x.includes('\0')));
      if (bad)
        return new GatewayError(
          'invalid_request',
          'A query parameter holds a NUL character, which is not accepted.',
          {
            param: k.replace(/\0/g, ''),
          },
        );
      if (PAGING.has(k) && !(typeof v === 'string' && /^\d{0,9}$/.test(v)))
        return new GatewayError('invalid_request', `${k} must be a non-negative integer`, { param: k });
    }
  return null;
}

export interface AuthFirstDeps {
  config: ConfigCache;
  clock: { now(): number };
  /** A refused data-plane request's accounting (metrics and the access line), as the handler would do it. */
  onRefused?: (ctx: RequestContext) => void;
  /** Filled with every route declared. */
  routes?: RouteEntry[];
}

/**
 * Adds the hooks to a route as it is declared (an onRoute hook): data-plane routes get the key check
 * (with the parameter check after it); every other route gets the parameter check as a preValidation
 * hook, which runs after its own authentication (the admin API's onRequest).
 */
export function authFirstOnRoute(d: AuthFirstDeps) {
  return (route: RouteOptions): void => {
    const method = [route.method].flat()[0] ?? 'GET';
    const dataPlane = isDataPlanePath(route.url ?? '');
    for (const m of [route.method].flat()) d.routes?.push({ method: m, url: route.url ?? '', dataPlane });
    if (!dataPlane) {
      route.preValidation = [
        guardParams,
        ...[route.preValidation ?? []].flat(),
      ] as RouteOptions['preValidation'];
      return;
    }
    const shape = shapeOf(method, route.url ?? '');
    // Routes that write an access line for every request (the relayed ones) name their dialect.
    const access = (route.config as { animaAccess?: InboundDialect } | undefined)?.animaAccess;
    const dialect: InboundDialect = access ?? dialectOfPath(method, route.url ?? '');
    const gemini = DIALECTS[dialect].googleKey;
    const hook = async (req: FastifyRequest, reply: FastifyReply) => {
      const now = d.clock.now();
      const ctx = new RequestContext(req.id, dialect, now);
      let err: GatewayError | null = null;
      try {
        const who = await authenticate(d.config, ctx, req.headers, now, gemini ? googleKey(req) : undefined);
        req.animaAuth = { key: who.key, app: who.app };
        err = paramRefusal(req);
      } catch (e) {
        if (!(e instanceof GatewayError)) throw e;
        err = e;
      }
      if (!err) return;
      const { status, body } = renderError(shape, err);
      if (access && d.onRefused) {
        // Accounted as the handler would have: its dialect (Gemini's embedding methods are their own).
        const acct =
          access === 'gemini' && isGeminiEmbed(req)
            ? Object.assign(new RequestContext(req.id, 'gemini_embed', now, ctx.startedHr), {
                key: ctx.key,
                app: ctx.app,
              })
            : ctx;
        acct.status = status;
        acct.error = err;
        acct.outcome = 'rejected';
        acct.endedAt = d.clock.now();
        d.onRefused(acct);
      }
      return reply.code(status).header('x-request-id', req.id).headers(err.headers).send(body);
    };
    route.onRequest = [hook, ...[route.onRequest ?? []].flat()] as RouteOptions['onRequest'];
  };
}

async function guardParams(req: FastifyRequest): Promise<void> {
  const err = paramRefusal(req);
  if (err) throw err;
}
