/**
 * Fake Azure OpenAI upstream: the fake OpenAI's routes (openai.ts) under Azure's addresses, so the `openai`
 * package's `AzureOpenAI` client (and the gateway's azure channels) work against it unchanged.
 *
 *  - deployments: `/openai/deployments/{deployment}/<operation>?api-version=…` (the deployment answers as
 *    the model), and `/openai/responses?api-version=…` (not deployment-scoped, model in the body). No
 *    api-version is Azure's 404 "Resource not found"; one that isn't a dated version is a 400.
 *  - v1: `/openai/v1/<operation>`, OpenAI's paths and bodies, no api-version.
 *  - auth: the `api-key` header, or `Authorization: Bearer` (a Microsoft Entra ID token); a missing or
 *    wrong one is Azure's 401.
 *  - errors in Azure's shape: `{"error":{"code","message"}}`.
 *  - content filter: a prompt containing AZURE_CONTENT_FILTER_TRIGGER, or the `contentFilter` switch,
 *    answers Azure's 400 (`code: content_filter`, `innererror.code: ResponsibleAIPolicyViolation`).
 *  - streams begin with Azure's `prompt_filter_results` chunk (empty `choices`, empty id and model) while
 *    the `promptFilterResults` switch is on (the default, as the real service does).
 */
import type { IncomingMessage } from 'node:http';
import {
  type AuthFailure,
  type FakeContext,
  type FakeOptions,
  type FakeUpstream,
  isObject,
  type ProviderSpec,
  sendJson,
  startFakeServer,
} from './common.js';
import { openaiSpec } from './openai.js';

/** A prompt containing this text is refused by the fake's content filter. */
export const AZURE_CONTENT_FILTER_TRIGGER = 'trip-the-content-filter';

export interface AzureSwitches {
  /** Every chat, responses and embeddings request answers the content-filter 400. */
  contentFilter: boolean;
  /** Chat streams begin with the `prompt_filter_results` chunk. */
  promptFilterResults: boolean;
}

export interface FakeAzureOptions extends FakeOptions {
  /** The Entra ID token accepted as `Authorization: Bearer` (default: any, unless apiKey is set). */
  entraToken?: string;
}

export interface FakeAzureUpstream extends FakeUpstream {
  readonly azure: AzureSwitches;
}

/** Azure's own error envelope (its gateway's 401/404/429 and the like): code and message. */
export function azureErrorBody(status: number, message: string, code?: string): unknown {
  return { error: { code: code ?? String(status), message } };
}

const SAFE = { filtered: false, severity: 'safe' };
const SAFE_RESULTS = { hate: SAFE, self_harm: SAFE, sexual: SAFE, violence: SAFE };

/** The leading chunk of an Azure chat stream: the prompt's filter results, no choices. */
export const PROMPT_FILTER_CHUNK = {
  choices: [],
  created: 0,
  id: '',
  model: '',
  object: '',
  prompt_filter_results: [{ prompt_index: 0, content_filter_results: SAFE_RESULTS }],
};

/** The body of Azure's content-filter refusal. */
export function contentFilterBody(): unknown {
  return {
    error: {
      message:
        "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.",
      type: null,
      param: 'prompt',
      code: 'content_filter',
      status: 400,
      innererror: {
        code: 'ResponsibleAIPolicyViolation',
        content_filter_result: { ...SAFE_RESULTS, violence: { filtered: true, severity: 'high' } },
      },
    },
  };
}

const ACCESS_DENIED =
  'Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.';

function checkAuth(entraToken: string | undefined) {
  return (req: IncomingMessage, expected: string | undefined): AuthFailure | null => {
    const key = req.headers['api-key'];
    if (typeof key === 'string' && key)
      return expected === undefined || key === expected ? null : { status: 401, message: ACCESS_DENIED };
    const h = req.headers.authorization;
    const m = typeof h === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
    if (m) {
      const want = entraToken ?? expected;
      return want === undefined || m[1] === want ? null : { status: 401, message: ACCESS_DENIED };
    }
    return {
      status: 401,
      message:
        'Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.',
    };
  };
}

/** Whether the request's text asks for the content filter. */
function trips(body: unknown): boolean {
  if (!isObject(body)) return false;
  return JSON.stringify([body.messages, body.input, body.prompt]).includes(AZURE_CONTENT_FILTER_TRIGGER);
}

/** Writes the prompt-filter chunk ahead of the first event the OpenAI handler streams. */
function leadWithPromptFilter(ctx: FakeContext): void {
  const res = ctx.res;
  const write = res.write.bind(res) as (...a: unknown[]) => boolean;
  let first = true;
  res.write = ((...args: unknown[]) => {
    if (first) {
      first = false;
      write(`data: ${JSON.stringify(PROMPT_FILTER_CHUNK)}\n\n`);
    }
    return write(...args);
  }) as typeof res.write;
}

const DATED = /^\d{4}-\d{2}-\d{2}(-preview)?$/;

function makeSpec(inner: ProviderSpec, sw: AzureSwitches, entraToken: string | undefined): ProviderSpec {
  return {
    defaultName: 'fake-azure',
    requestIdHeader: 'apim-request-id',
    errorBody: azureErrorBody,
    checkAuth: checkAuth(entraToken),
    async route(ctx, s) {
      let op: string;
      if (ctx.path.startsWith('/openai/v1/')) op = ctx.path.slice('/openai/v1'.length);
      else {
        const m = /^\/openai\/deployments\/([^/]+)(\/.+)$/.exec(ctx.path);
        if (!m && ctx.path !== '/openai/responses') return false;
        const version = ctx.query.get('api-version');
        if (!version) {
          sendJson(ctx, 404, azureErrorBody(404, 'Resource not found'));
          return true;
        }
        if (!DATED.test(version)) {
          sendJson(ctx, 400, azureErrorBody(400, 'API version not supported', 'BadRequest'));
          return true;
        }
        op = m ? m[2]! : '/responses';
        // The deployment decides the model; the body's `model`, if any, is not what answers.
        if (m && ctx.bodyIsJson && isObject(ctx.body)) ctx.body.model = decodeURIComponent(m[1]!);
      }
      const filtered = op === '/chat/completions' || op === '/responses' || op === '/embeddings';
      if (filtered && (sw.contentFilter || trips(ctx.body))) {
        sendJson(ctx, 400, contentFilterBody());
        return true;
      }
      if (
        op === '/chat/completions' &&
        sw.promptFilterResults &&
        isObject(ctx.body) &&
        ctx.body.stream === true
      )
        leadWithPromptFilter(ctx);
      ctx.path = '/v1' + op;
      return inner.route(ctx, s);
    },
  };
}

/** Starts a fake Azure OpenAI server on 127.0.0.1 (port 0 = random). */
export async function startFakeAzure(opts: FakeAzureOptions = {}): Promise<FakeAzureUpstream> {
  let url = '';
  const azure: AzureSwitches = { contentFilter: false, promptFilterResults: true };
  const up = await startFakeServer(
    makeSpec(
      openaiSpec(() => url),
      azure,
      opts.entraToken,
    ),
    {
      name: 'fake-azure',
      ...opts,
    },
  );
  url = up.url;
  return Object.assign(up, { azure });
}
