/**
 * The request log through the admin API (rows written by observability/request-log.ts):
 *   GET /requests?app=&key=&alias=&channel=&status=&errors=true&code=&from=&to=&limit=&cursor=
 *       newest first; `next_cursor` fetches the next page (stable under new arrivals)
 *   GET /requests/summary?key=&from=&to=   requests, errors, tokens, cost and sale over the same filters
 *   GET /requests/:id   one request (the id a client got in its x-request-id header)
 */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { GatewayError } from '../core/errors.js';
import { type RequestQuery, decodeCursor } from '../observability/request-log.js';

const Nullable = <T extends import('@sinclair/typebox').TSchema>(t: T) => Type.Union([t, Type.Null()]);

/** One row of the request log, as the API answers it (money as decimal strings of micro-units). */
export const RequestLogEntry = Type.Object(
  {
    id: Type.String(),
    at: Type.String({ format: 'date-time' }),
    app_id: Nullable(Type.String()),
    key_id: Nullable(Type.String()),
    alias: Nullable(Type.String()),
    dialect: Type.String(),
    channel: Nullable(Type.String({ description: 'the channel that answered (or the last tried)' })),
    upstream_model: Nullable(Type.String()),
    stream: Type.Boolean(),
    attempts: Type.Integer(),
    route: Type.Array(
      Type.Object({
        channel: Type.String(),
        what: Type.String({ description: 'skipped or failed' }),
        reason: Type.String(),
        status: Type.Optional(Type.Integer()),
        ms: Type.Optional(Type.Number()),
      }),
      { description: 'channels passed over before the answer, and why' },
    ),
    status: Type.Integer(),
    outcome: Type.String(),
    error_code: Nullable(Type.String()),
    tokens_in: Nullable(Type.Integer()),
    tokens_out: Nullable(Type.Integer()),
    cost_micros: Nullable(Type.String()),
    sale_micros: Nullable(Type.String()),
    latency_ms: Type.Number(),
    ttfb_ms: Nullable(Type.Number()),
    cache_hit: Type.Boolean(),
    aborted: Type.Boolean(),
    instance: Type.String(),
  },
  { additionalProperties: false },
);

export const RequestSummary = Type.Object({
  requests: Type.Integer(),
  errors: Type.Integer(),
  tokens_in: Type.Integer(),
  tokens_out: Type.Integer(),
  sale_micros: Type.String(),
  cost_micros: Type.String(),
  p50_ms: Type.Number(),
});

export interface RequestsReader {
  list(q: RequestQuery): Promise<{ data: Array<Record<string, unknown>>; next_cursor: string | null }>;
  summary(q: Omit<RequestQuery, 'limit' | 'cursor'>): Promise<Record<string, string | number>>;
}

function time(v: string | undefined, name: string): Date | undefined {
  if (v === undefined || v === '') return undefined;
  const d = /^\d+$/.test(v) ? new Date(Number(v)) : new Date(v);
  if (Number.isNaN(d.getTime()))
    throw new GatewayError('invalid_request', `${name} must be an ISO 8601 time or epoch milliseconds`, {
      param: name,
    });
  return d;
}

export function parseRequestQuery(q: Record<string, string | undefined>): RequestQuery {
  const limit = q.limit === undefined ? 50 : Number(q.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 500)
    throw new GatewayError('invalid_request', 'limit must be an integer from 1 to 500', { param: 'limit' });
  const out: RequestQuery = { limit };
  for (const f of ['app', 'key', 'alias', 'channel', 'code'] as const) if (q[f]) out[f] = q[f];
  if (q.status !== undefined && q.status !== '') {
    const s = Number(q.status);
    if (!Number.isInteger(s) || s < 100 || s > 599)
      throw new GatewayError('invalid_request', 'status must be an HTTP status code', { param: 'status' });
    out.status = s;
  }
  if (q.errors === 'true') out.errors = true;
  const from = time(q.from, 'from');
  const to = time(q.to, 'to');
  if (from) out.from = from;
  if (to) out.to = to;
  if (q.cursor) {
    const c = decodeCursor(q.cursor);
    if (!c) throw new GatewayError('invalid_request', 'cursor is not one this API gave', { param: 'cursor' });
    out.cursor = c;
  }
  return out;
}

export function registerRequestLog(r: FastifyInstance, read: RequestsReader | undefined): void {
  const need = () => {
    if (!read)
      throw new GatewayError('not_found', 'The request log is off on this gateway (ANIMA_REQUEST_LOG=0).');
    return read;
  };
  r.get('/requests', async (req) => need().list(parseRequestQuery(req.query as Record<string, string>)));
  // A key's (or app's, alias's, channel's) requests, errors, tokens and sale in a window: its page's figures.
  r.get('/requests/summary', async (req) => {
    const { limit: _l, cursor: _c, ...q } = parseRequestQuery(req.query as Record<string, string>);
    return need().summary(q);
  });
  r.get('/requests/:id', async (req) => {
    const id = (req.params as { id: string }).id;
    const q = parseRequestQuery({ ...(req.query as Record<string, string>), limit: '1' });
    const { data } = await need().list({ ...q, id });
    if (!data[0]) throw new GatewayError('not_found', `No request ${id} in the request log.`);
    return data[0];
  });
}
