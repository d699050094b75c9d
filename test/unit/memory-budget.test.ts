/**
 * The Docker pool's pure rules: the memory account, the shed order, reading
 * cgroup stats, reaping, and the container create request (no engine needed;
 * test/docker runs all of it against a real one).
 */
import { describe, expect, it } from "vitest";
import { pickReap } from "../../src/adapters/docker/docker-cleanup.js";
import { containerCreateOptions, LABELS } from "../../src/adapters/docker/docker-container-spec.js";
import {
  MemoryBudget,
  memoryUsageMb,
  parseMemoryStat,
  pickShed,
  type SheddableContainer,
  shedOrder,
} from "../../src/adapters/docker/memory-budget.js";
import { resolvePoolProfile } from "../../src/fleet-options.js";

const MiB = 2 ** 20;
const c = (
  id: string,
  priority: number,
  state: SheddableContainer["state"],
  lastUsedAt: number,
  usageMb = 10,
): SheddableContainer => ({ id, priority, state, lastUsedAt, usageMb });

describe("shed order", () => {
  it("takes lower priority first, then idle before reserved, then least recently used", () => {
    const order = shedOrder([
      c("high-idle", 2, "idle", 1),
      c("low-reserved", 0, "reserved", 5),
      c("never-used", -1, "idle", 9),
      c("low-idle-new", 0, "idle", 8),
      c("low-idle-old", 0, "idle", 2),
    ]).map((x) => x.id);
    expect(order).toEqual([
      "never-used",
      "low-idle-old",
      "low-idle-new",
      "low-reserved",
      "high-idle",
    ]);
  });

  it("frees what is needed and no more; all or nothing unless partial", () => {
    const cs = [
      c("a", 0, "reserved", 1, 10),
      c("b", 1, "reserved", 1, 30),
      c("c", 2, "idle", 1, 5),
    ];
    expect(pickShed(cs, 8, false).map((x) => x.id)).toEqual(["a"]);
    expect(pickShed(cs, 35, false).map((x) => x.id)).toEqual(["a", "b"]);
    expect(pickShed(cs, 100, false)).toEqual([]);
    expect(pickShed(cs, 100, true).map((x) => x.id)).toEqual(["a", "b", "c"]);
    expect(pickShed(cs, 0, false)).toEqual([]);
  });
});

describe("memory readings", () => {
  it("count anonymous memory and tmpfs, not page cache, on cgroup v1 and v2", () => {
    const v1 = parseMemoryStat(
      "cache 104857600\nrss 1\ntotal_active_anon 20971520\ntotal_inactive_anon 10485760\ntotal_inactive_file 5\n",
    );
    expect(memoryUsageMb({ stats: v1 })).toBe(30);
    expect(memoryUsageMb({ stats: { anon: 40 * MiB, shmem: 2 * MiB, file: 500 * MiB } })).toBe(42);
    expect(memoryUsageMb({ usage: 50 * MiB, stats: { total_inactive_file: 20 * MiB } })).toBe(30);
    expect(memoryUsageMb({ usage: 7 * MiB })).toBe(7);
    expect(memoryUsageMb(undefined)).toBeUndefined();
  });
});

describe("MemoryBudget", () => {
  it("charges working containers at least the reserve and idle ones what they hold", () => {
    const b = new MemoryBudget({ hostMemoryMb: 1000, headroomMb: 200, startReserveMb: 50 });
    expect([b.limitMb, b.hardLimitMb, b.hostFloorMb]).toEqual([800, 900, 50]);
    b.admit("x");
    expect(b.chargeOf("x")).toBe(50); // starting, not measured yet
    b.measured("x", 20);
    expect(b.chargeOf("x")).toBe(50); // still working
    b.working("x", false);
    expect(b.chargeOf("x")).toBe(20); // idle: what it holds
    b.working("x", true);
    b.measured("x", 300);
    expect(b.chargeOf("x")).toBe(300); // a turn grew past the reserve
    expect(b.measuredMb).toBe(300);
    b.release("x");
    expect(b.usedMb).toBe(0);
  });

  it("reports what must be freed against the budget, the hard limit and the real host", () => {
    const b = new MemoryBudget({ hostMemoryMb: 1000, headroomMb: 200, startReserveMb: 50 });
    b.admit("a");
    b.measured("a", 780);
    b.working("a", false);
    expect(b.deficitMb(0)).toBe(0);
    expect(b.deficitMb(50)).toBe(30);
    expect(b.deficitMb(0, 40)).toBe(10); // the host has 40 MiB left, its floor is 50
    expect(b.hardDeficitMb()).toBe(0);
    b.measured("a", 950);
    expect(b.hardDeficitMb()).toBe(50);
  });

  it("defaults to the host's memory with 10% (at least 512 MiB) headroom", () => {
    const b = new MemoryBudget({ startReserveMb: 64 });
    expect(b.hostMemoryMb).toBeGreaterThan(0);
    expect(b.headroomMb).toBe(Math.max(512, Math.floor(b.hostMemoryMb / 10)));
  });
});

describe("reaping", () => {
  it("reaps the longest idle past the TTL, keeping minIdle per pool", () => {
    const picked = pickReap(
      [
        { id: "p1", pool: "a", idleMs: 500, minIdle: 1 },
        { id: "p2", pool: "a", idleMs: 900, minIdle: 1 },
        { id: "p3", pool: "a", idleMs: 50, minIdle: 1 },
        { id: "q1", pool: "b", idleMs: 900, minIdle: 1 },
      ],
      100,
    );
    expect(picked.map((x) => x.id)).toEqual(["p2", "p1"]);
  });
});

describe("container create request", () => {
  it("carries the hardening and the labels", () => {
    const profile = resolvePoolProfile({ kind: "docker", name: "p", docker: { network: "host" } });
    const o = containerCreateOptions({ id: "n-1", profile, workspaceDir: "/w" }, "/real/w", {
      fleet: "f",
      node: "n",
      instance: "i",
      user: "10001:10001",
    });
    expect(o.name).toBe("clawfleet.f.n-1");
    expect(o.User).toBe("10001:10001");
    expect(o.Labels).toEqual({
      [LABELS.fleet]: "f",
      [LABELS.node]: "n",
      [LABELS.pool]: "p",
      [LABELS.container]: "n-1",
      [LABELS.instance]: "i",
    });
    expect(o.NetworkDisabled).toBe(false);
    expect(o.HostConfig).toMatchObject({
      NetworkMode: "host",
      ReadonlyRootfs: true,
      CapDrop: ["ALL"],
      SecurityOpt: ["no-new-privileges"],
      Memory: 256 * MiB,
      MemorySwap: 256 * MiB,
      PidsLimit: 128,
      NanoCpus: 1e9,
      Mounts: [{ Type: "bind", Source: "/real/w", Target: "/workspace", ReadOnly: false }],
    });
    expect(o.Env).toContain(`CLAWFLEET_HEARTBEAT_MS=${profile.agentHeartbeatMs}`);
  });
});
