/**
 * The media task engine: one step per claim. A worker claims a due media task with a lease, does ONE
 * step, writes what it learnt with a compare-and-swap on its lease, and lets the task go until its next
 * poll. So a task is polled by one instance at a time, and a dead instance's task is picked up by another
 * as soon as its (short) lease runs out.
 *
 *   queued     a task deferred at submission (an ASYNC key over its limits) is admitted first, as the ASYNC
 *              runner does (rejectOnly: over a limit is "step again when the limit says"; a spent budget or
 *              wallet fails it), holding the key's concurrency slot for this step (the upstream submit, and
 *              the whole job for a synchronous upstream); a task admitted by its HTTP request is not again.
 *              Then reserve the app's prepaid wallet (hold `task:<id>`, until the deadline), then submit along
 *              the alias's chain (breakers and fallback as for chat). A synchronous upstream (OpenAI
 *              images) finishes here; otherwise -> submitted, with the upstream job id.
 *   submitted/running   poll the upstream job (backoff: ANIMA_MEDIA_POLL_MS doubling, capped);
 *              progress is saved; succeeded -> priced, completed and billed; failed -> hold released.
 *   deadline   past the kind's deadline: expired, upstream cancel (best effort), hold released.
 *   cancel     requested by the app while a worker holds the task: honoured at the end of the step.
 *
 * Billing is exactly once: the completion commits the priced record with billing_state 'pending', the
 * settlement (idempotent by task id) follows, then 'done'; a crash in between is swept up by `sweep`.
 */
import type { OutboundPolicy } from '../lib/outbound.js';
import type { UpstreamEndpoint } from '../providers/types.js';
import type { Logger } from 'pino';
import type { Admitted, Governance, Rejected } from '../governance/pipeline.js';
import { RequestContext } from '../core/context.js';
import { Abort } from '../lib/abort.js';
import { refuseDisabledGroup, resolveAlias } from '../relay/auth.js';
import type { BreakerRegistry } from '../breaker/breaker.js';
import type { ChannelHealthRegistry } from '../breaker/health.js';
import type { ConfigCache } from '../config/cache.js';
import { isEffective } from '../core/model.js';
import { GatewayError } from '../core/errors.js';
import { priceOf } from '../core/pricing.js';
import { redactSecrets } from '../core/redact.js';
import {
  type MediaKind,
  type MediaRequest,
  type MediaResult,
  type PollResult,
  MediaCallError,
  mediaAdapter,
} from '../providers/media.js';
import type { UpstreamFailure } from '../providers/classify.js';
import { candidates } from '../relay/router.js';
import { BILLING_SWEEP_AGE_MS, type TaskRow, type TaskStore } from './store.js';

export interface MediaSettings {
  /** First poll delay; doubles per poll up to pollCapMs. */
  pollMs: number;
  pollCapMs: number;
  /** Per-kind deadline from submission. */
  deadlineMs: Record<MediaKind, number>;
  /** One upstream call's time limit. */
  callTimeoutMs: number;
}

export interface MediaDeps {
  store: TaskStore;
  config: ConfigCache;
  breakers: BreakerRegistry;
  health: ChannelHealthRegistry;
  /**
   * Quota admission (of a deferred task), wallet holds and bookings go through the governance pipeline;
   * a task admitted by its HTTP request is not admitted again.
   */
  governance: Governance;
  log: Logger;
  settings: MediaSettings;
  onState: (kind: string, status: string) => void;
  /** The operator URL policy: a channel's connections are checked (and pinned) when they open. */
  outbound?: OutboundPolicy;
}

/** The request a media task stores (normalized from whichever inbound API submitted it). */
export interface StoredMediaRequest {
  prompt: string;
  n?: number;
  seconds?: number;
  size?: string;
  response_format?: 'url' | 'b64_json';
  extra?: Record<string, unknown>;
  /** Deferred by the key's ASYNC mode (over a limit at submission): the worker admits it before submitting. */
  deferred?: boolean;
}

/** What a media task sells for and costs: the price in force at its creation, times the key's multiplier. */
function priceMedia(
  config: ConfigCache,
  t: Pick<TaskRow, 'alias' | 'key_id' | 'created_at'> & { app_id?: string },
  channel: string | null,
  metered: MediaResult['metered'],
): { sale: bigint; cost: bigint } {
  const p = config.price(t.alias!, channel, new Date(t.created_at).getTime(), undefined, t.app_id);
  if (!p) return { sale: 0n, cost: 0n };
  const key = config.keyById(t.key_id);
  const g = key?.tokenGroupId
    ? config.tokenGroup(key.tokenGroupId, new Date(t.created_at).getTime())
    : undefined;
  const u = { inputTokens: 0, outputTokens: 0, cachedTokens: 0, ...metered };
  return { cost: priceOf(p.cost, u), sale: priceOf(p.sale, u, g?.priceMultiplierPpm ?? 1_000_000n) };
}

/** The sale a media request may reach (its alias-wide price), for the key's cost budget at submission. */
export function mediaSaleEstimate(
  config: ConfigCache,
  kind: MediaKind,
  alias: string,
  keyId: string,
  r: StoredMediaRequest,
  at: number,
): bigint {
  return priceMedia(
    config,
    { alias, key_id: keyId, created_at: new Date(at), app_id: config.keyById(keyId)?.appId },
    null,
    meteredEstimate(kind, r),
  ).sale;
}

/** What a request may reach, for its reservation: n images, the asked seconds, 2 tracks (vendors' usual pair). */
function meteredEstimate(kind: MediaKind, r: StoredMediaRequest): MediaResult['metered'] {
  if (kind === 'image') return { images: r.n ?? 1 };
  if (kind === 'video') return { videoSeconds: r.seconds ?? 4 };
  return { tracks: r.n ?? 2 };
}

/**
 * Cancels a task of an app: at once when no worker holds it (then `afterCancel`: upstream cancel, hold
 * released, webhook), else marked, and its worker woken to honour it at the end of its step. null: the
 * app has no such task.
 */
export async function cancelTask(
  store: TaskStore,
  id: string,
  appId: string,
  then: { afterCancel(t: TaskRow): Promise<void>; wake(): void },
): Promise<TaskRow | null> {
  const r = await store.cancel(id, appId);
  if (!r) return null;
  if (r.cancelled) await then.afterCancel(r.task);
  else then.wake();
  return r.task;
}

export class MediaRunner {
  constructor(private readonly d: MediaDeps) {}

  private signal(): AbortSignal {
    return AbortSignal.timeout(this.d.settings.callTimeoutMs);
  }

  /** The channel as the adapter calls it, with the policy's connector for its connections. */
  private endpoint(ch: UpstreamEndpoint): UpstreamEndpoint {
    return this.d.outbound ? { ...ch, dispatcher: this.d.outbound.dispatcher('operator') } : ch;
  }

  private nextPoll(polls: number): Date {
    const ms = Math.min(this.d.settings.pollCapMs, this.d.settings.pollMs * 2 ** Math.min(polls, 10));
    return new Date(Date.now() + ms);
  }

  /** One step of a claimed media task (the caller holds its lease as `owner`). Never throws. */
  async step(t: TaskRow, owner: string): Promise<void> {
    try {
      if (t.cancel_requested_at) return await this.cancelHeld(t, owner);
      if (new Date(t.deadline).getTime() <= Date.now()) return await this.expire(t, owner);
      if (!t.upstream_id) return await this.submit(t, owner);
      return await this.poll(t, owner);
    } catch (e) {
      this.d.log.error(
        { task: t.id, err: redactSecrets(String((e as Error)?.message)) },
        'media task step failed',
      );
      // Unexpected: let the lease lapse and retry the step later (the deadline still bounds it).
      await this.d.store.step(t.id, owner, { notBefore: this.nextPoll(t.polls) }).catch(() => {});
    }
  }

  private holdId(t: TaskRow): string {
    return `task:${t.id}`;
  }

  private async submit(t: TaskRow, owner: string): Promise<void> {
    const kind = t.kind as MediaKind;
    const r = t.request as StoredMediaRequest;
    const now = Date.now();
    const key = this.d.config.keyById(t.key_id);
    const app = key ? this.d.config.app(key.appId, now) : undefined;
    const alias = this.d.config.alias(t.alias!, now);
    if (!key || !key.enabled || !isEffective(key, now) || !app?.enabled)
      return this.fail(t, owner, 403, {
        code: 'key_disabled',
        message: 'The key that submitted this task is disabled or gone.',
      });
    if (!alias)
      return this.fail(t, owner, 404, {
        code: 'model_not_found',
        message: `The model '${t.alias}' does not exist.`,
      });
    let admitted: Admitted | null = null;
    if (r.deferred) {
      const a = await this.admitDeferred(t, owner, kind, r, now);
      if (!a) return; // stepped for later, or failed
      admitted = a;
    }
    try {
      await this.holdAndSubmit(t, owner, kind, r, now);
    } finally {
      if (admitted) {
        // The run's outcome for the metrics, and the cost budget trued up to what it sold (the
        // estimate while a polled job runs; 0 when it failed).
        const cur = await this.d.store.byId(t.id).catch(() => undefined);
        const ctx = admitted.ctx;
        const failed = cur?.status === 'failed' || cur?.status === 'expired' || cur?.status === 'cancelled';
        ctx.status = failed ? (cur?.result_status ?? 502) : 200;
        ctx.outcome = failed ? 'failed' : 'ok';
        const sold = (cur?.billing as { sale?: string } | null | undefined)?.sale;
        if (failed) ctx.jobSaleMicros = 0;
        else if (cur?.status === 'succeeded') ctx.jobSaleMicros = sold ? Number(sold) : 0;
        await this.d.governance.settle(admitted);
      }
    }
  }

  /**
   * Admits a deferred task through the governance pipeline without waiting, as the ASYNC runner does
   * (tasks/runner.ts). null when it may not run now: stepped to when the limit says, or failed for good.
   */
  private async admitDeferred(
    t: TaskRow,
    owner: string,
    kind: MediaKind,
    r: StoredMediaRequest,
    now: number,
  ): Promise<Admitted | null> {
    const ctx = new RequestContext(`req_${t.id}_${t.polls}`, 'openai_chat', now);
    ctx.label = `media_${kind}`;
    const key = this.d.config.keyById(t.key_id)!;
    const app = this.d.config.app(key.appId, now)!;
    let routed;
    try {
      refuseDisabledGroup(this.d.config, key.tokenGroupId, now);
      routed = resolveAlias(this.d.config, ctx.authenticated(key, app), t.alias!, now);
    } catch (e) {
      if (!(e instanceof GatewayError)) throw e;
      await this.fail(t, owner, e.status, { code: e.code, message: e.message });
      return null;
    }
    const sale = Number(mediaSaleEstimate(this.d.config, kind, t.alias!, key.id, r, now));
    ctx.jobSaleMicros = sale;
    const decision = await this.d.governance.admit<never>({
      ctx: routed,
      body: t.request as Record<string, unknown>,
      abort: new Abort(),
      now,
      jobSale: sale,
      recordId: `task:${t.id}`,
      taskId: t.id,
      rejectOnly: true,
    });
    if (decision.kind === 'admitted') return decision;
    const e = (decision as Rejected).error; // rejectOnly: never deferred again
    // A spent token/cost budget won't come back soon: a final answer, as in the ASYNC runner.
    if (e.code === 'tokens_limit_exceeded' || e.code === 'budget_exceeded') {
      await this.fail(t, owner, e.status, { code: e.code, message: e.message });
      return null;
    }
    // Over a rate or concurrency limit (or the quota store unavailable): try again when the limit says.
    const ms =
      e.status === 429
        ? Number(e.headers['retry-after-ms'] ?? Number(e.headers['retry-after'] ?? 1) * 1000)
        : 1_000;
    await this.d.store.step(t.id, owner, { notBefore: new Date(Date.now() + Math.max(50, ms || 1_000)) });
    return null;
  }

  /** Holds the app's wallet for the job, then submits it along the alias's chain. */
  private async holdAndSubmit(
    t: TaskRow,
    owner: string,
    kind: MediaKind,
    r: StoredMediaRequest,
    now: number,
  ): Promise<void> {
    const key = this.d.config.keyById(t.key_id)!;
    const app = this.d.config.app(key.appId, now)!;
    const alias = this.d.config.alias(t.alias!, now)!;
    if (this.d.governance.billing && app.billing === 'prepaid') {
      const est = priceMedia(this.d.config, t, null, meteredEstimate(kind, r)).sale;
      // The wallet is held for as long as the job may run (its quotas were passed at submission or above).
      const refused = await this.d.governance
        .hold(app.id, this.holdId(t), est, Math.max(60_000, new Date(t.deadline).getTime() - now + 60_000))
        .catch((): Rejected => {
          const error = new GatewayError('service_unavailable', 'the wallet could not be reached');
          return { kind: 'rejected', code: error.code, error };
        });
      if (refused?.code === 'insufficient_balance')
        return this.fail(t, owner, 402, { code: refused.code, message: refused.error.message });
      if (refused) {
        await this.d.store.step(t.id, owner, { notBefore: this.nextPoll(t.polls) });
        return;
      }
    }
    let last: UpstreamFailure | null = null;
    const tried: string[] = [];
    for (const { target } of candidates(
      alias,
      (x) => x.weight * (this.d.config.channel(x.channel)?.weight ?? 1),
    )) {
      const ch = this.d.config.channel(target.channel);
      const adapter = ch ? mediaAdapter(ch.provider) : null;
      if (
        !ch ||
        !ch.enabled ||
        !adapter?.supports(kind) ||
        this.d.breakers.refusesNow(ch.code) ||
        this.d.health.refusesNow(ch.code)
      )
        continue;
      const acq = await this.d.breakers.acquire(ch.code, ch.breaker).catch(() => ({
        ok: true as const,
        permit: { channel: ch.code, gen: this.d.breakers.state(ch.code).gen, probe: false },
      }));
      if (!acq.ok) continue;
      tried.push(ch.code);
      const req: MediaRequest = {
        kind,
        model: target.model,
        prompt: r.prompt,
        ...(r.n ? { n: r.n } : {}),
        ...(r.seconds ? { seconds: r.seconds } : {}),
        ...(r.size ? { size: r.size } : {}),
        ...(r.response_format ? { responseFormat: r.response_format } : {}),
        ...(r.extra ? { extra: r.extra } : {}),
      };
      const t0 = performance.now();
      try {
        const out = await adapter.submit(this.endpoint(ch), req, this.signal());
        await this.d.breakers
          .onResult(acq.permit, ch.breaker, { failure: false, durationMs: performance.now() - t0 })
          .catch(() => {});
        if (out.done) return this.succeed(t, owner, ch.code, out.result);
        if (
          await this.d.store.step(t.id, owner, {
            status: 'submitted',
            upstreamId: out.upstreamId,
            channel: ch.code,
            progress: 0,
            notBefore: this.nextPoll(0),
          })
        )
          this.d.onState(t.kind, 'submitted');
        else await this.afterLostStep(t, owner, ch.code, out.upstreamId);
        return;
      } catch (e) {
        const f = e instanceof MediaCallError ? e.failure : null;
        await this.d.breakers
          .onResult(acq.permit, ch.breaker, {
            failure: f?.countsAsFailure ?? true,
            neutral: f ? !f.countsAsFailure : false,
            durationMs: performance.now() - t0,
          })
          .catch(() => {});
        if (!f) throw e;
        last = f;
        if (!f.tryNext) break; // the request's own fault (400 class): another channel would say the same
      }
    }
    if (last && !last.tryNext)
      return this.fail(t, owner, last.status ?? 400, {
        code: last.upstreamCode ?? 'invalid_request',
        message: last.message,
      });
    // Every channel failed (or none could serve): retry the submit a few times, then give up.
    if (t.attempts < 3 && tried.length > 0) {
      await this.d.store.step(t.id, owner, { notBefore: this.nextPoll(t.attempts + 2) });
      return;
    }
    return this.fail(
      t,
      owner,
      tried.length ? 502 : 503,
      tried.length
        ? {
            code: 'upstream_error',
            message: `every channel failed to accept the job; last: ${last?.message ?? 'unknown'}`,
          }
        : { code: 'no_available_channel', message: `no channel of '${t.alias}' can generate ${kind}` },
    );
  }

  /** The step's CAS failed after an upstream job was created: the app cancelled meanwhile. Cancel upstream too. */
  private async afterLostStep(t: TaskRow, owner: string, channel: string, upstreamId: string): Promise<void> {
    const cur = await this.d.store.byId(t.id);
    if (cur?.cancel_requested_at) await this.cancelHeld({ ...cur, channel, upstream_id: upstreamId }, owner);
  }

  private async poll(t: TaskRow, owner: string): Promise<void> {
    const ch = this.d.config.channel(t.channel!);
    const adapter = ch ? mediaAdapter(ch.provider) : null;
    if (!ch || !adapter)
      return this.fail(t, owner, 502, {
        code: 'upstream_error',
        message: `the task's channel '${t.channel}' is gone`,
      });
    let r: PollResult;
    try {
      r = await adapter.poll(this.endpoint(ch), t.upstream_id!, t.kind as MediaKind, this.signal());
    } catch (e) {
      if (!(e instanceof MediaCallError)) throw e;
      // A poll that failed says nothing about the job: try again later (the deadline bounds it).
      this.d.log.warn({ task: t.id, channel: ch.code, kind: e.failure.kind }, 'media poll failed; retrying');
      await this.d.store.step(t.id, owner, { notBefore: this.nextPoll(t.polls) });
      return;
    }
    switch (r.state) {
      case 'pending':
      case 'running': {
        const status = r.state === 'running' ? 'running' : 'submitted';
        const saved = await this.d.store.step(t.id, owner, {
          status,
          progress: r.progress,
          notBefore: this.nextPoll(t.polls),
        });
        if (!saved) await this.afterLostStep(t, owner, t.channel!, t.upstream_id!);
        else if (status !== t.status) this.d.onState(t.kind, status);
        return;
      }
      case 'succeeded':
        return this.succeed(t, owner, ch.code, r.result);
      default:
        return this.fail(t, owner, 502, { code: r.error.code, message: r.error.message });
    }
  }

  private async succeed(t: TaskRow, owner: string, channel: string, result: MediaResult): Promise<void> {
    if (result.items.length === 0)
      return this.fail(t, owner, 502, {
        code: 'no_content',
        message: 'the upstream finished the job without any result',
      });
    const key = this.d.config.keyById(t.key_id);
    const app = key ? this.d.config.app(key.appId) : undefined;
    const { sale, cost } = priceMedia(this.d.config, t, channel, result.metered);
    const billing =
      this.d.governance.billing && (sale > 0n || cost > 0n)
        ? {
            sale: sale.toString(),
            cost: cost.toString(),
            prepaid: app?.billing === 'prepaid',
            metered: result.metered,
            channel,
          }
        : undefined;
    const body = {
      items: result.items,
      metered: result.metered,
      ...(result.upstreamContent ? { upstream_content: true } : {}),
    };
    const done = await this.d.store.complete(
      t.id,
      owner,
      'succeeded',
      { body, status: 200, progress: 100, ...(billing ? { billing } : {}) },
      t.webhook_url ?? key?.webhookUrl,
    );
    if (!done) {
      // The app cancelled while the job finished: it gets nothing and pays nothing.
      return this.afterLostStep(t, owner, channel, t.upstream_id ?? '');
    }
    this.d.onState(t.kind, 'succeeded');
    const fresh = billing ? await this.d.store.byId(t.id) : undefined;
    if (fresh) await this.settle(fresh);
    else if (app) await this.d.governance.release(app.id, this.holdId(t));
  }

  /** Books a succeeded task exactly once (the record id is the task's), then marks it billed. */
  async settle(t: TaskRow): Promise<void> {
    const b = t.billing as {
      sale: string;
      cost: string;
      prepaid: boolean;
      metered: Record<string, number>;
      channel: string;
    } | null;
    if (!this.d.governance.billing || !b || t.billing_state !== 'pending') return;
    await this.d.governance.bookJob(
      {
        id: `task:${t.id}`,
        taskId: t.id,
        appId: t.app_id,
        prepaid: b.prepaid,
        alias: t.alias!,
        channel: b.channel,
        sale: BigInt(b.sale),
        cost: BigInt(b.cost),
        usage: { kind: t.kind, ...b.metered, upstream_id: t.upstream_id, key_id: t.key_id },
        at: new Date(t.created_at).getTime(),
      },
      this.holdId(t),
    );
    await this.d.store.markBilled(t.id);
  }

  /** Settles succeeded tasks whose instance died between completion and settlement. */
  async sweep(): Promise<void> {
    for (const t of await this.d.store.pendingBilling(BILLING_SWEEP_AGE_MS)) await this.settle(t);
  }

  private async fail(
    t: TaskRow,
    owner: string,
    status: number,
    error: { code: string; message: string },
  ): Promise<void> {
    const key = this.d.config.keyById(t.key_id);
    // Upstream words were redacted with the channel's credential where they were read (providers/media.ts);
    // this catches a credential-shaped token from anywhere else before it is stored and shown on poll.
    error = { code: redactSecrets(error.code), message: redactSecrets(error.message) };
    const done = await this.d.store.complete(
      t.id,
      owner,
      'failed',
      { status, error, body: { error } },
      t.webhook_url ?? key?.webhookUrl,
    );
    if (done) this.d.onState(t.kind, 'failed');
    else await this.afterLostStep(t, owner, t.channel ?? '', t.upstream_id ?? '');
    await this.d.governance.release(t.app_id, this.holdId(t));
  }

  private async expire(t: TaskRow, owner: string): Promise<void> {
    const key = this.d.config.keyById(t.key_id);
    await this.cancelUpstream(t);
    if (
      await this.d.store.complete(
        t.id,
        owner,
        'expired',
        { status: 504, error: { code: 'task_expired', message: 'the task passed its deadline' } },
        t.webhook_url ?? key?.webhookUrl,
      )
    )
      this.d.onState(t.kind, 'expired');
    await this.d.governance.release(t.app_id, this.holdId(t));
  }

  private async cancelHeld(t: TaskRow, owner: string): Promise<void> {
    const done = await this.d.store.cancelLeased(t.id, owner);
    if (done) {
      this.d.onState(t.kind, 'cancelled');
      const key = this.d.config.keyById(t.key_id);
      const url = t.webhook_url ?? key?.webhookUrl;
      if (url) await this.d.store.enqueueWebhook(t.id, url);
    }
    await this.cancelUpstream(t);
    await this.d.governance.release(t.app_id, this.holdId(t));
  }

  /** Forwards a cancel to the upstream job when there is one (best effort: the provider may not support it). */
  async cancelUpstream(t: Pick<TaskRow, 'id' | 'channel' | 'upstream_id'>): Promise<void> {
    if (!t.channel || !t.upstream_id) return;
    const ch = this.d.config.channel(t.channel);
    const adapter = ch ? mediaAdapter(ch.provider) : null;
    if (!ch || !adapter) return;
    await adapter
      .cancel(this.endpoint(ch), t.upstream_id, this.signal())
      .catch((e: unknown) =>
        this.d.log.warn(
          { task: t.id, err: redactSecrets(String((e as Error)?.message)) },
          'upstream cancel failed',
        ),
      );
  }

  /** After the HTTP layer cancelled an unleased task: cancel upstream, release the hold. */
  async afterCancel(t: TaskRow): Promise<void> {
    this.d.onState(t.kind, 'cancelled');
    const key = this.d.config.keyById(t.key_id);
    const url = t.webhook_url ?? key?.webhookUrl;
    if (url) await this.d.store.enqueueWebhook(t.id, url);
    await this.cancelUpstream(t);
    await this.d.governance.release(t.app_id, this.holdId(t));
  }

  /** The finished content of an upstream-held result (OpenAI videos), streamed through. */
  async content(t: TaskRow): Promise<Response> {
    const ch = t.channel ? this.d.config.channel(t.channel) : undefined;
    const adapter = ch ? mediaAdapter(ch.provider) : null;
    if (!ch || !adapter?.content || !t.upstream_id)
      throw new GatewayError('not_found', 'This task has no downloadable content.');
    try {
      return await adapter.content(
        this.endpoint(ch),
        t.upstream_id,
        AbortSignal.timeout(Math.max(this.d.settings.callTimeoutMs, 120_000)),
      );
    } catch (e) {
      if (e instanceof MediaCallError)
        throw new GatewayError(
          e.failure.status === 404 ? 'not_found' : 'upstream_error',
          `content unavailable: ${e.failure.message}`,
        );
      throw e;
    }
  }

  deadlineFor(kind: MediaKind): Date {
    return new Date(Date.now() + this.d.settings.deadlineMs[kind]);
  }
}
