import type { ColumnType, Generated } from 'kysely';

/** Columns every versioned config row carries. */
interface Versioned {
  version_no: ColumnType<number, number | undefined, number>;
  effective_from: ColumnType<Date, Date | string | undefined, Date | string>;
  effective_to: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  deleted_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  created_at: ColumnType<Date, Date | string | undefined, never>;
  updated_at: ColumnType<Date, Date | string | undefined, Date | string>;
}

type Json<T> = ColumnType<T, string, string>;

export interface ChainTargetRow {
  channel: string;
  model: string;
  weight?: number;
}
export interface ChainTierRow {
  targets: ChainTargetRow[];
}

export interface ChannelTable extends Versioned {
  id: Generated<string>;
  code: string;
  name: string;
  provider: string;
  base_url: string;
  credential: string;
  enabled: ColumnType<boolean, boolean | undefined, boolean>;
  weight: ColumnType<number, number | undefined, number>;
  settings: Json<Record<string, unknown>>;
}

export interface AliasTable extends Versioned {
  id: Generated<string>;
  name: string;
  description: ColumnType<string, string | undefined, string>;
  enabled: ColumnType<boolean, boolean | undefined, boolean>;
  chain: Json<ChainTierRow[]>;
  max_attempts: ColumnType<number, number | undefined, number>;
  deadline_ms: ColumnType<number, number | undefined, number>;
  /** Exact-match response cache: seconds an answer is kept (0 = off). */
  cache_ttl_s: ColumnType<number, number | undefined, number>;
}

export interface AppTable extends Versioned {
  id: string;
  name: string;
  enabled: ColumnType<boolean, boolean | undefined, boolean>;
  /** 'prepaid' (a wallet that must cover each request) | 'postpaid' (billed to a receivable). */
  billing: ColumnType<string, string | undefined, string>;
  /** Markup over catalogue list prices for this app ('1.5'); null = the default markup. */
  sale_markup: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface ApiKeyTable extends Versioned {
  id: string;
  app_id: string;
  name: string;
  key_hash: string;
  key_prefix: string;
  enabled: ColumnType<boolean, boolean | undefined, boolean>;
  allowed_aliases: Json<string[] | null>;
  queue_mode: ColumnType<string, string | undefined, string>;
  wait_timeout_ms: ColumnType<number, number | undefined, number>;
  max_queue: ColumnType<number, number | undefined, number>;
  token_group_id: ColumnType<string | null, string | null | undefined, string | null>;
  webhook_url: ColumnType<string | null, string | null | undefined, string | null>;
  webhook_secret: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface TokenGroupTable extends Versioned {
  id: string;
  name: string;
  price_multiplier_ppm: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  enabled: ColumnType<boolean, boolean | undefined, boolean>;
}

export interface QuotaTable extends Versioned {
  id: Generated<string>;
  scope: string;
  scope_id: string;
  max_concurrency: ColumnType<number, number | undefined, number>;
  qps: ColumnType<number, number | undefined, number>;
  qps_burst: ColumnType<number, number | undefined, number>;
  tokens_per_minute: ColumnType<bigint, bigint | number | undefined, bigint | number>;
  tokens_per_day: ColumnType<bigint, bigint | number | undefined, bigint | number>;
  cost_per_day: ColumnType<bigint, bigint | number | undefined, bigint | number>;
  cost_per_month: ColumnType<bigint, bigint | number | undefined, bigint | number>;
}

export interface AdminTokenTable {
  id: string;
  name: string;
  role: string;
  token_hash: string;
  token_prefix: string;
  enabled: ColumnType<boolean, boolean | undefined, boolean>;
  created_at: ColumnType<Date, Date | string | undefined, never>;
  deleted_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface AuditLogTable {
  id: Generated<string>;
  at: ColumnType<Date, Date | string | undefined, never>;
  actor: string;
  action: string;
  entity: string;
  entity_key: string;
  before: Json<unknown> | null;
  after: Json<unknown> | null;
  request_id: string | null;
}

export interface GatewaySettingTable {
  key: string;
  value: Json<unknown>;
  version_no: ColumnType<number, number | undefined, number>;
  updated_at: ColumnType<Date, Date | string | undefined, Date | string>;
}

export interface TaskTable {
  id: string;
  kind: string;
  app_id: string;
  key_id: string;
  status: string;
  request: Json<unknown>;
  result: ColumnType<unknown, string | null | undefined, string | null>;
  result_status: number | null;
  error: ColumnType<unknown, string | null | undefined, string | null>;
  attempts: ColumnType<number, number | undefined, number>;
  lease_owner: string | null;
  lease_until: ColumnType<Date | null, Date | null | undefined, Date | null>;
  not_before: ColumnType<Date, Date | undefined, Date>;
  deadline: ColumnType<Date, Date, Date>;
  created_at: ColumnType<Date, Date | undefined, never>;
  updated_at: ColumnType<Date, Date | undefined, Date>;
  completed_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  alias: ColumnType<string | null, string | null | undefined, string | null>;
  channel: ColumnType<string | null, string | null | undefined, string | null>;
  upstream_id: ColumnType<string | null, string | null | undefined, string | null>;
  progress: ColumnType<number, number | undefined, number>;
  idempotency_key: ColumnType<string | null, string | null | undefined, string | null>;
  webhook_url: ColumnType<string | null, string | null | undefined, string | null>;
  cancel_requested_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  transitions: ColumnType<unknown, string | undefined, string>;
  billing: ColumnType<unknown, string | null | undefined, string | null>;
  billing_state: ColumnType<string, string | undefined, string>;
  polls: ColumnType<number, number | undefined, number>;
}

export interface PriceTable extends Versioned {
  id: Generated<string>;
  alias: string;
  channel: string | null;
  cost_input_per_mtok: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  cost_output_per_mtok: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  cost_cached_per_mtok: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  cost_per_request: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  cost_per_image: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  cost_per_video_second: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  cost_per_track: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  cost_per_mchar: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  cost_per_audio_second: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  cost_per_cache_hit: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  sale_input_per_mtok: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  sale_output_per_mtok: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  sale_cached_per_mtok: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  sale_per_request: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  sale_per_image: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  sale_per_video_second: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  sale_per_track: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  sale_per_mchar: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  sale_per_audio_second: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
  sale_per_cache_hit: ColumnType<bigint, bigint | number | string | undefined, bigint | number | string>;
}

export interface WebhookDeliveryTable {
  id: string;
  task_id: string;
  url: string;
  status: string;
  attempts: ColumnType<number, number | undefined, number>;
  last_status: number | null;
  last_error: string | null;
  next_at: ColumnType<Date, Date | undefined, Date>;
  lease_until: ColumnType<Date | null, Date | null | undefined, Date | null>;
  created_at: ColumnType<Date, Date | undefined, never>;
  delivered_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
}

export interface NotificationTargetTable {
  id: string;
  name: string;
  url: string;
  format: ColumnType<string, string | undefined, string>;
  /** Sealed (config/secrets.ts); '' = none. */
  secret: ColumnType<string, string | undefined, string>;
  events: ColumnType<unknown, string | undefined, string>;
  enabled: ColumnType<boolean, boolean | undefined, boolean>;
  rate_per_minute: ColumnType<number, number | undefined, number>;
  created_at: ColumnType<Date, Date | undefined, never>;
  updated_at: ColumnType<Date, Date | undefined, Date>;
}

/** BIGINT micro-units (or counters): read as bigint, written as bigint or its decimal string. */
type Micros = ColumnType<bigint, bigint | string | undefined, bigint | string>;

export interface LedgerAccountTable {
  id: Generated<bigint>;
  code: string;
  kind: string;
  app_id: string | null;
  channel_code: string | null;
  debits_must_not_exceed_credits: ColumnType<boolean, boolean | undefined, never>;
  credits_must_not_exceed_debits: ColumnType<boolean, boolean | undefined, never>;
  debits_pending: Micros;
  debits_posted: Micros;
  credits_pending: Micros;
  credits_posted: Micros;
  created_at: ColumnType<Date, Date | undefined, never>;
}

export interface LedgerJournalTable {
  id: Generated<bigint>;
  idem_key: string;
  kind: string;
  request_id: string | null;
  task_id: string | null;
  app_id: string | null;
  alias: string | null;
  channel: string | null;
  usage: ColumnType<unknown, string | null | undefined, never>;
  memo: string | null;
  pending_of: ColumnType<bigint | null, bigint | string | null | undefined, never>;
  /** holds: pending | posted | voided; every other kind: posted. The one column that ever changes. */
  state: ColumnType<string, string | undefined, string>;
  created_at: ColumnType<Date, Date | undefined, never>;
  /** When the billed request happened (the report's day); created_at is when the journal was written. */
  occurred_at: ColumnType<Date, Date | undefined, never>;
  /** The key of a sale (generated from usage.key_id): spend per key. */
  key_id: ColumnType<string | null, never, never>;
  /**
   * A journal's entries on its own row (0023), as parallel arrays: written by the journal writer's batches;
   * null when its entries are ledger_entry rows. Read through SQL (the ledger_posting view, or as the
   * ledger's readers do), not row by row.
   */
  entry_account: ColumnType<unknown[] | null, never, never>;
  entry_debit: ColumnType<unknown[] | null, never, never>;
  entry_credit: ColumnType<unknown[] | null, never, never>;
}

export interface LedgerEntryTable {
  id: Generated<bigint>;
  journal_id: ColumnType<bigint, bigint | string, never>;
  account_id: ColumnType<bigint, bigint | string, never>;
  debit: ColumnType<bigint, bigint | string | undefined, never>;
  credit: ColumnType<bigint, bigint | string | undefined, never>;
  pending: ColumnType<boolean, boolean | undefined, never>;
}

export interface Database {
  ledger_account: LedgerAccountTable;
  ledger_journal: LedgerJournalTable;
  ledger_entry: LedgerEntryTable;
  webhook_delivery: WebhookDeliveryTable;
  price: PriceTable;
  task: TaskTable;
  channel: ChannelTable;
  alias: AliasTable;
  app: AppTable;
  api_key: ApiKeyTable;
  token_group: TokenGroupTable;
  quota: QuotaTable;
  admin_token: AdminTokenTable;
  audit_log: AuditLogTable;
  gateway_setting: GatewaySettingTable;
  notification_target: NotificationTargetTable;
  request_log: RequestLogTable;
}

/** One data-plane request (observability/request-log.ts); partitioned by day on `at`. */
export interface RequestLogTable {
  id: string;
  at: ColumnType<Date, string, never>;
  app_id: string | null;
  key_id: string | null;
  alias: string | null;
  dialect: string;
  channel: string | null;
  upstream_model: string | null;
  stream: boolean;
  attempts: number;
  route: ColumnType<unknown, string, never>;
  status: number;
  outcome: string;
  error_code: string | null;
  tokens_in: number | null;
  tokens_out: number | null;
  cost_micros: ColumnType<bigint | null, string | null, never>;
  sale_micros: ColumnType<bigint | null, string | null, never>;
  latency_ms: number;
  ttfb_ms: number | null;
  cache_hit: boolean;
  aborted: boolean;
  instance: string;
}
