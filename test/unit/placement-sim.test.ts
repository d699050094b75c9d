import { describe, expect, it } from "vitest";
import {
  generateWorkload,
  POLICY_NAMES,
  type PolicyName,
  type PolicyResult,
  renderChart,
  renderTable,
  resolveSimOptions,
  runSimulation,
  type SimOptions,
  type SimReport,
  type TaskTrace,
} from "../../src/sim/index.js";

const HOUR = 3600_000;

/** Few users, plenty of containers: everything should finish, mostly warm. */
const ROOMY: SimOptions = {
  name: "roomy",
  seed: 3,
  users: 12,
  containers: 8,
  horizonMs: 2 * HOUR,
  rampMs: 10 * 60_000,
  trace: true,
};

/** Many users per container: queues form. */
const LOADED: SimOptions = {
  name: "loaded",
  seed: 5,
  users: 30,
  containers: 4,
  horizonMs: 1.5 * HOUR,
  rampMs: HOUR / 2,
};

/** Each scenario runs once and is shared by the tests that read it. */
function once<T>(fn: () => Promise<T>): () => Promise<T> {
  let p: Promise<T> | null = null;
  return () => {
    p ??= fn();
    return p;
  };
}
const roomy = once(() => runSimulation(ROOMY));
const loaded = once(() => runSimulation(LOADED));

const result = (r: SimReport, p: PolicyName): PolicyResult => {
  const x = r.results.find((y) => y.policy === p);
  if (!x) throw new Error(`no result for ${p}`);
  return x;
};

/** Start tags, end tags and self-closing tags balance; every attribute is quoted. */
function assertWellFormedXml(svg: string): void {
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g)) {
    const [, close, name, , selfClose] = m;
    if (selfClose) continue;
    if (close) expect(stack.pop()).toBe(name);
    else stack.push(name!);
  }
  expect(stack).toEqual([]);
  // Every `<` opens one of the tags matched above; `&` only starts an entity.
  const tags = svg.match(/<[^>]*>/g) ?? [];
  const wellFormed = tags.filter((t) =>
    /^<\/?[A-Za-z][\w:-]*(\s+[\w:-]+="[^"<]*")*\s*\/?>$/.test(t),
  );
  expect(wellFormed.length).toBe(tags.length);
  expect(svg.replace(/<[^>]*>/g, "")).not.toMatch(/[<>]|&(?!amp;|lt;|gt;|quot;)/);
}

describe("placement simulator", () => {
  it("validates its options and applies documented defaults", () => {
    const o = resolveSimOptions();
    expect(o).toMatchObject({ users: 100, containers: 10, minIdle: 1, reservedWindowMs: 60_000 });
    expect(o.policies).toEqual(POLICY_NAMES);
    expect(() => resolveSimOptions({ containers: 2, minIdle: 3 })).toThrow(/minIdle/);
    expect(() => resolveSimOptions({ users: 0 })).toThrow(/invalid sim options/);
  });

  it("draws the same workload from the same seed, another from another seed", () => {
    const a = generateWorkload(resolveSimOptions(ROOMY));
    const b = generateWorkload(resolveSimOptions(ROOMY));
    const c = generateWorkload(resolveSimOptions({ ...ROOMY, seed: 4 }));
    expect(b).toEqual(a);
    expect(c.messages).not.toEqual(a.messages);
    expect(a.sessions).toHaveLength(12);
    // Every user starts with a first message; messages are in submit order.
    expect(a.messages.filter((m) => m.index === 0)).toHaveLength(12);
    for (let i = 1; i < a.messages.length; i++)
      expect(a.messages[i]!.at).toBeGreaterThanOrEqual(a.messages[i - 1]!.at);
  });

  it("is deterministic: the same options give the same report, byte for byte", async () => {
    const a = await roomy();
    const b = await runSimulation(ROOMY);
    expect(JSON.stringify(b)).toBe(JSON.stringify(a));
    const c = await runSimulation({ ...ROOMY, seed: 4, trace: false, policies: ["ladder"] });
    expect(JSON.stringify(c.results[0])).not.toBe(JSON.stringify(a.results[0]));
  });

  it("finishes every task of a roomy scenario, one task per session at a time, in order", async () => {
    const r = await roomy();
    expect(r.results.map((x) => x.policy)).toEqual(POLICY_NAMES);
    for (const x of r.results) {
      expect(x.tasks.submitted).toBe(r.workload.messages);
      expect(x.tasks.succeeded).toBe(r.workload.messages);
      expect(x.failures).toBe(0);
      expect(x.invariants).toEqual({ overlappingTurns: 0, outOfOrder: 0 });
      expect(x.followUps.ran).toBe(r.workload.followUps);
      expect(x.waitMs.count).toBe(r.workload.messages);

      const bySession = new Map<string, TaskTrace[]>();
      for (const t of r.traces![x.policy]!) {
        bySession.set(t.session, [...(bySession.get(t.session) ?? []), t]);
      }
      for (const tasks of bySession.values()) {
        tasks.sort((a, b) => a.index - b.index);
        tasks.forEach((t, i) => {
          expect(t.status).toBe("succeeded");
          expect(t.placedAt!).toBeGreaterThanOrEqual(t.submitAt);
          expect(t.turnStartAt!).toBeGreaterThanOrEqual(t.placedAt!);
          expect(t.finishedAt!).toBeGreaterThan(t.turnStartAt!);
          // A session's first message has nothing to restore.
          if (t.index === 0) expect(t.reload).toBe(false);
          const prev = tasks[i - 1];
          if (prev) expect(t.placedAt!).toBeGreaterThanOrEqual(prev.finishedAt!);
        });
      }
    }
    // With room to spare the ladder keeps nearly every follow-up warm.
    expect(result(r, "ladder").followUps.zeroReloadShare).toBeGreaterThan(0.75);
  });

  it("under load: the ladder keeps more follow-ups warm than any-free, and waits less than pinned", async () => {
    const r = await loaded();
    const ladder = result(r, "ladder");
    const anyFree = result(r, "any-free");
    const pinned = result(r, "pinned");
    for (const x of r.results) expect(x.failures).toBe(0);
    expect(ladder.followUps.zeroReloadShare).toBeGreaterThan(anyFree.followUps.zeroReloadShare);
    expect(ladder.reloads.count).toBeLessThan(anyFree.reloads.count);
    expect(pinned.waitMs.p95).toBeGreaterThan(ladder.waitMs.p95);
    expect(pinned.queueDepth.peak).toBeGreaterThan(ladder.queueDepth.peak);
  });

  it("renders a self-contained SVG chart naming the three policies, and a text table", async () => {
    const r = await loaded();
    const svg = renderChart([r, { ...r, scenario: "again <&>" }]);
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith("</svg>")).toBe(true);
    expect(svg).not.toMatch(/href=|<script|url\(/);
    for (const p of POLICY_NAMES) expect(svg).toContain(`>${p}</text>`);
    expect(svg).toContain("again &lt;&amp;&gt;");
    assertWellFormedXml(svg);
    expect(renderChart(r)).toContain("<svg");

    const table = renderTable(r);
    for (const p of POLICY_NAMES) expect(table).toMatch(new RegExp(`^ +${p} `, "m"));
  });
});
