/**
 * Overview: the last hour (or ten minutes) of traffic summed over every live instance — requests, error rate, p50/p99
 * latency, gateway overhead, sale vs cost — from /stats/timeseries, plus live breaker and queue tiles.
 */
import { get } from '../api.js';
import { chart } from '../charts.js';
import { type Ctx, pageHeader } from '../ctx.js';
import { fmtInt, fmtMs, h, replace } from '../dom.js';
import { big, currencyCode, formatMicros, formatMoney, percent } from '../money.js';

interface Point {
  t: number;
  requests: number;
  ok: number;
  client_errors: number;
  rate_limited: number;
  server_errors: number;
  error_rate: number;
  p50_ms: number | null;
  p99_ms: number | null;
  overhead_p50_ms: number | null;
  overhead_p99_ms: number | null;
  sale_micros: string;
  cost_micros: string;
}
interface Series {
  scope?: 'cluster' | 'instance';
  instances?: number;
  step_s: number;
  minutes: number;
  points: Point[];
  totals: Omit<Point, 't'>;
}

const RANGES = [
  { id: '60m', label: 'Last hour · per minute', minutes: 60, step: 60 },
  { id: '10m', label: 'Last 10 minutes · per 10 s', minutes: 10, step: 10 },
];

const pct = (v: number) => `${(v * 100).toFixed(v > 0 && v < 0.01 ? 2 : 1)}%`;

function tile(label: string, value: string, sub?: string, attrs: Record<string, string> = {}): HTMLElement {
  return h(
    'div',
    { class: 'tile', ...attrs },
    h('div', { class: 'tile-label' }, label),
    h('div', { class: 'tile-value' }, value),
    sub ? h('div', { class: 'tile-sub' }, sub) : null,
  );
}

export async function overviewPage(root: HTMLElement, ctx: Ctx): Promise<void> {
  let range = RANGES[0]!;
  const select = h(
    'select',
    {
      name: 'range',
      onchange: () => {
        range = RANGES.find((r) => r.id === select.value) ?? RANGES[0]!;
        void load();
      },
    },
    RANGES.map((r) => h('option', { value: r.id }, r.label)),
  );
  const liveTiles = h('div', { class: 'tiles', id: 'live-tiles' });
  const tiles = h('div', { class: 'tiles', id: 'traffic-tiles' });
  const charts = h('div', { class: 'charts' });
  const scopeNote = h('p', { class: 'muted small', id: 'stats-scope' });
  root.append(pageHeader('Overview', select), liveTiles, tiles, charts, scopeNote);

  const unsub = ctx.live.subscribe((snap) => {
    const open = snap.circuits.filter((c) => c.state !== 'closed');
    const waiting = snap.queues.keys.reduce((a, k) => a + (k.waiting ?? 0), 0);
    const active = snap.queues.tasks ? Object.values(snap.queues.tasks).reduce((a, b) => a + b, 0) : null;
    replace(
      liveTiles,
      tile(
        'Breakers not closed',
        `${open.length} / ${snap.circuits.length}`,
        open.map((c) => `${c.channel}: ${c.state.replace('_', ' ')}`).join(', ') || 'all closed',
        { 'data-tile': 'breakers', class: `tile ${open.length ? 'tile-bad' : 'tile-ok'}` },
      ),
      tile(
        'Waiting in WAIT queues',
        fmtInt(waiting),
        `${fmtInt(snap.queues.waiting_here)} on this instance`,
        { 'data-tile': 'queues' },
      ),
      tile(
        'Active tasks',
        active === null ? '—' : fmtInt(active),
        snap.queues.tasks
          ? Object.entries(snap.queues.tasks)
              .map(([k, v]) => `${k} ${v}`)
              .join(' · ')
          : undefined,
        { 'data-tile': 'tasks' },
      ),
      tile(
        'Data plane',
        snap.kill_switch.enabled ? 'STOPPED' : 'running',
        snap.kill_switch.enabled ? (snap.kill_switch.reason ?? 'kill switch on') : 'kill switch off',
        { 'data-tile': 'kill-switch', class: `tile ${snap.kill_switch.enabled ? 'tile-bad' : 'tile-ok'}` },
      ),
    );
  });
  ctx.onLeave(unsub);

  const load = async () => {
    const s = await get<Series>(`/stats/timeseries?minutes=${range.minutes}&step=${range.step}`);
    if (!ctx.alive()) return;
    const t = s.totals;
    const n = s.instances ?? 1;
    scopeNote.dataset.instances = String(n);
    scopeNote.textContent =
      s.scope === 'instance'
        ? "Traffic figures are this instance's own: the shared store did not answer, so other instances' figures are missing. Breakers, queues and the kill switch are shared by all instances."
        : `Traffic figures are summed over ${n} live instance${n === 1 ? '' : 's'} (each publishes its last hour every few seconds); breakers, queues and the kill switch are shared by all instances. Money in ${currencyCode()}.`;
    const sale = big(t.sale_micros);
    const cost = big(t.cost_micros);
    replace(
      tiles,
      tile(
        'Requests',
        fmtInt(t.requests),
        `${fmtInt(t.ok)} ok · ${fmtInt(t.client_errors)} 4xx · ${fmtInt(t.server_errors)} 5xx`,
        { 'data-tile': 'requests' },
      ),
      tile('Error rate (5xx)', pct(t.error_rate), `${fmtInt(t.rate_limited)} rate limited (429)`),
      tile('Latency p50 / p99', `${fmtMs(t.p50_ms)} / ${fmtMs(t.p99_ms)}`, 'receipt to last byte'),
      tile(
        'Gateway overhead p50 / p99',
        `${fmtMs(t.overhead_p50_ms)} / ${fmtMs(t.overhead_p99_ms)}`,
        'total minus upstream time',
      ),
      tile(
        'Sale vs cost',
        `${formatMicros(sale)} / ${formatMoney(cost)}`,
        `spread ${formatMoney(sale - cost)} (${percent(sale - cost, sale)} of sale)`,
        { 'data-tile': 'money' },
      ),
    );
    const times = s.points.map((p) => p.t);
    replace(
      charts,
      chart({
        title: 'Traffic (requests per step)',
        kind: 'bars',
        times,
        stepS: s.step_s,
        fmt: (v) => (Number.isInteger(v) ? fmtInt(v) : v.toFixed(1)),
        series: [
          { name: '2xx', cls: 's-ok', values: s.points.map((p) => p.ok) },
          { name: '4xx', cls: 's-warn', values: s.points.map((p) => p.client_errors) },
          { name: '5xx', cls: 's-bad', values: s.points.map((p) => p.server_errors) },
        ],
      }),
      chart({
        title: 'Error rate (5xx share)',
        kind: 'line',
        times,
        stepS: s.step_s,
        fmt: (v) => pct(v),
        series: [
          {
            name: 'error rate',
            cls: 's-bad',
            values: s.points.map((p) => (p.requests ? p.error_rate : null)),
          },
        ],
      }),
      chart({
        title: 'Latency',
        kind: 'line',
        times,
        stepS: s.step_s,
        fmt: (v) => fmtMs(v),
        series: [
          { name: 'p50', cls: 's-a', values: s.points.map((p) => p.p50_ms) },
          { name: 'p99', cls: 's-b', values: s.points.map((p) => p.p99_ms) },
        ],
      }),
      chart({
        title: 'Gateway overhead',
        kind: 'line',
        times,
        stepS: s.step_s,
        fmt: (v) => fmtMs(v),
        series: [
          { name: 'p50', cls: 's-a', values: s.points.map((p) => p.overhead_p50_ms) },
          { name: 'p99', cls: 's-b', values: s.points.map((p) => p.overhead_p99_ms) },
        ],
      }),
      chart({
        title: `Spend (sale) vs cost, ${currencyCode()}`,
        kind: 'line',
        times,
        stepS: s.step_s,
        // Plotting needs numbers; every label is formatted from integer micro-units.
        fmt: (v) => formatMicros(BigInt(Math.round(v))),
        series: [
          {
            name: 'sale',
            cls: 's-ok',
            values: s.points.map((p) => (p.requests ? Number(p.sale_micros) : null)),
          },
          {
            name: 'cost',
            cls: 's-b',
            values: s.points.map((p) => (p.requests ? Number(p.cost_micros) : null)),
          },
        ],
      }),
    );
  };
  await load();
  const timer = setInterval(() => void load().catch(() => {}), 10_000);
  ctx.onLeave(() => clearInterval(timer));
}
