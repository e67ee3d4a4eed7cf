/** Token usage as Anima books it, whatever the provider called the fields. */
export interface Usage {
  /** All prompt tokens, cached ones included (OpenAI's prompt_tokens). */
  inputTokens: number;
  outputTokens: number;
  /** Prompt tokens read from the provider's cache (a subset of inputTokens). */
  cachedTokens: number;
  /** Prompt tokens written to the provider's cache (Anthropic cache_creation_input_tokens; subset of inputTokens). */
  cacheWriteTokens: number;
  /** Metered units besides tokens, for operations priced by them (speech, transcription, image edits). */
  characters?: number;
  audioSeconds?: number;
  images?: number;
}

export function emptyUsage(): Usage {
  return { inputTokens: 0, outputTokens: 0, cachedTokens: 0, cacheWriteTokens: 0 };
}
