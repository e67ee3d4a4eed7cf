/**
 * The Gemini (Generative Language API v1beta) wire format, as far as Anima reads or writes it:
 * `POST /models/{model}:generateContent` and `:streamGenerateContent?alt=sse` (each SSE event one
 * GenerateContentResponse). Field names are the REST API's lowerCamelCase ones; the API also accepts
 * the proto's snake_case spellings in requests, which the inbound translator reads as well.
 *
 * Types are loose where Anima only passes data through (the native passthrough forwards the request
 * untouched); index signatures keep fields Anima does not model.
 */
import type { Usage } from '../../core/usage.js';
import type { UpstreamEndpoint } from '../types.js';

// ---------------------------------------------------------------- content

export interface Blob {
  mimeType: string;
  /** base64 */
  data: string;
}

export interface FileData {
  mimeType?: string;
  fileUri: string;
}

export interface FunctionCall {
  id?: string;
  name: string;
  args?: Record<string, unknown>;
}

export interface FunctionResponse {
  id?: string;
  name: string;
  /** A JSON object; by convention `{output: …}` or `{error: …}` (else the whole object is the output). */
  response: Record<string, unknown>;
}

export interface Part {
  text?: string;
  /** The part is the model's reasoning (returned only with thinkingConfig.includeThoughts). */
  thought?: boolean;
  /** Opaque; must be echoed back on function-call turns for Gemini 3 models. */
  thoughtSignature?: string;
  inlineData?: Blob;
  fileData?: FileData;
  functionCall?: FunctionCall;
  functionResponse?: FunctionResponse;
  executableCode?: unknown;
  codeExecutionResult?: unknown;
  videoMetadata?: unknown;
  [k: string]: unknown;
}

export type Role = 'user' | 'model';

export interface Content {
  role?: Role;
  parts: Part[];
}

// ---------------------------------------------------------------- request

export interface FunctionDeclaration {
  name: string;
  description?: string;
  /** OpenAPI-subset Schema (types in upper case: OBJECT, STRING, ...). */
  parameters?: Record<string, unknown>;
  /** Plain JSON Schema (exclusive with `parameters`). */
  parametersJsonSchema?: unknown;
  response?: Record<string, unknown>;
  responseJsonSchema?: unknown;
}

export interface Tool {
  functionDeclarations?: FunctionDeclaration[];
  /** Server-side tools (googleSearch, codeExecution, urlContext, ...): Anima only passes them through. */
  [k: string]: unknown;
}

export type FunctionCallingMode = 'MODE_UNSPECIFIED' | 'AUTO' | 'ANY' | 'NONE' | 'VALIDATED';

export interface ToolConfig {
  functionCallingConfig?: { mode?: FunctionCallingMode; allowedFunctionNames?: string[] };
  [k: string]: unknown;
}

export interface ThinkingConfig {
  includeThoughts?: boolean;
  /** Tokens; 0 turns thinking off (where the model allows it), -1 lets the model decide. */
  thinkingBudget?: number;
  thinkingLevel?: string;
}

export interface GenerationConfig {
  stopSequences?: string[];
  responseMimeType?: string;
  responseSchema?: Record<string, unknown>;
  responseJsonSchema?: unknown;
  responseModalities?: string[];
  candidateCount?: number;
  maxOutputTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  seed?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  responseLogprobs?: boolean;
  logprobs?: number;
  thinkingConfig?: ThinkingConfig;
  [k: string]: unknown;
}

export interface GenerateContentRequest {
  contents: Content[];
  systemInstruction?: Content;
  tools?: Tool[];
  toolConfig?: ToolConfig;
  safetySettings?: unknown[];
  generationConfig?: GenerationConfig;
  cachedContent?: string;
  [k: string]: unknown;
}

// ---------------------------------------------------------------- response

export type FinishReason =
  | 'FINISH_REASON_UNSPECIFIED'
  | 'STOP'
  | 'MAX_TOKENS'
  | 'SAFETY'
  | 'RECITATION'
  | 'LANGUAGE'
  | 'OTHER'
  | 'BLOCKLIST'
  | 'PROHIBITED_CONTENT'
  | 'SPII'
  | 'MALFORMED_FUNCTION_CALL'
  | 'IMAGE_SAFETY'
  | 'UNEXPECTED_TOOL_CALL'
  | 'TOO_MANY_TOOL_CALLS';

export interface Candidate {
  content?: Partial<Content>;
  /** Absent on every stream chunk but the last one of its candidate. */
  finishReason?: FinishReason | string;
  index?: number;
  safetyRatings?: unknown[];
  citationMetadata?: unknown;
  finishMessage?: string;
  [k: string]: unknown;
}

export interface UsageMetadata {
  /** Includes cachedContentTokenCount. */
  promptTokenCount?: number;
  cachedContentTokenCount?: number;
  /** Excludes thoughtsTokenCount. */
  candidatesTokenCount?: number;
  thoughtsTokenCount?: number;
  /** Prompt tokens of server-side tool use (e.g. search results): billed as input. */
  toolUsePromptTokenCount?: number;
  totalTokenCount?: number;
  [k: string]: unknown;
}

export interface PromptFeedback {
  blockReason?: string;
  safetyRatings?: unknown[];
}

export interface GenerateContentResponse {
  candidates?: Candidate[];
  /** Present when the prompt itself was blocked (then there are no candidates). */
  promptFeedback?: PromptFeedback;
  usageMetadata?: UsageMetadata;
  modelVersion?: string;
  responseId?: string;
  [k: string]: unknown;
}

/** Google's error envelope (`status` is a google.rpc.Code name, e.g. RESOURCE_EXHAUSTED). */
export interface GeminiErrorBody {
  error: { code: number; message: string; status: string; details?: unknown[] };
}

// ---------------------------------------------------------------- usage

function count(x: unknown): number {
  return typeof x === 'number' && Number.isFinite(x) && x > 0 ? x : 0;
}

/**
 * Anima's Usage from a Gemini `usageMetadata`; null when there is none. Output includes the thinking
 * tokens (Gemini bills them as output but counts them apart); input includes server-tool prompt tokens.
 */
export function geminiUsage(u: unknown): Usage | null {
  if (typeof u !== 'object' || u === null) return null;
  const o = u as Record<string, unknown>;
  if (
    typeof o['promptTokenCount'] !== 'number' &&
    typeof o['candidatesTokenCount'] !== 'number' &&
    typeof o['thoughtsTokenCount'] !== 'number'
  ) {
    return null;
  }
  return {
    inputTokens: count(o['promptTokenCount']) + count(o['toolUsePromptTokenCount']),
    outputTokens: count(o['candidatesTokenCount']) + count(o['thoughtsTokenCount']),
    cachedTokens: count(o['cachedContentTokenCount']),
    cacheWriteTokens: 0,
  };
}

/** A Gemini `usageMetadata` for an Anima Usage (what translated answers report). */
export function toGeminiUsage(u: Usage, thoughtsTokens = 0): UsageMetadata {
  const thoughts = Math.min(thoughtsTokens, u.outputTokens);
  const out: UsageMetadata = {
    promptTokenCount: u.inputTokens,
    candidatesTokenCount: u.outputTokens - thoughts,
    totalTokenCount: u.inputTokens + u.outputTokens,
  };
  if (thoughts > 0) out.thoughtsTokenCount = thoughts;
  if (u.cachedTokens > 0) out.cachedContentTokenCount = u.cachedTokens;
  return out;
}

/** Request headers for a Gemini channel: the channel's own, and its key as `x-goog-api-key`. */
export function geminiHeaders(ep: UpstreamEndpoint): Record<string, string> {
  const h: Record<string, string> = { 'content-type': 'application/json', ...ep.headers };
  if (ep.credential) h['x-goog-api-key'] = ep.credential;
  return h;
}
