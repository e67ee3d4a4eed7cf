/**
 * Prices: sale and cost per unit for an alias (optionally one channel of it), each row with its effective
 * window — in force, scheduled or ended. A new price starts at a chosen time; ending one sets its
 * effective_to (both through the versioned, audited admin API). Amounts in currency units, sent as
 * integer micro-units.
 */
import { api, enc, get, qs } from '../api.js';
import { type Ctx, isConflict, pageHeader, windowState, writeBtn } from '../ctx.js';
import { badge, busy, confirmDialog, field, fmtTime, h, replace, table, toast } from '../dom.js';
import { big, formatMoney, parseMoney, percent } from '../money.js';

type Price = Record<string, string | number | null> & {
  id: string;
  alias: string;
  channel: string | null;
  version_no: number;
  effective_from: string | null;
  effective_to: string | null;
};

const BASE_UNITS = [
  'input_per_mtok',
  'output_per_mtok',
  'cached_per_mtok',
  'per_request',
  'per_image',
  'per_video_second',
  'per_track',
];
const UNIT_LABEL: Record<string, string> = {
  input_per_mtok: 'input / MTok',
  output_per_mtok: 'output / MTok',
  cached_per_mtok: 'cached input / MTok',
  per_request: 'per request',
  per_image: 'per image',
  per_video_second: 'per second of video',
  per_track: 'per track',
  per_mchar: 'per million characters',
  per_audio_second: 'per second of audio',
  per_cache_hit: 'per cache hit',
};
const STATE_KIND: Record<string, string> = { 'in force': 'ok', scheduled: 'warn', ended: 'neutral' };

/** The units this gateway prices, read from its own OpenAPI document (so new units appear by themselves). */
async function units(): Promise<string[]> {
  try {
    const spec = await get<{ components: { schemas: { Price: { properties: Record<string, unknown> } } } }>(
      '/openapi.json',
    );
    const found = Object.keys(spec.components.schemas.Price.properties)
      .filter((k) => k.startsWith('sale_'))
      .map((k) => k.slice(5));
    return found.length ? found : BASE_UNITS;
  } catch {
    return BASE_UNITS;
  }
}

const localInput = (d: Date) =>
  new Date(d.getTime() - d.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);

export async function pricesPage(root: HTMLElement, ctx: Ctx): Promise<void> {
  const allUnits = await units();
  const aliasFilter = h(
    'select',
    { name: 'alias', onchange: () => void load() },
    h('option', { value: '' }, 'all aliases'),
  );
  const showEnded = h('input', { type: 'checkbox', name: 'show_ended', onchange: () => void load() });
  const tableBox = h('div', { class: 'table-box' });
  const form = h('section', { class: 'panel', hidden: true });
  root.append(
    pageHeader(
      'Prices',
      aliasFilter,
      h('label', { class: 'check' }, showEnded, ' show ended'),
      writeBtn(ctx, 'New price', () => openCreate(), { class: 'btn btn-primary' }),
    ),
    h(
      'p',
      { class: 'muted small' },
      'A request is priced at the row in force when it arrived; a channel row beats the alias-wide row. To change a price at time T: end the current row at T and create the next from T.',
    ),
    form,
    tableBox,
  );
  let aliases: string[] = [];
  let channels: string[] = [];

  const unitTable = (p: Price) => {
    const rows = allUnits.filter(
      (u) => big(String(p[`sale_${u}`] ?? '0')) !== 0n || big(String(p[`cost_${u}`] ?? '0')) !== 0n,
    );
    if (!rows.length) return h('span', { class: 'muted' }, 'free');
    return h(
      'table',
      { class: 'mini' },
      h('tr', null, h('th', null, ''), h('th', null, 'sale'), h('th', null, 'cost'), h('th', null, 'margin')),
      rows.map((u) => {
        const sale = big(String(p[`sale_${u}`] ?? '0'));
        const cost = big(String(p[`cost_${u}`] ?? '0'));
        return h(
          'tr',
          null,
          h('td', null, UNIT_LABEL[u] ?? u),
          h('td', { class: 'num' }, formatMoney(sale)),
          h('td', { class: 'num' }, formatMoney(cost)),
          h('td', { class: 'num' }, percent(sale - cost, sale)),
        );
      }),
    );
  };

  const endPrice = async (p: Price, btn: HTMLButtonElement) => {
    const at = h('input', { type: 'datetime-local', name: 'end_at', value: localInput(new Date()) });
    const { ok } = await confirmDialog({
      title: `End this price of ${p.alias}${p.channel ? ` on ${p.channel}` : ''}?`,
      message: h(
        'div',
        null,
        'Requests arriving from this time on no longer use it.',
        field('End at (your local time)', at),
      ),
      confirm: 'End price',
      danger: true,
    });
    if (!ok) return;
    await busy(btn, async () => {
      try {
        await api(
          'PATCH',
          `/prices/${enc(p.id)}`,
          { effective_to: new Date(at.value).toISOString() },
          { ifMatch: p.version_no },
        );
        toast('Price ended', 'ok');
      } catch (e) {
        if (!isConflict(e)) throw e;
        toast('This price changed meanwhile: reloaded.', 'error');
      }
      await load();
    });
  };

  const load = async () => {
    const [list, al, circ] = await Promise.all([
      get<{ data: Price[] }>(`/prices${qs({ alias: aliasFilter.value, limit: 500 })}`),
      get<{ data: Array<{ name: string }> }>('/aliases?limit=500'),
      get<{ data: Array<{ channel: string }> }>('/circuits'),
    ]);
    if (!ctx.alive()) return;
    aliases = [...new Set(al.data.map((a) => a.name))].sort();
    channels = circ.data.map((c) => c.channel);
    if (aliasFilter.options.length === 1)
      for (const a of aliases) aliasFilter.appendChild(h('option', { value: a }, a));
    const rows = list.data
      .filter((p) => showEnded.checked || windowState(p) !== 'ended')
      .sort(
        (a, b) =>
          a.alias.localeCompare(b.alias) ||
          (a.channel ?? '').localeCompare(b.channel ?? '') ||
          (a.effective_from ?? '').localeCompare(b.effective_from ?? ''),
      );
    replace(
      tableBox,
      table(
        [
          { title: 'Alias', render: (p) => h('span', { class: 'strong' }, p.alias) },
          { title: 'Channel', render: (p) => p.channel ?? h('span', { class: 'muted' }, 'any') },
          {
            title: 'Window',
            render: (p) =>
              h(
                'div',
                null,
                badge(windowState(p), STATE_KIND[windowState(p)]),
                h('div', { class: 'small' }, `${fmtTime(p.effective_from)} →`),
                h('div', { class: 'small' }, p.effective_to ? fmtTime(p.effective_to) : 'open-ended'),
              ),
          },
          { title: 'Prices', render: unitTable },
          { title: 'Version', render: (p) => `v${p.version_no}`, class: 'num' },
          {
            title: '',
            render: (p) => (windowState(p) === 'ended' ? null : writeBtn(ctx, 'End…', (b) => endPrice(p, b))),
            class: 'actions',
          },
        ],
        rows,
        {
          empty: 'No prices: requests are served unpriced (and book nothing).',
          rowAttrs: (p) => ({ 'data-price': p.id }),
        },
      ),
    );
  };

  const openCreate = () => {
    form.hidden = false;
    const alias = h(
      'select',
      { name: 'alias', required: true },
      aliases.map((a) => h('option', { value: a, selected: a === aliasFilter.value }, a)),
    );
    const channel = h(
      'select',
      { name: 'channel' },
      h('option', { value: '' }, 'any channel'),
      channels.map((c) => h('option', { value: c }, c)),
    );
    const from = h('input', {
      type: 'datetime-local',
      name: 'effective_from',
      value: localInput(new Date()),
    });
    const to = h('input', { type: 'datetime-local', name: 'effective_to' });
    const inputs = new Map<string, HTMLInputElement>();
    const grid = h(
      'table',
      { class: 'mini' },
      h('tr', null, h('th', null, 'unit'), h('th', null, 'sale'), h('th', null, 'cost')),
      allUnits.map((u) => {
        const sale = h('input', {
          name: `sale_${u}`,
          placeholder: '0',
          inputmode: 'decimal',
          class: 'narrow',
        });
        const cost = h('input', {
          name: `cost_${u}`,
          placeholder: '0',
          inputmode: 'decimal',
          class: 'narrow',
        });
        inputs.set(`sale_${u}`, sale);
        inputs.set(`cost_${u}`, cost);
        return h('tr', null, h('td', null, UNIT_LABEL[u] ?? u), h('td', null, sale), h('td', null, cost));
      }),
    );
    const el = h(
      'form',
      {
        class: 'editor',
        onsubmit: async (e: Event) => {
          e.preventDefault();
          await busy(el.querySelector('button[type=submit]'), async () => {
            const body: Record<string, unknown> = { alias: alias.value };
            if (channel.value) body.channel = channel.value;
            if (from.value) body.effective_from = new Date(from.value).toISOString();
            if (to.value) body.effective_to = new Date(to.value).toISOString();
            for (const [k, inp] of inputs) if (inp.value.trim()) body[k] = parseMoney(inp.value).toString();
            await api('POST', '/prices', body);
            toast(`Price created for ${alias.value}`, 'ok');
            form.hidden = true;
            replace(form);
            await load();
          });
        },
      },
      h('h3', null, 'New price'),
      h(
        'div',
        { class: 'form-grid' },
        field('Alias', alias),
        field('Channel', channel),
        field('In force from (local time)', from),
        field('Until (optional)', to),
      ),
      h(
        'p',
        { class: 'muted small' },
        'Amounts in currency units, up to 6 decimals (stored as integer micro-units). Empty = 0.',
      ),
      grid,
      h(
        'div',
        { class: 'actions' },
        h('button', { type: 'submit', class: 'btn btn-primary' }, 'Create price'),
        h(
          'button',
          { type: 'button', class: 'btn btn-plain', onclick: () => ((form.hidden = true), replace(form)) },
          'Cancel',
        ),
      ),
    );
    replace(form, el);
  };

  await load();
}
