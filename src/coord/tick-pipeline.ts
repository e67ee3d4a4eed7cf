import { Cluster, type ChainableCommander, type Redis } from 'ioredis';

/**
 * Commands issued during one turn of the event loop, written to Redis together at the end of that turn
 * (one socket write), whatever else is in flight on the connection.
 *
 * Why not ioredis's auto-pipelining for these: it keeps one batch in flight per connection, so a command
 * issued while a batch awaits its replies is written only when they are back. For a settlement whose
 * answer goes out without waiting for Redis (the bill must have left before the answer), "written" has
 * to be a point the caller can wait for: `written()` (below) resolves once every command issued before it
 * is on the socket. The commands share the connection with everything else, so their order against a later
 * command holds (a client's next request is admitted after its previous request released its lease).
 *
 * On a Cluster (no auto-pipelining there) each command is sent at once on its slot's connection.
 */
export class TickPipeline {
  private batch: { p: ChainableCommander; done: Array<[(v: unknown) => void, (e: unknown) => void]> } | null = null;

  constructor(private readonly client: Redis) {}

  /** Queues `name(...args)` (a command or a script defined on the client) into this turn's batch. */
  call<T>(name: string, args: Array<string | number>): Promise<T> {
    if (this.client instanceof Cluster) return (this.client as unknown as Record<string, (...a: unknown[]) => Promise<T>>)[name]!(...args);
    const b = (this.batch ??= this.open());
    (b.p as unknown as Record<string, (...a: unknown[]) => unknown>)[name]!(...args);
    return new Promise<T>((resolve, reject) => b.done.push([resolve as (v: unknown) => void, reject]));
  }

  private open() {
    const b = { p: this.client.pipeline(), done: [] as Array<[(v: unknown) => void, (e: unknown) => void]> };
    setImmediate(() => {
      this.batch = null;
      b.p.exec().then(
        (results) => {
          for (let i = 0; i < b.done.length; i++) {
            const r = results?.[i];
            if (!r) b.done[i]![1](new Error('Redis pipeline returned no result'));
            else if (r[0]) b.done[i]![1](r[0]);
            else b.done[i]![0](r[1]);
          }
        },
        (err: unknown) => {
          for (const [, reject] of b.done) reject(err);
        },
      );
    });
    return b;
  }
}

/**
 * Resolves once the commands queued (on any TickPipeline) before this call have been written: a batch is
 * written by a setImmediate queued with its first command, and setImmediate callbacks run in order.
 */
export function written(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
