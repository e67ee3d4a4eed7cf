/**
 * Declarative configuration: a gateway's channels, aliases and apps as one YAML (or JSON) file kept in
 * git (`anima export`), applied through the same versioned, audited write path as the admin API
 * (`anima apply -f`, which runs ConfigAdmin.create / update).
 *
 * Semantics, deliberately simple:
 * - Idempotent: only fields that differ from the row are written, so applying the same file twice plans
 *   nothing the second time, bumps no version_no and writes no audit row.
 * - Nothing is deleted: channels, aliases and apps in the database but not in the file are left alone
 *   (a `--prune` is out of scope).
 * - A field left out of the file stands for its default (enabled: true, weight: 1, settings: {}, ...),
 *   except `effective_from`, `effective_to` and `credential_env`, which are managed only when present.
 * - Each code/name is compared with the version `ConfigAdmin.get` resolves (the one in force now, else
 *   the next scheduled one); other scheduled versions are neither compared nor touched.
 * - API keys are not part of the file (their secret exists once, at creation), nor is any secret: a
 *   channel's credential is named by an environment variable (`credential_env`) read at apply time.
 * - Not atomic across rows: each change is its own transaction. If one fails (e.g. a version conflict
 *   with a concurrent admin write), the earlier ones stay applied; re-running the file finishes the job.
 */
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { GatewayError } from '../core/errors.js';
import type { Db } from '../store/db.js';
import { type Actor, type ConfigAdmin, canonicalJson } from './admin.js';
import { openSecret } from './secrets.js';
import { validateWrite } from './validate.js';

export interface ChainTargetSpec {
  channel: string;
  model: string;
  weight?: number;
}
export interface ChannelSpec {
  code: string;
  name?: string;
  provider: 'openai' | 'anthropic';
  base_url: string;
  /** Name of the environment variable holding the upstream credential (never the credential itself). */
  credential_env?: string;
  enabled?: boolean;
  weight?: number;
  settings?: Record<string, unknown>;
  effective_from?: string;
  effective_to?: string | null;
}
export interface AliasSpec {
  name: string;
  description?: string;
  enabled?: boolean;
  chain: Array<{ targets: ChainTargetSpec[] }>;
  max_attempts?: number;
  deadline_ms?: number;
  effective_from?: string;
  effective_to?: string | null;
}
export interface AppSpec {
  id: string;
  name: string;
  enabled?: boolean;
  effective_from?: string;
  effective_to?: string | null;
}
export interface ConfigDoc {
  apiVersion: 'anima/v1';
  channels?: ChannelSpec[];
  aliases?: AliasSpec[];
  apps?: AppSpec[];
}

export type DeclEntity = 'channel' | 'alias' | 'app';
export interface PlanChange {
  op: 'create' | 'update';
  entity: DeclEntity;
  key: string;
  /** update: the version_no read at plan time (optimistic lock: a concurrent write makes apply fail). */
  versionNo?: number;
  /** update: the row id read at plan time (several versions of one code may share a version_no). */
  rowId?: string;
  /** The body sent to ConfigAdmin; may hold a resolved credential: never print it (formatPlan doesn't). */
  fields: Record<string, unknown>;
  /** What changes, for display; credentials appear only as '(changed)' / '(set)'. */
  diff: Array<{ field: string; from: unknown; to: unknown }>;
}
export interface Plan {
  changes: PlanChange[];
}
/** The stored credential (clear or sealed) of a channel's version: `rowId` when given, else the resolved one. */
export type CredentialReader = (code: string, rowId?: string) => Promise<string | null>;

const SECTIONS: Record<string, DeclEntity> = { channels: 'channel', aliases: 'alias', apps: 'app' };
const KEY: Record<DeclEntity, 'code' | 'name' | 'id'> = { channel: 'code', alias: 'name', app: 'id' };
const FIELDS: Record<DeclEntity, string[]> = {
  channel: ['code', 'name', 'provider', 'base_url', 'credential_env', 'enabled', 'weight', 'settings', 'effective_from', 'effective_to'],
  alias: ['name', 'description', 'enabled', 'chain', 'max_attempts', 'deadline_ms', 'effective_from', 'effective_to'],
  app: ['id', 'name', 'enabled', 'effective_from', 'effective_to'],
};
/** What an omitted field stands for (the columns' defaults). A channel's name defaults to its code. */
const DEFAULTS: Record<DeclEntity, Record<string, unknown>> = {
  channel: { enabled: true, weight: 1, settings: {} },
  alias: { description: '', enabled: true, max_attempts: 3, deadline_ms: 300_000 },
  app: { enabled: true },
};
/** Field names that would carry a secret in clear, anywhere in the file. */
const SECRET_FIELD = /^(credential|secret|[a-z_]*_secret|sk|key_hash|token_hash|password)$/i;
const ENV_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => !!v && typeof v === 'object' && !Array.isArray(v);
const bad = (param: string, msg: string) => new GatewayError('invalid_request', `${param}: ${msg}`, { param });

/** `ANIMA_CHANNEL_<CODE>_CREDENTIAL`, the placeholder `anima export` writes for a channel's credential. */
export function credentialEnvName(code: string): string {
  return `ANIMA_CHANNEL_${code.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_CREDENTIAL`;
}

/** Parses a YAML or JSON file and validates it (see checkConfigDoc). Errors name the offending path. */
export function parseConfigDoc(text: string): ConfigDoc {
  let v: unknown;
  try {
    v = /^\s*[{[]/.test(text) ? JSON.parse(text) : parseYaml(text, { uniqueKeys: true, maxAliasCount: 100 });
  } catch (e) {
    throw new GatewayError('invalid_request', `the file is not valid YAML or JSON: ${(e as Error).message}`);
  }
  return checkConfigDoc(v);
}

/** Validates a parsed document: known sections and fields, no secret in clear, unique keys, values as the admin API accepts them. */
export function checkConfigDoc(v: unknown): ConfigDoc {
  if (!isObj(v)) throw new GatewayError('invalid_request', 'the file must be a mapping (apiVersion, channels, aliases, apps)');
  const unknown = Object.keys(v).filter((k) => k !== 'apiVersion' && !(k in SECTIONS));
  if (unknown.length) {
    const hint = unknown.some((k) => /key/i.test(k)) ? '; API keys are not part of the file (their secret is shown once): use the admin API' : '';
    throw bad(unknown[0]!, `unknown top-level section(s): ${unknown.join(', ')} (known: apiVersion, ${Object.keys(SECTIONS).join(', ')})${hint}`);
  }
  if (v.apiVersion !== 'anima/v1') throw bad('apiVersion', "must be 'anima/v1'");
  refuseSecrets(v, '');
  for (const [section, entity] of Object.entries(SECTIONS)) {
    const items = v[section];
    if (items === undefined || items === null) continue;
    if (!Array.isArray(items)) throw bad(section, 'must be a list');
    const seen = new Set<string>();
    items.forEach((item: unknown, i) => {
      const path = `${section}[${i}]`;
      if (!isObj(item)) throw bad(path, 'must be a mapping');
      for (const k of Object.keys(item)) if (!FIELDS[entity].includes(k)) throw bad(`${path}.${k}`, `unknown field (known: ${FIELDS[entity].join(', ')})`);
      const key = item[KEY[entity]];
      if (typeof key !== 'string' || !key) throw bad(`${path}.${KEY[entity]}`, 'is required');
      if (seen.has(key)) throw bad(`${path}.${KEY[entity]}`, `'${key}' appears twice in ${section}`);
      seen.add(key);
      if (item.credential_env !== undefined && (typeof item.credential_env !== 'string' || !ENV_RE.test(item.credential_env))) {
        throw bad(`${path}.credential_env`, 'must be an environment variable name (letters, digits, _)');
      }
      if (item.effective_from === null) throw bad(`${path}.effective_from`, 'must be a timestamp (leave it out to keep the current one)');
      const { credential_env: _env, ...body } = item;
      try {
        validateWrite(entity, body, 'create'); // the admin API's own checks, so apply can't fail on a value
      } catch (e) {
        if (e instanceof GatewayError && e.param) throw new GatewayError('invalid_request', `${path}.${e.message}`, { param: `${path}.${e.param}` });
        throw e;
      }
    });
  }
  return v as unknown as ConfigDoc;
}

function refuseSecrets(v: unknown, path: string): void {
  if (Array.isArray(v)) v.forEach((x, i) => refuseSecrets(x, `${path}[${i}]`));
  else if (isObj(v)) {
    for (const [k, x] of Object.entries(v)) {
      const p = path ? `${path}.${k}` : k;
      if (k === 'credential') throw bad(p, 'credentials are never written in clear: name an environment variable with credential_env');
      if (SECRET_FIELD.test(k)) throw bad(p, 'secrets are not part of the file');
      refuseSecrets(x, p);
    }
  } else if (typeof v === 'string' && /^(sk|ak)-anima-/.test(v)) {
    throw bad(path, 'looks like an Anima API key or admin token: secrets are not part of the file');
  }
}

/** The API body a create would send for a file entry: defaults filled in, credential_env dropped. */
function desiredBody(entity: DeclEntity, item: Obj): Obj {
  const { credential_env: _env, ...rest } = item;
  const out: Obj = { ...DEFAULTS[entity], ...rest };
  if (entity === 'channel' && out.name === undefined) out.name = out.code;
  return out;
}

const normChain = (c: unknown) =>
  (c as Array<{ targets: ChainTargetSpec[] }>).map((t) => ({ targets: t.targets.map((x) => ({ channel: x.channel, model: x.model, weight: x.weight ?? 1 })) }));

/** A value in a form where "equal" means "the admin API would store the same thing". */
function comparable(field: string, v: unknown): string {
  if (v === undefined || v === null) return 'null';
  if (field === 'effective_from' || field === 'effective_to') return String(new Date(v as string).getTime());
  if (field === 'base_url') return String(v).replace(/\/+$/, '');
  if (field === 'chain') return canonicalJson(normChain(v));
  return canonicalJson(v);
}

/** Picks a version the way ConfigAdmin resolves one: in force at `now`, else the next scheduled, else (resolve only) the latest. */
function pickVersion<T extends { effective_from: unknown; effective_to: unknown }>(rows: T[], now: number, fallbackLatest: boolean): T | undefined {
  const from = (r: T) => new Date(r.effective_from as string).getTime();
  const to = (r: T) => (r.effective_to ? new Date(r.effective_to as string).getTime() : Infinity);
  const sorted = [...rows].sort((a, b) => from(a) - from(b));
  return sorted.find((r) => from(r) <= now && now < to(r)) ?? sorted.find((r) => from(r) > now) ?? (fallbackLatest ? sorted[sorted.length - 1] : undefined);
}

/** A CredentialReader over the channel table (the admin DTO only shows the last 4 characters). */
export function dbCredentialReader(db: Db, now: () => number = Date.now): CredentialReader {
  return async (code, rowId) => {
    let q = db.selectFrom('channel').select(['id', 'credential', 'effective_from', 'effective_to']).where('code', '=', code).where('deleted_at', 'is', null);
    if (rowId) q = q.where('id', '=', rowId);
    return pickVersion(await q.execute(), now(), true)?.credential ?? null;
  };
}

async function current(admin: ConfigAdmin, entity: DeclEntity, key: string): Promise<Obj | null> {
  try {
    return await admin.get(entity, key);
  } catch (e) {
    if (e instanceof GatewayError && e.code === 'not_found') return null;
    throw e;
  }
}

/**
 * Compares the file with the database and lists the writes that would make them agree: channels first
 * (aliases name them), then aliases, then apps. Reads only; `applyPlan` writes.
 */
export async function planApply(admin: ConfigAdmin, doc: ConfigDoc, env: NodeJS.ProcessEnv, readCredential: CredentialReader): Promise<Plan> {
  checkConfigDoc(doc);
  const changes: PlanChange[] = [];
  const inFile = new Set((doc.channels ?? []).map((c) => c.code));
  for (const [section, entity] of Object.entries(SECTIONS)) {
    const items = ((doc as unknown as Obj)[section] ?? []) as Obj[];
    for (const [i, item] of items.entries()) {
      const path = `${section}[${i}]`;
      const key = String(item[KEY[entity]]);
      const want = desiredBody(entity, item);
      let secret: string | undefined;
      if (typeof item.credential_env === 'string') {
        secret = env[item.credential_env];
        if (!secret) throw bad(`${path}.credential_env`, `environment variable ${item.credential_env} is not set (or empty)`);
      }
      if (entity === 'alias') await checkChainChannels(admin, want.chain, inFile, path);
      const cur = await current(admin, entity, key);
      if (!cur) {
        const fields = { ...want, ...(secret !== undefined ? { credential: secret } : {}) };
        const diff = Object.entries(fields)
          .filter(([f]) => f !== KEY[entity])
          .map(([field, to]) => ({ field, from: undefined, to: field === 'credential' ? '(set)' : to }));
        changes.push({ op: 'create', entity, key, fields, diff });
        continue;
      }
      const fields: Obj = {};
      const diff: PlanChange['diff'] = [];
      for (const [field, to] of Object.entries(want)) {
        if (field === KEY[entity] || comparable(field, cur[field]) === comparable(field, to)) continue;
        fields[field] = to;
        diff.push({ field, from: cur[field], to });
      }
      if (secret !== undefined) {
        const stored = await readCredential(key, String(cur.id));
        let plain: string | null = null;
        try {
          plain = stored === null ? null : openSecret(stored);
        } catch {
          plain = null; // sealed with another key: can't compare, so write it again
        }
        if (plain !== secret) {
          fields.credential = secret;
          diff.push({ field: 'credential', from: '(hidden)', to: '(changed)' });
        }
      }
      if (diff.length) changes.push({ op: 'update', entity, key, versionNo: cur.version_no as number, ...(entity === 'app' ? {} : { rowId: String(cur.id) }), fields, diff });
    }
  }
  return { changes };
}

/** Fails at plan time (not halfway through apply) when an alias names a channel neither in the file nor in the database. */
async function checkChainChannels(admin: ConfigAdmin, chain: unknown, inFile: Set<string>, path: string): Promise<void> {
  for (const tier of normChain(chain)) {
    for (const t of tier.targets) {
      if (!inFile.has(t.channel) && !(await current(admin, 'channel', t.channel))) {
        throw bad(`${path}.chain`, `channel '${t.channel}' is neither in the file nor in the database`);
      }
    }
  }
}

/** Runs the plan through ConfigAdmin: each change is one versioned, audited write plus an invalidation. */
export async function applyPlan(admin: ConfigAdmin, actor: Actor, plan: Plan): Promise<void> {
  for (const c of plan.changes) {
    if (c.op === 'create') await admin.create(actor, c.entity, c.fields);
    else await admin.update(actor, c.entity, c.key, c.versionNo, c.fields, c.rowId ? { rowId: c.rowId } : {});
  }
}

function show(v: unknown): string {
  if (v === undefined) return '(unset)';
  if (typeof v === 'string') return /^[\w.:/@+-]+$/.test(v) ? v : JSON.stringify(v);
  return canonicalJson(v);
}

/** A readable diff, e.g. `+ channel openai-main (create)` / `~ alias gpt-4o: max_attempts 3 -> 4`. Never shows a credential. */
export function formatPlan(plan: Plan): string {
  if (plan.changes.length === 0) return 'no changes';
  const lines: string[] = [];
  for (const c of plan.changes) {
    if (c.op === 'create') {
      lines.push(`+ ${c.entity} ${c.key} (create)`);
      for (const d of c.diff) lines.push(`    ${d.field}: ${d.field === 'credential' ? '(set)' : show(d.to)}`);
    } else {
      for (const d of c.diff) lines.push(`~ ${c.entity} ${c.key}: ${d.field} ${d.field === 'credential' ? '(changed)' : `${show(d.from)} -> ${show(d.to)}`}`);
    }
  }
  const n = (op: string) => plan.changes.filter((c) => c.op === op).length;
  lines.push(`${n('create')} to create, ${n('update')} to update (nothing in the database but not in the file is deleted)`);
  return lines.join('\n');
}

async function listAll(admin: ConfigAdmin, entity: DeclEntity): Promise<Obj[]> {
  const out: Obj[] = [];
  for (let offset = 0; ; ) {
    const page = await admin.list(entity, { limit: 500, offset });
    out.push(...page.data);
    offset += page.data.length;
    if (page.data.length === 0 || offset >= page.total) return out;
  }
}

/**
 * One row per code/name, sorted by it: the version in force now. Scheduled versions of a code that has
 * one in force are ignored (apply would not manage them either); a code with only scheduled versions
 * exports the next one (with its effective_from); one whose versions all ended is left out.
 */
function rowsInForce(rows: Obj[], key: string, now: number): Obj[] {
  const byKey = new Map<string, Obj[]>();
  for (const r of rows) byKey.set(String(r[key]), [...(byKey.get(String(r[key])) ?? []), r]);
  return [...byKey.keys()]
    .sort()
    .map((k) => pickVersion(byKey.get(k)!, now, false))
    .filter((r): r is Obj => !!r);
}

/** Fields at their default are left out; effective_from only for a scheduled row, effective_to when set. */
function specOf(entity: DeclEntity, r: Obj, now: number): Obj {
  const out: Obj = {};
  for (const f of FIELDS[entity]) {
    if (f === 'credential_env') {
      if (r.credential_set) out.credential_env = credentialEnvName(String(r.code));
      continue;
    }
    let v = r[f];
    if (f === 'effective_from' && new Date(v as string).getTime() <= now) continue;
    if (v === null || v === undefined || (f === 'name' && entity === 'channel' && v === r.code)) continue;
    if (f in DEFAULTS[entity] && canonicalJson(v) === canonicalJson(DEFAULTS[entity][f])) continue;
    if (f === 'chain') v = normChain(v).map((t) => ({ targets: t.targets.map(({ weight, ...x }) => (weight === 1 ? x : { ...x, weight })) }));
    if (f === 'settings') v = JSON.parse(canonicalJson(v)); // sorted keys: deterministic output
    out[f] = v;
  }
  return out;
}

/** The configuration in force as a document, deterministic (sorted by code / name / id). Credentials become credential_env placeholders. */
export async function exportConfig(admin: ConfigAdmin, now: number = Date.now()): Promise<ConfigDoc> {
  const doc: Obj = { apiVersion: 'anima/v1' };
  for (const [section, entity] of Object.entries(SECTIONS)) {
    doc[section] = rowsInForce(await listAll(admin, entity), KEY[entity], now).map((r) => specOf(entity, r, now));
  }
  return doc as unknown as ConfigDoc;
}

/** The document as file text (YAML, or JSON). */
export function formatConfigDoc(doc: ConfigDoc, format: 'yaml' | 'json' = 'yaml'): string {
  if (format === 'json') return JSON.stringify(doc, null, 2) + '\n';
  return (
    '# Anima configuration (anima export). Apply with: anima apply -f <file> [--dry-run]\n' +
    '# Credentials are never exported: set each credential_env variable before applying.\n' +
    stringifyYaml(doc, { lineWidth: 0 })
  );
}
