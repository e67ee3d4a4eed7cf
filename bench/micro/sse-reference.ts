/**
 * A straightforward Server-Sent Events parser, written from the WHATWG rules as one would first write
 * it: the reference that src/lib/sse.ts is measured against (bench/micro/sse.ts) and checked against
 * (test/unit/sse.test.ts). No maintained SSE parser is among the project's packages to compare with.
 *
 * Text is decoded and appended, split on any line end, the last (unfinished) piece kept. A CR at the very
 * end is held back: an LF in the next chunk may complete it as one CRLF.
 */
import type { SseEvent } from '../../src/lib/sse.js';

export class ReferenceSseParser {
  private buf = '';
  private data: string[] = [];
  private event = '';
  private readonly decoder = new TextDecoder();

  push(chunk: Uint8Array | string): SseEvent[] {
    let text = this.buf + (typeof chunk === 'string' ? chunk : this.decoder.decode(chunk, { stream: true }));
    let hold = '';
    if (text.endsWith('\r')) {
      hold = '\r';
      text = text.slice(0, -1);
    }
    const lines = text.split(/\r\n|\r|\n/);
    this.buf = lines.pop()! + hold;
    const out: SseEvent[] = [];
    for (const line of lines) {
      if (line === '') {
        if (this.data.length > 0) out.push({ event: this.event, data: this.data.join('\n') });
        this.data = [];
        this.event = '';
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'data') this.data.push(value);
        else if (field === 'event') this.event = value;
      }
    }
    return out;
  }

  get pending(): boolean {
    return this.buf.length > 0 || this.data.length > 0;
  }
}
