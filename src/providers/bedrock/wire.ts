/**
 * The Bedrock Converse wire format, as far as Anima reads or writes it.
 *
 * Request and response: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html
 * Stream events: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStreamOutput.html
 *
 * Content blocks are unions keyed by shape (`{text}`, `{image}`, `{toolUse}`, `{toolResult}`), with no
 * `type` tag; binary fields (`image.source.bytes`) travel base64-encoded in the JSON protocol.
 */
import type { Usage } from '../../core/usage.js';

export type ImageFormat = 'png' | 'jpeg' | 'gif' | 'webp';

export type ToolResultContent = { text: string } | { json: unknown };

export type ContentBlock =
  | { text: string }
  | { image: { format: ImageFormat; source: { bytes: string } } }
  | { toolUse: { toolUseId: string; name: string; input: unknown } }
  | {
      toolResult: {
        toolUseId: string;
        content: ToolResultContent[];
        status?: 'success' | 'error';
      };
    }
  /** Extended thinking output (Anthropic and others): read and skipped, OpenAI chat has no place for it. */
  | { reasoningContent: unknown };

export interface ConverseMessage {
  role: 'user' | 'assistant';
  content: ContentBlock[];
}

export interface ToolSpec {
  toolSpec: { name: string; description?: string; inputSchema: { json: unknown } };
}

export type ToolChoice = { auto: object } | { any: object } | { tool: { name: string } };

export interface InferenceConfig {
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  stopSequences?: string[];
}

export interface ConverseRequest {
  messages: ConverseMessage[];
  system?: Array<{ text: string }>;
  inferenceConfig?: InferenceConfig;
  toolConfig?: { tools: ToolSpec[]; toolChoice?: ToolChoice };
}

/** https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html#API_runtime_Converse_ResponseSyntax */
export type StopReason =
  | 'end_turn'
  | 'tool_use'
  | 'max_tokens'
  | 'stop_sequence'
  | 'guardrail_intervened'
  | 'content_filtered'
  | 'model_context_window_exceeded'
  | 'malformed_model_output'
  | 'malformed_tool_use';

export interface TokenUsage {
  inputTokens?: number;
  outputTokens?: number;
  totalTokens?: number;
  cacheReadInputTokens?: number;
  cacheWriteInputTokens?: number;
}

export interface ConverseResponse {
  output: { message: ConverseMessage };
  stopReason: StopReason;
  usage?: TokenUsage;
  metrics?: { latencyMs: number };
}

const count = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : 0);

/**
 * Bedrock's TokenUsage as Anima books it. `inputTokens` counts only the uncached prompt tokens: cache reads
 * and writes are reported beside it (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_TokenUsage.html,
 * and see https://github.com/anomalyco/opencode/pull/38427 for the same correction), so the total prompt is
 * their sum, as Anima's Usage (OpenAI's prompt_tokens) counts it.
 */
export function bedrockUsage(u: unknown): Usage {
  const o = typeof u === 'object' && u !== null ? (u as Record<string, unknown>) : {};
  const read = count(o['cacheReadInputTokens']);
  const write = count(o['cacheWriteInputTokens']);
  return {
    inputTokens: count(o['inputTokens']) + read + write,
    outputTokens: count(o['outputTokens']),
    cachedTokens: read,
    cacheWriteTokens: write,
  };
}
