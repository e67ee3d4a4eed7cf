/**
 * OpenAI's audio and image-edit operations on OpenAI channels: text to speech (bytes streamed back as they
 * come), transcription and translation (multipart uploads), and image edits (multipart with images and a
 * mask). Only `model` is rewritten; everything else reaches the upstream as the client sent it.
 *
 * Metering: speech by the characters of `input`; transcription by seconds of audio (the upstream's
 * `usage.seconds` or `duration`, or its token usage for token-billed models); image edits by images
 * returned plus any token usage. A whisper model is always asked for `verbose_json` (the one format
 * that carries the audio's duration for transcriptions and translations alike) and the client's format
 * (`json`, `text`, `srt`, `vtt`, `verbose_json`) is rendered here from it, so every transcript is billed
 * by its duration; other models get `json` for `text` (their token usage is in it). An answer with no
 * figures at all is still billed (the per-request price): nothing served goes unbilled.
 */
import { GatewayError } from '../../core/errors.js';
import type { Usage } from '../../core/usage.js';
import { bodyWithModel } from '../../lib/json-text.js';
import { toFormData, type Upload, uploadsOf } from '../../lib/multipart.js';
import { bearerHeaders, parseJsonObject } from '../shared.js';
import { noStream } from '../stream.js';
import type { BodyResult, Exchange, JsonResult, PreparedCall, UpstreamEndpoint } from '../types.js';
import { openaiUsage } from './wire.js';

type Obj = Record<string, any>;

const usageOf = (extra: Partial<Usage>): Usage => ({
  inputTokens: 0,
  outputTokens: 0,
  cachedTokens: 0,
  cacheWriteTokens: 0,
  ...extra,
});

/** Characters as a person counts them (code points), what speech is priced by. */
export function characters(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

const SPEECH_TYPES: Record<string, string> = {
  mp3: 'audio/mpeg',
  opus: 'audio/ogg',
  aac: 'audio/aac',
  flac: 'audio/flac',
  wav: 'audio/wav',
  pcm: 'audio/pcm',
};

/** POST /audio/speech: JSON in, audio bytes out (relayed chunk by chunk). */
export class SpeechExchange implements Exchange {
  readonly call: PreparedCall;
  private readonly chars: number;
  constructor(body: Obj, ep: UpstreamEndpoint, upstreamModel: string) {
    if (body.stream_format === 'sse')
      throw new GatewayError(
        'unsupported_parameter',
        "stream_format 'sse' is not supported; audio bytes stream as they are produced.",
        { param: 'stream_format' },
      );
    this.chars = characters(String(body.input ?? ''));
    this.call = {
      path: '/audio/speech',
      headers: bearerHeaders(ep, 'application/json'),
      body: bodyWithModel(body, upstreamModel),
      stream: false,
      bytes: true,
    };
  }
  /** The content type to answer with when the upstream names none. */
  static contentType(format: unknown): string {
    return SPEECH_TYPES[typeof format === 'string' ? format : 'mp3'] ?? 'application/octet-stream';
  }
  bytesUsage(): Usage {
    return usageOf({ characters: this.chars });
  }
  decodeJson(): JsonResult {
    throw new GatewayError('upstream_bad_response', 'speech answers are audio, not JSON');
  }
  streamTranslator = noStream('speech answers over SSE');
}

function fieldsExcept(body: Obj, model: string, over: Record<string, string> = {}): Array<[string, string]> {
  const out: Array<[string, string]> = [['model', model]];
  for (const [k, v] of Object.entries(body)) {
    if (k === 'model' || k in over || typeof v !== 'string') continue;
    out.push([k, v]);
  }
  for (const [k, v] of Object.entries(over)) out.push([k, v]);
  return out;
}

/** A multipart call's headers: no content type, which undici writes with the boundary it picks. */
function formHeaders(ep: UpstreamEndpoint): Record<string, string> {
  const h = bearerHeaders(ep);
  for (const k in h) if (k.toLowerCase() === 'content-type') delete h[k];
  return h;
}

function ts(sec: number, sep: ',' | '.'): string {
  const ms = Math.max(0, Math.round(sec * 1000));
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  const s = Math.floor((ms % 60_000) / 1000);
  const r = ms % 1000;
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(h)}:${p(m)}:${p(s)}${sep}${p(r, 3)}`;
}

/** Renders verbose_json segments as SubRip or WebVTT. */
export function renderSubtitles(
  segments: Array<{ start: number; end: number; text: string }>,
  format: 'srt' | 'vtt',
): string {
  if (format === 'srt')
    return segments
      .map((s, i) => `${i + 1}\n${ts(s.start, ',')} --> ${ts(s.end, ',')}\n${s.text.trim()}\n`)
      .join('\n');
  return (
    'WEBVTT\n\n' +
    segments.map((s) => `${ts(s.start, '.')} --> ${ts(s.end, '.')}\n${s.text.trim()}\n`).join('\n')
  );
}

/** Seconds of audio or tokens, from a transcription answer. */
export function transcriptionUsage(j: Obj): Usage | null {
  const u = j.usage;
  if (u && typeof u === 'object') {
    if (u.type === 'duration' && typeof u.seconds === 'number') return usageOf({ audioSeconds: u.seconds });
    if (u.type === 'tokens' || typeof u.input_tokens === 'number') {
      return usageOf({
        inputTokens: Number(u.input_tokens) || 0,
        outputTokens: Number(u.output_tokens) || 0,
      });
    }
  }
  if (typeof j.duration === 'number') return usageOf({ audioSeconds: j.duration });
  return null;
}

/** POST /audio/transcriptions and /audio/translations: a multipart upload in, JSON or text out. */
export class TranscriptionExchange implements Exchange {
  readonly call: PreparedCall;
  private readonly clientFormat: string;
  private readonly upstreamFormat: string;
  constructor(
    kind: 'transcriptions' | 'translations',
    body: Obj,
    ep: UpstreamEndpoint,
    upstreamModel: string,
  ) {
    this.clientFormat = typeof body.response_format === 'string' ? body.response_format : 'json';
    const whisper = /whisper/i.test(upstreamModel);
    this.upstreamFormat = whisper
      ? 'verbose_json'
      : this.clientFormat === 'text'
        ? 'json'
        : this.clientFormat;
    if (body.stream === 'true')
      throw new GatewayError(
        'unsupported_parameter',
        'Streamed transcription is not supported; send stream=false.',
        { param: 'stream' },
      );
    const files: Upload[] = uploadsOf(body).filter((f) => f.field === 'file');
    this.call = {
      path: `/audio/${kind}`,
      headers: formHeaders(ep),
      body: toFormData(fieldsExcept(body, upstreamModel, { response_format: this.upstreamFormat }), files),
      stream: false,
    };
  }
  decodeJson(text: string): JsonResult {
    const j = parseJsonObject(text);
    return { body: j, usage: transcriptionUsage(j) };
  }
  decodeBody(text: string, contentType: string): BodyResult {
    const isJson = contentType.includes('json');
    if (!isJson) {
      // A format the upstream rendered itself (srt/vtt from a non-whisper model): relayed as it is.
      if (this.upstreamFormat === 'json' || this.upstreamFormat === 'verbose_json')
        throw new GatewayError(
          'upstream_bad_response',
          `upstream answered ${contentType || 'no content type'} where JSON was asked for`,
        );
      return { payload: text, contentType: contentType || 'text/plain; charset=utf-8', usage: usageOf({}) };
    }
    const j = parseJsonObject(text);
    if (typeof j.text !== 'string')
      throw new GatewayError('upstream_bad_response', 'upstream transcription has no text');
    const usage = transcriptionUsage(j) ?? usageOf({});
    switch (this.clientFormat) {
      case 'text':
        return { payload: j.text + '\n', contentType: 'text/plain; charset=utf-8', usage };
      case 'srt':
      case 'vtt': {
        const segs = Array.isArray(j.segments)
          ? j.segments
          : [{ start: 0, end: Number(j.duration) || 0, text: j.text }];
        return {
          payload: renderSubtitles(segs, this.clientFormat),
          contentType:
            this.clientFormat === 'vtt' ? 'text/vtt; charset=utf-8' : 'application/x-subrip; charset=utf-8',
          usage,
        };
      }
      case 'json':
        if (this.upstreamFormat === 'verbose_json') {
          // What OpenAI's json format holds: the text, and the duration billed.
          const seconds = typeof j.duration === 'number' ? Math.ceil(j.duration) : undefined;
          return {
            payload: JSON.stringify({
              text: j.text,
              ...(seconds !== undefined ? { usage: { type: 'duration', seconds } } : {}),
            }),
            contentType: 'application/json',
            usage,
          };
        }
        return { payload: text, contentType: 'application/json', usage };
      default:
        return { payload: text, contentType: 'application/json', usage };
    }
  }
  streamTranslator = noStream('transcriptions');
}

/** POST /images/edits: images (and a mask) as multipart in, the image list out. */
export class ImageEditExchange implements Exchange {
  readonly call: PreparedCall;
  constructor(body: Obj, ep: UpstreamEndpoint, upstreamModel: string) {
    if (body.stream === 'true')
      throw new GatewayError(
        'unsupported_parameter',
        'Streamed image edits are not supported; send stream=false.',
        { param: 'stream' },
      );
    const files = uploadsOf(body).filter(
      (f) => f.field === 'image' || f.field === 'image[]' || f.field === 'mask',
    );
    this.call = {
      path: '/images/edits',
      headers: formHeaders(ep),
      body: toFormData(fieldsExcept(body, upstreamModel), files),
      stream: false,
    };
  }
  decodeJson(text: string): JsonResult {
    const j = parseJsonObject(text);
    if (!Array.isArray(j.data))
      throw new GatewayError('upstream_bad_response', 'upstream image answer has no data');
    const tokens = openaiUsage(
      j.usage
        ? {
            prompt_tokens: j.usage.input_tokens,
            completion_tokens: j.usage.output_tokens,
            total_tokens: j.usage.total_tokens,
          }
        : null,
    );
    return { body: j, usage: { ...(tokens ?? usageOf({})), images: j.data.length } };
  }
  streamTranslator = noStream('image edits');
}
