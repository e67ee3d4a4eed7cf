/**
 * The kill switch: stops the whole data plane (every instance answers 503 gateway_disabled; admin and
 * health stay up). Turning it on needs a reason and the word STOP typed into the confirmation.
 */
import { type KillSwitch, api, get } from '../api.js';
import { type Ctx, pageHeader, writeBtn } from '../ctx.js';
import { busy, confirmDialog, fmtAgo, fmtTime, h, replace, toast } from '../dom.js';

export async function killSwitchPage(root: HTMLElement, ctx: Ctx): Promise<void> {
  const box = h('section', { class: 'panel ks', id: 'kill-switch' });
  root.append(pageHeader('Kill switch'), box);

  const draw = (ks: KillSwitch) => {
    replace(
      box,
      h(
        'div',
        {
          class: `ks-state ${ks.enabled ? 'ks-on' : 'ks-off'}`,
          'data-kill-switch': ks.enabled ? 'on' : 'off',
        },
        h('div', { class: 'ks-title' }, ks.enabled ? 'Data plane STOPPED' : 'Data plane running'),
        h(
          'p',
          null,
          ks.enabled
            ? 'Every request to /v1/* on every instance is answered 503 gateway_disabled. The admin API, this console and health checks stay up.'
            : 'Requests are served normally.',
        ),
        ks.at
          ? h(
              'p',
              { class: 'muted small' },
              `Last changed ${fmtTime(ks.at)} (${fmtAgo(ks.at)})${ks.by ? ` by ${ks.by}` : ''}${ks.reason ? `: ${ks.reason}` : ''}`,
            )
          : null,
      ),
      ks.enabled
        ? writeBtn(ctx, 'Resume traffic…', (b) => set(false, b), { class: 'btn btn-primary big' })
        : writeBtn(ctx, 'Stop all traffic…', (b) => set(true, b), { class: 'btn btn-danger big' }),
      ctx.canWrite ? null : h('p', { class: 'muted' }, 'Viewer tokens cannot change the kill switch.'),
    );
  };

  const set = async (enabled: boolean, btn: HTMLButtonElement) => {
    const { ok, reason } = enabled
      ? await confirmDialog({
          title: 'Stop all traffic?',
          message:
            'Every instance refuses every data-plane request (503 gateway_disabled) until you resume. In-flight requests finish.',
          confirm: 'Stop traffic',
          danger: true,
          typeToConfirm: 'STOP',
          reason: true,
        })
      : await confirmDialog({
          title: 'Resume traffic?',
          message: 'Every instance serves requests again within a second.',
          confirm: 'Resume traffic',
          reason: true,
        });
    if (!ok) return;
    await busy(btn, async () => {
      const ks = await api<KillSwitch>('POST', '/kill-switch', { enabled, ...(reason ? { reason } : {}) });
      toast(
        enabled ? 'Kill switch ON: traffic stopped' : 'Kill switch OFF: traffic resumed',
        enabled ? 'error' : 'ok',
      );
      draw(ks);
      void ctx.live.refresh();
    });
  };

  draw(await get<KillSwitch>('/kill-switch'));
  ctx.onLeave(
    ctx.live.subscribe((snap) => {
      const cur = box.querySelector<HTMLElement>('[data-kill-switch]')?.dataset.killSwitch;
      if (cur !== (snap.kill_switch.enabled ? 'on' : 'off')) draw(snap.kill_switch);
    }),
  );
}
