/**
 * Channels: every channel with its breaker (live), window counts and health; open / close / reset the
 * breaker, enable / disable, edit (the version read is sent as If-Match: a stale one shows the conflict),
 * version history, and new channels.
 */
import { type Circuit, api, enc, get } from '../api.js';
import { type Ctx, conflictBox, isConflict, pageHeader, pickCurrent, writeBtn } from '../ctx.js';
import {
  BREAKER_KIND,
  badge,
  breakerLabel,
  busy,
  confirmDialog,
  errorText,
  field,
  fmtAgo,
  fmtInt,
  fmtMs,
  fmtTime,
  h,
  replace,
  table,
  toast,
} from '../dom.js';

interface Channel {
  id: string;
  code: string;
  name: string;
  provider: string;
  base_url: string;
  credential_set: boolean;
  credential_hint: string | null;
  enabled: boolean;
  weight: number;
  settings: Record<string, unknown>;
  version_no: number;
  effective_from: string | null;
  effective_to: string | null;
  updated_at: string | null;
}

/** Recent upstream figures of one channel (GET /stats/channels: every live instance's, summed). */
interface ChannelFigures {
  channel: string;
  requests: number;
  errors: number;
  error_rate: number;
  p50_ms: number | null;
  p95_ms: number | null;
}
interface FiguresAnswer {
  minutes: number;
  instances: number;
  data: ChannelFigures[];
}

/** What POST /channels/:code/test answered. */
interface TestResult {
  ok: boolean;
  channel: string;
  tested: string;
  status: number | null;
  latency_ms: number | null;
  model: string | null;
  answer?: string;
  error?: { code: string; message: string };
}

const FIGURES_MINUTES = 15;

function usageCell(f: ChannelFigures | undefined): HTMLElement | string {
  if (!f) return h('span', { class: 'muted' }, 'no calls');
  return h(
    'span',
    null,
    `${fmtInt(f.requests)} calls`,
    h(
      'div',
      { class: `small ${f.errors ? 'text-bad' : 'muted'}` },
      `${(f.error_rate * 100).toFixed(f.error_rate > 0 && f.error_rate < 0.01 ? 2 : 1)}% failed`,
    ),
  );
}

function latencyCell(f: ChannelFigures | undefined): string {
  return f ? `${fmtMs(f.p50_ms)} / ${fmtMs(f.p95_ms)}` : '—';
}

/** The Test-channel result, as a small panel: what was sent, the status and time, the answer or the error. */
function testPanel(r: TestResult): HTMLElement {
  return h(
    'div',
    { class: `test-result ${r.ok ? 'test-ok' : 'test-bad'}`, role: 'status', 'data-ok': String(r.ok) },
    h(
      'div',
      null,
      badge(r.ok ? 'answered' : 'failed', r.ok ? 'ok' : 'bad'),
      h('strong', null, ` ${r.channel}`),
      h(
        'span',
        { class: 'muted' },
        ` · ${r.tested}${r.model ? ` · ${r.model}` : ''}${r.status !== null ? ` · HTTP ${r.status}` : ''}${r.latency_ms !== null ? ` · ${fmtMs(r.latency_ms)}` : ''}`,
      ),
    ),
    r.ok
      ? h('div', { class: 'mono small', 'data-answer': '' }, r.answer ?? '')
      : h(
          'div',
          { class: 'small', 'data-error': r.error?.code ?? '' },
          `${r.error?.code}: ${r.error?.message}`,
        ),
  );
}

/** The provider kinds come from the gateway's registry (GET /provider-kinds): fetched once per page load. */
let providerKinds: Promise<Array<{ kind: string; description: string }>> | null = null;
function loadProviderKinds(): Promise<Array<{ kind: string; description: string }>> {
  providerKinds ??= get<{ data: Array<{ kind: string; description: string }> }>('/provider-kinds').then(
    (r) => r.data,
    (e: unknown) => {
      providerKinds = null; // a failed fetch is tried again next time the form opens
      throw e;
    },
  );
  return providerKinds;
}

function breakerCell(c: Circuit | undefined): HTMLElement {
  if (!c) return h('span', { class: 'muted' }, '—');
  return h(
    'span',
    { class: 'breaker' },
    badge(breakerLabel(c.state), BREAKER_KIND[c.state] ?? 'neutral', { 'data-breaker': c.state }),
    c.state !== 'closed' && c.since ? h('span', { class: 'muted small' }, ` ${fmtAgo(c.since)}`) : null,
    c.reason && c.state !== 'closed' ? h('div', { class: 'muted small' }, c.reason) : null,
  );
}

function windowCell(c: Circuit | undefined): string {
  if (!c) return '—';
  return `${c.window.calls} calls · ${c.window.failures} failed · ${c.window.slow} slow`;
}

function healthCell(c: Circuit | undefined): HTMLElement | string {
  if (!c) return '—';
  const parts: HTMLElement[] = [];
  if (c.health.credential !== 'ok') parts.push(badge(`credential ${c.health.credential}`, 'bad'));
  if (c.health.cooldown_until)
    parts.push(badge(`429 rest until ${fmtTime(c.health.cooldown_until).slice(11)}`, 'warn'));
  return parts.length ? h('span', null, parts) : badge('ok', 'ok');
}

export async function channelsPage(root: HTMLElement, ctx: Ctx): Promise<void> {
  const tableBox = h('div', { class: 'table-box' });
  const editor = h('section', { class: 'panel', id: 'channel-editor', hidden: true });
  const testBox = h('section', { class: 'panel', id: 'channel-test', hidden: true });
  let circuits = new Map<string, Circuit>();
  let figures = new Map<string, ChannelFigures>();
  let figuresNote = '';
  let channels: Array<Channel & { versions: number }> = [];

  root.append(
    pageHeader(
      'Channels',
      writeBtn(ctx, 'New channel', () => openCreate(), { class: 'btn btn-primary' }),
      h('button', { type: 'button', class: 'btn', onclick: () => void load() }, 'Refresh'),
    ),
    testBox,
    tableBox,
    editor,
  );

  const runTest = async (code: string, btn: HTMLButtonElement) => {
    await busy(btn, async () => {
      testBox.hidden = false;
      replace(testBox, h('p', { class: 'muted' }, `Testing ${code}: one small request…`));
      const r = await api<TestResult>('POST', `/channels/${enc(code)}/test`, {});
      replace(
        testBox,
        h('h3', null, `Test of ${code}`),
        testPanel(r),
        h(
          'p',
          { class: 'muted small' },
          'One real request through this channel only (no alias chain, no breaker admission), not billed to any app; recorded in the audit log.',
        ),
        h(
          'button',
          {
            type: 'button',
            class: 'btn btn-plain',
            onclick: () => ((testBox.hidden = true), replace(testBox)),
          },
          'Close',
        ),
      );
    });
  };

  const actOnBreaker = async (code: string, action: 'open' | 'close' | 'reset', btn: HTMLButtonElement) => {
    await busy(btn, async () => {
      if (action === 'open') {
        const { ok, reason } = await confirmDialog({
          title: `Open the breaker of ${code}?`,
          message:
            'Traffic moves to the next channel of each alias chain until the breaker is closed or reset.',
          confirm: 'Open breaker',
          danger: true,
          reason: true,
        });
        if (!ok) return;
        const c = await api<Circuit>('POST', `/circuits/${enc(code)}/open`, reason ? { reason } : undefined);
        updateRow(c);
      } else {
        const c = await api<Circuit>('POST', `/circuits/${enc(code)}/${action}`);
        updateRow(c);
      }
      toast(
        `Breaker of ${code}: ${action === 'open' ? 'forced open' : action === 'close' ? 'closed' : 'reset'}`,
        'ok',
      );
      void ctx.live.refresh();
    });
    // busy() re-enabled the button: the row's state decides which actions make sense now.
    const c = circuits.get(code);
    if (c) updateRow(c);
  };

  const setEnabled = async (ch: Channel, enabled: boolean, btn: HTMLButtonElement) => {
    await busy(btn, async () => {
      if (!enabled) {
        const { ok } = await confirmDialog({
          title: `Disable ${ch.code}?`,
          message: 'No request will be sent to this channel until it is enabled again.',
          confirm: 'Disable',
          danger: true,
        });
        if (!ok) return;
      }
      try {
        await api('PATCH', `/channels/${enc(ch.code)}`, { enabled }, { ifMatch: ch.version_no });
        toast(`${ch.code} ${enabled ? 'enabled' : 'disabled'}`, 'ok');
      } catch (e) {
        if (isConflict(e))
          toast(
            `${ch.code} changed meanwhile (now version ${String(e.current?.version_no)}): reloaded, try again.`,
            'error',
          );
        else throw e;
      }
      await load();
    });
  };

  const row = (ch: Channel & { versions: number }) => {
    const c = circuits.get(ch.code);
    return [
      h('td', null, h('div', { class: 'strong' }, ch.code), h('div', { class: 'muted small' }, ch.name)),
      h('td', null, ch.provider, h('div', { class: 'muted small mono' }, ch.base_url)),
      h('td', { 'data-col': 'enabled' }, ch.enabled ? badge('enabled', 'ok') : badge('disabled', 'bad')),
      h('td', { 'data-col': 'breaker' }, breakerCell(c)),
      h('td', { 'data-col': 'window', class: 'small' }, windowCell(c)),
      h('td', { 'data-col': 'health' }, healthCell(c)),
      h('td', { 'data-col': 'usage', class: 'num' }, usageCell(figures.get(ch.code))),
      h('td', { 'data-col': 'latency', class: 'num' }, latencyCell(figures.get(ch.code))),
      h('td', { class: 'num' }, String(ch.weight)),
      h(
        'td',
        { class: 'num' },
        `v${ch.version_no}`,
        ch.versions > 1 ? h('div', { class: 'muted small' }, `${ch.versions} windows`) : null,
      ),
      h(
        'td',
        { class: 'actions' },
        writeBtn(ctx, 'Open', (b) => actOnBreaker(ch.code, 'open', b), {
          title: 'Force the breaker open (held until closed or reset)',
          'data-action': 'open',
          disabled: c?.state === 'forced_open',
        }),
        writeBtn(ctx, 'Close', (b) => actOnBreaker(ch.code, 'close', b), {
          title: 'Close the breaker',
          'data-action': 'close',
          disabled: !c || c.state === 'closed',
        }),
        writeBtn(ctx, 'Reset', (b) => actOnBreaker(ch.code, 'reset', b), {
          title: 'Close and forget the window',
        }),
        writeBtn(ctx, ch.enabled ? 'Disable' : 'Enable', (b) => setEnabled(ch, !ch.enabled, b)),
        writeBtn(ctx, 'Test', (b) => runTest(ch.code, b), {
          title: 'Send one small real request through this channel and show the answer',
          'data-action': 'test',
        }),
        h(
          'button',
          { type: 'button', class: 'btn', onclick: () => void openEdit(ch.code) },
          ctx.canWrite ? 'Edit' : 'View',
        ),
      ),
    ];
  };

  const draw = () => {
    replace(
      tableBox,
      h(
        'table',
        { class: 'grid', id: 'channels' },
        h(
          'thead',
          null,
          h(
            'tr',
            null,
            [
              'Channel',
              'Provider',
              'Enabled',
              'Breaker',
              'Window',
              'Health',
              `Calls (${FIGURES_MINUTES} min)`,
              'Latency p50 / p95',
              'Weight',
              'Version',
              '',
            ].map((t) => h('th', null, t)),
          ),
        ),
        h(
          'tbody',
          null,
          channels.length
            ? channels.map((ch) => h('tr', { 'data-channel': ch.code }, row(ch)))
            : h('tr', null, h('td', { colspan: 11, class: 'empty' }, 'No channels yet.')),
        ),
      ),
      figuresNote ? h('p', { class: 'muted small', id: 'channel-figures-note' }, figuresNote) : null,
    );
  };

  const updateRow = (c: Circuit) => {
    circuits.set(c.channel, c);
    const tr = tableBox.querySelector(`tr[data-channel="${CSS.escape(c.channel)}"]`);
    if (!tr) return;
    replace(tr.querySelector('[data-col="breaker"]')!, breakerCell(c));
    replace(tr.querySelector('[data-col="window"]')!, windowCell(c));
    replace(tr.querySelector('[data-col="health"]')!, healthCell(c));
    const open = tr.querySelector<HTMLButtonElement>('[data-action="open"]');
    const close = tr.querySelector<HTMLButtonElement>('[data-action="close"]');
    if (open) open.disabled = c.state === 'forced_open';
    if (close) close.disabled = c.state === 'closed';
  };

  const load = async () => {
    const [list, circ, figs] = await Promise.all([
      get<{ data: Channel[] }>('/channels?limit=500'),
      get<{ data: Circuit[] }>('/circuits'),
      // Figures are a nicety: a gateway without them still lists its channels.
      get<FiguresAnswer>(`/stats/channels?minutes=${FIGURES_MINUTES}`).catch(() => null),
    ]);
    if (!ctx.alive()) return;
    figures = new Map((figs?.data ?? []).map((f) => [f.channel, f]));
    figuresNote = figs
      ? `Calls and latency: upstream attempts in the last ${figs.minutes} minutes, summed over ${figs.instances} live instance${figs.instances === 1 ? '' : 's'}.`
      : '';
    channels = pickCurrent(list.data, (c) => c.code);
    circuits = new Map(circ.data.map((c) => [c.channel, c]));
    draw();
  };

  // ---- edit one channel (optimistic locking) ----
  const openEdit = async (code: string, note?: HTMLElement) => {
    const ch = await get<Channel>(`/channels/${enc(code)}`);
    editor.hidden = false;
    const ro = !ctx.canWrite;
    const name = h('input', { name: 'name', value: ch.name, readOnly: ro });
    const baseUrl = h('input', { name: 'base_url', value: ch.base_url, readOnly: ro, class: 'mono' });
    const weight = h('input', {
      name: 'weight',
      type: 'number',
      min: 0,
      value: String(ch.weight),
      readOnly: ro,
    });
    const credential = h('input', {
      name: 'credential',
      type: 'password',
      autocomplete: 'off',
      placeholder: ch.credential_set ? `unchanged (${ch.credential_hint ?? 'set'})` : 'not set',
      readOnly: ro,
    });
    const settings = h('textarea', {
      name: 'settings',
      rows: 8,
      class: 'mono',
      readOnly: ro,
      value: JSON.stringify(ch.settings ?? {}, null, 2),
    });
    const conflict = h('div');
    const versions = h('div');
    const form = h(
      'form',
      {
        class: 'editor',
        'data-editing': ch.code,
        'data-version': String(ch.version_no),
        onsubmit: (e: Event) => {
          e.preventDefault();
          void save(ch.version_no);
        },
      },
      h(
        'h3',
        null,
        `${ro ? 'Channel' : 'Edit channel'} ${ch.code}`,
        ' ',
        badge(`version ${ch.version_no}`, 'neutral', { 'data-version-badge': '' }),
      ),
      note ?? null,
      h(
        'div',
        { class: 'form-grid' },
        field('Name', name),
        field('Base URL', baseUrl),
        field('Weight', weight),
        ro ? null : field('Credential', credential, 'write-only: leave empty to keep the current one'),
      ),
      field('Settings (timeouts, breaker, headers, maxConnections)', settings),
      conflict,
      h(
        'div',
        { class: 'actions' },
        ro ? null : h('button', { type: 'submit', class: 'btn btn-primary', 'data-write': '' }, 'Save'),
        h('button', { type: 'button', class: 'btn', onclick: () => void showVersions() }, 'History'),
        h(
          'button',
          {
            type: 'button',
            class: 'btn btn-plain',
            onclick: () => ((editor.hidden = true), replace(editor)),
          },
          'Close',
        ),
      ),
      versions,
    );
    replace(editor, form);
    editor.scrollIntoView({ block: 'nearest' });

    const changes = (): Record<string, unknown> | null => {
      const out: Record<string, unknown> = {};
      if (name.value !== ch.name) out.name = name.value;
      if (baseUrl.value !== ch.base_url) out.base_url = baseUrl.value;
      if (Number(weight.value) !== ch.weight) out.weight = Number(weight.value);
      if (credential.value) out.credential = credential.value;
      let parsed: unknown;
      try {
        parsed = JSON.parse(settings.value || '{}');
      } catch {
        toast('Settings: not valid JSON', 'error');
        return null;
      }
      if (JSON.stringify(parsed) !== JSON.stringify(ch.settings ?? {})) out.settings = parsed;
      return out;
    };

    const save = async (version: number) => {
      const body = changes();
      if (!body) return;
      if (Object.keys(body).length === 0) {
        toast('Nothing changed.');
        return;
      }
      const btn = form.querySelector<HTMLButtonElement>('button[type=submit]');
      await busy(btn, async () => {
        try {
          const row = await api<Channel>('PATCH', `/channels/${enc(ch.code)}`, body, { ifMatch: version });
          toast(`Saved ${ch.code} (version ${row.version_no})`, 'ok');
          await load();
          await openEdit(
            ch.code,
            h('p', { class: 'ok-note', 'data-saved': '' }, `Saved as version ${row.version_no}.`),
          );
        } catch (e) {
          if (!isConflict(e)) throw e;
          replace(
            conflict,
            conflictBox(e, version, body, {
              reload: () => void openEdit(ch.code),
              overwrite: (v) => void save(v),
            }),
          );
          await load();
        }
      });
    };

    const showVersions = async () => {
      try {
        const v = await get<{ data: Channel[] }>(`/channels/${enc(ch.code)}/versions`);
        replace(
          versions,
          table(
            [
              { title: 'Version', render: (r) => `v${r.version_no}` },
              { title: 'In force from', render: (r) => fmtTime(r.effective_from) },
              { title: 'to', render: (r) => fmtTime(r.effective_to) },
              { title: 'Enabled', render: (r) => (r.enabled ? 'yes' : 'no') },
              { title: 'Base URL', render: (r) => r.base_url, class: 'mono small' },
              { title: 'Updated', render: (r) => fmtTime(r.updated_at) },
            ],
            v.data,
            { caption: 'Versions (effective windows)' },
          ),
        );
      } catch (e) {
        toast(errorText(e), 'error');
      }
    };
  };

  // ---- new channel ----
  const openCreate = () => {
    editor.hidden = false;
    const code = h('input', { name: 'code', required: true, pattern: '[a-zA-Z0-9][a-zA-Z0-9._:\\-]{0,63}' });
    const name = h('input', { name: 'name' });
    const provider = h('select', { name: 'provider' }, h('option', { value: 'openai' }, 'openai'));
    loadProviderKinds().then(
      (kinds) =>
        provider.replaceChildren(
          ...kinds.map((k) => h('option', { value: k.kind, title: k.description }, k.kind)),
        ),
      (e: unknown) => toast(errorText(e), 'error'),
    );
    const baseUrl = h('input', {
      name: 'base_url',
      required: true,
      placeholder: 'https://api.openai.com/v1',
      class: 'mono',
    });
    const credential = h('input', { name: 'credential', type: 'password', autocomplete: 'off' });
    const weight = h('input', { name: 'weight', type: 'number', min: 0, value: '1' });
    const form = h(
      'form',
      {
        class: 'editor',
        onsubmit: async (e: Event) => {
          e.preventDefault();
          await busy(form.querySelector('button[type=submit]'), async () => {
            const body: Record<string, unknown> = {
              code: code.value.trim(),
              provider: provider.value,
              base_url: baseUrl.value.trim(),
              weight: Number(weight.value),
            };
            if (name.value.trim()) body.name = name.value.trim();
            if (credential.value) body.credential = credential.value;
            const row = await api<Channel>('POST', '/channels', body);
            toast(`Created ${row.code}`, 'ok');
            await load();
            await openEdit(row.code);
          });
        },
      },
      h('h3', null, 'New channel'),
      h(
        'div',
        { class: 'form-grid' },
        field('Code', code),
        field('Name', name),
        field('Provider', provider),
        field('Base URL', baseUrl),
        field('Credential', credential),
        field('Weight', weight),
      ),
      h(
        'div',
        { class: 'actions' },
        h('button', { type: 'submit', class: 'btn btn-primary' }, 'Create'),
        h(
          'button',
          {
            type: 'button',
            class: 'btn btn-plain',
            onclick: () => ((editor.hidden = true), replace(editor)),
          },
          'Cancel',
        ),
      ),
    );
    replace(editor, form);
    code.focus();
  };

  await load();
  // Live: breaker states, window counts and health refresh by themselves.
  ctx.onLeave(
    ctx.live.subscribe((snap) => {
      for (const c of snap.circuits) updateRow(c);
      // A channel enabled/disabled elsewhere: the live feed says so; reload the rows to show it.
      if (snap.circuits.some((c) => channels.find((ch) => ch.code === c.channel && ch.enabled !== c.enabled)))
        void load();
    }),
  );
}
