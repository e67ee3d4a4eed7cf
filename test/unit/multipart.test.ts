/**
 * Multipart uploads relayed upstream (transcriptions, translations, image edits), differentially: what an
 * upstream receives through the transport (undici encoding our FormData) against what the hand-written
 * encoder the gateway used before produced from the same fields and files, both read by the fakes'
 * parser: the same fields in the same order, the same file parts byte for byte.
 */
import { randomBytes } from 'node:crypto';
import { type Server, createServer } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FormData as UndiciFormData } from 'undici';
import { type MultipartForm, parseMultipart as fakeParse } from '../../fakes/common.js';
import { Abort } from '../../src/lib/abort.js';
import { type Upload, parseMultipart, toFormData, uploadsOf } from '../../src/lib/multipart.js';
import { ImageEditExchange, TranscriptionExchange } from '../../src/providers/openai/audio.js';
import { Transport } from '../../src/providers/transport.js';
import type { PreparedCall, UpstreamEndpoint } from '../../src/providers/types.js';

/** The encoder the gateway used before FormData: the oracle. */
function oldEncode(fields: Array<[string, string]>, files: Array<Upload & { bytes: Buffer }>) {
  const quote = (s: string) =>
    s.replace(/["\r\n\\]/g, (c) => (c === '"' ? '%22' : c === '\\' ? '\\\\' : ' '));
  const boundary = `----anima${randomBytes(12).toString('hex')}`;
  const parts: Buffer[] = [];
  for (const [k, v] of fields)
    parts.push(
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${quote(k)}"\r\n\r\n${v}\r\n`),
    );
  for (const f of files)
    parts.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="${quote(f.field)}"; filename="${quote(f.filename)}"\r\nContent-Type: ${f.contentType.replace(/[\r\n]/g, '')}\r\n\r\n`,
      ),
      f.bytes,
      Buffer.from('\r\n'),
    );
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(parts), contentType: `multipart/form-data; boundary=${boundary}` };
}

interface Received {
  headers: Record<string, string | string[] | undefined>;
  raw: Buffer;
}

let server: Server;
let base: string;
const received: Received[] = [];
const tr = new Transport();

beforeAll(async () => {
  server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      received.push({ headers: req.headers, raw: Buffer.concat(parts) });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"text":"ok","data":[]}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}/v1`;
});

afterAll(async () => {
  await tr.close();
  await new Promise((r) => server.close(r));
});

const ep = (): UpstreamEndpoint => ({
  code: 'up',
  provider: 'openai',
  baseUrl: base,
  credential: 'sk-up',
  headers: { 'x-org': 'o1' },
});

/** A client's multipart request, as the gateway's content-type parser reads it. */
async function clientBody(form: FormData) {
  const r = new Response(form);
  return parseMultipart(Buffer.from(await r.arrayBuffer()), r.headers.get('content-type')!);
}

/** Sends the exchange's call through the transport; returns the upstream's parse and the oracle's. */
async function relay(call: PreparedCall, files: Upload[]) {
  expect(call.body).toBeInstanceOf(UndiciFormData);
  const up = await tr.send(
    'up',
    base,
    call,
    { connectMs: 1_000, firstByteMs: 2_000, idleMs: 2_000 },
    new Abort(),
  );
  await up.bytes();
  const got = received.at(-1)!;
  const fields: Array<[string, string]> = [];
  for (const [k, v] of call.body as UndiciFormData) if (typeof v === 'string') fields.push([k, v]);
  const withBytes = await Promise.all(
    files.map(async (f) => ({ ...f, bytes: Buffer.from(await f.data.arrayBuffer()) })),
  );
  const old = oldEncode(fields, withBytes);
  return {
    got,
    now: fakeParse(got.raw, String(got.headers['content-type']))!,
    before: fakeParse(old.body, old.contentType)!,
  };
}

const same = (now: MultipartForm, before: MultipartForm) => {
  expect(now.fields).toEqual(before.fields);
  expect(now.files.map((f) => ({ ...f, data: f.data.toString('hex') }))).toEqual(
    before.files.map((f) => ({ ...f, data: f.data.toString('hex') })),
  );
};

describe('multipart relayed upstream: undici FormData against the hand encoder', () => {
  it('a transcription: fields, model rewritten, response_format forced, the audio byte for byte', async () => {
    const audio = randomBytes(300_000); // several socket writes
    const form = new FormData();
    form.set('model', 'whisper');
    form.set('language', 'en');
    form.set('prompt', 'Names: Zoë, "Bob"');
    form.set('temperature', '0.2');
    form.set('response_format', 'srt');
    form.set('file', new Blob([audio], { type: 'audio/wav' }), 'talk "1".wav');
    const body = await clientBody(form);
    const ex = new TranscriptionExchange('transcriptions', body, ep(), 'whisper-1');
    expect(Object.keys(ex.call.headers).map((k) => k.toLowerCase())).not.toContain('content-type');
    const { got, now, before } = await relay(ex.call, uploadsOf(body));
    same(now, before);
    expect(now.fields).toEqual([
      ['model', 'whisper-1'],
      ['language', 'en'],
      ['prompt', 'Names: Zoë, "Bob"'],
      ['temperature', '0.2'],
      ['response_format', 'verbose_json'],
    ]);
    expect(now.files).toHaveLength(1);
    expect(now.files[0]!).toMatchObject({
      field: 'file',
      filename: 'talk %221%22.wav',
      contentType: 'audio/wav',
    });
    expect(now.files[0]!.data.equals(audio)).toBe(true);
    // undici wrote the type with its boundary, and a length (not chunked): every part's size is known.
    expect(got.headers['content-type']).toMatch(/^multipart\/form-data; boundary=/);
    expect(Number(got.headers['content-length'])).toBe(got.raw.length);
    expect(got.headers['transfer-encoding']).toBeUndefined();
    expect(got.headers.authorization).toBe('Bearer sk-up');
    expect(got.headers['x-org']).toBe('o1');
  });

  it('a translation goes to its own path with the same encoding', async () => {
    const form = new FormData();
    form.set('model', 'whisper');
    form.set('file', new Blob([randomBytes(1_000)]), 'parle.mp3');
    const body = await clientBody(form);
    const ex = new TranscriptionExchange('translations', body, ep(), 'whisper-1');
    expect(ex.call.path).toBe('/audio/translations');
    const { now, before } = await relay(ex.call, uploadsOf(body));
    same(now, before);
    expect(now.files[0]!.contentType).toBe('application/octet-stream');
  });

  it('an image edit: two images and a mask in order, unknown fields kept, files of other names dropped', async () => {
    const png = (n: number) => Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), randomBytes(n)]);
    const [a, b, m] = [png(5_000), png(70_000), png(100)];
    const form = new FormData();
    form.set('model', 'img');
    form.set('prompt', 'a hat');
    form.set('n', '2');
    form.set('size', '1024x1024');
    form.append('image[]', new Blob([a], { type: 'image/png' }), 'a.png');
    form.append('image[]', new Blob([b], { type: 'image/png' }), 'b.png');
    form.set('mask', new Blob([m], { type: 'image/png' }), 'mask.png');
    form.set('other', new Blob([Buffer.from('x')]), 'other.bin');
    const body = await clientBody(form);
    const ex = new ImageEditExchange(body, ep(), 'gpt-image-1');
    const files = uploadsOf(body).filter((f) => f.field !== 'other');
    const { now, before } = await relay(ex.call, files);
    same(now, before);
    expect(now.fields).toEqual([
      ['model', 'gpt-image-1'],
      ['prompt', 'a hat'],
      ['n', '2'],
      ['size', '1024x1024'],
    ]);
    expect(now.files.map((f) => [f.field, f.filename, f.data.length])).toEqual([
      ['image[]', 'a.png', a.length],
      ['image[]', 'b.png', b.length],
      ['mask', 'mask.png', m.length],
    ]);
  });

  it('the one difference: a line break in a text field is sent as CRLF (the HTML form encoding)', async () => {
    // Encoded by hand: a client's FormData would have sent CRLF already.
    const raw = oldEncode(
      [
        ['model', 'whisper'],
        ['prompt', 'line one\nline two\r\nline three'],
      ],
      [
        {
          field: 'file',
          filename: 'a.wav',
          contentType: 'audio/wav',
          data: new Blob([]),
          bytes: randomBytes(10),
        },
      ],
    );
    const body = await parseMultipart(raw.body, raw.contentType);
    expect(body.prompt).toBe('line one\nline two\r\nline three');
    const { now, before } = await relay(
      new TranscriptionExchange('transcriptions', body, ep(), 'whisper-1').call,
      uploadsOf(body),
    );
    expect(now.get('prompt')).toBe('line one\r\nline two\r\nline three');
    expect(before.get('prompt')!.replace(/\r?\n/g, '\r\n')).toBe(now.get('prompt'));
    expect(now.files).toEqual(before.files);
  });

  it('toFormData wraps the parsed file without reading it', async () => {
    const blob = new Blob([Buffer.from('abc')], { type: 'audio/wav' });
    const form = toFormData(
      [['model', 'm']],
      [{ field: 'file', filename: 'x.wav', contentType: 'audio/wav', data: blob }],
    );
    const f = form.get('file') as File;
    expect([f.name, f.type, f.size]).toEqual(['x.wav', 'audio/wav', 3]);
    expect(Buffer.from(await f.arrayBuffer()).toString()).toBe('abc');
  });
});
