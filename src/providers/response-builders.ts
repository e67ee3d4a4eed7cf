/**
 * What the translators from a vendor's answer back to OpenAI chat (anthropic/ and bedrock/ outbound.ts)
 * share: the chat completion around the answer's text and tool calls, and the stream's chunks. A vendor
 * reads its own blocks and events and hands over what they hold; the OpenAI shapes are written here once.
 *
 * Usage stays with each vendor, since it arrives differently (Anthropic: input side in message_start,
 * output side in later cumulative message_deltas; Converse: one metadata event); only its chunk is here.
 */
import type { Usage } from '../core/usage.js';
import {
  toOpenAIUsage,
  type ChatCompletion,
  type ChatCompletionChunk,
  type ChatCompletionMessage,
  type ChunkChoice,
  type FinishReason,
  type FunctionToolCall,
} from './openai/wire.js';

export const nowSeconds = (): number => Math.floor(Date.now() / 1000);

/** A vendor's stop reasons as OpenAI finish reasons; a reason the table does not know reads as 'stop'. */
export const finishFrom =
  <S extends string>(table: Record<S, FinishReason>) =>
  (s: unknown): FinishReason =>
    table[s as S] ?? 'stop';

/** One block of a vendor's answer as OpenAI carries it: text, a tool call, or nothing (e.g. thinking). */
export type AnswerPart = string | { id: string; name: string; input: unknown } | undefined;

/** A vendor's answer as an OpenAI chat completion: its blocks, read by `part`, in order. */
export function chatCompletion<B>(
  blocks: Iterable<B>,
  part: (b: B) => AnswerPart,
  head: { id: string; model: string; finish: FinishReason; usage: Usage },
): ChatCompletion {
  let text = '';
  const toolCalls: FunctionToolCall[] = [];
  for (const b of blocks) {
    const p = part(b);
    if (typeof p === 'string') text += p;
    else if (p) {
      const args = JSON.stringify(p.input ?? {});
      toolCalls.push({ id: p.id, type: 'function', function: { name: p.name, arguments: args } });
    }
  }
  const message: ChatCompletionMessage = {
    role: 'assistant',
    content: text === '' && toolCalls.length > 0 ? null : text,
    refusal: null,
  };
  if (toolCalls.length > 0) message.tool_calls = toolCalls;
  return {
    id: head.id,
    object: 'chat.completion',
    created: nowSeconds(),
    model: head.model,
    choices: [{ index: 0, message, logprobs: null, finish_reason: head.finish }],
    usage: toOpenAIUsage(head.usage),
  };
}

/**
 * The OpenAI chunks of one streamed answer. Content chunks carry `usage: null` when the client asked for
 * usage (`stream_options.include_usage`), and the usage itself comes in a last chunk with no choices.
 */
export class ChunkWriter {
  private readonly toolIndex = new Map<unknown, number>(); // vendor block index -> OpenAI tool_calls index

  constructor(
    private readonly model: string,
    private readonly includeUsage: boolean,
    /** Settable: Anthropic names the message in its first event. */
    public id: string,
    private readonly created: number,
  ) {}

  chunk(delta: ChunkChoice['delta'], finish: FinishReason | null = null): ChatCompletionChunk {
    const c: ChatCompletionChunk = {
      ...this.base(),
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    };
    if (this.includeUsage) c.usage = null;
    return c;
  }

  /** A tool call's first chunk; its argument pieces find it again by the vendor's `block` index. */
  toolStart(block: unknown, id: string, name: string): ChatCompletionChunk[] {
    const index = this.toolIndex.size;
    this.toolIndex.set(block, index);
    return [this.chunk({ tool_calls: [{ index, id, type: 'function', function: { name, arguments: '' } }] })];
  }

  /** A piece of a tool call's arguments; none for an empty piece or a block that started no tool call. */
  toolArgs(block: unknown, args: string): ChatCompletionChunk[] {
    const index = this.toolIndex.get(block);
    if (index === undefined || !args) return [];
    return [this.chunk({ tool_calls: [{ index, function: { arguments: args } }] })];
  }

  /** The usage chunk, sent only when the client asked for it. */
  usage(u: Usage): ChatCompletionChunk[] {
    if (!this.includeUsage) return [];
    return [{ ...this.base(), choices: [], usage: toOpenAIUsage(u) }];
  }

  private base(): Omit<ChatCompletionChunk, 'choices'> {
    return { id: this.id, object: 'chat.completion.chunk', created: this.created, model: this.model };
  }
}
