/**
 * Gemini as a client dialect (inbound): a Gemini-format client served by any other channel, through the
 * chat pivot: geminiToChatRequest, chatToGeminiResponse, ChatToGeminiStream; geminiPivot bundles them.
 * Same refusal policy as outbound.ts.
 */
import type { Usage } from '../../core/usage.js';
import {
  openaiUsage,
  type AssistantMessage,
  type ChatCompletion,
  type ChatCompletionChoice,
  type ChatCompletionChunk,
  type ChatMessage,
  type FunctionToolCall,
  type Tool as OpenAITool,
  type ToolChoice as OpenAIToolChoice,
  type UserContentPart,
} from '../openai/wire.js';
import { withUsage, type ChatPivot, type PivotStream } from '../pivot.js';
import { TextTally } from '../shared.js';
import { type Frame, writeGemini } from '../stream.js';
import { toGeminiUsage, type Candidate, type GenerateContentResponse, type Part } from './wire.js';
import { badUpstream, fromGemini, given, invalid, isObj, randomId, type Obj } from './common.js';

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

  push(chunk: ChatCompletionChunk): readonly Frame[] {
    if (this.ended) return [];
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
    return candidates.length > 0 ? [{ data: this.response(candidates) }] : [];
  }

  finish(usage: Usage | null): readonly Frame[] {
    if (this.ended) return [];
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
    return [{ data: res }];
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
    writer: writeGemini,
  };
}
