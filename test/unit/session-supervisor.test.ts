import { describe, expect, it } from "vitest";
import { SimulatedClock } from "xstate";
import { ErrorCodes } from "../../src/errors.js";
import { RestartIntensity } from "../../src/supervisor/restart-intensity.js";
import { SessionSupervisor } from "../../src/supervisor/session-supervisor.js";

const crash = { code: ErrorCodes.AGENT_EXITED, message: "exit 1" };
const lost = (attempt: number) => ({ taskId: "t1", attempt, error: crash });

describe("RestartIntensity", () => {
  it("allows at most N restarts within the window, counting only those it allows", () => {
    const clock = new SimulatedClock();
    const r = new RestartIntensity(2, 1000, clock);
    expect([r.allow(), r.allow(), r.allow()]).toEqual([true, true, false]);
    expect(r.recent).toBe(2);
    clock.increment(999);
    expect(r.allow()).toBe(false);
    clock.increment(2);
    // The first two restarts left the window: restarts are allowed again.
    expect(r.allow()).toBe(true);
    expect(r.recent).toBe(1);
  });
});

describe("SessionSupervisor", () => {
  const options = { recreateMax: 2, repairMax: 1, windowMs: 60_000 };

  it("climbs recreate, recreate, repair, then quarantines with the history", () => {
    const s = new SessionSupervisor(options, new SimulatedClock());
    const remedies = [1, 2, 3, 4].map((a) => s.attemptLost("acme", "s1", lost(a)));
    expect(
      remedies.map((r) => (r.kind === "retry" ? `${r.tier}${r.repair ? " repair" : ""}` : r.kind)),
    ).toEqual(["2", "2", "3 repair", "quarantine"]);
    const last = remedies[3]!;
    expect(last.kind === "quarantine" && last.history.map((h) => h.remedy)).toEqual([
      "recreate",
      "recreate",
      "repair",
      "alert",
    ]);
    expect(s.view()).toEqual([expect.objectContaining({ tenant: "acme", session: "s1", tier: 4 })]);
  });

  it("keeps sessions apart, and starts a healthy session over at the bottom", () => {
    const s = new SessionSupervisor(options, new SimulatedClock());
    s.attemptLost("acme", "s1", lost(1));
    s.attemptLost("acme", "s1", lost(2));
    expect(s.attemptLost("acme", "s2", lost(1))).toEqual({ kind: "retry", tier: 2, repair: false });
    s.healthy("acme", "s1");
    expect(s.attemptLost("acme", "s1", lost(3))).toEqual({ kind: "retry", tier: 2, repair: false });
  });

  it("forgets failures older than the window", () => {
    const clock = new SimulatedClock();
    const s = new SessionSupervisor(options, clock);
    s.attemptLost("acme", "s1", lost(1));
    s.attemptLost("acme", "s1", lost(2));
    clock.increment(60_001);
    expect(s.attemptLost("acme", "s1", lost(3))).toEqual({ kind: "retry", tier: 2, repair: false });
  });

  it("keeps a recovered session in view as healthy for one window, with its history", () => {
    const clock = new SimulatedClock();
    const s = new SessionSupervisor(options, clock);
    for (const a of [1, 2, 3]) s.attemptLost("acme", "s1", lost(a));
    clock.increment(1000);
    s.healthy("acme", "s1");
    s.healthy("acme", "s2"); // never on the ladder: nothing to show
    const [view, ...more] = s.view();
    expect(more).toEqual([]);
    expect(view).toMatchObject({
      session: "s1",
      tier: 0,
      restarts: { recreate: 2, repair: 1 },
      recoveredAt: new Date(1000).toISOString(),
    });
    expect(view!.history.map((h) => h.tier)).toEqual([2, 2, 3]);
    // Failing again climbs from the bottom, the earlier climb still in the history.
    expect(s.attemptLost("acme", "s1", lost(4))).toEqual({ kind: "retry", tier: 2, repair: false });
    expect(s.view()[0]!.history.map((h) => h.tier)).toEqual([2, 2, 3, 2]);
    s.healthy("acme", "s1");
    clock.increment(60_001);
    expect(s.view()).toEqual([]);
  });
});
