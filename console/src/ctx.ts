/**
 * What every page gets: the signed-in operator, whether they may write, the live feed, and a way to
 * clean up timers when the page is left. Plus the pieces several pages share (write buttons that viewers
 * never see, the version-conflict box).
 */
import { ApiError, type Me } from './api.js';
import { type Attrs, type Child, h } from './dom.js';
import type { LiveFeed } from './live.js';

export interface Ctx {
  me: Me;
  /** Admins write; viewers see everything and change nothing (the server refuses their writes too). */
  canWrite: boolean;
  live: LiveFeed;
  /** Runs when the operator leaves the page (timers, subscriptions). */
  onLeave(fn: () => void): void;
  /** Still on this page? (an async load that finishes after navigation must not draw). */
  alive(): boolean;
}

export type Page = (root: HTMLElement, ctx: Ctx) => void | Promise<void>;

/** A button that changes something: not rendered at all for viewers. */
export function writeBtn(
  ctx: Ctx,
  label: string,
  onClick: (btn: HTMLButtonElement) => unknown,
  attrs: Attrs = {},
): HTMLButtonElement | null {
  if (!ctx.canWrite) return null;
  const b: HTMLButtonElement = h('button', {
    type: 'button',
    class: 'btn',
    ...attrs,
    'data-write': '',
    onclick: () => void onClick(b),
  });
  b.textContent = label;
  return b;
}

const show = (v: unknown) => (v === undefined ? '—' : typeof v === 'string' ? v : JSON.stringify(v));

/**
 * A 409 version_conflict: what changed under the operator, field by field (their value vs the row now),
 * with "load the current version" and "overwrite with mine" (which retries against the current version).
 */
export function conflictBox(
  err: ApiError,
  yourVersion: number,
  mine: Record<string, unknown>,
  actions: { reload: () => void; overwrite: ((version: number) => void) | null },
): HTMLElement {
  const cur = err.current ?? {};
  const now = typeof cur.version_no === 'number' ? cur.version_no : null;
  const rows: Child[] = Object.keys(mine).map((k) =>
    h(
      'tr',
      null,
      h('td', null, k),
      h('td', null, k === 'credential' ? '(hidden)' : show(mine[k])),
      h('td', null, k === 'credential' ? '(hidden)' : show(cur[k])),
    ),
  );
  return h(
    'div',
    { class: 'conflict', role: 'alert', 'data-conflict': '' },
    h('strong', null, 'Version conflict'),
    h(
      'p',
      null,
      `Someone saved this row while you were editing it: you edited version ${yourVersion}, it is now version ${now ?? '?'}. Your changes were not saved.`,
    ),
    h(
      'table',
      { class: 'grid compact' },
      h(
        'thead',
        null,
        h('tr', null, h('th', null, 'field'), h('th', null, 'yours'), h('th', null, `version ${now ?? '?'}`)),
      ),
      h('tbody', null, rows),
    ),
    h(
      'div',
      { class: 'actions' },
      h(
        'button',
        { type: 'button', class: 'btn', onclick: actions.reload },
        `Load version ${now ?? ''}`.trim(),
      ),
      actions.overwrite && now !== null
        ? h(
            'button',
            { type: 'button', class: 'btn btn-danger', onclick: () => actions.overwrite!(now) },
            'Overwrite with mine',
          )
        : null,
    ),
  );
}

export function isConflict(e: unknown): e is ApiError {
  return e instanceof ApiError && e.code === 'version_conflict';
}

export function pageHeader(title: string, ...extra: Child[]): HTMLElement {
  return h('div', { class: 'page-head' }, h('h2', null, title), h('div', { class: 'page-tools' }, extra));
}

interface Windowed {
  effective_from: string | null;
  effective_to: string | null;
}

/**
 * Lists return every version of a channel or alias (one per effective window): keep, per key, the one
 * in force now, else the next scheduled, else the latest (as the API's GET does); `versions` counts them.
 */
export function pickCurrent<T extends Windowed>(
  rows: T[],
  key: (r: T) => string,
): Array<T & { versions: number }> {
  const now = Date.now();
  const by = new Map<string, T[]>();
  for (const r of rows) by.set(key(r), [...(by.get(key(r)) ?? []), r]);
  const out: Array<T & { versions: number }> = [];
  for (const list of by.values()) {
    const from = (r: T) => (r.effective_from ? Date.parse(r.effective_from) : 0);
    const to = (r: T) => (r.effective_to ? Date.parse(r.effective_to) : Infinity);
    list.sort((a, b) => from(a) - from(b));
    const pick =
      list.find((r) => from(r) <= now && now < to(r)) ??
      list.find((r) => from(r) > now) ??
      list[list.length - 1]!;
    out.push({ ...pick, versions: list.length });
  }
  return out.sort((a, b) => key(a).localeCompare(key(b)));
}

/** in force / scheduled / ended, from an effective window. */
export function windowState(r: Windowed): 'in force' | 'scheduled' | 'ended' {
  const now = Date.now();
  if (r.effective_from && Date.parse(r.effective_from) > now) return 'scheduled';
  if (r.effective_to && Date.parse(r.effective_to) <= now) return 'ended';
  return 'in force';
}
