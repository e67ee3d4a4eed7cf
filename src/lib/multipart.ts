/**
 * multipart/form-data for uploads the gateway relays (audio to transcribe, images to edit): parsed into
 * text fields plus files, and encoded again for the upstream with the fields the gateway rewrote.
 */
import { randomBytes } from 'node:crypto';

export interface Upload {
  field: string;
  filename: string;
  contentType: string;
  data: Buffer;
}

/** Where a parsed multipart body keeps its files (a symbol: no form field can collide with it). */
export const UPLOADS: unique symbol = Symbol('anima.uploads');

export type MultipartBody = Record<string, string> & { [UPLOADS]: Upload[] };

export function uploadsOf(body: unknown): Upload[] {
  if (!body || typeof body !== 'object') return [];
  return (body as Partial<MultipartBody>)[UPLOADS] ?? [];
}

/** Parses a multipart body (text fields: the last value of a repeated name wins; files keep their order). */
export async function parseMultipart(buf: Buffer, contentType: string): Promise<MultipartBody> {
  const form = await new Response(buf, { headers: { 'content-type': contentType } }).formData();
  const out = {} as MultipartBody;
  const files: Upload[] = [];
  for (const [k, v] of form.entries()) {
    if (typeof v === 'string') {
      if (k === '__proto__' || k === 'constructor' || k === 'prototype') continue;
      out[k] = v;
    } else {
      files.push({
        field: k,
        filename: v.name || 'file',
        contentType: v.type || 'application/octet-stream',
        data: Buffer.from(await v.arrayBuffer()),
      });
    }
  }
  Object.defineProperty(out, UPLOADS, { value: files, enumerable: false });
  return out;
}

const quote = (s: string) => s.replace(/["\r\n\\]/g, (c) => (c === '"' ? '%22' : c === '\\' ? '\\\\' : ' '));

/** Encodes fields and files as multipart/form-data. */
export function encodeMultipart(
  fields: Array<[string, string]>,
  files: Upload[],
): { body: Buffer; contentType: string } {
  const boundary = `----anima${randomBytes(12).toString('hex')}`;
  const parts: Buffer[] = [];
  for (const [k, v] of fields) {
    parts.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="${quote(k)}"\r\n\r\n${v}\r\n`,
        'utf8',
      ),
    );
  }
  for (const f of files) {
    parts.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="${quote(f.field)}"; filename="${quote(f.filename)}"\r\nContent-Type: ${f.contentType.replace(/[\r\n]/g, '')}\r\n\r\n`,
        'utf8',
      ),
      f.data,
      Buffer.from('\r\n'),
    );
  }
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(parts), contentType: `multipart/form-data; boundary=${boundary}` };
}
