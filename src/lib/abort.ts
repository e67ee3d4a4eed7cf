/**
 * A cancellation flag with listeners, for the request path's own use: what AbortController + AbortSignal
 * did there (the client went away, an attempt's budget ran out, a first byte never came), without the
 * EventTarget machinery under them. Node builds an AbortSignal as an EventTarget with its own Maps and
 * dispatches through them; a request made two controllers and added and removed three listeners, a
 * visible share of every request in the gateway's profile (bench/overhead.ts --only json with
 * ANIMA_BENCH_PROFILE; figures in bench/HISTORY.md).
 *
 * Semantics follow AbortSignal's: abort() once (later calls do nothing), listeners called in the order
 * added with the reason, a listener added after the abort is never called. A listener that throws doesn't
 * stop the others; its error is thrown again on a microtask, as an EventTarget listener's would be.
 */
export class Abort {
  aborted = false;
  reason: unknown = undefined;
  private listeners: Array<(reason: unknown) => void> | null = null;

  abort(reason?: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason ?? abortError();
    const ls = this.listeners;
    this.listeners = null;
    if (!ls) return;
    for (const f of ls) {
      try {
        f(this.reason);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  /** Calls `f` once, when aborted (never, if that already happened). */
  on(f: (reason: unknown) => void): void {
    if (this.aborted) return;
    (this.listeners ??= []).push(f);
  }

  off(f: (reason: unknown) => void): void {
    const ls = this.listeners;
    if (!ls) return;
    const i = ls.indexOf(f);
    if (i >= 0) ls.splice(i, 1);
  }
}

function abortError(): Error {
  const e = new Error('This operation was aborted');
  e.name = 'AbortError';
  return e;
}
