/**
 * Requests: the request log (GET /requests), newest first, filtered by key, app, alias, channel, status or
 * errors only, and a time window ("the minute of 14:03"); a row opens its detail: every channel tried and
 * why it was passed over, tokens, cost and sale, latency and time to first byte.
 */
import { ApiError, enc, get, qs } from '../api.js';
import { type Ctx, pageHeader } from '../ctx.js';
import { badge, busy, field, fmtMs, fmtTime, h, replace, table } from '../dom.js';
import { formatMoney } from '../money.js';

interface RouteStep {
  channel: string;
  what: string;
  reason: string;
  status?: number;
  ms?: number;
}

interface Row {
  id: string;
  at: string;
  app_id: string | null;
  key_id: string | null;
  alias: string | null;
  dialect: string;
  channel: string | null;
  upstream_model: string | null;
  stream: boolean;
  attempts: number;
  route: RouteStep[];
  status: number;
  outcome: string;
  error_code: string | null;
  tokens_in: number | null;
  tokens_out: number | null;
  cost_micros: string | null;
  sale_micros: string | null;
  latency_ms: number;
  ttfb_ms: number | null;
  cache_hit: boolean;
  aborted: boolean;
  instance: string;
}

interface Page {
  data: Row[];
  next_cursor: string | null;
}

const statusKind = (s: number) => (s < 300 ? 'ok' : s < 500 ? 'warn' : 'bad');

/** A local date-time input's value ("2026-12-02T14:03") as an ISO instant, or '' when empty. */
function isoOf(local: string): string {
  if (!local) return '';
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

export async function requestsPage(root: HTMLElement, ctx: Ctx): Promise<void> {
  const input = (name: string, placeholder: string, type = 'text') =>
    h('input', { name, placeholder, type, 'data-filter': name }) as HTMLInputElement;
  const f = {
    key: input('key', 'key id'),
    app: input('app', 'app id'),
    alias: input('alias', 'alias'),
    channel: input('channel', 'channel'),
    status: input('status', 'e.g. 502', 'number'),
    from: input('from', '', 'datetime-local'),
    to: input('to', '', 'datetime-local'),
  };
  const errorsOnly = h('input', {
    type: 'checkbox',
    name: 'errors',
    'data-filter': 'errors',
  }) as HTMLInputElement;
  const list = h('div', { class: 'table-box', id: 'requests-list' });
  const detail = h('section', { class: 'panel', id: 'request-detail', hidden: true });
  const more = h('button', { type: 'button', class: 'btn', hidden: true }, 'Older') as HTMLButtonElement;
  let rows: Row[] = [];
  let cursor: string | null = null;

  const form = h(
    'form',
    {
      class: 'filters',
      id: 'requests-filters',
      onsubmit: (e: Event) => {
        e.preventDefault();
        void load(false);
      },
    },
    field('Key', f.key),
    field('App', f.app),
    field('Alias', f.alias),
    field('Channel', f.channel),
    field('Status', f.status),
    field('From', f.from, 'your local time'),
    field('To', f.to),
    h('label', { class: 'field inline' }, errorsOnly, ' errors only'),
    h('button', { type: 'submit', class: 'btn primary' }, 'Search'),
  );
  root.append(
    pageHeader(
      'Requests',
      h('button', { type: 'button', class: 'btn', onclick: () => void load(false) }, 'Refresh'),
    ),
    h(
      'p',
      { class: 'muted small' },
      'Every data-plane request, newest first (kept for ANIMA_REQUEST_LOG_RETENTION_DAYS days). A client quotes the x-request-id it got; a row shows the channels tried and why.',
    ),
    form,
    detail,
    list,
    more,
  );

  const query = (after: string | null) =>
    qs({
      key: f.key.value.trim(),
      app: f.app.value.trim(),
      alias: f.alias.value.trim(),
      channel: f.channel.value.trim(),
      status: f.status.value.trim(),
      errors: errorsOnly.checked ? 'true' : '',
      from: isoOf(f.from.value),
      to: isoOf(f.to.value),
      limit: 50,
      cursor: after,
    });

  const show = (r: Row) => {
    detail.hidden = false;
    const money = (v: string | null) => (v === null ? '—' : formatMoney(v));
    replace(
      detail,
      h('h3', null, `Request ${r.id}`),
      h(
        'dl',
        { class: 'facts', 'data-detail': r.id },
        ...(
          [
            ['Time', fmtTime(r.at)],
            ['Status', badge(String(r.status), statusKind(r.status))],
            ['Outcome', r.outcome + (r.error_code ? ` (${r.error_code})` : '')],
            ['App / key', `${r.app_id ?? '—'} / ${r.key_id ?? '—'}`],
            ['Alias', r.alias ?? '—'],
            [
              'Answered by',
              r.channel ? `${r.channel}${r.upstream_model ? ` (${r.upstream_model})` : ''}` : '—',
            ],
            ['Dialect', `${r.dialect}${r.stream ? ', stream' : ''}${r.cache_hit ? ', cache hit' : ''}`],
            ['Tokens in / out', `${r.tokens_in ?? '—'} / ${r.tokens_out ?? '—'}`],
            ['Cost / sale', `${money(r.cost_micros)} / ${money(r.sale_micros)}`],
            ['Latency / first byte', `${fmtMs(r.latency_ms)} / ${fmtMs(r.ttfb_ms)}`],
            ['Instance', r.instance],
          ] as Array<[string, string | HTMLElement]>
        ).flatMap(([k, v]) => [h('dt', null, k), h('dd', null, v)]),
      ),
      h('h4', null, 'Channels tried'),
      r.route.length === 0 && !r.channel
        ? h('p', { class: 'muted' }, 'No channel was tried (refused before routing).')
        : table<RouteStep>(
            [
              { title: 'Channel', render: (s) => s.channel },
              { title: 'What', render: (s) => badge(s.what, s.what === 'answered' ? 'ok' : 'bad') },
              { title: 'Why', render: (s) => s.reason },
              { title: 'Status', render: (s) => (s.status === undefined ? '' : String(s.status)) },
              { title: 'Time', render: (s) => (s.ms === undefined ? '' : fmtMs(s.ms)) },
            ],
            [
              ...r.route,
              ...(r.channel && r.status < 400
                ? [{ channel: r.channel, what: 'answered', reason: 'served' }]
                : []),
            ],
            { caption: 'in the order tried' },
          ),
    );
    detail.scrollIntoView?.({ block: 'nearest' });
  };

  const render = () =>
    replace(
      list,
      table<Row>(
        [
          { title: 'Time', render: (r) => fmtTime(r.at) },
          { title: 'Status', render: (r) => badge(String(r.status), statusKind(r.status)) },
          { title: 'Key', render: (r) => r.key_id ?? '—', class: 'mono' },
          { title: 'Alias', render: (r) => r.alias ?? '—' },
          { title: 'Channel', render: (r) => r.channel ?? '—' },
          { title: 'Tries', render: (r) => String(r.attempts), class: 'num' },
          { title: 'Tokens', render: (r) => `${r.tokens_in ?? 0}/${r.tokens_out ?? 0}`, class: 'num' },
          {
            title: 'Sale',
            render: (r) => (r.sale_micros === null ? '—' : formatMoney(r.sale_micros)),
            class: 'num',
          },
          { title: 'Latency', render: (r) => fmtMs(r.latency_ms), class: 'num' },
          {
            title: '',
            render: (r) =>
              h('button', { type: 'button', class: 'btn small', onclick: () => show(r) }, 'Details'),
          },
        ],
        rows,
        {
          empty: 'No request matches.',
          rowAttrs: (r) => ({ 'data-request': r.id, 'data-status': String(r.status) }),
        },
      ),
    );

  const load = async (older: boolean) => {
    await busy(older ? more : null, async () => {
      try {
        const page = await get<Page>('/requests' + query(older ? cursor : null));
        if (!ctx.alive()) return;
        rows = older ? [...rows, ...page.data] : page.data;
        cursor = page.next_cursor;
        more.hidden = !cursor;
        render();
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) {
          replace(
            list,
            h('p', { class: 'muted' }, 'The request log is off on this gateway (ANIMA_REQUEST_LOG=0).'),
          );
          return;
        }
        throw e;
      }
    });
  };
  more.onclick = () => void load(true);
  // #/requests?key=…&app=…: filters from a link (a key's "requests" on the apps page);
  // #/requests?id=req_…: open one request (a link from elsewhere, or a pasted x-request-id)
  const params = new URLSearchParams(location.hash.split('?')[1] ?? '');
  for (const k of ['key', 'app', 'alias', 'channel', 'status'] as const) {
    const v = params.get(k);
    if (v) f[k].value = v;
  }
  if (params.get('errors') === 'true') errorsOnly.checked = true;
  const wanted = params.get('id');
  if (wanted) {
    const r = await get<Row>(`/requests/${enc(wanted)}`).catch(() => null);
    if (r && ctx.alive()) show(r);
  }
  await load(false);
}
