/**
 * multipart/form-data for uploads the gateway relays (audio to transcribe, images to edit): parsed into
 * text fields plus files, and sent on to the upstream as a FormData with the fields the gateway rewrote.
 * undici encodes that FormData itself when it is a request's body (boundary, content type, length), and
 * streams each file from the Blob the parser made: no second copy of an upload is built to send it.
 */
import { FormData } from 'undici';

export interface Upload {
  field: string;
  filename: string;
  contentType: string;
  /** The file's bytes as the parser holds them; `data.size` is its length. */
  data: Blob;
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
        data: v,
      });
    }
  }
  Object.defineProperty(out, UPLOADS, { value: files, enumerable: false });
  return out;
}

/**
 * Fields and files as a FormData for an undici request body. undici's own FormData, not the global one:
 * undici recognises only its own class as a body. The request's headers must not name a content type:
 * undici writes it, with the boundary it picks.
 *
 * The encoding is the HTML form one: a `"`, CR or LF in a name or filename is percent-encoded, and line
 * breaks in a text field's value are sent as CRLF.
 */
export function toFormData(fields: Array<[string, string]>, files: Upload[]): FormData {
  const form = new FormData();
  for (const [k, v] of fields) form.append(k, v);
  // A File wraps the parser's Blob without copying its bytes.
  for (const f of files) form.append(f.field, new File([f.data], f.filename, { type: f.contentType }));
  return form;
}
