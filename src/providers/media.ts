/**
 * Media generation adapters: submit a job to a channel, poll it, cancel it, fetch its content.
 *
 *   openai  images: POST {base}/images/generations (synchronous: the answer is the result)
 *           videos: POST {base}/videos (multipart) -> {id}; GET {base}/videos/{id}; GET …/content; DELETE
 *   jobs    the submit/poll style of most video and music vendors:
 *           POST {base}/jobs {kind, model, prompt, duration?, n?, size?} -> {job_id};
 *           GET {base}/jobs/{id} -> {status: pending|running|succeeded|failed|cancelled, progress, results: [{url, duration_s?}], error?};
 *           POST {base}/jobs/{id}/cancel
 *
 * Every failure is an UpstreamFailure from the same classification table as chat, so a submit falls
 * back along the alias chain by the same rules and the breaker counts it the same way.
 */
import { GatewayError } from '../core/errors.js';
import { redact, secretsOf } from '../core/redact.js';
import { type UpstreamFailure, classifyHttp, classifyTransport, failure, redactFailure } from './classify.js';
import type { UpstreamEndpoint } from './types.js';

export type MediaKind = 'image' | 'video' | 'music';

export interface MediaRequest {
  kind: MediaKind;
  /** The upstream model (from the alias chain). */
  model: string;
  prompt: string;
  n?: number;
  seconds?: number;
  size?: string;
  responseFormat?: 'url' | 'b64_json';
  /** Other fields the client sent (style, negative_prompt …): passed through to vendors that take them. */
  extra?: Record<string, unknown>;
}

export interface MediaItem {
  url?: string;
  b64_json?: string;
  revised_prompt?: string;
  duration_s?: number;
}

export interface MediaResult {
  items: MediaItem[];
  /** What is billed: images, seconds of video, music tracks. */
  metered: { images?: number; videoSeconds?: number; tracks?: number };
  /** The content is fetched from the upstream through the gateway (OpenAI videos), not from a URL. */
  upstreamContent?: boolean;
}

export type SubmitResult = { done: true; result: MediaResult } | { done: false; upstreamId: string };

export type PollResult =
  | { state: 'pending' | 'running'; progress: number }
  | { state: 'succeeded'; result: MediaResult }
  | { state: 'failed' | 'cancelled'; error: { code: string; message: string } };

/**
 * An upstream call that failed, classified. Built only through `failed`, so what the upstream said is
 * redacted with the channel's secrets before it can reach a task row, a poll answer or a log line.
 */
export class MediaCallError extends Error {
  constructor(readonly failure: UpstreamFailure) {
    super(failure.message);
  }
}

const failed = (ep: UpstreamEndpoint, f: UpstreamFailure) =>
  new MediaCallError(redactFailure(f, secretsOf(ep)));

export interface MediaAdapter {
  supports(kind: MediaKind): boolean;
  submit(ep: UpstreamEndpoint, req: MediaRequest, signal: AbortSignal): Promise<SubmitResult>;
  poll(ep: UpstreamEndpoint, upstreamId: string, kind: MediaKind, signal: AbortSignal): Promise<PollResult>;
  cancel(ep: UpstreamEndpoint, upstreamId: string, signal: AbortSignal): Promise<void>;
  /** The finished content as an upstream response (only where `upstreamContent`). */
  content?(ep: UpstreamEndpoint, upstreamId: string, signal: AbortSignal): Promise<Response>;
}

/**
 * A channel is an operator URL: its connections answer to the outbound policy at connect time (resolve,
 * check, pin), as the chat transport's do; the runner hands the policy's dispatcher in. Node's fetch takes
 * the npm undici Agent; only their type packages differ, hence the spread of an untyped option.
 */
const dispatcherOf = (ep: UpstreamEndpoint): Record<string, unknown> =>
  ep.dispatcher ? { dispatcher: ep.dispatcher } : {};

const base = (ep: UpstreamEndpoint) => ep.baseUrl.replace(/\/+$/, '');
const auth = (ep: UpstreamEndpoint): Record<string, string> => ({
  ...ep.headers,
  ...(ep.credential ? { authorization: `Bearer ${ep.credential}` } : {}),
});

async function call(
  ep: UpstreamEndpoint,
  url: string,
  init: RequestInit,
  signal: AbortSignal,
): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(url, {
      ...init,
      headers: { ...auth(ep), ...(init.headers as Record<string, string>) },
      signal,
      ...dispatcherOf(ep),
    } as RequestInit);
  } catch (e) {
    throw failed(
      ep,
      signal.aborted ? failure('total_timeout', 'media call timed out') : classifyTransport(e, 'connect'),
    );
  }
  const text = await res.text().catch(() => '');
  if (res.status < 200 || res.status >= 300) {
    throw failed(ep, classifyHttp('openai', res.status, Object.fromEntries(res.headers), text));
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw failed(
      ep,
      failure(
        'bad_response',
        `upstream answered ${res.status} with a body that is not JSON: ${text.slice(0, 120)}`,
      ),
    );
  }
}

const obj = (v: unknown): Record<string, unknown> =>
  v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
const bad = (ep: UpstreamEndpoint, msg: string) => failed(ep, failure('bad_response', msg));

export const openaiMedia: MediaAdapter = {
  supports: (kind) => kind === 'image' || kind === 'video',
  async submit(ep, req, signal) {
    if (req.kind === 'image') {
      const b = await call(
        ep,
        `${base(ep)}/images/generations`,
        {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            ...req.extra,
            prompt: req.prompt,
            model: req.model,
            ...(req.n ? { n: req.n } : {}),
            ...(req.size ? { size: req.size } : {}),
            ...(req.responseFormat ? { response_format: req.responseFormat } : {}),
          }),
        },
        signal,
      );
      const data = obj(b).data;
      if (!Array.isArray(data)) throw bad(ep, 'images answer has no data array');
      const items = data.map((d) => {
        const o = obj(d);
        return {
          ...(typeof o.url === 'string' ? { url: o.url } : {}),
          ...(typeof o.b64_json === 'string' ? { b64_json: o.b64_json } : {}),
          ...(typeof o.revised_prompt === 'string' ? { revised_prompt: o.revised_prompt } : {}),
        };
      });
      return { done: true, result: { items, metered: { images: items.length } } };
    }
    if (req.kind !== 'video')
      throw new GatewayError('unsupported_operation', `OpenAI channels do not generate ${req.kind}`);
    const form = new FormData();
    form.set('prompt', req.prompt);
    form.set('model', req.model);
    if (req.seconds) form.set('seconds', String(req.seconds));
    if (req.size) form.set('size', req.size);
    const v = obj(await call(ep, `${base(ep)}/videos`, { method: 'POST', body: form }, signal));
    if (typeof v.id !== 'string') throw bad(ep, 'video answer has no id');
    return { done: false, upstreamId: v.id };
  },
  async poll(ep, id, _kind, signal) {
    const v = obj(await call(ep, `${base(ep)}/videos/${encodeURIComponent(id)}`, { method: 'GET' }, signal));
    const progress = typeof v.progress === 'number' ? Math.max(0, Math.min(100, Math.round(v.progress))) : 0;
    switch (v.status) {
      case 'queued':
        return { state: 'pending', progress };
      case 'in_progress':
        return { state: 'running', progress };
      case 'completed': {
        const seconds = Number(v.seconds ?? 0);
        return {
          state: 'succeeded',
          result: {
            items: [{ duration_s: seconds }],
            metered: { videoSeconds: seconds },
            upstreamContent: true,
          },
        };
      }
      case 'failed': {
        const e = obj(v.error);
        return {
          state: 'failed',
          error: {
            code: typeof e.code === 'string' ? redact(e.code, secretsOf(ep)) : 'generation_failed',
            message: redact(
              typeof e.message === 'string' ? e.message : 'the upstream video job failed',
              secretsOf(ep),
            ),
          },
        };
      }
      default:
        throw bad(ep, `unknown video status ${JSON.stringify(v.status)}`);
    }
  },
  async cancel(ep, id, signal) {
    await call(ep, `${base(ep)}/videos/${encodeURIComponent(id)}`, { method: 'DELETE' }, signal);
  },
  async content(ep, id, signal) {
    const res = await fetch(`${base(ep)}/videos/${encodeURIComponent(id)}/content`, {
      headers: auth(ep),
      signal,
      ...dispatcherOf(ep),
    } as RequestInit);
    if (!res.ok)
      throw failed(
        ep,
        classifyHttp('openai', res.status, Object.fromEntries(res.headers), await res.text().catch(() => '')),
      );
    return res;
  },
};

export const jobsMedia: MediaAdapter = {
  supports: () => true,
  async submit(ep, req, signal) {
    const b = obj(
      await call(
        ep,
        `${base(ep)}/jobs`,
        {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            ...req.extra,
            kind: req.kind,
            model: req.model,
            prompt: req.prompt,
            ...(req.seconds ? { duration: req.seconds } : {}),
            ...(req.n ? { n: req.n } : {}),
            ...(req.size ? { size: req.size } : {}),
          }),
        },
        signal,
      ),
    );
    if (typeof b.job_id !== 'string') throw bad(ep, 'job answer has no job_id');
    return { done: false, upstreamId: b.job_id };
  },
  async poll(ep, id, kind, signal) {
    const b = obj(await call(ep, `${base(ep)}/jobs/${encodeURIComponent(id)}`, { method: 'GET' }, signal));
    const progress = typeof b.progress === 'number' ? Math.max(0, Math.min(100, Math.round(b.progress))) : 0;
    switch (b.status) {
      case 'pending':
      case 'running':
        return { state: b.status, progress };
      case 'succeeded': {
        const items = (Array.isArray(b.results) ? b.results : []).map(obj).map((r) => ({
          ...(typeof r.url === 'string' ? { url: r.url } : {}),
          ...(typeof r.duration_s === 'number' ? { duration_s: r.duration_s } : {}),
        }));
        const seconds = items.reduce((s, i) => s + (i.duration_s ?? 0), 0);
        const metered =
          kind === 'image'
            ? { images: items.length }
            : kind === 'video'
              ? { videoSeconds: seconds }
              : { tracks: items.length };
        return { state: 'succeeded', result: { items, metered } };
      }
      case 'failed':
      case 'cancelled': {
        const e = obj(b.error);
        return {
          state: b.status,
          error: {
            code: typeof e.code === 'string' ? redact(e.code, secretsOf(ep)) : String(b.status),
            message: redact(
              typeof e.message === 'string' ? e.message : `the upstream job ${b.status}`,
              secretsOf(ep),
            ),
          },
        };
      }
      default:
        throw bad(ep, `unknown job status ${JSON.stringify(b.status)}`);
    }
  },
  async cancel(ep, id, signal) {
    await call(ep, `${base(ep)}/jobs/${encodeURIComponent(id)}/cancel`, { method: 'POST' }, signal);
  },
};

export function mediaAdapter(provider: string): MediaAdapter | null {
  return provider === 'openai' ? openaiMedia : provider === 'jobs' ? jobsMedia : null;
}
