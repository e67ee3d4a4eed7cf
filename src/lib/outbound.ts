/**
 * The outbound URL policy (SSRF): what a URL that Anima calls may reach.
 *
 *   tenant    URLs a tenant supplies (a task's `callback_url`): public addresses only, always; http(s),
 *             no credentials in the URL.
 *   operator  URLs an operator sets (a channel's `base_url`, a key's `webhook_url`): never a cloud metadata,
 *             unspecified, multicast or broadcast address; loopback, private, link-local and reserved
 *             addresses only when ANIMA_OUTBOUND_ALLOW lists them (a CIDR, or the URL's host name).
 *
 * Checked twice: when the URL is written (`checkUrl`, `checkUrlResolved`: a clear 400) and when a connection
 * is made (`connector`, `dispatcher`): the host name is resolved, every address checked, and the socket
 * connects to a checked address, so a name that resolves elsewhere by then (DNS rebinding) gets nowhere.
 * Pure apart from the resolver, which is injectable (a test seam).
 */
import { promises as dns } from 'node:dns';
import { type LookupFunction, BlockList, isIP, isIPv4, isIPv6 } from 'node:net';
import { Agent, buildConnector } from 'undici';

export type AddressKind =
  | 'public'
  | 'loopback'
  | 'private'
  | 'link_local'
  | 'metadata'
  | 'multicast'
  | 'unspecified'
  | 'broadcast'
  | 'reserved';

export interface AddressClass {
  kind: AddressKind;
  /** The address that decides: the embedded IPv4 of a mapped/translated IPv6 address, else the address. */
  address: string;
  /** The address as given, when it differs (an IPv4 inside IPv6). */
  via?: string;
}

type Family = 'ipv4' | 'ipv6';
const RULES: Array<[AddressKind, Family, string, number]> = [
  // Metadata first: some of them sit inside the private and reserved ranges below.
  ['metadata', 'ipv4', '169.254.169.254', 32], // AWS, GCP, Azure, OpenStack, DigitalOcean…
  ['metadata', 'ipv4', '169.254.170.2', 32], // AWS ECS task credentials
  ['metadata', 'ipv4', '169.254.170.23', 32], // AWS EKS pod identity
  ['metadata', 'ipv4', '169.254.0.23', 32], // Tencent Cloud
  ['metadata', 'ipv4', '100.100.100.200', 32], // Alibaba Cloud
  ['metadata', 'ipv4', '192.0.0.192', 32], // Oracle Cloud
  ['metadata', 'ipv6', 'fd00:ec2::254', 128], // AWS (IPv6)
  ['metadata', 'ipv6', 'fd00:ec2::23', 128], // AWS EKS pod identity (IPv6)
  ['unspecified', 'ipv4', '0.0.0.0', 32],
  ['unspecified', 'ipv6', '::', 128],
  ['broadcast', 'ipv4', '255.255.255.255', 32],
  ['loopback', 'ipv4', '127.0.0.0', 8],
  ['loopback', 'ipv6', '::1', 128],
  ['link_local', 'ipv4', '169.254.0.0', 16],
  ['link_local', 'ipv6', 'fe80::', 10],
  ['private', 'ipv4', '10.0.0.0', 8],
  ['private', 'ipv4', '172.16.0.0', 12],
  ['private', 'ipv4', '192.168.0.0', 16],
  ['private', 'ipv4', '100.64.0.0', 10], // CGNAT
  ['private', 'ipv6', 'fc00::', 7], // unique local
  ['private', 'ipv6', 'fec0::', 10], // site-local (deprecated)
  ['private', 'ipv6', '64:ff9b:1::', 48], // local-use NAT64
  ['multicast', 'ipv4', '224.0.0.0', 4],
  ['multicast', 'ipv6', 'ff00::', 8],
  ['reserved', 'ipv4', '0.0.0.0', 8], // "this network"
  ['reserved', 'ipv4', '192.0.0.0', 24], // IETF protocol assignments
  ['reserved', 'ipv4', '192.0.2.0', 24], // documentation
  ['reserved', 'ipv4', '198.18.0.0', 15], // benchmarking
  ['reserved', 'ipv4', '198.51.100.0', 24], // documentation
  ['reserved', 'ipv4', '203.0.113.0', 24], // documentation
  ['reserved', 'ipv4', '240.0.0.0', 4], // future use
  ['reserved', 'ipv6', '100::', 64], // discard
  ['reserved', 'ipv6', '2001::', 23], // IETF special purpose (Teredo, ORCHID…)
  ['reserved', 'ipv6', '2001:db8::', 32], // documentation
  ['reserved', 'ipv6', '3fff::', 20], // documentation
  ['reserved', 'ipv6', '5f00::', 16], // SRv6 SIDs
];

const LISTS: Array<[AddressKind, BlockList]> = (() => {
  const out: Array<[AddressKind, BlockList]> = [];
  for (const [kind, family, net, prefix] of RULES) {
    let last = out.at(-1);
    if (!last || last[0] !== kind) out.push((last = [kind, new BlockList()]));
    last[1].addSubnet(net, prefix, family);
  }
  return out;
})();
/** Global unicast: IPv6 outside it is not publicly routed. */
const GLOBAL_V6 = new BlockList();
GLOBAL_V6.addSubnet('2000::', 3, 'ipv6');

/** The 16 bytes of an IPv6 address (already validated by isIPv6); a zone id is dropped. */
function v6Bytes(addr: string): number[] {
  let s = addr.split('%')[0]!;
  const dot = s.lastIndexOf('.');
  if (dot >= 0) {
    // a dotted IPv4 tail becomes the last two groups
    const colon = s.lastIndexOf(':');
    const q = s
      .slice(colon + 1)
      .split('.')
      .map(Number);
    s = `${s.slice(0, colon + 1)}${((q[0]! << 8) | q[1]!).toString(16)}:${((q[2]! << 8) | q[3]!).toString(16)}`;
  }
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.flatMap((g) => {
    const n = parseInt(g, 16);
    return [n >> 8, n & 0xff];
  });
}

const v4 = (b: number[], at: number) => `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
const zero = (b: number[], from: number, to: number) => b.slice(from, to).every((x) => x === 0);

/** The IPv4 address an IPv6 address carries (mapped, compatible, SIIT, NAT64, 6to4), if any. */
function embeddedV4(addr: string): string | null {
  const b = v6Bytes(addr);
  if (zero(b, 0, 10) && b[10] === 0xff && b[11] === 0xff) return v4(b, 12); // ::ffff:a.b.c.d
  if (zero(b, 0, 8) && b[8] === 0xff && b[9] === 0xff && zero(b, 10, 12)) return v4(b, 12); // ::ffff:0:a.b.c.d
  if (zero(b, 0, 12) && !zero(b, 12, 15)) return v4(b, 12); // ::a.b.c.d (not :: or ::1)
  if (b[0] === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zero(b, 4, 12)) return v4(b, 12); // 64:ff9b::/96
  if (b[0] === 0x20 && b[1] === 0x02) return v4(b, 2); // 2002::/16 (6to4)
  return null;
}

/** The class of an IP address; null when the string is not one. */
export function classifyAddress(address: string): AddressClass | null {
  let a = address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address;
  if (!isIP(a)) return null;
  let via: string | undefined;
  if (isIPv6(a)) {
    const inner = embeddedV4(a);
    if (inner) {
      via = a;
      a = inner;
    }
  }
  const family: Family = isIPv4(a) ? 'ipv4' : 'ipv6';
  let kind: AddressKind = 'public';
  for (const [k, list] of LISTS) {
    if (list.check(a, family)) {
      kind = k;
      break;
    }
  }
  if (kind === 'public' && family === 'ipv6' && !GLOBAL_V6.check(a, 'ipv6')) kind = 'reserved';
  return via ? { kind, address: a, via } : { kind, address: a };
}

/** Names that are loopback by definition (RFC 6761) or that name a metadata service. */
function nameKind(host: string): AddressKind | null {
  if (host === 'localhost' || host.endsWith('.localhost')) return 'loopback';
  if (METADATA_NAMES.has(host)) return 'metadata';
  return null;
}
const METADATA_NAMES = new Set([
  'metadata',
  'metadata.google.internal',
  'metadata.goog',
  'instance-data',
  'instance-data.ec2.internal',
  'metadata.tencentyun.com',
]);

export type OutboundUse = 'tenant' | 'operator';

/** Why a URL was refused: the address class, or a rule about the URL itself. */
export type OutboundRule = AddressKind | 'scheme' | 'credentials';

export type Verdict = { ok: true } | { ok: false; rule: OutboundRule; address?: string; reason: string };

/** A refused connection (connect time). Classified like any connect failure; the message says which rule. */
export class OutboundRefusedError extends Error {
  readonly code = 'ANIMA_OUTBOUND_REFUSED';
  constructor(
    readonly rule: OutboundRule,
    message: string,
  ) {
    super(message);
    this.name = 'OutboundRefusedError';
  }
}

export interface ResolvedAddress {
  address: string;
  family: number;
}
/**
 * Resolves a host name. `phase` says who asks: the write-time check or a connection being made (a test
 * seam can answer them differently, as a DNS rebinding attacker would).
 */
export type OutboundResolver = (host: string, phase: 'check' | 'connect') => Promise<ResolvedAddress[]>;

const systemResolver: OutboundResolver = (host) => dns.lookup(host, { all: true });

const NEVER: ReadonlySet<AddressKind> = new Set(['metadata', 'unspecified', 'multicast', 'broadcast']);

const LABEL: Record<AddressKind, string> = {
  public: 'a public',
  loopback: 'a loopback',
  private: 'a private',
  link_local: 'a link-local',
  metadata: 'a cloud metadata',
  multicast: 'a multicast',
  unspecified: 'an unspecified',
  broadcast: 'a broadcast',
  reserved: 'a reserved',
};

const HOST_RE = /^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/;

/**
 * Parses ANIMA_OUTBOUND_ALLOW entries: CIDRs (`10.0.0.0/8`, `fd00::/8`), single addresses (`127.0.0.1`,
 * `::1`), host names (`llm.internal`), and name suffixes (`*.svc.cluster.local` or `.svc.cluster.local`).
 * Throws on anything else.
 */
export function parseOutboundAllow(entries: readonly string[]): {
  nets: BlockList;
  names: Set<string>;
  suffixes: string[];
} {
  const nets = new BlockList();
  const names = new Set<string>();
  const suffixes: string[] = [];
  for (const raw of entries) {
    const e = raw.trim().toLowerCase();
    if (!e) continue;
    const [ip0, prefix, extra] = e.split('/');
    const ip = ip0!.startsWith('[') && ip0!.endsWith(']') ? ip0!.slice(1, -1) : ip0!;
    const family = isIPv4(ip) ? 'ipv4' : isIPv6(ip) ? 'ipv6' : null;
    if (family) {
      const max = family === 'ipv4' ? 32 : 128;
      const n = prefix === undefined ? max : /^\d{1,3}$/.test(prefix) ? Number(prefix) : NaN;
      if (extra !== undefined || !(n >= 0 && n <= max))
        throw new Error(`ANIMA_OUTBOUND_ALLOW: '${raw}' has an invalid prefix length (0-${max})`);
      nets.addSubnet(ip, n, family);
      // An IPv4 range also covers its IPv4-mapped IPv6 form (classifyAddress unwraps it anyway).
      continue;
    }
    const host = e.replace(/\.$/, '');
    const suffix = host.startsWith('*.') ? host.slice(1) : host.startsWith('.') ? host : null;
    if (prefix === undefined && HOST_RE.test(suffix ? suffix.slice(1) : host)) {
      if (suffix) suffixes.push(suffix);
      else names.add(host);
      continue;
    }
    throw new Error(`ANIMA_OUTBOUND_ALLOW: '${raw}' is neither a CIDR, an IP address nor a host name`);
  }
  return { nets, names, suffixes };
}

/** A URL's host: lower case, without brackets or a trailing dot. */
function hostOf(u: URL): string {
  const h = u.hostname.toLowerCase();
  return h.startsWith('[') ? h.slice(1, -1) : h.replace(/\.$/, '');
}

export interface OutboundPolicyOptions {
  /** ANIMA_OUTBOUND_ALLOW entries: what operator-set URLs may reach besides public addresses. */
  allow?: readonly string[];
  resolve?: OutboundResolver;
  /** A write-time resolution slower than this is skipped (the connect-time check still applies). */
  resolveTimeoutMs?: number;
}

export class OutboundPolicy {
  private readonly allow: ReturnType<typeof parseOutboundAllow>;
  private readonly resolve: OutboundResolver;
  private readonly resolveTimeoutMs: number;
  private readonly agents = new Map<OutboundUse, Agent>();

  constructor(opts: OutboundPolicyOptions = {}) {
    this.allow = parseOutboundAllow(opts.allow ?? []);
    this.resolve = opts.resolve ?? systemResolver;
    this.resolveTimeoutMs = opts.resolveTimeoutMs ?? 3_000;
  }

  private nameAllowed(host: string): boolean {
    return this.allow.names.has(host) || this.allow.suffixes.some((s) => host.endsWith(s));
  }

  /**
   * May `use` reach `address` (an IP), reached through `host` (the URL's host name, or the address
   * itself)? `how` words the reason: "is" for a literal address, "resolves to" for a name.
   */
  checkAddress(address: string, use: OutboundUse, host = address, how = 'is'): Verdict {
    const c = classifyAddress(address);
    if (!c) return { ok: false, rule: 'reserved', address, reason: `${how} '${address}', not an IP address` };
    return this.decide(c, use, host, how);
  }

  private decide(c: AddressClass, use: OutboundUse, host: string, how: string): Verdict {
    if (c.kind === 'public') return { ok: true };
    const ip = isIP(c.address) !== 0;
    const shown = !ip ? '' : c.via ? ` ${c.address} (as ${c.via})` : ` ${c.address}`;
    const what = `${how} ${LABEL[c.kind]} address${shown}`;
    const refuse = (tail: string): Verdict => ({
      ok: false,
      rule: c.kind,
      ...(ip ? { address: c.address } : {}),
      reason: `${what}; ${tail}`,
    });
    if (use === 'tenant') return refuse(TENANT_RULE);
    if (NEVER.has(c.kind)) return refuse('no outbound URL may reach it');
    const listed = ip
      ? this.allow.nets.check(c.address, isIPv4(c.address) ? 'ipv4' : 'ipv6')
      : // a name that is loopback by definition: allowed with loopback
        this.allow.nets.check('127.0.0.1', 'ipv4') || this.allow.nets.check('::1', 'ipv6');
    if (listed || this.nameAllowed(host)) return { ok: true };
    return refuse(
      'operator-set URLs reach loopback, private, link-local and reserved addresses only when ANIMA_OUTBOUND_ALLOW lists them',
    );
  }

  /**
   * The write-time check without DNS: scheme, credentials, a literal address (in any form the URL parser
   * accepts: `2130706433`, `0x7f.1`, `[::ffff:127.0.0.1]` all arrive here as what they mean), and names
   * that are loopback or metadata by definition. Other names are resolved by `checkUrlResolved`, and
   * always when connecting.
   */
  checkUrl(raw: string, use: OutboundUse): Verdict {
    let u: URL;
    try {
      u = new URL(raw);
    } catch {
      return { ok: false, rule: 'scheme', reason: 'must be an absolute http(s) URL' };
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:')
      return { ok: false, rule: 'scheme', reason: 'must be an absolute http(s) URL' };
    if (use === 'tenant' && (u.username || u.password))
      return { ok: false, rule: 'credentials', reason: 'must not carry credentials (user:password@)' };
    const host = hostOf(u);
    if (isIP(host)) return this.checkAddress(host, use);
    const kind = nameKind(host);
    return kind ? this.decide({ kind, address: host }, use, host, 'names') : { ok: true };
  }

  /**
   * `checkUrl`, then a host name's addresses, every one of which must pass. A name that doesn't resolve
   * (or not in time) passes: nothing can be reached through it now, and the connection is checked again.
   */
  async checkUrlResolved(raw: string, use: OutboundUse): Promise<Verdict> {
    const v = this.checkUrl(raw, use);
    if (!v.ok) return v;
    const host = hostOf(new URL(raw));
    if (isIP(host)) return v;
    let addrs: ResolvedAddress[];
    let timer: NodeJS.Timeout | undefined;
    try {
      addrs = await Promise.race([
        this.resolve(host, 'check'),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('timeout')), this.resolveTimeoutMs);
        }),
      ]);
    } catch {
      return v;
    } finally {
      clearTimeout(timer);
    }
    for (const a of addrs) {
      const r = this.checkAddress(a.address, use, host, 'resolves to');
      if (!r.ok) return r;
    }
    return v;
  }

  /**
   * A `lookup` for net/tls connect: resolves, keeps only the addresses `use` may reach, and hands those
   * to the socket, so what was checked is what is connected to. Refuses when none is left.
   */
  lookup(use: OutboundUse): LookupFunction {
    return (hostname, options, callback) => {
      const host = hostname.toLowerCase().replace(/\.$/, '');
      const fixed = nameKind(host);
      const refused = (v: Verdict & { ok: false }) =>
        callback(
          new OutboundRefusedError(v.rule, `outbound connection to '${host}' refused: it ${v.reason}`),
          '',
        );
      if (fixed) {
        const v = this.decide({ kind: fixed, address: host }, use, host, 'names');
        if (!v.ok) return refused(v);
      }
      this.resolve(host, 'connect').then(
        (all) => {
          const fam =
            options.family === 4 || options.family === 'IPv4'
              ? 4
              : options.family === 6 || options.family === 'IPv6'
                ? 6
                : 0;
          const ok: ResolvedAddress[] = [];
          let first: (Verdict & { ok: false }) | null = null;
          for (const a of all) {
            if (fam && a.family !== fam) continue;
            const v = this.checkAddress(a.address, use, host, 'resolves to');
            if (v.ok) ok.push({ address: a.address, family: a.family });
            else first ??= v;
          }
          if (ok.length === 0) {
            if (first) return refused(first);
            const e = Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), {
              code: 'ENOTFOUND',
              hostname: host,
            });
            return callback(e, '');
          }
          if (options.all) callback(null, ok);
          else callback(null, ok[0]!.address, ok[0]!.family);
        },
        (err: NodeJS.ErrnoException) => callback(err, ''),
      );
    };
  }

  /**
   * An undici connector enforcing `use` on every new connection: a literal address is checked here (net
   * skips `lookup` for one), a name through `lookup`. Costs nothing per request on a kept-alive socket.
   */
  connector(use: OutboundUse, opts: buildConnector.BuildOptions = {}): buildConnector.connector {
    const inner = buildConnector({ ...opts, lookup: this.lookup(use) });
    return (o, callback) => {
      if (isIP(o.hostname)) {
        const v = this.checkAddress(o.hostname, use);
        if (!v.ok) {
          const e = new OutboundRefusedError(
            v.rule,
            `outbound connection to ${o.hostname} refused: it ${v.reason}`,
          );
          process.nextTick(() => callback(e, null));
          return;
        }
      }
      inner(o, callback);
    };
  }

  /**
   * A shared undici Agent for `use` (webhooks, result downloads). undici follows no redirect unless told
   * to, so a 3xx ends the call where it is.
   */
  dispatcher(use: OutboundUse): Agent {
    let a = this.agents.get(use);
    if (!a) {
      a = new Agent({ connect: this.connector(use, { timeout: 10_000 }) });
      this.agents.set(use, a);
    }
    return a;
  }

  async close(): Promise<void> {
    const all = [...this.agents.values()];
    this.agents.clear();
    await Promise.all(all.map((a) => a.close().catch(() => {})));
  }
}

const TENANT_RULE = 'URLs a tenant supplies (callbacks) may only reach public addresses';

let current = new OutboundPolicy();

/**
 * The process's policy, for checks that have no other way to get it (admin write validation); set once
 * at start from Settings, as the secret key is. A fresh process refuses everything but public addresses.
 */
export function outboundPolicy(): OutboundPolicy {
  return current;
}

export function setOutboundPolicy(p: OutboundPolicy): void {
  current = p;
}
