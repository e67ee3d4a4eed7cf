/**
 * The management listener (ANIMA_MANAGEMENT_PORT), in one process or under `serve --workers N`.
 *
 * With workers, node:cluster would share the port among them (each connection to a random worker), so
 * every scrape would see one worker's counters and Prometheus would read each switch as a counter reset.
 * Instead the primary listens on the management port itself and asks every worker over IPC: metrics are
 * merged into one exposition with a `worker` label (1..N, kept by a restarted worker's successor), and
 * readiness lists each worker. Workers don't bind the management port at all.
 */
import type { Cluster, Worker } from 'node:cluster';
import type { AddressInfo } from 'node:net';
import client from 'prom-client';
import type { Logger } from 'pino';
import {
  type ActuatorAccess,
  type ActuatorDeps,
  type Readiness,
  buildManagementServer,
} from '../http/management.js';

export interface ManagementListener {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

export async function startManagementListener(
  host: string,
  port: number,
  deps: ActuatorDeps,
  access: ActuatorAccess,
  log: Logger,
): Promise<ManagementListener> {
  const app = buildManagementServer(deps, access, log);
  await app.listen({ host, port });
  const bound = (app.server.address() as AddressInfo).port;
  const shown = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  return { url: `http://${shown}:${bound}`, port: bound, close: () => app.close() };
}

const REQ = 'anima:management:req';
const RES = 'anima:management:res';
type What = 'metrics' | 'readiness';
interface Req {
  type: typeof REQ;
  id: number;
  what: What;
}
interface Res {
  type: typeof RES;
  id: number;
  metrics?: client.MetricObjectWithValues<client.MetricValue<string>>[];
  readiness?: Readiness;
  error?: string;
}

/** A cluster worker: answers the primary's management questions. Returns the unsubscribe. */
export function answerManagementOverIpc(d: {
  registry: client.Registry;
  readiness: () => Promise<Readiness>;
}): () => void {
  const on = (m: unknown) => {
    const q = m as Req;
    if (q?.type !== REQ || !process.send) return;
    const work =
      q.what === 'metrics'
        ? d.registry.getMetricsAsJSON().then((metrics) => ({ metrics }))
        : d.readiness().then((readiness) => ({ readiness }));
    void work
      .catch((e: unknown) => ({ error: String((e as Error)?.message ?? e) }))
      .then((body) =>
        process.send?.({ type: RES, id: q.id, ...body } satisfies Res, undefined, {}, () => {}),
      );
  };
  process.on('message', on);
  return () => void process.off('message', on);
}

/** The primary: actuator answers gathered from every worker. `slotOf` numbers workers 1..N. */
export function clusterActuator(
  cluster: Cluster,
  slotOf: (w: Worker) => number,
  timeoutMs = 3_000,
): ActuatorDeps {
  let next = 0;
  const pending = new Map<number, (w: Worker, r: Res) => void>();
  cluster.on('message', (w, m: unknown) => {
    const r = m as Res;
    if (r?.type === RES) pending.get(r.id)?.(w, r);
  });
  /** Asks every live worker; those that don't answer in time are reported as such (null). */
  const ask = (what: What): Promise<Array<{ slot: number; pid: number | undefined; res: Res | null }>> => {
    const id = ++next;
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w && w.isConnected());
    const got = new Map<Worker, Res>();
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(t);
        pending.delete(id);
        resolve(
          workers
            .map((w) => ({ slot: slotOf(w), pid: w.process.pid, res: got.get(w) ?? null }))
            .sort((a, b) => a.slot - b.slot),
        );
      };
      const t = setTimeout(finish, timeoutMs);
      pending.set(id, (w, r) => {
        got.set(w, r);
        if (got.size === workers.length) finish();
      });
      if (!workers.length) finish();
      for (const w of workers) w.send({ type: REQ, id, what } satisfies Req);
    });
  };
  return {
    async scrape() {
      const parts = await ask('metrics');
      // Each worker's series get its `worker` label, so the merge is a union, never a sum.
      const arrays = parts
        .filter((p) => p.res?.metrics)
        .map((p) =>
          p.res!.metrics!.map((m) => ({
            ...m,
            aggregator: 'sum',
            values: m.values.map((v) => ({ ...v, labels: { ...v.labels, worker: String(p.slot) } })),
          })),
        );
      const merged = client.AggregatorRegistry.aggregate(arrays);
      let text = await merged.metrics();
      const missing = parts.filter((p) => !p.res?.metrics).length;
      text +=
        '# HELP anima_cluster_workers_unanswered Workers that did not answer this scrape in time\n' +
        '# TYPE anima_cluster_workers_unanswered gauge\n' +
        `anima_cluster_workers_unanswered ${missing}\n`;
      return { contentType: merged.contentType, text };
    },
    async readiness() {
      const parts = await ask('readiness');
      const components: Readiness['components'] = {};
      for (const p of parts) {
        const r = p.res?.readiness;
        components[`worker-${p.slot}`] = r
          ? {
              status: r.up ? (r.degraded ? 'DEGRADED' : 'UP') : 'DOWN',
              details: { pid: p.pid, components: r.components },
            }
          : { status: 'DOWN', details: { pid: p.pid, error: p.res?.error ?? 'no answer' } };
      }
      const ok = parts.map((p) => p.res?.readiness);
      return {
        // Ready while any worker serves (they share the data-plane port); degraded when any isn't well.
        up: ok.some((r) => r?.up),
        degraded: ok.some((r) => !r || !r.up || r.degraded),
        components,
      };
    },
  };
}
