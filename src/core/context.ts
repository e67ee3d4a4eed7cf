import type { GatewayError } from './errors.js';
import type { Usage } from './usage.js';
import type { Alias, ApiKey, App } from './model.js';
import type { InboundDialect } from './dialects.js';

export type Outcome = 'ok' | 'fallback' | 'rejected' | 'queued' | 'failed' | 'cancelled';

/** Why a channel of the chain was passed over or failed, for headers, logs and metrics. */
export interface RouteNote {
  channel: string;
  /** 'skipped' = never called; 'failed' = called and failed. */
  what: 'skipped' | 'failed';
  reason: string;
  status?: number;
  ms?: number;
}

/**
 * Everything known about one request, typed (no string-keyed bags), in stages:
 *
 *   RequestContext   received: dialect, id, clock. Refusals before authentication are logged from here.
 *   Authenticated    `authenticated(key, app)`: the caller is known (key, app non-null).
 *   Routed           `routed(name, alias)`: the alias the request names exists and is granted to the key.
 *                    Governance admits and the relay serves only a Routed request.
 *   Served           `isServed()`: a channel answered with usage: what billing books.
 *
 * Each stage is the same object seen through a narrower type (no copies on the hot path), returned by the
 * transition that establishes it, so code past a stage reads `ctx.key.id`, never `ctx.key!.id`. The
 * context holds data only: the relay's completion hook and the settlement are passed as arguments.
 */
export class RequestContext {
  key: ApiKey | null = null;
  app: App | null = null;
  aliasName: string | null = null;
  alias: Alias | null = null;
  stream = false;
  /** Channel that served the answer. */
  channel: string | null = null;
  upstreamModel: string | null = null;
  attempts = 0;
  readonly route: RouteNote[] = [];
  status = 0;
  outcome: Outcome = 'failed';
  error: GatewayError | null = null;
  usage: Usage | null = null;
  /** True when usage was estimated locally because the upstream never reported it. */
  usageEstimated = false;
  /** ms from receipt to the first byte written to the client. */
  ttfbMs: number | null = null;
  /** ms spent waiting on upstreams (all attempts). */
  upstreamMs = 0;
  clientAborted = false;
  endedAt = 0;
  /** What the served request costs us upstream and what it sells for (micro-units; null = no price set). */
  costMicros: bigint | null = null;
  saleMicros: bigint | null = null;
  /** Prepaid: what the wallet was actually charged (<= saleMicros). */
  chargedMicros: bigint | null = null;
  /** Billing settled (exactly once per request). */
  billed = false;
  /** The answer was complete (set just before its last bytes are written). */
  served = false;
  /** A stream's text sent to the client, kept when the upstream never reported usage (for an estimate). */
  emittedText: string | null = null;
  /** A job billed later (media): the sale its cost budget keeps until then (micro-units). */
  jobSaleMicros: number | null = null;
  /** The route's name in metrics when it is not a relayed dialect (a media submission: `media_image`...). */
  label: string | null = null;
  /** Served from the exact-match response cache (no upstream call; billed at the cache-hit price). */
  cacheHit = false;
  /** Headers every answer carries (x-ratelimit-*), success or error. */
  extraHeaders: Record<string, string> = {};

  constructor(
    readonly id: string,
    readonly dialect: InboundDialect,
    readonly startedAt: number,
    readonly startedHr: bigint = process.hrtime.bigint(),
  ) {}

  /** Stage 1: the caller's key and app. */
  authenticated(key: ApiKey, app: App): Authenticated {
    this.key = key;
    this.app = app;
    return this as Authenticated;
  }

  /** Stage 2 (from an authenticated request): the alias it names, resolved and granted. */
  routed(this: Authenticated, aliasName: string, alias: Alias): Routed {
    this.aliasName = aliasName;
    this.alias = alias;
    return this as Routed;
  }

  /** Stage 3: a channel answered and its usage is known (estimated or reported). */
  isServed(): this is Served {
    return this.channel !== null && this.usage !== null && this.alias !== null && this.app !== null;
  }

  elapsedMs(): number {
    return Number(process.hrtime.bigint() - this.startedHr) / 1e6;
  }

  /** `x-anima-route` value: each skipped or failed channel with its reason. ASCII-safe. */
  routeHeader(): string {
    return this.route
      .map((n) => `${n.channel};${n.what}=${n.reason}${n.status ? `;status=${n.status}` : ''}`)
      .join(', ')
      .replace(/[^\x20-\x7e]/g, '?');
  }
}

/** A request whose caller is known. */
export interface Authenticated extends RequestContext {
  readonly key: ApiKey;
  readonly app: App;
}

/** An authenticated request whose alias is resolved: what governance admits and the relay serves. */
export interface Routed extends Authenticated {
  readonly aliasName: string;
  readonly alias: Alias;
}

/** A routed request a channel answered: the channel and the usage billing books. */
export interface Served extends Routed {
  channel: string;
  usage: Usage;
}
