/**
 * Declarative configuration: `anima apply -f anima.yaml [--dry-run]` and `anima export`.
 *
 * The file holds channels, aliases, apps, token groups, quotas and prices — never a secret: a channel's
 * credential is named by `credential_env` (read from the environment at apply time), and API keys are not
 * in the file at all (their secrets are shown once). Apply compares the file with the rows in force and
 * writes only what differs, through the same versioned, audited path as the admin API, so applying the
 * same file twice changes nothing and bumps no version. Rows absent from the file are left alone (no
 * pruning). Quotas are matched by (scope, scope_id), prices by (alias, channel).
 */
import { parse, stringify } from 'yaml';
import { GatewayError } from '../core/errors.js';
import type { Actor, ConfigAdmin, DeferredPropagation } from './admin.js';
import { canonicalJson } from './dto.js';
import { type Entity, RESOURCES } from './schema.js';

type Row = Record<string, unknown>;

export interface ConfigDoc {
  apiVersion: 'anima/v1';
  channels?: Row[];
  aliases?: Row[];
  apps?: Row[];
  token_groups?: Row[];
  quotas?: Row[];
  prices?: Row[];
}

/**
 * A section's fields: its resource's schema (config/schema.ts) less the effective window (the file
 * describes what is in force) and secrets (a channel names its credential by environment variable).
 */
function fileFields(entity: Entity): string[] {
  return Object.keys(RESOURCES[entity].create.properties)
    .filter((f) => f !== 'effective_from' && f !== 'effective_to')
    .map((f) => (f === 'credential' ? 'credential_env' : f));
}

const SECTIONS: Record<string, { entity: Entity; fields: string[]; match: (r: Row) => string }> = {
  channels: { entity: 'channel', fields: fileFields('channel'), match: (r) => String(r.code) },
  token_groups: { entity: 'token_group', fields: fileFields('token_group'), match: (r) => String(r.id) },
  aliases: { entity: 'alias', fields: fileFields('alias'), match: (r) => String(r.name) },
  apps: { entity: 'app', fields: fileFields('app'), match: (r) => String(r.id) },
  quotas: { entity: 'quota', fields: fileFields('quota'), match: (r) => `${r.scope}:${r.scope_id}` },
  prices: { entity: 'price', fields: fileFields('price'), match: (r) => `${r.alias}:${r.channel ?? '*'}` },
};
/** Apply order: what others reference goes first. */
const ORDER = ['channels', 'token_groups', 'aliases', 'apps', 'quotas', 'prices'];

export function parseConfigDoc(text: string): ConfigDoc {
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (e) {
    throw new GatewayError('invalid_request', `not valid YAML/JSON: ${(e as Error).message}`);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc))
    throw new GatewayError('invalid_request', 'the file must be a mapping');
  const d = doc as Record<string, unknown>;
  if (d.apiVersion !== 'anima/v1')
    throw new GatewayError('invalid_request', "apiVersion must be 'anima/v1'", { param: 'apiVersion' });
  for (const [k, v] of Object.entries(d)) {
    if (k === 'apiVersion') continue;
    const sec = SECTIONS[k];
    if (!sec)
      throw new GatewayError(
        'invalid_request',
        `unknown section '${k}' (known: ${Object.keys(SECTIONS).join(', ')})`,
        { param: k },
      );
    if (!Array.isArray(v)) throw new GatewayError('invalid_request', `${k} must be a list`, { param: k });
    v.forEach((row, i) => {
      if (!row || typeof row !== 'object')
        throw new GatewayError('invalid_request', `${k}[${i}] must be a mapping`, { param: `${k}[${i}]` });
      const nested = findSecret(
        Object.fromEntries(Object.entries(row as Row).filter(([f]) => f !== 'credential_env')),
        `${k}[${i}]`,
      );
      if (nested)
        throw new GatewayError(
          'invalid_request',
          `${nested}: secrets never go in the file (use credential_env)`,
          { param: nested },
        );
      if ((k === 'apps' || k === 'token_groups') && typeof (row as Row).id !== 'string') {
        throw new GatewayError(
          'invalid_request',
          `${k}[${i}].id is required: it is how apply finds the row again`,
          { param: `${k}[${i}].id` },
        );
      }
      for (const f of Object.keys(row as Row)) {
        if (f === 'credential' || f === 'sk' || f === 'webhook_secret')
          throw new GatewayError(
            'invalid_request',
            `${k}[${i}].${f}: secrets never go in the file (use credential_env)`,
            { param: `${k}[${i}].${f}` },
          );
        if (!sec.fields.includes(f))
          throw new GatewayError('invalid_request', `${k}[${i}].${f} is not a field of ${k}`, {
            param: `${k}[${i}].${f}`,
          });
      }
    });
  }
  return d as unknown as ConfigDoc;
}

export interface Change {
  op: 'create' | 'update';
  section: string;
  entity: Entity;
  key: string;
  id?: string;
  versionNo?: number;
  fields: Row;
  diff: Array<{ field: string; from: unknown; to: unknown }>;
}

async function all(admin: ConfigAdmin, entity: Entity): Promise<Row[]> {
  const out: Row[] = [];
  for (let offset = 0; ; offset += 500) {
    const page = await admin.list(entity, { limit: 500, offset });
    out.push(...page.data);
    if (page.data.length < 500) return out;
  }
}

/**
 * The row each match key resolves to, as the admin API resolves it: the version in force now, else the
 * next scheduled one (so a channel that only has a future version is updated, not created twice).
 */
async function current(admin: ConfigAdmin, section: string, inForceOnly = false): Promise<Map<string, Row>> {
  const sec = SECTIONS[section]!;
  const now = Date.now();
  const m = new Map<string, Row>();
  const next = new Map<string, Row>();
  for (const r of await all(admin, sec.entity)) {
    const from = new Date(String(r.effective_from)).getTime();
    const to = r.effective_to ? new Date(String(r.effective_to)).getTime() : Infinity;
    const k = sec.match(r);
    if (from <= now && now < to) m.set(k, r);
    else if (from > now) {
      const n = next.get(k);
      if (!n || from < new Date(String(n.effective_from)).getTime()) next.set(k, r);
    }
  }
  if (!inForceOnly) for (const [k, r] of next) if (!m.has(k)) m.set(k, r);
  return m;
}

/** A value as the admin API would store it, so comparing never shows a change that isn't one. */
function storedForm(field: string, v: unknown): unknown {
  if (field === 'base_url' && typeof v === 'string') return v.replace(/\/+$/, '');
  return v;
}

const SECRET_VALUE = /^(sk-anima-|ak-anima-)/;
function findSecret(v: unknown, path: string): string | null {
  if (typeof v === 'string') return SECRET_VALUE.test(v) ? path : null;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const p = findSecret(v[i], `${path}[${i}]`);
      if (p) return p;
    }
  } else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      if (/secret|credential$|^sk$|password|token$/i.test(k)) return `${path}.${k}`;
      const p = findSecret(x, `${path}.${k}`);
      if (p) return p;
    }
  }
  return null;
}

const norm = (v: unknown) =>
  v !== null && typeof v === 'object' ? canonicalJson(v) : v === undefined ? undefined : String(v);

export async function planApply(
  admin: ConfigAdmin,
  doc: ConfigDoc,
  env: NodeJS.ProcessEnv,
  readCredential: (code: string) => Promise<string | null>,
): Promise<Change[]> {
  const changes: Change[] = [];
  for (const section of ORDER) {
    const rows = (doc as unknown as Record<string, Row[] | undefined>)[section];
    if (!rows) continue;
    const sec = SECTIONS[section]!;
    const have = await current(admin, section);
    for (const want of rows) {
      const fields: Row = {};
      let keptCredential: string | null = null;
      for (const [f, v] of Object.entries(want)) {
        if (f === 'credential_env') {
          const val = env[String(v)];
          // Unset: an existing channel keeps its stored credential (an export re-applied elsewhere must
          // not need every secret at hand); a new channel can't be made without one (checked below).
          if (val === undefined) {
            keptCredential = String(v);
            continue;
          }
          if (isPlaceholder(val))
            throw new GatewayError(
              'invalid_request',
              `channel ${want.code}: ${String(v)} holds a placeholder ('${val.slice(0, 20)}'), not a credential; ` +
                'set it to the real credential, or unset it to keep the stored one',
            );
          fields.credential = val;
        } else if (f === 'chain' && Array.isArray(v)) {
          // as stored: every target carries its weight (default 1)
          // a tier may be written as the bare list of its targets, as the admin API takes it
          fields.chain = (v as Array<{ targets?: Row[] } | Row[]>).map((t) => ({
            targets: ((Array.isArray(t) ? t : t.targets) ?? []).map((x) => ({
              channel: x.channel,
              model: x.model,
              weight: x.weight ?? 1,
            })),
          }));
        } else fields[f] = storedForm(f, v);
      }
      const key = sec.match(want);
      const cur = have.get(key);
      if (!cur && keptCredential !== null)
        throw new GatewayError(
          'invalid_request',
          `channel ${want.code}: environment variable ${keptCredential} is not set (a new channel needs its credential)`,
        );
      if (!cur) {
        changes.push({
          op: 'create',
          section,
          entity: sec.entity,
          key,
          fields,
          diff: Object.keys(fields).map((f) => ({
            field: f,
            from: null,
            to: f === 'credential' ? '(set)' : fields[f],
          })),
        });
        continue;
      }
      const diff: Change['diff'] = [];
      const changed: Row = {};
      for (const [f, v] of Object.entries(fields)) {
        if (f === 'credential') {
          if ((await readCredential(String(want.code))) !== v) {
            changed.credential = v;
            diff.push({ field: 'credential', from: '(secret)', to: '(changed)' });
          }
          continue;
        }
        if (norm(cur[f]) !== norm(v)) {
          changed[f] = v;
          diff.push({ field: f, from: cur[f], to: v });
        }
      }
      if (diff.length)
        changes.push({
          op: 'update',
          section,
          entity: sec.entity,
          key,
          id: String(cur.id),
          versionNo: Number(cur.version_no),
          fields: changed,
          diff,
        });
    }
  }
  return changes;
}

/**
 * Writes a plan as one transaction through the admin API's own path (its schemas, cross-references such as
 * an alias naming a channel, version checks): every change lands or none does. `dryRun` runs exactly that
 * and rolls it back, so a dry run fails where the apply would, with the same message. Answers how the
 * running gateways learn of it: null when told at once, else within what delay (Redis did not take it).
 */
export async function applyPlan(
  admin: ConfigAdmin,
  actor: Actor,
  plan: Change[],
  opts: { dryRun?: boolean } = {},
): Promise<DeferredPropagation | null> {
  const { propagation } = await admin.atomically(
    async (tx) => {
      for (const c of plan) {
        try {
          if (c.op === 'create') await tx.create(actor, c.entity, c.fields);
          else {
            const target = c.entity === 'quota' || c.entity === 'price' ? c.id! : c.key;
            await tx.update(actor, c.entity, target, c.versionNo, c.fields);
          }
        } catch (err) {
          throw located(err, c);
        }
      }
    },
    { rollback: opts.dryRun === true },
  );
  return propagation;
}

/** An admin refusal, prefixed with the row of the file it is about (`aliases gpt: chain names ...`). */
function located(err: unknown, c: Change): unknown {
  if (!(err instanceof GatewayError)) return err;
  const param = err.param ? `${c.section}[${c.key}].${err.param}` : undefined;
  return new GatewayError(err.code, `${c.section} ${c.key}: ${err.message}`, {
    ...(param ? { param } : {}),
    ...(err.details ? { details: err.details } : {}),
    cause: err,
  });
}

export function formatPlan(plan: Change[]): string {
  if (plan.length === 0) return 'no changes';
  return plan
    .map((c) =>
      c.op === 'create'
        ? `+ ${c.entity} ${c.key} (create)`
        : `~ ${c.entity} ${c.key}: ` +
          c.diff.map((d) => `${d.field} ${JSON.stringify(d.from)} -> ${JSON.stringify(d.to)}`).join(', '),
    )
    .join('\n');
}

/**
 * A value that stands in for a secret rather than being one: what an export, a template or a redacted
 * copy carries. Applying it would replace a working credential with garbage.
 */
export function isPlaceholder(v: string): boolean {
  const t = v.trim();
  return (
    t === '' ||
    /^(changeme|change[-_ ]me|replace[-_ ]?me|placeholder|todo|tbd|secret|your[-_ ].*|x{3,}|\*+|\.{3}|…)$/i.test(
      t,
    ) ||
    /^<.*>$/.test(t) ||
    /^\$\{.*\}$/.test(t) ||
    /^\$[A-Z_][A-Z0-9_]*$/.test(t) ||
    /^[([]?(set|secret|redacted|hidden)[)\]]?$/i.test(t)
  );
}

/** The configuration in force, as a file `apply` accepts (credentials as environment variable names). */
export async function exportConfig(admin: ConfigAdmin): Promise<string> {
  const doc: Record<string, unknown> = { apiVersion: 'anima/v1' };
  for (const section of ORDER) {
    const sec = SECTIONS[section]!;
    const rows = [...(await current(admin, section, true)).entries()]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([, r]) => r);
    doc[section] = rows.map((r) => {
      const out: Row = {};
      for (const f of sec.fields) {
        if (f === 'credential_env') {
          if (r.credential_set)
            out.credential_env = `ANIMA_CHANNEL_${String(r.code)
              .toUpperCase()
              .replace(/[^A-Z0-9]/g, '_')}_CREDENTIAL`;
        } else if (r[f] !== undefined) out[f] = r[f];
      }
      return out;
    });
  }
  return stringify(doc);
}
