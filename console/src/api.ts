/**
 * The admin API client: bearer token from this tab's session, JSON in and out, errors as ApiError with
 * the API's code (and, on a 409 version_conflict, the row as it is now).
 */
export const API = '/api/admin/v1';
const TOKEN_KEY = 'anima.console.token';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly body: unknown,
  ) {
    super(message);
  }
  /** On 409 version_conflict: the row as it is now. */
  get current(): Record<string, unknown> | null {
    const e = (this.body as { error?: { current?: Record<string, unknown> } } | null)?.error;
    return e?.current ?? null;
  }
}

export const session = {
  get token(): string | null {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set(token: string): void {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  clear(): void {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

let onSignedOut: (() => void) | null = null;
export function whenSignedOut(fn: () => void): void {
  onSignedOut = fn;
}

export function authHeaders(): Record<string, string> {
  const t = session.token;
  return t ? { authorization: `Bearer ${t}` } : {};
}

export async function api<T = any>(
  method: string,
  path: string,
  body?: unknown,
  opts: { ifMatch?: number; signal?: AbortSignal } = {},
): Promise<T> {
  const headers: Record<string, string> = { ...authHeaders(), accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (opts.ifMatch !== undefined) headers['if-match'] = `"${opts.ifMatch}"`;
  const r = await fetch(API + path, {
    method,
    headers,
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  const text = r.status === 204 ? '' : await r.text();
  let data: unknown = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!r.ok) {
    const e = (data as { error?: { code?: string; message?: string } } | null)?.error;
    if (r.status === 401) onSignedOut?.();
    throw new ApiError(
      r.status,
      e?.code ?? `http_${r.status}`,
      e?.message ?? `${method} ${path}: HTTP ${r.status}`,
      data,
    );
  }
  return data as T;
}

export const get = <T = any>(path: string, signal?: AbortSignal) =>
  api<T>('GET', path, undefined, signal ? { signal } : {});

/** ?a=1&b=2 from the defined, non-empty values. */
export function qs(params: Record<string, string | number | boolean | null | undefined>): string {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params))
    if (v !== undefined && v !== null && v !== '') u.set(k, String(v));
  const s = u.toString();
  return s ? `?${s}` : '';
}

export const enc = encodeURIComponent;

export interface Me {
  id: string;
  name: string;
  role: 'admin' | 'viewer';
}

export interface Circuit {
  channel: string;
  enabled: boolean;
  state: 'closed' | 'open' | 'half_open' | 'forced_open';
  gen: number;
  since: string | null;
  open_until: string | null;
  reason: string | null;
  window: { calls: number; failures: number; slow: number };
  health: { cooldown_until: string | null; credential: string };
}

export interface Queues {
  at: string;
  waiting_here: number;
  keys: Array<{ key_id: string; app_id: string; name: string; key_prefix: string; waiting: number | null }>;
  truncated: boolean;
  tasks: Record<string, number> | null;
  tasks_by_kind: Record<string, number> | null;
}

export interface KillSwitch {
  enabled: boolean;
  reason?: string;
  at?: string;
  by?: string;
}

export interface Snapshot {
  at: string;
  circuits: Circuit[];
  queues: Queues;
  kill_switch: KillSwitch;
}
