/**
 * A few DOM helpers: an element builder, tables, forms, modals and toasts. Text always goes in as text
 * nodes (never HTML), so nothing the API returns can inject markup.
 */
export type Child = Node | string | number | boolean | null | undefined | Child[];
export type Attrs = Record<string, unknown>;

const PROPS = new Set([
  'value',
  'checked',
  'disabled',
  'selected',
  'hidden',
  'readOnly',
  'required',
  'multiple',
]);

function append(el: Node, c: Child): void {
  if (c === null || c === undefined || c === false || c === true) return;
  if (Array.isArray(c)) for (const x of c) append(el, x);
  else if (c instanceof Node) el.appendChild(c);
  else el.appendChild(document.createTextNode(String(c)));
}

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs | null = null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function')
        el.addEventListener(k.slice(2).toLowerCase(), v as EventListener);
      else if (PROPS.has(k)) (el as unknown as Record<string, unknown>)[k] = v;
      else if (k === 'class') el.className = String(v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
export function s<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number | null | undefined> = {},
  ...children: Child[]
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs))
    if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  append(el, children);
  return el;
}

export function replace(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

export function fmtTime(v: string | number | null | undefined): string {
  if (v === null || v === undefined || v === '') return '—';
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) return String(v);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function fmtAgo(v: string | null | undefined): string {
  if (!v) return '—';
  const ms = Date.now() - new Date(v).getTime();
  if (Number.isNaN(ms)) return '—';
  const a = Math.abs(ms);
  if (a < 2_000) return 'just now';
  const t =
    a < 60_000
      ? `${Math.round(a / 1000)} s`
      : a < 3_600_000
        ? `${Math.round(a / 60_000)} min`
        : a < 86_400_000
          ? `${Math.round(a / 3_600_000)} h`
          : `${Math.round(a / 86_400_000)} d`;
  return ms >= 0 ? `${t} ago` : `in ${t}`;
}

export function fmtInt(n: number | null | undefined): string {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  return Math.round(n).toLocaleString('en-US');
}

export function fmtMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

export function badge(text: string, kind = 'neutral', attrs: Attrs = {}): HTMLSpanElement {
  return h('span', { ...attrs, class: `badge badge-${kind}` }, text);
}

export const BREAKER_KIND: Record<string, string> = {
  closed: 'ok',
  half_open: 'warn',
  open: 'bad',
  forced_open: 'bad',
};
export const breakerLabel = (s: string) => s.replace('_', ' ');

export interface Column<T> {
  title: string;
  render: (row: T) => Child;
  class?: string;
}

export function table<T>(
  columns: Column<T>[],
  rows: T[],
  opts: { empty?: string; rowAttrs?: (row: T) => Attrs; caption?: string } = {},
): HTMLTableElement {
  return h(
    'table',
    { class: 'grid' },
    opts.caption ? h('caption', null, opts.caption) : null,
    h(
      'thead',
      null,
      h(
        'tr',
        null,
        columns.map((c) => h('th', { class: c.class }, c.title)),
      ),
    ),
    h(
      'tbody',
      null,
      rows.length === 0
        ? h(
            'tr',
            null,
            h('td', { class: 'empty', colspan: columns.length }, opts.empty ?? 'Nothing here yet.'),
          )
        : rows.map((r) =>
            h(
              'tr',
              opts.rowAttrs?.(r) ?? null,
              columns.map((c) => h('td', { class: c.class }, c.render(r))),
            ),
          ),
    ),
  );
}

export function field(label: string, input: HTMLElement, hint?: string): HTMLLabelElement {
  return h(
    'label',
    { class: 'field' },
    h('span', { class: 'field-label' }, label),
    input,
    hint ? h('span', { class: 'hint' }, hint) : null,
  );
}

export function json(v: unknown): HTMLPreElement {
  return h('pre', { class: 'json' }, JSON.stringify(v, null, 2));
}

let toastBox: HTMLElement | null = null;
/** Toasts belong to the page they were raised on: navigation clears them. */
export function clearToasts(): void {
  toastBox?.replaceChildren();
}
export function toast(message: string, kind: 'info' | 'ok' | 'error' = 'info'): void {
  if (!toastBox || !toastBox.isConnected) {
    toastBox = h('div', { class: 'toasts', role: 'status', 'aria-live': 'polite' });
    document.body.appendChild(toastBox);
  }
  const t = h('div', { class: `toast toast-${kind}` }, message);
  toastBox.appendChild(t);
  setTimeout(() => t.remove(), kind === 'error' ? 8_000 : 4_000);
}

export interface ModalAction {
  label: string;
  kind?: 'primary' | 'danger' | 'plain';
  /** Return false to keep the modal open. */
  onClick?: () => unknown;
  attrs?: Attrs;
}

export function modal(
  title: string,
  body: Child,
  actions: ModalAction[],
): { close: () => void; el: HTMLElement } {
  const prev = document.activeElement as HTMLElement | null;
  const close = () => {
    back.remove();
    document.removeEventListener('keydown', onKey);
    prev?.focus?.();
  };
  const onKey = (e: KeyboardEvent) => {
    if (e.key === 'Escape') close();
  };
  const dlg = h(
    'div',
    { class: 'modal', role: 'dialog', 'aria-modal': 'true', 'aria-label': title },
    h('h3', null, title),
    h('div', { class: 'modal-body' }, body),
    h(
      'div',
      { class: 'modal-actions' },
      actions.map((a) =>
        h(
          'button',
          {
            ...a.attrs,
            type: 'button',
            class: `btn btn-${a.kind ?? 'plain'}`,
            onclick: async () => {
              const keep = (await a.onClick?.()) === false;
              if (!keep) close();
            },
          },
          a.label,
        ),
      ),
    ),
  );
  const back = h('div', { class: 'modal-back' }, dlg);
  document.body.appendChild(back);
  document.addEventListener('keydown', onKey);
  (dlg.querySelector('input, textarea, select') as HTMLElement | null)?.focus();
  return { close, el: dlg };
}

/**
 * Shows a new secret (an API key's sk, an admin token) once, with a copy button: the gateway keeps only
 * its hash, so it is never shown again.
 */
export function showSecret(title: string, secret: string, what = 'key'): void {
  const code = h('code', { class: 'secret', 'data-sk': '' }, secret);
  modal(
    title,
    [
      h(
        'p',
        null,
        h('strong', null, `Copy this ${what} now: it is shown only once.`),
        ' Anima stores only its hash.',
      ),
      code,
      h(
        'button',
        {
          type: 'button',
          class: 'btn',
          onclick: async () => {
            try {
              await navigator.clipboard.writeText(secret);
              toast('Copied', 'ok');
            } catch {
              const r = document.createRange();
              r.selectNodeContents(code);
              getSelection()?.removeAllRanges();
              getSelection()?.addRange(r);
              toast('Select and copy it (the clipboard is not available here)');
            }
          },
        },
        'Copy',
      ),
    ],
    [{ label: 'I have copied it', kind: 'primary', attrs: { 'data-close-secret': '' } }],
  );
}

/** A confirmation; with `typeToConfirm`, the confirm button works only once that word is typed. */
export function confirmDialog(opts: {
  title: string;
  message: Child;
  confirm: string;
  danger?: boolean;
  typeToConfirm?: string;
  reason?: boolean;
}): Promise<{ ok: boolean; reason: string }> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (ok: boolean) => {
      if (!done) resolve({ ok, reason: reasonInput?.value.trim() ?? '' });
      done = true;
    };
    const typed = opts.typeToConfirm
      ? h('input', {
          type: 'text',
          name: 'confirm-text',
          autocomplete: 'off',
          placeholder: opts.typeToConfirm,
        })
      : null;
    const reasonInput = opts.reason
      ? h('input', {
          type: 'text',
          name: 'reason',
          maxlength: 500,
          placeholder: 'why (recorded in the audit log)',
        })
      : null;
    const m = modal(
      opts.title,
      [
        h('div', null, opts.message),
        reasonInput ? field('Reason', reasonInput) : null,
        typed ? field(`Type ${opts.typeToConfirm} to confirm`, typed) : null,
      ],
      [
        { label: 'Cancel', onClick: () => finish(false) },
        {
          label: opts.confirm,
          kind: opts.danger ? 'danger' : 'primary',
          attrs: { 'data-confirm': '' },
          onClick: () => {
            if (typed && typed.value.trim() !== opts.typeToConfirm) {
              typed.classList.add('invalid');
              typed.focus();
              return false;
            }
            finish(true);
            return true;
          },
        },
      ],
    );
    // Escape or a click outside cancels.
    const obs = new MutationObserver(() => {
      if (!m.el.isConnected) {
        obs.disconnect();
        finish(false);
      }
    });
    obs.observe(document.body, { childList: true });
  });
}

export function errorText(e: unknown): string {
  if (e && typeof e === 'object' && 'message' in e) return String((e as Error).message);
  return String(e);
}

/** Disables a button while `fn` runs (no double submits); errors become a toast. */
export async function busy<T>(btn: HTMLButtonElement | null, fn: () => Promise<T>): Promise<T | undefined> {
  if (btn) btn.disabled = true;
  try {
    return await fn();
  } catch (e) {
    toast(errorText(e), 'error');
    return undefined;
  } finally {
    if (btn) btn.disabled = false;
  }
}
