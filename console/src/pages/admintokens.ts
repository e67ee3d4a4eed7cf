/**
 * Admin tokens: who may use the admin API and this console, each `admin` (reads and writes) or `viewer`
 * (reads only). A new token is shown once (the gateway keeps only its hash); a revoked one is refused
 * (401) from then on, and a console signed in with it is signed out at its next call.
 */
import { api, enc, get } from '../api.js';
import { type Ctx, pageHeader, writeBtn } from '../ctx.js';
import { badge, busy, confirmDialog, field, fmtTime, h, replace, showSecret, table, toast } from '../dom.js';

interface AdminToken {
  id: string;
  name: string;
  role: 'admin' | 'viewer';
  token_prefix: string;
  enabled: boolean;
  created_at: string | null;
}

export async function adminTokensPage(root: HTMLElement, ctx: Ctx): Promise<void> {
  const tableBox = h('div', { class: 'table-box' });
  let tokens: AdminToken[] = [];
  root.append(
    pageHeader(
      'Admin tokens',
      h('button', { type: 'button', class: 'btn', onclick: () => void load() }, 'Refresh'),
    ),
    h(
      'p',
      { class: 'muted small' },
      'Bearer tokens of the admin API and this console. admin: reads and changes everything; viewer: reads everything, changes nothing. Only a hash of each token is stored; its first characters identify it.',
    ),
    tableBox,
  );

  const revoke = async (t: AdminToken, btn: HTMLButtonElement) => {
    const self = t.id === ctx.me.id;
    const lastAdmin =
      t.role === 'admin' && tokens.filter((x) => x.role === 'admin' && x.enabled).length === 1;
    const { ok } = await confirmDialog({
      title: `Revoke ${t.name}?`,
      message: h(
        'div',
        null,
        h(
          'p',
          null,
          `Calls with ${t.token_prefix}… are refused (401) from now on. This cannot be undone: make a new token instead.`,
        ),
        self
          ? h(
              'p',
              null,
              h('strong', null, 'This is the token you are signed in with: you will be signed out.'),
            )
          : null,
        lastAdmin
          ? h(
              'p',
              { class: 'error' },
              'It is the last admin token: afterwards nobody can change anything through the admin API or this console (viewers can still read).',
            )
          : null,
      ),
      confirm: 'Revoke token',
      danger: true,
      ...(self || lastAdmin ? { typeToConfirm: 'REVOKE' } : {}),
    });
    if (!ok) return;
    await busy(btn, async () => {
      await api('DELETE', `/admin-tokens/${enc(t.id)}`);
      toast(`Revoked ${t.name} (${t.token_prefix}…)`, 'ok');
      await load(); // revoking your own token: this read is refused and the console signs out
    });
  };

  const load = async () => {
    const list = await get<{ data: AdminToken[] }>('/admin-tokens');
    if (!ctx.alive()) return;
    tokens = list.data;
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
                t.id === ctx.me.id ? [' ', badge('you', 'neutral', { 'data-self': '' })] : null,
                h('div', { class: 'muted small mono' }, t.id),
              ),
          },
          {
            title: 'Role',
            render: (t) => badge(t.role, t.role === 'admin' ? 'ok' : 'neutral', { 'data-role': t.role }),
          },
          { title: 'Token', render: (t) => h('span', { class: 'mono' }, `${t.token_prefix}…`) },
          { title: 'Status', render: (t) => (t.enabled ? badge('active', 'ok') : badge('disabled', 'bad')) },
          { title: 'Created', render: (t) => fmtTime(t.created_at) },
          {
            title: '',
            render: (t) =>
              writeBtn(ctx, 'Revoke…', (b) => revoke(t, b), {
                class: 'btn btn-danger',
                title: 'Revoke this token',
              }),
            class: 'actions',
          },
        ],
        tokens,
        { empty: 'No admin tokens.', rowAttrs: (t) => ({ 'data-admin-token': t.id, 'data-name': t.name }) },
      ),
    );
  };

  // ---- new token (admins only) ----
  if (ctx.canWrite) {
    const name = h('input', {
      name: 'token_name',
      required: true,
      maxlength: 200,
      placeholder: 'who or what uses it',
    });
    const role = h(
      'select',
      { name: 'role', 'aria-label': 'role' },
      h('option', { value: 'viewer' }, 'viewer (read only)'),
      h('option', { value: 'admin' }, 'admin (read and write)'),
    );
    const form = h(
      'form',
      {
        class: 'inline-form',
        id: 'new-admin-token',
        onsubmit: async (e: Event) => {
          e.preventDefault();
          const n = name.value.trim();
          if (!n) return;
          await busy(form.querySelector('button[type=submit]'), async () => {
            const r = await api<{ id: string; name: string; role: string; token: string }>(
              'POST',
              '/admin-tokens',
              { name: n, role: role.value },
            );
            name.value = '';
            await load();
            showSecret(`New ${r.role} token: ${r.name}`, r.token, 'token');
          });
        },
      },
      field('Name', name),
      field('Role', role),
      h('button', { type: 'submit', class: 'btn btn-primary', 'data-write': '' }, 'Create token'),
    );
    root.append(h('section', { class: 'panel' }, h('h3', null, 'New admin token'), form));
  }

  await load();
}
