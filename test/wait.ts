/**
 * Waiting on an observable event (a request count, a metric, a log line, a state read) instead of a sleep.
 * Apart from test/helpers.ts (which re-exports it) so a unit test can wait without importing the gateway.
 */

/** Polls until `fn` returns a truthy value or the time runs out; returns the elapsed ms. */
export async function waitFor(
  fn: () => unknown | Promise<unknown>,
  timeoutMs = 5_000,
  stepMs = 10,
): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    if (await fn()) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
