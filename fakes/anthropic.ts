/**
 * Fake Anthropic upstream: Messages API (JSON + the real SSE event sequence, tool_use), count_tokens and models,
 * so the official `@anthropic-ai/sdk` client works against it unchanged.
 *
 * Deterministic behaviour (mirrors the fake OpenAI so translated requests get equivalent answers):
 *  - text reply: "Hello from <name>: <first 40 chars of the last user message text>";
 *  - last message carries a tool_result: "Tool said: <content of the last tool_result>";
 *  - `tools` present, tool_choice.type !== 'none' and the last message is a user message without tool_result:
 *    tool_use block(s) with input {"query": <last user text>} (the forced tool, else the first; first two when
 *    parallel use is allowed).
 */
import type { IncomingMessage } from 'node:http';
import {
  applyStop,
  chunkText,
  type FakeContext,
  type FakeOptions,
  type FakeUpstream,
  head,
  isObject,
  type ProviderSpec,
  rid,
  sendError,
  sendJson,
  splitEven,
  SseWriter,
  startFakeServer,
  truncateWords,
  wordCount,
} from './common.js';

const MODELS = [
  'claude-opus-4-1',
  'claude-sonnet-4-5',
  'claude-3-7-sonnet-latest',
  'claude-3-5-haiku-latest',
];
const TOOL_USE_TOKENS = 10;

/** Anthropic's error envelope: {"type":"error","error":{"type","message"}}; `code` overrides error.type. */
export function anthropicErrorBody(status: number, message: string, code?: string): unknown {
  let type = 'invalid_request_error';
  if (status === 401) type = 'authentication_error';
  else if (status === 403) type = 'permission_error';
  else if (status === 404) type = 'not_found_error';
  else if (status === 413) type = 'request_too_large';
  else if (status === 429) type = 'rate_limit_error';
  else if (status === 529) type = 'overloaded_error';
  else if (status >= 500) type = 'api_error';
  return { type: 'error', error: { type: code ?? type, message } };
}

/**
 * `x-api-key` (the classic scheme, what gateways should send) or `Authorization: Bearer <key>` (what the installed
 * @anthropic-ai/sdk 1.x sends for `apiKey`). When both are present, x-api-key wins.
 */
function checkAuth(req: IncomingMessage, expected: string | undefined): string | null {
  let key = req.headers['x-api-key'];
  if (typeof key !== 'string' || !key)
    key = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1];
  if (!key) return 'x-api-key header is required';
  if (expected !== undefined && key !== expected) return 'invalid x-api-key';
  return null;
}

/** Text of `content` (string or blocks). Text blocks count; tool_result content counts only when `withResults`. */
function contentText(c: unknown, withResults: boolean): string {
  if (typeof c === 'string') return c;
  if (!Array.isArray(c)) return '';
  let s = '';
  for (const b of c) {
    if (!isObject(b)) continue;
    if (b.type === 'text' && typeof b.text === 'string') s += b.text;
    else if (withResults && b.type === 'tool_result') s += contentText(b.content, false);
  }
  return s;
}

const toolResults = (c: unknown): Record<string, unknown>[] =>
  Array.isArray(c)
    ? c.filter((b): b is Record<string, unknown> => isObject(b) && b.type === 'tool_result')
    : [];

/** Shared request validation for /v1/messages and count_tokens; returns the messages or answers 400 itself. */
function validate(ctx: FakeContext, spec: ProviderSpec, needMaxTokens: boolean): unknown[] | null {
  const v = ctx.req.headers['anthropic-version'];
  if (typeof v !== 'string' || !v)
    return (sendError(ctx, spec, 400, 'anthropic-version: header is required'), null);
  const b = ctx.body;
  if (!ctx.bodyIsJson || !isObject(b))
    return (sendError(ctx, spec, 400, 'There was an issue with your request body: invalid JSON'), null);
  if (typeof b.model !== 'string' || !b.model)
    return (sendError(ctx, spec, 400, 'model: Field required'), null);
  if (!Array.isArray(b.messages) || !b.messages.length || !b.messages.every(isObject))
    return (sendError(ctx, spec, 400, 'messages: Field required (a non-empty array of messages)'), null);
  if (
    needMaxTokens &&
    (typeof b.max_tokens !== 'number' || !Number.isInteger(b.max_tokens) || b.max_tokens < 1)
  )
    return (sendError(ctx, spec, 400, 'max_tokens: Field required (a positive integer)'), null);
  return b.messages;
}

/** ceil(chars of system + all message text, tool results included / 4) + 1: same rule as the fake OpenAI. */
function inputTokens(b: Record<string, unknown>, msgs: unknown[]): number {
  let chars = contentText(b.system, false).length;
  for (const m of msgs) chars += contentText((m as Record<string, unknown>).content, true).length;
  return Math.ceil(chars / 4) + 1;
}

/** Tools to call, or [] for a text reply. */
function pickTools(b: Record<string, unknown>, last: Record<string, unknown>): string[] {
  if (!Array.isArray(b.tools) || last.role !== 'user' || toolResults(last.content).length) return [];
  const tc = isObject(b.tool_choice) ? b.tool_choice : {};
  if (tc.type === 'none') return [];
  const names = b.tools.flatMap((t) => (isObject(t) && typeof t.name === 'string' ? [t.name] : []));
  if (!names.length) return [];
  if (tc.type === 'tool' && typeof tc.name === 'string') return [tc.name];
  return tc.disable_parallel_tool_use !== true && names.length >= 2 ? names.slice(0, 2) : names.slice(0, 1);
}

async function messages(ctx: FakeContext, spec: ProviderSpec): Promise<void> {
  const msgs = validate(ctx, spec, true);
  if (!msgs) return;
  const b = ctx.body as Record<string, unknown>;
  const last = msgs[msgs.length - 1] as Record<string, unknown>;
  let lastUser = '';
  for (const m of msgs as Record<string, unknown>[])
    if (m.role === 'user' && !toolResults(m.content).length) lastUser = contentText(m.content, false);
  const model = b.model as string;
  const id = `msg_${rid(24)}`;
  const input = inputTokens(b, msgs);
  const toolNames = pickTools(b, last);
  const query = { query: lastUser };

  // Text reply, cut by stop_sequences and max_tokens (one word = one token here).
  const results = last.role === 'user' ? toolResults(last.content) : [];
  let text = results.length
    ? `Tool said: ${contentText(results[results.length - 1]!.content, false)}`
    : `Hello from ${ctx.name}: ${head(lastUser, 40)}`;
  const stop = applyStop(text, b.stop_sequences);
  const cut = truncateWords(stop.text, b.max_tokens);
  text = cut.text;
  const stopReason = toolNames.length
    ? 'tool_use'
    : cut.truncated
      ? 'max_tokens'
      : stop.matched !== null
        ? 'stop_sequence'
        : 'end_turn';
  const stopSequence = stopReason === 'stop_sequence' ? stop.matched : null;
  const usage = (output: number) => ({
    input_tokens: input,
    output_tokens: output,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 0,
  });

  if (b.stream !== true) {
    const content = toolNames.length
      ? toolNames.map((name) => ({ type: 'tool_use', id: `toolu_${rid(24)}`, name, input: query }))
      : [{ type: 'text', text }];
    const output = toolNames.length ? TOOL_USE_TOKENS : wordCount(text);
    return sendJson(ctx, 200, {
      id,
      type: 'message',
      role: 'assistant',
      model,
      content,
      stop_reason: stopReason,
      stop_sequence: stopSequence,
      usage: usage(output),
    });
  }

  // ---- streaming: message_start, (content_block_start, [ping], content_block_delta*, content_block_stop)+, message_delta, message_stop
  const sse = new SseWriter(ctx);
  const send = (type: string, data: Record<string, unknown>): Promise<boolean> =>
    sse.send(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
  if (
    !(await send('message_start', {
      message: {
        id,
        type: 'message',
        role: 'assistant',
        model,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: usage(1),
      },
    }))
  )
    return;

  type Block = { start: Record<string, unknown>; deltas: Record<string, unknown>[] };
  let output = TOOL_USE_TOKENS;
  let blocks: Block[];
  if (toolNames.length) {
    const json = JSON.stringify(query);
    blocks = toolNames.map((name) => ({
      start: { type: 'tool_use', id: `toolu_${rid(24)}`, name, input: {} },
      deltas: splitEven(json, 3).map((partial_json) => ({ type: 'input_json_delta', partial_json })),
    }));
  } else {
    const pieces = chunkText(text, ctx.fault?.chunks ?? 5, !cut.truncated);
    output = wordCount(pieces.join(''));
    blocks = [
      { start: { type: 'text', text: '' }, deltas: pieces.map((t) => ({ type: 'text_delta', text: t })) },
    ];
  }
  for (let index = 0; index < blocks.length; index++) {
    const blk = blocks[index]!;
    if (!(await send('content_block_start', { index, content_block: blk.start }))) return;
    if (index === 0 && !(await send('ping', {}))) return;
    for (const delta of blk.deltas) if (!(await send('content_block_delta', { index, delta }))) return;
    if (!(await send('content_block_stop', { index }))) return;
  }
  if (
    !(await send('message_delta', {
      delta: { stop_reason: stopReason, stop_sequence: stopSequence },
      usage: { output_tokens: output },
    }))
  )
    return;
  await sse.end('event: message_stop\ndata: {"type":"message_stop"}\n\n');
}

function countTokens(ctx: FakeContext, spec: ProviderSpec): void {
  const msgs = validate(ctx, spec, false);
  if (msgs) sendJson(ctx, 200, { input_tokens: inputTokens(ctx.body as Record<string, unknown>, msgs) });
}

const modelObject = (id: string) => ({
  type: 'model',
  id,
  display_name: id,
  created_at: '2025-01-01T00:00:00Z',
});

/** The routes, also served under Vertex AI's addresses by fakes/vertex.ts. */
export const anthropicSpec: ProviderSpec = {
  defaultName: 'fake-anthropic',
  requestIdHeader: 'request-id',
  errorBody: anthropicErrorBody,
  checkAuth,
  async route(ctx, s) {
    const { method, path } = ctx;
    if (method === 'POST' && path === '/v1/messages') await messages(ctx, s);
    else if (method === 'POST' && path === '/v1/messages/count_tokens') countTokens(ctx, s);
    else if (method === 'GET' && path === '/v1/models')
      sendJson(ctx, 200, {
        data: MODELS.map(modelObject),
        has_more: false,
        first_id: MODELS[0],
        last_id: MODELS[MODELS.length - 1],
      });
    else if (method === 'GET' && path.startsWith('/v1/models/'))
      sendJson(ctx, 200, modelObject(decodeURIComponent(path.slice('/v1/models/'.length))));
    else return false;
    return true;
  },
};

/** Starts a fake Anthropic server on 127.0.0.1 (port 0 = random). */
export async function startFakeAnthropic(opts: FakeOptions = {}): Promise<FakeUpstream> {
  return startFakeServer(anthropicSpec, opts);
}
