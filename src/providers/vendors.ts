/**
 * OpenAI-compatible vendors, one declaration each on the OpenAI base (registry.ts `openAICompatible`). Every
 * quirk below is what the vendor's own documentation says, with its address; where the docs say nothing,
 * the vendor gets no quirk. The default base URL is given for the operator (a channel always names its own).
 *
 * The rule the registry applies: a parameter the vendor can't honour and that changes the output is refused
 * (a 400 naming it, before any call); only pure hints the vendor rejects are dropped. A vendor that rejects
 * `stream_options` gets it dropped: its streams are billed from the usage in its final chunk when it sends
 * one, else from the estimate of the text sent (providers/shared.ts).
 *
 * Model-dependent limits (a reasoning model refusing `stop`, say) are not kind-level quirks: the upstream's
 * own 400 answers them, classified like any other.
 *
 * This module builds nothing itself: registry.ts hands in its builder, so the two modules don't import each
 * other at run time.
 */
import type { VendorKind } from '../core/model.js';
import type { InboundDialect } from './types.js';
import type { openAICompatible, ProviderDeclaration } from './registry.js';

type Spec = Parameters<typeof openAICompatible>[0];

const CHAT = new Set<InboundDialect>(['openai_chat']);
const CHAT_EMBED = new Set<InboundDialect>(['openai_chat', 'openai_embeddings']);

const SPECS: Readonly<Record<VendorKind, Omit<Spec, 'kind'>>> = {
  // https://docs.mistral.ai/api/#tag/chat (request schema); base https://api.mistral.ai/v1, Bearer.
  // The schema forbids fields it doesn't list (422 extra_forbidden, naming the field, e.g. mistralai
  // platform-docs-public#7): its spellings are max_tokens and random_seed; stream_options and store are not
  // in it. Streams carry usage in the final chunk without being asked. Errors come back un-nested:
  // {"object":"error","message","type","param","code"}, validation failures as 422.
  mistral: {
    description:
      'Mistral AI (https://api.mistral.ai/v1): max_completion_tokens sent as max_tokens, seed as random_seed; stream_options and store dropped',
    native: CHAT_EMBED,
    quirks: {
      rename: { max_completion_tokens: 'max_tokens', seed: 'random_seed' },
      drop: ['stream_options', 'store'],
    },
  },
  // https://console.groq.com/docs/openai ("Currently Unsupported OpenAI Features"); base
  // https://api.groq.com/openai/v1, Bearer. logprobs, logit_bias and top_logprobs "will result in a 400
  // error": refused here first. Also documented, not expressible as a top-level quirk: messages[].name is
  // refused by Groq itself, n must be 1 (Groq's own 400 otherwise), temperature 0 is sent on as 1e-8.
  // Transcription and translation are served; vtt/srt are rendered by Anima from verbose_json.
  groq: {
    description:
      'Groq (https://api.groq.com/openai/v1): logprobs, top_logprobs and logit_bias refused; chat, transcription, translation',
    native: new Set<InboundDialect>(['openai_chat', 'openai_transcription', 'openai_translation']),
    quirks: { refuse: ['logprobs', 'top_logprobs', 'logit_bias'] },
  },
  // https://api-docs.deepseek.com/ and https://api-docs.deepseek.com/api/create-chat-completion; base
  // https://api.deepseek.com (https://api.deepseek.com/v1 also accepted), Bearer. The request body takes the
  // OpenAI chat parameters, stream_options.include_usage included: no kind-level quirk. Thinking is a
  // non-standard `thinking` field, passed through as written.
  deepseek: {
    description: 'DeepSeek (https://api.deepseek.com): OpenAI chat as documented, no quirks',
    native: CHAT,
  },
  // https://docs.x.ai/docs/api-reference (chat completions, legacy beside Responses); base
  // https://api.x.ai/v1, Bearer. Reasoning models reject presence_penalty, frequency_penalty and stop:
  // model-dependent, so the upstream's 400 answers it; nothing refused for the whole kind.
  xai: {
    description: 'xAI Grok (https://api.x.ai/v1): OpenAI chat, no kind-level quirks',
    native: CHAT,
  },
  // https://docs.together.ai/docs/inference/openai-compatibility; base https://api.together.xyz/v1 (the
  // docs now show https://api.together.ai/v1), Bearer. Chat and embeddings through the OpenAI clients; no
  // unsupported parameter listed.
  together: {
    description: 'Together AI (https://api.together.xyz/v1): chat and embeddings, no quirks',
    native: CHAT_EMBED,
  },
  // https://docs.fireworks.ai/tools-sdks/openai-compatibility and .../migrate-to-fireworks; base
  // https://api.fireworks.ai/inference/v1, Bearer. When prompt + max_tokens exceed the context, Fireworks
  // lowers max_tokens instead of failing unless context_length_exceeded_behavior is "error": set by default
  // so a request means what it means on OpenAI (a client's own value wins). Streams carry usage in the final
  // chunk.
  fireworks: {
    description:
      'Fireworks AI (https://api.fireworks.ai/inference/v1): context_length_exceeded_behavior "error" by default, as OpenAI behaves',
    native: CHAT_EMBED,
    quirks: { defaults: { context_length_exceeded_behavior: 'error' } },
  },
  // https://openrouter.ai/docs/api-reference/overview#headers; base https://openrouter.ai/api/v1, Bearer.
  // HTTP-Referer and X-OpenRouter-Title (formerly X-Title) are optional app attribution: they name the
  // operator's site, so they belong in the channel's headers, not here.
  openrouter: {
    description:
      'OpenRouter (https://openrouter.ai/api/v1): OpenAI chat; attribution headers (HTTP-Referer, X-OpenRouter-Title) set per channel',
    native: CHAT,
  },
  // https://docs.perplexity.ai/docs/sonar/openai-compatibility; base https://api.perplexity.ai (no /v1;
  // /chat/completions is accepted as an alias of /v1/sonar), Bearer. Search options (search_domain_filter,
  // …) pass through as written. The page lists no rejected OpenAI parameter.
  perplexity: {
    description: 'Perplexity Sonar (https://api.perplexity.ai): chat with web search, no quirks',
    native: CHAT,
  },
  // https://docs.cohere.com/docs/compatibility-api; base https://api.cohere.ai/compatibility/v1, Bearer.
  // The Compatibility API rejects the stream_options field (also noted by the Strands Agents Cohere guide,
  // https://strandsagents.com/docs/user-guide/concepts/model-providers/cohere/): dropped.
  // Rerank is Cohere's native v2 API (https://docs.cohere.com/reference/rerank): a channel for it names the
  // base https://api.cohere.com/v2 (providers/rerank.ts).
  cohere: {
    description:
      'Cohere Compatibility API (https://api.cohere.ai/compatibility/v1): chat and embeddings; stream_options dropped; rerank on a channel with base https://api.cohere.com/v2',
    native: new Set<InboundDialect>(['openai_chat', 'openai_embeddings', 'rerank']),
    quirks: { drop: ['stream_options'] },
  },
  // https://docs.ollama.com/api/openai-compatibility; base http://localhost:11434/v1; the key is required by
  // clients but ignored (Bearer sent as is). Supported request fields list max_tokens, not
  // max_completion_tokens; stream_options.include_usage is supported.
  ollama: {
    description:
      'Ollama (http://localhost:11434/v1): chat and embeddings; max_completion_tokens sent as max_tokens',
    native: CHAT_EMBED,
    quirks: { rename: { max_completion_tokens: 'max_tokens' } },
  },
  // https://docs.vllm.ai/en/stable/serving/openai_compatible_server/; base http://localhost:8000/v1, Bearer
  // (the --api-key the server was started with). Its docs note parallel_tool_calls and user as ignored, not
  // rejected; extra sampling parameters (top_k, …) pass through.
  // It also serves Jina's rerank API at /v1/rerank (same page, "Re-rank API").
  vllm: {
    description:
      'vLLM OpenAI-compatible server (http://localhost:8000/v1): chat, embeddings and rerank, no quirks',
    native: new Set<InboundDialect>(['openai_chat', 'openai_embeddings', 'rerank']),
  },
  // https://lmstudio.ai/docs/developer/openai-compat/chat-completions ("Supported payload parameters");
  // base http://localhost:1234/v1, Bearer (any value unless API tokens are configured). The list has
  // max_tokens, not max_completion_tokens.
  lmstudio: {
    description:
      'LM Studio (http://localhost:1234/v1): chat and embeddings; max_completion_tokens sent as max_tokens',
    native: CHAT_EMBED,
    quirks: { rename: { max_completion_tokens: 'max_tokens' } },
  },
};

/** The vendor declarations, built with the registry's `openAICompatible`. */
export function vendorDeclarations(build: typeof openAICompatible): Record<VendorKind, ProviderDeclaration> {
  return Object.fromEntries(
    (Object.keys(SPECS) as VendorKind[]).map((kind) => [kind, build({ kind, ...SPECS[kind] })]),
  ) as Record<VendorKind, ProviderDeclaration>;
}
