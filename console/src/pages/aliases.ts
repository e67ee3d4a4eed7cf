/**
 * Aliases and their fallback chains: tiers in order (weighted inside a tier). Reorder tiers and targets,
 * add or remove targets, enable / disable, edit the settings (attempts, deadline, response-cache TTL);
 * saved with the version read (If-Match), conflicts shown. Each target shows its channel's breaker state,
 * live.
 */
import { type Circuit, api, enc, get } from '../api.js';
import { type Ctx, conflictBox, isConflict, pageHeader, pickCurrent, writeBtn } from '../ctx.js';
import { BREAKER_KIND, badge, breakerLabel, busy, field, fmtInt, h, replace, toast } from '../dom.js';

interface Target {
  channel: string;
  model: string;
  weight: number;
}
interface Alias {
  id: string;
  name: string;
  description: string | null;
  enabled: boolean;
  chain: Array<{ targets: Target[] }>;
  max_attempts: number;
  deadline_ms: number;
  /** Exact-match response cache: seconds an answer is kept (0 = off). */
  cache_ttl_s: number;
  version_no: number;
  effective_from: string | null;
  effective_to: string | null;
}

/** The alias settings the form edits: [field, label, min, max, hint]. */
const SETTINGS: Array<['max_attempts' | 'deadline_ms' | 'cache_ttl_s', string, number, number, string]> = [
  ['max_attempts', 'Max attempts', 1, 20, 'upstream calls per request, across the whole chain (1–20)'],
  [
    'deadline_ms',
    'Deadline (ms)',
    100,
    3_600_000,
    'time for the whole request from its arrival, retries included (100–3,600,000)',
  ],
  [
    'cache_ttl_s',
    'Response cache TTL (s)',
    0,
    2_592_000,
    'exact-match answers kept this many seconds; 0 = off (at most 30 days)',
  ],
];

const move = <T>(a: T[], i: number, d: number): T[] => {
  const j = i + d;
  if (j < 0 || j >= a.length) return a;
  const b = [...a];
  [b[i], b[j]] = [b[j]!, b[i]!];
  return b;
};

export async function aliasesPage(root: HTMLElement, ctx: Ctx): Promise<void> {
  const list = h('div', { class: 'cards' });
  let circuits = new Map<string, Circuit>();
  let channelCodes: string[] = [];
  root.append(
    pageHeader(
      'Aliases',
      writeBtn(ctx, 'New alias', () => openCreate(), { class: 'btn btn-primary' }),
      h('button', { type: 'button', class: 'btn', onclick: () => void load() }, 'Refresh'),
    ),
    list,
  );
  const createBox = h('section', { class: 'panel', hidden: true });
  root.insertBefore(createBox, list);

  const stateBadge = (channel: string) => {
    const c = circuits.get(channel);
    return c
      ? badge(breakerLabel(c.state), BREAKER_KIND[c.state] ?? 'neutral', { 'data-breaker-of': channel })
      : badge('unknown channel', 'bad');
  };

  const card = (a: Alias & { versions: number }) => {
    // A target stored without a weight weighs 1 (the router's default): show and save it as 1.
    for (const tier of a.chain) for (const t of tier.targets) if (typeof t.weight !== 'number') t.weight = 1;
    let draft = a.chain.map((t) => ({ targets: t.targets.map((x) => ({ ...x })) }));
    const el = h('section', { class: 'card', 'data-alias': a.name });
    const conflict = h('div');
    const dirty = () => JSON.stringify(draft) !== JSON.stringify(a.chain);
    // The settings form lives in its own box, kept across redraws of the card (chain edits redraw it).
    const settingsBox = h('div');

    const openSettings = () => {
      const inputs = new Map<string, HTMLInputElement>();
      const settingsConflict = h('div');
      const values = (): Record<string, number> | null => {
        const out: Record<string, number> = {};
        for (const [k, label, min, max] of SETTINGS) {
          const inp = inputs.get(k)!;
          const t = inp.value.trim();
          const n = Number(t);
          if (!/^\d+$/.test(t) || n < min || n > max) {
            inp.classList.add('invalid');
            inp.focus();
            toast(`${label}: a whole number from ${fmtInt(min)} to ${fmtInt(max)}`, 'error');
            return null;
          }
          inp.classList.remove('invalid');
          if (n !== a[k]) out[k] = n;
        }
        return out;
      };
      const saveSettings = async (
        version: number,
        body: Record<string, number>,
        btn: HTMLButtonElement | null,
      ) => {
        await busy(btn, async () => {
          try {
            const row = await api<Alias>('PATCH', `/aliases/${enc(a.name)}`, body, { ifMatch: version });
            toast(`Saved ${a.name}'s settings (version ${row.version_no})`, 'ok');
            await load();
          } catch (e) {
            if (!isConflict(e)) throw e;
            replace(
              settingsConflict,
              conflictBox(e, version, body, {
                reload: () => void load(),
                overwrite: (v) => void saveSettings(v, body, null),
              }),
            );
          }
        });
      };
      const form = h(
        'form',
        {
          class: 'editor',
          'data-settings': a.name,
          'data-version': String(a.version_no),
          onsubmit: (e: Event) => {
            e.preventDefault();
            const body = values();
            if (!body) return;
            if (Object.keys(body).length === 0) {
              toast('Nothing changed.');
              return;
            }
            void saveSettings(
              a.version_no,
              body,
              form.querySelector<HTMLButtonElement>('button[type=submit]'),
            );
          },
        },
        h('h4', null, `Settings of ${a.name}`, ' ', badge(`version ${a.version_no}`)),
        h(
          'div',
          { class: 'form-grid' },
          SETTINGS.map(([k, label, min, max, hint]) => {
            const inp = h('input', {
              name: k,
              type: 'number',
              min,
              max,
              step: 1,
              required: true,
              value: String(a[k]),
              inputmode: 'numeric',
            });
            inputs.set(k, inp);
            return field(label, inp, hint);
          }),
        ),
        settingsConflict,
        h(
          'div',
          { class: 'actions' },
          h('button', { type: 'submit', class: 'btn btn-primary', 'data-write': '' }, 'Save settings'),
          h(
            'button',
            { type: 'button', class: 'btn btn-plain', onclick: () => replace(settingsBox) },
            'Cancel',
          ),
        ),
      );
      replace(settingsBox, form);
      inputs.get('max_attempts')!.focus();
    };

    const save = async (version: number, btn: HTMLButtonElement | null) => {
      await busy(btn, async () => {
        try {
          const row = await api<Alias>(
            'PATCH',
            `/aliases/${enc(a.name)}`,
            { chain: draft },
            { ifMatch: version },
          );
          toast(`Saved ${a.name}'s chain (version ${row.version_no})`, 'ok');
          await load();
        } catch (e) {
          if (!isConflict(e)) throw e;
          replace(
            conflict,
            conflictBox(
              e,
              version,
              { chain: draft },
              { reload: () => void load(), overwrite: (v) => void save(v, null) },
            ),
          );
        }
      });
    };

    const draw = () => {
      const ro = !ctx.canWrite;
      const tiers = h(
        'ol',
        { class: 'tiers' },
        draft.map((tier, i) =>
          h(
            'li',
            { 'data-tier': String(i) },
            h(
              'div',
              { class: 'tier-head' },
              h('span', { class: 'strong' }, `Tier ${i + 1}`),
              h('span', { class: 'muted small' }, tier.targets.length > 1 ? ' weighted' : ''),
              writeBtn(ctx, '↑', () => ((draft = move(draft, i, -1)), draw()), {
                title: 'Move this tier up',
                'aria-label': `Move tier ${i + 1} up`,
                disabled: i === 0,
              }),
              writeBtn(ctx, '↓', () => ((draft = move(draft, i, 1)), draw()), {
                title: 'Move this tier down',
                'aria-label': `Move tier ${i + 1} down`,
                disabled: i === draft.length - 1,
              }),
              writeBtn(ctx, '✕', () => ((draft = draft.filter((_, k) => k !== i)), draw()), {
                title: 'Remove this tier',
                'aria-label': `Remove tier ${i + 1}`,
                disabled: draft.length === 1,
              }),
            ),
            h(
              'ul',
              { class: 'targets' },
              tier.targets.map((t, j) =>
                h(
                  'li',
                  { 'data-target': t.channel },
                  h('span', { class: 'mono' }, t.channel),
                  ' ',
                  stateBadge(t.channel),
                  h('span', { class: 'muted' }, ` → ${t.model}`),
                  h('span', { class: 'muted small' }, ` · weight ${t.weight}`),
                  writeBtn(ctx, '↑', () => ((tier.targets = move(tier.targets, j, -1)), draw()), {
                    title: 'Move up in the tier',
                    'aria-label': `Move ${t.channel} up`,
                    disabled: j === 0,
                  }),
                  writeBtn(ctx, '↓', () => ((tier.targets = move(tier.targets, j, 1)), draw()), {
                    title: 'Move down in the tier',
                    'aria-label': `Move ${t.channel} down`,
                    disabled: j === tier.targets.length - 1,
                  }),
                  writeBtn(
                    ctx,
                    '✕',
                    () => {
                      tier.targets = tier.targets.filter((_, k) => k !== j);
                      if (tier.targets.length === 0) draft = draft.filter((x) => x !== tier);
                      draw();
                    },
                    {
                      title: 'Remove this target',
                      'aria-label': `Remove ${t.channel}`,
                      disabled: draft.length === 1 && tier.targets.length === 1,
                    },
                  ),
                ),
              ),
            ),
          ),
        ),
      );
      // Add a target: to an existing tier or as a new last tier.
      const chSel = h(
        'select',
        { name: 'channel' },
        channelCodes.map((c) => h('option', { value: c }, c)),
      );
      const model = h('input', { name: 'model', placeholder: 'upstream model', required: true });
      const weight = h('input', { name: 'weight', type: 'number', min: 0, value: '1', class: 'narrow' });
      const tierSel = h(
        'select',
        { name: 'tier' },
        draft.map((_, i) => h('option', { value: String(i) }, `tier ${i + 1}`)),
        h('option', { value: 'new' }, 'new last tier'),
      );
      const add = ro
        ? null
        : h(
            'form',
            {
              class: 'inline-form',
              onsubmit: (e: Event) => {
                e.preventDefault();
                if (!model.value.trim()) return;
                const t = {
                  channel: chSel.value,
                  model: model.value.trim(),
                  weight: Number(weight.value) || 0,
                };
                if (tierSel.value === 'new') draft.push({ targets: [t] });
                else draft[Number(tierSel.value)]!.targets.push(t);
                draw();
              },
            },
            chSel,
            model,
            weight,
            tierSel,
            h('button', { type: 'submit', class: 'btn' }, 'Add target'),
          );
      replace(
        el,
        h(
          'div',
          { class: 'card-head' },
          h('h3', null, a.name),
          a.enabled ? badge('enabled', 'ok') : badge('disabled', 'bad'),
          badge(`version ${a.version_no}`),
          a.versions > 1 ? badge(`${a.versions} windows`) : null,
          h(
            'span',
            { class: 'muted small' },
            ` max ${a.max_attempts} attempts · deadline ${a.deadline_ms} ms · response cache ${a.cache_ttl_s ? `${a.cache_ttl_s} s` : 'off'}`,
          ),
          h('span', { class: 'spacer' }),
          writeBtn(
            ctx,
            'Edit settings',
            () => (settingsBox.firstChild ? replace(settingsBox) : openSettings()),
            { title: 'Max attempts, deadline and response-cache TTL', 'data-edit-settings': a.name },
          ),
          writeBtn(ctx, a.enabled ? 'Disable' : 'Enable', (b) =>
            busy(b, async () => {
              try {
                await api(
                  'PATCH',
                  `/aliases/${enc(a.name)}`,
                  { enabled: !a.enabled },
                  { ifMatch: a.version_no },
                );
              } catch (e) {
                if (!isConflict(e)) throw e;
                toast(`${a.name} changed meanwhile: reloaded.`, 'error');
              }
              await load();
            }),
          ),
        ),
        a.description ? h('p', { class: 'muted' }, a.description) : null,
        settingsBox,
        tiers,
        add,
        conflict,
        ro
          ? null
          : h(
              'div',
              { class: 'actions' },
              h(
                'button',
                {
                  type: 'button',
                  class: 'btn btn-primary',
                  disabled: !dirty(),
                  'data-write': '',
                  onclick: (e: Event) => void save(a.version_no, e.currentTarget as HTMLButtonElement),
                },
                'Save chain',
              ),
              h(
                'button',
                {
                  type: 'button',
                  class: 'btn btn-plain',
                  disabled: !dirty(),
                  onclick: () => (
                    (draft = a.chain.map((t) => ({ targets: t.targets.map((x) => ({ ...x })) }))),
                    replace(conflict),
                    draw()
                  ),
                },
                'Revert',
              ),
              dirty() ? h('span', { class: 'muted small' }, 'unsaved changes') : null,
            ),
      );
    };
    draw();
    return { el, draw };
  };

  let cards: Array<{ el: HTMLElement; draw: () => void }> = [];
  const load = async () => {
    const [al, circ] = await Promise.all([
      get<{ data: Alias[] }>('/aliases?limit=500'),
      get<{ data: Circuit[] }>('/circuits'),
    ]);
    if (!ctx.alive()) return;
    circuits = new Map(circ.data.map((c) => [c.channel, c]));
    channelCodes = circ.data.map((c) => c.channel);
    cards = pickCurrent(al.data, (a) => a.name).map(card);
    replace(list, cards.length ? cards.map((c) => c.el) : h('p', { class: 'empty' }, 'No aliases yet.'));
  };

  const openCreate = () => {
    createBox.hidden = false;
    const name = h('input', { name: 'name', required: true });
    const channel = h(
      'select',
      { name: 'channel' },
      channelCodes.map((c) => h('option', { value: c }, c)),
    );
    const model = h('input', { name: 'model', required: true, placeholder: 'upstream model' });
    const form = h(
      'form',
      {
        class: 'editor',
        onsubmit: async (e: Event) => {
          e.preventDefault();
          await busy(form.querySelector('button[type=submit]'), async () => {
            await api('POST', '/aliases', {
              name: name.value.trim(),
              chain: [{ targets: [{ channel: channel.value, model: model.value.trim(), weight: 1 }] }],
            });
            toast(`Created alias ${name.value.trim()}`, 'ok');
            createBox.hidden = true;
            replace(createBox);
            await load();
          });
        },
      },
      h('h3', null, 'New alias'),
      h(
        'div',
        { class: 'form-grid' },
        field('Name (what clients send as model)', name),
        field('First channel', channel),
        field('Upstream model', model),
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
            onclick: () => ((createBox.hidden = true), replace(createBox)),
          },
          'Cancel',
        ),
      ),
    );
    replace(createBox, form);
  };

  await load();
  ctx.onLeave(
    ctx.live.subscribe((snap) => {
      circuits = new Map(snap.circuits.map((c) => [c.channel, c]));
      for (const b of list.querySelectorAll<HTMLElement>('[data-breaker-of]')) {
        const c = circuits.get(b.dataset.breakerOf!);
        if (!c) continue;
        b.textContent = breakerLabel(c.state);
        b.className = `badge badge-${BREAKER_KIND[c.state] ?? 'neutral'}`;
      }
    }),
  );
}
