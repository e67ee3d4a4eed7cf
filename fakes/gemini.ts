/**
 * Fake Google Gemini upstream: the Generative Language API (v1beta; v1 answers the same), so the official
 * `@google/genai` client works against it unchanged (`httpOptions: { baseUrl: fake.url }`).
 *
 *   POST /v1beta/models/{model}:generateContent       -> GenerateContentResponse
 *   POST /v1beta/models/{model}:streamGenerateContent -> with ?alt=sse: `data: <GenerateContentResponse>\r\n\r\n`
 *        events (no terminator); without it, one JSON array of them, streamed
 *   POST /v1beta/models/{model}:countTokens           -> {totalTokens, promptTokensDetails}
 *   POST /v1beta/models/{model}:embedContent          -> {embedding: {values}} (768 dims, or outputDimensionality)
 *   POST /v1beta/models/{model}:batchEmbedContents    -> {embeddings: [{values}]}
 *   GET  /v1beta/models (pageSize, pageToken)          -> {models: [Model], nextPageToken?}
 *   GET  /v1beta/models/{model}                        -> Model
 *
 * Auth: `x-goog-api-key` header or `?key=`. None -> 403 PERMISSION_DENIED; a key other than opts.apiKey -> 400
 * INVALID_ARGUMENT with reason API_KEY_INVALID, as Google answers. Errors: {error: {code, message, status}}.
 *
 * Deterministic behaviour (mirrors the fake OpenAI):
 *  - text reply: "Hello from <name>: <first 40 chars of the last user text>";
 *  - the last content carries a functionResponse: "Tool said: <JSON of that functionResponse.response>";
 *  - function declarations present, functionCallingConfig.mode !== 'NONE' and the last content is user text:
 *    functionCall part(s) with args {"query": <last user text>} (allowedFunctionNames, else the declared
 *    functions: the first two when there are two or more), finishReason STOP;
 *  - generationConfig: stopSequences cut the text, maxOutputTokens keeps that many words (finishReason
 *    MAX_TOKENS), candidateCount answers that many candidates, responseMimeType 'application/json' wraps the
 *    text as {"text": ...} (streamed in one piece);
 *  - usage: promptTokenCount = ceil(prompt chars / 4) + 1 (+ 258 per inlineData part), candidatesTokenCount =
 *    words (10 for function calls); cachedContentTokenCount when the request names a cachedContent.
 * Streaming: the text in `chunks` pieces, one per event; like Google, every event carries usageMetadata with
 * the prompt count only, and the last one has the finishReason and the full usage.
 */
import type { IncomingMessage } from 'node:http';
import {
  applyStop,
  type AuthFailure,
  ChunkWriter,
  chunkText,
  type FakeContext,
  type FakeOptions,
  type FakeUpstream,
  head,
  isObject,
  type ProviderSpec,
  rid,
  sendError,
  sendJson,
  SseWriter,
  startFakeServer,
  truncateWords,
  wordCount,
} from './common.js';
import { fakeEmbedding } from './openai.js';

const MODELS = [
  'gemini-2.5-pro',
  'gemini-2.5-flash',
  'gemini-2.5-flash-lite',
  'gemini-2.0-flash',
  'gemini-embedding-001',
];
const TOOL_CALL_TOKENS = 10;
const IMAGE_TOKENS = 258;

const STATUS_NAMES: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  409: 'ABORTED',
  413: 'INVALID_ARGUMENT',
  429: 'RESOURCE_EXHAUSTED',
  499: 'CANCELLED',
  500: 'INTERNAL',
  501: 'NOT_IMPLEMENTED',
  502: 'UNAVAILABLE',
  503: 'UNAVAILABLE',
  504: 'DEADLINE_EXCEEDED',
};
const CANONICAL = new Set([...Object.values(STATUS_NAMES), 'FAILED_PRECONDITION', 'OUT_OF_RANGE', 'UNKNOWN']);

/**
 * Google's error envelope: {"error":{"code","message","status"}}. `code` (Fault.errorCode) is either a canonical
 * status name that overrides `status` (e.g. 'FAILED_PRECONDITION'), or a reason such as 'API_KEY_INVALID' that
 * goes into `details` as a google.rpc.ErrorInfo.
 */
export function geminiErrorBody(status: number, message: string, code?: string): unknown {
  const name =
    code && CANONICAL.has(code)
      ? code
      : (STATUS_NAMES[status] ?? (status >= 500 ? 'INTERNAL' : 'FAILED_PRECONDITION'));
  const error: Record<string, unknown> = { code: status, message, status: name };
  if (code && !CANONICAL.has(code))
    error.details = [
      {
        '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
        reason: code,
        domain: 'googleapis.com',
        metadata: { service: 'generativelanguage.googleapis.com' },
      },
    ];
  return { error };
}

function checkAuth(req: IncomingMessage, expected: string | undefined): AuthFailure | null {
  let key = req.headers['x-goog-api-key'];
  if (typeof key !== 'string' || !key) {
    const q = (req.url ?? '').indexOf('?');
    key = q < 0 ? undefined : (new URLSearchParams(req.url!.slice(q + 1)).get('key') ?? undefined);
  }
  if (!key)
    return {
      status: 403,
      message:
        "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
    };
  if (expected !== undefined && key !== expected)
    return {
      status: 400,
      message: 'API key not valid. Please pass a valid API key.',
      code: 'API_KEY_INVALID',
    };
  return null;
}

// ---- request reading ----

interface Prompt {
  chars: number;
  images: number;
  lastUserText: string;
  /** The last content: its role, its text, and the `response` of its last functionResponse part (if any). */
  last: { role: string; text: string; functionResponse: unknown } | undefined;
}

/** Adds one Content's parts to the prompt; an error message when it is not a valid Content. */
function readContent(c: unknown, where: string, p: Prompt): string | null {
  if (!isObject(c)) return `Invalid value at '${where}': expected a Content object.`;
  const role = c.role ?? 'user';
  if (role !== 'user' && role !== 'model' && role !== 'function')
    return `Please use a valid role: user, model.`;
  if (!Array.isArray(c.parts) || c.parts.length === 0)
    return `* GenerateContentRequest.${where}.parts: contents.parts must not be empty.\n`;
  let text = '';
  let functionResponse: unknown;
  for (const part of c.parts) {
    if (!isObject(part)) return `Invalid value at '${where}.parts': expected a Part object.`;
    if (typeof part.text === 'string') text += part.text;
    else if (isObject(part.functionCall)) p.chars += JSON.stringify(part.functionCall.args ?? {}).length;
    else if (isObject(part.functionResponse)) {
      functionResponse = part.functionResponse.response ?? {};
      p.chars += JSON.stringify(functionResponse).length;
    } else if (isObject(part.inlineData) || isObject(part.fileData)) p.images++;
  }
  p.chars += text.length;
  if (role === 'user' && text) p.lastUserText = text;
  p.last = { role: role as string, text, functionResponse };
  return null;
}

/** The whole prompt of a request (contents + systemInstruction), or an error message. */
function readPrompt(b: Record<string, unknown>): Prompt | string {
  if (!Array.isArray(b.contents) || b.contents.length === 0)
    return '* GenerateContentRequest.contents: contents is not specified\n';
  const p: Prompt = { chars: 0, images: 0, lastUserText: '', last: undefined };
  if (b.systemInstruction !== undefined) {
    const s: unknown = b.systemInstruction;
    if (typeof s === 'string') p.chars += s.length;
    else {
      const sub: Prompt = { chars: 0, images: 0, lastUserText: '', last: undefined };
      // The role of a system instruction does not matter.
      const err = readContent(isObject(s) ? { ...s, role: 'user' } : s, 'system_instruction', sub);
      if (err) return err;
      p.chars += sub.chars;
    }
  }
  for (let i = 0; i < b.contents.length; i++) {
    const err = readContent(b.contents[i], `contents[${i}]`, p);
    if (err) return err;
  }
  return p;
}

const promptTokens = (p: Prompt): number => Math.ceil(p.chars / 4) + 1 + p.images * IMAGE_TOKENS;

const promptDetails = (p: Prompt) => [
  { modality: 'TEXT', tokenCount: promptTokens(p) - p.images * IMAGE_TOKENS },
  ...(p.images ? [{ modality: 'IMAGE', tokenCount: p.images * IMAGE_TOKENS }] : []),
];

/** Names of the functions to call, or [] for a text reply. */
function pickFunctions(b: Record<string, unknown>, p: Prompt): string[] {
  if (
    !Array.isArray(b.tools) ||
    p.last?.role !== 'user' ||
    !p.last.text ||
    p.last.functionResponse !== undefined
  )
    return [];
  const declared: string[] = [];
  for (const t of b.tools)
    if (isObject(t) && Array.isArray(t.functionDeclarations))
      for (const d of t.functionDeclarations)
        if (isObject(d) && typeof d.name === 'string') declared.push(d.name);
  const cfg =
    isObject(b.toolConfig) && isObject(b.toolConfig.functionCallingConfig)
      ? b.toolConfig.functionCallingConfig
      : {};
  if (!declared.length || cfg.mode === 'NONE') return [];
  const allowed = Array.isArray(cfg.allowedFunctionNames)
    ? cfg.allowedFunctionNames.filter((n): n is string => typeof n === 'string')
    : [];
  const names = allowed.length ? allowed : declared;
  return names.length >= 2 ? names.slice(0, 2) : names.slice(0, 1);
}

// ---- generateContent ----

async function generate(
  ctx: FakeContext,
  spec: ProviderSpec,
  model: string,
  mode: 'json' | 'sse' | 'array',
): Promise<void> {
  const b = ctx.body;
  if (!ctx.bodyIsJson || !isObject(b))
    return sendError(ctx, spec, 400, 'Invalid JSON payload received. Unexpected token.');
  const p = readPrompt(b);
  if (typeof p === 'string') return sendError(ctx, spec, 400, p);
  const cfg = isObject(b.generationConfig) ? b.generationConfig : {};
  const n =
    typeof cfg.candidateCount === 'number' && Number.isInteger(cfg.candidateCount) && cfg.candidateCount > 1
      ? Math.min(cfg.candidateCount, 8)
      : 1;
  const fnNames = pickFunctions(b, p);
  const args = { query: p.lastUserText };

  // Text reply, cut by the stop sequences and by the token limit (one word = one token here).
  let text =
    p.last?.functionResponse !== undefined
      ? `Tool said: ${JSON.stringify(p.last.functionResponse)}`
      : `Hello from ${ctx.name}: ${head(p.lastUserText, 40)}`;
  text = applyStop(text, cfg.stopSequences).text;
  const cut = fnNames.length ? { text, truncated: false } : truncateWords(text, cfg.maxOutputTokens);
  const json = cfg.responseMimeType === 'application/json';
  const finishReason = cut.truncated ? 'MAX_TOKENS' : 'STOP';

  const prompt = promptTokens(p);
  const cached = typeof b.cachedContent === 'string' && b.cachedContent ? Math.floor(prompt / 2) : 0;
  const usage = (candidates: number) => ({
    promptTokenCount: prompt,
    candidatesTokenCount: candidates,
    totalTokenCount: prompt + candidates,
    ...(cached ? { cachedContentTokenCount: cached } : {}),
    promptTokensDetails: promptDetails(p),
    ...(cached ? { cacheTokensDetails: [{ modality: 'TEXT', tokenCount: cached }] } : {}),
  });
  const responseId = rid(22);
  const envelope = (candidates: unknown[], usageMetadata: unknown) => ({
    candidates,
    usageMetadata,
    modelVersion: model,
    responseId,
  });
  const candidates = (parts: unknown[], finish: string | undefined) =>
    Array.from({ length: n }, (_, index) => ({
      content: { parts, role: 'model' },
      ...(finish ? { finishReason: finish } : {}),
      index,
    }));
  const callParts = fnNames.map((name) => ({ functionCall: { name, args } }));
  const wrap = (t: string): string => (json ? JSON.stringify({ text: t }) : t);

  if (mode === 'json') {
    const parts = fnNames.length ? callParts : [{ text: wrap(cut.text) }];
    const out = (fnNames.length ? TOOL_CALL_TOKENS : wordCount(cut.text)) * n;
    return sendJson(ctx, 200, envelope(candidates(parts, finishReason), usage(out)));
  }

  // ---- streaming: one GenerateContentResponse per chunk ----
  const chunks: unknown[] = [];
  if (fnNames.length) chunks.push(envelope(candidates(callParts, finishReason), usage(TOOL_CALL_TOKENS * n)));
  else {
    const pieces = json ? [wrap(cut.text)] : chunkText(cut.text, ctx.fault?.chunks ?? 5, !cut.truncated);
    const out = wordCount(json ? cut.text : pieces.join('')) * n;
    const partial = {
      promptTokenCount: prompt,
      totalTokenCount: prompt,
      promptTokensDetails: promptDetails(p),
    };
    pieces.forEach((t, i) => {
      const lastPiece = i === pieces.length - 1;
      chunks.push(
        envelope(
          candidates([{ text: t }], lastPiece ? finishReason : undefined),
          lastPiece ? usage(out) : partial,
        ),
      );
    });
  }
  if (mode === 'sse') {
    const sse = new SseWriter(ctx);
    for (const c of chunks) if (!(await sse.send(`data: ${JSON.stringify(c)}\r\n\r\n`))) return;
    return sse.end();
  }
  // Without alt=sse Google streams one JSON array, element by element.
  const w = new ChunkWriter(ctx, { 'content-type': 'application/json; charset=UTF-8' });
  for (const [i, c] of chunks.entries()) if (!(await w.send((i ? ',\r\n' : '[') + JSON.stringify(c)))) return;
  await w.end(']');
}

function countTokens(ctx: FakeContext, spec: ProviderSpec): void {
  const b = ctx.body;
  if (!ctx.bodyIsJson || !isObject(b))
    return sendError(ctx, spec, 400, 'Invalid JSON payload received. Unexpected token.');
  const req = isObject(b.generateContentRequest) ? b.generateContentRequest : b;
  const p = readPrompt(req);
  if (typeof p === 'string') return sendError(ctx, spec, 400, p);
  sendJson(ctx, 200, { totalTokens: promptTokens(p), promptTokensDetails: promptDetails(p) });
}

// ---- embeddings ----

/** Text of an embedContent request's `content` (its text parts), or an error message. */
function embedText(c: unknown): string | null {
  if (!isObject(c) || !Array.isArray(c.parts) || c.parts.length === 0) return null;
  let s = '';
  for (const p of c.parts) {
    if (!isObject(p) || typeof p.text !== 'string') return null;
    s += p.text;
  }
  return s;
}

const EMBED_DIMS = 768;

function embedOne(req: Record<string, unknown>): { values: number[] } | string {
  const text = embedText(req.content);
  if (text === null) return '* content: must have parts with text.';
  const dims = req.outputDimensionality === undefined ? EMBED_DIMS : Number(req.outputDimensionality);
  if (!Number.isInteger(dims) || dims < 1 || dims > 3072)
    return '* outputDimensionality: must be an integer in [1, 3072].';
  return { values: Array.from(fakeEmbedding(text, dims)) };
}

/** POST models/{m}:embedContent -> {embedding:{values}}; :batchEmbedContents -> {embeddings:[{values}]}. */
function embed(ctx: FakeContext, spec: ProviderSpec, model: string, batch: boolean): void {
  const b = ctx.body;
  if (!ctx.bodyIsJson || !isObject(b))
    return sendError(ctx, spec, 400, 'Invalid JSON payload received. Unexpected token.');
  if (!batch) {
    const e = embedOne(b);
    return typeof e === 'string' ? sendError(ctx, spec, 400, e) : sendJson(ctx, 200, { embedding: e });
  }
  if (!Array.isArray(b.requests) || b.requests.length === 0)
    return sendError(ctx, spec, 400, '* requests: must be a non-empty array.');
  const out: Array<{ values: number[] }> = [];
  for (const r of b.requests) {
    if (!isObject(r)) return sendError(ctx, spec, 400, '* requests[]: must be objects.');
    if (typeof r.model === 'string' && r.model !== `models/${model}`)
      return sendError(
        ctx,
        spec,
        400,
        `* BatchEmbedContentsRequest.requests: model must be models/${model}.`,
      );
    const e = embedOne(r);
    if (typeof e === 'string') return sendError(ctx, spec, 400, e);
    out.push(e);
  }
  sendJson(ctx, 200, { embeddings: out });
}

// ---- models ----

function modelObject(id: string) {
  const embedding = id.includes('embedding');
  const pretty = id.replace(/^gemini-/, 'Gemini ').replace(/-/g, ' ');
  return {
    name: `models/${id}`,
    version: '001',
    displayName: pretty,
    description: `Fake ${pretty}`,
    inputTokenLimit: embedding ? 2048 : 1_048_576,
    outputTokenLimit: embedding ? 1 : id.startsWith('gemini-2.0') ? 8192 : 65_536,
    supportedGenerationMethods: embedding
      ? ['embedContent', 'countTextTokens', 'countTokens', 'asyncBatchEmbedContent']
      : ['generateContent', 'countTokens', 'createCachedContent', 'batchGenerateContent'],
    ...(embedding
      ? {}
      : {
          temperature: 1,
          topP: 0.95,
          topK: 64,
          maxTemperature: 2,
          ...(id.startsWith('gemini-2.5') ? { thinking: true } : {}),
        }),
  };
}

function listModels(ctx: FakeContext, spec: ProviderSpec): void {
  const size = Number(ctx.query.get('pageSize') ?? 50);
  const from = Number(ctx.query.get('pageToken') || 0);
  if (!Number.isInteger(size) || size < 1 || !Number.isInteger(from) || from < 0)
    return sendError(ctx, spec, 400, 'Invalid pageSize or pageToken.');
  const page = MODELS.slice(from, from + Math.min(size, 1000));
  const next = from + page.length;
  sendJson(ctx, 200, {
    models: page.map(modelObject),
    ...(next < MODELS.length ? { nextPageToken: String(next) } : {}),
  });
}

const METHOD_RE =
  /^\/v1(?:beta)?\/models\/([^/:]+):(generateContent|streamGenerateContent|countTokens|embedContent|batchEmbedContents)$/;
const MODEL_RE = /^\/v1(?:beta)?\/models\/([^/:]+)$/;

/** The routes, also served under Vertex AI's addresses by fakes/vertex.ts. */
export const geminiSpec: ProviderSpec = {
  defaultName: 'fake-gemini',
  // Google sends no request id of its own; the fake adds one so logs can be matched.
  requestIdHeader: 'x-request-id',
  errorBody: geminiErrorBody,
  checkAuth,
  isStream: (ctx) => ctx.path.endsWith(':streamGenerateContent'),
  async route(ctx, s) {
    const { method } = ctx;
    let path: string;
    try {
      path = decodeURIComponent(ctx.path);
    } catch {
      return false;
    }
    const m = METHOD_RE.exec(path);
    if (m && method === 'POST') {
      const [, model, verb] = m as unknown as [string, string, string];
      if (verb === 'countTokens') countTokens(ctx, s);
      else if (verb === 'embedContent' || verb === 'batchEmbedContents')
        embed(ctx, s, model, verb === 'batchEmbedContents');
      else if (verb === 'generateContent') await generate(ctx, s, model, 'json');
      else await generate(ctx, s, model, ctx.query.get('alt') === 'sse' ? 'sse' : 'array');
      return true;
    }
    if (method === 'GET' && /^\/v1(?:beta)?\/models\/?$/.test(path)) return (listModels(ctx, s), true);
    const g = MODEL_RE.exec(path);
    if (method === 'GET' && g) return (sendJson(ctx, 200, modelObject(g[1]!)), true);
    return false;
  },
};

/** Starts a fake Gemini (Generative Language API) server on 127.0.0.1 (port 0 = random). */
export function startFakeGemini(opts: FakeOptions = {}): Promise<FakeUpstream> {
  return startFakeServer(geminiSpec, opts);
}
