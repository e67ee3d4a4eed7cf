/**
 * Live breaker states, queue lengths and the kill switch: a server-sent event stream read with fetch (so
 * the token goes in a header, never in the URL), falling back to polling every 2 s while the stream is
 * unavailable, and reconnecting by itself.
 */
import { API, type Snapshot, authHeaders, get } from './api.js';

export type LiveMode = 'connecting' | 'live' | 'polling' | 'offline';

const POLL_MS = 2_000;
/** A stream silent this long (a proxy holding it) is dropped and reopened. */
const STALL_MS = 5_000;

export class LiveFeed {
  last: Snapshot | null = null;
  mode: LiveMode = 'connecting';
  private readonly subs = new Set<(s: Snapshot) => void>();
  private readonly modeSubs = new Set<(m: LiveMode) => void>();
  private abort: AbortController | null = null;
  private stopped = false;

  subscribe(fn: (s: Snapshot) => void): () => void {
    this.subs.add(fn);
    if (this.last) fn(this.last);
    return () => this.subs.delete(fn);
  }

  onMode(fn: (m: LiveMode) => void): () => void {
    this.modeSubs.add(fn);
    fn(this.mode);
    return () => this.modeSubs.delete(fn);
  }

  private setMode(m: LiveMode): void {
    if (m === this.mode) return;
    this.mode = m;
    for (const f of this.modeSubs) f(m);
  }

  private emit(snap: Snapshot): void {
    this.last = snap;
    for (const f of this.subs) {
      try {
        f(snap);
      } catch (e) {
        console.error(e);
      }
    }
  }

  start(): void {
    this.stopped = false;
    void this.loop();
  }

  stop(): void {
    this.stopped = true;
    this.abort?.abort();
  }

  /** Reads the current state at once (after an operator's action), without waiting for the next event. */
  async refresh(): Promise<void> {
    await this.refreshOrThrow().catch(() => {}); // the stream or the next poll will catch up
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.stream();
      } catch {
        // fall through to polling
      }
      if (this.stopped) break;
      this.setMode('polling');
      try {
        await this.refreshOrThrow();
      } catch {
        this.setMode('offline');
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  private async refreshOrThrow(): Promise<void> {
    const [c, q, k] = await Promise.all([get('/circuits'), get('/queues'), get('/kill-switch')]);
    this.emit({ at: new Date().toISOString(), circuits: c.data, queues: q, kill_switch: k });
  }

  private async stream(): Promise<void> {
    const ac = new AbortController();
    this.abort = ac;
    const r = await fetch(`${API}/events`, {
      headers: { ...authHeaders(), accept: 'text/event-stream' },
      signal: ac.signal,
      cache: 'no-store',
    });
    if (!r.ok || !r.body) throw new Error(`events: HTTP ${r.status}`);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let stall: ReturnType<typeof setTimeout> | null = null;
    const arm = () => {
      if (stall) clearTimeout(stall);
      stall = setTimeout(() => ac.abort(), STALL_MS);
    };
    arm();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        arm();
        buf += value;
        let cut: number;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let event = 'message';
          let data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) event = line.slice(6).trim();
            else if (line.startsWith('data:')) data += line.slice(5).trim();
          }
          if (event === 'snapshot' && data) {
            this.setMode('live');
            this.emit(JSON.parse(data) as Snapshot);
          } else if (event === 'signed_out') {
            return;
          }
        }
      }
    } finally {
      if (stall) clearTimeout(stall);
      ac.abort();
    }
  }
}
