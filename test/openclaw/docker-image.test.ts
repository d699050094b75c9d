/**
 * The OpenClaw agent image on a real engine: built from the OpenClaw install of
 * this host (installed first when missing), then run the way a pool runs its
 * containers (non-root, read-only root, a `noexec` tmpfs /tmp, no network, no
 * capabilities): Node 24 and OpenClaw answer, the install's bin links are still
 * links, nothing of it is writable, and OpenClaw's gateway starts with the
 * config the driver writes. Slow: a ~700 MB context (~50 s to build here), and
 * a gateway start (~10 s).
 */
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chownTree } from "../../src/adapters/docker/docker-container-spec.js";
import type { BuiltAgentImage } from "../../src/adapters/docker/docker-image.js";
import {
  buildRuntimeImage,
  OPENCLAW_IMAGE_DIR,
  RUNTIME_LABEL,
} from "../../src/adapters/docker/runtime-image.js";
import {
  type InstalledOpenClaw,
  OPENCLAW_BIN,
  OPENCLAW_VERSION,
} from "../../src/adapters/runtimes/openclaw-runtime.js";
import { OPENCLAW_CONFIG_FILE, OPENCLAW_STATE_DIR } from "../../src/agents/openclaw-config.js";
import { writeOpenClawConfig } from "../../src/agents/openclaw-workspace.js";
import { OPENCLAW_AGENT_IMAGE } from "../../src/runtime-options.js";
import { DockerEngine } from "../harness/docker-engine.js";
import { openclawRuntime } from "./openclaw-fixture.js";

const NODE24 = `${OPENCLAW_IMAGE_DIR}/${OPENCLAW_BIN.node}`;
const OPENCLAW = `${OPENCLAW_IMAGE_DIR}/${OPENCLAW_BIN.openclaw}`;
const ROOT = process.geteuid?.() === 0;
/** The agent's user, as a pool picks it: uid 10001 when the node is root, else the node's own. */
const USER = ROOT ? "10001:10001" : `${process.getuid?.()}:${process.getgid?.()}`;

let engine: DockerEngine;
let installed: InstalledOpenClaw;
let built: BuiltAgentImage;
const progress: string[] = [];

beforeAll(async () => {
  engine = await DockerEngine.start();
  installed = await openclawRuntime();
  built = await buildRuntimeImage(engine.docker, {
    runtime: "openclaw",
    progress: (line) => progress.push(line),
  });
  const what = built.cached ? "up to date" : `built in ${built.seconds} s`;
  const size = (built.bytes / 2 ** 20).toFixed(1);
  process.stderr.write(`${built.tag}: ${what}, ${size} MiB\n`);
});
afterAll(async () => {
  await engine?.[Symbol.asyncDispose]();
});

/**
 * Runs `cmd` under `entrypoint` in a container from the OpenClaw image, with a
 * pool container's hardening (docker-container-spec.ts), and returns its exit
 * code and output.
 */
async function run(
  entrypoint: string,
  cmd: string[],
  options: { workspace?: string; env?: string[] } = {},
): Promise<{ code: number; output: string }> {
  const docker: Docker = engine.docker;
  const container = await docker.createContainer({
    Image: OPENCLAW_AGENT_IMAGE,
    Entrypoint: [entrypoint],
    Cmd: cmd,
    User: USER,
    Env: ["HOME=/tmp", ...(options.env ?? [])],
    Tty: true,
    NetworkDisabled: true,
    HostConfig: {
      Init: true,
      ReadonlyRootfs: true,
      Tmpfs: { "/tmp": "rw,noexec,nosuid,nodev,size=512m,mode=1777" },
      Mounts: options.workspace
        ? [{ Type: "bind", Source: options.workspace, Target: "/workspace", ReadOnly: false }]
        : [],
      NetworkMode: "none",
      IpcMode: "none",
      CapDrop: ["ALL"],
      SecurityOpt: ["no-new-privileges"],
      Memory: 2 * 2 ** 30,
      MemorySwap: 2 * 2 ** 30,
      PidsLimit: 512,
    },
  });
  try {
    await container.start();
    const { StatusCode } = (await container.wait()) as { StatusCode: number };
    const logs = await container.logs({ stdout: true, stderr: true, follow: false });
    return { code: StatusCode, output: logs.toString("utf8") };
  } finally {
    await container.remove({ force: true });
  }
}

describe("the OpenClaw agent image", () => {
  it("is built from this host's install, says which runtime it holds, and is not built twice", async () => {
    const image = await engine.docker.getImage(OPENCLAW_AGENT_IMAGE).inspect();
    expect(image.Config.Labels?.[RUNTIME_LABEL]).toBe(`openclaw-${OPENCLAW_VERSION}`);
    expect(image.Config.User).toBe("10001:10001");
    expect(built.bytes).toBeGreaterThan(300 * 2 ** 20);
    if (!built.cached) {
      expect(progress.join("\n")).toMatch(
        new RegExp(`^OpenClaw ${OPENCLAW_VERSION} .*: \\d+ files, \\d+ links, [\\d.]+ MiB`, "m"),
      );
      // A context this big reports how far its send got.
      expect(progress.join("\n")).toMatch(/^sent [\d.]+ of [\d.]+ MiB \(\d+ files\)$/m);
    }
    const again = await buildRuntimeImage(engine.docker, { runtime: "openclaw" });
    expect(again).toMatchObject({ cached: true, id: image.Id, hash: built.hash });
    expect(again.seconds).toBeLessThan(20);
  });

  it("runs Node 24 and OpenClaw as a non-root user, on a read-only root with no network", async () => {
    const node = await run(NODE24, ["--version"]);
    expect(node).toEqual({ code: 0, output: `v${installed.nodeVersion}\r\n` });
    const openclaw = await run(NODE24, [OPENCLAW, "--version"]);
    expect(openclaw.code, openclaw.output).toBe(0);
    expect(openclaw.output).toMatch(
      new RegExp(`^OpenClaw ${OPENCLAW_VERSION.replace(/\./g, "\\.")}\\b`),
    );
  });

  it("keeps the install's bin links as links, owned by root and not writable", async () => {
    const probe = `
      const fs = require("node:fs");
      const d = ${JSON.stringify(OPENCLAW_IMAGE_DIR)};
      const st = (p) => fs.lstatSync(d + "/" + p);
      let write = "written";
      try { fs.writeFileSync(d + "/x", ""); } catch (e) { write = e.code; }
      // A prefix: the engine client would parse an answer that is all JSON.
      console.log("probe " + JSON.stringify({
        uid: process.getuid(),
        links: [${JSON.stringify(OPENCLAW_BIN.node)}, ${JSON.stringify(OPENCLAW_BIN.openclaw)}]
          .map((p) => st(p).isSymbolicLink() && fs.readlinkSync(d + "/" + p)),
        node: [fs.statSync(d + "/${OPENCLAW_BIN.node}").mode & 0o7777, st("node_modules").uid],
        entry: st("node_modules/openclaw/openclaw.mjs").mode & 0o7777,
        write,
      }));`;
    const { code, output } = await run(NODE24, ["-e", probe]);
    expect(code, output).toBe(0);
    const found = JSON.parse(output.replace(/^probe /, ""));
    expect(found).toEqual({
      uid: Number(USER.split(":")[0]),
      links: [
        expect.stringMatching(/^\.\.\/node-linux-\w+\/bin\/node$/),
        "../openclaw/openclaw.mjs",
      ],
      node: [0o555, 0],
      // npm made the bin target executable; the image keeps that, for everyone.
      entry: (await stat(installed.entry)).mode & 0o100 ? 0o555 : 0o444,
      write: "EROFS",
    });
    expect(found.uid).not.toBe(0);
  });

  it("starts `openclaw gateway run` with the config the driver writes", async () => {
    const workspace = await mkdtemp(path.join(tmpdir(), "clawfleet-openclaw-image-"));
    try {
      const port = 18_789;
      await writeOpenClawConfig(workspace, {
        workspace: "/workspace",
        stateDir: `/workspace/${OPENCLAW_STATE_DIR}`,
        port,
        model: {
          baseUrl: "http://127.0.0.1:18790/v1",
          api: "openai",
          model: "default",
          contextWindow: 128_000,
          maxTokens: 4096,
        },
      });
      if (ROOT) await chownTree(workspace, 10001, 10001);
      // The driver's launch (openclaw-driver.ts): OpenClaw's node on the bin links, a
      // private HOME under /tmp, state and config in the workspace, a token by env.
      const script = `
        const { spawn } = require("node:child_process");
        const fs = require("node:fs");
        const d = ${JSON.stringify(OPENCLAW_IMAGE_DIR)};
        const node = fs.realpathSync(d + "/${OPENCLAW_BIN.node}");
        const entry = fs.realpathSync(d + "/${OPENCLAW_BIN.openclaw}");
        for (const s of ["home", "cache"]) fs.mkdirSync("/tmp/s/" + s, { recursive: true });
        const t0 = Date.now();
        const child = spawn(node, [entry, "gateway", "run"], {
          cwd: "/workspace", detached: true, stdio: ["ignore", "pipe", "pipe"],
          env: { PATH: require("node:path").dirname(node), HOME: "/tmp/s/home", TMPDIR: "/tmp",
            XDG_CACHE_HOME: "/tmp/s/cache", LANG: "C.UTF-8",
            OPENCLAW_STATE_DIR: "/workspace/${OPENCLAW_STATE_DIR}",
            OPENCLAW_CONFIG_PATH: "/workspace/${OPENCLAW_CONFIG_FILE}",
            OPENCLAW_NO_AUTO_UPDATE: "1", OPENCLAW_OFFLINE: "1",
            OPENCLAW_GATEWAY_TOKEN: "a-test-token-of-enough-length" } });
        let out = "";
        child.stdout.on("data", (b) => { out += b; });
        child.stderr.on("data", (b) => { out += b; });
        const done = (line, code) => {
          try { process.kill(-child.pid, "SIGTERM"); } catch {}
          console.log(line + "\\n" + out.split("\\n").slice(-12).join("\\n"));
          setTimeout(() => process.exit(code), 2000);
        };
        child.on("exit", (c, s) => done("EXITED " + (s ?? c), 1));
        const poll = setInterval(async () => {
          try {
            const res = await fetch("http://127.0.0.1:${port}/readyz");
            if (res.status !== 200) return;
          } catch { return; }
          clearInterval(poll);
          done("READY " + (Date.now() - t0), 0);
        }, 200);
        setTimeout(() => done("NOT READY", 2), 150000);`;
      const { code, output } = await run(NODE24, ["-e", script], { workspace });
      expect(code, output).toBe(0);
      const ms = Number(/^READY (\d+)/m.exec(output)?.[1]);
      process.stderr.write(`openclaw gateway ready in the image after ${ms} ms\n`);
      expect(output).toMatch(/\[gateway\] ready/);
    } finally {
      await rm(workspace, { recursive: true, force: true });
    }
  });
});
