import { type Kysely, type Migration, type MigrationProvider, Migrator, sql } from 'kysely';

/**
 * Migrations are plain SQL that PostgreSQL 15+ and PGlite both run. Every config table is versioned:
 * `version_no` (optimistic lock), `effective_from`/`effective_to` (a row applies in [from, to)), and
 * `deleted_at` (soft delete). Several rows may share a code/name with disjoint windows: the one whose
 * window holds "now" is in force.
 */
const versioned = sql`
  version_no integer NOT NULL DEFAULT 1,
  effective_from timestamptz NOT NULL DEFAULT now(),
  effective_to timestamptz,
  deleted_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()`;

const migrations: Record<string, Migration> = {
  '0001_config_core': {
    async up(db: Kysely<unknown>) {
      await sql`CREATE TABLE channel (
        id bigserial PRIMARY KEY,
        code text NOT NULL,
        name text NOT NULL,
        provider text NOT NULL CHECK (provider IN ('openai', 'anthropic')),
        base_url text NOT NULL,
        credential text NOT NULL DEFAULT '',
        enabled boolean NOT NULL DEFAULT true,
        weight integer NOT NULL DEFAULT 1,
        settings jsonb NOT NULL DEFAULT '{}'::jsonb,
        ${versioned}
      )`.execute(db);
      await sql`CREATE UNIQUE INDEX channel_code_from ON channel (code, effective_from) WHERE deleted_at IS NULL`.execute(db);
      await sql`CREATE TABLE alias (
        id bigserial PRIMARY KEY,
        name text NOT NULL,
        description text NOT NULL DEFAULT '',
        enabled boolean NOT NULL DEFAULT true,
        chain jsonb NOT NULL,
        max_attempts integer NOT NULL DEFAULT 3,
        deadline_ms integer NOT NULL DEFAULT 300000,
        ${versioned}
      )`.execute(db);
      await sql`CREATE UNIQUE INDEX alias_name_from ON alias (name, effective_from) WHERE deleted_at IS NULL`.execute(db);
      await sql`CREATE TABLE app (
        id text PRIMARY KEY,
        name text NOT NULL,
        enabled boolean NOT NULL DEFAULT true,
        ${versioned}
      )`.execute(db);
      await sql`CREATE TABLE api_key (
        id text PRIMARY KEY,
        app_id text NOT NULL REFERENCES app (id),
        name text NOT NULL DEFAULT '',
        key_hash text NOT NULL UNIQUE,
        key_prefix text NOT NULL,
        enabled boolean NOT NULL DEFAULT true,
        allowed_aliases jsonb,
        ${versioned}
      )`.execute(db);
      await sql`CREATE INDEX api_key_app ON api_key (app_id)`.execute(db);
    },
  },
  '0004_quota': {
    async up(db: Kysely<unknown>) {
      await sql`CREATE TABLE token_group (
        id text PRIMARY KEY,
        name text NOT NULL,
        price_multiplier_ppm bigint NOT NULL DEFAULT 1000000 CHECK (price_multiplier_ppm >= 0),
        enabled boolean NOT NULL DEFAULT true,
        ${versioned}
      )`.execute(db);
      await sql`CREATE TABLE quota (
        id bigserial PRIMARY KEY,
        scope text NOT NULL CHECK (scope IN ('key', 'app', 'token_group')),
        scope_id text NOT NULL,
        max_concurrency integer NOT NULL DEFAULT 0 CHECK (max_concurrency >= 0),
        qps double precision NOT NULL DEFAULT 0 CHECK (qps >= 0),
        qps_burst integer NOT NULL DEFAULT 1 CHECK (qps_burst >= 0),
        tokens_per_minute bigint NOT NULL DEFAULT 0 CHECK (tokens_per_minute >= 0),
        tokens_per_day bigint NOT NULL DEFAULT 0 CHECK (tokens_per_day >= 0),
        cost_per_day bigint NOT NULL DEFAULT 0 CHECK (cost_per_day >= 0),
        cost_per_month bigint NOT NULL DEFAULT 0 CHECK (cost_per_month >= 0),
        ${versioned}
      )`.execute(db);
      await sql`CREATE UNIQUE INDEX quota_scope_from ON quota (scope, scope_id, effective_from) WHERE deleted_at IS NULL`.execute(db);
      await sql`ALTER TABLE api_key
        ADD COLUMN queue_mode text NOT NULL DEFAULT 'REJECT' CHECK (queue_mode IN ('REJECT', 'WAIT', 'ASYNC')),
        ADD COLUMN wait_timeout_ms integer NOT NULL DEFAULT 30000 CHECK (wait_timeout_ms > 0),
        ADD COLUMN max_queue integer NOT NULL DEFAULT 100 CHECK (max_queue > 0),
        ADD COLUMN token_group_id text`.execute(db);
    },
  },
  '0005_tasks': {
    async up(db: Kysely<unknown>) {
      await sql`CREATE TABLE task (
        id text PRIMARY KEY,
        kind text NOT NULL,
        app_id text NOT NULL,
        key_id text NOT NULL,
        status text NOT NULL CHECK (status IN ('queued', 'submitted', 'running', 'succeeded', 'failed', 'cancelled', 'expired')),
        request jsonb NOT NULL,
        result jsonb,
        result_status integer,
        error jsonb,
        attempts integer NOT NULL DEFAULT 0,
        lease_owner text,
        lease_until timestamptz,
        not_before timestamptz NOT NULL DEFAULT now(),
        deadline timestamptz NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        completed_at timestamptz
      )`.execute(db);
      await sql`CREATE INDEX task_claim ON task (status, not_before) WHERE status IN ('queued', 'running')`.execute(db);
      await sql`CREATE INDEX task_app ON task (app_id, created_at)`.execute(db);
    },
  },
  '0006_price': {
    async up(db: Kysely<unknown>) {
      // Integer micro-units of the account currency. channel NULL = any channel of the alias.
      await sql`CREATE TABLE price (
        id bigserial PRIMARY KEY,
        alias text NOT NULL,
        channel text,
        cost_input_per_mtok bigint NOT NULL DEFAULT 0 CHECK (cost_input_per_mtok >= 0),
        cost_output_per_mtok bigint NOT NULL DEFAULT 0 CHECK (cost_output_per_mtok >= 0),
        cost_cached_per_mtok bigint NOT NULL DEFAULT 0 CHECK (cost_cached_per_mtok >= 0),
        cost_per_request bigint NOT NULL DEFAULT 0 CHECK (cost_per_request >= 0),
        cost_per_image bigint NOT NULL DEFAULT 0 CHECK (cost_per_image >= 0),
        cost_per_video_second bigint NOT NULL DEFAULT 0 CHECK (cost_per_video_second >= 0),
        cost_per_track bigint NOT NULL DEFAULT 0 CHECK (cost_per_track >= 0),
        sale_input_per_mtok bigint NOT NULL DEFAULT 0 CHECK (sale_input_per_mtok >= 0),
        sale_output_per_mtok bigint NOT NULL DEFAULT 0 CHECK (sale_output_per_mtok >= 0),
        sale_cached_per_mtok bigint NOT NULL DEFAULT 0 CHECK (sale_cached_per_mtok >= 0),
        sale_per_request bigint NOT NULL DEFAULT 0 CHECK (sale_per_request >= 0),
        sale_per_image bigint NOT NULL DEFAULT 0 CHECK (sale_per_image >= 0),
        sale_per_video_second bigint NOT NULL DEFAULT 0 CHECK (sale_per_video_second >= 0),
        sale_per_track bigint NOT NULL DEFAULT 0 CHECK (sale_per_track >= 0),
        ${versioned}
      )`.execute(db);
      await sql`CREATE INDEX price_alias ON price (alias, channel)`.execute(db);
    },
  },
  '0007_webhooks': {
    async up(db: Kysely<unknown>) {
      await sql`ALTER TABLE api_key ADD COLUMN webhook_url text, ADD COLUMN webhook_secret text`.execute(db);
      await sql`CREATE TABLE webhook_delivery (
        id text PRIMARY KEY,
        task_id text NOT NULL REFERENCES task (id),
        url text NOT NULL,
        status text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
        attempts integer NOT NULL DEFAULT 0,
        last_status integer,
        last_error text,
        next_at timestamptz NOT NULL DEFAULT now(),
        lease_until timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        delivered_at timestamptz,
        UNIQUE (task_id, url)
      )`.execute(db);
      await sql`CREATE INDEX webhook_due ON webhook_delivery (status, next_at) WHERE status = 'pending'`.execute(db);
    },
  },
  '0002_control_plane': {
    async up(db: Kysely<unknown>) {
      await sql`CREATE TABLE admin_token (
        id text PRIMARY KEY,
        name text NOT NULL,
        role text NOT NULL CHECK (role IN ('admin', 'viewer')),
        token_hash text NOT NULL UNIQUE,
        token_prefix text NOT NULL,
        enabled boolean NOT NULL DEFAULT true,
        created_at timestamptz NOT NULL DEFAULT now(),
        deleted_at timestamptz
      )`.execute(db);
      await sql`CREATE TABLE audit_log (
        id bigserial PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT now(),
        actor text NOT NULL,
        action text NOT NULL,
        entity text NOT NULL,
        entity_key text NOT NULL,
        before jsonb,
        after jsonb,
        request_id text
      )`.execute(db);
      await sql`CREATE INDEX audit_log_entity ON audit_log (entity, entity_key, at)`.execute(db);
      await sql`CREATE TABLE gateway_setting (
        key text PRIMARY KEY,
        value jsonb NOT NULL,
        version_no integer NOT NULL DEFAULT 1,
        updated_at timestamptz NOT NULL DEFAULT now()
      )`.execute(db);
    },
  },
};

class StaticProvider implements MigrationProvider {
  async getMigrations(): Promise<Record<string, Migration>> {
    return migrations;
  }
}

export async function migrateToLatest(db: Kysely<any>): Promise<string[]> {
  const migrator = new Migrator({ db, provider: new StaticProvider(), migrationTableName: 'anima_migration', migrationLockTableName: 'anima_migration_lock' });
  const { error, results } = await migrator.migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error(String(error));
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}
