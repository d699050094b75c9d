/**
 * A node's workspaces on local disk do not pile up run after run: a starting node removes
 * those of default ids (`<host>-<pid>`) of this host whose process is gone and its own
 * id's leftovers, and leaves chosen ids and live processes alone.
 */
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { defaultNodeId } from "../../src/fleet-options.js";
import { isDeadDefaultId, nodeDir, pruneNodeDirs } from "../../src/roles/node-dirs.js";

/** This host's default id for another pid. */
const idOf = (pid: number) => defaultNodeId().replace(new RegExp(`-${process.pid}$`), `-${pid}`);

describe("node directories", () => {
  let dataDir: string;
  beforeEach(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "clawfleet-node-dirs-"));
  });
  afterEach(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  const make = async (id: string) => {
    const ws = path.join(nodeDir(dataDir, id), "containers", `${id}-1`);
    await mkdir(ws, { recursive: true });
    await writeFile(path.join(ws, "memory.md"), "left behind");
  };

  it("knows a default id of this host by its pid", () => {
    const dead = (pid: number) => pid !== 42;
    expect(isDeadDefaultId(idOf(7), (pid) => !dead(pid))).toBe(true);
    expect(isDeadDefaultId(idOf(42), (pid) => !dead(pid))).toBe(false);
    expect(isDeadDefaultId("node-a", () => false)).toBe(false);
    expect(isDeadDefaultId(`other-host-7`, () => false)).toBe(false);
    expect(isDeadDefaultId(`${idOf(7)}x`, () => false)).toBe(false);
  });

  it("removes dead default ids and its own id, and keeps the rest", async () => {
    const self = "node-self";
    for (const id of [idOf(7), idOf(8), idOf(42), "node-a", self]) await make(id);
    const alive = (pid: number) => pid === 42;
    const removed = await pruneNodeDirs(dataDir, self, alive);
    expect(removed.sort()).toEqual([idOf(7), idOf(8), self].sort());
    expect((await readdir(path.join(dataDir, "nodes"))).sort()).toEqual(
      [idOf(42), "node-a"].sort(),
    );
  });

  it("does nothing when no node ran here before", async () => {
    expect(await pruneNodeDirs(dataDir, "node-self")).toEqual([]);
    expect(existsSync(path.join(dataDir, "nodes"))).toBe(false);
  });
});
