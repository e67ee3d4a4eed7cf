/**
 * Legacy OpenAI completions (`POST /v1/completions`, https://platform.openai.com/docs/api-reference/completions).
 *
 * - OpenAI channels: passthrough to the upstream's own `/completions`, only `model` renamed, with
 *   `stream_options.include_usage` forced on a stream so it can be billed (the usage chunk is withheld from
 *   a client that did not ask for it, as for chat).
 * - Any other chat channel: the chat pivot. The prompt becomes one user message; the chat answer comes back
 *   as a `text_completion` (`choices[].text`), its stream chunks too. What has no faithful chat form is
 *   refused by name (several prompts, token-id prompts, echo, suffix, logprobs, best_of > 1).
 */
import { GatewayError, unsupported } from '../../core/errors.js';
import { redactSecrets } from '../../core/render.js';
import type { Usage } from '../../core/usage.js';
import { withModel } from '../../lib/json-text.js';
import type { SseEvent } from '../../lib/sse.js';
import type { ChatPivot, PivotStream } from '../pivot.js';
import { withUsage } from '../pivot.js';
import { bearerHeaders, parseJsonObject, passthroughResult, renameModel } from '../shared.js';
import { type Frame, FrameStream } from '../stream.js';
import type { Exchange, JsonResult, PreparedCall, StreamTranslator, UpstreamEndpoint } from '../types.js';
import { type ChatCompletion, type ChatCompletionChunk, openaiUsage, toOpenAIUsage } from './wire.js';

type Obj = Record<string, unknown>;
const given = (x: unknown) => x !== undefined && x !== null;

/** OpenAI completions in, OpenAI completions out. */
export class CompletionsPassthrough implements Exchange {
  readonly call: PreparedCall;
  private readonly clientWantsUsage: boolean;
  constructor(
    body: Obj,
    ep: UpstreamEndpoint,
    upstreamModel: string,
    private readonly alias: string,
  ) {
    const stream = body.stream === true;
    const so = body.stream_options as Obj | null | undefined;
    this.clientWantsUsage = so?.include_usage === true;
    const addUsage = stream && so?.include_usage !== true;
    let sent: string | Buffer | null = withModel(body, upstreamModel, addUsage);
    if (sent === null) {
      const out: Obj = { ...body, model: upstreamModel };
      if (stream) out.stream_options = { ...(so ?? {}), include_usage: true };
      sent = JSON.stringify(out);
    }
    this.call = { path: '/completions', headers: bearerHeaders(ep), body: sent, stream };
  }
  decodeJson(text: string): JsonResult {
    const j = parseJsonObject(text);
    if (!Array.isArray(j.choices))
      throw new GatewayError('upstream_bad_response', 'upstream completion has no choices');
    return passthroughResult(text, j, this.alias, openaiUsage(j.usage));
  }
  streamTranslator(): StreamTranslator {
    return new CompletionsStream(this.alias, this.clientWantsUsage);
  }
}

/** The upstream's completion chunks relayed with the model renamed; usage kept, its chunk withheld unless asked. */
class CompletionsStream extends FrameStream {
  constructor(
    private readonly alias: string,
    private readonly clientWantsUsage: boolean,
  ) {
    super();
  }
  items(ev: SseEvent): readonly Frame[] {
    if (ev.data === '[DONE]') {
      this.finished = true;
      return [{ data: '[DONE]' }];
    }
    const chunk = parseJsonObject(ev.data);
    if (chunk.error) {
      const e = chunk.error as { message?: string };
      throw new GatewayError(
        'upstream_stream_interrupted',
        redactSecrets(String(e.message ?? 'upstream stream error')),
      );
    }
    const u = openaiUsage(chunk.usage);
    if (u) this.seen = u;
    if (Array.isArray(chunk.choices))
      for (const c of chunk.choices as Array<{ text?: unknown }>)
        if (typeof c.text === 'string') this.tally.add(c.text);
    if (!this.clientWantsUsage && 'usage' in chunk) {
      if (Array.isArray(chunk.choices) && chunk.choices.length === 0) return [];
      delete chunk.usage;
      if ('model' in chunk) chunk.model = this.alias;
      return [{ data: chunk }];
    }
    const renamed = renameModel(ev.data, chunk.model, this.alias);
    if (renamed !== null) return [{ data: renamed }];
    if ('model' in chunk) chunk.model = this.alias;
    return [{ data: chunk }];
  }
}

// ---------------------------------------------------------------- through the chat pivot

/** Parameters of a completion request that carry over to chat unchanged. */
const SAME = [
  'max_tokens',
  'temperature',
  'top_p',
  'n',
  'stop',
  'stream',
  'seed',
  'presence_penalty',
  'frequency_penalty',
  'logit_bias',
  'user',
] as const;

/** The completion request as an OpenAI chat request (one user message), refusing what chat can't mean. */
export function completionsToChat(body: Obj): Obj {
  let prompt = body.prompt;
  if (Array.isArray(prompt) && prompt.length === 1 && typeof prompt[0] === 'string') prompt = prompt[0];
  if (typeof prompt !== 'string')
    throw unsupported(
      'prompt',
      "'prompt' as several prompts or as token ids cannot be translated to chat for this channel: send one string",
    );
  if (body.echo === true) throw unsupported('echo', "'echo' cannot be translated to chat for this channel");
  if (given(body.suffix))
    throw unsupported('suffix', "'suffix' cannot be translated to chat for this channel");
  if (given(body.logprobs))
    throw unsupported('logprobs', "'logprobs' cannot be translated to chat for this channel");
  if (given(body.best_of) && body.best_of !== 1)
    throw unsupported('best_of', "'best_of' cannot be translated to chat for this channel");
  const chat: Obj = { model: body.model, messages: [{ role: 'user', content: prompt }] };
  for (const k of SAME) if (given(body[k])) chat[k] = body[k];
  return withUsage(chat);
}

const cmplId = (chatId: unknown) =>
  `cmpl-${typeof chatId === 'string' ? chatId.replace(/^chatcmpl-/, '') : Date.now().toString(36)}`;

/** A chat answer as a `text_completion`. */
export function chatToCompletion(c: ChatCompletion, usage: Usage | null, alias: string): Obj {
  const out: Obj = {
    id: cmplId(c.id),
    object: 'text_completion',
    created: c.created,
    model: alias,
    choices: (c.choices ?? []).map((ch, i) => ({
      text: typeof ch.message?.content === 'string' ? ch.message.content : '',
      index: ch.index ?? i,
      logprobs: null,
      finish_reason: ch.finish_reason ?? null,
    })),
  };
  if (usage) out.usage = toOpenAIUsage(usage);
  return out;
}

/** Chat chunks as completion chunks; a usage chunk (choices: []) at the end when the client asked for one. */
class CompletionsPivotStream implements PivotStream {
  private text = '';
  private id = '';
  private created = 0;
  constructor(
    private readonly alias: string,
    private readonly wantsUsage: boolean,
  ) {}
  get emittedText(): string {
    return this.text;
  }
  push(chunk: ChatCompletionChunk): readonly Frame[] {
    this.id ||= cmplId(chunk.id);
    this.created ||= chunk.created;
    const choices = [];
    for (const c of chunk.choices ?? []) {
      const t = typeof c.delta?.content === 'string' ? c.delta.content : '';
      if (t === '' && !c.finish_reason) continue; // the role delta: nothing for a completion client
      this.text += t;
      choices.push({ text: t, index: c.index, logprobs: null, finish_reason: c.finish_reason ?? null });
    }
    if (!choices.length) return [];
    return [{ data: this.frame(choices) }];
  }
  finish(usage: Usage | null): readonly Frame[] {
    const frames: Frame[] = [];
    if (this.wantsUsage && usage) frames.push({ data: { ...this.frame([]), usage: toOpenAIUsage(usage) } });
    frames.push({ data: '[DONE]' });
    return frames;
  }
  private frame(choices: unknown[]): Obj {
    return {
      id: this.id,
      object: 'text_completion',
      created: this.created || Math.floor(Date.now() / 1000),
      model: this.alias,
      choices,
    };
  }
}

export function completionsPivot(body: Obj, alias: string): ChatPivot {
  const so = body.stream_options as Obj | null | undefined;
  return {
    chat: completionsToChat(body),
    fromChat: (c, usage) => chatToCompletion(c, usage, alias),
    stream: () => new CompletionsPivotStream(alias, so?.include_usage === true),
  };
}
