/**
 * The operator console: sign in with an admin token, then one page per area, chosen by the URL's hash
 * (#/channels). Every figure comes from the gateway's own admin API; nothing is loaded from elsewhere.
 */
import { ApiError, type Me, get, session, whenSignedOut } from './api.js';
import type { Ctx, Page } from './ctx.js';
import { badge, clearToasts, errorText, h, replace } from './dom.js';
import { LiveFeed } from './live.js';
import { currencyCode, setCurrency } from './money.js';
import { adminTokensPage } from './pages/admintokens.js';
import { aliasesPage } from './pages/aliases.js';
import { appsPage } from './pages/apps.js';
import { auditPage } from './pages/audit.js';
import { channelsPage } from './pages/channels.js';
import { killSwitchPage } from './pages/killswitch.js';
import { ledgerPage } from './pages/ledger.js';
import { notificationsPage } from './pages/notifications.js';
import { overviewPage } from './pages/overview.js';
import { pricesPage } from './pages/prices.js';
import { requestsPage } from './pages/requests.js';
import { tasksPage } from './pages/tasks.js';
import { tokenGroupsPage } from './pages/tokengroups.js';

const PAGES: Array<{ id: string; title: string; page: Page }> = [
  { id: 'overview', title: 'Overview', page: overviewPage },
  { id: 'requests', title: 'Requests', page: requestsPage },
  { id: 'channels', title: 'Channels', page: channelsPage },
  { id: 'aliases', title: 'Aliases', page: aliasesPage },
  { id: 'apps', title: 'Apps & keys', page: appsPage },
  { id: 'token-groups', title: 'Token groups', page: tokenGroupsPage },
  { id: 'prices', title: 'Prices', page: pricesPage },
  { id: 'ledger', title: 'Ledger', page: ledgerPage },
  { id: 'tasks', title: 'Tasks & queues', page: tasksPage },
  { id: 'audit', title: 'Audit log', page: auditPage },
  { id: 'admin-tokens', title: 'Admin tokens', page: adminTokensPage },
  { id: 'notifications', title: 'Notifications', page: notificationsPage },
  { id: 'kill-switch', title: 'Kill switch', page: killSwitchPage },
];

const root = document.getElementById('app')!;
let live: LiveFeed | null = null;

function signIn(message?: string): void {
  live?.stop();
  live = null;
  document.body.className = 'signed-out';
  const token = h('input', {
    type: 'password',
    id: 'token',
    name: 'token',
    autocomplete: 'current-password',
    required: true,
    placeholder: 'admin or viewer token',
  });
  const err = h('p', { class: 'error', role: 'alert' }, message ?? '');
  const form = h(
    'form',
    {
      class: 'signin',
      onsubmit: async (e: Event) => {
        e.preventDefault();
        const t = token.value.trim();
        if (!t) return;
        session.set(t);
        const btn = form.querySelector('button')!;
        btn.disabled = true;
        try {
          await start();
        } catch (x) {
          session.clear();
          err.textContent =
            x instanceof ApiError && x.status === 401
              ? 'This token is not an admin or viewer token of this gateway.'
              : errorText(x);
        } finally {
          btn.disabled = false;
        }
      },
    },
    h('h1', null, 'Anima console'),
    h(
      'p',
      { class: 'muted' },
      'Sign in with an admin token (ANIMA_ADMIN_TOKEN, or one made with POST /api/admin/v1/admin-tokens). Viewer tokens see everything and change nothing.',
    ),
    h('label', { class: 'field' }, h('span', { class: 'field-label' }, 'Token'), token),
    h('button', { type: 'submit', class: 'btn btn-primary' }, 'Sign in'),
    err,
  );
  replace(root, form);
  token.focus();
}

async function start(): Promise<void> {
  const me = await get<Me>('/whoami');
  // The account currency money is formatted with (an older gateway without the route: USD).
  setCurrency((await get<{ currency: string }>('/console-settings').catch(() => null))?.currency);
  shell(me);
}

function shell(me: Me): void {
  live?.stop();
  live = new LiveFeed();
  const feed = live;
  const canWrite = me.role === 'admin';
  document.body.className = canWrite ? 'role-admin' : 'role-viewer';
  const nav = h(
    'nav',
    { class: 'nav' },
    PAGES.map((p) => h('a', { href: `#/${p.id}`, 'data-page': p.id }, p.title)),
  );
  const liveDot = h(
    'span',
    { class: 'live live-connecting', id: 'live', title: 'live updates' },
    'connecting',
  );
  const ksBanner = h('div', { class: 'ks-banner', hidden: true, role: 'alert' });
  const main = h('main', { id: 'view' });
  replace(
    root,
    h(
      'header',
      { class: 'top' },
      h('a', { class: 'brand', href: '#/overview' }, 'Anima', h('span', null, ' console')),
      h(
        'div',
        { class: 'top-right' },
        liveDot,
        badge(me.role, me.role === 'admin' ? 'ok' : 'neutral', { id: 'role' }),
        h('span', { class: 'muted' }, me.name),
        h('span', { class: 'muted small', id: 'currency', title: 'account currency' }, currencyCode()),
        h('button', { type: 'button', class: 'btn btn-plain', onclick: signOut }, 'Sign out'),
      ),
    ),
    ksBanner,
    h('div', { class: 'layout' }, nav, main),
  );
  feed.onMode((m) => {
    liveDot.className = `live live-${m}`;
    liveDot.textContent = m;
  });
  feed.subscribe((snap) => {
    const ks = snap.kill_switch;
    ksBanner.hidden = !ks.enabled;
    ksBanner.textContent = ks.enabled
      ? `Kill switch ON: the data plane answers 503 gateway_disabled${ks.reason ? ` (${ks.reason})` : ''}${ks.by ? `, set by ${ks.by}` : ''}.`
      : '';
  });
  feed.start();

  let leave: Array<() => void> = [];
  let generation = 0;
  const route = async () => {
    for (const f of leave) f();
    leave = [];
    const gen = ++generation;
    clearToasts();
    const id = location.hash.replace(/^#\/?/, '').split('?')[0] || 'overview';
    const p = PAGES.find((x) => x.id === id) ?? PAGES[0]!;
    for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.page === p.id);
    document.title = `${p.title} · Anima console`;
    const view = h('div', { class: 'page', 'data-page': p.id });
    replace(main, view);
    const ctx: Ctx = {
      me,
      canWrite,
      live: feed,
      onLeave: (f) => leave.push(f),
      alive: () => gen === generation,
    };
    try {
      await p.page(view, ctx);
    } catch (e) {
      if (gen === generation) view.appendChild(h('p', { class: 'error', role: 'alert' }, errorText(e)));
    }
    view.dataset.ready = '1'; // first load done (tests and screenshots wait for it)
  };
  window.onhashchange = () => void route();
  void route();
}

function signOut(): void {
  session.clear();
  window.onhashchange = null;
  signIn();
}

whenSignedOut(() => {
  // The token stopped working (revoked, or the gateway's tokens changed).
  if (document.body.className !== 'signed-out') {
    session.clear();
    window.onhashchange = null;
    signIn('Signed out: the token is no longer accepted.');
  }
});

if (session.token) {
  start().catch((e: unknown) => {
    session.clear();
    signIn(e instanceof ApiError && e.status === 401 ? undefined : errorText(e));
  });
} else signIn();
