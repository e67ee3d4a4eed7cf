/**
 * Pure translation between OpenAI Chat Completions and Gemini generateContent, both directions, for
 * requests, JSON answers and SSE streams:
 *
 *  - OpenAI chat -> Gemini (an OpenAI-format client served by a Gemini channel): chatToGeminiRequest,
 *    geminiToChatCompletion, GeminiToChatStream.
 *  - Gemini -> OpenAI chat (a Gemini-format client served by any other channel, through the chat pivot):
 *    geminiToChatRequest, chatToGeminiResponse, ChatToGeminiStream; geminiPivot bundles them.
 *
 * Policy (as for Anthropic): a field either has a faithful translation or the request is refused with a
 * 400 `unsupported_parameter` naming it; malformed input is a 400 `invalid_request`. Only pure hints
 * that never change the output are dropped, each noted where it happens.
 *
 * Thought signatures: Gemini 3 requires the `thoughtSignature` of a function-call turn to come back with
 * the history. OpenAI tool calls have no field for it, so (as Google's own OpenAI-compatible endpoint does)
 * it travels as `extra_content.google.thought_signature` on the tool call; a history without one gets
 * Google's documented placeholder, which makes the API skip the check.
 */
import { randomBytes } from 'node:crypto';
import { GatewayError, unsupported } from '../../core/errors.js';
import { toGoogleError } from '../../core/render.js';
import type { Usage } from '../../core/usage.js';
import {
  openaiUsage,
  toOpenAIUsage,
  type AssistantMessage,
  type ChatCompletion,
  type ChatCompletionChoice,
  type ChatCompletionChunk,
  type ChatMessage,
  type ChatRequest,
  type ChunkDelta,
  type ChunkToolCall,
  type CompletionUsage,
  type FinishReason,
  type FunctionToolCall,
  type Tool as OpenAITool,
  type ToolChoice as OpenAIToolChoice,
  type UserContentPart,
} from '../openai/wire.js';
import { withUsage, type ChatPivot, type PivotStream } from '../pivot.js';
import { TextTally } from '../shared.js';
import {
  geminiUsage,
  toGeminiUsage,
  type Candidate,
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

type Obj = Record<string, unknown>;
const isObj = (x: unknown): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x);
/** OpenAI accepts `null` for most optional fields; null means "not given". */
const given = (x: unknown): boolean => x !== undefined && x !== null;
const nonEmptyObj = (x: unknown): boolean => given(x) && !(isObj(x) && Object.keys(x).length === 0);
const nowSeconds = (): number => Math.floor(Date.now() / 1000);
const randomId = (): string => randomBytes(12).toString('hex');

function toGemini(param: string, why?: string): GatewayError {
  return unsupported(param, `${param} cannot be translated for a Gemini channel${why ? `: ${why}` : ''}`);
}
function fromGemini(param: string, why?: string): GatewayError {
  return unsupported(
    param,
    `${param} cannot be translated from the Gemini format for this channel${why ? `: ${why}` : ''}`,
  );
}
function invalid(param: string, message: string): GatewayError {
  return new GatewayError('invalid_request', message, { param });
}
function badUpstream(message: string): GatewayError {
  return new GatewayError('upstream_bad_response', message);
}

/**
 * Google's documented placeholder for a function-call turn whose real thought signature is unknown
 * (history from another model, or a client that dropped it): https://ai.google.dev/gemini-api/docs/thought-signatures
 */
export const SKIP_THOUGHT_SIGNATURE = 'skip_thought_signature_validator';

/** A tool call as OpenAI clients see it, with Google's extension carrying the thought signature. */
type SignedToolCall = FunctionToolCall & { extra_content?: { google: { thought_signature: string } } };

function signatureOf(tc: Obj): string | undefined {
  const ec = tc['extra_content'];
  const g = isObj(ec) ? ec['google'] : undefined;
  const s = isObj(g) ? g['thought_signature'] : undefined;
  return typeof s === 'string' && s !== '' ? s : undefined;
}

// =====================================================================================================
// OpenAI chat request -> Gemini request
// =====================================================================================================

/** OpenAI fields with no faithful Gemini translation, refused when `bad(value)`. */
const CHAT_REFUSED: Record<string, { bad: (v: unknown) => boolean; why: string }> = {
  logprobs: { bad: (v) => !!v, why: 'log probabilities are not translated' },
  top_logprobs: { bad: (v) => !!v, why: 'log probabilities are not translated' },
  logit_bias: { bad: nonEmptyObj, why: 'Gemini has no logit bias' },
  audio: { bad: given, why: 'audio output is not translated' },
  modalities: {
    bad: (v) => given(v) && !(Array.isArray(v) && v.every((m) => m === 'text')),
    why: 'only the text modality is supported',
  },
  prediction: { bad: given, why: 'Gemini has no predicted outputs' },
  web_search_options: {
    bad: given,
    why: 'call the model through the Gemini endpoint to use Google Search grounding',
  },
  functions: { bad: given, why: 'legacy function calling is not supported; use tools' },
  function_call: { bad: given, why: 'legacy function calling is not supported; use tool_choice' },
};

/** OpenAI fields translated below, or dropped because they never change the model's output. */
const CHAT_HANDLED = new Set([
  'model', // the model is in the call's path
  'messages',
  'max_completion_tokens',
  'max_tokens',
  'temperature',
  'top_p',
  'n',
  'stop',
  'seed',
  'presence_penalty',
  'frequency_penalty',
  'response_format',
  'tools',
  'tool_choice',
  'reasoning_effort',
  'stream', // picks the call's path
  'stream_options', // dropped: Gemini streams always carry usage; the stream translator honours include_usage
  'parallel_tool_calls', // dropped: Gemini decides how many calls to make
  'user', // dropped: identifiers for abuse tracking; Gemini has none
  'safety_identifier',
  'store', // dropped: Gemini does not store completions
  'metadata', // dropped: tags for stored completions
  'service_tier', // dropped: a capacity hint
  'prompt_cache_key', // dropped: caching hints (Gemini caches implicitly)
  'prompt_cache_retention',
  'prompt_cache_options',
]);

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

/** string | text parts (system, developer, tool, assistant content) -> Gemini text parts ('' dropped). */
function textParts(content: unknown, path: string, allowRefusal = false): Part[] {
  if (typeof content === 'string') return content === '' ? [] : [{ text: content }];
  if (!Array.isArray(content)) throw invalid(path, `${path} must be a string or an array of content parts`);
  const out: Part[] = [];
  content.forEach((p: unknown, j) => {
    if (isObj(p) && p['type'] === 'text' && typeof p['text'] === 'string') {
      if (p['text'] !== '') out.push({ text: p['text'] });
    } else if (allowRefusal && isObj(p) && p['type'] === 'refusal' && typeof p['refusal'] === 'string') {
      // A refusal in assistant history is text the model said; Gemini has no refusal part.
      if (p['refusal'] !== '') out.push({ text: p['refusal'] });
    } else {
      throw toGemini(
        `${path}[${j}]`,
        `${isObj(p) ? String(p['type']) : typeof p} parts are not supported here`,
      );
    }
  });
  return out;
}

function userParts(content: unknown, path: string): Part[] {
  if (typeof content === 'string') return content === '' ? [] : [{ text: content }];
  if (!Array.isArray(content)) throw invalid(path, `${path} must be a string or an array of content parts`);
  const out: Part[] = [];
  content.forEach((p: unknown, j) => {
    const at = `${path}[${j}]`;
    if (!isObj(p)) throw invalid(at, `${at} must be an object`);
    switch (p['type']) {
      case 'text':
        if (typeof p['text'] !== 'string') throw invalid(at, `${at}.text must be a string`);
        if (p['text'] !== '') out.push({ text: p['text'] });
        return;
      case 'image_url':
        // `detail` is dropped: a resolution/cost hint; Gemini sizes images itself.
        out.push(imagePart(isObj(p['image_url']) ? p['image_url']['url'] : undefined, at));
        return;
      case 'input_audio': {
        const a = isObj(p['input_audio']) ? p['input_audio'] : {};
        const mime = AUDIO_MIME[String(a['format'])];
        if (!mime) throw toGemini(at, 'only wav and mp3 audio are supported');
        if (typeof a['data'] !== 'string')
          throw invalid(at, `${at}.input_audio.data must be a base64 string`);
        out.push({ inlineData: { mimeType: mime, data: a['data'] } });
        return;
      }
      case 'file': {
        const f = isObj(p['file']) ? p['file'] : {};
        const m = typeof f['file_data'] === 'string' ? DATA_URL.exec(f['file_data']) : null;
        if (!m)
          throw toGemini(
            at,
            'only files given inline as base64 data URLs are supported (OpenAI file ids mean nothing to Gemini)',
          );
        out.push({ inlineData: { mimeType: m[1]!.toLowerCase(), data: m[2]! } });
        return;
      }
      default:
        throw toGemini(at, `${String(p['type'])} content parts have no Gemini equivalent`);
    }
  });
  return out;
}

function parseArgs(raw: unknown, path: string): Obj {
  let v: unknown;
  try {
    // An empty string is what some clients send for a no-argument call.
    v = raw === '' || raw === undefined ? {} : JSON.parse(String(raw));
  } catch {
    v = undefined;
  }
  if (!isObj(v)) throw toGemini(`${path}.function.arguments`, 'tool call arguments must be a JSON object');
  return v;
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
  if (!Array.isArray(msgs)) throw invalid('messages', 'messages must be an array');
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

  msgs.forEach((m: unknown, i) => {
    const at = `messages[${i}]`;
    if (!isObj(m)) throw invalid(at, `${at} must be an object`);
    const role = m['role'];
    if (role === 'function')
      throw toGemini(`${at}.role`, 'legacy function messages are not supported; use tool messages');
    // Gemini has no per-participant name; dropping it would change who the model thinks spoke.
    if (given(m['name'])) throw toGemini(`${at}.name`, 'Gemini messages have no participant name');
    switch (role) {
      case 'system':
      case 'developer':
        if (contents.length > 0) {
          throw unsupported(
            'messages',
            `a ${role} message after the conversation has started (${at}) cannot be translated for a Gemini channel: Gemini takes one system instruction before all turns`,
          );
        }
        system.push(...textParts(m['content'], `${at}.content`));
        return;
      case 'user':
        return push('user', userParts(m['content'], `${at}.content`));
      case 'assistant': {
        if (given(m['audio'])) throw toGemini(`${at}.audio`);
        if (given(m['function_call'])) throw toGemini(`${at}.function_call`, 'legacy function calling');
        const parts: Part[] = [];
        if (given(m['content'])) parts.push(...textParts(m['content'], `${at}.content`, true));
        if (typeof m['refusal'] === 'string' && m['refusal'] !== '') parts.push({ text: m['refusal'] });
        const calls = m['tool_calls'];
        if (given(calls) && !Array.isArray(calls))
          throw invalid(`${at}.tool_calls`, 'tool_calls must be an array');
        const fcs: Part[] = [];
        ((calls ?? []) as unknown[]).forEach((tc, j) => {
          const p = `${at}.tool_calls[${j}]`;
          if (!isObj(tc) || tc['type'] !== 'function' || !isObj(tc['function']))
            throw toGemini(p, 'only function tool calls are supported');
          const name = String(tc['function']['name'] ?? '');
          if (typeof tc['id'] === 'string') callNames.set(tc['id'], name);
          const part: Part = { functionCall: { name, args: parseArgs(tc['function']['arguments'], p) } };
          const sig = signatureOf(tc);
          if (sig) part.thoughtSignature = sig;
          fcs.push(part);
        });
        // Gemini 3 signs the first call of a turn and wants it back; without one, the documented placeholder.
        if (fcs.length > 0 && !fcs.some((p) => p.thoughtSignature))
          fcs[0]!.thoughtSignature = SKIP_THOUGHT_SIGNATURE;
        return push('model', [...parts, ...fcs]);
      }
      case 'tool': {
        const id = m['tool_call_id'];
        const name = typeof id === 'string' ? callNames.get(id) : undefined;
        if (name === undefined) {
          throw invalid(
            `${at}.tool_call_id`,
            `${at}.tool_call_id does not name a tool call of an earlier assistant message`,
          );
        }
        const c = m['content'];
        const text =
          typeof c === 'string'
            ? c
            : textParts(c, `${at}.content`)
                .map((p) => p.text)
                .join('');
        return push('user', [{ functionResponse: { name, response: toolResponse(text) } }]);
      }
      default:
        throw invalid(`${at}.role`, `unknown message role ${JSON.stringify(role)}`);
    }
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
  if (!Array.isArray(tools)) throw invalid('tools', 'tools must be an array');
  if (tools.length === 0) return undefined;
  const decls = tools.map((t: unknown, i): FunctionDeclaration => {
    if (!isObj(t) || t['type'] !== 'function' || !isObj(t['function']))
      throw toGemini(`tools[${i}]`, 'only function tools are supported');
    const f = t['function'];
    if (typeof f['name'] !== 'string' || f['name'] === '')
      throw invalid(`tools[${i}].function.name`, 'a function tool needs a name');
    const d: FunctionDeclaration = { name: f['name'] };
    if (typeof f['description'] === 'string') d.description = f['description'];
    // `strict` is dropped: Gemini always decodes function calls against their schema.
    if (isObj(f['parameters']) && !emptyObjectSchema(f['parameters']))
      d.parametersJsonSchema = f['parameters'];
    return d;
  });
  return [{ functionDeclarations: decls }];
}

function functionCallingConfig(tc: unknown): ToolConfig | undefined {
  if (!given(tc)) return undefined;
  const mode = (m: 'NONE' | 'AUTO' | 'ANY', names?: string[]): ToolConfig => ({
    functionCallingConfig: names ? { mode: m, allowedFunctionNames: names } : { mode: m },
  });
  if (tc === 'none') return mode('NONE');
  if (tc === 'auto') return mode('AUTO');
  if (tc === 'required') return mode('ANY');
  if (
    isObj(tc) &&
    tc['type'] === 'function' &&
    isObj(tc['function']) &&
    typeof tc['function']['name'] === 'string'
  ) {
    return mode('ANY', [tc['function']['name']]);
  }
  if (isObj(tc) && tc['type'] === 'allowed_tools' && isObj(tc['allowed_tools'])) {
    const at = tc['allowed_tools'];
    // Gemini restricts the callable functions only in ANY mode.
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
  throw toGemini(
    'tool_choice',
    'only "none", "auto", "required", a named function or allowed function tools are supported',
  );
}

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
  for (const key of Object.keys(req)) {
    const refused = CHAT_REFUSED[key];
    if (refused) {
      if (refused.bad(req[key])) throw toGemini(key, refused.why);
    } else if (!CHAT_HANDLED.has(key)) {
      throw toGemini(key, 'unknown parameter');
    }
  }
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

// =====================================================================================================
// Gemini request -> OpenAI chat request (inbound Gemini clients, through the chat pivot)
// =====================================================================================================

/** The REST API takes both spellings of a field (proto JSON): systemInstruction and system_instruction. */
const snake = (k: string): string => k.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());
const camel = (k: string): string => k.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
function field(o: Obj, key: string): unknown {
  return o[key] !== undefined ? o[key] : o[snake(key)];
}
/** A repeated field; a single object is read as a list of one. */
function list(v: unknown, path: string): unknown[] {
  if (Array.isArray(v)) return v;
  if (isObj(v)) return [v];
  throw invalid(path, `${path} must be an array`);
}

const GEMINI_HANDLED = new Set([
  'model', // the alias, set by the gateway from the path
  'stream', // set by the gateway for streamGenerateContent
  'contents',
  'systemInstruction',
  'generationConfig',
  'tools',
  'toolConfig',
  'safetySettings', // dropped: thresholds of Gemini's own filters; other vendors apply their own
]);

const GEMINI_REFUSED: Record<string, string> = {
  cachedContent: "cached contents live in Google's cache and cannot be read by another vendor",
};

const GENERATION_HANDLED = new Set([
  'stopSequences',
  'candidateCount',
  'maxOutputTokens',
  'temperature',
  'topP',
  'seed',
  'presencePenalty',
  'frequencyPenalty',
  'responseMimeType',
  'responseSchema',
  'responseJsonSchema',
  'responseModalities',
  'thinkingConfig',
]);

const GENERATION_REFUSED: Record<string, string> = {
  topK: 'OpenAI chat has no top-k sampling',
  responseLogprobs: 'log probabilities are not translated',
  logprobs: 'log probabilities are not translated',
};

/** Schema keywords whose proto JSON form is a string (int64) but JSON Schema wants a number. */
const INT64_KEYWORDS = new Set([
  'minItems',
  'maxItems',
  'minLength',
  'maxLength',
  'minProperties',
  'maxProperties',
]);

/**
 * Gemini's OpenAPI-subset Schema (`type: "OBJECT"`, `nullable`, `propertyOrdering`) as JSON Schema.
 * Keyword names are normalised; property names are kept as they are.
 */
export function jsonSchemaOf(s: unknown): unknown {
  if (!isObj(s)) return s;
  const out: Obj = {};
  for (const [k, v] of Object.entries(s)) {
    const key = camel(k);
    switch (key) {
      case 'type':
        if (typeof v === 'string' && v.toUpperCase() !== 'TYPE_UNSPECIFIED') out['type'] = v.toLowerCase();
        break;
      case 'properties':
        out['properties'] = isObj(v)
          ? Object.fromEntries(Object.entries(v).map(([p, sub]) => [p, jsonSchemaOf(sub)]))
          : v;
        break;
      case 'items':
        out['items'] = jsonSchemaOf(v);
        break;
      case 'anyOf':
        out['anyOf'] = Array.isArray(v) ? v.map(jsonSchemaOf) : v;
        break;
      case 'nullable':
      case 'propertyOrdering': // an ordering hint for Gemini's decoder
        break;
      default:
        out[key] = INT64_KEYWORDS.has(key) && typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
    }
  }
  if (s['nullable'] === true && typeof out['type'] === 'string') out['type'] = [out['type'], 'null'];
  return out;
}

/** A Gemini inline blob as an OpenAI user content part. */
function blobPart(b: unknown, path: string): UserContentPart {
  if (!isObj(b)) throw invalid(path, `${path} must be an object`);
  const mime = String(field(b, 'mimeType') ?? '').toLowerCase();
  const data = b['data'];
  if (typeof data !== 'string') throw invalid(`${path}.data`, `${path}.data must be a base64 string`);
  if (mime.startsWith('image/'))
    return { type: 'image_url', image_url: { url: `data:${mime};base64,${data}` } };
  if (mime === 'audio/wav' || mime === 'audio/x-wav' || mime === 'audio/wave')
    return { type: 'input_audio', input_audio: { data, format: 'wav' } };
  if (mime === 'audio/mp3' || mime === 'audio/mpeg')
    return { type: 'input_audio', input_audio: { data, format: 'mp3' } };
  if (mime === 'application/pdf')
    return { type: 'file', file: { file_data: `data:${mime};base64,${data}`, filename: 'document.pdf' } };
  throw fromGemini(
    path,
    `inline ${mime || 'data'} has no OpenAI chat equivalent (images, wav/mp3 audio and PDF are supported)`,
  );
}

function filePart(f: unknown, path: string): UserContentPart {
  if (!isObj(f)) throw invalid(path, `${path} must be an object`);
  const uri = field(f, 'fileUri');
  const mime = String(field(f, 'mimeType') ?? '').toLowerCase();
  if (typeof uri !== 'string') throw invalid(`${path}.fileUri`, `${path}.fileUri must be a string`);
  if (
    /^https?:\/\//i.test(uri) &&
    !/^https:\/\/generativelanguage\.googleapis\.com\//i.test(uri) &&
    (mime === '' || mime.startsWith('image/'))
  ) {
    return { type: 'image_url', image_url: { url: uri } };
  }
  throw fromGemini(
    path,
    'only public http(s) image URLs are supported (Gemini Files API uploads are readable only by Gemini)',
  );
}

/** A functionResponse `response` as the text of an OpenAI tool message. */
function toolText(resp: unknown): string {
  if (resp === undefined || resp === null) return '';
  if (isObj(resp)) {
    const keys = Object.keys(resp);
    if (
      keys.length === 1 &&
      (keys[0] === 'output' || keys[0] === 'result') &&
      typeof resp[keys[0]] === 'string'
    )
      return resp[keys[0]] as string;
  }
  return typeof resp === 'string' ? resp : JSON.stringify(resp);
}

const PART_EXTRAS = new Set(['thought', 'thoughtSignature']);
const PART_KINDS = ['text', 'inlineData', 'fileData', 'functionCall', 'functionResponse'] as const;

/**
 * Which kind of data a part holds; refuses keys that have no translation. A part holding only a thought
 * signature is reported as a thought (skipped by the callers): signatures mean something to Gemini only.
 */
function partKind(
  p: unknown,
  path: string,
): { kind: (typeof PART_KINDS)[number]; value: unknown; thought: boolean } {
  if (!isObj(p)) throw invalid(path, `${path} must be an object`);
  let found: { kind: (typeof PART_KINDS)[number]; value: unknown } | null = null;
  for (const k of Object.keys(p)) {
    const key = camel(k);
    if (PART_EXTRAS.has(key)) continue;
    const kind = PART_KINDS.find((x) => x === key);
    if (!kind) throw fromGemini(`${path}.${key}`, `${key} parts have no OpenAI chat equivalent`);
    if (found) throw invalid(path, `${path} holds both ${found.kind} and ${kind}`);
    found = { kind, value: p[k] };
  }
  if (!found) {
    if (Object.keys(p).length === 0) throw invalid(path, `${path} holds no data`);
    return { kind: 'text', value: '', thought: true };
  }
  return { ...found, thought: field(p, 'thought') === true };
}

function chatMessagesOf(contents: unknown): ChatMessage[] {
  if (!Array.isArray(contents)) throw invalid('contents', 'contents must be an array');
  const out: ChatMessage[] = [];
  let next = 0;
  // function name -> calls not yet answered, oldest first (Gemini answers calls by name, in order)
  const pending = new Map<string, Array<{ id: string; geminiId: unknown }>>();

  contents.forEach((c: unknown, i) => {
    const at = `contents[${i}]`;
    if (!isObj(c)) throw invalid(at, `${at} must be an object`);
    const role = c['role'] ?? 'user';
    const parts = list(c['parts'] ?? [], `${at}.parts`);
    if (role === 'model') {
      let text = '';
      const calls: FunctionToolCall[] = [];
      parts.forEach((p, j) => {
        const pt = `${at}.parts[${j}]`;
        const { kind, value, thought } = partKind(p, pt);
        if (thought) return; // earlier turns' thoughts: Gemini-internal, as Anthropic drops past thinking
        if (kind === 'text') text += String(value ?? '');
        else if (kind === 'functionCall') {
          if (!isObj(value) || typeof value['name'] !== 'string')
            throw invalid(`${pt}.functionCall`, `${pt}.functionCall needs a name`);
          const id = `call_${next++}`;
          const q = pending.get(value['name']) ?? [];
          q.push({ id, geminiId: value['id'] });
          pending.set(value['name'], q);
          const args = value['args'] ?? {};
          calls.push({
            id,
            type: 'function',
            function: { name: value['name'], arguments: JSON.stringify(args) },
          });
        } else
          throw fromGemini(`${pt}.${kind}`, `${kind} parts in model turns have no OpenAI chat equivalent`);
      });
      if (text === '' && calls.length === 0) return; // a turn of thoughts only
      const msg: AssistantMessage = { role: 'assistant', content: text === '' ? null : text };
      if (calls.length > 0) msg.tool_calls = calls;
      out.push(msg);
      return;
    }
    if (role !== 'user' && role !== 'function')
      throw invalid(`${at}.role`, `unknown role ${JSON.stringify(role)}`);
    // Tool results first: OpenAI wants them right after the assistant's calls; the rest of the turn follows.
    const tools: ChatMessage[] = [];
    const user: UserContentPart[] = [];
    parts.forEach((p, j) => {
      const pt = `${at}.parts[${j}]`;
      const { kind, value, thought } = partKind(p, pt);
      if (thought) return;
      switch (kind) {
        case 'text':
          if (typeof value !== 'string') throw invalid(`${pt}.text`, `${pt}.text must be a string`);
          if (value !== '') user.push({ type: 'text', text: value });
          return;
        case 'inlineData':
          user.push(blobPart(value, `${pt}.inlineData`));
          return;
        case 'fileData':
          user.push(filePart(value, `${pt}.fileData`));
          return;
        case 'functionResponse': {
          if (!isObj(value) || typeof value['name'] !== 'string')
            throw invalid(`${pt}.functionResponse`, `${pt}.functionResponse needs a name`);
          for (const k of Object.keys(value)) {
            if (!['name', 'response', 'id'].includes(k))
              throw fromGemini(`${pt}.functionResponse.${camel(k)}`);
          }
          const q = pending.get(value['name']) ?? [];
          let k = given(value['id']) ? q.findIndex((e) => e.geminiId === value['id']) : -1;
          if (k < 0) k = 0;
          const call = q.splice(k, 1)[0];
          if (!call)
            throw invalid(
              `${pt}.functionResponse`,
              `${pt}.functionResponse answers no earlier functionCall named ${JSON.stringify(value['name'])}`,
            );
          tools.push({ role: 'tool', tool_call_id: call.id, content: toolText(value['response']) });
          return;
        }
        default:
          throw invalid(`${pt}.${kind}`, `${kind} parts belong in model turns`);
      }
    });
    out.push(...tools);
    const only = user.length === 1 ? user[0]! : null;
    if (only?.type === 'text') out.push({ role: 'user', content: only.text });
    else if (user.length > 0) out.push({ role: 'user', content: user });
  });
  return out;
}

function systemOf(si: unknown): ChatMessage | null {
  if (!given(si)) return null;
  if (typeof si === 'string') return { role: 'system', content: si };
  if (!isObj(si)) throw invalid('systemInstruction', 'systemInstruction must be a Content object');
  const texts: string[] = [];
  list(si['parts'] ?? [], 'systemInstruction.parts').forEach((p, j) => {
    const pt = `systemInstruction.parts[${j}]`;
    const { kind, value, thought } = partKind(p, pt);
    if (kind !== 'text' || typeof value !== 'string')
      throw fromGemini(pt, 'a system instruction carries text only');
    if (!thought && value !== '') texts.push(value);
  });
  if (texts.length === 0) return null;
  return {
    role: 'system',
    content: texts.length === 1 ? texts[0]! : texts.map((text) => ({ type: 'text' as const, text })),
  };
}

function generationOf(g: unknown, chat: Obj): void {
  if (!given(g)) return;
  if (!isObj(g)) throw invalid('generationConfig', 'generationConfig must be an object');
  for (const k of Object.keys(g)) {
    const key = camel(k);
    const why = GENERATION_REFUSED[key];
    if (why !== undefined) {
      if (given(g[k]) && g[k] !== false) throw fromGemini(`generationConfig.${key}`, why);
    } else if (!GENERATION_HANDLED.has(key)) throw fromGemini(`generationConfig.${key}`, 'unknown parameter');
  }
  const num = (key: string): number | undefined => {
    const v = field(g, key);
    if (!given(v)) return undefined;
    if (typeof v !== 'number')
      throw invalid(`generationConfig.${key}`, `generationConfig.${key} must be a number`);
    return v;
  };
  const max = num('maxOutputTokens');
  if (max !== undefined) chat['max_tokens'] = max;
  const t = num('temperature');
  if (t !== undefined) chat['temperature'] = t;
  const topP = num('topP');
  if (topP !== undefined) chat['top_p'] = topP;
  const n = num('candidateCount');
  if (n !== undefined) chat['n'] = n;
  const seed = num('seed');
  if (seed !== undefined) chat['seed'] = seed;
  const pp = num('presencePenalty');
  if (pp !== undefined) chat['presence_penalty'] = pp;
  const fp = num('frequencyPenalty');
  if (fp !== undefined) chat['frequency_penalty'] = fp;
  const stop = field(g, 'stopSequences');
  if (given(stop)) {
    if (!Array.isArray(stop) || !stop.every((s) => typeof s === 'string'))
      throw invalid('generationConfig.stopSequences', 'stopSequences must be an array of strings');
    if (stop.length > 0) chat['stop'] = stop;
  }

  const modalities = field(g, 'responseModalities');
  if (
    given(modalities) &&
    !(Array.isArray(modalities) && modalities.every((m) => String(m).toUpperCase() === 'TEXT'))
  ) {
    throw fromGemini('generationConfig.responseModalities', 'only the TEXT modality is supported');
  }

  const mime = field(g, 'responseMimeType');
  const jsonSchema = field(g, 'responseJsonSchema');
  const schema = field(g, 'responseSchema');
  if (mime === 'application/json') {
    const s = given(jsonSchema) ? jsonSchema : given(schema) ? jsonSchemaOf(schema) : undefined;
    chat['response_format'] = isObj(s)
      ? { type: 'json_schema', json_schema: { name: 'response', schema: s } }
      : { type: 'json_object' };
  } else if (given(mime) && mime !== 'text/plain') {
    throw fromGemini(
      'generationConfig.responseMimeType',
      'only text/plain and application/json are supported',
    );
  } else if (given(jsonSchema) || given(schema)) {
    throw invalid(
      'generationConfig.responseMimeType',
      'a response schema needs responseMimeType application/json',
    );
  }

  const tc = field(g, 'thinkingConfig');
  if (given(tc)) {
    if (!isObj(tc)) throw invalid('generationConfig.thinkingConfig', 'thinkingConfig must be an object');
    // includeThoughts is dropped: whether thoughts are shown, not how the model answers.
    for (const k of Object.keys(tc)) {
      const key = camel(k);
      if (key === 'includeThoughts') continue;
      if (key === 'thinkingLevel') {
        const lvl = String(tc[k]).toLowerCase();
        if (!['minimal', 'low', 'medium', 'high'].includes(lvl))
          throw fromGemini('generationConfig.thinkingConfig.thinkingLevel', 'unknown thinking level');
        chat['reasoning_effort'] = lvl;
      } else if (key === 'thinkingBudget') {
        // -1 is "let the model decide", every model's default; a budget in tokens has no OpenAI equivalent.
        if (tc[k] !== -1)
          throw fromGemini(
            'generationConfig.thinkingConfig.thinkingBudget',
            'use thinkingLevel, which maps to reasoning_effort',
          );
      } else throw fromGemini(`generationConfig.thinkingConfig.${key}`);
    }
  }
}

const DECLARATION_FIELDS = new Set(['name', 'description', 'parameters', 'parametersJsonSchema']);

function chatToolsOf(tools: unknown): OpenAITool[] {
  const out: OpenAITool[] = [];
  list(tools, 'tools').forEach((t, i) => {
    if (!isObj(t)) throw invalid(`tools[${i}]`, `tools[${i}] must be an object`);
    for (const k of Object.keys(t)) {
      const key = camel(k);
      if (key !== 'functionDeclarations')
        throw fromGemini(
          `tools[${i}].${key}`,
          `${key} runs on Google's servers and has no equivalent on this channel`,
        );
    }
    list(field(t, 'functionDeclarations') ?? [], `tools[${i}].functionDeclarations`).forEach((d, j) => {
      const at = `tools[${i}].functionDeclarations[${j}]`;
      if (!isObj(d) || typeof d['name'] !== 'string') throw invalid(at, `${at} needs a name`);
      for (const k of Object.keys(d))
        if (!DECLARATION_FIELDS.has(camel(k))) throw fromGemini(`${at}.${camel(k)}`);
      const fn: OpenAITool & { type: 'function' } = { type: 'function', function: { name: d['name'] } };
      if (typeof d['description'] === 'string') fn.function.description = d['description'];
      const js = field(d, 'parametersJsonSchema');
      const params = given(js) ? js : given(d['parameters']) ? jsonSchemaOf(d['parameters']) : undefined;
      if (isObj(params)) fn.function.parameters = params;
      out.push(fn);
    });
  });
  return out;
}

function chatToolChoiceOf(tc: unknown): OpenAIToolChoice | undefined {
  if (!given(tc)) return undefined;
  if (!isObj(tc)) throw invalid('toolConfig', 'toolConfig must be an object');
  for (const k of Object.keys(tc))
    if (camel(k) !== 'functionCallingConfig') throw fromGemini(`toolConfig.${camel(k)}`);
  const fcc = field(tc, 'functionCallingConfig');
  if (!given(fcc)) return undefined;
  if (!isObj(fcc))
    throw invalid('toolConfig.functionCallingConfig', 'functionCallingConfig must be an object');
  const mode = String(fcc['mode'] ?? 'AUTO').toUpperCase();
  const rawNames = field(fcc, 'allowedFunctionNames');
  const names = Array.isArray(rawNames) ? rawNames.map(String) : [];
  const allowed = (m: 'auto' | 'required'): OpenAIToolChoice => ({
    type: 'allowed_tools',
    allowed_tools: { mode: m, tools: names.map((name) => ({ type: 'function', function: { name } })) },
  });
  switch (mode) {
    case 'NONE':
      return 'none';
    case 'AUTO':
    case 'MODE_UNSPECIFIED':
      return names.length > 0 ? allowed('auto') : 'auto';
    case 'ANY':
      if (names.length === 1) return { type: 'function', function: { name: names[0]! } };
      return names.length > 1 ? allowed('required') : 'required';
    default:
      throw fromGemini('toolConfig.functionCallingConfig.mode', `mode ${mode} has no OpenAI chat equivalent`);
  }
}

/**
 * A Gemini GenerateContentRequest as an OpenAI chat request (model: the body's `model`, which the gateway
 * sets to the alias). Function calls get ids `call_0`, `call_1`, ... in order; each functionResponse
 * answers the oldest unanswered call of its name (or the one whose Gemini id it names). Throws a 400
 * GatewayError for anything without a faithful translation.
 */
export function geminiToChatRequest(body: Record<string, unknown>, stream: boolean): Record<string, unknown> {
  if (!isObj(body)) throw invalid('body', 'the request body must be a JSON object');
  for (const k of Object.keys(body)) {
    const key = camel(k);
    const why = GEMINI_REFUSED[key];
    if (why !== undefined) {
      if (given(body[k])) throw fromGemini(key, why);
    } else if (!GEMINI_HANDLED.has(key)) throw fromGemini(key, 'unknown parameter');
  }
  const messages: ChatMessage[] = [];
  const sys = systemOf(field(body, 'systemInstruction'));
  if (sys) messages.push(sys);
  messages.push(...chatMessagesOf(body['contents']));
  const chat: Obj = {};
  if (typeof body['model'] === 'string') chat['model'] = body['model'];
  chat['messages'] = messages;
  generationOf(field(body, 'generationConfig'), chat);
  const rawTools = field(body, 'tools');
  const tools = given(rawTools) ? chatToolsOf(rawTools) : [];
  const choice = chatToolChoiceOf(field(body, 'toolConfig'));
  if (tools.length > 0) {
    chat['tools'] = tools;
    if (choice) chat['tool_choice'] = choice;
  }
  chat['stream'] = stream;
  return chat;
}

// =====================================================================================================
// OpenAI chat completion -> Gemini response
// =====================================================================================================

const GEMINI_FINISH: Record<string, string> = {
  stop: 'STOP',
  length: 'MAX_TOKENS',
  tool_calls: 'STOP',
  function_call: 'STOP',
  content_filter: 'SAFETY',
};

const responseIdOf = (id: unknown): string =>
  typeof id === 'string' && id !== '' ? id.replace(/^chatcmpl-/, '') : randomId();

/** Tool call arguments from the chat answer as a functionCall `args` object. */
function callArgs(raw: unknown): Obj {
  try {
    const v: unknown = raw === '' || raw === undefined || raw === null ? {} : JSON.parse(String(raw));
    if (isObj(v)) return v;
  } catch {
    /* fall through */
  }
  throw badUpstream('upstream returned tool call arguments that are not a JSON object');
}

/** Gemini rejects nothing here, but naive clients read parts[0]: an empty answer is one empty text part. */
const orEmpty = (parts: Part[]): Part[] => (parts.length > 0 ? parts : [{ text: '' }]);

/** A chat completion as a Gemini GenerateContentResponse reported under `alias` (modelVersion). */
export function chatToGeminiResponse(
  c: ChatCompletion,
  usage: Usage | null,
  alias: string,
): GenerateContentResponse {
  const candidates: Candidate[] = (c.choices ?? []).map((ch, i): Candidate => {
    const m = ch.message ?? ({} as Partial<ChatCompletionChoice['message']>);
    const parts: Part[] = [];
    if (typeof m.content === 'string' && m.content !== '') parts.push({ text: m.content });
    if (typeof m.refusal === 'string' && m.refusal !== '') parts.push({ text: m.refusal });
    for (const tc of m.tool_calls ?? []) {
      if (tc.type !== 'function') throw badUpstream(`upstream returned a ${String(tc.type)} tool call`);
      parts.push({ functionCall: { name: tc.function.name, args: callArgs(tc.function.arguments) } });
    }
    return {
      content: { role: 'model', parts: orEmpty(parts) },
      finishReason: GEMINI_FINISH[ch.finish_reason ?? 'stop'] ?? 'STOP',
      index: typeof ch.index === 'number' ? ch.index : i,
    };
  });
  const out: GenerateContentResponse = { candidates, modelVersion: alias, responseId: responseIdOf(c.id) };
  const u = usage ?? openaiUsage(c.usage);
  if (u) out.usageMetadata = toGeminiUsage(u, c.usage?.completion_tokens_details?.reasoning_tokens ?? 0);
  return out;
}

// =====================================================================================================
// OpenAI chat stream -> Gemini stream
// =====================================================================================================

/** One Gemini SSE event (the API frames them with CRLF). */
export function geminiFrame(res: unknown): string {
  return `data: ${JSON.stringify(res)}\r\n\r\n`;
}

/** Ends a Gemini client's stream with Google's error envelope. */
export function geminiErrorFrame(err: GatewayError): string {
  return geminiFrame(toGoogleError(err));
}

/**
 * Writes a Gemini stream from OpenAI chat chunks: each text delta is a chunk with one text part; function
 * calls are gathered until their arguments are complete and sent as whole functionCall parts in the final
 * chunk, which also carries each candidate's finishReason and the usageMetadata.
 */
export class ChatToGeminiStream implements PivotStream {
  private readonly tally = new TextTally();
  private responseId = '';
  private readonly seen = new Set<number>();
  private readonly calls = new Map<number, Map<number, { name: string; args: string }>>();
  private readonly reasons = new Map<number, string>();
  private ended = false;

  constructor(private readonly alias: string) {}

  get emittedText(): string {
    return this.tally.text;
  }

  push(chunk: ChatCompletionChunk): string {
    if (this.ended) return '';
    if (this.responseId === '' && typeof chunk.id === 'string' && chunk.id !== '')
      this.responseId = responseIdOf(chunk.id);
    const candidates: Candidate[] = [];
    for (const ch of Array.isArray(chunk.choices) ? chunk.choices : []) {
      const i = typeof ch.index === 'number' ? ch.index : 0;
      this.seen.add(i);
      const d = ch.delta ?? {};
      let text = '';
      for (const t of [d.content, d.refusal]) if (typeof t === 'string') text += t;
      for (const tc of Array.isArray(d.tool_calls) ? d.tool_calls : []) {
        const byIndex = this.calls.get(i) ?? new Map<number, { name: string; args: string }>();
        this.calls.set(i, byIndex);
        const n = typeof tc.index === 'number' ? tc.index : 0;
        const call = byIndex.get(n) ?? { name: '', args: '' };
        byIndex.set(n, call);
        if (typeof tc.function?.name === 'string' && call.name === '') call.name = tc.function.name;
        if (typeof tc.function?.arguments === 'string') call.args += tc.function.arguments;
      }
      if (typeof ch.finish_reason === 'string') this.reasons.set(i, ch.finish_reason);
      if (text !== '') {
        this.tally.add(text);
        candidates.push({ content: { role: 'model', parts: [{ text }] }, index: i });
      }
    }
    return candidates.length > 0 ? geminiFrame(this.response(candidates)) : '';
  }

  finish(usage: Usage | null): string {
    if (this.ended) return '';
    this.ended = true;
    const indices = this.seen.size > 0 ? [...this.seen].sort((a, b) => a - b) : [0];
    const candidates = indices.map((i): Candidate => {
      const calls = [
        ...(this.calls.get(i) ?? new Map<number, { name: string; args: string }>()).entries(),
      ].sort((a, b) => a[0] - b[0]);
      const parts: Part[] = calls.map(([, c]) => ({
        functionCall: { name: c.name, args: callArgs(c.args) },
      }));
      return {
        content: { role: 'model', parts: orEmpty(parts) },
        finishReason: GEMINI_FINISH[this.reasons.get(i) ?? 'stop'] ?? 'STOP',
        index: i,
      };
    });
    const res = this.response(candidates);
    if (usage) res.usageMetadata = toGeminiUsage(usage);
    return geminiFrame(res);
  }

  private response(candidates: Candidate[]): GenerateContentResponse {
    if (this.responseId === '') this.responseId = randomId();
    return { candidates, modelVersion: this.alias, responseId: this.responseId };
  }
}

// =====================================================================================================
// The pivot
// =====================================================================================================

/**
 * A Gemini-format request served by any chat channel: the chat request (model = the body's `model`, the
 * alias, else `alias`; streams ask for the usage chunk) and the way back.
 */
export function geminiPivot(body: Record<string, unknown>, stream: boolean, alias: string): ChatPivot {
  const chat = geminiToChatRequest(body, stream);
  if (typeof chat['model'] !== 'string') chat['model'] = alias;
  return {
    chat: withUsage(chat),
    fromChat: (c, usage) => chatToGeminiResponse(c, usage, alias),
    stream: () => new ChatToGeminiStream(alias),
    errorFrame: geminiErrorFrame,
  };
}
