/**
 * The newer fake routes speak the real wire formats: the Responses API, audio and image edits on the fake OpenAI
 * (driven by the official `openai` client), and the fake Gemini (driven by the official `@google/genai` client).
 * Raw details (event lines, bytes, error bodies) are checked with plain fetch.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import { ApiError, FunctionCallingConfigMode, GoogleGenAI } from '@google/genai';
import {
  audioSeconds,
  fakeSpeech,
  type FakeUpstream,
  startFakeGemini,
  startFakeOpenAI,
} from '../../fakes/index.js';
import { waitFor } from '../wait.js';

let fo: FakeUpstream;
let fg: FakeUpstream;
let openai: OpenAI;
let genai: GoogleGenAI;

const genaiFor = (url: string, apiKey = 'k') =>
  new GoogleGenAI({ apiKey, httpOptions: { baseUrl: url, retryOptions: { attempts: 1 } } });

beforeAll(async () => {
  fo = await startFakeOpenAI({ name: 'test-openai' });
  fg = await startFakeGemini({ name: 'test-gemini' });
  openai = new OpenAI({ apiKey: 'k', baseURL: fo.url + '/v1', maxRetries: 0 });
  genai = genaiFor(fg.url);
});
afterAll(async () => {
  await Promise.all([fo?.close(), fg?.close()]);
});
afterEach(() => {
  fo.setFault(null);
  fg.setFault(null);
});

/** Only for proving a stall: the absence of data can be shown by a time window alone. */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const postJson = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, {
    method: 'POST',
    headers: { authorization: 'Bearer k', 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
/** Reads a streamed body to its end; `error` is set when the connection broke before the end. */
async function readAll(r: Response): Promise<{ bytes: Buffer; error: unknown }> {
  const parts: Buffer[] = [];
  try {
    for await (const b of r.body!) parts.push(Buffer.from(b as Uint8Array));
    return { bytes: Buffer.concat(parts), error: null };
  } catch (e) {
    return { bytes: Buffer.concat(parts), error: e };
  }
}
const sseEvents = (text: string) => text.split(/\r?\n\r?\n/).filter(Boolean);

const tools = [
  {
    type: 'function' as const,
    name: 'search',
    strict: false,
    parameters: { type: 'object', properties: {} },
  },
  {
    type: 'function' as const,
    name: 'lookup',
    strict: false,
    parameters: { type: 'object', properties: {} },
  },
];

describe('fake OpenAI Responses API', () => {
  it('JSON: a completed response with one message and usage', async () => {
    const r = await openai.responses.create({
      model: 'gpt-x',
      instructions: 'Be brief.',
      input: 'What is the capital of France?',
    });
    expect(r.id).toMatch(/^resp_/);
    expect(r).toMatchObject({
      object: 'response',
      status: 'completed',
      model: 'gpt-x',
      error: null,
      incomplete_details: null,
      instructions: 'Be brief.',
      previous_response_id: null,
      tool_choice: 'auto',
      tools: [],
      parallel_tool_calls: true,
    });
    expect(r.output_text).toBe('Hello from test-openai: What is the capital of France?');
    expect(r.output).toHaveLength(1);
    const msg = r.output[0]!;
    expect(msg).toMatchObject({ type: 'message', role: 'assistant', status: 'completed' });
    expect(msg.type === 'message' && msg.id).toMatch(/^msg_/);
    expect(msg.type === 'message' && msg.content).toEqual([
      {
        type: 'output_text',
        text: 'Hello from test-openai: What is the capital of France?',
        annotations: [],
        logprobs: [],
      },
    ]);
    const chars = 'Be brief.'.length + 'What is the capital of France?'.length;
    expect(r.usage).toEqual({
      input_tokens: Math.ceil(chars / 4) + 1,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens: 9,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: Math.ceil(chars / 4) + 10,
    });
    // output_text is computed by the SDK, not sent
    const raw = await postJson(fo.url + '/v1/responses', { model: 'm', input: 'hi' });
    expect(Object.keys((await raw.json()) as object)).not.toContain('output_text');
  });

  it('input items, store and previous_response_id; stored responses can be fetched and deleted', async () => {
    const r = await openai.responses.create({
      model: 'm',
      store: false,
      previous_response_id: 'resp_earlier',
      input: [
        { role: 'developer', content: 'Answer in English.' },
        { role: 'user', content: [{ type: 'input_text', text: 'first question' }] },
        { role: 'assistant', content: 'an answer' },
        { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'second question' }] },
      ],
    });
    expect(r.output_text).toBe('Hello from test-openai: second question');
    expect(r.previous_response_id).toBe('resp_earlier');
    expect(fo.requests.at(-1)!.body).toMatchObject({ store: false, previous_response_id: 'resp_earlier' });
    await expect(openai.responses.retrieve(r.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);

    const kept = await openai.responses.create({ model: 'm', input: 'keep me' });
    expect((await openai.responses.retrieve(kept.id)).output_text).toBe(kept.output_text);
    await openai.responses.delete(kept.id);
    await expect(openai.responses.retrieve(kept.id)).rejects.toMatchObject({ status: 404 });

    const bad = await postJson(fo.url + '/v1/responses', {
      model: 'm',
      input: [{ role: 'robot', content: 'x' }],
    });
    expect([bad.status, await bad.json()]).toMatchObject([400, { error: { type: 'invalid_request_error' } }]);
  });

  it('function tools: function_call items, then the tool output', async () => {
    const r = await openai.responses.create({ model: 'm', tools, input: 'Where is Kyiv?' });
    expect(r.output.map((o) => o.type)).toEqual(['function_call', 'function_call']);
    const calls = r.output.filter((o) => o.type === 'function_call');
    expect(calls.map((c) => c.name)).toEqual(['search', 'lookup']);
    for (const c of calls) {
      expect(c.id).toMatch(/^fc_/);
      expect(c.call_id).toMatch(/^call_/);
      expect(c.status).toBe('completed');
      expect(JSON.parse(c.arguments)).toEqual({ query: 'Where is Kyiv?' });
    }
    expect(r.usage!.output_tokens).toBe(10);

    const forced = await openai.responses.create({
      model: 'm',
      tools,
      tool_choice: { type: 'function', name: 'lookup' },
      input: 'x',
    });
    expect(forced.output.map((o) => o.type === 'function_call' && o.name)).toEqual(['lookup']);
    const single = await openai.responses.create({
      model: 'm',
      tools,
      parallel_tool_calls: false,
      input: 'x',
    });
    expect(single.output).toHaveLength(1);
    const none = await openai.responses.create({ model: 'm', tools, tool_choice: 'none', input: 'x' });
    expect(none.output_text).toBe('Hello from test-openai: x');

    const first = calls[0]!;
    const after = await openai.responses.create({
      model: 'm',
      tools,
      input: [
        { role: 'user', content: 'Where is Kyiv?' },
        { type: 'function_call', call_id: first.call_id, name: first.name, arguments: first.arguments },
        { type: 'function_call_output', call_id: first.call_id, output: 'in Ukraine' },
      ],
    });
    expect(after.output_text).toBe('Tool said: in Ukraine');
  });

  it('max_output_tokens: an incomplete response', async () => {
    const r = await openai.responses.create({ model: 'm', max_output_tokens: 2, input: 'hello' });
    expect(r).toMatchObject({ status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' } });
    expect(r.output_text).toBe('Hello from');
    expect(r.usage!.output_tokens).toBe(2);
  });

  it('streaming: typed events in order, the deltas make the text, completed carries usage', async () => {
    const stream = await openai.responses.create({ model: 'm', input: 'Stream please', stream: true });
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const e of stream) events.push(e);
    expect(events.map((e) => e.type)).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      ...Array(5).fill('response.output_text.delta'),
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.completed',
    ]);
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
    const deltas = events.flatMap((e) => (e.type === 'response.output_text.delta' ? [e.delta] : []));
    expect(deltas.join('')).toBe('Hello from test-openai: Stream please');
    const created = events[0]!;
    expect(created.type === 'response.created' && created.response).toMatchObject({
      status: 'in_progress',
      output: [],
    });
    const done = events.at(-1)!;
    if (done.type !== 'response.completed') throw new Error('last event is not response.completed');
    expect(done.response.id).toBe(created.type === 'response.created' && created.response.id);
    expect(done.response.status).toBe('completed');
    expect(done.response.usage).toMatchObject({
      output_tokens: 5,
      total_tokens: done.response.usage!.input_tokens + 5,
    });
    const item = events.find((e) => e.type === 'response.output_item.done')!;
    expect(item.type === 'response.output_item.done' && item.item).toMatchObject({
      type: 'message',
      status: 'completed',
      content: [{ type: 'output_text', text: 'Hello from test-openai: Stream please' }],
    });

    // the SDK's stream helper assembles the same response
    const final = await openai.responses.stream({ model: 'm', input: 'the helper' }).finalResponse();
    expect(final.output_text).toBe('Hello from test-openai: the helper');
  });

  it('streaming: raw `event:` lines, no [DONE]; function calls stream their arguments', async () => {
    const r = await postJson(
      fo.url + '/v1/responses',
      { model: 'm', input: 'x', stream: true },
      {
        'x-fake-fault': JSON.stringify({ chunks: 2 }),
      },
    );
    expect(r.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const text = await r.text();
    expect(text).not.toContain('[DONE]');
    for (const e of sseEvents(text)) {
      const [ev, data] = e.split('\n');
      expect(ev!.slice('event: '.length)).toBe(JSON.parse(data!.slice('data: '.length)).type);
    }

    const stream = await openai.responses.create({ model: 'm', tools, input: 'Baku?', stream: true });
    const types: string[] = [];
    let args = '';
    let last: OpenAI.Responses.Response | undefined;
    for await (const e of stream) {
      types.push(e.type);
      if (e.type === 'response.function_call_arguments.delta' && e.output_index === 0) args += e.delta;
      if (e.type === 'response.completed') last = e.response;
    }
    const perCall = [
      'response.output_item.added',
      'response.function_call_arguments.delta',
      'response.function_call_arguments.delta',
      'response.function_call_arguments.delta',
      'response.function_call_arguments.done',
      'response.output_item.done',
    ];
    expect(types).toEqual([
      'response.created',
      'response.in_progress',
      ...perCall,
      ...perCall,
      'response.completed',
    ]);
    expect(JSON.parse(args)).toEqual({ query: 'Baku?' });
    expect(last!.output.map((o) => o.type === 'function_call' && [o.name, o.arguments])).toEqual([
      ['search', '{"query":"Baku?"}'],
      ['lookup', '{"query":"Baku?"}'],
    ]);
  });
});

describe('fake OpenAI audio', () => {
  it('speech: mp3 bytes by default, chunked, length from the input', async () => {
    const input = 'Hello, world';
    const { data, response } = await openai.audio.speech
      .create({ model: 'tts-1', voice: 'alloy', input })
      .withResponse();
    expect(response.headers.get('content-type')).toBe('audio/mpeg');
    expect(response.headers.get('transfer-encoding')).toBe('chunked');
    const bytes = Buffer.from(await data.arrayBuffer());
    expect(bytes.subarray(0, 3).toString('latin1')).toBe('ID3');
    expect(bytes.length).toBe(10 + Math.ceil((input.length * 480) / 8));
    expect(bytes).toEqual(fakeSpeech(input, 'mp3'));

    const wav = await openai.audio.speech.create({
      model: 'gpt-4o-mini-tts',
      voice: 'coral',
      input,
      response_format: 'wav',
    });
    expect(wav.headers.get('content-type')).toBe('audio/wav');
    const w = Buffer.from(await wav.arrayBuffer());
    expect(w.subarray(0, 4).toString('latin1')).toBe('RIFF');
    expect(w.subarray(8, 12).toString('latin1')).toBe('WAVE');
    expect(w.readUInt32LE(40)).toBe(input.length * 480);
    expect(w.length).toBe(44 + input.length * 480);
    expect(fo.requests.at(-1)!.body).toMatchObject({ voice: 'coral', response_format: 'wav' });
  });

  it('speech: validation errors in OpenAI shape', async () => {
    const noVoice = await openai.audio.speech
      .create({ model: 'tts-1', input: 'x' } as OpenAI.Audio.SpeechCreateParams)
      .catch((e: unknown) => e);
    expect(noVoice).toBeInstanceOf(OpenAI.BadRequestError);
    const noInput = await postJson(fo.url + '/v1/audio/speech', { model: 'tts-1', voice: 'alloy' });
    expect([noInput.status, await noInput.json()]).toMatchObject([
      400,
      { error: { type: 'invalid_request_error', message: expect.stringContaining('input') } },
    ]);
    const badFormat = await postJson(fo.url + '/v1/audio/speech', {
      model: 'tts-1',
      voice: 'alloy',
      input: 'x',
      response_format: 'ogg',
    });
    expect(badFormat.status).toBe(400);
  });

  it('speech: stream_format sse', async () => {
    const r = await postJson(fo.url + '/v1/audio/speech', {
      model: 'gpt-4o-mini-tts',
      voice: 'alloy',
      input: 'hello there',
      response_format: 'pcm',
      stream_format: 'sse',
    });
    const events = sseEvents(await r.text()).map((e) => JSON.parse(e.slice('data: '.length)));
    expect(events.map((e) => e.type)).toEqual([...Array(5).fill('speech.audio.delta'), 'speech.audio.done']);
    const audio = Buffer.concat(events.slice(0, -1).map((e) => Buffer.from(e.audio, 'base64')));
    expect(audio).toEqual(fakeSpeech('hello there', 'pcm'));
    expect(events.at(-1).usage).toMatchObject({ input_tokens: 3 });
  });

  it('transcriptions: json with duration usage; the parsed form is recorded', async () => {
    const bytes = new Uint8Array(40_000).fill(7);
    const t = await openai.audio.transcriptions.create({
      file: new File([bytes], 'talk.wav', { type: 'audio/wav' }),
      model: 'whisper-1',
      language: 'en',
    });
    expect(t.text).toBe('Transcribed 40000 bytes of talk.wav by test-openai');
    expect(t.usage).toEqual({ type: 'duration', seconds: audioSeconds(40_000) });
    expect(audioSeconds(40_000)).toBe(3);
    expect(fo.requests.at(-1)!.body).toEqual({
      model: 'whisper-1',
      language: 'en',
      file: { filename: 'talk.wav', contentType: 'audio/wav', size: 40_000 },
    });
  });

  it('transcriptions: text, srt, vtt and verbose_json', async () => {
    const file = () => new File([new Uint8Array(100)], 'a.mp3', { type: 'audio/mpeg' });
    const text = await openai.audio.transcriptions.create({
      file: file(),
      model: 'whisper-1',
      response_format: 'text',
    });
    expect(text).toBe('Transcribed 100 bytes of a.mp3 by test-openai\n');
    const srt = await openai.audio.transcriptions.create({
      file: file(),
      model: 'whisper-1',
      response_format: 'srt',
    });
    expect(srt).toBe('1\n00:00:00,000 --> 00:00:01,000\nTranscribed 100 bytes of a.mp3 by test-openai\n\n');
    const vtt = await openai.audio.transcriptions.create({
      file: file(),
      model: 'whisper-1',
      response_format: 'vtt',
    });
    expect(vtt).toMatch(/^WEBVTT\n\n00:00:00\.000 --> 00:00:01\.000\n/);
    const v = await openai.audio.transcriptions.create({
      file: file(),
      model: 'whisper-1',
      response_format: 'verbose_json',
      timestamp_granularities: ['word', 'segment'],
      language: 'uk',
    });
    expect(v).toMatchObject({
      language: 'ukrainian',
      duration: 1,
      text: 'Transcribed 100 bytes of a.mp3 by test-openai',
      usage: { type: 'duration', seconds: 1 },
    });
    expect((v as unknown as { task: string }).task).toBe('transcribe');
    expect(v.segments![0]).toMatchObject({ id: 0, start: 0, end: 1 });
    expect(v.words!.map((w) => w.word)).toEqual([
      'Transcribed',
      '100',
      'bytes',
      'of',
      'a.mp3',
      'by',
      'test-openai',
    ]);
    expect(fo.requests.at(-1)!.body).toMatchObject({ 'timestamp_granularities[]': ['word', 'segment'] });
  });

  it('transcriptions: gpt-4o models bill in tokens and stream', async () => {
    const file = new File([new Uint8Array(16_001)], 'b.webm', { type: 'audio/webm' });
    const t = await openai.audio.transcriptions.create({ file, model: 'gpt-4o-transcribe' });
    expect(t.usage).toMatchObject({ type: 'tokens', input_tokens: 20, output_tokens: 7, total_tokens: 27 });
    const stream = await openai.audio.transcriptions.create({
      file,
      model: 'gpt-4o-mini-transcribe',
      stream: true,
    });
    const events: OpenAI.Audio.TranscriptionStreamEvent[] = [];
    for await (const e of stream) events.push(e);
    expect(events.map((e) => e.type)).toEqual([
      ...Array(5).fill('transcript.text.delta'),
      'transcript.text.done',
    ]);
    const deltas = events.flatMap((e) => (e.type === 'transcript.text.delta' ? [e.delta] : []));
    const done = events.at(-1)!;
    expect(done.type === 'transcript.text.done' && done.text).toBe(deltas.join(''));
    const srt = await openai.audio.transcriptions
      .create({ file, model: 'gpt-4o-transcribe', response_format: 'srt' })
      .catch((e: unknown) => e);
    expect(srt).toBeInstanceOf(OpenAI.BadRequestError);
  });

  it('translations; a missing file is a 400', async () => {
    const t = await openai.audio.translations.create({
      file: new File([new Uint8Array(10)], 'c.m4a'),
      model: 'whisper-1',
    });
    expect(t).toEqual({ text: 'Translated 10 bytes of c.m4a by test-openai' });
    const v = await openai.audio.translations.create({
      file: new File([new Uint8Array(10)], 'c.m4a'),
      model: 'whisper-1',
      response_format: 'verbose_json',
    });
    expect(v).toMatchObject({ task: 'translate', language: 'english', duration: 1 });

    const form = new FormData();
    form.append('model', 'whisper-1');
    const r = await fetch(fo.url + '/v1/audio/transcriptions', {
      method: 'POST',
      headers: { authorization: 'Bearer k' },
      body: form,
    });
    expect([r.status, await r.json()]).toMatchObject([
      400,
      { error: { message: expect.stringContaining('file') } },
    ]);
  });
});

describe('fake OpenAI image edits', () => {
  const png = (name: string) =>
    new File([Buffer.from('\x89PNG\r\n\x1a\nfake-image-bytes', 'latin1')], name, { type: 'image/png' });

  it('gpt-image-1: several images, b64_json always, usage', async () => {
    const r = await openai.images.edit({
      model: 'gpt-image-1',
      image: [png('a.png'), png('b.png')],
      prompt: 'make it blue',
      n: 2,
      response_format: 'url',
    });
    expect(r.data).toHaveLength(2);
    expect(r.data!.every((d) => typeof d.b64_json === 'string' && d.url === undefined)).toBe(true);
    expect(r.usage).toMatchObject({
      input_tokens_details: { image_tokens: 2 * 323, text_tokens: 3 },
      output_tokens: 2 * 272,
    });
    expect(r).toMatchObject({ output_format: 'png', size: '1024x1024' });
    const body = fo.requests.at(-1)!.body as Record<string, unknown>;
    expect(body['image[]']).toEqual([
      { filename: 'a.png', contentType: 'image/png', size: 24 },
      { filename: 'b.png', contentType: 'image/png', size: 24 },
    ]);
  });

  it('dall-e-2: one image (and a mask), a URL by default', async () => {
    const r = await openai.images.edit({ image: png('a.png'), mask: png('m.png'), prompt: 'a hat' });
    expect(r.data).toEqual([
      { url: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+\/files\//), revised_prompt: 'a hat' },
    ]);
    expect(r.usage).toBeUndefined();
    const img = await fetch(r.data![0]!.url!, { headers: { authorization: 'Bearer k' } });
    expect(img.status).toBe(200);
    const b64 = await openai.images.edit({
      image: png('a.png'),
      prompt: 'a hat',
      response_format: 'b64_json',
    });
    expect(b64.data![0]!.b64_json).toBeTruthy();
    const two = await openai.images
      .edit({ model: 'dall-e-2', image: [png('a.png'), png('b.png')], prompt: 'x' })
      .catch((e: unknown) => e);
    expect(two).toBeInstanceOf(OpenAI.BadRequestError);
    const noPrompt = await openai.images.edit({ image: png('a.png'), prompt: '' }).catch((e: unknown) => e);
    expect(noPrompt).toMatchObject({ status: 400 });
  });
});

describe('fake Gemini with the official client', () => {
  const decls = [
    { name: 'search', description: 'web search', parametersJsonSchema: { type: 'object' } },
    { name: 'lookup', description: 'look up', parametersJsonSchema: { type: 'object' } },
  ];

  it('generateContent: text, usage, model version', async () => {
    const r = await genai.models.generateContent({
      model: 'gemini-2.5-flash',
      contents: 'What is the capital of France?',
      config: { systemInstruction: 'Be brief.' },
    });
    expect(r.text).toBe('Hello from test-gemini: What is the capital of France?');
    expect(r.candidates![0]).toMatchObject({ finishReason: 'STOP', index: 0, content: { role: 'model' } });
    const chars = 'Be brief.'.length + 'What is the capital of France?'.length;
    expect(r.usageMetadata).toMatchObject({
      promptTokenCount: Math.ceil(chars / 4) + 1,
      candidatesTokenCount: 9,
      totalTokenCount: Math.ceil(chars / 4) + 10,
    });
    expect(r.modelVersion).toBe('gemini-2.5-flash');
    expect(r.responseId).toBeTruthy();
    const sent = fg.requests.at(-1)!;
    expect(sent.path).toBe('/v1beta/models/gemini-2.5-flash:generateContent');
    expect(sent.headers['x-goog-api-key']).toBe('k');
    expect(sent.body).toMatchObject({
      contents: [{ role: 'user', parts: [{ text: 'What is the capital of France?' }] }],
      systemInstruction: { parts: [{ text: 'Be brief.' }] },
    });
  });

  it('generationConfig: maxOutputTokens, stopSequences, candidateCount, JSON', async () => {
    const max = await genai.models.generateContent({
      model: 'g',
      contents: [{ role: 'user', parts: [{ text: 'hello' }] }],
      config: { maxOutputTokens: 2 },
    });
    expect([max.text, max.candidates![0]!.finishReason]).toEqual(['Hello from', 'MAX_TOKENS']);
    const stop = await genai.models.generateContent({
      model: 'g',
      contents: 'x',
      config: { stopSequences: ['from'], candidateCount: 2, temperature: 0 },
    });
    expect(stop.candidates!.map((c) => [c.index, c.content!.parts![0]!.text, c.finishReason])).toEqual([
      [0, 'Hello ', 'STOP'],
      [1, 'Hello ', 'STOP'],
    ]);
    const json = await genai.models.generateContent({
      model: 'g',
      contents: 'y',
      config: { responseMimeType: 'application/json' },
    });
    expect(JSON.parse(json.text!)).toEqual({ text: 'Hello from test-gemini: y' });
  });

  it('generateContentStream: pieces, then finishReason and the full usage on the last chunk', async () => {
    const chunks = [];
    for await (const c of await genai.models.generateContentStream({ model: 'g', contents: 'Stream please' }))
      chunks.push(c);
    expect(chunks).toHaveLength(5);
    expect(chunks.map((c) => c.text).join('')).toBe('Hello from test-gemini: Stream please');
    expect(chunks.slice(0, -1).every((c) => c.candidates![0]!.finishReason === undefined)).toBe(true);
    const prompt = Math.ceil('Stream please'.length / 4) + 1;
    expect(chunks[0]!.usageMetadata).toMatchObject({ promptTokenCount: prompt, totalTokenCount: prompt });
    expect(chunks[0]!.usageMetadata!.candidatesTokenCount).toBeUndefined();
    const last = chunks.at(-1)!;
    expect(last.candidates![0]!.finishReason).toBe('STOP');
    expect(last.usageMetadata).toMatchObject({
      promptTokenCount: prompt,
      candidatesTokenCount: 5,
      totalTokenCount: prompt + 5,
    });
    expect(new Set(chunks.map((c) => c.responseId)).size).toBe(1);
    expect(fg.requests.at(-1)!.path).toBe('/v1beta/models/g:streamGenerateContent');

    // raw: alt=sse, `data: ...\r\n\r\n`; without alt=sse one JSON array
    const body = { contents: [{ role: 'user', parts: [{ text: 'raw body' }] }] };
    const sse = await postJson(fg.url + '/v1beta/models/g:streamGenerateContent?alt=sse&key=k', body);
    expect(sse.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const text = await sse.text();
    expect(text.endsWith('\r\n\r\n')).toBe(true);
    expect(
      text
        .split('\r\n\r\n')
        .filter(Boolean)
        .every((e) => e.startsWith('data: {')),
    ).toBe(true);
    const arr = await postJson(fg.url + '/v1beta/models/g:streamGenerateContent', body, {
      'x-goog-api-key': 'k',
    });
    const items = (await arr.json()) as Array<{
      candidates: Array<{ content: { parts: Array<{ text: string }> } }>;
    }>;
    expect(items.map((i) => i.candidates[0]!.content.parts[0]!.text).join('')).toBe(
      'Hello from test-gemini: raw body',
    );
  });

  it('function calling: functionCall parts, then the functionResponse', async () => {
    const r = await genai.models.generateContent({
      model: 'g',
      contents: 'Weather in Kyiv?',
      config: { tools: [{ functionDeclarations: decls }] },
    });
    expect(r.functionCalls).toEqual([
      { name: 'search', args: { query: 'Weather in Kyiv?' } },
      { name: 'lookup', args: { query: 'Weather in Kyiv?' } },
    ]);
    expect(r.candidates![0]!.finishReason).toBe('STOP');
    expect(r.usageMetadata!.candidatesTokenCount).toBe(10);
    const forced = await genai.models.generateContent({
      model: 'g',
      contents: 'x',
      config: {
        tools: [{ functionDeclarations: decls }],
        toolConfig: {
          functionCallingConfig: { mode: FunctionCallingConfigMode.ANY, allowedFunctionNames: ['lookup'] },
        },
      },
    });
    expect(forced.functionCalls!.map((c) => c.name)).toEqual(['lookup']);
    const none = await genai.models.generateContent({
      model: 'g',
      contents: 'x',
      config: {
        tools: [{ functionDeclarations: decls }],
        toolConfig: { functionCallingConfig: { mode: FunctionCallingConfigMode.NONE } },
      },
    });
    expect(none.text).toBe('Hello from test-gemini: x');

    const after = await genai.models.generateContent({
      model: 'g',
      contents: [
        { role: 'user', parts: [{ text: 'Weather in Kyiv?' }] },
        { role: 'model', parts: [{ functionCall: r.functionCalls![0]! }] },
        { role: 'user', parts: [{ functionResponse: { name: 'search', response: { temp: 'cold' } } }] },
      ],
      config: { tools: [{ functionDeclarations: decls }] },
    });
    expect(after.text).toBe('Tool said: {"temp":"cold"}');

    const streamed = [];
    for await (const c of await genai.models.generateContentStream({
      model: 'g',
      contents: 'Baku?',
      config: { tools: [{ functionDeclarations: decls }] },
    }))
      streamed.push(c);
    expect(streamed).toHaveLength(1);
    expect(streamed[0]!.functionCalls!.map((c) => c.args)).toEqual([{ query: 'Baku?' }, { query: 'Baku?' }]);
  });

  it('models list and get, countTokens', async () => {
    const names: string[] = [];
    for await (const m of await genai.models.list({ config: { pageSize: 2 } })) names.push(m.name!);
    expect(names).toContain('models/gemini-2.5-flash');
    expect(names.length).toBeGreaterThan(2);
    expect(fg.requests.filter((r) => r.path === '/v1beta/models').length).toBeGreaterThan(1); // paged
    const m = await genai.models.get({ model: 'gemini-2.5-pro' });
    expect(m).toMatchObject({ name: 'models/gemini-2.5-pro', inputTokenLimit: 1_048_576 });
    const c = await genai.models.countTokens({ model: 'g', contents: 'count these words' });
    expect(c.totalTokens).toBe(Math.ceil('count these words'.length / 4) + 1);
  });

  it('auth and errors in Google shape', async () => {
    const strict = await startFakeGemini({ apiKey: 'secret' });
    try {
      const wrong = await genaiFor(strict.url, 'nope')
        .models.generateContent({ model: 'g', contents: 'x' })
        .catch((e: unknown) => e);
      expect(wrong).toBeInstanceOf(ApiError);
      expect((wrong as ApiError).status).toBe(400);
      expect(JSON.parse((wrong as ApiError).message)).toMatchObject({
        error: { code: 400, status: 'INVALID_ARGUMENT', details: [{ reason: 'API_KEY_INVALID' }] },
      });
      const ok = await genaiFor(strict.url, 'secret').models.generateContent({ model: 'g', contents: 'x' });
      expect(ok.text).toBe('Hello from fake-gemini: x');
      const byQuery = await postJson(strict.url + '/v1beta/models/g:generateContent?key=secret', {
        contents: [{ parts: [{ text: 'q' }] }],
      });
      expect(byQuery.status).toBe(200);
      const missing = await postJson(strict.url + '/v1beta/models/g:generateContent', { contents: [] });
      expect([missing.status, await missing.json()]).toMatchObject([
        403,
        { error: { code: 403, status: 'PERMISSION_DENIED' } },
      ]);
    } finally {
      await strict.close();
    }
    const empty = await postJson(fg.url + '/v1beta/models/g:generateContent?key=k', { contents: [] });
    expect([empty.status, await empty.json()]).toMatchObject([
      400,
      { error: { status: 'INVALID_ARGUMENT' } },
    ]);
    const role = await postJson(fg.url + '/v1beta/models/g:generateContent?key=k', {
      contents: [{ role: 'assistant', parts: [{ text: 'x' }] }],
    });
    expect(role.status).toBe(400);
  });
});

describe('faults on the new routes', () => {
  it('status: the SDKs raise their own errors with the right status', async () => {
    fo.setFault({ status: 503 });
    const e = await openai.responses.create({ model: 'm', input: 'x' }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(OpenAI.InternalServerError);
    expect(e).toMatchObject({ status: 503, type: 'server_error' });
    const a = await openai.audio.speech
      .create({ model: 'tts-1', voice: 'alloy', input: 'x' })
      .catch((x: unknown) => x);
    expect(a).toMatchObject({ status: 503 });

    fg.setFault({ status: 429, retryAfter: 2 });
    const g = await genai.models.generateContent({ model: 'g', contents: 'x' }).catch((x: unknown) => x);
    expect(g).toBeInstanceOf(ApiError);
    expect((g as ApiError).status).toBe(429);
    expect(JSON.parse((g as ApiError).message)).toEqual({
      error: { code: 429, message: 'fake upstream error (HTTP 429)', status: 'RESOURCE_EXHAUSTED' },
    });
    fg.setFault({ status: 503, times: 1 });
    const s = await genai.models
      .generateContentStream({ model: 'g', contents: 'x' })
      .catch((x: unknown) => x);
    expect(s).toMatchObject({ status: 503 });
    expect(JSON.parse((s as ApiError).message).error.status).toBe('UNAVAILABLE');
    fg.setFault({ status: 500, errorCode: 'FAILED_PRECONDITION', times: 1 });
    const r = await postJson(fg.url + '/v1beta/models/g:generateContent?key=k', {});
    expect(await r.json()).toMatchObject({ error: { code: 500, status: 'FAILED_PRECONDITION' } });
  });

  it('cutAfterChunks: streams break mid-way in every SDK', async () => {
    fo.setFault({ cutAfterChunks: 3 });
    const types: string[] = [];
    await expect(
      (async () => {
        for await (const e of await openai.responses.create({ model: 'm', input: 'x', stream: true }))
          types.push(e.type);
      })(),
    ).rejects.toThrow();
    expect(types).toEqual(['response.created', 'response.in_progress', 'response.output_item.added']);

    fg.setFault({ cutAfterChunks: 2 });
    const texts: string[] = [];
    await expect(
      (async () => {
        for await (const c of await genai.models.generateContentStream({ model: 'g', contents: 'x' }))
          texts.push(c.text!);
      })(),
    ).rejects.toThrow();
    expect(texts).toHaveLength(2);

    // audio: fewer bytes than the whole file, then the connection breaks
    fo.setFault({ cutAfterChunks: 2, chunks: 5 });
    const r = await postJson(fo.url + '/v1/audio/speech', {
      model: 'tts-1',
      voice: 'alloy',
      input: 'a longer input',
    });
    const { bytes, error } = await readAll(r);
    expect(error).toBeTruthy();
    expect(bytes.length).toBeLessThan(fakeSpeech('a longer input', 'mp3').length);
  });

  it('hang, latency and chunkDelayMs', async () => {
    fg.resetStats();
    fg.setFault({ hang: true });
    const ac = new AbortController();
    const p = genai.models.generateContent({ model: 'g', contents: 'x', config: { abortSignal: ac.signal } });
    await waitFor(() => fg.stats.inFlight === 1);
    ac.abort();
    await expect(p).rejects.toThrow();
    await waitFor(() => fg.stats.aborted === 1);

    fg.setFault({ hangAfterChunks: 1 });
    const ac2 = new AbortController();
    const r = await fetch(fg.url + '/v1beta/models/g:streamGenerateContent?alt=sse&key=k', {
      method: 'POST',
      signal: ac2.signal,
      body: JSON.stringify({ contents: [{ parts: [{ text: 'x' }] }] }),
    });
    const reader = r.body!.getReader();
    await reader.read();
    expect(await Promise.race([reader.read().then(() => 'data'), sleep(150).then(() => 'stalled')])).toBe(
      'stalled',
    );
    ac2.abort();

    fo.setFault({ latencyMs: 120 });
    let t0 = Date.now();
    await (await openai.audio.speech.create({ model: 'tts-1', voice: 'alloy', input: 'x' })).arrayBuffer();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(110);

    fo.setFault({ chunkDelayMs: 40, chunks: 4 });
    t0 = Date.now();
    await (
      await openai.audio.speech.create({ model: 'tts-1', voice: 'alloy', input: 'hello' })
    ).arrayBuffer();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(3 * 40 - 5); // 4 chunks, 3 gaps
  });

  it('reset and malformed', async () => {
    fo.setFault({ reset: true });
    const file = new File([new Uint8Array(10)], 'x.wav');
    await expect(openai.audio.transcriptions.create({ file, model: 'whisper-1' })).rejects.toThrow();
    fg.setFault({ reset: true });
    await expect(genai.models.generateContent({ model: 'g', contents: 'x' })).rejects.toThrow();

    fg.setFault({ malformed: true });
    await expect(genai.models.generateContent({ model: 'g', contents: 'x' })).rejects.toThrow();
    const s = await postJson(fg.url + '/v1beta/models/g:streamGenerateContent?alt=sse&key=k', {
      contents: [{ parts: [{ text: 'x' }] }],
    });
    expect(s.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const garbage = await s.text();
    expect(() => sseEvents(garbage).forEach((e) => JSON.parse(e.replace(/^data: /, '')))).toThrow();
    fo.setFault({ malformed: true });
    await expect(openai.responses.create({ model: 'm', input: 'x' })).rejects.toThrow();
  });
});
