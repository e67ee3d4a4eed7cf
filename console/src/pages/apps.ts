/**
 * Apps and their keys: create an app; per app its wallet (fund it), its limits, its keys (create: the sk
 * is shown once; ban / unban; rotate; queue mode; per-key limits).
 */
import { ApiError, api, enc, get, qs } from '../api.js';
import { type Ctx, conflictBox, isConflict, pageHeader, pickCurrent, writeBtn } from '../ctx.js';
import { badge, busy, confirmDialog, field, fmtTime, h, replace, showSecret, table, toast } from '../dom.js';
import { formatMicros, formatMoney, parseMoney } from '../money.js';

interface App {
  id: string;
  name: string;
  enabled: boolean;
  version_no: number;
  effective_from: string | null;
  effective_to: string | null;
  created_at: string | null;
}
interface Key {
  id: string;
  app_id: string;
  name: string;
  key_prefix: string;
  enabled: boolean;
  allowed_aliases: string[] | null;
  queue_mode: 'REJECT' | 'WAIT' | 'ASYNC';
  wait_timeout_ms: number;
  max_queue: number;
  token_group_id: string | null;
  version_no: number;
  effective_from: string | null;
  effective_to: string | null;
  created_at: string | null;
}
interface Quota {
  id: string;
  scope: string;
  scope_id: string;
  max_concurrency: number;
  qps: number;
  qps_burst: number;
  tokens_per_minute: number;
  tokens_per_day: number;
  cost_per_day: string;
  cost_per_month: string;
  version_no: number;
}

const QUEUE_MODES = ['REJECT', 'WAIT', 'ASYNC'] as const;

/** The limits of one scope (app or key): create, edit (If-Match), remove. 0 = no limit. */
async function quotaEditor(
  ctx: Ctx,
  scope: 'app' | 'key',
  scopeId: string,
  title: string,
): Promise<HTMLElement> {
  const box = h('div', { class: 'quota', 'data-quota': `${scope}:${scopeId}` });
  const draw = async (note?: string) => {
    const list = await get<{ data: Quota[] }>(`/quotas${qs({ scope, scope_id: scopeId })}`);
    const q = list.data[0] ?? null;
    const ro = !ctx.canWrite;
    const num = (name: string, v: number | string, step = '1') =>
      h('input', { name, type: 'number', min: 0, step, value: String(v), readOnly: ro, class: 'narrow' });
    const money = (name: string, v: string) =>
      h('input', {
        name,
        value: formatMicros(v, 0).replace(/,/g, ''),
        readOnly: ro,
        class: 'narrow',
        inputmode: 'decimal',
      });
    const f = {
      max_concurrency: num('max_concurrency', q?.max_concurrency ?? 0),
      qps: num('qps', q?.qps ?? 0, 'any'),
      qps_burst: num('qps_burst', q?.qps_burst ?? 1),
      tokens_per_minute: num('tokens_per_minute', q?.tokens_per_minute ?? 0),
      tokens_per_day: num('tokens_per_day', q?.tokens_per_day ?? 0),
      cost_per_day: money('cost_per_day', q?.cost_per_day ?? '0'),
      cost_per_month: money('cost_per_month', q?.cost_per_month ?? '0'),
    };
    const conflict = h('div');
    const body = (): Record<string, unknown> => ({
      max_concurrency: Number(f.max_concurrency.value),
      qps: Number(f.qps.value),
      qps_burst: Number(f.qps_burst.value),
      tokens_per_minute: Number(f.tokens_per_minute.value),
      tokens_per_day: Number(f.tokens_per_day.value),
      cost_per_day: parseMoney(f.cost_per_day.value || '0').toString(),
      cost_per_month: parseMoney(f.cost_per_month.value || '0').toString(),
    });
    const save = async (version: number | null, btn: HTMLButtonElement | null) =>
      busy(btn, async () => {
        const b = body();
        try {
          if (q && version !== null) await api('PATCH', `/quotas/${enc(q.id)}`, b, { ifMatch: version });
          else await api('POST', '/quotas', { scope, scope_id: scopeId, ...b });
          toast(`Limits saved (${title})`, 'ok');
          await draw('Saved.');
        } catch (e) {
          if (!isConflict(e)) throw e;
          replace(
            conflict,
            conflictBox(e, version ?? 0, b, {
              reload: () => void draw(),
              overwrite: (v) => void save(v, null),
            }),
          );
        }
      });
    replace(
      box,
      h('h4', null, `Limits: ${title}`, q ? badge(`version ${q.version_no}`) : badge('none')),
      note ? h('p', { class: 'ok-note' }, note) : null,
      h(
        'p',
        { class: 'muted small' },
        '0 = no limit. Money in currency units (stored as integer micro-units).',
      ),
      h(
        'form',
        {
          class: 'form-grid tight',
          onsubmit: (e: Event) => {
            e.preventDefault();
            void save(
              q?.version_no ?? null,
              (e.target as HTMLFormElement).querySelector('button[type=submit]'),
            );
          },
        },
        field('Concurrency', f.max_concurrency),
        field('Requests/s', f.qps),
        field('Burst', f.qps_burst),
        field('Tokens/min', f.tokens_per_minute),
        field('Tokens/day', f.tokens_per_day),
        field('Cost/day', f.cost_per_day),
        field('Cost/month', f.cost_per_month),
        ro
          ? null
          : h(
              'div',
              { class: 'actions' },
              h(
                'button',
                { type: 'submit', class: 'btn btn-primary', 'data-write': '' },
                q ? 'Save limits' : 'Set limits',
              ),
            ),
        ro || !q
          ? null
          : h(
              'div',
              { class: 'actions' },
              h(
                'button',
                {
                  type: 'button',
                  class: 'btn btn-plain',
                  'data-write': '',
                  onclick: (e: Event) =>
                    void busy(e.currentTarget as HTMLButtonElement, async () => {
                      await api('DELETE', `/quotas/${enc(q.id)}`, undefined, { ifMatch: q.version_no });
                      toast('Limits removed', 'ok');
                      await draw();
                    }),
                },
                'Remove limits',
              ),
            ),
      ),
      conflict,
    );
  };
  await draw();
  return box;
}

export async function appsPage(root: HTMLElement, ctx: Ctx): Promise<void> {
  const appsBox = h('div', { class: 'table-box' });
  const detail = h('section', { class: 'panel', id: 'app-detail', hidden: true });
  const createBox = h('div');
  let selected: string | null = new URLSearchParams(location.hash.split('?')[1] ?? '').get('app');
  root.append(
    pageHeader(
      'Apps & keys',
      writeBtn(ctx, 'New app', () => openCreateApp(), { class: 'btn btn-primary' }),
    ),
    createBox,
    appsBox,
    detail,
  );

  const loadApps = async () => {
    const list = await get<{ data: App[] }>('/apps?limit=500');
    if (!ctx.alive()) return;
    const apps = pickCurrent(list.data, (a) => a.id);
    replace(
      appsBox,
      table(
        [
          {
            title: 'App',
            render: (a) =>
              h(
                'div',
                null,
                h('div', { class: 'strong' }, a.name),
                h('div', { class: 'muted small mono' }, a.id),
              ),
          },
          { title: 'Status', render: (a) => (a.enabled ? badge('enabled', 'ok') : badge('disabled', 'bad')) },
          { title: 'Version', render: (a) => `v${a.version_no}`, class: 'num' },
          { title: 'Created', render: (a) => fmtTime(a.created_at) },
          {
            title: '',
            render: (a) =>
              h('button', { type: 'button', class: 'btn', onclick: () => void openApp(a.id) }, 'Open'),
            class: 'actions',
          },
        ],
        apps,
        {
          empty: 'No apps yet.',
          rowAttrs: (a) => ({ 'data-app': a.id, class: a.id === selected ? 'selected' : undefined }),
        },
      ),
    );
  };

  const openCreateApp = () => {
    const id = h('input', { name: 'id', required: true, placeholder: 'app id (letters, digits, . _ : -)' });
    const name = h('input', { name: 'name', required: true });
    const billing = h(
      'select',
      { name: 'billing' },
      h('option', { value: 'postpaid' }, 'postpaid (running bill)'),
      h('option', { value: 'prepaid' }, 'prepaid (wallet)'),
    );
    const form = h(
      'form',
      {
        class: 'panel editor',
        onsubmit: async (e: Event) => {
          e.preventDefault();
          await busy(form.querySelector('button[type=submit]'), async () => {
            const row = await api<App>('POST', '/apps', {
              id: id.value.trim(),
              name: name.value.trim(),
              billing: billing.value,
            });
            toast(`Created app ${row.id}`, 'ok');
            replace(createBox);
            await loadApps();
            await openApp(row.id);
          });
        },
      },
      h('h3', null, 'New app'),
      h('div', { class: 'form-grid' }, field('Id', id), field('Name', name), field('Billing', billing)),
      h(
        'div',
        { class: 'actions' },
        h('button', { type: 'submit', class: 'btn btn-primary' }, 'Create app'),
        h('button', { type: 'button', class: 'btn btn-plain', onclick: () => replace(createBox) }, 'Cancel'),
      ),
    );
    replace(createBox, form);
    id.focus();
  };

  const openApp = async (appId: string) => {
    selected = appId;
    history.replaceState(null, '', `#/apps?app=${enc(appId)}`);
    for (const tr of appsBox.querySelectorAll<HTMLElement>('tr[data-app]'))
      tr.classList.toggle('selected', tr.dataset.app === appId);
    const [app, keysList, groupList] = await Promise.all([
      get<App>(`/apps/${enc(appId)}`),
      get<{ data: Key[] }>(`/apps/${enc(appId)}/keys?limit=500`),
      get<{ data: Array<{ id: string; name: string; enabled: boolean }> }>('/token-groups?limit=500').catch(
        () => ({ data: [] }),
      ),
    ]);
    if (!ctx.alive()) return;
    // A group's versions share its id: one option per id.
    const groups = [...new Map(groupList.data.map((g) => [g.id, g])).values()].sort((a, b) =>
      a.id.localeCompare(b.id),
    );
    const keys = pickCurrent(keysList.data, (k) => k.id).sort((a, b) =>
      (a.created_at ?? '').localeCompare(b.created_at ?? ''),
    );
    // Per key: this month's spend (the ledger, by key) and the last day's requests and errors (the request
    // log), each best-effort (billing or the request log may be off).
    const monthStart = new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), 1));
    const spend = new Map<string, string>();
    const traffic = new Map<string, { requests: number; errors: number }>();
    await Promise.all([
      get<{ data: Array<{ key: string | null; revenue_micros: string }> }>(
        `/billing/report${qs({ group_by: 'key', app: appId, from: monthStart.toISOString() })}`,
      )
        .then((r) => r.data.forEach((x) => x.key && spend.set(x.key, x.revenue_micros)))
        .catch(() => {}),
      ...keys.slice(0, 50).map((k) =>
        get<{ requests: number; errors: number }>(
          `/requests/summary${qs({ key: k.id, from: new Date(Date.now() - 86_400_000).toISOString() })}`,
        )
          .then((s) => traffic.set(k.id, s))
          .catch(() => {}),
      ),
    ]);
    if (!ctx.alive()) return;
    const keyLimits = h('div');
    detail.hidden = false;
    detail.dataset.app = appId;

    // wallet (billing may be off: 404)
    const wallet = h('div', { class: 'wallet' });
    const drawWallet = async () => {
      try {
        const w = await get<Record<string, string | null>>(`/apps/${enc(appId)}/wallet`);
        const amount = h('input', {
          name: 'amount',
          placeholder: '10.00',
          inputmode: 'decimal',
          class: 'narrow',
        });
        let idem = crypto.randomUUID(); // one top-up per submit, even on a double click or a retry
        replace(
          wallet,
          h('h4', null, 'Wallet'),
          h(
            'div',
            { class: 'kv' },
            h('span', null, 'Ledger balance'),
            h('strong', { 'data-balance': '' }, formatMoney(w.ledger_balance_micros)),
            h('span', null, 'Spendable now'),
            h('span', null, formatMoney(w.spendable_micros)),
            h('span', null, 'Reserved by requests in flight'),
            h('span', null, formatMoney(w.reserved_micros)),
            h('span', null, 'Charged, not yet written'),
            h('span', null, formatMoney(w.unwritten_micros)),
            h('span', null, 'Funded / spent (all time)'),
            h('span', null, `${formatMoney(w.funded_micros)} / ${formatMoney(w.spent_micros)}`),
          ),
          ctx.canWrite
            ? h(
                'form',
                {
                  class: 'inline-form',
                  onsubmit: async (e: Event) => {
                    e.preventDefault();
                    let micros: bigint;
                    try {
                      micros = parseMoney(amount.value);
                    } catch (x) {
                      toast((x as Error).message, 'error');
                      return;
                    }
                    if (micros <= 0n) return;
                    const { ok } = await confirmDialog({
                      title: `Fund ${appId}?`,
                      message: `Add ${formatMoney(micros)} to the wallet of ${appId}.`,
                      confirm: 'Fund',
                    });
                    if (!ok) return;
                    await busy(null, async () => {
                      await api('POST', `/apps/${enc(appId)}/wallet/fund`, {
                        amount_micros: micros.toString(),
                        idempotency_key: idem,
                        memo: `console: ${ctx.me.name}`,
                      });
                      idem = crypto.randomUUID();
                      toast(`Funded ${formatMoney(micros)}`, 'ok');
                      await drawWallet();
                    });
                  },
                },
                amount,
                h('button', { type: 'submit', class: 'btn', 'data-write': '' }, 'Fund wallet'),
              )
            : null,
        );
      } catch (e) {
        replace(
          wallet,
          e instanceof ApiError && e.status === 404
            ? h('p', { class: 'muted small' }, 'Billing is off on this gateway.')
            : h('p', { class: 'error' }, (e as Error).message),
        );
      }
    };

    const patchKey = async (k: Key, body: Record<string, unknown>, what: string) => {
      try {
        await api('PATCH', `/apps/${enc(appId)}/keys/${enc(k.id)}`, body, { ifMatch: k.version_no });
        toast(`Key ${k.key_prefix}…: ${what}`, 'ok');
      } catch (e) {
        if (!isConflict(e)) throw e;
        toast(
          `Key ${k.key_prefix}… changed meanwhile (now version ${String(e.current?.version_no)}): reloaded, try again.`,
          'error',
        );
      }
      await openApp(appId);
    };

    const keyRow = (k: Key) => [
      h(
        'td',
        null,
        h('div', { class: 'mono' }, `${k.key_prefix}…`),
        h('div', { class: 'muted small' }, k.name || '(no name)'),
        h(
          'div',
          { class: 'small', 'data-key-figures': k.id },
          `${formatMoney(spend.get(k.id) ?? '0')} this month`,
          traffic.has(k.id)
            ? ` · ${traffic.get(k.id)!.requests} requests, ${traffic.get(k.id)!.errors} errors (24 h) · `
            : ' · ',
          h('a', { href: `#/requests?key=${enc(k.id)}` }, 'requests'),
        ),
      ),
      h('td', null, k.enabled ? badge('active', 'ok') : badge('banned', 'bad')),
      h(
        'td',
        null,
        ctx.canWrite
          ? h(
              'select',
              {
                name: 'queue_mode',
                'aria-label': 'queue mode',
                onchange: (e: Event) =>
                  void busy(null, () =>
                    patchKey(
                      k,
                      { queue_mode: (e.target as HTMLSelectElement).value },
                      `queue mode ${(e.target as HTMLSelectElement).value}`,
                    ),
                  ),
              },
              QUEUE_MODES.map((m) => h('option', { value: m, selected: m === k.queue_mode }, m)),
            )
          : k.queue_mode,
        k.queue_mode === 'WAIT'
          ? h('div', { class: 'muted small' }, `wait ≤ ${k.wait_timeout_ms} ms · queue ≤ ${k.max_queue}`)
          : null,
      ),
      h(
        'td',
        { class: 'small' },
        k.allowed_aliases ? k.allowed_aliases.join(', ') : h('span', { class: 'muted' }, 'all aliases'),
      ),
      h(
        'td',
        { class: 'small' },
        ctx.canWrite
          ? h(
              'select',
              {
                name: 'token_group',
                'aria-label': 'token group',
                onchange: (e: Event) => {
                  const v = (e.target as HTMLSelectElement).value;
                  void busy(null, () =>
                    patchKey(k, { token_group_id: v || null }, v ? `token group ${v}` : 'no token group'),
                  );
                },
              },
              [
                h('option', { value: '', selected: !k.token_group_id }, '(none)'),
                // A key may name a group this list doesn't hold (deleted, or past the 500 listed): keep it visible.
                ...(k.token_group_id && !groups.some((g) => g.id === k.token_group_id)
                  ? [h('option', { value: k.token_group_id, selected: true }, k.token_group_id)]
                  : []),
                ...groups.map((g) =>
                  h(
                    'option',
                    { value: g.id, selected: g.id === k.token_group_id },
                    g.enabled ? g.id : `${g.id} (disabled)`,
                  ),
                ),
              ],
            )
          : (k.token_group_id ?? h('span', { class: 'muted' }, 'none')),
      ),
      h('td', { class: 'num' }, `v${k.version_no}`),
      h(
        'td',
        { class: 'actions' },
        writeBtn(ctx, k.enabled ? 'Ban' : 'Unban', (b) =>
          busy(b, async () => {
            if (k.enabled) {
              const { ok } = await confirmDialog({
                title: `Ban key ${k.key_prefix}…?`,
                message:
                  'Every instance refuses it within a second (403 key_disabled). You can unban it later.',
                confirm: 'Ban key',
                danger: true,
              });
              if (!ok) return;
            }
            await patchKey(k, { enabled: !k.enabled }, k.enabled ? 'banned' : 'unbanned');
          }),
        ),
        writeBtn(ctx, 'Rotate', (b) =>
          busy(b, async () => {
            const { ok } = await confirmDialog({
              title: `Rotate key ${k.key_prefix}…?`,
              message: 'A new secret is issued; the old one stops working at once.',
              confirm: 'Rotate',
              danger: true,
            });
            if (!ok) return;
            const r = await api<{ key: Key; sk: string }>(
              'POST',
              `/apps/${enc(appId)}/keys/${enc(k.id)}/rotate`,
              undefined,
              { ifMatch: k.version_no },
            );
            showSecret(`New secret for ${r.key.key_prefix}…`, r.sk);
            await openApp(appId);
          }),
        ),
        h(
          'button',
          {
            type: 'button',
            class: 'btn',
            onclick: async () =>
              replace(keyLimits, await quotaEditor(ctx, 'key', k.id, `key ${k.key_prefix}…`)),
          },
          'Limits',
        ),
      ),
    ];

    const keyName = h('input', { name: 'key_name', placeholder: 'what uses it' });
    const keyMode = h(
      'select',
      { name: 'key_queue_mode' },
      QUEUE_MODES.map((m) => h('option', { value: m }, m)),
    );
    const keyAliases = h('input', { name: 'key_aliases', placeholder: 'all (or: alias1, alias2)' });
    const newKey = ctx.canWrite
      ? h(
          'form',
          {
            class: 'inline-form',
            id: 'new-key',
            onsubmit: async (e: Event) => {
              e.preventDefault();
              await busy((e.target as HTMLFormElement).querySelector('button[type=submit]'), async () => {
                const aliases = keyAliases.value
                  .split(',')
                  .map((x) => x.trim())
                  .filter(Boolean);
                const r = await api<{ key: Key; sk: string }>('POST', `/apps/${enc(appId)}/keys`, {
                  name: keyName.value.trim(),
                  queue_mode: keyMode.value,
                  ...(aliases.length ? { allowed_aliases: aliases } : {}),
                });
                await openApp(appId);
                showSecret(`New key ${r.key.key_prefix}…`, r.sk);
              });
            },
          },
          keyName,
          keyMode,
          keyAliases,
          h('button', { type: 'submit', class: 'btn btn-primary' }, 'Create key'),
        )
      : null;

    replace(
      detail,
      h(
        'div',
        { class: 'card-head' },
        h('h3', null, app.name, h('span', { class: 'muted mono small' }, ` ${app.id}`)),
        app.enabled ? badge('enabled', 'ok') : badge('disabled', 'bad'),
        badge(`version ${app.version_no}`),
        h('span', { class: 'spacer' }),
        writeBtn(ctx, app.enabled ? 'Disable app' : 'Enable app', (b) =>
          busy(b, async () => {
            if (app.enabled) {
              const { ok } = await confirmDialog({
                title: `Disable ${app.id}?`,
                message: 'All its keys are refused (403 app_disabled) until it is enabled again.',
                confirm: 'Disable app',
                danger: true,
              });
              if (!ok) return;
            }
            try {
              await api(
                'PATCH',
                `/apps/${enc(appId)}`,
                { enabled: !app.enabled },
                { ifMatch: app.version_no },
              );
            } catch (e) {
              if (!isConflict(e)) throw e;
              toast('The app changed meanwhile: reloaded.', 'error');
            }
            await loadApps();
            await openApp(appId);
          }),
        ),
      ),
      h('div', { class: 'two-col' }, wallet, await quotaEditor(ctx, 'app', appId, 'whole app')),
      h('h4', null, 'Keys'),
      h(
        'table',
        { class: 'grid', id: 'keys' },
        h(
          'thead',
          null,
          h(
            'tr',
            null,
            ['Key', 'Status', 'Queue mode', 'Aliases', 'Token group', 'Version', ''].map((t) =>
              h('th', null, t),
            ),
          ),
        ),
        h(
          'tbody',
          null,
          keys.length
            ? keys.map((k) => h('tr', { 'data-key': k.id, 'data-prefix': k.key_prefix }, keyRow(k)))
            : h('tr', null, h('td', { colspan: 7, class: 'empty' }, 'No keys yet.')),
        ),
      ),
      newKey,
      keyLimits,
    );
    await drawWallet();
  };

  await loadApps();
  if (selected) await openApp(selected).catch(() => (selected = null));
}
