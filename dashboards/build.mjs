#!/usr/bin/env node
// Generates the Grafana dashboards in this folder (node dashboards/build.mjs [outDir]). Edit here, not the
// JSON. test/unit/dashboards.test.ts builds them into a temporary folder and compares with the files here.
import { mkdirSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ds = { type: 'prometheus', uid: '${DS_PROMETHEUS}' };
let id = 0;
function panel(title, exprs, { type = 'timeseries', unit = 'short', w = 12, h = 8 } = {}) {
  return {
    id: ++id,
    type,
    title,
    datasource: ds,
    fieldConfig: { defaults: { unit }, overrides: [] },
    options: {},
    gridPos: { h, w, x: 0, y: 0 },
    targets: exprs.map(([expr, legendFormat], i) => ({
      datasource: ds,
      expr,
      legendFormat,
      refId: String.fromCharCode(65 + i),
    })),
  };
}
function layout(panels) {
  let x = 0;
  let y = 0;
  for (const p of panels) {
    if (x + p.gridPos.w > 24) {
      x = 0;
      y += 8;
    }
    p.gridPos.x = x;
    p.gridPos.y = y;
    x += p.gridPos.w;
  }
  return panels;
}
/**
 * Template variables. Each filters the panels' queries by one label: the instance Prometheus scraped, and
 * the alias, app and channel labels Anima puts on its series. A query gets a variable's matcher only where
 * its metric carries that label (LABELS below); `instance` is on every scraped series. Multi-select with
 * "All" = `.*`, the classic query-variable JSON model:
 * https://grafana.com/docs/grafana/latest/dashboards/build-dashboards/view-dashboard-json-model
 */
const LABELS = {
  anima_requests_total: ['alias', 'channel', 'app'],
  anima_request_duration_seconds: ['alias', 'channel', 'app'],
  anima_request_ttfb_seconds: ['alias'],
  anima_response_cache_total: ['alias'],
  anima_upstream_attempts_total: ['channel'],
  anima_upstream_duration_seconds: ['channel'],
  anima_tokens_total: ['alias', 'channel'],
  anima_sale_micros_total: ['alias', 'channel', 'app'],
  anima_cost_micros_total: ['alias', 'channel', 'app'],
  anima_billing_uncollected_micros_total: ['app'],
  anima_breaker_state: ['channel'],
  anima_breaker_transitions_total: ['channel'],
  anima_channel_credential_out: ['channel'],
};
/** Where each variable's values come from: a series every instance exports from its start. */
const VAR_SOURCES = {
  instance: ['anima_dependency_up', 'Instance'],
  alias: ['anima_requests_total', 'Alias'],
  app: ['anima_requests_total', 'App'],
  channel: ['anima_breaker_state', 'Channel'],
};
function variable(name) {
  const [metric, label] = VAR_SOURCES[name];
  const query =
    name === 'instance'
      ? `label_values(${metric}, instance)`
      : `label_values(${metric}{instance=~"$instance"}, ${name})`;
  return {
    name,
    label,
    type: 'query',
    datasource: ds,
    query: { query, refId: `${name}-values` },
    definition: query,
    refresh: 2, // on time range change: a new alias or channel shows up without reloading
    includeAll: true,
    allValue: '.*',
    multi: true,
    current: { selected: true, text: ['All'], value: ['$__all'] },
    options: [],
    regex: '',
    sort: 1,
    hide: 0,
  };
}
/** The expression with a matcher for each of `vars` the metric carries, merged into its selector. */
export function filtered(expr, vars) {
  return expr.replace(
    /\b(anima_[a-z_]+?)(_bucket|_sum|_count)?\b(\{([^}]*)\})?/g,
    (m, base, suffix = '', _b, inner) => {
      const labels = ['instance', ...(LABELS[base] ?? [])];
      const add = vars.filter((v) => labels.includes(v)).map((v) => `${v}=~"$${v}"`);
      if (!add.length) return m;
      const all = [...(inner ? [inner] : []), ...add].join(', ');
      return `${base}${suffix}{${all}}`;
    },
  );
}
function dashboard(uid, title, panels, vars = ['instance']) {
  id = 0;
  const built = panels();
  for (const p of built) for (const t of p.targets) t.expr = filtered(t.expr, vars);
  return {
    __inputs: [
      {
        name: 'DS_PROMETHEUS',
        label: 'Prometheus',
        type: 'datasource',
        pluginId: 'prometheus',
        pluginName: 'Prometheus',
      },
    ],
    uid,
    title,
    tags: ['anima'],
    timezone: 'browser',
    schemaVersion: 39,
    version: 1,
    refresh: '10s',
    time: { from: 'now-1h', to: 'now' },
    templating: {
      list: [
        { name: 'DS_PROMETHEUS', type: 'datasource', query: 'prometheus', label: 'Prometheus' },
        ...vars.map(variable),
      ],
    },
    panels: layout(built),
  };
}
const q = (p, m, by = '') =>
  `histogram_quantile(${p}, sum by (le${by ? ', ' + by : ''}) (rate(${m}_bucket[5m])))`;

/** The dashboards whose metrics carry alias, app and channel labels filter by all four. */
const ALL_VARS = ['instance', 'alias', 'app', 'channel'];

const dashboards = {
  'anima-overview': dashboard(
    'anima-overview',
    'Anima / Overview',
    () => [
      panel('Requests by outcome', [['sum by (outcome) (rate(anima_requests_total[5m]))', '{{outcome}}']], {
        unit: 'reqps',
      }),
      panel(
        'Error ratio (5xx)',
        [
          [
            'sum(rate(anima_requests_total{status_class="5xx"}[5m])) / sum(rate(anima_requests_total[5m]))',
            '5xx',
          ],
        ],
        { unit: 'percentunit' },
      ),
      panel(
        'Latency p50 / p99',
        [
          [q(0.5, 'anima_request_duration_seconds'), 'p50'],
          [q(0.99, 'anima_request_duration_seconds'), 'p99'],
        ],
        { unit: 's' },
      ),
      panel('Time to first byte p99', [[q(0.99, 'anima_request_ttfb_seconds', 'alias'), '{{alias}}']], {
        unit: 's',
      }),
      // One line "other" when ANIMA_METRICS_APP_LABEL=off folds the apps (README "Operations").
      panel('Latency p99 by app', [[q(0.99, 'anima_request_duration_seconds', 'app'), '{{app}}']], {
        unit: 's',
      }),
      panel(
        'Gateway overhead p50 / p99',
        [
          [q(0.5, 'anima_gateway_overhead_seconds'), 'p50'],
          [q(0.99, 'anima_gateway_overhead_seconds'), 'p99'],
        ],
        { unit: 's' },
      ),
      panel('Tokens per second', [['sum by (direction) (rate(anima_tokens_total[5m]))', '{{direction}}']]),
      panel('Requests by dialect', [['sum by (dialect) (rate(anima_requests_total[5m]))', '{{dialect}}']], {
        unit: 'reqps',
      }),
      panel(
        'Response cache hit ratio by alias',
        [
          [
            'sum by (alias) (rate(anima_response_cache_total{result="hit"}[5m])) / sum by (alias) (rate(anima_response_cache_total[5m]))',
            '{{alias}}',
          ],
        ],
        { unit: 'percentunit' },
      ),
      panel('Dependencies up', [['anima_dependency_up', '{{dependency}}']], { type: 'stat', w: 8 }),
      panel('Degraded mode', [['max(anima_degraded)', 'degraded']], { type: 'stat', w: 8 }),
      panel('Kill switch', [['max(anima_kill_switch)', 'kill switch']], { type: 'stat', w: 8 }),
    ],
    ALL_VARS,
  ),
  'anima-money': dashboard(
    'anima-money',
    'Anima / Money (priced usage)',
    () => [
      panel('Sale vs upstream cost per hour (micro-units)', [
        ['sum(increase(anima_sale_micros_total[1h]))', 'sale'],
        ['sum(increase(anima_cost_micros_total[1h]))', 'cost'],
      ]),
      panel('Spread per hour by alias', [
        [
          'sum by (alias) (increase(anima_sale_micros_total[1h])) - sum by (alias) (increase(anima_cost_micros_total[1h]))',
          '{{alias}}',
        ],
      ]),
      panel('Spread per hour by channel', [
        [
          'sum by (channel) (increase(anima_sale_micros_total[1h])) - sum by (channel) (increase(anima_cost_micros_total[1h]))',
          '{{channel}}',
        ],
      ]),
      panel('Sale per hour by app', [['sum by (app) (increase(anima_sale_micros_total[1h]))', '{{app}}']]),
      panel('Journals written per second', [
        ['sum(rate(anima_billing_journals_written_total[5m]))', 'journals/s'],
      ]),
      panel('Unwritten billing records (backlog)', [['sum(anima_billing_backlog)', 'backlog']]),
      panel(
        'Oldest settled request not yet in the ledger (alert: > 60 s)',
        [['max by (instance) (anima_billing_oldest_unjournaled_seconds)', '{{instance}}']],
        { unit: 's' },
      ),
      panel('Redis data-loss events and records sent again', [
        ['sum by (reason) (increase(anima_redis_data_loss_total[1h]))', 'data loss: {{reason}}'],
        ['sum(increase(anima_billing_resent_total[1h]))', 'records resent'],
      ]),
      panel('Journal batch commit p99', [[q(0.99, 'anima_billing_commit_seconds'), 'p99']], { unit: 's' }),
      panel('Journal commit failures and direct writes (Redis down)', [
        ['sum(increase(anima_billing_commit_failures_total[5m]))', 'commit failures'],
        ['sum(increase(anima_billing_spilled_total[5m]))', 'spilled'],
      ]),
      panel('Billing refusals (402 / 503)', [
        ['sum by (reason) (increase(anima_billing_refusals_total[5m]))', '{{reason}}'],
      ]),
      panel('Uncollected (bad debt) per hour by app', [
        ['sum by (app) (increase(anima_billing_uncollected_micros_total[1h]))', '{{app}}'],
      ]),
    ],
    ALL_VARS,
  ),
  'anima-channels': dashboard(
    'anima-channels',
    'Anima / Channels',
    () => [
      panel(
        'Breaker state (0 closed, 1 half-open, 2 open, 3 forced open)',
        [['max by (channel) (anima_breaker_state)', '{{channel}}']],
        { w: 24 },
      ),
      panel('Breaker transitions', [
        ['sum by (channel, to) (increase(anima_breaker_transitions_total[5m]))', '{{channel}} → {{to}}'],
      ]),
      panel(
        'Upstream attempts by result',
        [['sum by (channel, result) (rate(anima_upstream_attempts_total[5m]))', '{{channel}} {{result}}']],
        { unit: 'reqps' },
      ),
      panel(
        'Upstream latency p99',
        [[q(0.99, 'anima_upstream_duration_seconds', 'channel'), '{{channel}}']],
        {
          unit: 's',
        },
      ),
      // The whole request (receipt to last byte) by the channel that served it; upstream latency above is one attempt.
      panel(
        'Request latency p99 by serving channel',
        [[q(0.99, 'anima_request_duration_seconds', 'channel'), '{{channel}}']],
        { unit: 's' },
      ),
      panel(
        'Fallback share',
        [
          [
            'sum(rate(anima_requests_total{outcome="fallback"}[5m])) / sum(rate(anima_requests_total[5m]))',
            'fallback',
          ],
        ],
        { unit: 'percentunit' },
      ),
    ],
    ALL_VARS,
  ),
  'anima-quotas': dashboard('anima-quotas', 'Anima / Quotas and queues', () => [
    panel(
      'Rejections by limit',
      [['sum by (limit, mode) (rate(anima_quota_rejections_total[5m]))', '{{limit}} ({{mode}})']],
      { unit: 'reqps' },
    ),
    panel('Queued by mode', [['sum by (mode) (rate(anima_queued_total[5m]))', '{{mode}}']], {
      unit: 'reqps',
    }),
    panel('Waiting now', [['sum(anima_queue_waiting)', 'waiting']]),
    panel(
      'Wait time p50 / p99',
      [
        [q(0.5, 'anima_queue_wait_seconds', 'outcome'), 'p50 {{outcome}}'],
        [q(0.99, 'anima_queue_wait_seconds', 'outcome'), 'p99 {{outcome}}'],
      ],
      { unit: 's' },
    ),
    panel(
      'Admissions from slices vs exact (Redis script)',
      [['sum by (path) (rate(anima_quota_slice_admissions_total[5m]))', '{{path}}']],
      { unit: 'reqps' },
    ),
    panel('Slices held and slice calls', [
      ['sum(anima_quota_slices_held)', 'held'],
      ['sum(rate(anima_quota_slice_calls_total[5m]))', 'calls/s'],
    ]),
    panel(
      'Admissions on local share (Redis down)',
      [['sum(rate(anima_quota_degraded_admissions_total[5m]))', 'degraded']],
      { unit: 'reqps' },
    ),
  ]),
  'anima-tasks': dashboard('anima-tasks', 'Anima / Async tasks', () => [
    panel(
      'Task transitions by state',
      [['sum by (kind, state) (rate(anima_tasks_total[5m]))', '{{kind}} {{state}}']],
      { w: 24 },
    ),
    panel('Webhook deliveries by result', [
      ['sum by (result) (rate(anima_webhook_deliveries_total[5m]))', '{{result}}'],
    ]),
    panel('Queued vs finished (1h)', [['sum by (state) (increase(anima_tasks_total[1h]))', '{{state}}']], {
      type: 'stat',
      w: 24,
    }),
  ]),
  'anima-control-plane': dashboard('anima-control-plane', 'Anima / Control plane and caches', () => [
    panel('Invalidations received', [
      ['sum by (table) (rate(anima_config_invalidations_total[5m]))', '{{table}}'],
    ]),
    panel(
      'Invalidation propagation p99',
      [[q(0.99, 'anima_config_invalidation_delay_seconds', 'table'), '{{table}}']],
      { unit: 's' },
    ),
    panel('Config reloads by source', [
      ['sum by (table, source) (rate(anima_config_reloads_total[5m]))', '{{table}} from {{source}}'],
    ]),
    panel('Key lookups by cache layer', [
      ['sum by (layer, result) (rate(anima_cache_lookups_total[5m]))', '{{layer}} {{result}}'],
    ]),
  ]),
};

const here = fileURLToPath(new URL('.', import.meta.url));
const out = process.argv[2] ? resolve(process.argv[2]) : here;
mkdirSync(out, { recursive: true });
for (const [name, d] of Object.entries(dashboards))
  writeFileSync(resolve(out, `${name}.json`), JSON.stringify(d, null, 2) + '\n');
console.log(`wrote ${Object.keys(dashboards).length} dashboards`);
