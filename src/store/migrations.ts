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
      await sql`CREATE UNIQUE INDEX channel_code_from ON channel (code, effective_from) WHERE deleted_at IS NULL`.execute(
        db,
      );
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
      await sql`CREATE UNIQUE INDEX alias_name_from ON alias (name, effective_from) WHERE deleted_at IS NULL`.execute(
        db,
      );
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
      await sql`CREATE UNIQUE INDEX quota_scope_from ON quota (scope, scope_id, effective_from) WHERE deleted_at IS NULL`.execute(
        db,
      );
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
      await sql`CREATE INDEX task_claim ON task (status, not_before) WHERE status IN ('queued', 'running')`.execute(
        db,
      );
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
      await sql`CREATE INDEX webhook_due ON webhook_delivery (status, next_at) WHERE status = 'pending'`.execute(
        db,
      );
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
  '0008_ledger': {
    // Double-entry ledger (src/billing/ledger.ts). Money is BIGINT micro-units. What the database itself
    // guarantees: per-account balance flags (CHECK), every journal's entries balance (deferred constraint
    // trigger), entries and journals are immutable except a pending hold's state (triggers), a hold is
    // resolved at most once (unique index on pending_of).
    async up(db: Kysely<unknown>) {
      await sql`CREATE TABLE ledger_account (
        id bigserial PRIMARY KEY,
        code text NOT NULL UNIQUE,
        kind text NOT NULL CHECK (kind IN ('wallet', 'revenue', 'expense', 'liability', 'hold', 'equity')),
        app_id text,
        channel_code text,
        debits_must_not_exceed_credits boolean NOT NULL DEFAULT false,
        credits_must_not_exceed_debits boolean NOT NULL DEFAULT false,
        debits_pending bigint NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
        debits_posted bigint NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
        credits_pending bigint NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
        credits_posted bigint NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
        created_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT ledger_account_one_flag CHECK (NOT (debits_must_not_exceed_credits AND credits_must_not_exceed_debits)),
        CONSTRAINT ledger_account_debits_within_credits
          CHECK (NOT debits_must_not_exceed_credits OR debits_posted + debits_pending <= credits_posted),
        CONSTRAINT ledger_account_credits_within_debits
          CHECK (NOT credits_must_not_exceed_debits OR credits_posted + credits_pending <= debits_posted)
      )`.execute(db);
      await sql`CREATE TABLE ledger_journal (
        id bigserial PRIMARY KEY,
        idem_key text NOT NULL UNIQUE,
        kind text NOT NULL CHECK (kind IN ('fund', 'hold', 'post', 'void', 'sale', 'cost', 'correction')),
        request_id text,
        task_id text,
        app_id text,
        alias text,
        channel text,
        usage jsonb,
        memo text,
        pending_of bigint REFERENCES ledger_journal (id),
        state text NOT NULL DEFAULT 'posted',
        created_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT ledger_journal_state CHECK (CASE WHEN kind = 'hold' THEN state IN ('pending', 'posted', 'voided') ELSE state = 'posted' END),
        CONSTRAINT ledger_journal_resolution CHECK ((kind IN ('post', 'void')) = (pending_of IS NOT NULL))
      )`.execute(db);
      // A hold is resolved (posted or voided) by at most one journal, whatever the code does.
      await sql`CREATE UNIQUE INDEX ledger_journal_resolves ON ledger_journal (pending_of)
        WHERE pending_of IS NOT NULL`.execute(db);
      await sql`CREATE INDEX ledger_journal_app ON ledger_journal (app_id, id)`.execute(db);
      await sql`CREATE INDEX ledger_journal_request ON ledger_journal (request_id)`.execute(db);
      await sql`CREATE TABLE ledger_entry (
        id bigserial PRIMARY KEY,
        journal_id bigint NOT NULL REFERENCES ledger_journal (id),
        account_id bigint NOT NULL REFERENCES ledger_account (id),
        debit bigint NOT NULL DEFAULT 0,
        credit bigint NOT NULL DEFAULT 0,
        pending boolean NOT NULL DEFAULT false,
        CONSTRAINT ledger_entry_one_side CHECK ((debit > 0 AND credit = 0) OR (debit = 0 AND credit > 0))
      )`.execute(db);
      await sql`CREATE INDEX ledger_entry_journal ON ledger_entry (journal_id)`.execute(db);
      await sql`CREATE INDEX ledger_entry_account ON ledger_entry (account_id)`.execute(db);
      // Checked at COMMIT, once the journal's entries are all in: they balance, pending entries belong to
      // holds only, and a void moves nothing.
      await sql`CREATE FUNCTION ledger_entry_check_journal() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE d numeric; c numeric; k text;
        BEGIN
          SELECT kind INTO k FROM ledger_journal WHERE id = NEW.journal_id;
          IF k = 'void' OR NEW.pending <> (k = 'hold') THEN
            RAISE EXCEPTION 'ledger entry % does not fit its % journal %', NEW.id, k, NEW.journal_id
              USING ERRCODE = '23514', CONSTRAINT = 'ledger_entry_fits_journal';
          END IF;
          SELECT coalesce(sum(debit), 0), coalesce(sum(credit), 0) INTO d, c FROM ledger_entry WHERE journal_id = NEW.journal_id;
          IF d <> c THEN
            RAISE EXCEPTION 'ledger journal % is unbalanced: debits % <> credits %', NEW.journal_id, d, c
              USING ERRCODE = '23514', CONSTRAINT = 'ledger_journal_balanced';
          END IF;
          RETURN NULL;
        END $$`.execute(db);
      await sql`CREATE CONSTRAINT TRIGGER ledger_entry_balanced AFTER INSERT ON ledger_entry
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_entry_check_journal()`.execute(db);
      await sql`CREATE FUNCTION ledger_entry_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION 'ledger_entry is append-only (% refused)', TG_OP USING ERRCODE = '55000';
        END $$`.execute(db);
      await sql`CREATE TRIGGER ledger_entry_immutable BEFORE UPDATE OR DELETE ON ledger_entry
        FOR EACH ROW EXECUTE FUNCTION ledger_entry_immutable()`.execute(db);
      await sql`CREATE FUNCTION ledger_journal_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          -- The one permitted change: a pending hold becomes posted or voided, nothing else on the row moves.
          IF TG_OP = 'UPDATE' AND OLD.kind = 'hold' AND OLD.state = 'pending' AND NEW.state IN ('posted', 'voided')
             AND (to_jsonb(NEW) - 'state') = (to_jsonb(OLD) - 'state') THEN
            RETURN NEW;
          END IF;
          RAISE EXCEPTION 'ledger_journal is append-only: only a pending hold''s state may change, once (% refused)', TG_OP
            USING ERRCODE = '55000';
        END $$`.execute(db);
      await sql`CREATE TRIGGER ledger_journal_immutable BEFORE UPDATE OR DELETE ON ledger_journal
        FOR EACH ROW EXECUTE FUNCTION ledger_journal_immutable()`.execute(db);
    },
  },
  '0009_billing': {
    // Billing wired to requests: an app is prepaid (wallet must cover each request) or postpaid; a
    // journal records when its request happened (report by day) besides when it was written.
    async up(db: Kysely<unknown>) {
      await sql`ALTER TABLE app ADD COLUMN billing text NOT NULL DEFAULT 'postpaid' CHECK (billing IN ('prepaid', 'postpaid'))`.execute(
        db,
      );
      await sql`ALTER TABLE ledger_journal ADD COLUMN occurred_at timestamptz NOT NULL DEFAULT now()`.execute(
        db,
      );
      await sql`CREATE INDEX ledger_journal_occurred ON ledger_journal (occurred_at)`.execute(db);
    },
  },
  '0010_media_tasks': {
    // Media generation tasks (image, video, music) share the task table with ASYNC chat tasks: the channel
    // and upstream job they run on, progress, an idempotency key per app, a per-task webhook, a cancel
    // request, every status change with its time, and the priced record billing settles from
    // (billing_state 'pending' until the settlement is durable, so a crash in between is swept up).
    async up(db: Kysely<unknown>) {
      await sql`ALTER TABLE task
        ADD COLUMN alias text,
        ADD COLUMN channel text,
        ADD COLUMN upstream_id text,
        ADD COLUMN progress integer NOT NULL DEFAULT 0,
        ADD COLUMN idempotency_key text,
        ADD COLUMN webhook_url text,
        ADD COLUMN cancel_requested_at timestamptz,
        ADD COLUMN transitions jsonb NOT NULL DEFAULT '[]',
        ADD COLUMN billing jsonb,
        ADD COLUMN billing_state text NOT NULL DEFAULT 'none' CHECK (billing_state IN ('none', 'pending', 'done')),
        ADD COLUMN polls integer NOT NULL DEFAULT 0`.execute(db);
      await sql`CREATE UNIQUE INDEX task_idempotency ON task (app_id, idempotency_key) WHERE idempotency_key IS NOT NULL`.execute(
        db,
      );
      await sql`DROP INDEX task_claim`.execute(db);
      await sql`CREATE INDEX task_claim ON task (not_before) WHERE status IN ('queued', 'submitted', 'running')`.execute(
        db,
      );
      await sql`CREATE INDEX task_billing ON task (completed_at) WHERE billing_state = 'pending'`.execute(db);
      // 'jobs': the submit/poll media vendor provider.
      await sql`ALTER TABLE channel DROP CONSTRAINT channel_provider_check`.execute(db);
      await sql`ALTER TABLE channel ADD CONSTRAINT channel_provider_check CHECK (provider IN ('openai', 'anthropic', 'jobs'))`.execute(
        db,
      );
    },
  },
  '0011_api_breadth': {
    // Gemini channels; an opt-in exact-match response cache per alias (seconds to keep an answer, 0 = off);
    // prices per million characters (speech), per second of audio (transcription) and per cache hit.
    async up(db: Kysely<unknown>) {
      await sql`ALTER TABLE channel DROP CONSTRAINT channel_provider_check`.execute(db);
      await sql`ALTER TABLE channel ADD CONSTRAINT channel_provider_check CHECK (provider IN ('openai', 'anthropic', 'jobs', 'gemini'))`.execute(
        db,
      );
      await sql`ALTER TABLE alias ADD COLUMN cache_ttl_s integer NOT NULL DEFAULT 0 CHECK (cache_ttl_s >= 0 AND cache_ttl_s <= 2592000)`.execute(
        db,
      );
      for (const side of ['cost', 'sale']) {
        for (const unit of ['per_mchar', 'per_audio_second', 'per_cache_hit']) {
          const col = `${side}_${unit}`;
          await sql`ALTER TABLE price ADD COLUMN ${sql.raw(col)} bigint NOT NULL DEFAULT 0 CHECK (${sql.raw(col)} >= 0)`.execute(
            db,
          );
        }
      }
    },
  },
  '0012_console_task_index': {
    // The operator console lists tasks across apps, newest first.
    async up(db: Kysely<unknown>) {
      await sql`CREATE INDEX task_created ON task (created_at)`.execute(db);
    },
  },
  '0013_ledger_statement_checks': {
    // The entry checks run once per INSERT statement, set-based, instead of per entry row. A sale journal
    // has four entries; per row, the deferred balance trigger ran two queries and the two foreign keys one
    // each: 16 queries per journal, most of the database CPU a journal cost (measured on batches of
    // 200-500 journals with postBatch in a loop; figures in bench/HISTORY.md). Now one statement of
    // entries costs two queries, whatever its size.
    //
    // What the database guarantees is unchanged, with one difference: a journal's entries must balance at
    // the end of each INSERT statement that adds to it, not only at COMMIT. Every writer inserts a
    // journal's entries in one statement.
    //
    // The foreign keys' other half (a referenced row can't go away) is kept by refusals: journals are
    // already append-only, accounts can't be deleted or renumbered, and no ledger table can be truncated.
    async up(db: Kysely<unknown>) {
      await sql`DROP TRIGGER ledger_entry_balanced ON ledger_entry`.execute(db);
      await sql`DROP FUNCTION ledger_entry_check_journal()`.execute(db);
      await sql`ALTER TABLE ledger_entry DROP CONSTRAINT ledger_entry_journal_id_fkey, DROP CONSTRAINT ledger_entry_account_id_fkey`.execute(
        db,
      );
      await sql`CREATE FUNCTION ledger_entry_check_statement() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE r record;
        BEGIN
          -- Every new entry names a journal and an account that exist, and fits its journal: pending
          -- entries belong to holds only, and a void moves nothing.
          SELECT n.id, n.journal_id, n.account_id, j.kind, j.id IS NULL AS no_journal, a.id IS NULL AS no_account INTO r
            FROM new_entries n
            LEFT JOIN ledger_journal j ON j.id = n.journal_id
            LEFT JOIN ledger_account a ON a.id = n.account_id
            WHERE j.id IS NULL OR a.id IS NULL OR j.kind = 'void' OR n.pending <> (j.kind = 'hold')
            LIMIT 1;
          IF FOUND THEN
            IF r.no_journal THEN
              RAISE EXCEPTION 'ledger entry % names journal %, which does not exist', r.id, r.journal_id
                USING ERRCODE = '23503', CONSTRAINT = 'ledger_entry_journal_exists';
            ELSIF r.no_account THEN
              RAISE EXCEPTION 'ledger entry % names account %, which does not exist', r.id, r.account_id
                USING ERRCODE = '23503', CONSTRAINT = 'ledger_entry_account_exists';
            END IF;
            RAISE EXCEPTION 'ledger entry % does not fit its % journal %', r.id, r.kind, r.journal_id
              USING ERRCODE = '23514', CONSTRAINT = 'ledger_entry_fits_journal';
          END IF;
          -- Every journal this statement added to balances, over all its entries.
          SELECT t.journal_id, sum(e.debit) AS d, sum(e.credit) AS c INTO r
            FROM (SELECT DISTINCT journal_id FROM new_entries) t
            JOIN ledger_entry e ON e.journal_id = t.journal_id
            GROUP BY t.journal_id
            HAVING sum(e.debit) <> sum(e.credit)
            LIMIT 1;
          IF FOUND THEN
            RAISE EXCEPTION 'ledger journal % is unbalanced: debits % <> credits %', r.journal_id, r.d, r.c
              USING ERRCODE = '23514', CONSTRAINT = 'ledger_journal_balanced';
          END IF;
          RETURN NULL;
        END $$`.execute(db);
      await sql`CREATE TRIGGER ledger_entry_checked AFTER INSERT ON ledger_entry REFERENCING NEW TABLE AS new_entries
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_entry_check_statement()`.execute(db);
      await sql`CREATE FUNCTION ledger_account_permanent() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION 'ledger accounts are permanent: entries refer to them (% refused)', TG_OP USING ERRCODE = '55000';
        END $$`.execute(db);
      await sql`CREATE TRIGGER ledger_account_permanent BEFORE DELETE OR UPDATE OF id ON ledger_account
        FOR EACH ROW EXECUTE FUNCTION ledger_account_permanent()`.execute(db);
      await sql`CREATE FUNCTION ledger_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION '% is append-only (TRUNCATE refused)', TG_TABLE_NAME USING ERRCODE = '55000';
        END $$`.execute(db);
      for (const t of ['ledger_account', 'ledger_journal', 'ledger_entry']) {
        await sql`CREATE TRIGGER ${sql.raw(t + '_no_truncate')} BEFORE TRUNCATE ON ${sql.raw(t)}
          FOR EACH STATEMENT EXECUTE FUNCTION ledger_no_truncate()`.execute(db);
      }
    },
  },
  '0014_ledger_sale_key': {
    // Quota windows seeded from the ledger after Redis lost them (quota/seed.ts) sum one key's sales (or an
    // app's or token group's, key by key) over the month. Without this index that read every app's sales
    // of the month (occurred_at) or the app's whole history (app_id, id), once per scope. Partial: only
    // sales carry a key.
    async up(db: Kysely<unknown>) {
      await sql`CREATE INDEX ledger_journal_sale_key ON ledger_journal ((usage->>'key_id'), occurred_at) WHERE kind = 'sale'`.execute(
        db,
      );
    },
  },
  '0015_channel_provider_registry': {
    // The provider kinds are the provider registry's (src/providers/registry.ts), checked by the admin API:
    // a CHECK listing them made every new kind a migration. (0008 named it channel_provider_check.)
    async up(db: Kysely<unknown>) {
      await sql`ALTER TABLE channel DROP CONSTRAINT IF EXISTS channel_provider_check`.execute(db);
    },
  },
  '0016_price_catalogue': {
    // List prices imported from a LiteLLM price file (`anima prices import`), over the catalogue shipped in
    // data/prices.json: the cost of a request whose alias and channel have no price row (config/catalogue.ts).
    // One row per provider kind and upstream model; not versioned (a list price is a reference, the
    // versioned price rows are what an operator commits to).
    async up(db: Kysely<unknown>) {
      await sql`CREATE TABLE price_catalogue (
        provider text NOT NULL,
        model text NOT NULL,
        input_per_mtok bigint NOT NULL DEFAULT 0 CHECK (input_per_mtok >= 0),
        output_per_mtok bigint NOT NULL DEFAULT 0 CHECK (output_per_mtok >= 0),
        cached_per_mtok bigint NOT NULL DEFAULT 0 CHECK (cached_per_mtok >= 0),
        per_request bigint NOT NULL DEFAULT 0 CHECK (per_request >= 0),
        per_image bigint NOT NULL DEFAULT 0 CHECK (per_image >= 0),
        per_video_second bigint NOT NULL DEFAULT 0 CHECK (per_video_second >= 0),
        per_track bigint NOT NULL DEFAULT 0 CHECK (per_track >= 0),
        per_mchar bigint NOT NULL DEFAULT 0 CHECK (per_mchar >= 0),
        per_audio_second bigint NOT NULL DEFAULT 0 CHECK (per_audio_second >= 0),
        per_cache_hit bigint NOT NULL DEFAULT 0 CHECK (per_cache_hit >= 0),
        source text NOT NULL,
        as_of text NOT NULL,
        imported_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (provider, model)
      )`.execute(db);
    },
  },
  '0017_ledger_entry_write_cost': {
    // What a sale journal costs PostgreSQL, cut (measured with bench/journal-writer.ts).
    //
    // 1. The statement check summed every touched journal's entries from the table, and the planner did
    //    that as a merge join over the whole ledger_entry_journal index: O(ledger) per INSERT, most of a
    //    journal's cost and growing with the ledger. It now checks only the statement's own entries (its
    //    transition table): each statement's additions to a journal balance, so every journal balances, by
    //    induction from empty (entries can't be updated, deleted or truncated, and every existing journal
    //    was checked whole when written). The journal checks run once per journal, not per entry.
    // 2. ledger_entry_account went: no query reads entries by account (the trial balance and the report
    //    aggregate or come through the journal). The entry's primary key becomes (journal_id, id), which
    //    also serves every read by journal, so ledger_entry_journal went too: one index per entry row
    //    where there were three.
    async up(db: Kysely<unknown>) {
      await sql`CREATE OR REPLACE FUNCTION ledger_entry_check_statement() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE r record;
        BEGIN
          -- Per journal this statement added to: it exists, its new entries balance, pending entries
          -- belong to holds only (all of a hold's, none of anything else's), and a void moves nothing.
          SELECT n.id, n.journal_id, n.d, n.c, j.kind, j.id IS NULL AS no_journal INTO r
            FROM (SELECT journal_id, min(id) AS id, sum(debit) AS d, sum(credit) AS c,
                    bool_or(pending) AS any_pending, bool_and(pending) AS all_pending
                  FROM new_entries GROUP BY journal_id) n
            LEFT JOIN ledger_journal j ON j.id = n.journal_id
            WHERE j.id IS NULL OR j.kind = 'void' OR n.any_pending <> (j.kind = 'hold')
              OR n.all_pending <> (j.kind = 'hold') OR n.d <> n.c
            LIMIT 1;
          IF FOUND THEN
            IF r.no_journal THEN
              RAISE EXCEPTION 'ledger entry % names journal %, which does not exist', r.id, r.journal_id
                USING ERRCODE = '23503', CONSTRAINT = 'ledger_entry_journal_exists';
            ELSIF r.d = r.c THEN
              RAISE EXCEPTION 'ledger entry % does not fit its % journal %', r.id, r.kind, r.journal_id
                USING ERRCODE = '23514', CONSTRAINT = 'ledger_entry_fits_journal';
            END IF;
            RAISE EXCEPTION 'ledger journal % is unbalanced: debits % <> credits %', r.journal_id, r.d, r.c
              USING ERRCODE = '23514', CONSTRAINT = 'ledger_journal_balanced';
          END IF;
          SELECT n.account_id INTO r
            FROM (SELECT DISTINCT account_id FROM new_entries) n
            LEFT JOIN ledger_account a ON a.id = n.account_id
            WHERE a.id IS NULL
            LIMIT 1;
          IF FOUND THEN
            RAISE EXCEPTION 'ledger entry names account %, which does not exist', r.account_id
              USING ERRCODE = '23503', CONSTRAINT = 'ledger_entry_account_exists';
          END IF;
          RETURN NULL;
        END $$`.execute(db);
      await sql`DROP INDEX ledger_entry_account`.execute(db);
      await sql`ALTER TABLE ledger_entry DROP CONSTRAINT ledger_entry_pkey,
        ADD CONSTRAINT ledger_entry_pkey PRIMARY KEY (journal_id, id)`.execute(db);
      await sql`DROP INDEX ledger_entry_journal`.execute(db);
    },
  },
  '0018_app_sale_markup': {
    // A per-app markup over catalogue list prices (config/catalogue.ts): the sale of a request whose alias
    // has no price row is its cost times this (a decimal such as '1.5', at most 4 decimals), instead of the
    // default markup. NULL: the default. Explicit price rows are not affected.
    async up(db: Kysely<unknown>) {
      await sql`ALTER TABLE app ADD COLUMN sale_markup text
        CHECK (sale_markup ~ '^[0-9]{1,6}(\.[0-9]{1,4})?$')`.execute(db);
    },
  },
  '0019_notification_target': {
    // Operator notification webhooks (config/notify-targets.ts, observability/notify.ts). `secret` is
    // sealed like channel credentials; `events` a JSON list of event kinds ([] = all).
    async up(db: Kysely<unknown>) {
      await sql`CREATE TABLE notification_target (
        id text PRIMARY KEY,
        name text NOT NULL,
        url text NOT NULL,
        format text NOT NULL DEFAULT 'json' CHECK (format IN ('slack', 'json')),
        secret text NOT NULL DEFAULT '',
        events jsonb NOT NULL DEFAULT '[]'::jsonb,
        enabled boolean NOT NULL DEFAULT true,
        rate_per_minute integer NOT NULL DEFAULT 10 CHECK (rate_per_minute BETWEEN 1 AND 600),
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
      )`.execute(db);
    },
  },
  '0020_request_log': {
    // One row per data-plane request (observability/request-log.ts), partitioned by day so retention drops
    // whole partitions. The partitions themselves are made by the writer as days come. Three indexes per
    // row (time, key, request id): an app's or alias's rows are read in time order, filtered.
    async up(db: Kysely<unknown>) {
      await sql`CREATE TABLE request_log (
        id text NOT NULL,
        at timestamptz NOT NULL,
        app_id text,
        key_id text,
        alias text,
        dialect text NOT NULL,
        channel text,
        upstream_model text,
        stream boolean NOT NULL DEFAULT false,
        attempts integer NOT NULL DEFAULT 0,
        route jsonb NOT NULL DEFAULT '[]'::jsonb,
        status integer NOT NULL,
        outcome text NOT NULL,
        error_code text,
        tokens_in integer,
        tokens_out integer,
        cost_micros bigint,
        sale_micros bigint,
        latency_ms real NOT NULL,
        ttfb_ms real,
        cache_hit boolean NOT NULL DEFAULT false,
        aborted boolean NOT NULL DEFAULT false,
        instance text NOT NULL,
        PRIMARY KEY (at, id)
      ) PARTITION BY RANGE (at)`.execute(db);
      await sql`CREATE INDEX request_log_key ON request_log (key_id, at)`.execute(db);
      await sql`CREATE INDEX request_log_id ON request_log (id)`.execute(db);
    },
  },
  '0021_journal_key': {
    // Spend per key: the key a sale was made with, out of the usage the journal already carries, as a
    // column the report groups by and a key's page sums (indexed for that page's month). Generated, so
    // the journal writer's statement is unchanged and no journal can disagree with its usage.
    async up(db: Kysely<unknown>) {
      await sql`ALTER TABLE ledger_journal
        ADD COLUMN key_id text GENERATED ALWAYS AS (usage ->> 'key_id') STORED`.execute(db);
      await sql`CREATE INDEX ledger_journal_key ON ledger_journal (key_id, occurred_at)
        WHERE key_id IS NOT NULL`.execute(db);
    },
  },
  '0022_journal_one_key_index': {
    // 0014's expression index and 0021's ledger_journal_key indexed the same key for every sale, and a
    // journal paid for both on each write: ~4-5 µs of a sale journal's ~45-50 µs of PostgreSQL CPU
    // (bench/HISTORY.md, 2026-12-02 "what PostgreSQL spends per request"). Quota seeding (quota/seed.ts)
    // reads by the key_id column now, through ledger_journal_key.
    async up(db: Kysely<unknown>) {
      await sql`DROP INDEX IF EXISTS ledger_journal_sale_key`.execute(db);
    },
  },
  '0023_journal_inline_entries': {
    // A journal written by the journal writer (Ledger.postBatch: sales, mostly) carries its entries on its
    // own row, as three parallel arrays (account, debit, credit), instead of one ledger_entry row each: a
    // sale was five heap rows and ten index entries, now one row and six. ~10 µs of a sale's ~50-60 µs
    // of PostgreSQL CPU and ~40% of its bytes on disk (bench/journal-writer.ts; bench/HISTORY.md,
    // 2026-12-02 "a sale's entries on its row"). Every other write (holds and their resolutions, single
    // posts) still writes ledger_entry rows; readers take both (ledger_posting below, Ledger.trialBalance,
    // the report). The invariants stay the database's:
    // - balanced, one side per entry, amounts > 0: a CHECK on the row (plpgsql, ~1 µs; a SQL function's
    //   subqueries cost ~15 µs a row);
    // - every account exists: a statement trigger over the new rows, as ledger_entry has;
    // - only posted kinds, and never also ledger_entry rows (ledger_entry_check_statement refuses them);
    // - immutable: ledger_journal_immutable already compares the whole row.
    // NOT VALID: rows written before this migration have no arrays (NULL passes), so there is nothing to
    // scan under the lock.
    async up(db: Kysely<unknown>) {
      await sql`ALTER TABLE ledger_journal ADD COLUMN entry_account bigint[], ADD COLUMN entry_debit bigint[],
        ADD COLUMN entry_credit bigint[]`.execute(db);
      await sql`CREATE FUNCTION ledger_inline_entries_ok(a bigint[], d bigint[], c bigint[]) RETURNS boolean
        LANGUAGE plpgsql IMMUTABLE AS $$
        DECLARE n int := cardinality(a); s numeric := 0;
        BEGIN
          IF n < 2 OR cardinality(d) IS DISTINCT FROM n OR cardinality(c) IS DISTINCT FROM n
             OR array_ndims(a) <> 1 OR array_ndims(d) <> 1 OR array_ndims(c) <> 1 THEN
            RETURN false;
          END IF;
          FOR i IN 1 .. n LOOP
            IF a[i] IS NULL OR d[i] IS NULL OR c[i] IS NULL
               OR NOT ((d[i] > 0 AND c[i] = 0) OR (d[i] = 0 AND c[i] > 0)) THEN
              RETURN false;
            END IF;
            s := s + d[i] - c[i];
          END LOOP;
          RETURN s = 0;
        END $$`.execute(db);
      await sql`ALTER TABLE ledger_journal ADD CONSTRAINT ledger_journal_inline_entries CHECK (
        (entry_account IS NULL AND entry_debit IS NULL AND entry_credit IS NULL)
        OR (kind IN ('fund', 'sale', 'cost', 'correction')
            AND ledger_inline_entries_ok(entry_account, entry_debit, entry_credit))) NOT VALID`.execute(db);
      await sql`CREATE FUNCTION ledger_journal_check_statement() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE r record;
        BEGIN
          SELECT x.a INTO r
            FROM (SELECT DISTINCT unnest(entry_account) AS a FROM new_journals WHERE entry_account IS NOT NULL) x
            LEFT JOIN ledger_account acc ON acc.id = x.a
            WHERE acc.id IS NULL
            LIMIT 1;
          IF FOUND THEN
            RAISE EXCEPTION 'ledger journal names account %, which does not exist', r.a
              USING ERRCODE = '23503', CONSTRAINT = 'ledger_entry_account_exists';
          END IF;
          RETURN NULL;
        END $$`.execute(db);
      await sql`CREATE TRIGGER ledger_journal_checked AFTER INSERT ON ledger_journal
        REFERENCING NEW TABLE AS new_journals
        FOR EACH STATEMENT EXECUTE FUNCTION ledger_journal_check_statement()`.execute(db);
      // 0017's check, plus: a journal that carries its entries takes no ledger_entry rows.
      await sql`CREATE OR REPLACE FUNCTION ledger_entry_check_statement() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE r record;
        BEGIN
          SELECT n.id, n.journal_id, n.d, n.c, j.kind, j.id IS NULL AS no_journal INTO r
            FROM (SELECT journal_id, min(id) AS id, sum(debit) AS d, sum(credit) AS c,
                    bool_or(pending) AS any_pending, bool_and(pending) AS all_pending
                  FROM new_entries GROUP BY journal_id) n
            LEFT JOIN ledger_journal j ON j.id = n.journal_id
            WHERE j.id IS NULL OR j.kind = 'void' OR n.any_pending <> (j.kind = 'hold')
              OR n.all_pending <> (j.kind = 'hold') OR n.d <> n.c OR j.entry_account IS NOT NULL
            LIMIT 1;
          IF FOUND THEN
            IF r.no_journal THEN
              RAISE EXCEPTION 'ledger entry % names journal %, which does not exist', r.id, r.journal_id
                USING ERRCODE = '23503', CONSTRAINT = 'ledger_entry_journal_exists';
            ELSIF r.d = r.c THEN
              RAISE EXCEPTION 'ledger entry % does not fit its % journal %', r.id, r.kind, r.journal_id
                USING ERRCODE = '23514', CONSTRAINT = 'ledger_entry_fits_journal';
            END IF;
            RAISE EXCEPTION 'ledger journal % is unbalanced: debits % <> credits %', r.journal_id, r.d, r.c
              USING ERRCODE = '23514', CONSTRAINT = 'ledger_journal_balanced';
          END IF;
          SELECT n.account_id INTO r
            FROM (SELECT DISTINCT account_id FROM new_entries) n
            LEFT JOIN ledger_account a ON a.id = n.account_id
            WHERE a.id IS NULL
            LIMIT 1;
          IF FOUND THEN
            RAISE EXCEPTION 'ledger entry names account %, which does not exist', r.account_id
              USING ERRCODE = '23503', CONSTRAINT = 'ledger_entry_account_exists';
          END IF;
          RETURN NULL;
        END $$`.execute(db);
      // Every entry, wherever it is stored: for operators' queries, the tests and the journal listing (a
      // filter on journal_id reaches each branch's primary key). The report and the trial balance name both
      // sources themselves: their filters are on the journal's other columns, or they need its state.
      await sql`CREATE VIEW ledger_posting AS
        SELECT e.journal_id, e.id AS seq, e.account_id, e.debit, e.credit, e.pending FROM ledger_entry e
        UNION ALL
        SELECT j.id, x.n, x.account_id, x.debit, x.credit, false
        FROM ledger_journal j,
          unnest(j.entry_account, j.entry_debit, j.entry_credit) WITH ORDINALITY AS x (account_id, debit, credit, n)
        WHERE j.entry_account IS NOT NULL`.execute(db);
    },
  },
};

class StaticProvider implements MigrationProvider {
  async getMigrations(): Promise<Record<string, Migration>> {
    return migrations;
  }
}

export async function migrateToLatest(
  db: Kysely<any>,
  onStep?: (step: { index: number; total: number; name: string }) => void,
): Promise<string[]> {
  const migrator = new Migrator({
    db,
    provider: new StaticProvider(),
    migrationTableName: 'anima_migration',
    migrationLockTableName: 'anima_migration_lock',
  });
  if (onStep) {
    // One migration at a time, so the caller can say what is happening (a first start runs them all).
    const pending = (await migrator.getMigrations()).filter((m) => !m.executedAt);
    const done: string[] = [];
    for (let i = 0; i < pending.length; i++) {
      onStep({ index: i + 1, total: pending.length, name: pending[i]!.name });
      const { error, results } = await migrator.migrateUp();
      if (error) throw error instanceof Error ? error : new Error(String(error));
      const ran = (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
      if (!ran.length) break; // another process ran the rest meanwhile
      done.push(...ran);
    }
    return done;
  }
  const { error, results } = await migrator.migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error(String(error));
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}
