/**
 * Notifications: the webhook targets the gateway tells about operator events (a breaker opened or closed,
 * a credential taken out, a cost budget at 80 % / 100 %, the journal writer stuck, PostgreSQL or Redis
 * down and back). Each is a Slack incoming webhook or a JSON receiver (signed when it has a secret);
 * list, add, enable/disable, delete, and a test button that sends one notification now and shows what
 * the receiver answered.
 */
import { api, enc, get } from '../api.js';
import { type Ctx, pageHeader, writeBtn } from '../ctx.js';
import { badge, busy, confirmDialog, field, fmtMs, fmtTime, h, replace, table, toast } from '../dom.js';

interface Target {
  id: string;
  name: string;
  url: string;
  format: 'slack' | 'json';
  secret_set: boolean;
  events: string[];
  enabled: boolean;
  rate_per_minute: number;
  created_at: string;
}

interface TestResult {
  delivered: boolean;
  status: number;
  error: string | null;
  ms: number;
}

const KIND_LABEL: Record<string, string> = {
  'breaker.opened': 'breaker opened',
  'breaker.closed': 'breaker closed',
  'credential.out': 'credential out',
  'budget.warning': 'budget 80 %',
  'budget.exhausted': 'budget 100 %',
  'journal.stuck': 'journal stuck',
  'journal.recovered': 'journal back',
  'dependency.down': 'DB/Redis down',
  'dependency.recovered': 'DB/Redis back',
};

export async function notificationsPage(root: HTMLElement, ctx: Ctx): Promise<void> {
  const tableBox = h('div', { class: 'table-box' });
  const testBox = h('section', { class: 'panel', id: 'notification-test', hidden: true });
  let kinds: string[] = Object.keys(KIND_LABEL);
  root.append(
    pageHeader(
      'Notifications',
      h('button', { type: 'button', class: 'btn', onclick: () => void load() }, 'Refresh'),
    ),
    h(
      'p',
      { class: 'muted small' },
      'Webhooks for operator events, sent once per event across all instances, retried with backoff, at most the set number a minute (the rest folded into one summary). JSON deliveries carry x-anima-signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>. URLs inside the network are refused unless ANIMA_OUTBOUND_ALLOW lists them.',
    ),
    testBox,
    tableBox,
  );

  const runTest = async (t: Target, btn: HTMLButtonElement) => {
    await busy(btn, async () => {
      testBox.hidden = false;
      replace(testBox, h('p', { class: 'muted' }, `Sending a test notification to ${t.name}…`));
      const r = await api<TestResult>('POST', `/notification-targets/${enc(t.id)}/test`, {});
      replace(
        testBox,
        h('h3', null, `Test of ${t.name}`),
        h(
          'div',
          {
            class: `test-result ${r.delivered ? 'test-ok' : 'test-bad'}`,
            role: 'status',
            'data-ok': String(r.delivered),
          },
          badge(r.delivered ? 'delivered' : 'failed', r.delivered ? 'ok' : 'bad'),
          h('span', { class: 'muted' }, ` ${r.status ? `HTTP ${r.status}` : 'no answer'} · ${fmtMs(r.ms)}`),
          r.error ? h('div', { class: 'small', 'data-error': '' }, r.error) : null,
        ),
      );
    });
  };

  const toggle = async (t: Target, btn: HTMLButtonElement) => {
    await busy(btn, async () => {
      await api('PATCH', `/notification-targets/${enc(t.id)}`, { enabled: !t.enabled });
      toast(`${t.name} ${t.enabled ? 'disabled' : 'enabled'}`, 'ok');
      await load();
    });
  };

  const remove = async (t: Target, btn: HTMLButtonElement) => {
    const { ok } = await confirmDialog({
      title: `Delete ${t.name}?`,
      message: h('p', null, `No more notifications go to ${t.url}.`),
      confirm: 'Delete target',
      danger: true,
    });
    if (!ok) return;
    await busy(btn, async () => {
      await api('DELETE', `/notification-targets/${enc(t.id)}`);
      toast(`Deleted ${t.name}`, 'ok');
      await load();
    });
  };

  const load = async () => {
    const list = await get<{ data: Target[]; event_kinds: string[] }>('/notification-targets');
    if (!ctx.alive()) return;
    kinds = list.event_kinds;
    replace(
      tableBox,
      table(
        [
          {
            title: 'Name',
            render: (t) =>
              h(
                'div',
                null,
                h('span', { class: 'strong' }, t.name),
                h('div', { class: 'muted small mono' }, t.id),
              ),
          },
          { title: 'URL', render: (t) => h('span', { class: 'mono small' }, t.url) },
          {
            title: 'Format',
            render: (t) => h('span', null, t.format, t.secret_set ? [' ', badge('signed', 'neutral')] : null),
          },
          {
            title: 'Events',
            render: (t) =>
              t.events.length
                ? t.events.map((k) => KIND_LABEL[k] ?? k).join(', ')
                : h('span', { class: 'muted' }, 'all'),
          },
          { title: 'Rate', render: (t) => `${t.rate_per_minute}/min` },
          {
            title: 'Status',
            render: (t) =>
              t.enabled
                ? badge('enabled', 'ok', { 'data-enabled': 'true' })
                : badge('disabled', 'bad', { 'data-enabled': 'false' }),
          },
          { title: 'Added', render: (t) => fmtTime(t.created_at) },
          {
            title: '',
            class: 'actions',
            render: (t) => [
              writeBtn(ctx, 'Test', (b) => runTest(t, b), { 'data-action': 'test' }),
              writeBtn(ctx, t.enabled ? 'Disable' : 'Enable', (b) => toggle(t, b), {
                'data-action': 'toggle',
              }),
              writeBtn(ctx, 'Delete…', (b) => remove(t, b), {
                class: 'btn btn-danger',
                'data-action': 'delete',
              }),
            ],
          },
        ],
        list.data,
        {
          empty: 'No notification targets: operator events go to the log and the metrics only.',
          rowAttrs: (t) => ({ 'data-target': t.id, 'data-name': t.name }),
        },
      ),
    );
  };

  // ---- new target (admins only) ----
  if (ctx.canWrite) {
    const name = h('input', { name: 'name', required: true, maxlength: 200, placeholder: 'on-call Slack' });
    const url = h('input', {
      name: 'url',
      type: 'url',
      required: true,
      placeholder: 'https://hooks.slack.com/services/…',
      size: 48,
    });
    const format = h(
      'select',
      { name: 'format', 'aria-label': 'format' },
      h('option', { value: 'slack' }, 'Slack (incoming webhook)'),
      h('option', { value: 'json' }, 'JSON (signed)'),
    );
    const secret = h('input', {
      name: 'secret',
      type: 'password',
      autocomplete: 'new-password',
      placeholder: 'optional: signs deliveries',
    });
    const rate = h('input', { name: 'rate_per_minute', type: 'number', min: 1, max: 600, value: 10 });
    const boxes = h(
      'div',
      { class: 'actions', role: 'group', 'aria-label': 'events' },
      kinds.map((k) =>
        h(
          'label',
          { class: 'check' },
          h('input', { type: 'checkbox', name: 'event', value: k }),
          ` ${KIND_LABEL[k] ?? k}`,
        ),
      ),
    );
    const form = h(
      'form',
      {
        class: 'inline-form',
        id: 'new-notification-target',
        onsubmit: async (e: Event) => {
          e.preventDefault();
          const events = [...boxes.querySelectorAll<HTMLInputElement>('input[name=event]:checked')].map(
            (b) => b.value,
          );
          await busy(form.querySelector('button[type=submit]'), async () => {
            await api('POST', '/notification-targets', {
              name: name.value.trim(),
              url: url.value.trim(),
              format: format.value,
              ...(secret.value ? { secret: secret.value } : {}),
              events,
              rate_per_minute: Number(rate.value) || 10,
            });
            toast(`Added ${name.value.trim()}`, 'ok');
            name.value = '';
            url.value = '';
            secret.value = '';
            for (const b of boxes.querySelectorAll<HTMLInputElement>('input[name=event]')) b.checked = false;
            await load();
          });
        },
      },
      field('Name', name),
      field('URL', url),
      field('Format', format),
      field('Secret', secret),
      field('Per minute', rate),
      // Not field(): its <label> would wrap the checkboxes' own labels.
      h('div', { class: 'field' }, h('span', { class: 'field-label' }, 'Events (none ticked: all)'), boxes),
      h('button', { type: 'submit', class: 'btn btn-primary', 'data-write': '' }, 'Add target'),
    );
    root.append(h('section', { class: 'panel' }, h('h3', null, 'New notification target'), form));
  }

  await load();
}
