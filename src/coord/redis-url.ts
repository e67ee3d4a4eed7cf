/**
 * REDIS_URL and REDIS_CLUSTER_NODES, read into the connection options both Redis clients use: ioredis
 * (commands, pub/sub) and the hot path's own RespConnection (see resp.ts). Both must reach the same
 * server the same way, so a form only one of them could follow is refused here, at start, with the
 * option named, before any connection is made. ioredis's own URL parser is not used: it turns every query
 * parameter into a client option (a typo becomes a silently ignored option) and reads `unix://...` as a
 * host called "unix".
 *
 * Accepted:
 *   redis://[[user]:password@]host[:port][/db]     TCP (host[:port] alone means the same)
 *   rediss://...                                   the same over TLS (certificate checked against host)
 *   redis+unix:///path/to.sock, unix:///path/to.sock, or a bare absolute path   unix socket
 * Query parameters: db, username, password (the unix forms have no other place for them) and family (4|6,
 * TCP only). Refused: Sentinel URLs (any scheme with "sentinel" in it), TLS over a unix socket, any other
 * scheme or query parameter.
 */
import type tls from 'node:tls';

export interface RedisTarget {
  host?: string;
  port?: number;
  /** A unix socket; host and port are then unset. */
  path?: string;
  family?: 4 | 6;
  username?: string;
  password?: string;
  db?: number;
  tls?: tls.ConnectionOptions;
}

const FORMS =
  'redis://[user:password@]host[:port][/db], rediss://... (TLS), redis+unix:///path/to/redis.sock[?db=N], unix:///path[?db=N] or /path/to/redis.sock';

function refuse(name: string, why: string): never {
  throw new Error(`${name}: ${why} (accepted forms: ${FORMS})`);
}

function dbNumber(v: string, name: string): number {
  if (!/^\d+$/.test(v)) refuse(name, `db must be a non-negative integer, got '${v}'`);
  return Number(v);
}

/** REDIS_URL as connection options; throws, naming the option, on a form either client can't follow. */
export function parseRedisUrl(url: string, name = 'REDIS_URL'): RedisTarget {
  // host[:port] alone, as ioredis takes it
  if (/^(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(:\d+)?$/i.test(url)) url = `redis://${url}`;
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  if (scheme === undefined && !url.startsWith('/')) refuse(name, 'no scheme (write redis://host:port)'); // the URL itself is not echoed: it may hold a password
  if (scheme?.includes('sentinel'))
    refuse(
      name,
      `Redis Sentinel (${scheme}://) is not supported: point ${name} at the current master, or use REDIS_CLUSTER_NODES for a cluster`,
    );
  const unix = scheme === undefined || scheme === 'unix' || scheme === 'redis+unix';
  if (!unix && scheme !== 'redis' && scheme !== 'rediss') {
    if (scheme === 'rediss+unix') refuse(name, 'TLS over a unix socket (rediss+unix://) is not supported');
    refuse(name, `the scheme '${scheme}:' is not supported`);
  }
  let u: URL;
  try {
    u = new URL(scheme === undefined ? `unix://${url}` : url);
  } catch {
    refuse(name, 'not a valid URL');
  }
  const out: RedisTarget = {};
  if (u.username) out.username = decodeURIComponent(u.username);
  if (u.password) out.password = decodeURIComponent(u.password);
  if (unix) {
    if (u.host)
      refuse(name, `a unix socket URL names no host, got '${u.host}' (write ${scheme ?? 'unix'}:///path)`);
    if (u.pathname === '/' || u.pathname === '') refuse(name, 'a unix socket URL needs the socket path');
    out.path = decodeURIComponent(u.pathname);
  } else {
    if (!u.hostname) refuse(name, 'no host');
    out.host = u.hostname.replace(/^\[|\]$/g, '');
    out.port = u.port ? Number(u.port) : 6379;
    if (u.pathname.length > 1) out.db = dbNumber(u.pathname.slice(1), name);
    if (scheme === 'rediss') out.tls = {};
  }
  for (const [k, v] of u.searchParams) {
    switch (k) {
      case 'db':
        if (out.db !== undefined) refuse(name, 'db is given twice (path and query)');
        out.db = dbNumber(v, name);
        break;
      case 'username':
      case 'password':
        if (out[k] !== undefined) refuse(name, `${k} is given twice (user info and query)`);
        out[k] = v;
        break;
      case 'family':
        if (unix) refuse(name, 'family applies to TCP only, not to a unix socket');
        if (v !== '4' && v !== '6') refuse(name, `family must be 4 or 6, got '${v}'`);
        out.family = v === '4' ? 4 : 6;
        break;
      default:
        refuse(
          name,
          `the query parameter '${k}' is not supported (accepted: db, username, password, family)${
            k === 'sentinels' || k === 'name' ? '; Redis Sentinel is not supported' : ''
          }`,
        );
    }
  }
  return out;
}

/** REDIS_CLUSTER_NODES entries (host:port, IPv6 as [addr]:port) as seed nodes; throws naming a bad entry. */
export function parseClusterNodes(
  nodes: string[],
  name = 'REDIS_CLUSTER_NODES',
): Array<{ host: string; port: number }> {
  return nodes.map((n) => {
    const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]/@?#\s]+):(\d{1,5})$/.exec(n);
    const port = Number(m?.[2]);
    if (!m || port < 1 || port > 65_535)
      throw new Error(`${name}: '${n}' is not host:port (a URL, credentials or TLS are not accepted here)`);
    return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
  });
}
