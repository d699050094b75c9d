/**
 * How a person looks at a simulation: a self-contained SVG (grouped bars, one panel per
 * metric, one group per scenario, one bar per policy) and a compact text table.
 */
import type { PolicyName, PolicyResult, SimReport } from "./sim-options.js";

const COLORS: Record<PolicyName, string> = {
  ladder: "#0072B2",
  "any-free": "#E69F00",
  pinned: "#009E73",
};

interface Metric {
  readonly title: string;
  readonly hint: string;
  readonly value: (r: PolicyResult) => number;
  /** A bar's value label. */
  readonly label: (v: number) => string;
  /** An axis tick's label. */
  readonly tick: (v: number) => string;
  /** The top of the axis, when fixed (shares: 100 %). */
  readonly top?: number;
}

const METRICS: readonly Metric[] = [
  {
    title: "Follow-ups placed with zero reload",
    hint: "share, higher is better",
    value: (r) => r.followUps.zeroReloadShare * 100,
    label: (v) => `${v.toFixed(1)}%`,
    tick: (v) => `${Math.round(v)}%`,
    top: 100,
  },
  {
    title: "p95 wait, submit → turn starts",
    hint: "seconds, lower is better",
    value: (r) => r.waitMs.p95 / 1000,
    label: (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(1)),
    tick: (v) => String(Math.round(v * 10) / 10),
  },
  {
    title: "Reloads (state restores)",
    hint: "count, lower is better",
    value: (r) => r.reloads.count,
    label: (v) => String(Math.round(v)),
    tick: (v) => String(Math.round(v * 100) / 100),
  },
];

const W = 960;
const H = 440;
const PLOT_TOP = 124;
const PLOT_BOTTOM = 352;

const esc = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const num = (x: number) => String(Math.round(x * 10) / 10);

/** The least of 1, 1.2, 1.6, 2, 4, 6, 8 × 10^k at or above `x`: quarters of it are round too. */
function niceCeil(x: number): number {
  if (x <= 0) return 1;
  const k = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 1.2, 1.6, 2, 4, 6, 8]) if (m * k >= x - 1e-9) return m * k;
  return 10 * k;
}

function text(x: number, y: number, s: string, attrs = ""): string {
  return `<text x="${num(x)}" y="${num(y)}" ${attrs}>${esc(s)}</text>`;
}

const hoursOf = (r: SimReport | undefined) =>
  r ? Math.round((r.options.horizonMs / 3600_000) * 10) / 10 : 0;

/** A short description of a scenario's shape. */
export function describeScenario(r: SimReport): string {
  const o = r.options;
  return `${o.users} users, ${o.containers} containers, ${hoursOf(r)} h, seed ${o.seed}`;
}

/** The SVG chart of one report or several (one bar group per report). */
export function renderChart(input: SimReport | readonly SimReport[]): string {
  const reports: readonly SimReport[] = Array.isArray(input) ? input : [input as SimReport];
  const policies = [...new Set(reports.flatMap((r) => r.results.map((x) => x.policy)))];
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">`,
    `<title>clawfleet placement simulator: ${esc(policies.join(", "))}</title>`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    text(20, 30, "clawfleet placement simulator", 'font-size="18" font-weight="bold"'),
    text(
      20,
      50,
      `The same seeded chat workload for every policy (seed ${[...new Set(reports.map((r) => r.options.seed))].join(", ")}, ${hoursOf(reports[0])} h of arrivals), on simulated containers and a simulated clock`,
      'font-size="12" fill="#444"',
    ),
  ];
  let lx = 20;
  for (const p of policies) {
    out.push(`<rect x="${lx}" y="64" width="12" height="12" fill="${COLORS[p]}"/>`);
    out.push(text(lx + 17, 75, p, 'font-size="12"'));
    lx += 30 + p.length * 8;
  }
  const panelW = (W - 40) / METRICS.length;
  METRICS.forEach((metric, i) => {
    out.push(...panel(metric, 20 + i * panelW, panelW - 16, reports, policies));
  });
  out.push(
    text(
      20,
      H - 12,
      "wait: from submit until the agent starts the turn (includes queueing, container start and state restore)",
      'font-size="11" fill="#666"',
    ),
  );
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

function panel(
  metric: Metric,
  x0: number,
  width: number,
  reports: readonly SimReport[],
  policies: readonly PolicyName[],
): string[] {
  const out: string[] = [];
  const axisX = x0 + 44;
  const plotW = width - 48;
  const values = reports.flatMap((r) => r.results.map(metric.value));
  const top = metric.top ?? niceCeil(Math.max(0, ...values) * 1.1);
  const y = (v: number) => PLOT_BOTTOM - (v / top) * (PLOT_BOTTOM - PLOT_TOP);
  out.push(text(x0, 100, metric.title, 'font-size="13" font-weight="bold"'));
  out.push(text(x0, 114, metric.hint, 'font-size="11" fill="#666"'));
  for (let k = 0; k <= 4; k++) {
    const v = (top * k) / 4;
    out.push(
      `<line x1="${num(axisX)}" x2="${num(axisX + plotW)}" y1="${num(y(v))}" y2="${num(y(v))}" stroke="#e3e3e3"/>`,
    );
    out.push(
      text(axisX - 4, y(v) + 4, metric.tick(v), 'font-size="10" text-anchor="end" fill="#555"'),
    );
  }
  out.push(
    `<line x1="${num(axisX)}" x2="${num(axisX)}" y1="${PLOT_TOP}" y2="${PLOT_BOTTOM}" stroke="#999"/>`,
  );
  out.push(
    `<line x1="${num(axisX)}" x2="${num(axisX + plotW)}" y1="${PLOT_BOTTOM}" y2="${PLOT_BOTTOM}" stroke="#999"/>`,
  );
  const groupW = plotW / reports.length;
  reports.forEach((r, g) => {
    const barW = Math.min(34, (groupW * 0.8) / policies.length);
    const start = axisX + g * groupW + (groupW - barW * policies.length) / 2;
    policies.forEach((p, b) => {
      const res = r.results.find((x) => x.policy === p);
      if (!res) return;
      const v = metric.value(res);
      const bx = start + b * barW;
      const h = PLOT_BOTTOM - y(v);
      out.push(
        `<rect x="${num(bx + 1)}" y="${num(y(v))}" width="${num(barW - 2)}" height="${num(h)}" fill="${COLORS[p]}"><title>${esc(`${r.scenario} · ${p}: ${metric.label(v)}`)}</title></rect>`,
      );
      out.push(
        text(bx + barW / 2, y(v) - 4, metric.label(v), 'font-size="10" text-anchor="middle"'),
      );
    });
    const cx = axisX + g * groupW + groupW / 2;
    out.push(text(cx, PLOT_BOTTOM + 16, r.scenario, 'font-size="12" text-anchor="middle"'));
    out.push(
      text(
        cx,
        PLOT_BOTTOM + 30,
        `${r.options.users} users / ${r.options.containers} ctrs`,
        'font-size="10" text-anchor="middle" fill="#666"',
      ),
    );
  });
  return out;
}

const secs = (ms: number) => `${(ms / 1000).toFixed(1)}s`;
const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

/** A compact table for terminals: one block per report, one line per policy. */
export function renderTable(input: SimReport | readonly SimReport[]): string {
  const reports: readonly SimReport[] = Array.isArray(input) ? input : [input as SimReport];
  const head = [
    "policy",
    "0-reload",
    "reloads",
    "restore",
    "wait p50",
    "p95",
    "p99",
    "max",
    "fail",
    "peak q",
    "util",
  ];
  const lines: string[] = [];
  for (const r of reports) {
    const w = r.workload;
    lines.push(
      `${r.scenario}: ${describeScenario(r)}; ${w.messages} messages (${w.followUps} follow-ups), mean state ${w.meanStateMB} MB`,
    );
    const rows = r.results.map((x) => [
      x.policy,
      pct(x.followUps.zeroReloadShare),
      String(x.reloads.count),
      secs(x.reloads.totalMs),
      secs(x.waitMs.p50),
      secs(x.waitMs.p95),
      secs(x.waitMs.p99),
      secs(x.waitMs.max),
      String(x.failures),
      String(x.queueDepth.peak),
      pct(x.utilisation.busy),
    ]);
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
    const fmt = (row: readonly string[]) =>
      row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
    lines.push(`  ${fmt(head)}`);
    for (const row of rows) lines.push(`  ${fmt(row)}`);
  }
  return `${lines.join("\n")}\n`;
}
