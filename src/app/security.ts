/**
 * Start-time security rules that depend on the settings: credentials at rest, and who may read the
 * management endpoints (metrics, readiness details). See SECURITY.md.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { AdminTokens } from '../config/admin-tokens.js';
import type { ActuatorAccess } from '../http/management.js';
import type { Settings } from './settings.js';

/** A start refused for a setting: the CLI prints the message alone (no stack) and exits non-zero. */
export class StartupRefused extends Error {
  override readonly name = 'StartupRefused';
}

export const PLAINTEXT_REFUSED =
  'refusing to start: production mode (DATABASE_URL is set) needs ANIMA_SECRET_KEY to encrypt upstream credentials ' +
  'and webhook secrets at rest. Set ANIMA_SECRET_KEY (e.g. `openssl rand -base64 32`), or set ' +
  'ANIMA_ALLOW_PLAINTEXT_CREDENTIALS=1 to store them in clear text anyway (not recommended).';

export const PLAINTEXT_WARNING =
  'upstream credentials and webhook secrets are stored IN CLEAR TEXT in the database ' +
  '(ANIMA_ALLOW_PLAINTEXT_CREDENTIALS=1 without ANIMA_SECRET_KEY): set ANIMA_SECRET_KEY, then run `anima secrets rotate`';

/**
 * Production mode (a DATABASE_URL) without ANIMA_SECRET_KEY: refused unless explicitly allowed, and then
 * a warning at every start. The embedded default (PGlite, the demo) keeps working without a key.
 */
export function secretsAtRest(s: Settings): { refuse?: string; warn?: string } {
  if (!s.databaseUrl || s.secretKey) return {};
  return s.allowPlaintextCredentials ? { warn: PLAINTEXT_WARNING } : { refuse: PLAINTEXT_REFUSED };
}

const sha = (t: string) => createHash('sha256').update(t).digest();

/**
 * The bearer check of the management endpoints, or null when they are open: ANIMA_MANAGEMENT_TOKEN turns
 * it on, and then that token or any admin token (viewer or admin: reading metrics is a read) is accepted.
 */
export function managementBearer(
  s: Settings,
  tokens: Pick<AdminTokens, 'authenticate'> | null,
): ((authorization: string | undefined) => boolean) | null {
  if (!s.managementToken) return null;
  const want = sha(s.managementToken);
  return (authorization) => {
    if (!authorization || !/^bearer\s+/i.test(authorization)) return false;
    const given = authorization.replace(/^bearer\s+/i, '').trim();
    if (timingSafeEqual(sha(given), want)) return true;
    if (!tokens) return false;
    try {
      tokens.authenticate(authorization);
      return true;
    } catch {
      return false;
    }
  };
}

/**
 * What the data-plane listener serves of the management endpoints. With a management port it keeps only
 * liveness and a bare readiness status (load balancers and probes need those, and they reveal nothing);
 * without one it serves them all, behind the bearer when ANIMA_MANAGEMENT_TOKEN is set.
 */
export function mainListenerAccess(
  s: Settings,
  tokens: Pick<AdminTokens, 'authenticate'> | null,
): ActuatorAccess {
  if (s.managementPort !== undefined) return { prometheus: false, details: false, authorize: null };
  return { prometheus: true, details: true, authorize: managementBearer(s, tokens) };
}

/** The management listener serves everything, behind the bearer when ANIMA_MANAGEMENT_TOKEN is set. */
export function managementListenerAccess(
  s: Settings,
  tokens: Pick<AdminTokens, 'authenticate'> | null,
): ActuatorAccess {
  return { prometheus: true, details: true, authorize: managementBearer(s, tokens) };
}

/** Production mode with metrics and readiness details open on the data-plane listener: worth a line. */
export function managementExposure(s: Settings): string | null {
  if (!s.databaseUrl || s.managementPort !== undefined || s.managementToken) return null;
  return (
    '/actuator/prometheus and readiness details are served without authentication on the data-plane listener ' +
    '(they name every app with its traffic and spend): set ANIMA_MANAGEMENT_PORT and/or ANIMA_MANAGEMENT_TOKEN'
  );
}
