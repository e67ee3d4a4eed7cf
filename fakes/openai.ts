/**
 * Fake OpenAI upstream: chat completions (JSON + SSE, tool calls), embeddings (float + base64) and models,
 * legacy completions and moderations (text.ts),
 * speaking the real wire format so the official `openai` client works against it unchanged. The Responses API
 * (responses.ts), audio speech/transcriptions/translations (audio.ts) and images/videos (media.ts) are served by
 * the same server.
 *
 * Deterministic behaviour:
 *  - text reply: "Hello from <name>: <first 40 chars of the last user message>";
 *  - last message has role `tool`: "Tool said: <its content>";
 *  - `tools` present, tool_choice !== 'none' and last message is `user`: tool call(s) with arguments
 *    {"query": <last user text>} (the forced function, else the first tool; the first two when parallel).
 */
import type { IncomingMessage } from 'node:http';
import {
  applyStop,
  chunkText,
  type FakeContext,
  type FakeOptions,
  head,
  isObject,
  type ProviderSpec,
  rid,
  sendError,
  sendJson,
  splitEven,
  SseWriter,
  startFakeServer,
  truncateWords,
  wordCount,
} from './common.js';
import { openaiAudioRoute } from './audio.js';
import { type FakeMediaUpstream, JobBook, openaiMediaRoute } from './media.js';
import { openaiResponsesRoute, ResponseStore } from './responses.js';
import { openaiTextRoute } from './text.js';

const MODELS = [
  'gpt-4o',
  'gpt-4o-mini',
  'gpt-4.1',
  'gpt-4.1-mini',
  'o3-mini',
  'text-embedding-3-small',
  'text-embedding-3-large',
];
const MODELS_CREATED = 1_700_000_000;
const TOOL_CALL_TOKENS = 10;

/** OpenAI's error envelope: {"error":{"message","type","param","code"}}. */
export function openaiErrorBody(status: number, message: string, code?: string): unknown {
  let type = 'invalid_request_error';
  let c: string | null = code ?? null;
  if (status === 401) {
    type = 'authentication_error';
    c ??= 'invalid_api_key';
  } else if (status === 403) type = 'permission_error';
  else if (status === 429) {
    if (code === 'insufficient_quota') type = 'insufficient_quota';
    else {
      type = 'rate_limit_error';
      c ??= 'rate_limit_exceeded';
    }
  } else if (status >= 500) type = 'server_error';
  return { error: { message, type, param: null, code: c } };
}

function checkAuth(req: IncomingMessage, expected: string | undefined): string | null {
  const h = req.headers.authorization;
  const m = typeof h === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
  if (!m)
    return "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).";
  if (expected !== undefined && m[1] !== expected)
    return `Incorrect API key provided: ${m[1]!.slice(0, 3)}***. You can find your API key at https://platform.openai.com/account/api-keys.`;
  return null;
}

/** Text of a chat message's `content`: a string, or an array of parts of which the `text` ones count. */
function contentText(c: unknown): string {
  if (typeof c === 'string') return c;
  if (!Array.isArray(c)) return '';
  let s = '';
  for (const p of c) if (isObject(p) && typeof p.text === 'string') s += p.text;
  return s;
}

/** Which functions to call, or [] for a text reply. */
function pickTools(b: Record<string, unknown>, lastRole: unknown): string[] {
  if (!Array.isArray(b.tools) || lastRole !== 'user' || b.tool_choice === 'none') return [];
  const names: string[] = [];
  for (const t of b.tools) {
    const fn = isObject(t) ? (isObject(t.function) ? t.function : t) : null;
    if (fn && typeof fn.name === 'string') names.push(fn.name);
  }
  if (!names.length) return [];
  const tc = b.tool_choice;
  if (isObject(tc) && isObject(tc.function) && typeof tc.function.name === 'string')
    return [tc.function.name];
  return b.parallel_tool_calls !== false && names.length >= 2 ? names.slice(0, 2) : names.slice(0, 1);
}

function usage(prompt: number, completion: number) {
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: 0,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  };
}

interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

async function chatCompletions(ctx: FakeContext, spec: ProviderSpec): Promise<void> {
  const b = ctx.body;
  if (!ctx.bodyIsJson || !isObject(b))
    return sendError(
      ctx,
      spec,
      400,
      "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)",
    );
  if (typeof b.model !== 'string' || !b.model)
    return sendError(ctx, spec, 400, 'you must provide a model parameter');
  if (!Array.isArray(b.messages) || b.messages.length === 0)
    return sendError(ctx, spec, 400, "'messages' is a required property and must be a non-empty array");
  const msgs = b.messages as unknown[];

  let chars = 0;
  let lastUser = '';
  for (const m of msgs) {
    if (!isObject(m))
      return sendError(ctx, spec, 400, "Invalid type for 'messages': each message must be an object");
    const t = contentText(m.content);
    chars += t.length;
    if (m.role === 'user') lastUser = t;
  }
  const last = msgs[msgs.length - 1] as Record<string, unknown>;
  const promptTokens = Math.ceil(chars / 4) + 1;
  const n = typeof b.n === 'number' && Number.isInteger(b.n) && b.n > 1 ? Math.min(b.n, 128) : 1;
  const toolNames = pickTools(b, last.role);
  const model = b.model;
  const id = `chatcmpl-${rid(29)}`;
  const created = Math.floor(Date.now() / 1000);

  // Text reply, cut by `stop` and by the token limit (one word = one token here).
  let text =
    last.role === 'tool'
      ? `Tool said: ${contentText(last.content)}`
      : `Hello from ${ctx.name}: ${head(lastUser, 40)}`;
  text = applyStop(text, b.stop).text;
  const cut = truncateWords(text, b.max_completion_tokens ?? b.max_tokens);
  text = cut.text;
  const argsJson = JSON.stringify({ query: lastUser });
  const makeCalls = (): ToolCall[] =>
    toolNames.map((name) => ({
      id: `call_${rid(24)}`,
      type: 'function',
      function: { name, arguments: argsJson },
    }));
  const finishReason = toolNames.length ? 'tool_calls' : cut.truncated ? 'length' : 'stop';

  if (b.stream !== true) {
    const choices = [];
    for (let i = 0; i < n; i++) {
      const message = toolNames.length
        ? { role: 'assistant', content: null, tool_calls: makeCalls(), refusal: null, annotations: [] }
        : { role: 'assistant', content: text, refusal: null, annotations: [] };
      choices.push({ index: i, message, logprobs: null, finish_reason: finishReason });
    }
    const completion = (toolNames.length ? TOOL_CALL_TOKENS : wordCount(text)) * n;
    return sendJson(ctx, 200, {
      id,
      object: 'chat.completion',
      created,
      model,
      choices,
      usage: usage(promptTokens, completion),
      service_tier: 'default',
      system_fingerprint: 'fp_fake',
    });
  }

  // ---- streaming ----
  const includeUsage = isObject(b.stream_options) && b.stream_options.include_usage === true;
  // The envelope is the same for every chunk: stringify it once, then only `choices` (and the usage) per event.
  const base = JSON.stringify({
    id,
    object: 'chat.completion.chunk',
    created,
    model,
    service_tier: 'default',
    system_fingerprint: 'fp_fake',
  });
  const prefix = `data: ${base.slice(0, -1)},"choices":`;
  const event = (choices: unknown[], u: unknown = null): string =>
    prefix + JSON.stringify(choices) + (includeUsage ? `,"usage":${JSON.stringify(u)}}\n\n` : '}\n\n');

  // Deltas for one choice, in order; the role delta first and the finish delta last.
  type Step = { delta: Record<string, unknown>; finish: string | null };
  const pieces = toolNames.length ? [] : chunkText(text, ctx.fault?.chunks ?? 5, !cut.truncated);
  const stepsFor = (): Step[] => {
    if (!toolNames.length) {
      return [
        { delta: { role: 'assistant', content: '', refusal: null }, finish: null },
        ...pieces.map((content) => ({ delta: { content }, finish: null })),
        { delta: {}, finish: finishReason },
      ];
    }
    const steps: Step[] = [{ delta: { role: 'assistant', content: null, refusal: null }, finish: null }];
    makeCalls().forEach((call, index) => {
      steps.push({
        delta: {
          tool_calls: [
            { index, id: call.id, type: 'function', function: { name: call.function.name, arguments: '' } },
          ],
        },
        finish: null,
      });
      for (const frag of splitEven(call.function.arguments, 3))
        steps.push({ delta: { tool_calls: [{ index, function: { arguments: frag } }] }, finish: null });
    });
    steps.push({ delta: {}, finish: finishReason });
    return steps;
  };
  const perChoice: Step[][] = [];
  for (let i = 0; i < n; i++) perChoice.push(stepsFor());

  const sse = new SseWriter(ctx);
  const steps = perChoice[0]!.length;
  for (let s = 0; s < steps; s++) {
    for (let i = 0; i < n; i++) {
      const st = perChoice[i]![s]!;
      if (!(await sse.send(event([{ index: i, delta: st.delta, logprobs: null, finish_reason: st.finish }]))))
        return;
    }
  }
  if (includeUsage) {
    const completion = (toolNames.length ? TOOL_CALL_TOKENS : wordCount(pieces.join(''))) * n;
    if (!(await sse.send(event([], usage(promptTokens, completion))))) return;
  }
  await sse.end('data: [DONE]\n\n');
}

// ---- embeddings ----

/** Deterministic unit vector derived from the input: FNV-1a seed, mulberry32 stream, L2-normalized. */
export function fakeEmbedding(key: string, dims: number): Float32Array {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  const v = new Float32Array(dims);
  let norm = 0;
  for (let i = 0; i < dims; i++) {
    h = (h + 0x6d2b79f5) | 0;
    let t = Math.imul(h ^ (h >>> 15), 1 | h);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    const x = ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
    v[i] = x;
    norm += x * x;
  }
  norm = Math.sqrt(norm) || 1;
  for (let i = 0; i < dims; i++) v[i] = v[i]! / norm;
  return v;
}

function embeddings(ctx: FakeContext, spec: ProviderSpec): void {
  const b = ctx.body;
  if (!ctx.bodyIsJson || !isObject(b))
    return sendError(ctx, spec, 400, 'We could not parse the JSON body of your request.');
  if (typeof b.model !== 'string' || !b.model)
    return sendError(ctx, spec, 400, 'you must provide a model parameter');
  const input = b.input;
  const isTokens = (a: unknown): a is number[] =>
    Array.isArray(a) && a.length > 0 && a.every((x) => typeof x === 'number');
  // Each input as [hash key, token count].
  let items: Array<[string, number]>;
  if (typeof input === 'string' && input) items = [[input, Math.ceil(input.length / 4)]];
  else if (isTokens(input)) items = [[input.join(','), input.length]];
  else if (Array.isArray(input) && input.length && input.every((s) => typeof s === 'string' && s))
    items = (input as string[]).map((s) => [s, Math.ceil(s.length / 4)]);
  else if (Array.isArray(input) && input.length && input.every(isTokens))
    items = (input as number[][]).map((t) => [t.join(','), t.length]);
  else
    return sendError(
      ctx,
      spec,
      400,
      "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
    );
  const dims = b.dimensions ?? 8;
  if (typeof dims !== 'number' || !Number.isInteger(dims) || dims < 1 || dims > 4096)
    return sendError(ctx, spec, 400, 'dimensions must be an integer between 1 and 4096');
  const fmt = b.encoding_format ?? 'float';
  if (fmt !== 'float' && fmt !== 'base64')
    return sendError(ctx, spec, 400, "encoding_format must be 'float' or 'base64'");

  let tokens = 0;
  const data = items.map(([key, t], index) => {
    tokens += t;
    const v = fakeEmbedding(key, dims);
    const embedding =
      fmt === 'base64' ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') : Array.from(v);
    return { object: 'embedding', index, embedding };
  });
  sendJson(ctx, 200, {
    object: 'list',
    data,
    model: b.model,
    usage: { prompt_tokens: tokens, total_tokens: tokens },
  });
}

const modelObject = (id: string) => ({
  id,
  object: 'model',
  created: MODELS_CREATED,
  owned_by: id.startsWith('text-') ? 'openai-internal' : 'system',
});

const makeSpec = (book: JobBook, responses: ResponseStore): ProviderSpec => ({
  defaultName: 'fake-openai',
  requestIdHeader: 'x-request-id',
  errorBody: openaiErrorBody,
  checkAuth,
  async route(ctx, s) {
    const { method, path } = ctx;
    if (method === 'POST' && path === '/v1/chat/completions') await chatCompletions(ctx, s);
    else if (method === 'POST' && path === '/v1/embeddings') embeddings(ctx, s);
    else if (method === 'GET' && path === '/v1/models')
      sendJson(ctx, 200, { object: 'list', data: MODELS.map(modelObject) });
    else if (method === 'GET' && path.startsWith('/v1/models/'))
      sendJson(ctx, 200, modelObject(decodeURIComponent(path.slice('/v1/models/'.length))));
    else
      return (
        (await openaiResponsesRoute(ctx, s, responses)) ||
        (await openaiAudioRoute(ctx, s)) ||
        (await openaiTextRoute(ctx, s)) ||
        openaiMediaRoute(ctx, s, book)
      );
    return true;
  },
});

/** Starts a fake OpenAI server on 127.0.0.1 (port 0 = random): responses, audio, images and videos included. */
export async function startFakeOpenAI(opts: FakeOptions = {}): Promise<FakeMediaUpstream> {
  let url = '';
  const book = new JobBook(() => url);
  const up = await startFakeServer(makeSpec(book, new ResponseStore()), opts);
  url = up.url;
  return Object.assign(up, { book });
}

/** The fake OpenAI's routes as a spec, for fakes that serve OpenAI's API under other paths (azure.ts). */
export function openaiSpec(publicUrl: () => string): ProviderSpec {
  return makeSpec(new JobBook(publicUrl), new ResponseStore());
}
