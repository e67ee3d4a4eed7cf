/**
 * Fake media generation: the job book behind the fake OpenAI server's images and videos routes, and a
 * stand-alone fake of the submit/poll style most video and music vendors use ("jobs" provider).
 *
 * OpenAI wire format (what the official `openai` client sends and expects):
 *   POST /v1/images/generations {prompt, model, n, size, response_format} -> {created, data: [{url | b64_json, revised_prompt}]}
 *   POST /v1/images/edits (multipart/form-data: image or image[] (files), mask?, prompt, model, n, size, response_format)
 *     -> {created, data: [...]} like generations; gpt-image-* models always answer b64_json and add usage,
 *        background, output_format, quality and size; dall-e-2 (the default model) takes exactly one image
 *   POST /v1/videos (multipart/form-data or JSON: prompt, model, seconds, size) -> Video {id, object: 'video', status: 'queued', progress: 0, ...}
 *   GET  /v1/videos/{id} -> Video (status queued | in_progress | completed | failed, progress 0..100)
 *   GET  /v1/videos/{id}/content -> the bytes (video/mp4)
 *   DELETE /v1/videos/{id} -> {id, object: 'video.deleted', deleted: true}
 *
 * Jobs vendor (the generic submit/poll style):
 *   POST /v1/jobs {kind: image|video|music, model, prompt, duration?, n?} -> 201 {job_id, status: 'pending'}
 *   GET  /v1/jobs/{id} -> {job_id, status: pending|running|succeeded|failed|cancelled, progress, results: [{url, duration_s?}], error?}
 *   POST /v1/jobs/{id}/cancel -> {job_id, status: 'cancelled'}
 *   GET  /files/{id} -> the bytes
 *
 * Switches (`media` on the server object): jobMs (time a job takes), failSubmit (next N submits answer
 * 500), failMidway (jobs fail at 50%), neverFinish (jobs stay running), noContent (a finished job has no
 * result), pollLatencyMs (a poll takes this long: lets a test see overlapping polls of one job).
 */
import {
  type FakeContext,
  type FakeOptions,
  type FakeUpstream,
  isObject,
  type ProviderSpec,
  rid,
  sendError,
  sendJson,
  startFakeServer,
} from './common.js';

export interface MediaSwitches {
  jobMs: number;
  failSubmit: number;
  failMidway: boolean;
  neverFinish: boolean;
  noContent: boolean;
  pollLatencyMs: number;
}

export interface MediaStats {
  submits: number;
  polls: number;
  cancels: number;
  /** Highest number of polls of one job in flight at once (two gateway instances must never overlap). */
  maxConcurrentPolls: number;
}

interface Job {
  id: string;
  kind: 'image' | 'video' | 'music';
  model: string;
  prompt: string;
  seconds: number;
  n: number;
  size: string;
  createdAt: number;
  cancelled: boolean;
  deleted: boolean;
  inFlightPolls: number;
}

export class JobBook {
  readonly media: MediaSwitches = {
    jobMs: 300,
    failSubmit: 0,
    failMidway: false,
    neverFinish: false,
    noContent: false,
    pollLatencyMs: 0,
  };
  readonly mediaStats: MediaStats = { submits: 0, polls: 0, cancels: 0, maxConcurrentPolls: 0 };
  private readonly jobs = new Map<string, Job>();

  constructor(private readonly baseUrl: () => string) {}

  setMedia(s: Partial<MediaSwitches>): void {
    Object.assign(this.media, s);
  }

  resetMedia(): void {
    Object.assign(this.media, {
      jobMs: 300,
      failSubmit: 0,
      failMidway: false,
      neverFinish: false,
      noContent: false,
      pollLatencyMs: 0,
    });
    Object.assign(this.mediaStats, { submits: 0, polls: 0, cancels: 0, maxConcurrentPolls: 0 });
  }

  /** Counts a submit; true when the submit must fail (failSubmit switch). */
  submitFails(): boolean {
    this.mediaStats.submits++;
    if (this.media.failSubmit > 0) {
      this.media.failSubmit--;
      return true;
    }
    return false;
  }

  create(kind: Job['kind'], b: Record<string, unknown>): Job {
    const j: Job = {
      id: (kind === 'video' ? 'video_' : 'job_') + rid(20),
      kind,
      model: typeof b.model === 'string' ? b.model : 'fake-media',
      prompt: typeof b.prompt === 'string' ? b.prompt : '',
      seconds: Number(b.seconds ?? b.duration ?? (kind === 'image' ? 0 : 4)) || 4,
      n: Number.isInteger(b.n) && (b.n as number) > 0 ? (b.n as number) : 1,
      size: typeof b.size === 'string' ? b.size : '720x1280',
      createdAt: Date.now(),
      cancelled: false,
      deleted: false,
      inFlightPolls: 0,
    };
    this.jobs.set(j.id, j);
    return j;
  }

  get(id: string): Job | undefined {
    const j = this.jobs.get(id);
    return j && !j.deleted ? j : undefined;
  }

  /** The job's state now: progress grows with time; the switches decide how it ends. */
  state(j: Job): { status: 'pending' | 'running' | 'succeeded' | 'failed' | 'cancelled'; progress: number } {
    if (j.cancelled) return { status: 'cancelled', progress: 0 };
    const p = Math.min(100, Math.floor(((Date.now() - j.createdAt) / Math.max(1, this.media.jobMs)) * 100));
    if (this.media.failMidway && p >= 50) return { status: 'failed', progress: 50 };
    if (this.media.neverFinish) return { status: p === 0 ? 'pending' : 'running', progress: Math.min(p, 99) };
    if (p >= 100) return { status: 'succeeded', progress: 100 };
    return { status: p === 0 ? 'pending' : 'running', progress: p };
  }

  async poll<T>(j: Job, answer: () => T): Promise<T> {
    this.mediaStats.polls++;
    j.inFlightPolls++;
    this.mediaStats.maxConcurrentPolls = Math.max(this.mediaStats.maxConcurrentPolls, j.inFlightPolls);
    try {
      if (this.media.pollLatencyMs) await new Promise((r) => setTimeout(r, this.media.pollLatencyMs));
      return answer();
    } finally {
      j.inFlightPolls--;
    }
  }

  cancel(j: Job): void {
    this.mediaStats.cancels++;
    j.cancelled = true;
  }

  results(j: Job): Array<{ url: string; duration_s?: number }> {
    if (this.media.noContent) return [];
    const n = j.kind === 'music' ? 2 : j.n;
    return Array.from({ length: n }, (_, i) => ({
      url: `${this.baseUrl()}/files/${j.id}-${i}`,
      ...(j.kind === 'image' ? {} : { duration_s: j.seconds }),
    }));
  }
}

function videoObject(book: JobBook, j: Job): Record<string, unknown> {
  const s = book.state(j);
  const status =
    s.status === 'succeeded'
      ? 'completed'
      : s.status === 'failed' || s.status === 'cancelled'
        ? 'failed'
        : s.status === 'pending'
          ? 'queued'
          : 'in_progress';
  return {
    id: j.id,
    object: 'video',
    model: j.model,
    status,
    progress: s.progress,
    created_at: Math.floor(j.createdAt / 1000),
    completed_at: status === 'completed' ? Math.floor(Date.now() / 1000) : null,
    expires_at: null,
    prompt: j.prompt,
    remixed_from_video_id: null,
    seconds: String(j.seconds),
    size: j.size,
    error:
      status === 'failed'
        ? {
            code: s.status === 'cancelled' ? 'cancelled' : 'generation_failed',
            message: 'the fake job failed midway',
          }
        : null,
  };
}

const FAKE_BYTES = Buffer.from('\x00\x00\x00\x18ftypmp42fake-media-content', 'binary');

/** The `data` of an images answer: one URL (or the bytes in base64) per result, the prompt as revised_prompt. */
function imageData(book: JobBook, j: Job, b64: boolean): Array<Record<string, string>> {
  if (book.media.noContent) return [];
  return book
    .results(j)
    .map((r): Record<string, string> =>
      b64
        ? { b64_json: FAKE_BYTES.toString('base64'), revised_prompt: j.prompt }
        : { url: r.url, revised_prompt: j.prompt },
    );
}

/** Fake token counts of gpt-image models: per input image, and per output image. */
const IMAGE_IN_TOKENS = 323;
const IMAGE_OUT_TOKENS = 272;

/** POST /v1/images/edits: multipart with one or more images, an optional mask and a prompt. */
function imageEdits(ctx: FakeContext, spec: ProviderSpec, book: JobBook): void {
  const form = ctx.form;
  if (!form) return sendError(ctx, spec, 400, 'Invalid Content-Type header (expected multipart/form-data)');
  if (book.submitFails()) return sendError(ctx, spec, 500, 'fake image backend failed');
  const images = form.filesOf('image');
  if (!images.length) return sendError(ctx, spec, 400, "Missing required parameter: 'image'.");
  const prompt = form.get('prompt');
  if (!prompt) return sendError(ctx, spec, 400, "Missing required parameter: 'prompt'.");
  const model = form.get('model') ?? 'dall-e-2';
  const gptImage = model.startsWith('gpt-image');
  if (!gptImage && images.length > 1)
    return sendError(ctx, spec, 400, `${model} takes exactly one image to edit, got ${images.length}`);
  const n = Number(form.get('n') ?? 1);
  if (!Number.isInteger(n) || n < 1 || n > 10)
    return sendError(ctx, spec, 400, "Invalid 'n': expected an integer between 1 and 10.");
  const format = form.get('response_format');
  if (format !== undefined && format !== 'url' && format !== 'b64_json')
    return sendError(
      ctx,
      spec,
      400,
      `Invalid 'response_format': '${format}'. Supported values are: 'url' and 'b64_json'.`,
    );
  const size = form.get('size') ?? '1024x1024';
  const j = book.create('image', { model, prompt, n, size });
  const data = imageData(book, j, gptImage || format === 'b64_json');
  if (!gptImage) return sendJson(ctx, 200, { created: Math.floor(Date.now() / 1000), data });
  const textTokens = Math.ceil(prompt.length / 4);
  const imageTokens = images.length * IMAGE_IN_TOKENS + (form.filesOf('mask').length ? IMAGE_IN_TOKENS : 0);
  const out = data.length * IMAGE_OUT_TOKENS;
  sendJson(ctx, 200, {
    created: Math.floor(Date.now() / 1000),
    background: 'opaque',
    data,
    output_format: 'png',
    quality: 'medium',
    size,
    usage: {
      input_tokens: textTokens + imageTokens,
      input_tokens_details: { image_tokens: imageTokens, text_tokens: textTokens },
      output_tokens: out,
      output_tokens_details: { image_tokens: out, text_tokens: 0 },
      total_tokens: textTokens + imageTokens + out,
    },
  });
}

/** The OpenAI images and videos routes; false when the path is not one of them. */
export async function openaiMediaRoute(
  ctx: FakeContext,
  spec: ProviderSpec,
  book: JobBook,
): Promise<boolean> {
  const { method, path } = ctx;
  // JSON, or the summary of a multipart body (text fields as strings; see multipartSummary).
  const body = isObject(ctx.body) ? ctx.body : {};
  if (method === 'POST' && path === '/v1/images/generations') {
    if (book.submitFails()) return (sendError(ctx, spec, 500, 'fake image backend failed'), true);
    if (typeof body.prompt !== 'string' || !body.prompt)
      return (sendError(ctx, spec, 400, 'prompt is required'), true);
    const j = book.create('image', body);
    sendJson(ctx, 200, {
      created: Math.floor(Date.now() / 1000),
      data: imageData(book, j, body.response_format === 'b64_json'),
    });
    return true;
  }
  if (method === 'POST' && path === '/v1/images/edits') return (imageEdits(ctx, spec, book), true);
  if (method === 'POST' && path === '/v1/videos') {
    if (book.submitFails()) return (sendError(ctx, spec, 500, 'fake video backend failed'), true);
    if (typeof body.prompt !== 'string' || !body.prompt)
      return (sendError(ctx, spec, 400, 'prompt is required'), true);
    sendJson(ctx, 200, videoObject(book, book.create('video', body)));
    return true;
  }
  const m = /^\/v1\/videos\/([^/]+)(\/content)?$/.exec(path);
  if (m) {
    const j = book.get(decodeURIComponent(m[1]!));
    if (!j) return (sendError(ctx, spec, 404, `No video found with id '${m[1]}'`), true);
    if (method === 'GET' && !m[2]) {
      sendJson(ctx, 200, await book.poll(j, () => videoObject(book, j)));
      return true;
    }
    if (method === 'GET' && m[2]) {
      const s = book.state(j);
      if (s.status !== 'succeeded' || book.media.noContent)
        return (sendError(ctx, spec, 404, 'Video is not ready or has no content'), true);
      ctx.res.writeHead(200, { 'content-type': 'video/mp4', 'content-length': FAKE_BYTES.length });
      ctx.res.end(FAKE_BYTES);
      return true;
    }
    if (method === 'DELETE' && !m[2]) {
      book.cancel(j);
      j.deleted = true;
      sendJson(ctx, 200, { id: j.id, object: 'video.deleted', deleted: true });
      return true;
    }
  }
  if (method === 'GET' && path.startsWith('/files/')) {
    ctx.res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': FAKE_BYTES.length,
    });
    ctx.res.end(FAKE_BYTES);
    return true;
  }
  return false;
}

function jobsErrorBody(status: number, message: string, code?: string): unknown {
  return { error: { code: code ?? (status >= 500 ? 'internal' : 'bad_request'), message } };
}

function jobsSpec(book: JobBook): ProviderSpec {
  return {
    defaultName: 'fake-jobs',
    requestIdHeader: 'x-request-id',
    errorBody: jobsErrorBody,
    checkAuth: (req, key) =>
      key && req.headers.authorization !== `Bearer ${key}` ? 'invalid api key' : null,
    async route(ctx, spec) {
      const { method, path } = ctx;
      const b = isObject(ctx.body) ? ctx.body : {};
      if (method === 'POST' && path === '/v1/jobs') {
        if (book.submitFails())
          return (sendError(ctx, spec, 500, 'fake vendor failed to accept the job'), true);
        if (b.kind !== 'image' && b.kind !== 'video' && b.kind !== 'music')
          return (sendError(ctx, spec, 400, 'kind must be image, video or music'), true);
        if (typeof b.prompt !== 'string' || !b.prompt)
          return (sendError(ctx, spec, 400, 'prompt is required'), true);
        const j = book.create(b.kind, b);
        sendJson(ctx, 201, { job_id: j.id, status: 'pending' });
        return true;
      }
      const m = /^\/v1\/jobs\/([^/]+)(\/cancel)?$/.exec(path);
      if (m) {
        const j = book.get(decodeURIComponent(m[1]!));
        if (!j) return (sendError(ctx, spec, 404, 'no such job'), true);
        if (method === 'GET' && !m[2]) {
          const out = await book.poll(j, () => {
            const s = book.state(j);
            return {
              job_id: j.id,
              status: s.status,
              progress: s.progress,
              results: s.status === 'succeeded' ? book.results(j) : [],
              ...(s.status === 'failed'
                ? { error: { code: 'generation_failed', message: 'the fake job failed midway' } }
                : {}),
            };
          });
          sendJson(ctx, 200, out);
          return true;
        }
        if (method === 'POST' && m[2]) {
          book.cancel(j);
          sendJson(ctx, 200, { job_id: j.id, status: 'cancelled' });
          return true;
        }
      }
      if (method === 'GET' && path.startsWith('/files/')) {
        ctx.res.writeHead(200, {
          'content-type': 'application/octet-stream',
          'content-length': FAKE_BYTES.length,
        });
        ctx.res.end(FAKE_BYTES);
        return true;
      }
      return false;
    },
  };
}

export type FakeMediaUpstream = FakeUpstream & { book: JobBook };

/** Starts the fake jobs vendor on 127.0.0.1. */
export async function startFakeJobs(opts: FakeOptions = {}): Promise<FakeMediaUpstream> {
  let url = '';
  const book = new JobBook(() => url);
  const up = await startFakeServer(jobsSpec(book), opts);
  url = up.url;
  return Object.assign(up, { book });
}
