/**
 * What the translators from OpenAI chat to another vendor's wire (anthropic/, bedrock/ and gemini/
 * outbound.ts) share: when a request parameter asks for something, and the walks over messages, content
 * parts, tool calls and tools that refuse what the vendor cannot carry. A vendor declares its wording and
 * what it does with every parameter (`ChatRefusals`); the walks hand it the parts that passed, to build
 * its own blocks from.
 *
 * Policy: a field either has a faithful translation or the request is a 400 `unsupported_parameter`
 * naming it (`unsupported()`); malformed input is a 400 `invalid_request`. Nothing that changes what the
 * model does is silently dropped.
 */
import { GatewayError, unsupported } from '../core/errors.js';
import type { ChatRequest } from './openai/wire.js';

// The value checks every translator uses (the vendors' common.ts files re-export them).
export type Obj = Record<string, unknown>;
export const isObj = (x: unknown): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x);
/** OpenAI accepts `null` for most optional fields; null means "not given". */
export const given = (x: unknown): boolean => x !== undefined && x !== null;
export const nonEmptyObj = (x: unknown): boolean => given(x) && !(isObj(x) && Object.keys(x).length === 0);

export function invalid(param: string, message: string): GatewayError {
  return new GatewayError('invalid_request', message, { param });
}

/** ChatRequest's named fields (not its index signature), and the caching hints it does not model. */
type Named<T> = keyof { [K in keyof T as string extends K ? never : number extends K ? never : K]: T[K] };
export type ChatParam =
  Named<ChatRequest> | 'prompt_cache_key' | 'prompt_cache_retention' | 'prompt_cache_options';

/**
 * A vendor's answer to one parameter: it `translate`s it, `drop`s it (a hint that never changes the
 * output), or refuses it, with the reason, whenever the value asks for something (ASKS).
 */
export type ParamRule = 'translate' | 'drop' | { refuse: string };

/**
 * When a value asks for something. The rest (null, and each field's OpenAI default) mean nothing, so a
 * vendor that refuses the field still accepts them. A field not listed asks whenever it is given.
 */
export const ASKS: Partial<Record<ChatParam, (v: unknown) => boolean>> = {
  n: (v) => given(v) && v !== 1,
  logprobs: (v) => !!v,
  top_logprobs: (v) => !!v,
  response_format: (v) => given(v) && !(isObj(v) && v['type'] === 'text'),
  modalities: (v) => given(v) && !(Array.isArray(v) && v.every((m) => m === 'text')),
  logit_bias: nonEmptyObj,
  presence_penalty: (v) => given(v) && v !== 0,
  frequency_penalty: (v) => given(v) && v !== 0,
  store: (v) => v === true,
  // OpenAI metadata tags a stored completion; an empty object tags nothing.
  metadata: nonEmptyObj,
  parallel_tool_calls: (v) => v === false,
};

/** Reasons that say what ASKS lets pass, or what to send instead, so they read the same for every vendor. */
export const REFUSE = {
  response_format: { refuse: 'only {"type":"text"} is supported' },
  modalities: { refuse: 'only the text modality is supported' },
  functions: { refuse: 'legacy function calling is not supported; use tools' },
  function_call: { refuse: 'legacy function calling is not supported; use tool_choice' },
} as const satisfies Partial<Record<ChatParam, ParamRule>>;

/** A vendor's declaration: its wording, and what it does with every parameter. */
export interface VendorChat {
  /** Ends "… cannot be translated for": 'an Anthropic channel'. */
  channel: string;
  /** The wire format as refusals name it: "Converse messages have no participant name". */
  wire: string;
  /** Why a system or developer message may not follow the first turn. */
  systemFirst: string;
  /** A legacy `function` message: refused by name, or left to be an unknown role. */
  functionRole: 'refuse' | 'unknown';
  params: Record<ChatParam, ParamRule>;
}

/** An assistant's tool call that passed: its OpenAI object, and its id, name and parsed arguments. */
export interface ToolCall {
  call: Obj;
  id: string;
  name: string;
  args: Obj;
}

/**
 * The turns of a conversation as a vendor builds them, each called once the shared refusals passed.
 * `started`: whether a turn has been written, after which no system message may come.
 */
export interface Turns {
  started(): boolean;
  system(content: unknown, path: string): void;
  user(content: unknown, path: string): void;
  /** `texts`: the content's texts (a refusal part is text the model said), then `refusal`'s. */
  assistant(texts: string[], calls: ToolCall[]): void;
  tool(message: Obj, at: string): void;
}

/** The forms of OpenAI's tool_choice a vendor accepts; `other` sees any object the others do not. */
export interface ToolChoices<T> {
  none?: T;
  auto: T;
  required: T;
  named: (name: string) => T;
  other?: (tc: Obj) => T | undefined;
}

const CHOICES = 'only "none", "auto", "required" or a named function are supported';

export class ChatRefusals {
  constructor(private readonly vendor: VendorChat) {}

  /** A 400 naming `param`, in the vendor's wording. */
  refuse(param: string, why?: string): GatewayError {
    return unsupported(
      param,
      `${param} cannot be translated for ${this.vendor.channel}${why ? `: ${why}` : ''}`,
    );
  }

  /** Refuses the first request field (in the request's order) the vendor refuses or does not know. */
  params(req: ChatRequest): void {
    const rules = this.vendor.params;
    for (const key of Object.keys(req)) {
      // Own fields only: a `constructor` field is an unknown parameter, not Object's.
      const rule = Object.hasOwn(rules, key) ? rules[key as ChatParam] : undefined;
      if (rule === undefined) throw this.refuse(key, 'unknown parameter');
      if (typeof rule === 'object' && (ASKS[key as ChatParam] ?? given)(req[key]))
        throw this.refuse(key, rule.refuse);
    }
  }

  /** Walks the messages, refusing what no vendor carries, and hands each turn to `turns`. */
  messages(msgs: unknown, turns: Turns): void {
    if (!Array.isArray(msgs)) throw invalid('messages', 'messages must be an array');
    msgs.forEach((m: unknown, i) => {
      const at = `messages[${i}]`;
      if (!isObj(m)) throw invalid(at, `${at} must be an object`);
      const role = m['role'];
      if (role === 'function' && this.vendor.functionRole === 'refuse')
        throw this.refuse(`${at}.role`, 'legacy function messages are not supported; use tool messages');
      // No vendor has a per-participant name; dropping it would change who the model thinks spoke.
      if (given(m['name']))
        throw this.refuse(`${at}.name`, `${this.vendor.wire} messages have no participant name`);
      switch (role) {
        case 'system':
        case 'developer':
          if (turns.started()) {
            throw unsupported(
              'messages',
              `a ${role} message after the conversation has started (${at}) cannot be translated for ${this.vendor.channel}: ${this.vendor.systemFirst}`,
            );
          }
          return turns.system(m['content'], `${at}.content`);
        case 'user':
          return turns.user(m['content'], `${at}.content`);
        case 'assistant':
          return this.assistant(m, at, turns);
        case 'tool':
          return turns.tool(m, at);
        default:
          throw invalid(`${at}.role`, `unknown message role ${JSON.stringify(role)}`);
      }
    });
  }

  /** A string, or text parts (and refusal parts, when `allowRefusal`), as its texts. */
  texts(content: unknown, path: string, allowRefusal = false): string[] {
    if (typeof content === 'string') return [content];
    if (!Array.isArray(content)) throw invalid(path, `${path} must be a string or an array of content parts`);
    return content.map((p: unknown, j) => {
      if (isObj(p) && p['type'] === 'text' && typeof p['text'] === 'string') return p['text'];
      if (allowRefusal && isObj(p) && p['type'] === 'refusal' && typeof p['refusal'] === 'string')
        return p['refusal'];
      throw this.refuse(
        `${path}[${j}]`,
        `${isObj(p) ? String(p['type']) : typeof p} parts are not supported here`,
      );
    });
  }

  /** An array of content parts, each built by the vendor's builder for its type; other types are refused. */
  parts<T>(content: unknown, path: string, build: Record<string, (part: Obj, at: string) => T>): T[] {
    if (!Array.isArray(content)) throw invalid(path, `${path} must be a string or an array of content parts`);
    return content.map((p: unknown, j) => {
      const at = `${path}[${j}]`;
      if (!isObj(p)) throw invalid(at, `${at} must be an object`);
      const type = p['type'];
      if (typeof type !== 'string' || !Object.hasOwn(build, type))
        throw this.refuse(at, `${String(type)} content parts have no ${this.vendor.wire} equivalent`);
      return build[type]!(p, at);
    });
  }

  /** The request's function tools, each built by `build` from its `function` object. */
  tools<T>(tools: unknown, build: (fn: Obj, i: number) => T): T[] {
    if (!Array.isArray(tools)) throw invalid('tools', 'tools must be an array');
    return tools.map((t: unknown, i) => {
      if (!isObj(t) || t['type'] !== 'function' || !isObj(t['function']))
        throw this.refuse(`tools[${i}]`, 'only function tools are supported');
      return build(t['function'], i);
    });
  }

  /** tool_choice as the vendor's form; undefined when not given. */
  toolChoice<T>(tc: unknown, choices: ToolChoices<T>, why = CHOICES): T | undefined {
    if (!given(tc)) return undefined;
    if (tc === 'none' && choices.none !== undefined) return choices.none;
    if (tc === 'auto') return choices.auto;
    if (tc === 'required') return choices.required;
    if (isObj(tc)) {
      const fn = tc['function'];
      if (tc['type'] === 'function' && isObj(fn) && typeof fn['name'] === 'string')
        return choices.named(fn['name']);
      const other = choices.other?.(tc);
      if (other !== undefined) return other;
    }
    throw this.refuse('tool_choice', why);
  }

  private assistant(m: Obj, at: string, turns: Turns): void {
    if (given(m['audio'])) throw this.refuse(`${at}.audio`);
    if (given(m['function_call'])) throw this.refuse(`${at}.function_call`, 'legacy function calling');
    const texts = given(m['content']) ? this.texts(m['content'], `${at}.content`, true) : [];
    if (typeof m['refusal'] === 'string' && m['refusal'] !== '') texts.push(m['refusal']);
    const calls = m['tool_calls'];
    if (given(calls) && !Array.isArray(calls))
      throw invalid(`${at}.tool_calls`, 'tool_calls must be an array');
    const parsed = ((calls ?? []) as unknown[]).map((tc, j) => this.toolCall(tc, `${at}.tool_calls[${j}]`));
    turns.assistant(texts, parsed);
  }

  private toolCall(tc: unknown, path: string): ToolCall {
    if (!isObj(tc) || tc['type'] !== 'function' || !isObj(tc['function']))
      throw this.refuse(path, 'only function tool calls are supported');
    const fn = tc['function'];
    const raw = fn['arguments'];
    let args: unknown;
    try {
      // An empty string is what some clients send for a no-argument call.
      args = raw === '' || raw === undefined ? {} : JSON.parse(String(raw));
    } catch {
      args = undefined;
    }
    if (!isObj(args))
      throw this.refuse(`${path}.function.arguments`, 'tool call arguments must be a JSON object');
    return { call: tc, id: String(tc['id'] ?? ''), name: String(fn['name'] ?? ''), args };
  }
}
