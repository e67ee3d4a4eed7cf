/**
 * Fake OpenAI audio routes, served by the fake OpenAI server in the official `openai` client's wire format.
 *
 *   POST /v1/audio/speech {model, input, voice, response_format?, speed?, stream_format?}
 *     -> the audio bytes, sent in `chunks` pieces with `Transfer-Encoding: chunked` (honours chunkDelayMs,
 *        cutAfterChunks, hangAfterChunks). Content type per response_format: mp3 audio/mpeg (default),
 *        opus audio/opus, aac audio/aac, flac audio/flac, wav audio/wav, pcm audio/pcm. The length depends only on
 *        the input and speed: 10 ms of 24 kHz 16-bit mono PCM per character at speed 1 (480 bytes), a valid
 *        44-byte RIFF header before it for wav; the compressed formats are the format's magic bytes ('ID3',
 *        'OggS', ADTS, 'fLaC') followed by a deterministic 1/8 (flac 1/2) of that.
 *     -> with stream_format 'sse' (not on tts-1 / tts-1-hd): `data: {"type":"speech.audio.delta","audio":<base64>}`
 *        events, then `data: {"type":"speech.audio.done","usage":{input_tokens, output_tokens, total_tokens}}`.
 *   POST /v1/audio/transcriptions, POST /v1/audio/translations (multipart/form-data: file, model,
 *     response_format?, language?, prompt?, timestamp_granularities[]?, stream?)
 *     -> text "Transcribed <N> bytes of <filename> by <name>" ("Translated ..." for translations); the audio lasts
 *        one second per 16,000 bytes (at least 1). response_format json (default) {text, usage}, text, srt, vtt,
 *        verbose_json {task, language, duration, text, segments, words?, usage}. Usage is
 *        {type: 'duration', seconds} for whisper models and {type: 'tokens', ...} for gpt-* models (which, like the
 *        real ones, accept only json and text, and alone stream: `transcript.text.delta` events, then
 *        `transcript.text.done` with the usage, then `data: [DONE]`). Translations answer without usage, in
 *        English.
 * The recorded request body (`requests`) of a multipart request is its fields and its files' sizes, not the bytes.
 */
import {
  ChunkWriter,
  chunkText,
  type FakeContext,
  isObject,
  type MultipartForm,
  type ProviderSpec,
  sendError,
  sendJson,
  SseWriter,
  splitWords,
  wordCount,
} from './common.js';

// ---- speech ----

const SAMPLE_RATE = 24_000;
/** PCM samples per input character at speed 1 (10 ms). */
const SAMPLES_PER_CHAR = 240;

const CONTENT_TYPES: Record<string, string> = {
  mp3: 'audio/mpeg',
  opus: 'audio/opus',
  aac: 'audio/aac',
  flac: 'audio/flac',
  wav: 'audio/wav',
  pcm: 'audio/pcm',
};

/** Leading bytes of each compressed format and how much smaller than the PCM it is. */
const COMPRESSED: Record<string, { magic: Buffer; ratio: number }> = {
  mp3: { magic: Buffer.from([0x49, 0x44, 0x33, 0x04, 0, 0, 0, 0, 0, 0]), ratio: 8 }, // empty ID3v2.4 tag
  opus: { magic: Buffer.from('OggS\x00\x02', 'latin1'), ratio: 8 },
  aac: { magic: Buffer.from([0xff, 0xf1, 0x50, 0x80]), ratio: 8 }, // ADTS header start
  flac: { magic: Buffer.from('fLaC', 'latin1'), ratio: 2 },
};

/** A 440 Hz tone, quiet: 16-bit little-endian mono PCM whose length depends on the input length and speed. */
function pcmFor(input: string, speed: number): Buffer {
  const samples = Math.max(1, Math.round((Array.from(input).length * SAMPLES_PER_CHAR) / speed));
  const buf = Buffer.alloc(samples * 2);
  for (let i = 0; i < samples; i++)
    buf.writeInt16LE(Math.round(Math.sin((2 * Math.PI * 440 * i) / SAMPLE_RATE) * 3000), i * 2);
  return buf;
}

/** The 44-byte RIFF/WAVE header for `dataBytes` of 24 kHz 16-bit mono PCM. */
function wavHeader(dataBytes: number): Buffer {
  const h = Buffer.alloc(44);
  h.write('RIFF', 0, 'latin1');
  h.writeUInt32LE(36 + dataBytes, 4);
  h.write('WAVEfmt ', 8, 'latin1');
  h.writeUInt32LE(16, 16); // fmt chunk size
  h.writeUInt16LE(1, 20); // PCM
  h.writeUInt16LE(1, 22); // mono
  h.writeUInt32LE(SAMPLE_RATE, 24);
  h.writeUInt32LE(SAMPLE_RATE * 2, 28); // byte rate
  h.writeUInt16LE(2, 32); // block align
  h.writeUInt16LE(16, 34); // bits per sample
  h.write('data', 36, 'latin1');
  h.writeUInt32LE(dataBytes, 40);
  return h;
}

/** The whole audio file for `input` in `format`. */
export function fakeSpeech(input: string, format: string, speed = 1): Buffer {
  const pcm = pcmFor(input, speed);
  if (format === 'pcm') return pcm;
  if (format === 'wav') return Buffer.concat([wavHeader(pcm.length), pcm]);
  const c = COMPRESSED[format] ?? COMPRESSED.mp3!;
  const body = Buffer.alloc(Math.ceil(pcm.length / c.ratio));
  for (let i = 0; i < body.length; i++) body[i] = pcm[i * c.ratio]!;
  return Buffer.concat([c.magic, body]);
}

/** Split `buf` into `n` pieces of (nearly) equal size; fewer when it is shorter than `n` bytes. */
function splitBytes(buf: Buffer, n: number): Buffer[] {
  const out: Buffer[] = [];
  const k = Math.max(1, Math.min(n, buf.length));
  for (let i = 0; i < k; i++)
    out.push(buf.subarray(Math.floor((i * buf.length) / k), Math.floor(((i + 1) * buf.length) / k)));
  return out;
}

async function speech(ctx: FakeContext, spec: ProviderSpec): Promise<void> {
  const b = ctx.body;
  if (!ctx.bodyIsJson || !isObject(b))
    return sendError(ctx, spec, 400, 'We could not parse the JSON body of your request.');
  if (typeof b.model !== 'string' || !b.model)
    return sendError(ctx, spec, 400, "Missing required parameter: 'model'.");
  if (typeof b.input !== 'string' || !b.input)
    return sendError(ctx, spec, 400, "Missing required parameter: 'input'.");
  if (b.input.length > 4096)
    return sendError(
      ctx,
      spec,
      400,
      `Invalid 'input': string too long. Expected a string with maximum length 4096, but got a string with length ${b.input.length} instead.`,
    );
  if (typeof b.voice !== 'string' && !(isObject(b.voice) && typeof b.voice.id === 'string'))
    return sendError(ctx, spec, 400, "Missing required parameter: 'voice'.");
  const format = b.response_format ?? 'mp3';
  if (typeof format !== 'string' || !CONTENT_TYPES[format])
    return sendError(
      ctx,
      spec,
      400,
      `Invalid value: '${String(format)}'. Supported values are: 'mp3', 'opus', 'aac', 'flac', 'wav', and 'pcm'.`,
    );
  const speed = b.speed ?? 1;
  if (typeof speed !== 'number' || !(speed >= 0.25 && speed <= 4))
    return sendError(ctx, spec, 400, "Invalid 'speed': expected a number between 0.25 and 4.0.");
  const sseFormat = b.stream_format === 'sse';
  if (b.stream_format !== undefined && b.stream_format !== 'audio' && !sseFormat)
    return sendError(ctx, spec, 400, "Invalid value for 'stream_format': expected 'sse' or 'audio'.");
  if (sseFormat && (b.model === 'tts-1' || b.model === 'tts-1-hd'))
    return sendError(ctx, spec, 400, `stream_format 'sse' is not supported for model ${b.model}.`);

  const pieces = splitBytes(fakeSpeech(b.input, format, speed), ctx.fault?.chunks ?? 5);
  if (sseFormat) {
    const sse = new SseWriter(ctx);
    for (const p of pieces)
      if (
        !(await sse.send(
          `data: ${JSON.stringify({ type: 'speech.audio.delta', audio: p.toString('base64') })}\n\n`,
        ))
      )
        return;
    const input = Math.ceil(b.input.length / 4);
    const output = pieces.length * 10;
    const usage = { input_tokens: input, output_tokens: output, total_tokens: input + output };
    if (!(await sse.send(`data: ${JSON.stringify({ type: 'speech.audio.done', usage })}\n\n`))) return;
    return sse.end();
  }
  const w = new ChunkWriter(ctx, { 'content-type': CONTENT_TYPES[format]!, 'transfer-encoding': 'chunked' });
  for (const p of pieces) if (!(await w.send(p))) return;
  await w.end();
}

// ---- transcriptions and translations ----

/** Seconds of audio in an upload: one per 16,000 bytes, at least 1. */
export const audioSeconds = (bytes: number): number => Math.max(1, Math.ceil(bytes / 16_000));

const LANGUAGES: Record<string, string> = {
  en: 'english',
  de: 'german',
  fr: 'french',
  es: 'spanish',
  it: 'italian',
  pt: 'portuguese',
  nl: 'dutch',
  pl: 'polish',
  uk: 'ukrainian',
  ja: 'japanese',
  zh: 'chinese',
};

const FORMATS = new Set(['json', 'text', 'srt', 'vtt', 'verbose_json']);

/** `00:00:01,000` (srt) or `00:00:01.000` (vtt). */
function timestamp(seconds: number, sep: ',' | '.'): string {
  const ms = Math.round(seconds * 1000);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(Math.floor(ms / 3_600_000))}:${p(Math.floor(ms / 60_000) % 60)}:${p(Math.floor(ms / 1000) % 60)}${sep}${p(ms % 1000, 3)}`;
}

function segment(text: string, duration: number) {
  return {
    id: 0,
    seek: 0,
    start: 0,
    end: duration,
    text: ' ' + text,
    tokens: Array.from({ length: wordCount(text) }, (_, i) => 50364 + i),
    temperature: 0,
    avg_logprob: -0.25,
    compression_ratio: 1.1,
    no_speech_prob: 0.01,
  };
}

/** Word timestamps spread evenly over the duration. */
function words(text: string, duration: number) {
  const ws = splitWords(text).map((w) => w.trim());
  return ws.map((word, i) => ({
    word,
    start: Math.round(((i * duration) / ws.length) * 100) / 100,
    end: Math.round((((i + 1) * duration) / ws.length) * 100) / 100,
  }));
}

async function transcribe(
  ctx: FakeContext,
  spec: ProviderSpec,
  task: 'transcribe' | 'translate',
): Promise<void> {
  const form: MultipartForm | null = ctx.form;
  if (!form) return sendError(ctx, spec, 400, 'Invalid Content-Type header (expected multipart/form-data)');
  const file = form.filesOf('file')[0];
  if (!file) return sendError(ctx, spec, 400, "Missing required parameter: 'file'.");
  const model = form.get('model');
  if (!model) return sendError(ctx, spec, 400, 'you must provide a model parameter');
  const format = form.get('response_format') ?? 'json';
  if (!FORMATS.has(format))
    return sendError(
      ctx,
      spec,
      400,
      `Invalid value: '${format}'. Supported values are: 'json', 'text', 'srt', 'verbose_json', and 'vtt'.`,
    );
  // gpt-4o-transcribe and friends bill in tokens, answer only json or text, and alone can stream.
  const tokenModel = model.startsWith('gpt-');
  if (tokenModel && format !== 'json' && format !== 'text')
    return sendError(
      ctx,
      spec,
      400,
      `response_format '${format}' is not compatible with model '${model}'. Use 'json' or 'text' instead.`,
    );
  const stream = task === 'transcribe' && form.get('stream') === 'true';
  if (stream && !tokenModel)
    return sendError(ctx, spec, 400, `Streaming is not supported for the ${model} model.`);

  const bytes = file.data.length;
  const seconds = audioSeconds(bytes);
  const text = `${task === 'transcribe' ? 'Transcribed' : 'Translated'} ${bytes} bytes of ${file.filename} by ${ctx.name}`;
  const promptTokens = Math.ceil((form.get('prompt') ?? '').length / 4);
  const audioTokens = seconds * 10;
  const usage =
    task === 'translate'
      ? undefined
      : tokenModel
        ? {
            type: 'tokens',
            input_tokens: promptTokens + audioTokens,
            input_token_details: { text_tokens: promptTokens, audio_tokens: audioTokens },
            output_tokens: wordCount(text),
            total_tokens: promptTokens + audioTokens + wordCount(text),
          }
        : { type: 'duration', seconds };

  if (stream) {
    const sse = new SseWriter(ctx);
    const pieces = chunkText(text, ctx.fault?.chunks ?? 5, false);
    for (const delta of pieces)
      if (!(await sse.send(`data: ${JSON.stringify({ type: 'transcript.text.delta', delta })}\n\n`))) return;
    if (!(await sse.send(`data: ${JSON.stringify({ type: 'transcript.text.done', text, usage })}\n\n`)))
      return;
    return sse.end('data: [DONE]\n\n');
  }

  const plain = (body: string, type = 'text/plain; charset=utf-8'): void => {
    if (ctx.closed()) return;
    ctx.res.writeHead(200, {
      'content-type': type,
      'content-length': Buffer.byteLength(body),
      [ctx.requestIdHeader[0]]: ctx.requestIdHeader[1],
    });
    ctx.res.end(body);
  };
  const language =
    task === 'translate' ? 'english' : (LANGUAGES[form.get('language') ?? 'en'] ?? form.get('language')!);
  switch (format) {
    case 'text':
      return plain(text + '\n');
    case 'srt':
      return plain(`1\n${timestamp(0, ',')} --> ${timestamp(seconds, ',')}\n${text}\n\n`);
    case 'vtt':
      return plain(
        `WEBVTT\n\n${timestamp(0, '.')} --> ${timestamp(seconds, '.')}\n${text}\n\n`,
        'text/vtt; charset=utf-8',
      );
    case 'verbose_json': {
      const granularities = form.getAll('timestamp_granularities');
      const wantSegments = !granularities.length || granularities.includes('segment');
      return sendJson(ctx, 200, {
        task,
        language,
        duration: seconds,
        text,
        ...(granularities.includes('word') ? { words: words(text, seconds) } : {}),
        ...(wantSegments ? { segments: [segment(text, seconds)] } : {}),
        ...(usage ? { usage } : {}),
      });
    }
    default:
      return sendJson(ctx, 200, usage ? { text, usage } : { text });
  }
}

/** The audio routes; false when the path is not one of them. */
export async function openaiAudioRoute(ctx: FakeContext, spec: ProviderSpec): Promise<boolean> {
  if (ctx.method !== 'POST') return false;
  if (ctx.path === '/v1/audio/speech') await speech(ctx, spec);
  else if (ctx.path === '/v1/audio/transcriptions') await transcribe(ctx, spec, 'transcribe');
  else if (ctx.path === '/v1/audio/translations') await transcribe(ctx, spec, 'translate');
  else return false;
  return true;
}
