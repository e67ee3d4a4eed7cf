/**
 * The audit log: every write (config rows, breakers, kill switch, wallet top-ups, cache, task cancels),
 * who made it, when, and the row before and after.
 */
import { get, qs } from '../api.js';
import { type Ctx, pageHeader } from '../ctx.js';
import { badge, busy, fmtTime, h, json, replace } from '../dom.js';

interface Entry {
  id: string;
  at: string;
  actor: string;
  action: string;
  entity: string;
  entity_key: string;
  before: unknown;
  after: unknown;
  request_id: string | null;
}

const PAGE = 50;

/** The top-level fields whose value differs between before and after. */
function changed(before: unknown, after: unknown): string[] {
  if (!before || !after || typeof before !== 'object' || typeof after !== 'object') return [];
  const b = before as Record<string, unknown>;
  const a = after as Record<string, unknown>;
  return [...new Set([...Object.keys(b), ...Object.keys(a)])].filter(
    (k) => !['updated_at', 'version_no'].includes(k) && JSON.stringify(b[k]) !== JSON.stringify(a[k]),
  );
}

export async function auditPage(root: HTMLElement, ctx: Ctx): Promise<void> {
  const entity = h(
    'select',
    { name: 'entity' },
    [
      '',
      'channel',
      'alias',
      'app',
      'api_key',
      'quota',
      'price',
      'token_group',
      'circuit',
      'setting',
      'cache',
      'admin_token',
      'task',
    ].map((e) => h('option', { value: e }, e || 'any entity')),
  );
  const key = h('input', { name: 'key', placeholder: 'code / id', class: 'narrow' });
  const out = h('div', { class: 'table-box' });
  let offset = 0;
  root.append(
    pageHeader('Audit log'),
    h(
      'form',
      {
        class: 'inline-form',
        onsubmit: (e: Event) => {
          e.preventDefault();
          offset = 0;
          void busy(null, load);
        },
      },
      entity,
      key,
      h('button', { type: 'submit', class: 'btn' }, 'Filter'),
    ),
    h('p', { class: 'muted small' }, 'Newest first. Click an entry for the row before and after.'),
    out,
  );

  const load = async () => {
    const r = await get<{ data: Entry[] }>(
      `/audit${qs({ entity: entity.value, key: key.value.trim(), limit: PAGE, offset })}`,
    );
    if (!ctx.alive()) return;
    const body = h('tbody');
    for (const e of r.data) {
      const diff = h(
        'tr',
        { class: 'entries', hidden: true },
        h(
          'td',
          { colspan: 6 },
          h(
            'div',
            { class: 'two-col' },
            h('div', null, h('h4', null, 'Before'), json(e.before)),
            h('div', null, h('h4', null, 'After'), json(e.after)),
          ),
        ),
      );
      const fields = changed(e.before, e.after);
      body.append(
        h(
          'tr',
          { class: 'clickable', 'data-audit': e.id, onclick: () => (diff.hidden = !diff.hidden) },
          h('td', null, fmtTime(e.at)),
          h('td', null, e.actor),
          h('td', null, badge(e.action)),
          h('td', null, e.entity),
          h('td', { class: 'mono small' }, e.entity_key),
          h(
            'td',
            { class: 'small' },
            fields.length
              ? fields.join(', ')
              : e.before === null
                ? 'created'
                : e.after === null
                  ? 'removed'
                  : '—',
          ),
        ),
        diff,
      );
    }
    if (!r.data.length) body.append(h('tr', null, h('td', { colspan: 6, class: 'empty' }, 'No entries.')));
    replace(
      out,
      h(
        'table',
        { class: 'grid', id: 'audit' },
        h(
          'thead',
          null,
          h(
            'tr',
            null,
            ['When', 'Who', 'Action', 'Entity', 'Key', 'Changed'].map((t) => h('th', null, t)),
          ),
        ),
        body,
      ),
      h(
        'div',
        { class: 'pager' },
        h(
          'button',
          {
            type: 'button',
            class: 'btn',
            disabled: offset === 0,
            onclick: () => ((offset = Math.max(0, offset - PAGE)), void load()),
          },
          '← Newer',
        ),
        h('span', { class: 'muted' }, ` ${r.data.length ? offset + 1 : 0}–${offset + r.data.length} `),
        h(
          'button',
          {
            type: 'button',
            class: 'btn',
            disabled: r.data.length < PAGE,
            onclick: () => ((offset += PAGE), void load()),
          },
          'Older →',
        ),
      ),
    );
  };
  await load();
}
