import { GatewayError } from '../core/errors.js';
import type { ConfigCache } from '../config/cache.js';
import { isEffective } from '../core/model.js';
import { dialectOfTask } from '../core/dialects.js';
import type { Governance, Rejected } from '../governance/pipeline.js';
import { refuseDisabledGroup, resolveAlias } from '../relay/auth.js';
import { RequestContext, type Routed } from '../core/context.js';
import { type ClientSink, type Relay, writeError } from '../relay/relay.js';
import type { TaskRow } from './store.js';
import type { RunOutcome } from './worker.js';
import { Abort } from '../lib/abort.js';

/** A sink that keeps the whole answer in memory (ASYNC results are JSON, never streams). */
export class CaptureSink implements ClientSink {
  status = 0;
  headers: Record<string, string> = {};
  private parts: string[] = [];
  headersSent = false;
  closed = false;
  head(status: number, headers: Record<string, string>): void {
    this.status = status;
    this.headers = headers;
    this.headersSent = true;
  }
  write(c: string): boolean {
    this.parts.push(c);
    return true;
  }
  async drain(): Promise<boolean> {
    return true;
  }
  abort(): void {}
  end(c?: string): void {
    if (c) this.parts.push(c);
  }
  onAbort(): void {}
  body(): unknown {
    const text = this.parts.join('');
    try {
      return JSON.parse(text);
    } catch {
      return { text };
    }
  }
}

/**
 * Runs one queued ASYNC request exactly as the synchronous path would (same key checks, alias, quota
 * admission, relay), except that admission never waits: no room yet means "try again later".
 */
export function taskRunner(d: {
  config: ConfigCache;
  governance: Governance;
  relay: Relay;
  now: () => number;
}) {
  return async (t: TaskRow): Promise<RunOutcome> => {
    const now = d.now();
    const dialect = dialectOfTask(t.kind) ?? 'openai_chat';
    const ctx = new RequestContext(`req_${t.id}_${t.attempts}`, dialect, now);
    const sink = new CaptureSink();
    const body = t.request as Record<string, unknown>;
    const key = d.config.keyById(t.key_id);
    let routed: Routed;
    try {
      if (!key || !key.enabled || !isEffective(key, now))
        throw new GatewayError('key_disabled', 'The key that queued this task is disabled or gone.');
      const app = d.config.app(key.appId, now);
      if (!app?.enabled) throw new GatewayError('app_disabled', "The key's app is disabled.");
      refuseDisabledGroup(d.config, key.tokenGroupId, now);
      routed = resolveAlias(d.config, ctx.authenticated(key, app), String(body.model), now);
    } catch (e) {
      writeError(ctx, sink, e as GatewayError);
      return { ok: false, status: sink.status, body: sink.body(), final: true, webhook: key?.webhookUrl };
    }
    // Billing: a task is booked once whatever happens to its runs (the record id is the task's).
    const decision = await d.governance.admit<never>({
      ctx: routed,
      body,
      abort: new Abort(),
      now,
      recordId: `task:${t.id}`,
      taskId: t.id,
      rejectOnly: true,
    });
    if (decision.kind !== 'admitted') {
      const e = (decision as Rejected).error; // rejectOnly: a run is never deferred again
      // A spent token/cost budget or an empty wallet won't come back soon: a final answer, not a retry.
      if (
        e.code === 'tokens_limit_exceeded' ||
        e.code === 'budget_exceeded' ||
        e.code === 'insufficient_balance'
      ) {
        writeError(ctx, sink, e);
        return { ok: false, status: sink.status, body: sink.body(), final: true, webhook: key.webhookUrl };
      }
      if (e.status === 429)
        return {
          ok: false,
          retryAfterMs: Number(e.headers['retry-after-ms'] ?? Number(e.headers['retry-after'] ?? 1) * 1000),
        };
      return { ok: false, retryAfterMs: 1_000 };
    }
    try {
      await d.relay.serve(routed, body, sink, { done: decision });
    } finally {
      await d.governance.settle(decision);
    }
    return { ok: true, status: sink.status, body: sink.body(), webhook: key.webhookUrl };
  };
}
