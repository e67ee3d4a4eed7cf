/**
 * Small inline SVG charts (lines and stacked bars) for the overview: no library, nothing fetched. Each
 * column carries a <title> with its values, so hovering shows them.
 */
import { type Child, h, s } from './dom.js';

export interface Series {
  name: string;
  /** CSS class giving the colour (see console.css: .s-*). */
  cls: string;
  values: Array<number | null>;
}

export interface ChartOptions {
  title: string;
  kind: 'line' | 'bars';
  times: number[];
  stepS: number;
  series: Series[];
  /** Formats a y value (axis ticks and hover text). */
  fmt: (v: number) => string;
  note?: Child;
}

const W = 640;
const H = 210;
const M = { l: 64, r: 12, t: 12, b: 26 };

/** The smallest 1 / 2 / 2.5 / 5 × 10^k at or above v. */
export function niceCeil(v: number): number {
  if (!(v > 0)) return 1;
  const e = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * e >= v * (1 - 1e-9)) return m * e;
  return 10 * e;
}

function clock(t: number, withSeconds: boolean): string {
  const d = new Date(t);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}${withSeconds ? ':' + p(d.getSeconds()) : ''}`;
}

/** No data: every value missing (a line), or every bar zero. */
function isEmpty(o: ChartOptions): boolean {
  return o.series.every((se) =>
    se.values.every((v) => v === null || v === undefined || (o.kind === 'bars' && v === 0)),
  );
}

export function chart(o: ChartOptions): HTMLElement {
  // Nothing to plot: say so instead of an axis scaled to nothing (ticks like "0.000001").
  if (isEmpty(o))
    return h(
      'figure',
      { class: 'chart chart-empty', 'data-empty': '' },
      h('figcaption', null, o.title),
      h('div', { class: 'chart-empty-box' }, 'No requests in this period'),
    );
  const n = Math.max(1, o.times.length);
  const pw = W - M.l - M.r;
  const ph = H - M.t - M.b;
  const bw = pw / n;
  let max = 0;
  for (let i = 0; i < n; i++) {
    if (o.kind === 'bars')
      max = Math.max(
        max,
        o.series.reduce((a, se) => a + (se.values[i] ?? 0), 0),
      );
    else for (const se of o.series) max = Math.max(max, se.values[i] ?? 0);
  }
  const top = niceCeil(max);
  const y = (v: number) => M.t + ph - (v / top) * ph;
  const parts: SVGElement[] = [];

  // All zeros: only the zero line is labelled (a scale of nothing would print ticks like "0.000001").
  for (let k = 0; k <= (max > 0 ? 4 : 0); k++) {
    const v = (top * k) / 4;
    parts.push(s('line', { class: 'grid', x1: M.l, x2: W - M.r, y1: y(v), y2: y(v) }));
    parts.push(s('text', { class: 'tick', x: M.l - 6, y: y(v) + 4, 'text-anchor': 'end' }, o.fmt(v)));
  }
  const labels = Math.min(6, n);
  for (let k = 0; k < labels; k++) {
    const i = Math.round((k * (n - 1)) / Math.max(1, labels - 1));
    const t = o.times[i];
    if (t === undefined) continue;
    parts.push(
      s(
        'text',
        { class: 'tick', x: M.l + (i + 0.5) * bw, y: H - 8, 'text-anchor': 'middle' },
        clock(t, o.stepS < 60),
      ),
    );
  }

  if (o.kind === 'bars') {
    for (let i = 0; i < n; i++) {
      let base = 0;
      for (const se of o.series) {
        const v = se.values[i] ?? 0;
        if (v <= 0) continue;
        parts.push(
          s('rect', {
            class: `bar ${se.cls}`,
            x: M.l + i * bw + bw * 0.12,
            width: Math.max(1, bw * 0.76),
            y: y(base + v),
            height: Math.max(0.5, y(base) - y(base + v)),
          }),
        );
        base += v;
      }
    }
  } else {
    for (const se of o.series) {
      let d = '';
      let pen = false;
      for (let i = 0; i < n; i++) {
        const v = se.values[i];
        if (v === null || v === undefined) {
          pen = false;
          continue;
        }
        d += `${pen ? 'L' : 'M'}${(M.l + (i + 0.5) * bw).toFixed(1)} ${y(v).toFixed(1)} `;
        pen = true;
      }
      if (d) parts.push(s('path', { class: `line ${se.cls}`, d }));
      // Lone points (a gap on each side) would be invisible as a path: mark every point.
      for (let i = 0; i < n; i++) {
        const v = se.values[i];
        if (v !== null && v !== undefined && n <= 120)
          parts.push(s('circle', { class: `dot ${se.cls}`, cx: M.l + (i + 0.5) * bw, cy: y(v), r: 2 }));
      }
    }
  }

  // Hover targets: one transparent column per point, titled with every series' value.
  for (let i = 0; i < n; i++) {
    const t = o.times[i];
    const text = [
      t === undefined ? '' : clock(t, true),
      ...o.series.map(
        (se) =>
          `${se.name}: ${se.values[i] === null || se.values[i] === undefined ? '—' : o.fmt(se.values[i]!)}`,
      ),
    ].join('\n');
    parts.push(
      s('rect', { class: 'hover', x: M.l + i * bw, y: M.t, width: bw, height: ph }, s('title', {}, text)),
    );
  }
  const svg = s(
    'svg',
    { viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', role: 'img', 'aria-label': o.title },
    ...parts,
  );
  return h(
    'figure',
    { class: 'chart' },
    h('figcaption', null, o.title),
    svg,
    h(
      'div',
      { class: 'legend' },
      o.series.map((se) =>
        h('span', { class: 'legend-item' }, h('span', { class: `swatch ${se.cls}` }), se.name),
      ),
      o.note ? h('span', { class: 'legend-note' }, o.note) : null,
    ),
  );
}
