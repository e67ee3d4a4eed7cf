import { GatewayError } from '../core/errors.js';
import type { ConfigCache } from '../config/cache.js';
import { isEffective } from '../core/model.js';
import { hashKey } from '../config/repo.js';
import type { Authenticated, RequestContext, Routed } from '../core/context.js';

type Headers = Record<string, string | string[] | undefined>;

/** The sk from `Authorization: Bearer` (OpenAI) or `x-api-key` (Anthropic). */
export function extractKey(h: Headers): string | null {
  const auth = h.authorization;
  if (typeof auth === 'string' && auth.length > 7 && auth.slice(0, 7).toLowerCase() === 'bearer ')
    return auth.slice(7).trim() || null;
  const x = h['x-api-key'];
  if (typeof x === 'string' && x.trim()) return x.trim();
  return null;
}

/**
 * Stage 1: who is calling. The sk is hashed and looked up in L1 (the lookup compares digests, so no
 * secret is ever compared byte by byte). Fills ctx.key and ctx.app or throws the right 401/403.
 */
export async function authenticate(
  config: ConfigCache,
  ctx: RequestContext,
  h: Headers,
  now: number,
  otherKey?: string,
): Promise<Authenticated> {
  const sk = extractKey(h) ?? otherKey ?? null;
  if (!sk)
    throw new GatewayError(
      'missing_api_key',
      'No API key provided: send "Authorization: Bearer sk-..." (or x-api-key, or x-goog-api-key).',
    );
  if (sk.length > 256) throw new GatewayError('invalid_api_key', 'Incorrect API key provided.');
  const found = config.keyByHash(hashKey(sk));
  const key = found instanceof Promise ? await found : found;
  if (!key) throw new GatewayError('invalid_api_key', `Incorrect API key provided: ${sk.slice(0, 8)}…`);
  if (!key.enabled) throw new GatewayError('key_disabled', 'This API key is disabled.');
  if (!isEffective(key, now))
    throw new GatewayError(
      'key_expired',
      'This API key is not valid at this time (outside its effective window).',
    );
  const app = config.app(key.appId, now);
  if (!app || !app.enabled) throw new GatewayError('app_disabled', "This API key's app is disabled.");
  refuseDisabledGroup(config, key.tokenGroupId, now);
  return ctx.authenticated(key, app);
}

/**
 * A key in a disabled token group is refused, as a key of a disabled app is: `enabled` on a grouping of
 * keys switches its members off. (A group outside its effective window is no group: x1 price, no group limits.)
 */
export function refuseDisabledGroup(config: ConfigCache, tokenGroupId: string | null, now: number): void {
  if (tokenGroupId && config.tokenGroup(tokenGroupId, now)?.enabled === false) {
    throw new GatewayError('token_group_disabled', "This API key's token group is disabled.");
  }
}

/** Stage 2: which alias. Unknown, disabled and not-granted aliases all answer 404 (no existence leak). */
export function resolveAlias(config: ConfigCache, ctx: Authenticated, model: string, now: number): Routed {
  ctx.aliasName = model; // kept on a refusal too: the access line names what was asked for
  const alias = config.alias(model, now);
  const granted = !ctx.key.allowedAliases || ctx.key.allowedAliases.has(model);
  if (!alias || !alias.enabled || !granted) {
    throw new GatewayError(
      'model_not_found',
      `The model '${model.slice(0, 100)}' does not exist or you do not have access to it.`,
      { param: 'model' },
    );
  }
  return ctx.routed(model, alias);
}
