/**
 * Tasks and queues: the live queue lengths (WAIT queues per key, active tasks by status), and the tasks
 * of every app — filter by status, app and kind; inspect one (request, transitions, lease, result);
 * cancel an active one (forwarded upstream, its reservation released).
 */
import { type Queues, api, enc, get, qs } from '../api.js';
import { type Ctx, pageHeader, writeBtn } from '../ctx.js';
import {
  badge,
  busy,
  confirmDialog,
  fmtAgo,
  fmtInt,
  fmtTime,
  h,
  json,
  replace,
  table,
  toast,
} from '../dom.js';

interface Task {
  id: string;
  kind: string;
  status: string;
  app_id: string;
  key_id: string;
  alias: string | null;
  channel: string | null;
  attempts: number;
  progress: number;
  created_at: string | null;
  completed_at: string | null;
  deadline: string | null;
  cancel_requested_at: string | null;
}

const STATUSES = ['queued', 'submitted', 'running', 'succeeded', 'failed', 'cancelled', 'expired'];
const ACTIVE = new Set(['queued', 'submitted', 'running']);
const KIND: Record<string, string> = {
  queued: 'neutral',
  submitted: 'warn',
  running: 'warn',
  succeeded: 'ok',
  failed: 'bad',
  cancelled: 'neutral',
  expired: 'bad',
};
const PAGE = 50;

export async function tasksPage(root: HTMLElement, ctx: Ctx): Promise<void> {
  const queuesBox = h('div', { id: 'queues' });
  const status = h(
    'select',
    { name: 'status' },
    h('option', { value: '' }, 'any status'),
    STATUSES.map((s) => h('option', { value: s }, s)),
  );
  const app = h('input', { name: 'app_id', placeholder: 'app id', class: 'narrow' });
  const kind = h('input', { name: 'kind', placeholder: 'kind (chat, image, video…)', class: 'narrow' });
  const listBox = h('div', { class: 'table-box' });
  const detail = h('section', { class: 'panel', id: 'task-detail', hidden: true });
  let offset = 0;
  root.append(
    pageHeader('Tasks & queues'),
    h('h3', null, 'Queues (live)'),
    queuesBox,
    h('h3', null, 'Tasks'),
    h(
      'form',
      {
        class: 'inline-form',
        id: 'task-filter',
        onsubmit: (e: Event) => {
          e.preventDefault();
          offset = 0;
          void busy(null, load);
        },
      },
      status,
      app,
      kind,
      h('button', { type: 'submit', class: 'btn' }, 'Filter'),
    ),
    detail,
    listBox,
  );

  const drawQueues = (q: Queues) => {
    const waiting = q.keys.filter((k) => (k.waiting ?? 0) > 0 || k.waiting === null);
    replace(
      queuesBox,
      h(
        'div',
        { class: 'tiles' },
        ['queued', 'submitted', 'running'].map((s) =>
          h(
            'div',
            { class: 'tile', 'data-queue': s },
            h('div', { class: 'tile-label' }, `Tasks ${s}`),
            h('div', { class: 'tile-value' }, q.tasks ? fmtInt(q.tasks[s] ?? 0) : '—'),
          ),
        ),
        h(
          'div',
          { class: 'tile', 'data-queue': 'wait' },
          h('div', { class: 'tile-label' }, 'Waiting (WAIT mode)'),
          h('div', { class: 'tile-value' }, fmtInt(q.keys.reduce((a, k) => a + (k.waiting ?? 0), 0))),
          h(
            'div',
            { class: 'tile-sub' },
            `${fmtInt(q.waiting_here)} on this instance · ${q.keys.length} WAIT keys with limits`,
          ),
        ),
      ),
      waiting.length
        ? table(
            [
              { title: 'Key', render: (k) => h('span', { class: 'mono' }, `${k.key_prefix}…`) },
              { title: 'Name', render: (k) => k.name || '—' },
              { title: 'App', render: (k) => k.app_id },
              {
                title: 'Waiting',
                render: (k) => (k.waiting === null ? badge('unknown', 'warn') : fmtInt(k.waiting)),
                class: 'num',
              },
            ],
            waiting,
            { rowAttrs: (k) => ({ 'data-wait-key': k.key_id }) },
          )
        : h('p', { class: 'muted small' }, 'No request is waiting in a WAIT queue.'),
      q.truncated ? h('p', { class: 'muted small' }, 'Only the first 500 WAIT keys are shown.') : null,
    );
  };

  const inspect = async (id: string) => {
    const t = await get<Task & Record<string, unknown>>(`/tasks/${enc(id)}`);
    if (!ctx.alive()) return;
    detail.hidden = false;
    detail.dataset.task = t.id;
    replace(
      detail,
      h(
        'div',
        { class: 'card-head' },
        h('h3', null, 'Task ', h('span', { class: 'mono' }, t.id)),
        badge(t.status, KIND[t.status], { 'data-task-status': t.status }),
        h('span', { class: 'spacer' }),
        ACTIVE.has(t.status)
          ? writeBtn(ctx, 'Cancel task', (b) => cancel(t, b), { class: 'btn btn-danger' })
          : null,
        h(
          'button',
          {
            type: 'button',
            class: 'btn btn-plain',
            onclick: () => ((detail.hidden = true), replace(detail)),
          },
          'Close',
        ),
      ),
      h(
        'div',
        { class: 'kv' },
        h('span', null, 'Kind'),
        h('span', null, t.kind),
        h('span', null, 'App / key'),
        h('span', { class: 'mono' }, `${t.app_id} / ${t.key_id}`),
        h('span', null, 'Alias / channel'),
        h('span', null, `${t.alias ?? '—'} / ${t.channel ?? '—'}`),
        h('span', null, 'Attempts / progress'),
        h('span', null, `${t.attempts} / ${t.progress}%`),
        h('span', null, 'Created'),
        h('span', null, `${fmtTime(t.created_at)} (${fmtAgo(t.created_at)})`),
        h('span', null, 'Deadline'),
        h('span', null, fmtTime(t.deadline)),
        h('span', null, 'Completed'),
        h('span', null, fmtTime(t.completed_at)),
      ),
      h('details', { open: true }, h('summary', null, 'Everything'), json(t)),
    );
  };

  const cancel = async (t: Task, btn: HTMLButtonElement) => {
    const { ok } = await confirmDialog({
      title: `Cancel task ${t.id}?`,
      message: 'The cancel is forwarded upstream (when the provider supports it) and the task is not billed.',
      confirm: 'Cancel task',
      danger: true,
    });
    if (!ok) return;
    await busy(btn, async () => {
      const r = await api<Task>('POST', `/tasks/${enc(t.id)}/cancel`);
      toast(
        r.status === 'cancelled'
          ? 'Task cancelled'
          : 'Cancel requested: the worker holding it stops at the end of its step',
        'ok',
      );
      await Promise.all([inspect(t.id), load()]);
    });
  };

  const load = async () => {
    const r = await get<{ data: Task[] }>(
      `/tasks${qs({ status: status.value, app_id: app.value.trim(), kind: kind.value.trim(), limit: PAGE, offset })}`,
    );
    if (!ctx.alive()) return;
    replace(
      listBox,
      table(
        [
          { title: 'Task', render: (t) => h('span', { class: 'mono small' }, t.id) },
          { title: 'Kind', render: (t) => t.kind },
          {
            title: 'Status',
            render: (t) =>
              h(
                'span',
                null,
                badge(t.status, KIND[t.status]),
                t.cancel_requested_at && ACTIVE.has(t.status) ? badge('cancel requested', 'warn') : null,
              ),
          },
          { title: 'App', render: (t) => t.app_id },
          {
            title: 'Alias / channel',
            render: (t) => `${t.alias ?? '—'} / ${t.channel ?? '—'}`,
            class: 'small',
          },
          { title: 'Attempts', render: (t) => String(t.attempts), class: 'num' },
          { title: 'Created', render: (t) => fmtTime(t.created_at) },
          { title: 'Completed', render: (t) => fmtTime(t.completed_at) },
          {
            title: '',
            render: (t) => [
              h(
                'button',
                { type: 'button', class: 'btn', onclick: () => void busy(null, () => inspect(t.id)) },
                'Inspect',
              ),
              ACTIVE.has(t.status) ? writeBtn(ctx, 'Cancel', (b) => cancel(t, b)) : null,
            ],
            class: 'actions',
          },
        ],
        r.data,
        { empty: 'No tasks match.', rowAttrs: (t) => ({ 'data-task': t.id }) },
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
  ctx.onLeave(ctx.live.subscribe((snap) => drawQueues(snap.queues)));
  if (!ctx.live.last) drawQueues(await get<Queues>('/queues'));
}
