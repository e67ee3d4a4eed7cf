/**
 * Fake OpenAI Responses API (`POST /v1/responses`, plus GET/DELETE of stored responses), served by the fake
 * OpenAI server in the wire format of the official `openai` client (Response objects, typed SSE events).
 *
 * Deterministic behaviour (mirrors the chat completions fake):
 *  - text reply: "Hello from <name>: <first 40 chars of the last user message>";
 *  - last input item is a `function_call_output`: "Tool said: <its output>";
 *  - function `tools` present, tool_choice !== 'none' and the last input item is a user message: `function_call`
 *    output item(s) with arguments {"query": <last user text>} (the forced function, else the first; the first
 *    two when parallel_tool_calls is not false);
 *  - `max_output_tokens` keeps that many words: status 'incomplete', incomplete_details.reason 'max_output_tokens'.
 *
 * Streaming (`stream: true`): `event: <type>` + `data: {type, sequence_number, ...}` events, with no `[DONE]`:
 *   response.created, response.in_progress,
 *   text:      response.output_item.added, response.content_part.added, response.output_text.delta x `chunks`,
 *              response.output_text.done, response.content_part.done, response.output_item.done
 *   per call:  response.output_item.added, response.function_call_arguments.delta x 3,
 *              response.function_call_arguments.done, response.output_item.done
 *   response.completed (or response.incomplete), carrying the whole response with usage.
 */
import {
  chunkText,
  type FakeContext,
  head,
  isObject,
  type ProviderSpec,
  rid,
  sendError,
  sendJson,
  splitEven,
  SseWriter,
  truncateWords,
  wordCount,
} from './common.js';

const TOOL_CALL_TOKENS = 10;
const MAX_STORED = 200;

/** Responses created with `store` not false, for GET /v1/responses/{id} (bounded, oldest dropped first). */
export class ResponseStore {
  private readonly map = new Map<string, Record<string, unknown>>();

  put(r: Record<string, unknown>): void {
    this.map.set(r.id as string, r);
    if (this.map.size > MAX_STORED) this.map.delete(this.map.keys().next().value!);
  }

  get(id: string): Record<string, unknown> | undefined {
    return this.map.get(id);
  }

  delete(id: string): boolean {
    return this.map.delete(id);
  }
}

/** Text of an input item's `content` or a function_call_output's `output`: a string, or the parts' `text`. */
function partsText(c: unknown): string {
  if (typeof c === 'string') return c;
  if (!Array.isArray(c)) return '';
  let s = '';
  for (const p of c) if (isObject(p) && typeof p.text === 'string') s += p.text;
  return s;
}

interface Turn {
  kind: 'message' | 'function_call' | 'function_call_output';
  role: string;
  text: string;
}

const ROLES = new Set(['user', 'system', 'developer', 'assistant']);

/** The input as turns (items of other types, e.g. reasoning, are skipped), or an error message. */
function readInput(input: unknown): Turn[] | string {
  if (input === undefined || input === null) return [];
  if (typeof input === 'string') return [{ kind: 'message', role: 'user', text: input }];
  if (!Array.isArray(input)) return "Invalid type for 'input': expected a string or an array of input items.";
  const turns: Turn[] = [];
  for (let i = 0; i < input.length; i++) {
    const it: unknown = input[i];
    if (!isObject(it)) return `Invalid type for 'input[${i}]': expected an object.`;
    if (it.type === 'function_call_output')
      turns.push({ kind: 'function_call_output', role: 'tool', text: partsText(it.output) });
    else if (it.type === 'function_call')
      turns.push({
        kind: 'function_call',
        role: 'assistant',
        text: typeof it.arguments === 'string' ? it.arguments : '',
      });
    else if (it.type === 'message' || (it.type === undefined && it.role !== undefined)) {
      if (typeof it.role !== 'string' || !ROLES.has(it.role))
        return `Invalid value: '${String(it.role)}'. Supported values are: 'assistant', 'system', 'developer', and 'user'.`;
      turns.push({ kind: 'message', role: it.role, text: partsText(it.content) });
    }
  }
  return turns;
}

/** Names of the functions to call, or [] for a text reply. */
function pickFunctions(b: Record<string, unknown>, last: Turn | undefined): string[] {
  if (!Array.isArray(b.tools) || last?.kind !== 'message' || last.role !== 'user' || b.tool_choice === 'none')
    return [];
  const names: string[] = [];
  for (const t of b.tools)
    if (isObject(t) && t.type === 'function' && typeof t.name === 'string') names.push(t.name);
  if (!names.length) return [];
  const tc = b.tool_choice;
  if (isObject(tc) && tc.type === 'function' && typeof tc.name === 'string') return [tc.name];
  return b.parallel_tool_calls !== false && names.length >= 2 ? names.slice(0, 2) : names.slice(0, 1);
}

const responseUsage = (input: number, output: number) => ({
  input_tokens: input,
  input_tokens_details: { cached_tokens: 0 },
  output_tokens: output,
  output_tokens_details: { reasoning_tokens: 0 },
  total_tokens: input + output,
});

const INVALID_JSON =
  "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)";

/** POST /v1/responses: JSON or SSE. */
async function createResponse(ctx: FakeContext, spec: ProviderSpec, store: ResponseStore): Promise<void> {
  const b = ctx.body;
  if (!ctx.bodyIsJson || !isObject(b)) return sendError(ctx, spec, 400, INVALID_JSON);
  if (typeof b.model !== 'string' || !b.model)
    return sendError(ctx, spec, 400, "Missing required parameter: 'model'.");
  const turns = readInput(b.input);
  if (typeof turns === 'string') return sendError(ctx, spec, 400, turns);
  if (b.instructions !== undefined && b.instructions !== null && typeof b.instructions !== 'string')
    return sendError(ctx, spec, 400, "Invalid type for 'instructions': expected a string.");

  let chars = typeof b.instructions === 'string' ? b.instructions.length : 0;
  let lastUser = '';
  for (const t of turns) {
    chars += t.text.length;
    if (t.kind === 'message' && t.role === 'user') lastUser = t.text;
  }
  const inputTokens = Math.ceil(chars / 4) + 1;
  const last = turns[turns.length - 1];
  const fnNames = pickFunctions(b, last);
  const text =
    last?.kind === 'function_call_output'
      ? `Tool said: ${last.text}`
      : `Hello from ${ctx.name}: ${head(lastUser, 40)}`;
  const cut = fnNames.length ? { text, truncated: false } : truncateWords(text, b.max_output_tokens);
  const argsJson = JSON.stringify({ query: lastUser });
  const calls = fnNames.map((name) => ({
    id: `fc_${rid(40)}`,
    type: 'function_call',
    status: 'completed',
    arguments: argsJson,
    call_id: `call_${rid(24)}`,
    name,
  }));
  const msgId = `msg_${rid(40)}`;
  const status = cut.truncated ? 'incomplete' : 'completed';
  const outputPart = (t: string) => ({ type: 'output_text', annotations: [], logprobs: [], text: t });
  const message = (t: string, st: string) => ({
    id: msgId,
    type: 'message',
    status: st,
    content: [outputPart(t)],
    role: 'assistant',
  });

  // The Response object: request settings echoed back; `output`, `status` and `usage` filled in at the end.
  const createdAt = Math.floor(Date.now() / 1000);
  const base = {
    id: `resp_${rid(40)}`,
    object: 'response',
    created_at: createdAt,
    status: 'in_progress',
    background: false,
    completed_at: null as number | null,
    error: null,
    incomplete_details: null as unknown,
    instructions: b.instructions ?? null,
    max_output_tokens: b.max_output_tokens ?? null,
    max_tool_calls: b.max_tool_calls ?? null,
    model: b.model,
    output: [] as unknown[],
    parallel_tool_calls: b.parallel_tool_calls ?? true,
    previous_response_id: b.previous_response_id ?? null,
    prompt_cache_key: b.prompt_cache_key ?? null,
    reasoning: b.reasoning ?? { effort: null, summary: null },
    safety_identifier: b.safety_identifier ?? null,
    service_tier: 'default',
    store: b.store ?? true,
    temperature: b.temperature ?? 1,
    text: b.text ?? { format: { type: 'text' }, verbosity: 'medium' },
    tool_choice: b.tool_choice ?? 'auto',
    tools: Array.isArray(b.tools) ? b.tools : [],
    top_logprobs: b.top_logprobs ?? 0,
    top_p: b.top_p ?? 1,
    truncation: b.truncation ?? 'disabled',
    usage: null as unknown,
    user: b.user ?? null,
    metadata: b.metadata ?? {},
  };
  const finish = (output: unknown[], outputTokens: number) => {
    const r = {
      ...base,
      status,
      completed_at: status === 'completed' ? Math.floor(Date.now() / 1000) : null,
      incomplete_details: cut.truncated ? { reason: 'max_output_tokens' } : null,
      output,
      usage: responseUsage(inputTokens, outputTokens),
    };
    if (b.store !== false) store.put(r);
    return r;
  };

  if (b.stream !== true) {
    const output = calls.length ? calls : [message(cut.text, status)];
    return sendJson(ctx, 200, finish(output, calls.length ? TOOL_CALL_TOKENS : wordCount(cut.text)));
  }

  // ---- streaming ----
  let seq = 0;
  const event = (type: string, payload: Record<string, unknown>): string =>
    `event: ${type}\ndata: ${JSON.stringify({ type, ...payload, sequence_number: seq++ })}\n\n`;
  const sse = new SseWriter(ctx);
  const send = (type: string, payload: Record<string, unknown>): Promise<boolean> =>
    sse.send(event(type, payload));

  if (!(await send('response.created', { response: base }))) return;
  if (!(await send('response.in_progress', { response: base }))) return;
  const output: unknown[] = [];
  let outputTokens = TOOL_CALL_TOKENS;
  if (calls.length) {
    for (const [i, call] of calls.entries()) {
      const ids = { item_id: call.id, output_index: i };
      if (
        !(await send('response.output_item.added', {
          output_index: i,
          item: { ...call, status: 'in_progress', arguments: '' },
        }))
      )
        return;
      for (const delta of splitEven(call.arguments, 3))
        if (!(await send('response.function_call_arguments.delta', { ...ids, delta }))) return;
      if (
        !(await send('response.function_call_arguments.done', {
          ...ids,
          name: call.name,
          arguments: call.arguments,
        }))
      )
        return;
      if (!(await send('response.output_item.done', { output_index: i, item: call }))) return;
      output.push(call);
    }
  } else {
    const pieces = chunkText(cut.text, ctx.fault?.chunks ?? 5, !cut.truncated);
    const full = pieces.join('');
    const ids = { item_id: msgId, output_index: 0, content_index: 0 };
    if (
      !(await send('response.output_item.added', {
        output_index: 0,
        item: { ...message('', 'in_progress'), content: [] },
      }))
    )
      return;
    if (!(await send('response.content_part.added', { ...ids, part: outputPart('') }))) return;
    for (const delta of pieces)
      if (!(await send('response.output_text.delta', { ...ids, delta, logprobs: [] }))) return;
    if (!(await send('response.output_text.done', { ...ids, text: full, logprobs: [] }))) return;
    if (!(await send('response.content_part.done', { ...ids, part: outputPart(full) }))) return;
    const item = message(full, status);
    if (!(await send('response.output_item.done', { output_index: 0, item }))) return;
    output.push(item);
    outputTokens = wordCount(full);
  }
  const done = finish(output, outputTokens);
  if (
    !(await send(status === 'completed' ? 'response.completed' : 'response.incomplete', { response: done }))
  )
    return;
  await sse.end();
}

/** The Responses routes; false when the path is not one of them. */
export async function openaiResponsesRoute(
  ctx: FakeContext,
  spec: ProviderSpec,
  store: ResponseStore,
): Promise<boolean> {
  const { method, path } = ctx;
  if (method === 'POST' && path === '/v1/responses') {
    await createResponse(ctx, spec, store);
    return true;
  }
  const m = /^\/v1\/responses\/([^/]+)$/.exec(path);
  if (!m || (method !== 'GET' && method !== 'DELETE')) return false;
  const id = decodeURIComponent(m[1]!);
  const r = store.get(id);
  if (!r) sendError(ctx, spec, 404, `Response with id '${id}' not found.`);
  else if (method === 'GET') sendJson(ctx, 200, r);
  else {
    store.delete(id);
    sendJson(ctx, 200, { id, object: 'response.deleted', deleted: true });
  }
  return true;
}
