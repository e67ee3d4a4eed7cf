/**
 * The gateway's runtime view of configuration: typed, defaulted, immutable objects built from DB rows.
 * The data plane reads only these (from the in-process snapshot), never the database.
 */
/**
 * The provider kinds. Each has exactly one declaration in providers/registry.ts (the compiler holds the
 * table to this union); everything else (validation, OpenAPI, the console) reads the registry.
 */
/** OpenAI-compatible vendors, each a declaration in providers/vendors.ts. */
export const VENDOR_KINDS = [
  'mistral',
  'groq',
  'deepseek',
  'xai',
  'together',
  'fireworks',
  'openrouter',
  'perplexity',
  'cohere',
  'ollama',
  'vllm',
  'lmstudio',
] as const;
export type VendorKind = (typeof VENDOR_KINDS)[number];

export type ProviderKind =
  | 'openai'
  | 'anthropic'
  | 'jobs'
  | 'gemini'
  | 'openai_compatible'
  | 'azure'
  | 'vertex'
  | 'bedrock'
  | VendorKind;

/** A Vertex AI channel's addressing; each unset field has a default (providers/vertex/exchange.ts). */
export interface VertexSettings {
  project?: string;
  location?: string;
  /** Which publisher serves a model whose name doesn't say (default: claude-* Anthropic, else Google). */
  publisher?: 'google' | 'anthropic';
}

export interface Timeouts {
  connectMs: number;
  /** Until the upstream's response headers arrive. */
  firstByteMs: number;
  /** Longest silence between two body chunks (streams). */
  idleMs: number;
  /** One attempt, start to last byte. */
  totalMs: number;
}

export interface BreakerSettings {
  /** Sliding window length for failure/slow-call rates. */
  windowMs: number;
  /** No decision before this many calls in the window. */
  minCalls: number;
  /** Open when failures / calls >= this (0..1). */
  failureRate: number;
  /** A call slower than this (to first byte) is slow. */
  slowCallMs: number;
  /** Open when slow / calls >= this (0..1); 1 with slowCallMs large effectively disables it. */
  slowCallRate: number;
  /** How long an opened breaker refuses traffic before half-opening. */
  openMs: number;
  /** Probe calls let through (across all instances) while half-open. */
  halfOpenProbes: number;
  /** A probe that has not finished by then is a failure and reopens the breaker. */
  probeTimeoutMs: number;
}

export interface Channel {
  id: string;
  code: string;
  name: string;
  provider: ProviderKind;
  baseUrl: string;
  /** Upstream secret. Never logged, never rendered. */
  credential: string;
  enabled: boolean;
  weight: number;
  timeouts: Timeouts;
  breaker: BreakerSettings;
  headers: Record<string, string>;
  maxConnections: number;
  /** OpenAI channels: serve /v1/responses with the upstream's own Responses API (else through chat). */
  nativeResponses: boolean;
  /** Azure deployments channels: the `api-version` sent (unset: the GA version the provider knows). */
  apiVersion?: string;
  /** Vertex AI channels: the project and location addressed, and the publisher (providers/vertex/). */
  vertex?: VertexSettings;
  versionNo: number;
  effectiveFrom: number;
  effectiveTo: number | null;
}

export interface ChainTarget {
  channel: string;
  model: string;
  weight: number;
}

export interface Alias {
  id: string;
  name: string;
  description: string;
  enabled: boolean;
  /** Tiers tried in order; inside a tier, targets are load-balanced by weight. */
  tiers: ChainTarget[][];
  maxAttempts: number;
  deadlineMs: number;
  /** Exact-match response cache: how long an answer is kept, in seconds (0 = off unless a request opts in). */
  cacheTtlS: number;
  versionNo: number;
  effectiveFrom: number;
  effectiveTo: number | null;
}

export interface App {
  id: string;
  name: string;
  enabled: boolean;
  billing: 'prepaid' | 'postpaid';
  /** Markup over catalogue list prices, in basis points (15000 = x1.5); null = the default markup. */
  saleMarkupBp: bigint | null;
  versionNo: number;
  effectiveFrom: number;
  effectiveTo: number | null;
}

export interface ApiKey {
  id: string;
  appId: string;
  name: string;
  keyHash: string;
  keyPrefix: string;
  enabled: boolean;
  /** null = every alias. */
  allowedAliases: ReadonlySet<string> | null;
  /** What happens when a quota limit is hit: 429 at once, wait in the queue, or run later as a task. */
  queueMode: 'REJECT' | 'WAIT' | 'ASYNC';
  waitTimeoutMs: number;
  maxQueue: number;
  tokenGroupId: string | null;
  /** Where ASYNC task results are delivered (signed with webhookSecret). */
  webhookUrl: string | null;
  webhookSecret: string | null;
  versionNo: number;
  effectiveFrom: number;
  effectiveTo: number | null;
}

export interface Quota {
  id: string;
  scope: 'key' | 'app' | 'token_group';
  scopeId: string;
  maxConcurrency: number;
  qps: number;
  qpsBurst: number;
  tokensPerMinute: number;
  tokensPerDay: number;
  costPerDay: number;
  costPerMonth: number;
  versionNo: number;
  effectiveFrom: number;
  effectiveTo: number | null;
}

export interface TokenGroup {
  id: string;
  name: string;
  priceMultiplierPpm: bigint;
  enabled: boolean;
  versionNo: number;
  effectiveFrom: number;
  effectiveTo: number | null;
}

export const DEFAULT_TIMEOUTS: Timeouts = {
  connectMs: 5_000,
  firstByteMs: 60_000,
  idleMs: 30_000,
  totalMs: 600_000,
};

export const DEFAULT_BREAKER: BreakerSettings = {
  windowMs: 30_000,
  minCalls: 10,
  failureRate: 0.5,
  slowCallMs: 30_000,
  slowCallRate: 1,
  openMs: 30_000,
  halfOpenProbes: 1,
  probeTimeoutMs: 30_000,
};

/** A row applies at `now` when effective_from <= now < effective_to. */
export function isEffective(
  row: { effectiveFrom: number; effectiveTo: number | null },
  now: number,
): boolean {
  return row.effectiveFrom <= now && (row.effectiveTo === null || now < row.effectiveTo);
}

/** Of several versions of one named row, the one in force at `now` (latest effective_from wins). */
export function pickEffective<T extends { effectiveFrom: number; effectiveTo: number | null }>(
  versions: readonly T[] | undefined,
  now: number,
): T | undefined {
  if (!versions) return undefined;
  let best: T | undefined;
  for (const v of versions) {
    if (isEffective(v, now) && (!best || v.effectiveFrom > best.effectiveFrom)) best = v;
  }
  return best;
}
