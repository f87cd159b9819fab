// contrib/grafana/peekd.json: a dashboard Grafana's "Import dashboard" takes as it is, whose
// queries name only metrics peekd registers (src/metrics.ts), with their labels; and
// contrib/prometheus/peekd-alerts.yml, whose rules do the same.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { metricsRegistry } from '../../src/metrics.ts';

const DASHBOARD = join(__dirname, '..', '..', 'contrib', 'grafana', 'peekd.json');
const ALERTS = join(__dirname, '..', '..', 'contrib', 'prometheus', 'peekd-alerts.yml');
const DS_UID = '${DS_PROMETHEUS}';

interface Target {
  expr?: string;
  refId?: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id?: number;
  type?: string;
  title?: string;
  gridPos?: { x: number; y: number; w: number; h: number };
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  panels?: Panel[];
}
interface Variable {
  name: string;
  type: string;
  datasource?: { type?: string; uid?: string };
  definition?: string;
  query?: string | { query?: string };
}
interface Dashboard {
  __inputs?: { name: string; type: string; pluginId: string }[];
  __requires?: { type: string; id: string; version?: string }[];
  uid?: string;
  title?: string;
  schemaVersion?: number;
  panels?: Panel[];
  templating?: { list: Variable[] };
  annotations?: { list: { datasource?: { type?: string; uid?: string }; expr?: string; builtIn?: number }[] };
}

const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;

/** Every panel, those inside rows included. */
function allPanels(list: Panel[] = dashboard.panels ?? []): Panel[] {
  return list.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}
const queryPanels = () => allPanels().filter((p) => p.type !== 'row');
const variableQuery = (v: Variable) => (typeof v.query === 'string' ? v.query : (v.query?.query ?? ''));

/** Every PromQL expression in the dashboard: panel targets, template variables, annotations. */
function expressions(): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  for (const p of queryPanels()) for (const t of p.targets ?? []) out.push({ where: `panel ${p.id} "${p.title}" ${t.refId}`, expr: t.expr ?? '' });
  for (const v of dashboard.templating?.list ?? []) if (v.type === 'query') out.push({ where: `variable ${v.name}`, expr: variableQuery(v) });
  for (const a of dashboard.annotations?.list ?? []) if (a.expr) out.push({ where: 'annotation', expr: a.expr });
  return out;
}

const HISTOGRAM_SUFFIX = /_(bucket|sum|count)$/;

/** The `expr` of every rule in the alerts file (one line, or a `|` block). */
function alertExpressions(): { where: string; expr: string }[] {
  const lines = readFileSync(ALERTS, 'utf8').split('\n');
  const out: { where: string; expr: string }[] = [];
  let alert = '';
  for (let i = 0; i < lines.length; i++) {
    const name = lines[i]!.match(/^\s*- alert: (\S+)/);
    if (name) alert = name[1]!;
    const m = lines[i]!.match(/^(\s*)expr: (.*)$/);
    if (!m) continue;
    if (m[2]!.trim() !== '|') {
      out.push({ where: `alert ${alert}`, expr: m[2]! });
      continue;
    }
    const block: string[] = [];
    while (i + 1 < lines.length && (lines[i + 1]!.trim() === '' || lines[i + 1]!.match(/^\s*/)![0].length > m[1]!.length)) block.push(lines[++i]!.trim());
    out.push({ where: `alert ${alert}`, expr: block.join(' ').trim() });
  }
  return out;
}

/** The label names a peekd metric (or a series of a histogram) has, besides Prometheus' `job` and `instance`. */
function labelsOf(name: string): string[] | undefined {
  const metric = metricsRegistry.getSingleMetric(name) ?? metricsRegistry.getSingleMetric(name.replace(HISTOGRAM_SUFFIX, ''));
  if (!metric) return undefined;
  const labels = [...((metric as unknown as { labelNames?: string[] }).labelNames ?? [])];
  if (name.endsWith('_bucket')) labels.push('le');
  return labels;
}

/**
 * Every label an expression names for a peekd metric that the metric does not have: in a
 * selector (`peekd_x{label="…"}`) and in a `by (…)` over it (the first metric after it).
 */
function unknownLabels(expr: string): string[] {
  const out: string[] = [];
  const known = (metric: string, label: string) => label === 'job' || label === 'instance' || (labelsOf(metric) ?? []).includes(label);
  for (const m of expr.matchAll(/\b(peekd_\w+)\{([^}]*)\}/g)) {
    for (const l of m[2]!.matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)) if (!known(m[1]!, l[1]!)) out.push(`${m[1]}{${l[1]}}`);
  }
  for (const m of expr.matchAll(/\bby \(([^)]*)\)/g)) {
    const next = expr.slice(m.index! + m[0].length).match(/\b((?:peekd|process|nodejs)_\w+)/);
    if (!next || !next[1]!.startsWith('peekd_')) continue;
    for (const label of m[1]!.split(',').map((x) => x.trim())) if (!known(next[1]!, label)) out.push(`by (${label}) over ${next[1]}`);
  }
  return out;
}

describe('contrib/grafana/peekd.json', () => {
  it('is import JSON: a DS_PROMETHEUS input, requirements, uid, title, schema version', () => {
    expect(dashboard.__inputs).toContainEqual(expect.objectContaining({ name: 'DS_PROMETHEUS', type: 'datasource', pluginId: 'prometheus' }));
    const required = (dashboard.__requires ?? []).map((r) => `${r.type}:${r.id}`);
    expect(required).toEqual(expect.arrayContaining(['grafana:grafana', 'datasource:prometheus']));
    // Every panel type used is required, so that Grafana can say what is missing.
    for (const type of new Set(queryPanels().map((p) => p.type))) expect(required).toContain(`panel:${type}`);
    expect(typeof dashboard.uid).toBe('string');
    expect(dashboard.uid!.length).toBeGreaterThan(0);
    expect(dashboard.uid!.length).toBeLessThanOrEqual(40); // Grafana's limit
    expect(dashboard.uid).toMatch(/^[a-zA-Z0-9_-]+$/);
    expect(dashboard.title).toBeTruthy();
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    // No datasource named by a concrete uid: the import maps ${DS_PROMETHEUS} to the user's.
    const raw = readFileSync(DASHBOARD, 'utf8');
    for (const m of raw.matchAll(/"uid":\s*"([^"]*)"/g)) expect([DS_UID, '-- Grafana --', dashboard.uid]).toContain(m[1]);
  });

  it('has panels with unique ids, places on the grid, and rows', () => {
    const panels = allPanels();
    expect(panels.length).toBeGreaterThan(10);
    const ids = panels.map((p) => p.id);
    for (const id of ids) expect(Number.isInteger(id)).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of panels) {
      expect(p.gridPos, `panel ${p.id}`).toBeDefined();
      expect(p.gridPos!.x + p.gridPos!.w, `panel ${p.id} fits in 24 columns`).toBeLessThanOrEqual(24);
      expect(p.title, `panel ${p.id} has a title`).toBeTruthy();
    }
    const rows = panels.filter((p) => p.type === 'row').map((p) => p.title);
    expect(rows).toEqual(expect.arrayContaining(['Commands', 'Log & projections', 'Peeks & actors', 'Sync', 'Federation', 'Cluster', 'Process']));
  });

  it('queries ${DS_PROMETHEUS} in every panel, target and variable, and every target has an expr', () => {
    for (const p of queryPanels()) {
      expect(p.datasource?.uid, `panel ${p.id} "${p.title}"`).toBe(DS_UID);
      expect(p.targets?.length, `panel ${p.id} "${p.title}" has targets`).toBeGreaterThan(0);
      const refIds = p.targets!.map((t) => t.refId);
      expect(new Set(refIds).size, `panel ${p.id} refIds unique`).toBe(refIds.length);
      for (const t of p.targets!) {
        expect(typeof t.expr === 'string' && t.expr.trim() !== '', `panel ${p.id} "${p.title}" ${t.refId} has an expr`).toBe(true);
        if (t.datasource) expect(t.datasource.uid).toBe(DS_UID);
      }
    }
    for (const v of dashboard.templating?.list ?? []) {
      if (v.type === 'query') expect(v.datasource?.uid, `variable ${v.name}`).toBe(DS_UID);
    }
    for (const a of dashboard.annotations?.list ?? []) {
      if (!a.builtIn) expect(a.datasource?.uid).toBe(DS_UID);
    }
  });

  it('has job and instance variables, from the process metrics, used by the queries', () => {
    const vars = dashboard.templating?.list ?? [];
    const instance = vars.find((v) => v.name === 'instance');
    expect(vars.find((v) => v.name === 'job')).toBeDefined();
    expect(variableQuery(instance!)).toMatch(/^label_values\(process_start_time_seconds\b.*,\s*instance\)$/);
    for (const { where, expr } of expressions()) {
      if (where.startsWith('panel')) expect(expr, where).toContain('instance=~"$instance"');
    }
  });

  it('uses histograms and counters the Prometheus way', () => {
    for (const { where, expr } of expressions()) {
      // A bucket is only ever read as a rate over a range…
      for (const m of expr.matchAll(/\b(\w+_bucket)\b/g)) {
        expect(expr, `${where}: ${m[1]} inside rate()`).toMatch(new RegExp(`\\brate\\(\\s*${m[1]}(\\{[^}]*\\})?\\[`));
      }
      // …and every quantile aggregates its buckets keeping `le`.
      for (const m of expr.matchAll(/histogram_quantile\(\s*([0-9.]+)\s*,\s*(?:sum|max) by \(([^)]*)\)\s*\(rate\(\s*(\w+)/g)) {
        expect(Number(m[1]), where).toBeGreaterThan(0);
        expect(Number(m[1]), where).toBeLessThan(1);
        expect(
          m[2]!.split(',').map((s) => s.trim()),
          where,
        ).toContain('le');
        expect(m[3], where).toMatch(/_bucket$/);
      }
      expect((expr.match(/histogram_quantile\(/g) ?? []).length, where).toBe((expr.match(/histogram_quantile\(\s*[0-9.]+\s*,\s*(?:sum|max) by \([^)]*\ble\b/g) ?? []).length);
      // rate() and increase() only over counters and histogram series.
      for (const m of expr.matchAll(/\b(?:rate|irate|increase)\(\s*(\w+)/g)) {
        expect(m[1], `${where}: rate of a counter`).toMatch(/(_total|_bucket|_sum|_count)$/);
      }
    }
  });

  it('names only peekd metrics that src/metrics.ts registers', async () => {
    const registered = new Map((await metricsRegistry.getMetricsAsJSON()).map((m) => [m.name, String(m.type)]));
    const referenced = new Set<string>();
    for (const { expr } of expressions()) for (const m of expr.matchAll(/\bpeekd_[a-zA-Z0-9_]+/g)) referenced.add(m[0]);
    expect(referenced.size).toBeGreaterThan(15);
    const missing: string[] = [];
    for (const name of referenced) {
      if (registered.has(name)) continue;
      const base = name.replace(HISTOGRAM_SUFFIX, '');
      if (base !== name && registered.get(base) === 'histogram') continue;
      missing.push(name);
    }
    expect(missing, `metrics the dashboard queries but src/metrics.ts does not register`).toEqual([]);
  });

  it('names only labels those metrics have', () => {
    const wrong = expressions().flatMap(({ where, expr }) => unknownLabels(expr).map((l) => `${where}: ${l}`));
    expect(wrong).toEqual([]);
  });

  it('counts projection lag and positions in log messages, as src/metrics.ts does, nowhere in events', () => {
    // The metrics' own words: stream sequences, log messages.
    expect(metricsRegistry.getSingleMetric('peekd_projection_lag')).toBeDefined();
    const help = (name: string) => (metricsRegistry.getSingleMetric(name) as unknown as { help: string }).help;
    expect(help('peekd_projection_lag')).toMatch(/log messages/i);
    expect(help('peekd_projection_position')).toMatch(/stream sequence/i);
    const lagPanels = queryPanels().filter((p) => (p.targets ?? []).some((t) => /peekd_projection_(lag|position)\b/.test(t.expr ?? '')));
    expect(lagPanels.length).toBeGreaterThan(0);
    for (const p of lagPanels) {
      const text = `${p.title} ${(p as { description?: string }).description ?? ''}`;
      expect(text, `panel ${p.id} "${p.title}"`).not.toMatch(/\bevents?\b/i);
      expect(text, `panel ${p.id} "${p.title}"`).toMatch(/messages|sequence/i);
    }
    expect(readFileSync(ALERTS, 'utf8')).not.toMatch(/\d+ events|\bevents behind|MAX_LAG events/);
  });
});

describe('contrib/prometheus/peekd-alerts.yml', () => {
  it('has an expression for every alert', () => {
    const alerts = [...readFileSync(ALERTS, 'utf8').matchAll(/^\s*- alert: (\S+)/gm)].map((m) => m[1]);
    const exprs = alertExpressions();
    expect(exprs.map((e) => e.where)).toEqual(alerts.map((a) => `alert ${a}`));
    for (const { where, expr } of exprs) expect(expr, where).toMatch(/\S/);
  });

  it('names only metrics src/metrics.ts registers, with their labels, and reads counters through rate() or increase()', () => {
    const problems: string[] = [];
    for (const { where, expr } of alertExpressions()) {
      for (const m of expr.matchAll(/\bpeekd_[a-zA-Z0-9_]+/g)) if (!labelsOf(m[0])) problems.push(`${where}: ${m[0]} is not registered`);
      problems.push(...unknownLabels(expr).map((l) => `${where}: ${l}`));
      for (const m of expr.matchAll(/\b(?:rate|irate|increase)\(\s*(\w+)/g)) if (!/(_total|_bucket|_sum|_count)$/.test(m[1]!)) problems.push(`${where}: rate of ${m[1]}`);
    }
    expect(problems).toEqual([]);
  });
});

describe('the metrics the dashboard reads', () => {
  let registered: Map<string, string>;
  beforeAll(async () => {
    registered = new Map((await metricsRegistry.getMetricsAsJSON()).map((m) => [m.name, String(m.type)]));
  });

  it('are histograms where the dashboard reads buckets', () => {
    const histograms = new Set<string>();
    for (const { expr } of expressions()) for (const m of expr.matchAll(/\b(peekd_\w+)_(?:bucket|sum|count)\b/g)) histograms.add(m[1]!);
    for (const name of histograms) expect(registered.get(name), name).toBe('histogram');
  });
});
