import { countTokens } from 'gpt-tokenizer';
import type { ConfigCache } from '../config/cache.js';
import { cacheHitPrice, priceOf } from '../core/pricing.js';
import type { RequestContext, Served } from '../core/context.js';
import { estimateCost, estimateTokens } from '../quota/estimate.js';
import type { Billing } from './service.js';
import type { BillingRecord } from './types.js';

/**
 * The request-side glue between the data plane and billing: what a request may cost (its prepaid
 * reservation), what it did cost (priced at the price in force when it arrived), and its settlement.
 */

/** The sale price the request may reach (prompt + max output at the alias price): its wallet reservation. */
export function reservationFor(
  config: ConfigCache,
  ctx: RequestContext,
  body: Record<string, unknown>,
): bigint {
  if (ctx.app?.billing !== 'prepaid' || !ctx.alias) return 0n;
  return BigInt(
    estimateCost(
      config,
      ctx.alias,
      ctx.key?.tokenGroupId ?? null,
      estimateTokens(body, ctx.dialect),
      ctx.startedAt,
      ctx.app.id,
    ),
  );
}

/** The key's token-group price multiplier at the request's time (parts per million; x1 without a group). */
function multiplierOf(config: ConfigCache, ctx: RequestContext): bigint {
  const g = ctx.key?.tokenGroupId ? config.tokenGroup(ctx.key.tokenGroupId, ctx.startedAt) : undefined;
  return g?.priceMultiplierPpm ?? 1_000_000n;
}

/** What an answer from the response cache may cost (the cache-hit price): its wallet reservation. */
export function cacheHitReservation(config: ConfigCache, ctx: RequestContext, channel: string): bigint {
  if (ctx.app?.billing !== 'prepaid' || !ctx.alias) return 0n;
  const p = config.price(ctx.alias.name, channel, ctx.startedAt, undefined, ctx.app.id);
  return p ? cacheHitPrice(p.sale, multiplierOf(config, ctx)) : 0n;
}

/**
 * Fills in what a request used when the upstream never said (a client that left mid-stream before the
 * usage chunk): the prompt as counted locally plus a count of the text the client was sent. Never zero
 * (the prompt was read), never max_tokens (only what was produced).
 */
export function ensureUsage(ctx: RequestContext, body: Record<string, unknown>): void {
  if (ctx.usage || ctx.emittedText === null) return;
  ctx.usage = {
    inputTokens: estimateTokens(body, ctx.dialect).prompt,
    outputTokens: countTokens(ctx.emittedText),
    cachedTokens: 0,
    cacheWriteTokens: 0,
  };
  ctx.usageEstimated = true;
}

/** Prices a served request at the price in force when it arrived (cost, and sale with the token-group multiplier). */
export function priceRequest(config: ConfigCache, ctx: RequestContext): void {
  if (!ctx.usage || !ctx.channel || !ctx.alias || ctx.saleMicros !== null) return;
  const p = config.price(ctx.alias.name, ctx.channel, ctx.startedAt, ctx.upstreamModel, ctx.app?.id);
  if (!p) return;
  const m = multiplierOf(config, ctx);
  if (ctx.cacheHit) {
    // No upstream call: the cache-hit rates alone (zero unless the price table sets them).
    ctx.costMicros = cacheHitPrice(p.cost);
    ctx.saleMicros = cacheHitPrice(p.sale, m);
    return;
  }
  ctx.costMicros = priceOf(p.cost, ctx.usage);
  ctx.saleMicros = priceOf(p.sale, ctx.usage, m);
}

/** Did this request produce something the app is billed for? Served, or cut by the client after output began. */
export function billable(ctx: RequestContext): ctx is Served {
  return (
    ctx.isServed() &&
    (ctx.outcome === 'ok' ||
      ctx.outcome === 'fallback' ||
      ctx.served ||
      (ctx.clientAborted && ctx.status === 200))
  );
}

/**
 * Settles a request's billing once: books it when billable (releasing its reservation in the same step),
 * else just releases the reservation. `recordId` is the exactly-once key (a task uses its task id, so a
 * re-run after a crash can't bill twice).
 */
export async function settleRequest(
  billing: Billing,
  config: ConfigCache,
  ctx: RequestContext,
  body: Record<string, unknown>,
  o: { recordId: string; holdId: string | null; taskId?: string },
): Promise<void> {
  if (ctx.billed) return;
  ctx.billed = true;
  ensureUsage(ctx, body);
  priceRequest(config, ctx);
  const app = ctx.app;
  if (!app) return;
  const sale = ctx.saleMicros ?? 0n;
  const cost = ctx.costMicros ?? 0n;
  if (!billable(ctx) || (sale === 0n && cost === 0n)) {
    if (o.holdId) await billing.release(app.id, o.holdId);
    return;
  }
  // Built by assignment, not conditional spreads (those were most of this function's cost).
  const usage: Record<string, unknown> = {
    input_tokens: ctx.usage.inputTokens,
    output_tokens: ctx.usage.outputTokens,
    cached_tokens: ctx.usage.cachedTokens,
  };
  if (ctx.usageEstimated) usage.estimated = true;
  if (ctx.clientAborted) usage.client_aborted = true;
  usage.key_id = ctx.key?.id;
  usage.upstream_model = ctx.upstreamModel;
  usage.attempts = ctx.attempts;
  // Failed attempts are recorded for cost analysis; they post no sale.
  const failed = ctx.route.filter((n) => n.what === 'failed');
  if (failed.length)
    usage.failed_attempts = failed.map((n) => ({
      channel: n.channel,
      reason: n.reason,
      status: n.status,
      ms: n.ms,
    }));
  const rec: BillingRecord = {
    id: o.recordId,
    requestId: ctx.id,
    appId: app.id,
    prepaid: app.billing === 'prepaid',
    alias: ctx.alias.name,
    channel: ctx.channel,
    sale,
    cost,
    usage,
    at: ctx.startedAt,
  };
  if (o.taskId) rec.taskId = o.taskId;
  const { charged } = await billing.settle(rec, o.holdId);
  ctx.chargedMicros = charged;
}
