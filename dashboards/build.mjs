#!/usr/bin/env node
// Generates the Grafana dashboards in this folder (node dashboards/build.mjs). Edit here, not the JSON.
import { writeFileSync } from 'node:fs';

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
function dashboard(uid, title, panels) {
  id = 0;
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
      list: [{ name: 'DS_PROMETHEUS', type: 'datasource', query: 'prometheus', label: 'Prometheus' }],
    },
    panels: layout(panels()),
  };
}
const q = (p, m, by = '') =>
  `histogram_quantile(${p}, sum by (le${by ? ', ' + by : ''}) (rate(${m}_bucket[5m])))`;

const dashboards = {
  'anima-overview': dashboard('anima-overview', 'Anima / Overview', () => [
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
  ]),
  'anima-money': dashboard('anima-money', 'Anima / Money (priced usage)', () => [
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
  ]),
  'anima-channels': dashboard('anima-channels', 'Anima / Channels', () => [
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
    panel('Upstream latency p99', [[q(0.99, 'anima_upstream_duration_seconds', 'channel'), '{{channel}}']], {
      unit: 's',
    }),
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
  ]),
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

for (const [name, d] of Object.entries(dashboards))
  writeFileSync(new URL(`./${name}.json`, import.meta.url), JSON.stringify(d, null, 2) + '\n');
console.log(`wrote ${Object.keys(dashboards).length} dashboards`);
