/**
 * What an operator notification looks like on the wire, per target format:
 *
 * - `slack`: a Slack incoming-webhook message, `{"text": "..."}` POSTed as application/json
 *   (https://api.slack.com/incoming-webhooks;
 *   https://docs.slack.dev/tools/java-slack-sdk/guides/incoming-webhooks shows the same curl). Mattermost, Rocket.Chat
 *   and Discord's `/slack` endpoint take the same body. `&`, `<` and `>` in our text are escaped as Slack
 *   asks (https://api.slack.com/reference/surfaces/formatting#escaping), so a channel code or a
 *   reason can't turn into a mention or a link.
 * - `json`: the event itself (below), for anything else; signed like task webhooks.
 *
 * Both carry the same headers: x-anima-event (kind), x-anima-delivery (event id + target, stable across
 * retries, for the receiver's own dedup), x-anima-timestamp and, when the target has a secret,
 * x-anima-signature: `t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
 */
import type { NotifyEventKind, NotifyFormat } from '../config/notify-targets.js';
import { signBody } from '../lib/webhook-post.js';

export type Severity = 'info' | 'warning' | 'critical';

export interface NotifyEvent {
  /** Stable across instances for the same happening: the dedup key (e.g. `breaker:c1:7`). */
  id: string;
  kind: NotifyEventKind | 'test' | 'summary';
  severity: Severity;
  /** ms since epoch. */
  at: number;
  /** One line, for people. */
  summary: string;
  /** What it is about: a channel code, a dependency, a scope. */
  subject: string;
  details: Record<string, unknown>;
}

const ICON: Record<Severity, string> = {
  info: ':information_source:',
  warning: ':warning:',
  critical: ':rotating_light:',
};

/** Slack's three control characters (see the link above); nothing else needs escaping in `text`. */
export function slackEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** The generic JSON body (format `json`). */
export function jsonBody(ev: NotifyEvent, instance: string): Record<string, unknown> {
  return {
    id: ev.id,
    kind: ev.kind,
    severity: ev.severity,
    at: new Date(ev.at).toISOString(),
    summary: ev.summary,
    subject: ev.subject,
    details: ev.details,
    instance,
  };
}

export function slackBody(ev: NotifyEvent): { text: string } {
  const lines = [`${ICON[ev.severity]} *Anima: ${slackEscape(ev.summary)}*`];
  const facts = Object.entries(ev.details)
    .filter(([, v]) => v !== null && v !== undefined && typeof v !== 'object')
    .map(([k, v]) => `${k}: ${slackEscape(String(v))}`);
  if (facts.length) lines.push(facts.join(' · '));
  lines.push(`\`${ev.kind}\` at ${new Date(ev.at).toISOString()}`);
  return { text: lines.join('\n') };
}

/** The body and headers of one delivery of `ev` to a target. */
export function render(
  ev: NotifyEvent,
  target: { id: string; format: NotifyFormat; secret: string },
  instance: string,
  nowMs = Date.now(),
): { body: string; headers: Record<string, string> } {
  const body = JSON.stringify(target.format === 'slack' ? slackBody(ev) : jsonBody(ev, instance));
  const ts = Math.floor(nowMs / 1000);
  return {
    body,
    headers: {
      'x-anima-event': ev.kind,
      'x-anima-delivery': `${ev.id}/${target.id}`,
      'x-anima-timestamp': String(ts),
      ...(target.secret ? { 'x-anima-signature': signBody(target.secret, ts, body) } : {}),
    },
  };
}
