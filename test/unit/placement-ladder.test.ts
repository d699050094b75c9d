import { describe, expect, it } from "vitest";
import {
  type Claims,
  decidePlacement,
  type FleetView,
  noClaims,
  poolKey,
} from "../../src/actors/placement-ladder.js";
import type {
  ContainerInfo,
  ContainerState,
  NodeHeartbeat,
} from "../../src/protocol/fleet-messages.js";
import { PlacementClaims } from "../../src/roles/placement-claims.js";

const AT = "2030-01-01T00:00:00.000Z";

/** A container as its node announces it; `holder` is `[tenant, session, taskId?]`. */
function container(
  id: string,
  state: ContainerState,
  holder?: [string, string, string?],
  node = "n1",
  pool = "default",
): ContainerInfo {
  return {
    id,
    node,
    pool,
    runtime: "scripted",
    state,
    tenant: holder?.[0],
    session: holder?.[1],
    taskId: holder?.[2],
    updatedAt: AT,
  };
}

/** A node heartbeat; pool sizes default to the number of its containers in that pool. */
function node(
  id: string,
  containers: ContainerInfo[],
  options: {
    pools?: Array<{ name?: string; max: number; size?: number }>;
    stopping?: boolean;
  } = {},
): NodeHeartbeat {
  const pools = (options.pools ?? [{ max: 4 }]).map((p) => {
    const name = p.name ?? "default";
    return {
      node: id,
      name,
      runtime: "scripted",
      minIdle: 0,
      max: p.max,
      size: p.size ?? containers.filter((c) => c.pool === name).length,
      states: {},
      restarts: 0,
      crashes: 0,
    };
  });
  return {
    id,
    startedAt: AT,
    at: AT,
    seq: 1,
    stopping: options.stopping,
    pools,
    containers: containers.map((c) => ({ ...c, node: id })),
  };
}

function view(...nodes: NodeHeartbeat[]): FleetView {
  return { nodes: new Map(nodes.map((n) => [n.id, n])) };
}

function claims(partial: Partial<Claims>): Claims {
  return { ...noClaims, ...partial };
}

const ME: [string, string] = ["acme", "s1"];
const OTHER: [string, string] = ["acme", "s2"];

describe("decidePlacement", () => {
  it("passes over the containers a task died in while anything else will do (tier 2)", () => {
    const avoid = new Set(["c1"]);
    const warmThere = view(node("n1", [container("c1", "idle", ME), container("c2", "idle")]));
    expect(decidePlacement("acme", "s1", warmThere, noClaims, { avoid })).toMatchObject({
      placement: { container: "c2", rung: "idle" },
    });
    // Nothing idle elsewhere, but the pool may grow: a new container rather than the old one.
    const grow = view(node("n1", [container("c1", "idle", ME)], { pools: [{ max: 2 }] }));
    expect(decidePlacement("acme", "s1", grow, noClaims, { avoid })).toMatchObject({
      placement: { rung: "new" },
    });
    // Nowhere else, ever: the old one it is, rather than waiting for capacity that never comes.
    const full = view(node("n1", [container("c1", "idle", ME)], { pools: [{ max: 1 }] }));
    expect(decidePlacement("acme", "s1", full, noClaims, { avoid })).toMatchObject({
      placement: { container: "c1", rung: "warm" },
    });
  });

  it("waits behind the session's own busy container", () => {
    const v = view(node("n1", [container("c1", "busy", [...ME, "t0"]), container("c2", "idle")]));
    expect(decidePlacement("acme", "s1", v)).toEqual({ kind: "wait", rung: "own-busy" });
  });

  it("does not wait behind the task's own abandoned attempt (a lease lost on a silent node)", () => {
    const v = view(node("n1", [container("c1", "busy", [...ME, "t0"]), container("c2", "idle")]));
    expect(decidePlacement("acme", "s1", v, noClaims, { taskId: "t0" })).toMatchObject({
      placement: { container: "c2" },
    });
    // Another task of the session still waits behind it.
    expect(decidePlacement("acme", "s1", v, noClaims, { taskId: "t1" })).toEqual({
      kind: "wait",
      rung: "own-busy",
    });
  });

  it("waits behind a container still starting for the session", () => {
    const v = view(
      node("n1", [container("c1", "starting", [...ME, "t0"]), container("c2", "idle")]),
    );
    expect(decidePlacement("acme", "s1", v)).toEqual({ kind: "wait", rung: "own-busy" });
  });

  it("does not wait behind another tenant's container with the same session name", () => {
    const v = view(
      node("n1", [container("c1", "busy", ["other", "s1", "t0"]), container("c2", "idle")]),
    );
    expect(decidePlacement("acme", "s1", v)).toEqual({
      kind: "place",
      placement: { node: "n1", pool: "default", container: "c2", rung: "idle" },
    });
  });

  it("takes a container reserved for the session before a warm or idle one", () => {
    const v = view(
      node("n1", [
        container("idle", "idle"),
        container("warm", "idle", ME),
        container("other-reserved", "reserved", OTHER),
      ]),
      node("n2", [container("mine", "reserved", ME, "n2", "big")], {
        pools: [{ name: "big", max: 8 }],
      }),
    );
    expect(decidePlacement("acme", "s1", v)).toEqual({
      kind: "place",
      placement: { node: "n2", pool: "big", container: "mine", rung: "reserved" },
    });
  });

  it("prefers the container holding the session's warm state over a cold idle one", () => {
    const v = view(
      node("n1", [container("cold", "idle"), container("other-warm", "idle", OTHER)]),
      node("n2", [container("warm", "idle", ME)]),
    );
    expect(decidePlacement("acme", "s1", v)).toEqual({
      kind: "place",
      placement: { node: "n2", pool: "default", container: "warm", rung: "warm" },
    });
  });

  it("restores into an idle container, preferring one that holds no one's warm state", () => {
    const v = view(
      node("n1", [
        container("other-warm", "idle", OTHER),
        container("busy", "busy", [...OTHER, "t"]),
      ]),
      node("n2", [container("cold", "idle")]),
    );
    expect(decidePlacement("acme", "s1", v)).toEqual({
      kind: "place",
      placement: { node: "n2", pool: "default", container: "cold", rung: "idle" },
    });
  });

  it("restores into another session's warm container when no cold one is idle", () => {
    const v = view(
      node("n1", [container("other-warm", "idle", OTHER), container("b", "busy", OTHER)]),
    );
    expect(decidePlacement("acme", "s1", v)).toEqual({
      kind: "place",
      placement: { node: "n1", pool: "default", container: "other-warm", rung: "idle" },
    });
  });

  it("starts a new container in the pool with the most room", () => {
    const v = view(
      node("n1", [container("a", "busy", OTHER)], { pools: [{ max: 2 }] }), // room 1
      node("n2", [container("b", "busy", OTHER)], {
        pools: [
          { name: "default", max: 4 }, // room 3
          { name: "full", max: 1, size: 1 }, // room 0
        ],
      }),
      node("n3", [], { pools: [{ max: 2 }] }), // room 2
    );
    expect(decidePlacement("acme", "s1", v)).toEqual({
      kind: "place",
      placement: { node: "n2", pool: "default", rung: "new" },
    });
  });

  it("takes another session's reservation only when nothing else is free and no pool may grow", () => {
    const full = node(
      "n1",
      [container("theirs", "reserved", OTHER), container("b", "busy", OTHER)],
      {
        pools: [{ max: 2 }],
      },
    );
    expect(decidePlacement("acme", "s1", view(full))).toEqual({
      kind: "place",
      placement: { node: "n1", pool: "default", container: "theirs", rung: "idle" },
    });
    // With room to grow, the reservation is left alone.
    const roomy = node("n1", [container("theirs", "reserved", OTHER)], { pools: [{ max: 2 }] });
    expect(decidePlacement("acme", "s1", view(roomy))).toEqual({
      kind: "place",
      placement: { node: "n1", pool: "default", rung: "new" },
    });
  });

  it("answers no-capacity when every container is busy and every pool is full", () => {
    const v = view(
      node("n1", [container("a", "busy", OTHER), container("b", "starting")], {
        pools: [{ max: 2 }],
      }),
      node("n2", [container("c", "draining")], { pools: [{ max: 1 }] }),
    );
    expect(decidePlacement("acme", "s1", v)).toEqual({ kind: "no-capacity" });
    expect(decidePlacement("acme", "s1", view())).toEqual({ kind: "no-capacity" });
  });

  it("ignores stopping nodes entirely", () => {
    const stopping = node(
      "old",
      [
        container("mine", "busy", [...ME, "t0"]),
        container("warm", "idle", ME),
        container("idle", "idle"),
      ],
      { stopping: true, pools: [{ max: 10 }] },
    );
    const v = view(stopping, node("n2", [container("x", "busy", OTHER)], { pools: [{ max: 2 }] }));
    // Not own-busy (its busy container is on a stopping node), not warm/idle there, not new there.
    expect(decidePlacement("acme", "s1", v)).toEqual({
      kind: "place",
      placement: { node: "n2", pool: "default", rung: "new" },
    });
    expect(decidePlacement("acme", "s1", view(stopping))).toEqual({ kind: "no-capacity" });
  });

  describe("with claims", () => {
    it("skips claimed containers and slides down the ladder", () => {
      const v = view(
        node("n1", [
          container("res", "reserved", ME),
          container("warm", "idle", ME),
          container("idle", "idle"),
        ]),
      );
      const c1 = claims({ containers: new Set(["res"]) });
      expect(decidePlacement("acme", "s1", v, c1)).toMatchObject({
        placement: { container: "warm", rung: "warm" },
      });
      const c2 = claims({ containers: new Set(["res", "warm"]) });
      expect(decidePlacement("acme", "s1", v, c2)).toMatchObject({
        placement: { container: "idle", rung: "idle" },
      });
      const c3 = claims({ containers: new Set(["res", "warm", "idle"]) });
      expect(decidePlacement("acme", "s1", v, c3)).toEqual({
        kind: "place",
        placement: { node: "n1", pool: "default", rung: "new" },
      });
    });

    it("counts new containers already requested against a pool's room", () => {
      const v = view(
        node("n1", [], { pools: [{ max: 3 }] }),
        node("n2", [], { pools: [{ max: 2 }] }),
      );
      expect(decidePlacement("acme", "s1", v)).toMatchObject({ placement: { node: "n1" } });
      const oneOnN1 = claims({ newByPool: new Map([[poolKey("n1", "default"), 2]]) });
      expect(decidePlacement("acme", "s1", v, oneOnN1)).toMatchObject({
        placement: { node: "n2", rung: "new" },
      });
      const allTaken = claims({
        newByPool: new Map([
          [poolKey("n1", "default"), 3],
          [poolKey("n2", "default"), 2],
        ]),
      });
      expect(decidePlacement("acme", "s1", v, allTaken)).toEqual({ kind: "no-capacity" });
    });

    it("skips refused containers and refused pools", () => {
      const v = view(
        node("n1", [container("warm", "idle", ME), container("idle", "idle")], {
          pools: [{ max: 4 }],
        }),
        node("n2", [], { pools: [{ max: 2 }] }),
      );
      const refusedWarm = claims({ refused: new Set(["warm"]) });
      expect(decidePlacement("acme", "s1", v, refusedWarm)).toMatchObject({
        placement: { container: "idle", rung: "idle" },
      });
      const refusedBoth = claims({ refused: new Set(["warm", "idle", poolKey("n1", "default")]) });
      expect(decidePlacement("acme", "s1", v, refusedBoth)).toEqual({
        kind: "place",
        placement: { node: "n2", pool: "default", rung: "new" },
      });
    });

    it("still waits behind the session's busy container whatever the claims", () => {
      const v = view(
        node("n1", [container("mine", "busy", [...ME, "t0"]), container("i", "idle")]),
      );
      const c = claims({ containers: new Set(["mine"]), refused: new Set(["mine"]) });
      expect(decidePlacement("acme", "s1", v, c)).toEqual({ kind: "wait", rung: "own-busy" });
    });
  });
});

describe("PlacementClaims", () => {
  const twoIdle = () =>
    node("n1", [container("c1", "idle"), container("c2", "idle")], { pools: [{ max: 3 }] });

  it("decides like the ladder when nothing is claimed", () => {
    const pc = new PlacementClaims();
    const v = view(twoIdle());
    expect(pc.decide("acme", "s1", v)).toEqual(decidePlacement("acme", "s1", v));
  });

  it("keeps a claimed container from a second task until released", () => {
    const pc = new PlacementClaims();
    const v = view(twoIdle());
    const first = pc.decide("acme", "s1", v);
    expect(first).toMatchObject({ kind: "place", placement: { container: "c1" } });
    if (first.kind !== "place") throw new Error("unreachable");
    pc.claim("t1", first.placement);

    const second = pc.decide("acme", "s2", v);
    expect(second).toMatchObject({ placement: { container: "c2" } });
    if (second.kind !== "place") throw new Error("unreachable");
    pc.claim("t2", second.placement);

    // Both idle containers promised: the third task gets a new container.
    expect(pc.decide("acme", "s3", v)).toMatchObject({ placement: { rung: "new", node: "n1" } });

    pc.release("t1");
    expect(pc.decide("acme", "s3", v)).toMatchObject({ placement: { container: "c1" } });
  });

  it("counts claims for new containers per pool", () => {
    const pc = new PlacementClaims();
    const v = view(node("n1", [], { pools: [{ max: 2 }] }));
    pc.claim("t1", { node: "n1", pool: "default", rung: "new" });
    expect(pc.decide("acme", "s2", v)).toMatchObject({ placement: { rung: "new" } });
    pc.claim("t2", { node: "n1", pool: "default", rung: "new" });
    expect(pc.decide("acme", "s3", v)).toEqual({ kind: "no-capacity" });
    pc.release("t2");
    expect(pc.decide("acme", "s3", v)).toMatchObject({ placement: { rung: "new" } });
  });

  it("re-claiming a task replaces its earlier claim", () => {
    const pc = new PlacementClaims();
    const v = view(twoIdle());
    pc.claim("t1", { node: "n1", pool: "default", container: "c1", rung: "idle" });
    pc.claim("t1", { node: "n1", pool: "default", container: "c2", rung: "idle" });
    expect(pc.decide("acme", "s2", v)).toMatchObject({ placement: { container: "c1" } });
  });

  it("skips a refused container or pool until its node's next heartbeat", () => {
    const pc = new PlacementClaims();
    const hb = node("n1", [container("c1", "idle")], { pools: [{ max: 1 }] });
    const v = view(hb, node("n2", [], { pools: [{ max: 1 }] }));

    pc.refuse({ node: "n1", pool: "default", container: "c1", rung: "idle" });
    expect(pc.decide("acme", "s1", v)).toMatchObject({ placement: { node: "n2", rung: "new" } });
    pc.refuse({ node: "n2", pool: "default", rung: "new" });
    expect(pc.decide("acme", "s1", v)).toEqual({ kind: "no-capacity" });

    // A heartbeat of another node clears nothing of n1's.
    pc.observe(node("n3", [], { pools: [{ max: 1 }] }));
    expect(pc.decide("acme", "s1", v)).toEqual({ kind: "no-capacity" });

    pc.observe(hb);
    expect(pc.decide("acme", "s1", v)).toMatchObject({ placement: { container: "c1" } });
    pc.observe(v.nodes.get("n2")!);
    pc.refuse({ node: "n1", pool: "default", container: "c1", rung: "idle" });
    expect(pc.decide("acme", "s1", v)).toMatchObject({ placement: { node: "n2", rung: "new" } });
  });

  it("drops a claim once a heartbeat shows the task on a container", () => {
    const pc = new PlacementClaims();
    pc.claim("t1", { node: "n1", pool: "default", rung: "new" });
    pc.claim("t2", { node: "n1", pool: "default", container: "c1", rung: "idle" });
    const before = view(node("n1", [container("c1", "idle")], { pools: [{ max: 2 }] }));
    // c1 claimed and one new container requested: the pool (size 1, max 2) is full.
    expect(pc.decide("acme", "s3", before)).toEqual({ kind: "no-capacity" });

    // A heartbeat that does not show the tasks yet keeps both claims.
    pc.observe(before.nodes.get("n1")!);
    expect(pc.decide("acme", "s3", before)).toEqual({ kind: "no-capacity" });

    // The new container shows t1: its claim goes, and the heartbeat's size now counts it.
    const started = node(
      "n1",
      [container("c1", "idle"), container("n1-2", "busy", ["acme", "s1", "t1"])],
      { pools: [{ max: 3 }] },
    );
    pc.observe(started);
    expect(pc.decide("acme", "s3", view(started))).toMatchObject({ placement: { rung: "new" } });

    // c1 shows t2: its claim goes too, and c1 (idle again afterwards) is free.
    pc.observe(node("n1", [container("c1", "busy", ["acme", "s2", "t2"])]));
    expect(pc.decide("acme", "s3", before)).toMatchObject({ placement: { container: "c1" } });
  });
});
