/**
 * Gemini as a channel (outbound): OpenAI chat -> Gemini generateContent for requests, and Gemini's JSON
 * answers and SSE streams -> OpenAI chat: chatToGeminiRequest, geminiToChatCompletion, GeminiToChatStream.
 * The other direction (Gemini as a client dialect) is inbound.ts.
 *
 * Policy (as for Anthropic): a field either has a faithful translation or the request is refused with a
 * 400 `unsupported_parameter` naming it; malformed input is a 400 `invalid_request`. Only pure hints
 * that never change the output are dropped, each noted where it happens. The walks that refuse are shared
 * with the other outbound translators (../outbound-refusals.ts); this file declares Gemini's answers and wording.
 *
 * Thought signatures: Gemini 3 requires the `thoughtSignature` of a function-call turn to come back with
 * the history. OpenAI tool calls have no field for it, so (as Google's own OpenAI-compatible endpoint does)
 * it travels as `extra_content.google.thought_signature` on the tool call; a history without one gets
 * Google's documented placeholder, which makes the API skip the check.
 */
import type { Usage } from '../../core/usage.js';
import {
  toOpenAIUsage,
  type ChatCompletion,
  type ChatCompletionChoice,
  type ChatCompletionChunk,
  type ChatRequest,
  type ChunkDelta,
  type ChunkToolCall,
  type CompletionUsage,
  type FinishReason,
} from '../openai/wire.js';
import { ChatRefusals, REFUSE } from '../outbound-refusals.js';
import {
  geminiUsage,
  type Content,
  type FunctionDeclaration,
  type GenerateContentRequest,
  type GenerateContentResponse,
  type GenerationConfig,
  type Part,
  type Tool,
  type ToolConfig,
  type UsageMetadata,
} from './wire.js';
import {
  badUpstream,
  given,
  invalid,
  isObj,
  nowSeconds,
  randomId,
  signatureOf,
  SKIP_THOUGHT_SIGNATURE,
  toGemini,
  type Obj,
  type SignedToolCall,
} from './common.js';

export { SKIP_THOUGHT_SIGNATURE };

// =====================================================================================================
// OpenAI chat request -> Gemini request
// =====================================================================================================

/** What a Gemini channel does with each OpenAI field, and how its refusals read. */
const GEMINI = new ChatRefusals({
  channel: 'a Gemini channel',
  wire: 'Gemini',
  systemFirst: 'Gemini takes one system instruction before all turns',
  functionRole: 'refuse',
  params: {
    model: 'translate', // the model is in the call's path
    messages: 'translate',
    max_completion_tokens: 'translate',
    max_tokens: 'translate',
    temperature: 'translate',
    top_p: 'translate',
    n: 'translate',
    stop: 'translate',
    seed: 'translate',
    presence_penalty: 'translate',
    frequency_penalty: 'translate',
    response_format: 'translate',
    tools: 'translate',
    tool_choice: 'translate',
    reasoning_effort: 'translate',
    stream: 'translate', // picks the call's path
    stream_options: 'drop', // Gemini streams always carry usage; the stream translator honours include_usage
    parallel_tool_calls: 'drop', // Gemini decides how many calls to make
    user: 'drop', // identifiers for abuse tracking; Gemini has none
    safety_identifier: 'drop',
    store: 'drop', // Gemini does not store completions
    metadata: 'drop', // tags for stored completions
    service_tier: 'drop', // a capacity hint
    prompt_cache_key: 'drop', // caching hints (Gemini caches implicitly)
    prompt_cache_retention: 'drop',
    prompt_cache_options: 'drop',
    logprobs: { refuse: 'log probabilities are not translated' },
    top_logprobs: { refuse: 'log probabilities are not translated' },
    logit_bias: { refuse: 'Gemini has no logit bias' },
    audio: { refuse: 'audio output is not translated' },
    modalities: REFUSE.modalities,
    prediction: { refuse: 'Gemini has no predicted outputs' },
    web_search_options: {
      refuse: 'call the model through the Gemini endpoint to use Google Search grounding',
    },
    functions: REFUSE.functions,
    function_call: REFUSE.function_call,
  },
});

/** reasoning_effort as a thinking budget (Google's own mapping; accepted by 2.5 and 3.x models alike). */
const THINKING_BUDGET: Record<string, number> = {
  none: 0,
  minimal: 1024,
  low: 1024,
  medium: 8192,
  high: 24576,
};

const IMAGE_EXT: Record<string, string> = {
  png: 'image/png',
  jpg: 'image/jpeg',
  jpeg: 'image/jpeg',
  gif: 'image/gif',
  webp: 'image/webp',
  heic: 'image/heic',
  heif: 'image/heif',
};

/** The image type an http(s) URL most likely serves (by its extension; JPEG when it has none). */
export function guessImageMime(url: string): string {
  let path = url;
  try {
    path = new URL(url).pathname;
  } catch {
    /* keep the raw text */
  }
  const ext = /\.([a-z0-9]+)$/i.exec(path)?.[1]?.toLowerCase();
  return (ext && IMAGE_EXT[ext]) || 'image/jpeg';
}

const DATA_URL = /^data:([^;,]+);base64,(.*)$/s;

function imagePart(url: unknown, path: string): Part {
  if (typeof url !== 'string') throw invalid(path, `${path}.image_url.url must be a string`);
  if (url.startsWith('data:')) {
    const m = DATA_URL.exec(url);
    if (!m) throw toGemini(path, 'data URLs must be base64-encoded');
    return { inlineData: { mimeType: m[1]!.toLowerCase(), data: m[2]! } };
  }
  if (/^https?:\/\//i.test(url)) return { fileData: { fileUri: url, mimeType: guessImageMime(url) } };
  throw toGemini(path, 'image URLs must be data: or http(s) URLs');
}

const AUDIO_MIME: Record<string, string> = { wav: 'audio/wav', mp3: 'audio/mp3' };

/** Texts as Gemini text parts; Gemini refuses empty ones, and an empty text says nothing. */
const textParts = (texts: string[]): Part[] => texts.filter((t) => t !== '').map((text) => ({ text }));

function userParts(content: unknown, path: string): Part[] {
  if (typeof content === 'string') return textParts([content]);
  const parts = GEMINI.parts<Part>(content, path, {
    text: (p, at) => {
      if (typeof p['text'] !== 'string') throw invalid(at, `${at}.text must be a string`);
      return { text: p['text'] };
    },
    // `detail` is dropped: a resolution/cost hint; Gemini sizes images itself.
    image_url: (p, at) => imagePart(isObj(p['image_url']) ? p['image_url']['url'] : undefined, at),
    input_audio: (p, at) => {
      const a = isObj(p['input_audio']) ? p['input_audio'] : {};
      const mime = AUDIO_MIME[String(a['format'])];
      if (!mime) throw toGemini(at, 'only wav and mp3 audio are supported');
      if (typeof a['data'] !== 'string') throw invalid(at, `${at}.input_audio.data must be a base64 string`);
      return { inlineData: { mimeType: mime, data: a['data'] } };
    },
    file: (p, at) => {
      const f = isObj(p['file']) ? p['file'] : {};
      const m = typeof f['file_data'] === 'string' ? DATA_URL.exec(f['file_data']) : null;
      if (!m)
        throw toGemini(
          at,
          'only files given inline as base64 data URLs are supported (OpenAI file ids mean nothing to Gemini)',
        );
      return { inlineData: { mimeType: m[1]!.toLowerCase(), data: m[2]! } };
    },
  });
  return parts.filter((p) => p.text !== '');
}

/** A tool's answer as a functionResponse `response` object: its JSON object, else `{output: text}`. */
function toolResponse(text: string): Obj {
  try {
    const v: unknown = JSON.parse(text);
    if (isObj(v)) return v;
  } catch {
    /* plain text */
  }
  return { output: text };
}

function chatContents(msgs: unknown): { system: Part[]; contents: Content[] } {
  const system: Part[] = [];
  const contents: Content[] = [];
  const callNames = new Map<string, string>(); // tool_call id -> function name
  // Gemini wants alternating turns: consecutive same-role turns (e.g. several tool results) merge.
  const push = (role: 'user' | 'model', parts: Part[]): void => {
    if (parts.length === 0) return; // Gemini refuses empty turns; an empty message says nothing
    const last = contents[contents.length - 1];
    if (last?.role === role) last.parts.push(...parts);
    else contents.push({ role, parts });
  };

  GEMINI.messages(msgs, {
    started: () => contents.length > 0,
    system: (content, path) => void system.push(...textParts(GEMINI.texts(content, path))),
    user: (content, path) => push('user', userParts(content, path)),
    assistant: (texts, calls) => {
      const fcs = calls.map(({ call, name, args }): Part => {
        if (typeof call['id'] === 'string') callNames.set(call['id'], name);
        const part: Part = { functionCall: { name, args } };
        const sig = signatureOf(call);
        if (sig) part.thoughtSignature = sig;
        return part;
      });
      // Gemini 3 signs the first call of a turn and wants it back; without one, the documented placeholder.
      if (fcs.length > 0 && !fcs.some((p) => p.thoughtSignature))
        fcs[0]!.thoughtSignature = SKIP_THOUGHT_SIGNATURE;
      push('model', [...textParts(texts), ...fcs]);
    },
    tool: (m, at) => {
      const id = m['tool_call_id'];
      const name = typeof id === 'string' ? callNames.get(id) : undefined;
      if (name === undefined) {
        throw invalid(
          `${at}.tool_call_id`,
          `${at}.tool_call_id does not name a tool call of an earlier assistant message`,
        );
      }
      const c = m['content'];
      const text = typeof c === 'string' ? c : GEMINI.texts(c, `${at}.content`).join('');
      push('user', [{ functionResponse: { name, response: toolResponse(text) } }]);
    },
  });
  return { system, contents };
}

/** A JSON Schema that says "no arguments" (Gemini wants no schema at all for those). */
function emptyObjectSchema(s: Obj): boolean {
  const props = s['properties'];
  return (
    s['type'] === 'object' &&
    (!isObj(props) || Object.keys(props).length === 0) &&
    !given(s['anyOf']) &&
    !given(s['oneOf'])
  );
}

function geminiTools(tools: unknown): Tool[] | undefined {
  const decls = GEMINI.tools(tools, (f, i): FunctionDeclaration => {
    if (typeof f['name'] !== 'string' || f['name'] === '')
      throw invalid(`tools[${i}].function.name`, 'a function tool needs a name');
    const d: FunctionDeclaration = { name: f['name'] };
    if (typeof f['description'] === 'string') d.description = f['description'];
    // `strict` is dropped: Gemini always decodes function calls against their schema.
    if (isObj(f['parameters']) && !emptyObjectSchema(f['parameters']))
      d.parametersJsonSchema = f['parameters'];
    return d;
  });
  return decls.length === 0 ? undefined : [{ functionDeclarations: decls }];
}

const mode = (m: 'NONE' | 'AUTO' | 'ANY', names?: string[]): ToolConfig => ({
  functionCallingConfig: names ? { mode: m, allowedFunctionNames: names } : { mode: m },
});

/** allowed_tools, which Gemini can restrict only in ANY mode; undefined for any other object. */
function allowedTools(tc: Obj): ToolConfig | undefined {
  if (tc['type'] !== 'allowed_tools' || !isObj(tc['allowed_tools'])) return undefined;
  const at = tc['allowed_tools'];
  if (at['mode'] !== 'required')
    throw toGemini('tool_choice', 'allowed_tools can only be translated with mode "required"');
  const list = Array.isArray(at['tools']) ? at['tools'] : [];
  const names = list.map((t: unknown, i) => {
    const fn =
      isObj(t) && t['type'] === 'function' && isObj(t['function']) ? t['function']['name'] : undefined;
    if (typeof fn !== 'string')
      throw toGemini(`tool_choice.allowed_tools.tools[${i}]`, 'only function tools are supported');
    return fn;
  });
  return mode('ANY', names);
}

const functionCallingConfig = (tc: unknown): ToolConfig | undefined =>
  GEMINI.toolChoice(
    tc,
    {
      none: mode('NONE'),
      auto: mode('AUTO'),
      required: mode('ANY'),
      named: (name) => mode('ANY', [name]),
      other: allowedTools,
    },
    'only "none", "auto", "required", a named function or allowed function tools are supported',
  );

function responseFormat(rf: unknown, gc: GenerationConfig): void {
  if (!given(rf)) return;
  if (!isObj(rf)) throw invalid('response_format', 'response_format must be an object');
  switch (rf['type']) {
    case 'text':
      return;
    case 'json_object':
      gc.responseMimeType = 'application/json';
      return;
    case 'json_schema': {
      const js = rf['json_schema'];
      if (!isObj(js))
        throw invalid('response_format.json_schema', 'response_format.json_schema must be an object');
      gc.responseMimeType = 'application/json';
      // `strict` is dropped: Gemini always decodes against the schema it is given.
      if (isObj(js['schema'])) gc.responseJsonSchema = js['schema'];
      return;
    }
    default:
      throw toGemini(
        'response_format',
        `response_format type ${JSON.stringify(rf['type'])} is not supported`,
      );
  }
}

/**
 * An OpenAI chat request as a Gemini GenerateContentRequest (the model and streaming are in the call's
 * path). Throws a 400 GatewayError for anything without a faithful translation (see the policy above).
 */
export function chatToGeminiRequest(req: ChatRequest): GenerateContentRequest {
  if (!isObj(req)) throw invalid('body', 'the request body must be a JSON object');
  GEMINI.params(req);
  const { system, contents } = chatContents(req.messages);
  const out: GenerateContentRequest = { contents };
  if (system.length > 0) out.systemInstruction = { parts: system };

  const gc: GenerationConfig = {};
  const max = req.max_completion_tokens ?? req.max_tokens;
  if (given(max)) gc.maxOutputTokens = max!;
  if (given(req.temperature)) gc.temperature = req.temperature!;
  if (given(req.top_p)) gc.topP = req.top_p!;
  if (given(req.stop))
    gc.stopSequences = typeof req.stop === 'string' ? [req.stop] : [...(req.stop as string[])];
  if (given(req.n)) gc.candidateCount = req.n!;
  if (given(req.seed)) gc.seed = req.seed!;
  // Zero penalties are OpenAI's defaults; several Gemini models refuse the fields outright, so 0 stays unsent.
  if (given(req.presence_penalty) && req.presence_penalty !== 0) gc.presencePenalty = req.presence_penalty!;
  if (given(req.frequency_penalty) && req.frequency_penalty !== 0)
    gc.frequencyPenalty = req.frequency_penalty!;
  responseFormat(req.response_format, gc);
  if (given(req.reasoning_effort)) {
    const budget = THINKING_BUDGET[String(req.reasoning_effort)];
    if (budget === undefined)
      throw toGemini('reasoning_effort', 'only none, minimal, low, medium and high are supported');
    gc.thinkingConfig = { thinkingBudget: budget };
  }
  if (Object.keys(gc).length > 0) out.generationConfig = gc;

  const tools = given(req.tools) ? geminiTools(req.tools) : undefined;
  if (tools) {
    out.tools = tools;
    const tc = functionCallingConfig(req.tool_choice);
    if (tc) out.toolConfig = tc;
  } else if (given(req.tool_choice)) {
    // A tool choice without tools has no effect; only its shape is checked.
    functionCallingConfig(req.tool_choice);
  }
  return out;
}

// =====================================================================================================
// Gemini response -> OpenAI chat completion
// =====================================================================================================

const FILTERED: ReadonlySet<string> = new Set([
  'SAFETY',
  'RECITATION',
  'BLOCKLIST',
  'PROHIBITED_CONTENT',
  'SPII',
  'IMAGE_SAFETY',
  'IMAGE_PROHIBITED_CONTENT',
  'IMAGE_RECITATION',
]);

/** An OpenAI finish_reason for a Gemini finishReason (`calls`: the candidate called functions). */
export function chatFinishReason(reason: unknown, calls: boolean): FinishReason {
  if (reason === 'MAX_TOKENS') return 'length';
  if (typeof reason === 'string' && FILTERED.has(reason)) return 'content_filter';
  return calls ? 'tool_calls' : 'stop';
}

const chatId = (responseId: unknown): string =>
  `chatcmpl-${typeof responseId === 'string' && responseId !== '' ? responseId : randomId()}`;

function toolCallOf(p: Part): SignedToolCall {
  const fc = p.functionCall!;
  const id = typeof fc.id === 'string' && fc.id !== '' ? fc.id : randomId();
  const tc: SignedToolCall = {
    id: `call_${id}`,
    type: 'function',
    function: { name: String(fc.name ?? ''), arguments: JSON.stringify(isObj(fc.args) ? fc.args : {}) },
  };
  if (typeof p.thoughtSignature === 'string' && p.thoughtSignature !== '') {
    tc.extra_content = { google: { thought_signature: p.thoughtSignature } };
  }
  return tc;
}

/** A candidate's answer text (thoughts skipped) and function calls. */
function partsOf(parts: unknown): { text: string; calls: SignedToolCall[] } {
  let text = '';
  const calls: SignedToolCall[] = [];
  for (const p of Array.isArray(parts) ? (parts as unknown[]) : []) {
    if (!isObj(p) || p['thought'] === true) continue;
    if (typeof p['text'] === 'string') text += p['text'];
    if (isObj(p['functionCall'])) calls.push(toolCallOf(p as Part));
    // executableCode / codeExecutionResult / inlineData (server tools, images): chat completions have no place for them.
  }
  return { text, calls };
}

function chatUsage(u: Usage, meta: unknown): CompletionUsage {
  const out = toOpenAIUsage(u);
  const thoughts =
    isObj(meta) && typeof meta['thoughtsTokenCount'] === 'number' ? meta['thoughtsTokenCount'] : 0;
  if (thoughts > 0) out.completion_tokens_details = { reasoning_tokens: thoughts };
  return out;
}

/**
 * A Gemini answer as an OpenAI chat completion reported under `model`: one choice per candidate. A
 * prompt Gemini blocked (no candidates, promptFeedback.blockReason) is one empty `content_filter` choice.
 */
export function geminiToChatCompletion(res: GenerateContentResponse, model: string): ChatCompletion {
  const candidates: unknown[] = Array.isArray(res.candidates) ? res.candidates : [];
  const choices: ChatCompletionChoice[] = [];
  candidates.forEach((c, i) => {
    if (!isObj(c)) throw badUpstream('upstream answer has a candidate that is not an object');
    const content = isObj(c['content']) ? c['content'] : {};
    const { text, calls } = partsOf(content['parts']);
    const message: ChatCompletionChoice['message'] = {
      role: 'assistant',
      content: text === '' && calls.length > 0 ? null : text,
      refusal: null,
    };
    if (calls.length > 0) message.tool_calls = calls;
    choices.push({
      index: typeof c['index'] === 'number' ? c['index'] : i,
      message,
      logprobs: null,
      finish_reason: chatFinishReason(c['finishReason'], calls.length > 0),
    });
  });
  if (choices.length === 0) {
    if (!res.promptFeedback?.blockReason) throw badUpstream('upstream answer has no candidates');
    choices.push({
      index: 0,
      message: { role: 'assistant', content: '', refusal: null },
      logprobs: null,
      finish_reason: 'content_filter',
    });
  }
  const out: ChatCompletion = {
    id: chatId(res.responseId),
    object: 'chat.completion',
    created: nowSeconds(),
    model,
    choices,
  };
  const u = geminiUsage(res.usageMetadata);
  if (u) out.usage = chatUsage(u, res.usageMetadata);
  return out;
}

// =====================================================================================================
// Gemini stream -> OpenAI chat stream
// =====================================================================================================

/**
 * Turns Gemini stream chunks (each a GenerateContentResponse) into OpenAI chat.completion.chunk objects:
 * per candidate a first chunk with the role, then text deltas and whole tool calls (Gemini sends each
 * function call complete), then a chunk with the finish_reason. usageMetadata is cumulative: the last
 * one wins. `done` once every candidate finished (or the prompt was blocked); finish() then gives the
 * trailing usage chunk, after which the caller sends `[DONE]`.
 */
export class GeminiToChatStream {
  private readonly model: string;
  private readonly created: number;
  private readonly expected: number;
  private id = '';
  private readonly started = new Set<number>();
  private readonly finished = new Set<number>();
  private readonly toolCount = new Map<number, number>();
  private meta: UsageMetadata | null = null;
  private blocked = false;

  /** `candidates`: how many the request asked for (generationConfig.candidateCount / n). */
  constructor(opts: { model: string; candidates?: number; created?: number }) {
    this.model = opts.model;
    this.created = opts.created ?? nowSeconds();
    this.expected = Math.max(1, opts.candidates ?? 1);
  }

  get done(): boolean {
    return (
      this.blocked ||
      (this.finished.size > 0 && this.finished.size >= Math.max(this.expected, this.started.size))
    );
  }

  usage(): Usage | null {
    return geminiUsage(this.meta);
  }

  push(res: unknown): ChatCompletionChunk[] {
    if (!isObj(res)) throw badUpstream('upstream stream carried a chunk that is not an object');
    if (this.id === '') this.id = chatId(res['responseId']);
    if (isObj(res['usageMetadata'])) this.meta = res['usageMetadata'] as UsageMetadata;
    const out: ChatCompletionChunk[] = [];
    const candidates: unknown[] = Array.isArray(res['candidates']) ? res['candidates'] : [];
    const feedback = res['promptFeedback'];
    if (
      candidates.length === 0 &&
      isObj(feedback) &&
      typeof feedback['blockReason'] === 'string' &&
      !this.blocked
    ) {
      this.start(out, 0);
      out.push(this.chunk(0, {}, 'content_filter'));
      this.blocked = true;
      return out;
    }
    candidates.forEach((c, i) => {
      if (!isObj(c)) throw badUpstream('upstream stream carried a candidate that is not an object');
      const idx = typeof c['index'] === 'number' ? c['index'] : i;
      if (this.finished.has(idx)) return;
      this.start(out, idx);
      const content = isObj(c['content']) ? c['content'] : {};
      const { text, calls } = partsOf(content['parts']);
      if (text !== '') out.push(this.chunk(idx, { content: text }));
      if (calls.length > 0) {
        const n = this.toolCount.get(idx) ?? 0;
        const deltas = calls.map((tc, k): ChunkToolCall => ({ index: n + k, ...tc }));
        this.toolCount.set(idx, n + calls.length);
        out.push(this.chunk(idx, { tool_calls: deltas }));
      }
      const reason = c['finishReason'];
      if (typeof reason === 'string' && reason !== '' && reason !== 'FINISH_REASON_UNSPECIFIED') {
        this.finished.add(idx);
        out.push(this.chunk(idx, {}, chatFinishReason(reason, (this.toolCount.get(idx) ?? 0) > 0)));
      }
    });
    return out;
  }

  /** The trailing usage chunk (`choices: []`), only when the client asked for it and usage is known. */
  finish(includeUsage: boolean): ChatCompletionChunk[] {
    const u = this.usage();
    if (!includeUsage || !u) return [];
    return [{ ...this.base(), choices: [], usage: chatUsage(u, this.meta) }];
  }

  private start(out: ChatCompletionChunk[], idx: number): void {
    if (this.started.has(idx)) return;
    this.started.add(idx);
    out.push(this.chunk(idx, { role: 'assistant', content: '' }));
  }

  private base(): Omit<ChatCompletionChunk, 'choices'> {
    return {
      id: this.id || chatId(undefined),
      object: 'chat.completion.chunk',
      created: this.created,
      model: this.model,
    };
  }

  private chunk(index: number, delta: ChunkDelta, finish: FinishReason | null = null): ChatCompletionChunk {
    return { ...this.base(), choices: [{ index, delta, logprobs: null, finish_reason: finish }] };
  }
}
