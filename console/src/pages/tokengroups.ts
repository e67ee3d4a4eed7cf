/**
 * Token groups: price tiers for keys. A key in a group is sold at the alias price times the group's
 * multiplier (integer parts per million, shown as a factor: 1,250,000 ppm = ×1.25), and a group may carry
 * its own limits. Every group with its effective window (in force, scheduled, ended); new group; edit name,
 * multiplier and enabled with the version read (If-Match): a stale one shows the conflict.
 */
import { api, enc, get } from '../api.js';
import { type Ctx, conflictBox, isConflict, pageHeader, windowState, writeBtn } from '../ctx.js';
import { badge, busy, errorText, field, fmtTime, h, replace, table, toast } from '../dom.js';
import { formatFactor, formatMicros, formatPpm, parseFactor } from '../money.js';

interface TokenGroup {
  id: string;
  name: string;
  /** Integer parts per million, as a decimal string. */
  price_multiplier_ppm: string;
  enabled: boolean;
  version_no: number;
  effective_from: string | null;
  effective_to: string | null;
  created_at: string | null;
  updated_at: string | null;
}

const STATE_KIND: Record<string, string> = { 'in force': 'ok', scheduled: 'warn', ended: 'neutral' };
const ID_PATTERN = '[a-zA-Z0-9][a-zA-Z0-9._:\\-]{0,63}';
const localInput = (d: Date) =>
  new Date(d.getTime() - d.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);

/** A multiplier input (a factor like 1.25) whose hint shows the integer ppm that will be sent, or why not. */
function factorInput(
  ppm: string,
  readOnly: boolean,
): { input: HTMLInputElement; hint: HTMLElement; ppm: () => bigint } {
  const input = h('input', {
    name: 'multiplier',
    value: formatMicros(ppm, 2).replace(/,/g, ''),
    inputmode: 'decimal',
    required: true,
    readOnly,
    class: 'narrow',
  });
  const hint = h('span', { class: 'hint', 'data-ppm': '' });
  const show = () => {
    try {
      const v = parseFactor(input.value);
      hint.textContent = `${formatFactor(v)} = ${formatPpm(v)}`;
      input.classList.remove('invalid');
    } catch (e) {
      hint.textContent = errorText(e);
      input.classList.add('invalid');
    }
  };
  input.addEventListener('input', show);
  show();
  return { input, hint, ppm: () => parseFactor(input.value) };
}

export async function tokenGroupsPage(root: HTMLElement, ctx: Ctx): Promise<void> {
  const tableBox = h('div', { class: 'table-box' });
  const editor = h('section', { class: 'panel', id: 'token-group-editor', hidden: true });
  let groups: TokenGroup[] = [];
  root.append(
    pageHeader(
      'Token groups',
      writeBtn(ctx, 'New token group', () => openCreate(), { class: 'btn btn-primary' }),
      h('button', { type: 'button', class: 'btn', onclick: () => void load() }, 'Refresh'),
    ),
    h(
      'p',
      { class: 'muted small' },
      "A key in a token group pays the alias's sale price times the group's multiplier (×1 = list price; cost is unaffected). Multipliers are kept as integer parts per million.",
    ),
    editor,
    tableBox,
  );
  const closeEditor = () => {
    editor.hidden = true;
    replace(editor);
  };

  const setEnabled = async (g: TokenGroup, enabled: boolean, btn: HTMLButtonElement) => {
    await busy(btn, async () => {
      try {
        await api('PATCH', `/token-groups/${enc(g.id)}`, { enabled }, { ifMatch: g.version_no });
        toast(`${g.id} ${enabled ? 'enabled' : 'disabled'}`, 'ok');
      } catch (e) {
        if (isConflict(e))
          toast(
            `${g.id} changed meanwhile (now version ${String(e.current?.version_no)}): reloaded, try again.`,
            'error',
          );
        else throw e;
      }
      await load();
    });
  };

  const load = async () => {
    const list = await get<{ data: TokenGroup[] }>('/token-groups?limit=500');
    if (!ctx.alive()) return;
    groups = [...list.data].sort((a, b) => a.id.localeCompare(b.id));
    replace(
      tableBox,
      table(
        [
          {
            title: 'Group',
            render: (g) =>
              h(
                'div',
                null,
                h('div', { class: 'strong' }, g.name),
                h('div', { class: 'muted small mono' }, g.id),
              ),
          },
          {
            title: 'Multiplier',
            render: (g) =>
              h(
                'div',
                { 'data-col': 'multiplier' },
                h('span', { class: 'strong' }, formatFactor(g.price_multiplier_ppm)),
                h('div', { class: 'muted small' }, formatPpm(g.price_multiplier_ppm)),
              ),
          },
          {
            title: 'Enabled',
            render: (g) => (g.enabled ? badge('enabled', 'ok') : badge('disabled', 'bad')),
          },
          {
            title: 'Window',
            render: (g) =>
              h(
                'div',
                null,
                badge(windowState(g), STATE_KIND[windowState(g)]),
                h('div', { class: 'small' }, `${fmtTime(g.effective_from)} →`),
                h('div', { class: 'small' }, g.effective_to ? fmtTime(g.effective_to) : 'open-ended'),
              ),
          },
          { title: 'Version', render: (g) => `v${g.version_no}`, class: 'num' },
          { title: 'Updated', render: (g) => fmtTime(g.updated_at) },
          {
            title: '',
            class: 'actions',
            render: (g) => [
              writeBtn(ctx, g.enabled ? 'Disable' : 'Enable', (b) => setEnabled(g, !g.enabled, b)),
              h(
                'button',
                { type: 'button', class: 'btn', onclick: () => void openEdit(g.id) },
                ctx.canWrite ? 'Edit' : 'View',
              ),
            ],
          },
        ],
        groups,
        {
          empty: 'No token groups yet: every key pays the list price.',
          rowAttrs: (g) => ({ 'data-token-group': g.id }),
        },
      ),
    );
  };

  // ---- edit one group (optimistic locking) ----
  const openEdit = async (id: string, note?: HTMLElement) => {
    const g = await get<TokenGroup>(`/token-groups/${enc(id)}`);
    if (!ctx.alive()) return;
    editor.hidden = false;
    const ro = !ctx.canWrite;
    const name = h('input', { name: 'name', value: g.name, required: true, readOnly: ro });
    const mult = factorInput(g.price_multiplier_ppm, ro);
    const enabled = h('input', { type: 'checkbox', name: 'enabled', checked: g.enabled, disabled: ro });
    const conflict = h('div');

    const changes = (): Record<string, unknown> | null => {
      const out: Record<string, unknown> = {};
      if (name.value.trim() !== g.name) out.name = name.value.trim();
      let ppm: bigint;
      try {
        ppm = mult.ppm();
      } catch (e) {
        toast(errorText(e), 'error');
        mult.input.focus();
        return null;
      }
      if (ppm !== BigInt(g.price_multiplier_ppm)) out.price_multiplier_ppm = ppm.toString();
      if (enabled.checked !== g.enabled) out.enabled = enabled.checked;
      return out;
    };

    const save = async (version: number) => {
      const body = changes();
      if (!body) return;
      if (Object.keys(body).length === 0) {
        toast('Nothing changed.');
        return;
      }
      await busy(form.querySelector<HTMLButtonElement>('button[type=submit]'), async () => {
        try {
          const row = await api<TokenGroup>('PATCH', `/token-groups/${enc(g.id)}`, body, {
            ifMatch: version,
          });
          toast(`Saved ${g.id} (version ${row.version_no})`, 'ok');
          await load();
          await openEdit(
            g.id,
            h('p', { class: 'ok-note', 'data-saved': '' }, `Saved as version ${row.version_no}.`),
          );
        } catch (e) {
          if (!isConflict(e)) throw e;
          replace(
            conflict,
            conflictBox(e, version, body, {
              reload: () => void openEdit(g.id),
              overwrite: (v) => void save(v),
            }),
          );
          await load();
        }
      });
    };

    const form = h(
      'form',
      {
        class: 'editor',
        'data-editing': g.id,
        'data-version': String(g.version_no),
        onsubmit: (e: Event) => {
          e.preventDefault();
          void save(g.version_no);
        },
      },
      h(
        'h3',
        null,
        `${ro ? 'Token group' : 'Edit token group'} ${g.id}`,
        ' ',
        badge(`version ${g.version_no}`, 'neutral', { 'data-version-badge': '' }),
        ' ',
        badge(windowState(g), STATE_KIND[windowState(g)]),
      ),
      note ?? null,
      h(
        'div',
        { class: 'form-grid' },
        field('Name', name),
        h(
          'label',
          { class: 'field' },
          h('span', { class: 'field-label' }, 'Price multiplier (factor)'),
          mult.input,
          mult.hint,
        ),
        h(
          'label',
          { class: 'field' },
          h('span', { class: 'field-label' }, 'Enabled'),
          h('span', { class: 'check' }, enabled, ' enabled'),
        ),
      ),
      h(
        'p',
        { class: 'muted small' },
        `In force from ${fmtTime(g.effective_from)} ${g.effective_to ? `until ${fmtTime(g.effective_to)}` : '(open-ended)'}; created ${fmtTime(g.created_at)}, last saved ${fmtTime(g.updated_at)}.`,
      ),
      conflict,
      h(
        'div',
        { class: 'actions' },
        ro ? null : h('button', { type: 'submit', class: 'btn btn-primary', 'data-write': '' }, 'Save'),
        h('button', { type: 'button', class: 'btn btn-plain', onclick: closeEditor }, 'Close'),
      ),
    );
    replace(editor, form);
    editor.scrollIntoView({ block: 'nearest' });
  };

  // ---- new group ----
  const openCreate = () => {
    editor.hidden = false;
    const id = h('input', {
      name: 'id',
      required: true,
      pattern: ID_PATTERN,
      placeholder: 'e.g. enterprise',
      title: 'letters, digits, . _ : - (1-64, starting with a letter or digit)',
    });
    const name = h('input', { name: 'name', required: true });
    const mult = factorInput('1000000', false);
    const from = h('input', {
      type: 'datetime-local',
      name: 'effective_from',
      value: localInput(new Date()),
    });
    const to = h('input', { type: 'datetime-local', name: 'effective_to' });
    const form = h(
      'form',
      {
        class: 'editor',
        id: 'new-token-group',
        onsubmit: async (e: Event) => {
          e.preventDefault();
          let ppm: bigint;
          try {
            ppm = mult.ppm();
          } catch (x) {
            toast(errorText(x), 'error');
            mult.input.focus();
            return;
          }
          await busy(form.querySelector('button[type=submit]'), async () => {
            const body: Record<string, unknown> = {
              id: id.value.trim(),
              name: name.value.trim(),
              price_multiplier_ppm: ppm.toString(),
            };
            if (from.value) body.effective_from = new Date(from.value).toISOString();
            if (to.value) body.effective_to = new Date(to.value).toISOString();
            const row = await api<TokenGroup>('POST', '/token-groups', body);
            toast(`Created token group ${row.id} (${formatFactor(row.price_multiplier_ppm)})`, 'ok');
            closeEditor();
            await load();
          });
        },
      },
      h('h3', null, 'New token group'),
      h(
        'div',
        { class: 'form-grid' },
        field('Id', id, 'what keys name in token_group_id; cannot be changed'),
        field('Name', name),
        h(
          'label',
          { class: 'field' },
          h('span', { class: 'field-label' }, 'Price multiplier (factor)'),
          mult.input,
          mult.hint,
        ),
        field('In force from (local time)', from),
        field('Until (optional)', to),
      ),
      h(
        'div',
        { class: 'actions' },
        h('button', { type: 'submit', class: 'btn btn-primary' }, 'Create token group'),
        h('button', { type: 'button', class: 'btn btn-plain', onclick: closeEditor }, 'Cancel'),
      ),
    );
    replace(editor, form);
    id.focus();
  };

  await load();
}
