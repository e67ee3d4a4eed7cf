/**
 * Azure OpenAI as a channel: the OpenAI exchange, addressed the Azure way. The base URL decides the mode:
 *
 * - ends with `/openai/v1`: the v1 API. OpenAI's paths unchanged, the deployment name is `model` in the
 *   body, no api-version.
 * - anything else (the resource endpoint, `https://{resource}.openai.azure.com`, optionally with `/openai`):
 *   deployments. `/openai/deployments/{deployment}/<operation>?api-version=…`, the upstream model being the
 *   deployment name. The Responses API is not deployment-scoped there: `/openai/responses?api-version=…`
 *   with the deployment as `model`, which only preview api-versions serve; a channel on a GA version
 *   serves Responses clients through chat with `nativeResponses: false`. These are the paths the `openai`
 *   package's `AzureOpenAI` client builds.
 *
 * The credential travels in `api-key`. A channel header `Authorization` (a Microsoft Entra ID bearer
 * token) is the operator's explicit choice: it goes out and the api-key stays home.
 */
import { GatewayError } from '../core/errors.js';
import { openaiExchange } from './openai/exchange.js';
import { withCall } from './shared.js';
import type { Exchange, PreparedCall, UpstreamEndpoint } from './types.js';

/** The current GA data-plane inference api-version in Microsoft's REST reference. */
export const AZURE_GA_API_VERSION = '2024-10-21';

/** The OpenAI operation paths that live under `/deployments/{deployment}` on the resource endpoint. */
const DEPLOYMENT_PATHS: ReadonlySet<string> = new Set([
  '/chat/completions',
  '/embeddings',
  '/audio/speech',
  '/audio/transcriptions',
  '/audio/translations',
  '/images/edits',
]);

/** v1 mode: the base URL's path ends with `/openai/v1` (any trailing slash already trimmed or not). */
export function isAzureV1(baseUrl: string): boolean {
  return /\/openai\/v1\/?$/i.test(baseUrl);
}

/**
 * The upstream path for one OpenAI operation, relative to the channel's base URL (the transport joins
 * them). Pure: no I/O.
 */
export function azurePath(ep: UpstreamEndpoint, openaiPath: string, deployment: string): string {
  if (isAzureV1(ep.baseUrl)) return openaiPath;
  const prefix = /\/openai\/?$/i.test(ep.baseUrl) ? '' : '/openai';
  const version = `api-version=${encodeURIComponent(ep.apiVersion || AZURE_GA_API_VERSION)}`;
  if (openaiPath === '/responses') return `${prefix}/responses?${version}`;
  if (!DEPLOYMENT_PATHS.has(openaiPath))
    throw new GatewayError(
      'unsupported_operation',
      `an Azure deployments channel has no ${openaiPath} operation`,
    );
  return `${prefix}/deployments/${encodeURIComponent(deployment)}${openaiPath}?${version}`;
}

/** The call's headers with Azure's auth: the channel's Authorization (Entra ID) if set, else `api-key`. */
export function azureHeaders(h: Record<string, string>, ep: UpstreamEndpoint): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k in h) {
    const l = k.toLowerCase();
    if (l !== 'authorization' && l !== 'api-key') out[k] = h[k]!;
  }
  let own = false;
  for (const k in ep.headers) {
    const l = k.toLowerCase();
    if (l === 'authorization' || l === 'api-key') {
      out[k] = ep.headers[k]!;
      own = true;
    }
  }
  if (!own && ep.credential) out['api-key'] = ep.credential;
  return out;
}

/** The OpenAI exchange with its call re-addressed for Azure. */
export function azureExchange(...args: Parameters<typeof openaiExchange>): Exchange {
  const ex = openaiExchange(...args);
  const [, , ep, upstreamModel] = args;
  const call: PreparedCall = {
    ...ex.call,
    path: azurePath(ep, ex.call.path, upstreamModel),
    headers: azureHeaders(ex.call.headers, ep),
  };
  return withCall(ex, call);
}
