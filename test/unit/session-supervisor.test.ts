import { describe, expect, it } from "vitest";
import { SimulatedClock } from "xstate";
import { RestartIntensity } from "../../src/supervisor/restart-intensity.js";
import { SessionSupervisor } from "../../src/supervisor/session-supervisor.js";

const crash = { code: "AGENT_EXITED", message: "exit 1" };
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
});
