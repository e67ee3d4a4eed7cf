/**
 * The Anthropic Messages wire format, as far as Anima reads or writes it.
 *
 * Field names and shapes follow the official SDK (@anthropic-ai/sdk, resources/messages). Block and
 * tool unions list what Anima translates; anything else (server tools, documents, ...) is still
 * accepted by the types through the `Other*` members so it can be forwarded or refused by name.
 */
import type { Usage } from '../../core/usage.js';

// ---------------------------------------------------------------- request: content blocks

export interface CacheControl {
  type: 'ephemeral';
  ttl?: '5m' | '1h';
}

export interface TextBlockParam {
  type: 'text';
  text: string;
  cache_control?: CacheControl | null;
  citations?: unknown[] | null;
}

export type ImageMediaType = 'image/jpeg' | 'image/png' | 'image/gif' | 'image/webp';

export type ImageSource =
  | { type: 'base64'; media_type: ImageMediaType; data: string }
  | { type: 'url'; url: string }
  | { type: 'file'; file_id: string };

export interface ImageBlockParam {
  type: 'image';
  source: ImageSource;
  cache_control?: CacheControl | null;
}

export interface ToolUseBlockParam {
  type: 'tool_use';
  id: string;
  name: string;
  input: unknown;
  cache_control?: CacheControl | null;
}

export interface ToolResultBlockParam {
  type: 'tool_result';
  tool_use_id: string;
  content?: string | Array<TextBlockParam | ImageBlockParam | OtherBlockParam>;
  is_error?: boolean;
  cache_control?: CacheControl | null;
}

export interface ThinkingBlockParam {
  type: 'thinking';
  thinking: string;
  signature: string;
}

export interface RedactedThinkingBlockParam {
  type: 'redacted_thinking';
  data: string;
}

/** document, search_result, server_tool_use, web_search_tool_result, ... */
export interface OtherBlockParam {
  type: string;
  [k: string]: unknown;
}

export type ContentBlockParam =
  | TextBlockParam
  | ImageBlockParam
  | ToolUseBlockParam
  | ToolResultBlockParam
  | ThinkingBlockParam
  | RedactedThinkingBlockParam;

export interface MessageParam {
  /** Newer API versions also accept `system` turns inside `messages`. */
  role: 'user' | 'assistant' | 'system';
  content: string | ContentBlockParam[];
}

// ---------------------------------------------------------------- request: tools

export interface InputSchema {
  type: 'object';
  properties?: unknown;
  required?: string[] | null;
  [k: string]: unknown;
}

/** A client ("custom") tool: the only kind that has an OpenAI equivalent. */
export interface CustomTool {
  type?: 'custom' | null;
  name: string;
  description?: string;
  input_schema: InputSchema;
  strict?: boolean;
  cache_control?: CacheControl | null;
}

export type ToolChoice =
  | { type: 'auto'; disable_parallel_tool_use?: boolean }
  | { type: 'any'; disable_parallel_tool_use?: boolean }
  | { type: 'tool'; name: string; disable_parallel_tool_use?: boolean }
  | { type: 'none' };

export type ThinkingConfig =
  | { type: 'enabled'; budget_tokens: number; display?: string | null }
  | { type: 'disabled' }
  | { type: 'adaptive'; display?: string | null }
  | { type: 'between_tools' };

// ---------------------------------------------------------------- request

export interface MessagesRequest {
  model: string;
  messages: MessageParam[];
  max_tokens: number;
  system?: string | TextBlockParam[];
  stop_sequences?: string[];
  stream?: boolean;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  metadata?: { user_id?: string | null };
  /** Custom tools; server tools (web_search_20250305, bash_20250124, ...) carry a different `type`. */
  tools?: Array<CustomTool | { type: string; name: string; [k: string]: unknown }>;
  tool_choice?: ToolChoice;
  thinking?: ThinkingConfig;
  service_tier?: 'auto' | 'standard_only';
  container?: unknown;
  mcp_servers?: unknown[];
  /** Everything else Anthropic accepts; the Anthropic-native path forwards it untouched. */
  [k: string]: unknown;
}

// ---------------------------------------------------------------- response

export interface TextBlock {
  type: 'text';
  text: string;
  citations?: unknown[] | null;
}

export interface ToolUseBlock {
  type: 'tool_use';
  id: string;
  name: string;
  input: unknown;
}

export interface ThinkingBlock {
  type: 'thinking';
  thinking: string;
  signature: string;
}

export interface RedactedThinkingBlock {
  type: 'redacted_thinking';
  data: string;
}

export type ContentBlock = TextBlock | ToolUseBlock | ThinkingBlock | RedactedThinkingBlock;

export type StopReason =
  | 'end_turn'
  | 'max_tokens'
  | 'stop_sequence'
  | 'tool_use'
  | 'pause_turn'
  | 'refusal'
  | 'model_context_window_exceeded';

/** Anthropic's `usage`; input_tokens EXCLUDES the cache read/creation tokens. */
export interface AnthropicUsage {
  input_tokens: number;
  output_tokens: number;
  cache_creation_input_tokens?: number | null;
  cache_read_input_tokens?: number | null;
  [k: string]: unknown;
}

/** `usage` on message_delta: cumulative totals; fields other than output_tokens may be absent or null. */
export interface MessageDeltaUsage {
  output_tokens: number;
  input_tokens?: number | null;
  cache_creation_input_tokens?: number | null;
  cache_read_input_tokens?: number | null;
  [k: string]: unknown;
}

export interface Message {
  id: string;
  type: 'message';
  role: 'assistant';
  model: string;
  content: ContentBlock[];
  stop_reason: StopReason | null;
  stop_sequence: string | null;
  usage: AnthropicUsage;
  [k: string]: unknown;
}

// ---------------------------------------------------------------- streaming

export interface MessageStartEvent {
  type: 'message_start';
  message: Message;
}

export interface ContentBlockStartEvent {
  type: 'content_block_start';
  index: number;
  content_block: ContentBlock;
}

export type ContentBlockDelta =
  | { type: 'text_delta'; text: string }
  | { type: 'input_json_delta'; partial_json: string }
  | { type: 'thinking_delta'; thinking: string }
  | { type: 'signature_delta'; signature: string }
  | { type: 'citations_delta'; citation: unknown };

export interface ContentBlockDeltaEvent {
  type: 'content_block_delta';
  index: number;
  delta: ContentBlockDelta;
}

export interface ContentBlockStopEvent {
  type: 'content_block_stop';
  index: number;
}

export interface MessageDeltaEvent {
  type: 'message_delta';
  delta: { stop_reason: StopReason | null; stop_sequence: string | null };
  usage: MessageDeltaUsage;
}

export interface MessageStopEvent {
  type: 'message_stop';
}

export interface PingEvent {
  type: 'ping';
}

/** Sent mid-stream (the HTTP status is already 200), e.g. `overloaded_error`. */
export interface ErrorEvent {
  type: 'error';
  error: { type: string; message: string };
}

export type StreamEvent =
  | MessageStartEvent
  | ContentBlockStartEvent
  | ContentBlockDeltaEvent
  | ContentBlockStopEvent
  | MessageDeltaEvent
  | MessageStopEvent
  | PingEvent
  | ErrorEvent;

// ---------------------------------------------------------------- usage

function count(x: unknown): number {
  return typeof x === 'number' && Number.isFinite(x) && x > 0 ? x : 0;
}

/**
 * Anima's Usage from an Anthropic `usage` object (Message.usage, message_start or message_delta).
 * Anthropic's input_tokens excludes cached tokens; Anima's inputTokens is the whole prompt, so the
 * cache read and cache creation counts are added back. Missing or null fields count as 0.
 */
export function anthropicUsage(u: unknown): Usage {
  const o = typeof u === 'object' && u !== null ? (u as Record<string, unknown>) : {};
  const read = count(o['cache_read_input_tokens']);
  const write = count(o['cache_creation_input_tokens']);
  return {
    inputTokens: count(o['input_tokens']) + read + write,
    outputTokens: count(o['output_tokens']),
    cachedTokens: read,
    cacheWriteTokens: write,
  };
}
