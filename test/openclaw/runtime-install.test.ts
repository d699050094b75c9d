/**
 * `installOpenClaw` with a stand-in npm (a script that lays out what npm would:
 * the package and its `.bin` link): the install is published whole or not at
 * all, says so when it is there already, survives a concurrent install, cleans
 * up after a failed one, and runs npm the way OpenClaw needs. Fast; it lives
 * here beside the tests of the real install.
 */
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  listRuntimes,
  locateOpenClaw,
  OPENCLAW_NODE_VERSION,
  OPENCLAW_VERSION,
  openclawDir,
  RUNTIME_MARKER,
} from "../../src/adapters/runtimes/openclaw-runtime.js";
import { installOpenClaw } from "../../src/adapters/runtimes/runtime-install.js";

/**
 * npm as far as the installer uses it: `install <flags> <pkg>@<version>` in the
 * cwd. Run through `env node`, so its second run is on the Node the first laid out.
 */
const FAKE_NPM = `#!/usr/bin/env node
const fs = require("node:fs");
const path = require("node:path");
const spec = process.argv.at(-1);
const name = spec.slice(0, spec.lastIndexOf("@"));
fs.appendFileSync(process.env.FAKE_NPM_LOG, JSON.stringify({
  args: process.argv.slice(2),
  path0: (process.env.PATH || "").split(":")[0],
  postinstall: process.env.OPENCLAW_DISABLE_BUNDLED_PLUGIN_POSTINSTALL,
}) + "\\n");
if (process.env.FAKE_NPM_FAIL === name) { console.error("npm error 404 " + spec); process.exit(1); }
const bin = path.join("node_modules", ".bin");
fs.mkdirSync(bin, { recursive: true });
if (name.startsWith("node-linux-")) {
  fs.mkdirSync(path.join("node_modules", name, "bin"), { recursive: true });
  fs.writeFileSync(path.join("node_modules", name, "bin", "node"), '#!/bin/sh\\nexec "$FAKE_REAL_NODE" "$@"\\n', { mode: 0o755 });
  fs.symlinkSync(path.join("..", name, "bin", "node"), path.join(bin, "node"));
} else {
  fs.mkdirSync(path.join("node_modules", name), { recursive: true });
  fs.writeFileSync(path.join("node_modules", name, "openclaw.mjs"), "");
  fs.symlinkSync(path.join("..", name, "openclaw.mjs"), path.join(bin, "openclaw"));
}
console.log("added 1 package in 0s");
`;

describe("runtime install (stand-in npm)", () => {
  let scratch: string;
  let npm: string;
  let log: string;
  const env = (extra: Record<string, string> = {}) => ({
    ...process.env,
    FAKE_NPM_LOG: log,
    // The "Node 24" it installs runs this node: npm itself then runs on it, as on Node 24 for real.
    FAKE_REAL_NODE: process.execPath,
    ...extra,
  });

  beforeAll(async () => {
    scratch = await mkdtemp(path.join(tmpdir(), "clawfleet-runtime-install-"));
    npm = path.join(scratch, "npm");
    log = path.join(scratch, "npm.log");
    await writeFile(npm, FAKE_NPM);
    await chmod(npm, 0o755);
  });
  afterAll(async () => {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it("installs Node, then OpenClaw with Node first on PATH, and publishes the whole at once", async () => {
    const runtimesDir = path.join(scratch, "a");
    await expect(locateOpenClaw(runtimesDir)).rejects.toMatchObject({
      code: "RUNTIME_NOT_INSTALLED",
      message: expect.stringContaining(`clawfleet runtime install openclaw --dir ${runtimesDir}`),
    });
    const lines: string[] = [];
    const done = await installOpenClaw({
      runtimesDir,
      npm,
      env: env(),
      progress: (l) => lines.push(l),
    });
    const dir = openclawDir(runtimesDir);
    expect(done).toMatchObject({ dir, version: OPENCLAW_VERSION, alreadyInstalled: false });
    expect(done.node).toBe(
      path.join(dir, "node_modules", `node-linux-${process.arch}`, "bin", "node"),
    );
    expect(done.entry).toBe(path.join(dir, "node_modules", "openclaw", "openclaw.mjs"));
    expect(JSON.parse(await readFile(path.join(dir, RUNTIME_MARKER), "utf8"))).toMatchObject({
      runtime: "openclaw",
      version: OPENCLAW_VERSION,
      node: OPENCLAW_NODE_VERSION,
    });
    expect(await readdir(runtimesDir)).toEqual([path.basename(dir)]);
    expect(lines.some((l) => l.startsWith("npm: added"))).toBe(true);

    const calls = (await readFile(log, "utf8"))
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(calls.map((c) => c.args.at(-1))).toEqual([
      `node-linux-${process.arch}@${OPENCLAW_NODE_VERSION}`,
      `openclaw@${OPENCLAW_VERSION}`,
    ]);
    expect(calls[0].args).toEqual(
      expect.arrayContaining(["--no-audit", "--no-fund", "--ignore-scripts"]),
    );
    // npm runs OpenClaw's part with the Node just installed (in the temporary dir) first on PATH.
    expect(calls[1].path0).toMatch(/\/\.openclaw-[0-9.]+\.tmp-[^/]+\/node_modules\/\.bin$/);
    expect(calls[1].postinstall).toBe("1");

    const again = await installOpenClaw({ runtimesDir, npm, env: env() });
    expect(again.alreadyInstalled).toBe(true);
    expect((await readFile(log, "utf8")).trim().split("\n")).toHaveLength(2);
    expect(await listRuntimes(runtimesDir)).toMatchObject([
      { runtime: "openclaw", version: OPENCLAW_VERSION, dir },
    ]);
  });

  it("leaves nothing behind when npm fails, and removes what crashed installs left", async () => {
    const runtimesDir = path.join(scratch, "b");
    await expect(
      installOpenClaw({ runtimesDir, npm, env: env({ FAKE_NPM_FAIL: "openclaw" }) }),
    ).rejects.toMatchObject({
      code: "RUNTIME_NOT_INSTALLED",
      retryable: true,
      message: expect.stringContaining("npm error 404"),
    });
    expect(await readdir(runtimesDir)).toEqual([]);

    const stale = path.join(runtimesDir, `.openclaw-${OPENCLAW_VERSION}.tmp-crashed`);
    await mkdir(stale);
    const old = new Date(Date.now() - 2 * 3600_000);
    await utimes(stale, old, old);
    await mkdir(openclawDir(runtimesDir)); // no marker: not an install
    await installOpenClaw({ runtimesDir, npm, env: env() });
    expect(await readdir(runtimesDir)).toEqual([path.basename(openclawDir(runtimesDir))]);
    await locateOpenClaw(runtimesDir);
  });

  it("lets two concurrent installs both succeed with one install", async () => {
    const runtimesDir = path.join(scratch, "c");
    const both = await Promise.all([
      installOpenClaw({ runtimesDir, npm, env: env() }),
      installOpenClaw({ runtimesDir, npm, env: env() }),
    ]);
    expect(both.map((r) => r.dir)).toEqual([openclawDir(runtimesDir), openclawDir(runtimesDir)]);
    expect(await readdir(runtimesDir)).toEqual([path.basename(openclawDir(runtimesDir))]);
  });
});
