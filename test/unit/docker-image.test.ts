/**
 * The agent image's parts without an engine: the registry-free build context
 * (test/docker builds and runs it for real), the bundled agent, and the rules
 * the production Dockerfile must keep.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import {
  AGENT_UID,
  agentImageContext,
  bundleAgent,
  nodeRuntimeFiles,
} from "../../src/adapters/docker/docker-image.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

describe("the registry-free agent image context", () => {
  it("holds node and its libraries, the bundled agent, a health check and an agent user; nothing else", async () => {
    const { binary, libs } = await nodeRuntimeFiles();
    const context = await agentImageContext();
    const names = context.entries.map((e) => e.name);
    expect(names).toEqual([
      "Dockerfile",
      "rootfs/app",
      "rootfs/app/agent.mjs",
      "rootfs/app/runtime-agent.mjs",
      "rootfs/app/healthcheck.mjs",
      "rootfs/etc",
      "rootfs/etc/passwd",
      "rootfs/etc/group",
      "rootfs/tmp",
      "rootfs/workspace",
      "rootfs/usr/local/bin/node",
      ...libs.map((l) => `rootfs${l}`),
    ]);
    expect(context.entries.find((e) => e.name === "rootfs/usr/local/bin/node")?.file).toBe(binary);
    const passwd = context.entries.find((e) => e.name === "rootfs/etc/passwd")?.data?.toString();
    expect(passwd).toContain(`agent:x:${AGENT_UID}:${AGENT_UID}:`);
    const dockerfile = context.entries[0]!.data!.toString();
    expect(dockerfile).toMatch(/^FROM scratch$/m);
    expect(dockerfile).toMatch(new RegExp(`^USER ${AGENT_UID}:${AGENT_UID}$`, "m"));
    expect(dockerfile).toMatch(/^HEALTHCHECK /m);
    expect(dockerfile).toContain(context.hash);
    // The same project makes the same image: the hash is the cache key.
    expect((await agentImageContext()).hash).toBe(context.hash);
  });

  it("bundles an agent that runs on plain node, without tsx", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "clawfleet-bundle-"));
    try {
      const file = path.join(dir, "agent.mjs");
      await writeFile(file, await bundleAgent());
      const child = spawn(process.execPath, [file], {
        env: { CLAWFLEET_WORKSPACE: dir, CLAWFLEET_HEARTBEAT_MS: "1000" },
        stdio: ["pipe", "pipe", "inherit"],
      });
      const [first] = (await once(child.stdout, "data")) as [Buffer];
      expect(JSON.parse(first.toString().split("\n")[0]!)).toMatchObject({
        type: "ready",
        agent: "scripted",
      });
      child.stdin.end();
      await once(child, "close");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("docker/Dockerfile", () => {
  it("is multi-stage, pins its bases by digest, runs as non-root with a health check and no secrets", async () => {
    const text = await readFile(path.join(ROOT, "docker/Dockerfile"), "utf8");
    const bases = [...text.matchAll(/^ARG \w+_IMAGE=(\S+)$/gm)].map((m) => m[1]!);
    expect(bases).toHaveLength(2);
    for (const base of bases) expect(base).toMatch(/@sha256:[0-9a-f]{64}$/);
    expect(text.match(/^FROM /gm)).toHaveLength(2);
    const user = /^USER (\d+):(\d+)$/m.exec(text);
    expect(Number(user?.[1])).toBeGreaterThan(0);
    expect(text).toMatch(/^HEALTHCHECK .*\n\s+CMD \[/m);
    expect(text).not.toMatch(/^(ENV|ARG)\s.*(SECRET|TOKEN|PASSWORD|KEY)/im);
    const ignore = await readFile(path.join(ROOT, "docker/Dockerfile.dockerignore"), "utf8");
    expect(ignore.split("\n")[1]).toBe("*");
  });
});
