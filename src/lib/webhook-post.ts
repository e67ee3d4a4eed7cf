/**
 * One signed JSON POST to an operator's or tenant's URL, through the outbound policy (SSRF): checked before
 * connecting and again at connect time by the policy's dispatcher, which connects only to addresses it
 * checked. Redirects are not followed (a 3xx is a failed delivery). Used by observability/notify.ts; task
 * webhooks (tasks/webhooks.ts) sign the same way.
 */
import { createHmac } from 'node:crypto';
import { request } from 'undici';
import { type OutboundPolicy, type OutboundUse, OutboundRefusedError } from './outbound.js';

/**
 * `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: the scheme of task webhooks
 * (tasks/webhooks.ts signWebhook, header x-anima-signature), so one verifier serves both.
 */
export function signBody(secret: string, timestamp: number, body: string): string {
  return `t=${timestamp},v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

export interface PostResult {
  ok: boolean;
  /** The receiver's HTTP status (0: no answer). */
  status: number;
  /** Why it failed (absent when ok). */
  error?: string;
  /** The outbound policy refused the URL: final, not worth a retry. */
  refused?: boolean;
  ms: number;
}

export async function postJson(
  url: string,
  body: string,
  headers: Record<string, string>,
  opts: { policy: OutboundPolicy; use: OutboundUse; timeoutMs: number },
): Promise<PostResult> {
  const t0 = Date.now();
  const pre = opts.policy.checkUrl(url, opts.use);
  if (!pre.ok)
    return {
      ok: false,
      status: 0,
      refused: true,
      error: `refused by the outbound policy: the URL ${pre.reason}`,
      ms: 0,
    };
  try {
    const res = await request(url, {
      dispatcher: opts.policy.dispatcher(opts.use),
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body,
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
    });
    await res.body.dump();
    const ok = res.statusCode >= 200 && res.statusCode < 300;
    return {
      ok,
      status: res.statusCode,
      ...(ok ? {} : { error: `receiver answered ${res.statusCode}` }),
      ms: Date.now() - t0,
    };
  } catch (e) {
    const refused =
      e instanceof OutboundRefusedError || (e as { code?: string }).code === 'ANIMA_OUTBOUND_REFUSED';
    return {
      ok: false,
      status: 0,
      refused,
      error: (refused ? 'refused by the outbound policy: ' : '') + String((e as Error).message).slice(0, 300),
      ms: Date.now() - t0,
    };
  }
}
