/**
 * What the CLI draws: the supervision tree's connectors, the tables' headers, the
 * simulator's progress, and the start banner's commands (which must work as printed).
 */
import path from "node:path";
import { describe, expect, it } from "vitest";
import { renderBehaviorHistory } from "../../src/cli/behavior-commands.js";
import { talkToIt } from "../../src/cli/role-commands.js";
import { progressLine } from "../../src/cli/sim-command.js";
import { renderVersions } from "../../src/cli/state-commands.js";
import { drawTree, renderTree } from "../../src/cli/tree-command.js";
import { resolveFleetOptions } from "../../src/fleet-options.js";
import type { FleetTree } from "../../src/gateway/fleet-tree.js";

describe("the tree", () => {
  // Plain text whatever runs the tests (colour is for a terminal).
  process.env.NO_COLOR = "1";

  it("draws ├─ for every child but the last, └─ for the last, │ under open siblings", () => {
    const lines = drawTree([
      { text: "a", children: [{ text: "a1" }, { text: "a2", children: [{ text: "x" }] }] },
      { text: "b", children: [{ text: "b1" }] },
    ]);
    expect(lines).toEqual(["├─ a", "│  ├─ a1", "│  └─ a2", "│     └─ x", "└─ b", "   └─ b1"]);
    expect(drawTree([])).toEqual([]);
  });

  it("renders nodes, pools and containers with those connectors", () => {
    const container = (id: string, state: string) => ({ id, state }) as never;
    const pool = (name: string, containers: unknown[]) =>
      ({
        name,
        runtime: "scripted",
        size: containers.length,
        max: 4,
        minIdle: 1,
        restarts: 0,
        crashes: 0,
        containers,
      }) as never;
    const tree: FleetTree = {
      orchestrator: { id: "o", since: "t0", queueDepth: 0, running: 0 },
      nodes: [
        {
          id: "n1",
          startedAt: "t0",
          lastSeen: "t1",
          stopping: false,
          pools: [pool("p", [container("c1", "idle"), container("c2", "busy")])],
        },
        { id: "n2", startedAt: "t0", lastSeen: "t1", stopping: true, pools: [pool("p", [])] },
      ] as never,
      sessions: [],
    };
    expect(renderTree(tree).split("\n")).toEqual([
      "fleet  orchestrator o  queued 0, running 0",
      "├─ node n1  last seen t1",
      "│  └─ pool p [scripted] 2/4 minIdle 1  restarts 0",
      "│     ├─ c1  idle",
      "│     └─ c2  busy",
      "└─ node n2 (stopping)  last seen t1",
      "   └─ pool p [scripted] 0/4 minIdle 1  restarts 0",
      "",
    ]);
  });
});

describe("tables", () => {
  it("snapshots has a header over aligned columns", () => {
    const out = renderVersions([
      { version: 1, createdAt: "2026-01-01T00:00:00.000Z", files: 2, bytes: 100, knownGood: true },
      {
        version: 12,
        createdAt: "2026-01-01T00:01:00.000Z",
        files: 3,
        bytes: 3 * 1048576,
        knownGood: false,
        reason: "sync",
        parent: 1,
      },
    ]).split("\n");
    expect(out[0]).toMatch(/^\s*version\s+created\s+files\s+size\s+notes$/);
    expect(out[1]).toMatch(/^\s+1\s+2026-01-01T00:00:00.000Z\s+2\s+0.1 KiB\s+known-good$/);
    expect(out[2]).toMatch(/^\s+12\s+.*\s+3\s+3.0 MiB\s+sync, from v1$/);
    // Columns line up under their headers.
    expect(out[1]!.indexOf("2026")).toBe(out[0]!.indexOf("created"));
    expect(renderVersions([])).toBe("no versions yet\n");
  });

  it("behavior history has a header over aligned columns", () => {
    const out = renderBehaviorHistory([
      { version: 1, hash: "sha256:aa", updatedAt: "2026-01-01T00:00:00.000Z", files: ["A.md"] },
      { version: 2, hash: "sha256:bb", updatedAt: "2026-01-01T00:00:01.000Z", files: [] },
    ]).split("\n");
    expect(out[0]).toMatch(/^\s*version\s+updated\s+hash\s+files$/);
    expect(out[1]).toMatch(/^\s+1\s+2026-01-01T00:00:00.000Z\s+sha256:aa\s+A\.md$/);
    expect(out[2]).toMatch(/sha256:bb\s+\(no files\)$/);
    expect(out[1]!.indexOf("sha256")).toBe(out[0]!.indexOf("hash"));
    expect(renderBehaviorHistory([])).toBe("no behaviour versions yet\n");
  });
});

describe("sim progress", () => {
  const run = (isTTY: boolean) => {
    let out = "";
    let t = 0;
    const report = progressLine({ isTTY, write: (s: string) => (out += s) }, () => t);
    const at = (index: number, simulatedMs: number, done: boolean) =>
      report({ policy: "ladder", index, of: 2, simulatedMs, horizonMs: 2 * 3600_000, done });
    at(0, 0, false);
    t = 500;
    at(0, 3600_000, false);
    t = 1500;
    at(0, 7200_000, true);
    return out;
  };

  it("is a line per policy start and end when stderr is not a terminal", () => {
    expect(run(false)).toBe("sim: ladder (1/2) running\nsim: ladder (1/2) done in 1.5 s\n");
  });

  it("is rewritten in place on a terminal, with the simulated hours", () => {
    expect(run(true)).toBe(
      "\r\u001b[Ksim: ladder (1/2) 0.0 of 2.0 h" +
        "\r\u001b[Ksim: ladder (1/2) 1.0 of 2.0 h" +
        "\r\u001b[Ksim: ladder (1/2) done in 1.5 s\n",
    );
  });
});

describe("the start banner", () => {
  it("gives a NATS command with the embedded server's URL", () => {
    const options = resolveFleetOptions({ dataDir: path.resolve(".clawfleet") });
    expect(talkToIt(options, "nats://127.0.0.1:41234", false)).toEqual([
      "  npx clawfleet send --session demo hello",
      `  nats --server nats://127.0.0.1:41234 req fleet.api.run '{"session":"demo","input":"hello"}'   # any NATS client`,
    ]);
  });

  it("adds the flags the CLI needs to find a fleet elsewhere", () => {
    const elsewhere = resolveFleetOptions({ dataDir: "/srv/fleet", prefix: "acme" });
    expect(talkToIt(elsewhere, "nats://10.0.0.2:4222", false)[0]).toBe(
      "  npx clawfleet send --data-dir /srv/fleet --session demo hello",
    );
    expect(talkToIt(elsewhere, "nats://10.0.0.2:4222", true)).toEqual([
      "  npx clawfleet send --nats nats://10.0.0.2:4222 --prefix acme --session demo hello",
      `  nats --server nats://10.0.0.2:4222 req acme.api.run '{"session":"demo","input":"hello"}'   # any NATS client`,
    ]);
  });
});
