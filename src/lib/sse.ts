/**
 * Incremental Server-Sent Events parser (WHATWG rules): feed it bytes as they arrive, get whole events.
 * Handles CRLF/LF/CR line ends, multi-line `data:`, comments and events split across chunks.
 */
export interface SseEvent {
  event: string; // '' when the stream named none (the spec's default "message")
  data: string;
}

export class SseParser {
  private buf = '';
  private dataLines: string[] = [];
  private eventName = '';
  private readonly decoder = new TextDecoder();

  /** Feed a chunk; returns the events completed by it. */
  push(chunk: Uint8Array | string): SseEvent[] {
    const buf = (this.buf +=
      typeof chunk === 'string' ? chunk : this.decoder.decode(chunk, { stream: true }));
    const out: SseEvent[] = [];
    let start = 0;
    // Almost every stream ends its lines with LF alone: then the native indexOf finds them (a per-character
    // scan in JavaScript was a tenth of a streamed request's cost).
    const lfOnly = buf.indexOf('\r') < 0;
    for (;;) {
      const nl = lfOnly ? buf.indexOf('\n', start) : this.findLineEnd(start);
      if (nl < 0) break;
      const line = buf.slice(start, nl);
      start = nl + (buf.charCodeAt(nl) === 13 && buf.charCodeAt(nl + 1) === 10 ? 2 : 1);
      this.line(line, out);
    }
    if (start > 0) this.buf = buf.slice(start);
    return out;
  }

  /** Bytes received after the last complete line (a stream that ends here was cut mid-event). */
  get pending(): boolean {
    return this.buf.length > 0 || this.dataLines.length > 0;
  }

  private findLineEnd(from: number): number {
    for (let i = from; i < this.buf.length; i++) {
      const c = this.buf.charCodeAt(i);
      if (c === 10) return i;
      if (c === 13) return i + 1 < this.buf.length ? i : -1; // wait to see if LF follows
    }
    return -1;
  }

  private line(line: string, out: SseEvent[]): void {
    if (line === '') {
      if (this.dataLines.length > 0) out.push({ event: this.eventName, data: this.dataLines.join('\n') });
      this.dataLines = [];
      this.eventName = '';
      return;
    }
    if (line.charCodeAt(0) === 58 /* : */) return; // comment
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    if (field === 'data') this.dataLines.push(value);
    else if (field === 'event') this.eventName = value;
  }
}

export function sseData(data: string): string {
  return 'data: ' + data + '\n\n';
}

export function sseEvent(event: string, data: string): string {
  return 'event: ' + event + '\ndata: ' + data + '\n\n';
}
