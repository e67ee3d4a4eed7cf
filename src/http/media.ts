/**
 * Media generation routes. Every submission is a durable task (src/tasks/media.ts runs it); the routes
 * differ only in their wire format:
 *
 *   OpenAI    POST /v1/images/generations (synchronous by default; `?async=true` or `x-anima-async: true`
 *             answers 202 with the task), POST /v1/videos (multipart or JSON), GET /v1/videos, GET|DELETE
 *             /v1/videos/{id}, GET /v1/videos/{id}/content
 *   Music     POST /v1/music {model, prompt, duration?, style?, n?}, GET /v1/music/{id}
 *   new-api   POST /suno/submit/music, POST /suno/fetch, GET /suno/fetch/{id};
 *             POST /v1/video/generations, GET /v1/video/generations/{task_id}
 *   Tasks     POST /v1/tasks/{id}/cancel, DELETE /v1/tasks/{id} (GET ones live in server.ts)
 *
 * `Idempotency-Key` makes a submission repeatable: the same key (per app) returns the same task. A task
 * is visible only to its own app: another app gets 404 for it, as for a task that doesn't exist.
 */
import { uploadsOf } from '../lib/multipart.js';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { type Admitted, type Governance } from '../governance/pipeline.js';
import { Abort } from '../lib/abort.js';
import { rateLimitHeaders } from '../quota/admission.js';
import type { ConfigCache } from '../config/cache.js';
import { GatewayError } from '../core/errors.js';
import { toOpenAIError } from '../core/render.js';
import type { Clock } from '../lib/clock.js';
import { type OutboundPolicy, outboundPolicy } from '../lib/outbound.js';
import type { MediaKind } from '../providers/media.js';
import { resolveAlias } from '../relay/auth.js';
import { authed } from './auth-first.js';
import { renderError } from '../core/render.js';
import { type Authenticated, RequestContext } from '../core/context.js';
import { type MediaRunner, type StoredMediaRequest, cancelTask, mediaSaleEstimate } from '../tasks/media.js';
import { type TaskRow, type TaskStore, ACTIVE, taskView } from '../tasks/store.js';

export interface MediaHttpDeps {
  config: ConfigCache;
  store: TaskStore;
  runner: MediaRunner;
  /** Admission (the key's quotas) and settlement of each submission. */
  governance: Governance;
  clock: Clock;
  /** Tell every instance's workers there is work. */
  wake: () => void;
  onQueued?: (kind: string) => void;
  /** The outbound URL policy (default: the process's). */
  outbound?: OutboundPolicy;
}

const sec = (d: Date | string | null) => (d ? Math.floor(new Date(d).getTime() / 1000) : null);
const FINAL = new Set(['succeeded', 'failed', 'cancelled', 'expired']);

interface Caller {
  appId: string;
  keyId: string;
  webhookSecret: boolean;
}

async function authenticate(
  d: MediaHttpDeps,
  req: FastifyRequest,
  ctx: RequestContext,
  now: number,
): Promise<Authenticated> {
  const ks = d.config.killSwitch();
  if (ks)
    throw new GatewayError(
      'gateway_disabled',
      `The gateway is disabled by an operator${ks.reason ? `: ${ks.reason}` : ''}.`,
    );
  return authed(d.config, req, ctx, now); // checked before the body was read (auth-first.ts)
}

async function caller(d: MediaHttpDeps, req: FastifyRequest): Promise<Caller> {
  const now = d.clock.now();
  const { key } = await authenticate(d, req, new RequestContext(req.id, 'openai_chat', now), now);
  return { appId: key.appId, keyId: key.id, webhookSecret: !!key.webhookSecret };
}

function str(
  b: Record<string, unknown>,
  k: string,
  o: { required?: boolean; max?: number } = {},
): string | undefined {
  const v = b[k];
  if (v === undefined || v === null || v === '') {
    if (o.required) throw new GatewayError('invalid_request', `'${k}' is required.`, { param: k });
    return undefined;
  }
  if (typeof v !== 'string')
    throw new GatewayError('invalid_request', `'${k}' must be a string.`, { param: k });
  if (v.length > (o.max ?? 32_000))
    throw new GatewayError('invalid_request', `'${k}' is longer than ${o.max ?? 32_000} characters.`, {
      param: k,
    });
  return v;
}

function num(b: Record<string, unknown>, k: string, min: number, max: number): number | undefined {
  const v = b[k];
  if (v === undefined || v === null || v === '') return undefined;
  const n = typeof v === 'string' && /^\d+(\.\d+)?$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n) || n < min || n > max)
    throw new GatewayError('invalid_request', `'${k}' must be a number from ${min} to ${max}.`, { param: k });
  return n;
}

/** A tenant's callback: an http(s) URL that resolves to public addresses only (SSRF). */
async function callbackUrl(d: MediaHttpDeps, b: Record<string, unknown>): Promise<string | null> {
  const v = b.callback_url ?? b.callBackUrl;
  if (v === undefined || v === null || v === '') return null;
  if (typeof v !== 'string' || v.length > 2000)
    throw new GatewayError('invalid_request', "'callback_url' must be an http(s) URL.", {
      param: 'callback_url',
    });
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new GatewayError('invalid_request', "'callback_url' must be an http(s) URL.", {
      param: 'callback_url',
    });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new GatewayError('invalid_request', "'callback_url' must be an http(s) URL.", {
      param: 'callback_url',
    });
  const verdict = await (d.outbound ?? outboundPolicy()).checkUrlResolved(v, 'tenant');
  if (!verdict.ok)
    throw new GatewayError('url_not_allowed', `'callback_url' ${verdict.reason}.`, {
      param: 'callback_url',
      details: { rule: verdict.rule },
    });
  return v;
}

function idempotencyKey(req: FastifyRequest): string | null {
  const h = req.headers['idempotency-key'];
  if (h === undefined) return null;
  if (typeof h !== 'string' || !h || h.length > 200)
    throw new GatewayError('invalid_request', 'Idempotency-Key must be 1..200 characters.', {
      param: 'Idempotency-Key',
    });
  return h;
}

interface Submitted {
  task: TaskRow;
  existing: boolean;
  /** The key's ASYNC mode deferred it (over a limit): answered 202 whatever the route's default. */
  deferred: boolean;
}

/**
 * Submits a media request through the governance pipeline: the key's QPS, concurrency and cost quotas
 * (the job's estimated sale) as for any request, then the task is created (or, with the same
 * Idempotency-Key, found) and the workers woken, and `answer` writes the reply (a synchronous image waits
 * for its job inside it, holding its concurrency slot). Settled once the answer is done; the job's wallet
 * hold and booking happen in the worker (src/tasks/media.ts), through the same pipeline.
 */
async function submit<R>(
  d: MediaHttpDeps,
  req: FastifyRequest,
  reply: FastifyReply,
  kind: MediaKind,
  model: string | undefined,
  request: StoredMediaRequest,
  b: Record<string, unknown>,
  answer: (r: Submitted, ctx: RequestContext) => Promise<R> | R,
): Promise<R> {
  const now = d.clock.now();
  const ctx = new RequestContext(req.id, 'openai_chat', now);
  ctx.label = `media_${kind}`;
  let admitted: Admitted | null = null;
  try {
    const who = await authenticate(d, req, ctx, now);
    if (!model)
      throw new GatewayError('missing_model', "'model' is required: name a model alias.", { param: 'model' });
    const routed = resolveAlias(d.config, who, model, now);
    const webhookUrl = await callbackUrl(d, b);
    const idem = idempotencyKey(req);
    const create = (deferred = false) =>
      d.store.createMedia({
        kind,
        appId: routed.key.appId,
        keyId: routed.key.id,
        request: deferred ? { ...request, deferred: true } : request,
        deadline: d.runner.deadlineFor(kind),
        alias: model,
        idempotencyKey: idem,
        webhookUrl,
      });
    const gone = new Abort();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) gone.abort();
    });
    const sale = Number(mediaSaleEstimate(d.config, kind, model, routed.key.id, request, now));
    // An ASYNC key over a limit: the task is created, marked deferred, and the worker admits it (without
    // waiting: "later" while over the limit) before it submits upstream (src/tasks/media.ts).
    const decision = await d.governance.admit({
      ctx: routed,
      body: b,
      abort: gone,
      now,
      jobSale: sale,
      defer: () => create(true),
    });
    if (decision.kind === 'rejected') throw decision.error;
    let r: { task: TaskRow; existing: boolean };
    if (decision.kind === 'deferred') r = decision.task;
    else {
      admitted = decision;
      if (decision.lease) void reply.headers(rateLimitHeaders(decision.lease.remaining));
      r = await create();
    }
    if (!r.existing) {
      d.onQueued?.(kind);
      d.wake();
    }
    // The cost budget keeps the job's estimate until the worker books what it sold (see governance).
    ctx.jobSaleMicros = sale;
    const out = await answer({ ...r, deferred: decision.kind === 'deferred' }, ctx);
    ctx.status = reply.statusCode;
    ctx.outcome = ctx.status === 202 ? 'queued' : ctx.status < 400 ? 'ok' : 'failed';
    return out;
  } catch (e) {
    const ge = e instanceof GatewayError ? e : new GatewayError('internal_error', 'internal error');
    ctx.status = ge.status;
    ctx.error = ge;
    ctx.outcome = 'rejected';
    throw e;
  } finally {
    if (admitted) await d.governance.settle(admitted);
    else d.governance.record(ctx);
  }
}

async function owned(
  d: MediaHttpDeps,
  req: FastifyRequest,
  id: string,
  kinds?: MediaKind[],
): Promise<{ task: TaskRow; c: Caller }> {
  const c = await caller(d, req);
  const t = await d.store.get(id, c.appId);
  if (!t || (kinds && !kinds.includes(t.kind as MediaKind)))
    throw new GatewayError('not_found', `No task with id '${id.slice(0, 100)}'.`);
  return { task: t, c };
}

async function cancel(
  d: MediaHttpDeps,
  req: FastifyRequest,
  id: string,
  kinds?: MediaKind[],
): Promise<TaskRow> {
  const { task, c } = await owned(d, req, id, kinds);
  if (!ACTIVE.includes(task.status)) return task;
  const r = await cancelTask(d.store, task.id, c.appId, {
    afterCancel: (t) => d.runner.afterCancel(t),
    wake: d.wake,
  });
  if (!r) throw new GatewayError('not_found', `No task with id '${id.slice(0, 100)}'.`);
  return r;
}

/** OpenAI's Video object for a video task. */
function videoView(t: TaskRow): Record<string, unknown> {
  const r = t.request as StoredMediaRequest;
  const status =
    t.status === 'succeeded'
      ? 'completed'
      : t.status === 'running'
        ? 'in_progress'
        : ACTIVE.includes(t.status)
          ? 'queued'
          : 'failed';
  const err = t.error as { code?: string; message?: string } | null;
  return {
    id: t.id,
    object: 'video',
    model: t.alias,
    status,
    progress: t.status === 'succeeded' ? 100 : t.progress,
    created_at: sec(t.created_at),
    completed_at: t.status === 'succeeded' ? sec(t.completed_at) : null,
    expires_at: null,
    prompt: r.prompt ?? null,
    remixed_from_video_id: null,
    seconds: String(r.seconds ?? 4),
    size: r.size ?? '720x1280',
    error:
      status === 'failed'
        ? { code: err?.code ?? t.status, message: err?.message ?? `the task ${t.status}` }
        : null,
  };
}

/** new-api's task status words. */
function newApiStatus(t: TaskRow): string {
  return (
    { queued: 'QUEUED', submitted: 'SUBMITTED', running: 'IN_PROGRESS', succeeded: 'SUCCESS' }[
      t.status as string
    ] ?? 'FAILURE'
  );
}

function sunoTask(t: TaskRow): Record<string, unknown> {
  const items = (t.result as { items?: Array<{ url?: string; duration_s?: number }> } | null)?.items ?? [];
  const err = t.error as { message?: string } | null;
  const title = (t.request as StoredMediaRequest).extra?.title;
  return {
    task_id: t.id,
    action: 'MUSIC',
    status: newApiStatus(t),
    fail_reason: FINAL.has(t.status) && t.status !== 'succeeded' ? (err?.message ?? t.status) : '',
    submit_time: sec(t.created_at),
    start_time: sec((t.transitions.find((x) => x.status === 'submitted')?.at ?? null) as string | null),
    finish_time: sec(t.completed_at),
    progress: `${t.status === 'succeeded' ? 100 : t.progress}%`,
    data: items.map((it, i) => ({
      id: `${t.id}-${i}`,
      audio_url: it.url ?? '',
      status: 'complete',
      title: typeof title === 'string' ? title : '',
      metadata: { duration: it.duration_s ?? null },
    })),
  };
}

function newApiVideo(t: TaskRow): Record<string, unknown> {
  const res = t.result as {
    items?: Array<{ url?: string; duration_s?: number }>;
    upstream_content?: boolean;
  } | null;
  const err = t.error as { code?: string; message?: string } | null;
  const status =
    t.status === 'succeeded'
      ? 'succeeded'
      : t.status === 'running'
        ? 'processing'
        : ACTIVE.includes(t.status)
          ? 'queued'
          : 'failed';
  return {
    task_id: t.id,
    status,
    ...(t.status === 'succeeded'
      ? {
          url: res?.upstream_content ? `/v1/videos/${t.id}/content` : (res?.items?.[0]?.url ?? ''),
          format: 'mp4',
          metadata: { duration: res?.items?.[0]?.duration_s ?? null },
        }
      : {}),
    ...(status === 'failed' ? { error: { code: 502, message: err?.message ?? `the task ${t.status}` } } : {}),
  };
}

/** new-api answers in {code, message, data}; its errors too. */
function newApiError(reply: FastifyReply, e: unknown): FastifyReply {
  const ge = e instanceof GatewayError ? e : new GatewayError('internal_error', 'internal error');
  const { status, body } = renderError('newapi', ge);
  return reply.code(status).send(body);
}

function body(req: FastifyRequest): Record<string, unknown> {
  const b = req.body;
  if (b === undefined || b === null || typeof b !== 'object' || Array.isArray(b))
    throw new GatewayError('invalid_request', 'The request body must be a JSON object.');
  // Multipart (OpenAI's videos.create): the text fields are the body; a file (an image-to-video
  // reference) is refused clearly rather than dropped.
  const f = uploadsOf(b)[0];
  if (f)
    throw new GatewayError(
      'unsupported_parameter',
      `File uploads ('${f.field}') are not supported here; send text fields.`,
      { param: f.field },
    );
  return b as Record<string, unknown>;
}

export function registerMedia(app: FastifyInstance, d: MediaHttpDeps): void {
  // ---- images ----
  app.post('/v1/images/generations', async (req, reply) => {
    const b = body(req);
    const n = num(b, 'n', 1, 10);
    const rf = str(b, 'response_format');
    if (rf !== undefined && rf !== 'url' && rf !== 'b64_json')
      throw new GatewayError('invalid_request', "'response_format' must be 'url' or 'b64_json'.", {
        param: 'response_format',
      });
    const request: StoredMediaRequest = {
      prompt: str(b, 'prompt', { required: true })!,
      ...(n ? { n } : {}),
      ...(str(b, 'size') ? { size: str(b, 'size')! } : {}),
      ...(rf ? { response_format: rf as 'url' | 'b64_json' } : {}),
    };
    const async =
      (req.query as Record<string, string>).async === 'true' || req.headers['x-anima-async'] === 'true';
    return submit(d, req, reply, 'image', str(b, 'model'), request, b, async ({ task, deferred }, ctx) => {
      if (async || deferred)
        return reply
          .code(202)
          .header('location', `/v1/tasks/${task.id}`)
          .send({ ...taskView(task), task_id: task.id });
      // Synchronous, as OpenAI's: wait for the task (any instance's worker runs it), then answer.
      const gone = new AbortController();
      req.raw.once('close', () => gone.abort());
      const until = Math.min(new Date(task.deadline).getTime(), Date.now() + 300_000);
      let t = task;
      while (!FINAL.has(t.status) && Date.now() < until && !gone.signal.aborted) {
        await new Promise((r) => setTimeout(r, 50));
        t = (await d.store.byId(task.id)) ?? t;
      }
      void reply.header('x-anima-task-id', t.id);
      if (t.status === 'succeeded') {
        // The cost budget is trued up to what the job sold (0 when it failed: nothing was booked).
        const sold = (t.billing as { sale?: string } | null)?.sale;
        ctx.jobSaleMicros = sold ? Number(sold) : 0;
        const res = t.result as { items: unknown[] };
        return reply.send({ created: sec(t.completed_at), data: res.items });
      }
      if (!FINAL.has(t.status))
        return reply
          .code(202)
          .header('location', `/v1/tasks/${t.id}`)
          .send({ ...taskView(t), task_id: t.id });
      ctx.jobSaleMicros = 0;
      const err = t.error as { code?: string; message?: string } | null;
      const ge = new GatewayError(
        err?.code === 'insufficient_balance' ? 'insufficient_balance' : 'upstream_error',
        err?.message ?? `the image task ${t.status}`,
      );
      return reply
        .code(t.result_status && t.result_status >= 400 ? t.result_status : ge.status)
        .send({ error: { ...toOpenAIError(ge).error, code: err?.code ?? ge.code } });
    });
  });

  // ---- videos (OpenAI) ----
  const videoRequest = (b: Record<string, unknown>): StoredMediaRequest => {
    const seconds = num(b, 'seconds', 1, 600) ?? num(b, 'duration', 1, 600);
    return {
      prompt: str(b, 'prompt', { required: true })!,
      ...(seconds ? { seconds } : {}),
      ...(str(b, 'size') ? { size: str(b, 'size')! } : {}),
    };
  };
  app.post('/v1/videos', async (req, reply) => {
    const b = body(req);
    return submit(d, req, reply, 'video', str(b, 'model'), videoRequest(b), b, ({ task }) => videoView(task));
  });
  app.get('/v1/videos', async (req) => {
    const c = await caller(d, req);
    const rows = (await d.store.list(c.appId, { limit: 100 })).filter((t) => t.kind === 'video');
    return {
      object: 'list',
      data: rows.map(videoView),
      first_id: rows[0]?.id ?? null,
      last_id: rows.at(-1)?.id ?? null,
      has_more: false,
    };
  });
  app.get('/v1/videos/:id', async (req) =>
    videoView((await owned(d, req, (req.params as { id: string }).id, ['video'])).task),
  );
  app.delete('/v1/videos/:id', async (req) => {
    const t = await cancel(d, req, (req.params as { id: string }).id, ['video']);
    return { id: t.id, object: 'video.deleted', deleted: true };
  });
  app.get('/v1/videos/:id/content', async (req, reply) => {
    const { task } = await owned(d, req, (req.params as { id: string }).id, ['video']);
    if (task.status !== 'succeeded')
      throw new GatewayError('not_found', `Video '${task.id}' has no content yet (status ${task.status}).`);
    const res = task.result as { items: Array<{ url?: string }>; upstream_content?: boolean };
    let up: Response;
    if (res.upstream_content) up = await d.runner.content(task);
    else {
      const url = res.items[0]?.url;
      if (!url) throw new GatewayError('not_found', 'This video has no content.');
      // A URL the upstream handed back: held to the operator policy, as the channel itself is. (Node's
      // fetch takes the npm undici Agent; only their type packages differ, hence the cast.)
      up = await fetch(url, {
        signal: AbortSignal.timeout(120_000),
        dispatcher: (d.outbound ?? outboundPolicy()).dispatcher('operator'),
      } as unknown as RequestInit).catch((e: Error) => {
        throw new GatewayError(
          'upstream_error',
          `The result URL could not be fetched: ${(e.cause as Error | undefined)?.message ?? e.message}`,
        );
      });
      if (!up.ok) throw new GatewayError('upstream_error', `the result URL answered ${up.status}`);
    }
    const buf = Buffer.from(await up.arrayBuffer());
    return reply.header('content-type', up.headers.get('content-type') ?? 'video/mp4').send(buf);
  });

  // ---- music ----
  app.post('/v1/music', async (req, reply) => {
    const b = body(req);
    const n = num(b, 'n', 1, 4);
    const seconds = num(b, 'duration', 1, 600);
    const style = str(b, 'style', { max: 1000 });
    const request: StoredMediaRequest = {
      prompt: str(b, 'prompt', { required: true })!,
      ...(n ? { n } : {}),
      ...(seconds ? { seconds } : {}),
      ...(style ? { extra: { style } } : {}),
    };
    return submit(d, req, reply, 'music', str(b, 'model'), request, b, ({ task, existing }) =>
      reply
        .code(existing ? 200 : 202)
        .header('location', `/v1/music/${task.id}`)
        .send(taskView(task)),
    );
  });
  app.get('/v1/music/:id', async (req) =>
    taskView((await owned(d, req, (req.params as { id: string }).id, ['music'])).task),
  );

  // ---- generic task control ----
  app.post('/v1/tasks/:id/cancel', async (req) =>
    taskView(await cancel(d, req, (req.params as { id: string }).id)),
  );
  app.delete('/v1/tasks/:id', async (req) =>
    taskView(await cancel(d, req, (req.params as { id: string }).id)),
  );

  // ---- new-api compatibility ----
  app.post('/suno/submit/music', async (req, reply) => {
    try {
      const b = body(req);
      const prompt = str(b, 'prompt') ?? str(b, 'gpt_description_prompt');
      if (!prompt)
        throw new GatewayError('invalid_request', "'prompt' or 'gpt_description_prompt' is required.", {
          param: 'prompt',
        });
      const extra: Record<string, unknown> = {};
      for (const k of ['title', 'tags', 'make_instrumental', 'mv']) if (b[k] !== undefined) extra[k] = b[k];
      return await submit(
        d,
        req,
        reply,
        'music',
        str(b, 'model') ?? str(b, 'mv'),
        { prompt, extra },
        b,
        ({ task }) => reply.send({ code: 'success', message: '', data: task.id }),
      );
    } catch (e) {
      return newApiError(reply, e);
    }
  });
  app.post('/suno/fetch', async (req, reply) => {
    try {
      const b = body(req);
      const ids = b.ids;
      if (!Array.isArray(ids) || ids.length > 100 || !ids.every((x) => typeof x === 'string'))
        throw new GatewayError('invalid_request', "'ids' must be an array of at most 100 task ids.", {
          param: 'ids',
        });
      const c = await caller(d, req);
      const rows = (await Promise.all(ids.map((id) => d.store.get(id, c.appId)))).filter(
        (t): t is TaskRow => !!t && t.kind === 'music',
      );
      return reply.send({ code: 'success', message: '', data: rows.map(sunoTask) });
    } catch (e) {
      return newApiError(reply, e);
    }
  });
  app.get('/suno/fetch/:id', async (req, reply) => {
    try {
      const { task } = await owned(d, req, (req.params as { id: string }).id, ['music']);
      return reply.send({ code: 'success', message: '', data: sunoTask(task) });
    } catch (e) {
      return newApiError(reply, e);
    }
  });
  app.post('/v1/video/generations', async (req, reply) => {
    const b = body(req);
    const extra: Record<string, unknown> = {};
    for (const k of ['image', 'width', 'height', 'fps', 'seed', 'metadata'])
      if (b[k] !== undefined) extra[k] = b[k];
    const size =
      typeof b.width === 'number' && typeof b.height === 'number' ? `${b.width}x${b.height}` : undefined;
    const r = videoRequest(b);
    return submit(
      d,
      req,
      reply,
      'video',
      str(b, 'model'),
      { ...r, ...(size ? { size } : {}), ...(Object.keys(extra).length ? { extra } : {}) },
      b,
      ({ task }) => ({ task_id: task.id, status: 'queued' }),
    );
  });
  app.get('/v1/video/generations/:task_id', async (req) =>
    newApiVideo((await owned(d, req, (req.params as { task_id: string }).task_id, ['video'])).task),
  );
}
