/**
 * Fake AWS Bedrock runtime: the Converse and ConverseStream APIs on their real wire formats, behind a real
 * SigV4 check.
 *
 *  - `POST /model/{modelId}/converse` answers Converse JSON; `…/converse-stream` answers a binary
 *    `application/vnd.amazon.eventstream` (messageStart, contentBlockStart/Delta/Stop, messageStop,
 *    metadata), each message encoded with @smithy/eventstream-codec, the payload carrying the `p` padding
 *    field the real service adds.
 *  - auth: the SigV4 signature is recomputed from the request as received, with the known secret of the
 *    access key it names (signer: @smithy/signature-v4 on @aws-crypto/sha256-js, not the gateway's
 *    node:crypto hash). An unknown key is 403 UnrecognizedClientException, a mismatch 403
 *    InvalidSignatureException, no signature 403 MissingAuthenticationTokenException; the payload hash
 *    header must match the body.
 *  - errors: `{"message"}` with the exception in `x-amzn-ErrorType` (ValidationException for a request
 *    Converse would refuse: no messages, blank text, turns not alternating, tool blocks without toolConfig).
 *    A fault's `errorCode` names the exception; else the status decides (429 ThrottlingException, …).
 *  - the `bedrock` switches: an exception inside the stream after N events (`streamException`), a frame
 *    with a broken CRC (`corruptFrame`), and cache-read tokens to report (`cacheReadTokens`).
 *
 * Replies mirror the other fakes: "Hello from <name>: <first 40 chars of the last user text>"; a toolResult
 * in the last turn: "Tool said: <its text>"; tools offered and the last user turn has no toolResult: a
 * toolUse of the forced tool (else the first) with input {"query": <last user text>}.
 */
import { Sha256 } from '@aws-crypto/sha256-js';
import { EventStreamCodec } from '@smithy/eventstream-codec';
import { SignatureV4 } from '@smithy/signature-v4';
import { fromUtf8, toUtf8 } from '@smithy/util-utf8';
import { createHash } from 'node:crypto';
import {
  applyStop,
  chunkText,
  ChunkWriter,
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
  startFakeServer,
  truncateWords,
  wordCount,
} from './common.js';

/** The example key pair of AWS's own documentation (no account has it), and the region signed for. */
export const FAKE_AWS = {
  accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
  secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
  region: 'us-east-1',
} as const;

export interface BedrockSwitches {
  /** Streams: after this many events, a `:message-type exception` message of `streamException.type`. */
  streamException: { afterEvents: number; type: string; message?: string } | null;
  /** Streams: after this many events, a message whose CRC is wrong. */
  corruptFrame: { afterEvents: number } | null;
  /** Reported as usage.cacheReadInputTokens (beside inputTokens, as Bedrock does). */
  cacheReadTokens: number;
}

export interface FakeBedrockOptions extends Omit<FakeOptions, 'apiKey'> {
  /** The access keys the fake knows, with their secrets (default: FAKE_AWS's). */
  keys?: Record<string, string>;
  /** The region signatures must be scoped to (default us-east-1). */
  region?: string;
}

export interface FakeBedrockUpstream extends FakeUpstream {
  readonly bedrock: BedrockSwitches;
}

const STATUS_EXCEPTION: Record<number, string> = {
  400: 'ValidationException',
  403: 'AccessDeniedException',
  404: 'ResourceNotFoundException',
  408: 'ModelTimeoutException',
  424: 'ModelErrorException',
  429: 'ThrottlingException',
  500: 'InternalServerException',
  503: 'ServiceUnavailableException',
};

const exceptionFor = (status: number, code?: string): string =>
  code ?? STATUS_EXCEPTION[status] ?? (status >= 500 ? 'InternalServerException' : 'ValidationException');

/** Bedrock's error body: the message only; the exception is in the x-amzn-ErrorType header. */
export function bedrockErrorBody(_status: number, message: string): unknown {
  return { message };
}

/** The header as the service sends it: `Name:` and the Coral namespace. */
export function bedrockErrorHeaders(status: number, code?: string): Record<string, string> {
  return {
    'x-amzn-ErrorType': `${exceptionFor(status, code)}:http://internal.amazon.com/coral/com.amazon.bedrock/`,
  };
}

const codec = new EventStreamCodec(toUtf8, fromUtf8);

function frame(headers: Record<string, string>, payload: unknown): Uint8Array {
  const hs: Record<string, { type: 'string'; value: string }> = {};
  for (const k in headers) hs[k] = { type: 'string', value: headers[k]! };
  return codec.encode({ headers: hs, body: fromUtf8(JSON.stringify(payload)) });
}

/** One ConverseStream event, padded like the service's (`p`: filler so sizes don't leak content). */
const eventFrame = (type: string, payload: Record<string, unknown>): Uint8Array =>
  frame(
    { ':event-type': type, ':content-type': 'application/json', ':message-type': 'event' },
    {
      ...payload,
      p: 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'.slice(
        0,
        1 + (rid(1).charCodeAt(0) % 40),
      ),
    },
  );

const exceptionFrame = (type: string, message: string): Uint8Array =>
  frame(
    { ':exception-type': type, ':content-type': 'application/json', ':message-type': 'exception' },
    { message },
  );

// ---------------------------------------------------------------------------------------------- SigV4

type AuthResult = { ok: true } | { ok: false; type: string; message: string };

const AUTH_RE =
  /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/;

async function verifySignature(
  ctx: FakeContext,
  keys: Record<string, string>,
  region: string,
): Promise<AuthResult> {
  const h = ctx.req.headers;
  const auth = typeof h.authorization === 'string' ? h.authorization : '';
  if (!auth)
    return {
      ok: false,
      type: 'MissingAuthenticationTokenException',
      message: 'Missing Authentication Token',
    };
  const m = AUTH_RE.exec(auth);
  const date = typeof h['x-amz-date'] === 'string' ? h['x-amz-date'] : '';
  if (!m || !/^\d{8}T\d{6}Z$/.test(date))
    return {
      ok: false,
      type: 'IncompleteSignatureException',
      message: 'Authorization header requires Credential, SignedHeaders and Signature, and X-Amz-Date',
    };
  const [, akid, , scopeRegion, service, signedList] = m;
  const secret = keys[akid!];
  if (secret === undefined)
    return {
      ok: false,
      type: 'UnrecognizedClientException',
      message: 'The security token included in the request is invalid.',
    };
  const mismatch: AuthResult = {
    ok: false,
    type: 'InvalidSignatureException',
    message:
      'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.',
  };
  if (scopeRegion !== region || service !== 'bedrock') return mismatch;
  // The payload hash the client sent must be the body's.
  const sent = h['x-amz-content-sha256'];
  if (typeof sent === 'string' && sent !== createHash('sha256').update(ctx.rawBody).digest('hex'))
    return mismatch;
  // The signature over exactly the headers it says it signed, as they arrived.
  const headers: Record<string, string> = {};
  for (const name of signedList!.split(';')) {
    const v = h[name];
    if (v === undefined) return mismatch;
    headers[name] = Array.isArray(v) ? v.join(',') : v;
  }
  const token = typeof h['x-amz-security-token'] === 'string' ? h['x-amz-security-token'] : undefined;
  const signer = new SignatureV4({
    service: 'bedrock',
    region,
    credentials: { accessKeyId: akid!, secretAccessKey: secret, ...(token ? { sessionToken: token } : {}) },
    sha256: Sha256,
  });
  const signingDate = new Date(
    `${date.slice(0, 4)}-${date.slice(4, 6)}-${date.slice(6, 8)}T${date.slice(9, 11)}:${date.slice(11, 13)}:${date.slice(13, 15)}Z`,
  );
  const url = ctx.req.url ?? '/';
  const q = url.indexOf('?');
  const signed = await signer.sign(
    {
      method: ctx.method,
      protocol: 'https:',
      hostname: 'localhost',
      path: q < 0 ? url : url.slice(0, q),
      query: Object.fromEntries(ctx.query),
      headers,
      body: ctx.rawBody,
    },
    { signingDate },
  );
  return signed.headers.authorization === auth ? { ok: true } : mismatch;
}

// ---------------------------------------------------------------------------------------------- Converse

type Block = Record<string, unknown>;
type Msg = { role: string; content: Block[] };

const blocksText = (content: Block[], withResults: boolean): string => {
  let s = '';
  for (const b of content) {
    if (typeof b.text === 'string') s += b.text;
    else if (withResults && isObject(b.toolResult) && Array.isArray(b.toolResult.content))
      for (const c of b.toolResult.content) if (isObject(c) && typeof c.text === 'string') s += c.text;
  }
  return s;
};

/** What Converse refuses with a ValidationException; null when the request is well-formed. */
function invalidReason(b: Record<string, unknown>): string | null {
  if (!Array.isArray(b.messages) || b.messages.length === 0)
    return 'A conversation must start with a user message.';
  let prev = '';
  let toolBlocks = false;
  for (const [i, m] of (b.messages as unknown[]).entries()) {
    if (!isObject(m) || (m.role !== 'user' && m.role !== 'assistant') || !Array.isArray(m.content))
      return `messages.${i}: a message needs a role (user or assistant) and content`;
    if (i === 0 && m.role !== 'user')
      return 'A conversation must start with a user message. Try again with a conversation that starts with a user message.';
    if (m.role === prev)
      return 'A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.';
    prev = m.role;
    if (m.content.length === 0)
      return `messages.${i}.content: the content field in the Message object is empty`;
    for (const c of m.content as unknown[]) {
      if (!isObject(c)) return `messages.${i}.content: a content block must be an object`;
      if (typeof c.text === 'string' && c.text.trim() === '')
        return 'The text field in the ContentBlock object is blank. Add text to the text field, and try again.';
      if ('toolUse' in c || 'toolResult' in c) toolBlocks = true;
    }
  }
  if (toolBlocks && !isObject(b.toolConfig))
    return 'The toolConfig field must be defined when using toolUse and toolResult content blocks.';
  return null;
}

function pickTool(b: Record<string, unknown>, last: Msg): string | null {
  const tc = isObject(b.toolConfig) ? b.toolConfig : null;
  if (!tc || !Array.isArray(tc.tools) || last.role !== 'user') return null;
  if (last.content.some((c) => isObject(c.toolResult))) return null;
  const names = tc.tools.flatMap((t) =>
    isObject(t) && isObject(t.toolSpec) && typeof t.toolSpec.name === 'string' ? [t.toolSpec.name] : [],
  );
  const choice = isObject(tc.toolChoice) ? tc.toolChoice : {};
  if (isObject(choice.tool) && typeof choice.tool.name === 'string') return choice.tool.name;
  return names[0] ?? null;
}

async function converse(
  ctx: FakeContext,
  spec: ProviderSpec,
  stream: boolean,
  sw: BedrockSwitches,
): Promise<void> {
  const b = ctx.body;
  if (!ctx.bodyIsJson || !isObject(b))
    return sendError(ctx, spec, 400, 'Malformed input request, please reformat your input and try again.');
  const why = invalidReason(b);
  if (why) return sendError(ctx, spec, 400, why, 'ValidationException');
  const msgs = b.messages as Msg[];
  const last = msgs[msgs.length - 1]!;
  let lastUser = '';
  for (const m of msgs)
    if (m.role === 'user' && !m.content.some((c) => isObject(c.toolResult)))
      lastUser = blocksText(m.content, false);
  const inf = isObject(b.inferenceConfig) ? b.inferenceConfig : {};
  const tool = pickTool(b, last);
  const results = last.role === 'user' ? last.content.filter((c) => isObject(c.toolResult)) : [];
  let text = results.length
    ? `Tool said: ${blocksText(results.slice(-1), true)}`
    : `Hello from ${ctx.name}: ${head(lastUser, 40)}`;
  const stop = applyStop(text, inf.stopSequences);
  const cut = truncateWords(stop.text, inf.maxTokens);
  text = cut.text;
  const stopReason = tool
    ? 'tool_use'
    : cut.truncated
      ? 'max_tokens'
      : stop.matched !== null
        ? 'stop_sequence'
        : 'end_turn';
  let chars = Array.isArray(b.system) ? blocksText(b.system as Block[], false).length : 0;
  for (const m of msgs) chars += blocksText(m.content, true).length;
  const input = Math.ceil(chars / 4) + 1;
  const toolUseId = `tooluse_${rid(22)}`;
  const query = { query: lastUser };
  const usage = (output: number) => ({
    inputTokens: input,
    outputTokens: output,
    totalTokens: input + output + sw.cacheReadTokens,
    ...(sw.cacheReadTokens ? { cacheReadInputTokens: sw.cacheReadTokens, cacheWriteInputTokens: 0 } : {}),
  });

  if (!stream) {
    const content = tool ? [{ toolUse: { toolUseId, name: tool, input: query } }] : [{ text }];
    return sendJson(ctx, 200, {
      output: { message: { role: 'assistant', content } },
      stopReason,
      usage: usage(tool ? 10 : wordCount(text)),
      metrics: { latencyMs: 42 },
    });
  }

  const w = new ChunkWriter(ctx, { 'content-type': 'application/vnd.amazon.eventstream' });
  let sent = 0;
  const send = async (bytes: Uint8Array): Promise<boolean> => {
    const ex = sw.streamException;
    if (ex && sent >= ex.afterEvents) {
      await w.end(Buffer.from(exceptionFrame(ex.type, ex.message ?? `fake ${ex.type}`)));
      return false;
    }
    if (sw.corruptFrame && sent >= sw.corruptFrame.afterEvents) {
      const broken = Buffer.from(bytes);
      broken.writeUInt8(broken.readUInt8(broken.length - 1) ^ 0xff, broken.length - 1); // the CRC no longer matches
      await w.end(broken);
      return false;
    }
    sent++;
    return w.send(Buffer.from(bytes));
  };
  const ev = (type: string, payload: Record<string, unknown>) => send(eventFrame(type, payload));
  if (!(await ev('messageStart', { role: 'assistant' }))) return;
  let output = 10;
  if (tool) {
    if (
      !(await ev('contentBlockStart', {
        contentBlockIndex: 0,
        start: { toolUse: { toolUseId, name: tool } },
      }))
    )
      return;
    for (const input of splitEven(JSON.stringify(query), 3))
      if (!(await ev('contentBlockDelta', { contentBlockIndex: 0, delta: { toolUse: { input } } }))) return;
  } else {
    const pieces = chunkText(text, ctx.fault?.chunks ?? 5, !cut.truncated);
    output = wordCount(pieces.join(''));
    for (const t of pieces)
      if (!(await ev('contentBlockDelta', { contentBlockIndex: 0, delta: { text: t } }))) return;
  }
  if (!(await ev('contentBlockStop', { contentBlockIndex: 0 }))) return;
  if (!(await ev('messageStop', { stopReason }))) return;
  const meta = eventFrame('metadata', { usage: usage(output), metrics: { latencyMs: 42 } });
  if (sw.streamException || sw.corruptFrame) {
    if (!(await send(meta))) return;
    await w.end();
  } else await w.end(Buffer.from(meta));
}

const ROUTE = /^\/model\/([^/]+)\/(converse|converse-stream)$/;

function makeSpec(keys: Record<string, string>, region: string, sw: BedrockSwitches): ProviderSpec {
  return {
    defaultName: 'fake-bedrock',
    requestIdHeader: 'x-amzn-requestid',
    errorBody: bedrockErrorBody,
    errorHeaders: bedrockErrorHeaders,
    checkAuth: () => null, // SigV4 needs the body and is async: checked in route
    isStream: (ctx) => ctx.path.endsWith('/converse-stream'),
    async route(ctx, s) {
      const m = ctx.method === 'POST' ? ROUTE.exec(ctx.path) : null;
      if (!m) return false;
      const auth = await verifySignature(ctx, keys, region);
      if (!auth.ok) {
        sendError(ctx, s, 403, auth.message, auth.type);
        return true;
      }
      await converse(ctx, s, m[2] === 'converse-stream', sw);
      return true;
    },
  };
}

/** Starts a fake Bedrock runtime on 127.0.0.1 (port 0 = random). */
export async function startFakeBedrock(opts: FakeBedrockOptions = {}): Promise<FakeBedrockUpstream> {
  const bedrock: BedrockSwitches = { streamException: null, corruptFrame: null, cacheReadTokens: 0 };
  const keys = opts.keys ?? { [FAKE_AWS.accessKeyId]: FAKE_AWS.secretAccessKey };
  const up = await startFakeServer(makeSpec(keys, opts.region ?? FAKE_AWS.region, bedrock), {
    name: 'fake-bedrock',
    ...opts,
  });
  return Object.assign(up, { bedrock });
}
