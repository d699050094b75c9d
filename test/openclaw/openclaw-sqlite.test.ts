/**
 * The quiesce hold on its own, with OpenClaw's Node 24: while another process
 * keeps committing to a WAL database (auto-checkpointing every few commits, as
 * OpenClaw's maintenance would), the database file must not change from the
 * moment the hold is taken until it is released, and a copy of it taken
 * meanwhile must be sound; once released, checkpoints write the file again.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFile, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InstalledOpenClaw } from "../../src/adapters/runtimes/openclaw-runtime.js";
import { SqliteHold } from "../../src/agents/openclaw-sqlite.js";
import { integrity, openclawRuntime } from "./openclaw-fixture.js";

/** Commits 50 rows of 4 KiB every 20 ms (an auto-checkpoint every ~5 commits); prints "up" after the first. */
const WRITER = `
  const { DatabaseSync } = require("node:sqlite");
  const db = new DatabaseSync(process.argv[1], { timeout: 5000 });
  db.exec("PRAGMA journal_mode = WAL; CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, pad BLOB)");
  const insert = db.prepare("INSERT INTO t (pad) VALUES (randomblob(4096))");
  let first = true;
  setInterval(() => {
    db.exec("BEGIN IMMEDIATE");
    for (let i = 0; i < 50; i++) insert.run();
    db.exec("COMMIT");
    if (first) { first = false; console.log("up"); }
  }, 20);`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const hashOf = async (file: string) =>
  createHash("sha256")
    .update(await readFile(file))
    .digest("hex");

describe("SQLite hold", () => {
  let runtime: InstalledOpenClaw;
  let dir: string;
  let writer: ChildProcess | undefined;

  beforeAll(async () => {
    runtime = await openclawRuntime();
    dir = await mkdtemp(path.join(tmpdir(), "clawfleet-sqlite-hold-"));
  });
  afterAll(async () => {
    writer?.kill("SIGKILL");
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("keeps a live WAL database's file unchanged and sound until released", async () => {
    const db = path.join(dir, "live.sqlite");
    writer = spawn(runtime.node, ["--no-warnings", "-e", WRITER, db], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    await new Promise((resolve) => writer!.stdout!.once("data", resolve));
    await sleep(300);

    const hold = await SqliteHold.take(runtime.node, [db], { hold: true });
    expect(hold.holding).toBe(true);
    const held = await hashOf(db);
    await sleep(1500); // ~75 commits, ~15 auto-checkpoints the hold must stop
    expect(await hashOf(db)).toBe(held);
    const copy = path.join(dir, "copy.sqlite");
    await copyFile(db, copy);
    expect(await integrity(runtime.node, [copy])).toEqual([`${copy}: ok`]);

    await hold.release();
    expect(hold.holding).toBe(false);
    await sleep(1000);
    // Checkpoints write the file again: the check above could have seen a change.
    expect(await hashOf(db)).not.toBe(held);
  });

  it("checkpoints without holding when nothing else has the database open", async () => {
    writer?.kill("SIGKILL");
    await sleep(200);
    const db = path.join(dir, "live.sqlite");
    const hold = await SqliteHold.take(runtime.node, [db, path.join(dir, "gone.sqlite")], {
      hold: false,
    });
    expect(hold.holding).toBe(false);
    expect(await integrity(runtime.node, [db])).toEqual([`${db}: ok`]);
  });
});
