/**
 * The operator's "Test channel" action: one small real request through one channel, outside the alias
 * chain and the breaker's admission (the operator wants to know whether the channel answers, whatever its
 * breaker says), but with everything else a served request uses on the way out: the provider's exchange
 * (wire format, auth headers, a credential exchanged first where the kind has one), the channel's pooled
 * transport and timeouts, and the outbound URL policy the transport enforces at connect time.
 *
 * What is sent:
 *   chat channels        a chat request of at most 1 output token ("ping") with the given model, else the
 *                        model of the first alias target that names this channel
 *   embeddings           a one-word embeddings request: on a channel without chat, when the operator asks
 *                        for `operation: 'embeddings'`, or when the model's name says embed
 *   other (media, audio) nothing: a generation would cost real money; the answer says so (tested: 'none')
 *
 * The outcome is not reported to the breaker or channel health (a test is not traffic) and not billed to
 * any app (it is the operator's). Every word from the upstream passes the channel's redactor: the answer
 * never carries the credential.
 */
import { GatewayError } from '../core/errors.js';
import { redact, secretsOf } from '../core/redact.js';
import type { Channel } from '../core/model.js';
import type { ConfigCache } from '../config/cache.js';
import { Abort } from '../lib/abort.js';
import { createExchange } from '../providers/index.js';
import { providerDeclaration } from '../providers/registry.js';
import { UpstreamFailureError, classifyTransport, redactFailure } from '../providers/classify.js';
import type { Transport } from '../providers/transport.js';
import { NATIVE, type InboundDialect } from '../providers/types.js';

export interface ChannelTestResult {
  ok: boolean;
  channel: string;
  /** What was sent: 'chat', 'embeddings', or 'none' (no safe test for this kind of channel). */
  tested: 'chat' | 'embeddings' | 'none';
  /** The upstream's HTTP status (null: no answer, e.g. refused or timed out). */
  status: number | null;
  latency_ms: number | null;
  model: string | null;
  /** The first 200 characters of the answer's text (chat), or a summary (embeddings). */
  answer?: string;
  error?: { code: string; message: string };
}

const EXCERPT = 200;
/** A test is quick or it is a failure: at most this long, whatever the channel's own total timeout. */
const MAX_TEST_MS = 30_000;

/** The model of the first alias target that names this channel (tiers in order), if any. */
export function modelFor(config: ConfigCache, channel: string): string | null {
  for (const name of config.aliasNames()) {
    const a = config.alias(name);
    for (const tier of a?.tiers ?? []) for (const t of tier) if (t.channel === channel) return t.model;
  }
  return null;
}

function errorOf(e: unknown): { code: string; message: string } {
  // The outbound policy's refusal may come wrapped by undici: look through the causes for it.
  for (
    let c = e as { code?: string; message?: string; cause?: unknown } | undefined, i = 0;
    c && i < 5;
    i++
  ) {
    if (c.code === 'ANIMA_OUTBOUND_REFUSED') return { code: 'outbound_refused', message: String(c.message) };
    c = c.cause as typeof c;
  }
  if (e instanceof GatewayError) return { code: e.code, message: e.message };
  const f = e instanceof UpstreamFailureError ? e.failure : classifyTransport(e, 'connect');
  return { code: f.kind, message: f.message };
}

function textOf(body: unknown): string {
  const b = body as { choices?: Array<{ message?: { content?: unknown } }> };
  const c = b?.choices?.[0]?.message?.content;
  return typeof c === 'string' ? c : JSON.stringify(body ?? null);
}

export async function testChannel(
  ch: Channel,
  config: ConfigCache,
  transport: Transport,
  opts: { model?: string; operation?: 'chat' | 'embeddings' } = {},
): Promise<ChannelTestResult> {
  const secrets = secretsOf(ch);
  const native = NATIVE[ch.provider];
  const model = opts.model ?? modelFor(config, ch.code);
  // An embeddings model gets an embeddings request (a chat with it would fail for the wrong reason): the
  // operator names the operation, else a model called *embed* on a channel that serves embeddings.
  const wantEmbeddings =
    opts.operation === 'embeddings' || (opts.operation === undefined && /embed/i.test(model ?? ''));
  const dialect: InboundDialect | null =
    native.has('openai_embeddings') && (wantEmbeddings || !native.has('openai_chat'))
      ? 'openai_embeddings'
      : native.has('openai_chat') && opts.operation !== 'embeddings'
        ? 'openai_chat'
        : null;
  const base = { channel: ch.code, status: null, latency_ms: null };
  if (!dialect)
    return {
      ...base,
      ok: false,
      tested: 'none',
      model: opts.model ?? null,
      error: {
        code: 'not_tested',
        message:
          opts.operation === 'embeddings'
            ? `a ${ch.provider} channel does not serve embeddings`
            : `a ${ch.provider} channel serves neither chat nor embeddings (media, audio): no test request is sent, as a generation costs money; its breaker and window show how it does`,
      },
    };
  const tested = dialect === 'openai_chat' ? 'chat' : 'embeddings';
  if (!model)
    return {
      ...base,
      ok: false,
      tested,
      model: null,
      error: { code: 'no_model', message: 'no alias routes to this channel: name a model to test with' },
    };
  const body: Record<string, unknown> =
    dialect === 'openai_chat'
      ? { model, messages: [{ role: 'user', content: 'ping' }], max_tokens: 1, stream: false }
      : { model, input: 'ping' };
  const t0 = performance.now();
  const ac = new Abort();
  let timedOut = false;
  const timer = setTimeout(() => ((timedOut = true), ac.abort()), Math.min(ch.timeouts.totalMs, MAX_TEST_MS));
  try {
    const ex = createExchange(dialect, body, ch, model, model);
    const decl = providerDeclaration(ch.provider);
    const call = decl.authorize ? await decl.authorize(ch, ex.call, transport) : ex.call;
    const up = await transport.send(ch.code, ch.baseUrl, call, ch.timeouts, ac, ch.maxConnections);
    const text = await up.text(64 * 1024);
    const latency_ms = Math.round(performance.now() - t0);
    if (up.status < 200 || up.status >= 300) {
      const f = redactFailure(decl.classify(up.status, up.headers, text), secrets);
      return {
        ...base,
        ok: false,
        tested,
        status: up.status,
        latency_ms,
        model,
        error: { code: f.kind, message: f.message.slice(0, 500) },
      };
    }
    const r = ex.decodeJson(text);
    const answer =
      tested === 'chat'
        ? textOf(r.body)
        : `${(r.body as { data?: Array<{ embedding?: unknown[] }> })?.data?.[0]?.embedding?.length ?? '?'}-dimension embedding`;
    return {
      ...base,
      ok: true,
      tested,
      status: up.status,
      latency_ms,
      model,
      answer: redact(answer, secrets).slice(0, EXCERPT),
    };
  } catch (e) {
    const err = timedOut
      ? { code: 'total_timeout', message: 'no complete answer within the test time budget' }
      : errorOf(e);
    return {
      ...base,
      ok: false,
      tested,
      latency_ms: Math.round(performance.now() - t0),
      model,
      error: { code: err.code, message: redact(err.message, secrets).slice(0, 500) },
    };
  } finally {
    clearTimeout(timer);
  }
}
