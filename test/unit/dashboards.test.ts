/**
 * The Grafana dashboards: each file parses and is what dashboards/build.mjs generates (edit the builder,
 * not the JSON); every template variable is a query variable over a real label and is used by at least
 * one panel query; no query names a variable that isn't defined. (Every metric they query exists in a
 * scrape: test/integration/observability.test.ts.)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

interface Variable {
  name: string;
  type: string;
  query?: string | { query: string };
  includeAll?: boolean;
  multi?: boolean;
  allValue?: string;
}
interface Dashboard {
  uid: string;
  title: string;
  templating: { list: Variable[] };
  panels: Array<{ title: string; targets: Array<{ expr: string }> }>;
}

const files = readdirSync('dashboards').filter((f) => f.endsWith('.json'));
const load = (f: string) => JSON.parse(readFileSync(join('dashboards', f), 'utf8')) as Dashboard;

describe('Grafana dashboards', () => {
  it('are the builder’s output, file for file', () => {
    const out = mkdtempSync(join(tmpdir(), 'anima-dashboards-'));
    try {
      execFileSync(process.execPath, ['dashboards/build.mjs', out], { stdio: 'pipe' });
      const built = readdirSync(out).filter((f) => f.endsWith('.json'));
      expect(built.sort()).toEqual([...files].sort());
      for (const f of built)
        expect(readFileSync(join('dashboards', f), 'utf8'), `${f}: run node dashboards/build.mjs`).toBe(
          readFileSync(join(out, f), 'utf8'),
        );
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it('every dashboard parses, filters by instance, and uses every variable it defines', () => {
    expect(files.length).toBeGreaterThanOrEqual(6);
    const seen = new Set<string>();
    for (const f of files) {
      const d = load(f);
      const vars = d.templating.list.filter((v) => v.type === 'query');
      const names = vars.map((v) => v.name);
      for (const n of names) seen.add(n);
      expect(names, f).toContain('instance');
      const exprs = d.panels.flatMap((p) => p.targets.map((t) => t.expr));
      expect(exprs.length, f).toBeGreaterThan(0);
      for (const v of vars) {
        const q = typeof v.query === 'string' ? v.query : v.query?.query;
        expect(q, `${f} $${v.name}`).toMatch(
          new RegExp(`^label_values\\(anima_[a-z_]+(\\{[^}]*\\})?, ${v.name}\\)$`),
        );
        expect(v.includeAll && v.multi, `${f} $${v.name}`).toBe(true);
        expect(v.allValue).toBe('.*');
        // Used as a matcher on the label of the same name, in at least one panel query.
        const used = exprs.some((e) => e.includes(`${v.name}=~"$${v.name}"`));
        expect(used, `${f}: $${v.name} is defined but no panel query uses it`).toBe(true);
      }
      // Every $variable a query names is defined ($__ names are Grafana's own).
      for (const e of exprs)
        for (const m of e.matchAll(/\$(\w+)/g))
          if (!m[1]!.startsWith('__')) expect(names, `${f}: ${e}`).toContain(m[1]);
      // The instance filter reaches every panel: a chosen instance narrows the whole dashboard.
      for (const p of d.panels)
        for (const t of p.targets) expect(t.expr, `${f} / ${p.title}`).toContain('instance=~"$instance"');
    }
    // Across the set: instance, alias, app and channel are all offered somewhere.
    for (const n of ['instance', 'alias', 'app', 'channel']) expect(seen).toContain(n);
  });
});
