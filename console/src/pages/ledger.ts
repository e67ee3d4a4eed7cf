/**
 * Ledger: the trial balance, every account's balance, the spread report (revenue, cost, spread by app,
 * alias, channel, day) and the journals with their entries. All amounts are integer micro-units from the
 * API, formatted with bigint arithmetic.
 */
import { ApiError, get, qs } from '../api.js';
import { type Ctx, pageHeader } from '../ctx.js';
import { badge, busy, field, fmtTime, h, replace, table } from '../dom.js';
import { big, formatMoney, percent } from '../money.js';

interface Account {
  code: string;
  kind: string;
  debits_posted: string;
  credits_posted: string;
  debits_pending: string;
  credits_pending: string;
}
interface Trial {
  balanced: boolean;
  debits_micros: string;
  credits_micros: string;
  pending_debits_micros: string;
  pending_credits_micros: string;
  mismatches: unknown[];
  accounts: Account[];
}
interface Journal {
  id: string;
  kind: string;
  state: string;
  request_id: string | null;
  task_id: string | null;
  app_id: string | null;
  alias: string | null;
  channel: string | null;
  memo: string | null;
  created_at: string;
  entries: Array<{ account: string; debit_micros: string; credit_micros: string; pending: boolean }>;
}

/** Accounts whose balance is debits minus credits (what is owed to us, what we spent); others credits minus debits. */
const debitNormal = (a: Account) =>
  a.kind === 'asset' || a.kind === 'expense' || a.code.startsWith('receivable:');
const PAGE = 50;

export async function ledgerPage(root: HTMLElement, ctx: Ctx): Promise<void> {
  const status = h('div', { class: 'tiles' });
  const balances = h('div', { class: 'table-box' });
  const report = h('div', { class: 'table-box' });
  const journals = h('div', { class: 'table-box' });
  root.append(
    pageHeader(
      'Ledger',
      h('button', { type: 'button', class: 'btn', onclick: () => void loadAll() }, 'Refresh'),
    ),
    status,
    h('h3', null, 'Balances'),
    balances,
    h('h3', null, 'Spread report'),
    report,
    h('h3', null, 'Journals'),
    journals,
  );

  // ---- trial balance, status and balances ----
  const loadBalances = async () => {
    const [t, st] = await Promise.all([
      get<Trial>('/billing/trial-balance'),
      get<Record<string, unknown>>('/billing/status'),
    ]);
    if (!ctx.alive()) return;
    replace(
      status,
      h(
        'div',
        { class: `tile ${t.balanced ? 'tile-ok' : 'tile-bad'}`, 'data-tile': 'trial-balance' },
        h('div', { class: 'tile-label' }, 'Trial balance'),
        h('div', { class: 'tile-value' }, t.balanced ? 'balanced' : 'NOT balanced'),
        h(
          'div',
          { class: 'tile-sub' },
          `debits ${formatMoney(t.debits_micros)} = credits ${formatMoney(t.credits_micros)}`,
        ),
      ),
      h(
        'div',
        { class: 'tile' },
        h('div', { class: 'tile-label' }, 'Pending (holds)'),
        h('div', { class: 'tile-value' }, formatMoney(t.pending_debits_micros)),
        h('div', { class: 'tile-sub' }, `credits ${formatMoney(t.pending_credits_micros)}`),
      ),
      h(
        'div',
        { class: `tile ${st.blocked ? 'tile-bad' : ''}` },
        h('div', { class: 'tile-label' }, 'Journal writer'),
        h('div', { class: 'tile-value' }, `${String(st.queued)} queued`),
        h(
          'div',
          { class: 'tile-sub' },
          `${String(st.backend)} · spilled ${String(st.spilled)} · ${st.blocked ? 'BLOCKED' : 'ok'}`,
        ),
      ),
    );
    replace(
      balances,
      table(
        [
          { title: 'Account', render: (a) => h('span', { class: 'mono' }, a.code) },
          { title: 'Kind', render: (a) => a.kind },
          { title: 'Debits', render: (a) => formatMoney(a.debits_posted), class: 'num' },
          { title: 'Credits', render: (a) => formatMoney(a.credits_posted), class: 'num' },
          {
            title: 'Balance',
            render: (a) => {
              const dr = big(a.debits_posted);
              const cr = big(a.credits_posted);
              return h('strong', null, formatMoney(debitNormal(a) ? dr - cr : cr - dr));
            },
            class: 'num',
          },
          {
            title: 'Pending dr / cr',
            render: (a) => `${formatMoney(a.debits_pending)} / ${formatMoney(a.credits_pending)}`,
            class: 'num small',
          },
        ],
        t.accounts,
        { empty: 'No accounts yet.', rowAttrs: (a) => ({ 'data-account': a.code }) },
      ),
      t.mismatches.length
        ? h(
            'p',
            { class: 'error' },
            `${t.mismatches.length} account(s) whose totals disagree with their entries.`,
          )
        : null,
    );
  };

  // ---- spread report ----
  const dims = ['app', 'alias', 'channel', 'day'];
  const checks = new Map(
    dims.map((d) => [d, h('input', { type: 'checkbox', name: `group_${d}`, checked: d !== 'day' })]),
  );
  const from = h('input', { type: 'date', name: 'from' });
  const to = h('input', { type: 'date', name: 'to' });
  const reportOut = h('div');
  const loadReport = async () => {
    const groupBy = dims.filter((d) => checks.get(d)!.checked);
    const r = await get<{ data: Array<Record<string, string | number | null>> }>(
      `/billing/report${qs({ group_by: groupBy.join(','), from: from.value, to: to.value })}`,
    );
    if (!ctx.alive()) return;
    let rev = 0n;
    let cost = 0n;
    for (const row of r.data) {
      rev += big(String(row.revenue_micros ?? '0'));
      cost += big(String(row.cost_micros ?? '0'));
    }
    replace(
      reportOut,
      table(
        [
          ...groupBy.map((d) => ({
            title: d,
            render: (row: Record<string, string | number | null>) => String(row[d] ?? '—'),
          })),
          { title: 'Journals', render: (row) => String(row.journals), class: 'num' },
          { title: 'Revenue', render: (row) => formatMoney(String(row.revenue_micros)), class: 'num' },
          { title: 'Cost', render: (row) => formatMoney(String(row.cost_micros)), class: 'num' },
          {
            title: 'Uncollected',
            render: (row) => formatMoney(String(row.uncollected_micros)),
            class: 'num',
          },
          {
            title: 'Spread',
            render: (row) => h('strong', null, formatMoney(String(row.spread_micros))),
            class: 'num',
          },
          {
            title: 'Margin',
            render: (row) => percent(big(String(row.spread_micros)), big(String(row.revenue_micros))),
            class: 'num',
          },
        ],
        r.data,
        { empty: 'Nothing sold in this period.' },
      ),
      h(
        'p',
        { class: 'muted' },
        `Total: revenue ${formatMoney(rev)} · cost ${formatMoney(cost)} · spread ${formatMoney(rev - cost)} (${percent(rev - cost, rev)})`,
      ),
    );
  };
  replace(
    report,
    h(
      'form',
      {
        class: 'inline-form',
        onsubmit: (e: Event) => {
          e.preventDefault();
          void busy(null, loadReport);
        },
      },
      h('span', { class: 'muted' }, 'group by'),
      dims.map((d) => h('label', { class: 'check' }, checks.get(d)!, ` ${d}`)),
      field('from', from),
      field('to (exclusive)', to),
      h('button', { type: 'submit', class: 'btn' }, 'Run report'),
    ),
    reportOut,
  );

  // ---- journals ----
  const f = {
    app_id: h('input', { name: 'app_id', placeholder: 'app', class: 'narrow' }),
    kind: h(
      'select',
      { name: 'kind' },
      ['', 'sale', 'fund', 'hold', 'post', 'void', 'correction', 'cost'].map((k) =>
        h('option', { value: k }, k || 'any kind'),
      ),
    ),
    alias: h('input', { name: 'alias', placeholder: 'alias', class: 'narrow' }),
    channel: h('input', { name: 'channel', placeholder: 'channel', class: 'narrow' }),
    request_id: h('input', { name: 'request_id', placeholder: 'request id' }),
  };
  let offset = 0;
  const jOut = h('div');
  const loadJournals = async () => {
    const r = await get<{ data: Journal[] }>(
      `/billing/journals${qs({ app_id: f.app_id.value.trim(), kind: f.kind.value, alias: f.alias.value.trim(), channel: f.channel.value.trim(), request_id: f.request_id.value.trim(), limit: PAGE, offset })}`,
    );
    if (!ctx.alive()) return;
    const body = h('tbody');
    for (const j of r.data) {
      const total = j.entries.reduce((a, e) => a + big(e.debit_micros), 0n);
      const entries = h(
        'tr',
        { class: 'entries', hidden: true },
        h(
          'td',
          { colspan: 7 },
          table(
            [
              { title: 'Account', render: (e) => h('span', { class: 'mono' }, e.account) },
              {
                title: 'Debit',
                render: (e) => (big(e.debit_micros) ? formatMoney(e.debit_micros) : ''),
                class: 'num',
              },
              {
                title: 'Credit',
                render: (e) => (big(e.credit_micros) ? formatMoney(e.credit_micros) : ''),
                class: 'num',
              },
              { title: '', render: (e) => (e.pending ? badge('pending', 'warn') : '') },
            ],
            j.entries,
          ),
          j.memo ? h('p', { class: 'muted small' }, j.memo) : null,
        ),
      );
      body.append(
        h(
          'tr',
          { 'data-journal': j.id, class: 'clickable', onclick: () => (entries.hidden = !entries.hidden) },
          h('td', { class: 'mono small' }, j.id),
          h('td', null, fmtTime(j.created_at)),
          h('td', null, badge(j.kind), j.state !== 'posted' ? badge(j.state, 'warn') : null),
          h('td', null, j.app_id ?? '—'),
          h('td', { class: 'small' }, [j.alias, j.channel].filter(Boolean).join(' / ') || '—'),
          h('td', { class: 'mono small' }, j.request_id ?? j.task_id ?? '—'),
          h('td', { class: 'num' }, formatMoney(total)),
        ),
        entries,
      );
    }
    if (!r.data.length)
      body.append(h('tr', null, h('td', { colspan: 7, class: 'empty' }, 'No journals match.')));
    replace(
      jOut,
      h(
        'table',
        { class: 'grid', id: 'journals' },
        h(
          'thead',
          null,
          h(
            'tr',
            null,
            ['Journal', 'Time', 'Kind', 'App', 'Alias / channel', 'Request / task', 'Amount'].map((t) =>
              h('th', null, t),
            ),
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
            onclick: () => ((offset = Math.max(0, offset - PAGE)), void loadJournals()),
          },
          '← Newer',
        ),
        h('span', { class: 'muted' }, ` ${offset + 1}–${offset + r.data.length} `),
        h(
          'button',
          {
            type: 'button',
            class: 'btn',
            disabled: r.data.length < PAGE,
            onclick: () => ((offset += PAGE), void loadJournals()),
          },
          'Older →',
        ),
      ),
    );
  };
  replace(
    journals,
    h(
      'form',
      {
        class: 'inline-form',
        onsubmit: (e: Event) => {
          e.preventDefault();
          offset = 0;
          void busy(null, loadJournals);
        },
      },
      Object.values(f),
      h('button', { type: 'submit', class: 'btn' }, 'Filter'),
    ),
    h(
      'p',
      { class: 'muted small' },
      'Click a journal to see its entries (debits equal credits in every journal).',
    ),
    jOut,
  );

  const loadAll = async () => {
    await Promise.all([loadBalances(), loadReport(), loadJournals()]);
  };
  try {
    await loadAll();
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      replace(
        root,
        pageHeader('Ledger'),
        h('p', { class: 'muted' }, 'Billing is off on this gateway: there is no ledger to show.'),
      );
      return;
    }
    throw e;
  }
}
