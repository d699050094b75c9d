import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import { connect } from "@nats-io/transport-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { renderNatsConfig } from "../../src/adapters/nats/nats-config.js";
import {
  ensureNatsServer,
  findNatsServer,
  installHint,
} from "../../src/adapters/nats/nats-server-binary.js";
import { startNatsServer } from "../../src/adapters/nats/nats-server-process.js";
import { ConfigError, NatsServerError } from "../../src/errors.js";
import { NatsServer } from "../harness/nats-server.js";

let scratch: string;
beforeEach(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), "clawfleet-nsp-"));
});
afterEach(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe("findNatsServer", () => {
  it("finds the installed nats-server even when PATH lacks /usr/sbin", () => {
    const found = findNatsServer({ pathEnv: "/nonexistent" });
    expect(found).not.toBeNull();
    expect(path.basename(found!)).toBe("nats-server");
    expect(findNatsServer()).toBe(found);
  });

  it("reports a missing server with the install hint", async () => {
    expect(findNatsServer({ pathEnv: "", dirs: [] })).toBeNull();
    const missing = ensureNatsServer({ search: { pathEnv: "", dirs: [] } });
    await expect(missing).rejects.toBeInstanceOf(NatsServerError);
    await expect(missing).rejects.toThrow(installHint());
    expect(installHint()).toContain("apt-get install -y nats-server");
    await expect(ensureNatsServer()).resolves.toBe(findNatsServer());
  });
});

describe("renderNatsConfig", () => {
  it("quotes strings, keeps numbers bare and rejects unknown placeholders", () => {
    expect(renderNatsConfig("a: {{A}}\nb: {{ B }}", { A: '/x "y"', B: -1 })).toBe(
      'a: "/x \\"y\\""\nb: -1',
    );
    expect(() => renderNatsConfig("a: {{NOPE}}", {})).toThrow(ConfigError);
  });
});

describe("NatsServer harness", () => {
  it("await using stops the server and removes its store", async () => {
    let pid: number | undefined;
    let storeDir = "";
    {
      await using nats = await NatsServer.start();
      pid = nats.pid;
      storeDir = nats.storeDir;
      await nats.connect();
      expect(existsSync(storeDir)).toBe(true);
    }
    expect(existsSync(storeDir)).toBe(false);
    expect(() => process.kill(pid!, 0)).toThrow();
  });
});

describe("startNatsServer", () => {
  it("runs JetStream, KV and the object store, and keeps KV data across a restart", async () => {
    await using nats = await NatsServer.start();
    const nc = await nats.connect();
    const kv = await new Kvm(nc).create("probe");
    await kv.put("greeting", "hello");
    const os = await new Objm(nc).create("probe-objects");
    const blob = new Uint8Array(1024 * 1024 + 7).fill(42); // a 1 MiB input fits
    await os.putBlob({ name: "blob" }, blob);
    expect((await os.getBlob("blob"))?.length).toBe(blob.length);

    const port = nats.port;
    const before = nats.pid;
    const reconnected = (async () => {
      for await (const status of nc.status()) if (status.type === "reconnect") return;
    })();
    await nats.restart();
    expect(nats.port).toBe(port);
    expect(nats.pid).not.toBe(before);
    await reconnected; // clients of the old server find the new one on the same port
    expect((await kv.get("greeting"))?.string()).toBe("hello");

    const fresh = await nats.connect();
    const after = await new Kvm(fresh).open("probe");
    expect((await after.get("greeting"))?.string()).toBe("hello");
    const streams = await (await jetstreamManager(fresh)).streams.names().next();
    expect(streams).toEqual(expect.arrayContaining(["KV_probe", "OBJ_probe-objects"]));
  });

  it("fails fast with the reason when the store is unusable", async () => {
    const storeDir = path.join(scratch, "store");
    await mkdir(storeDir);
    await writeFile(path.join(storeDir, "jetstream"), "not a directory");
    // "Fast" without a clock: the ready wait is far longer than the test's own timeout, so only
    // noticing the exit (not waiting the timeout out) can end it, and the message says which.
    const start = startNatsServer({
      storeDir,
      pidFile: path.join(scratch, "nats.pid"),
      startTimeoutMs: 10 * 60_000,
    });
    await expect(start).rejects.toBeInstanceOf(NatsServerError);
    await expect(start).rejects.toThrow(/exited before it was ready[\s\S]*not a directory/);
    expect(existsSync(path.join(scratch, "nats.pid"))).toBe(false);
  });

  it("fails fast on an invalid config and on a taken port, quoting the server", async () => {
    const template = path.join(scratch, "bad.conf");
    await writeFile(template, "port: {{PORT}}\nthis is { not a config\n");
    const bad = startNatsServer({ storeDir: path.join(scratch, "a"), configTemplate: template });
    await expect(bad).rejects.toThrow(NatsServerError);
    await expect(bad).rejects.toThrow(/[Pp]arse error/);

    await using nats = await NatsServer.start();
    const taken = startNatsServer({ storeDir: path.join(scratch, "b"), port: nats.port });
    await expect(taken).rejects.toThrow(/address already in use/);
  });

  it("times out with a clear error when the server never accepts clients", async () => {
    const binary = path.join(scratch, "silent-server");
    await writeFile(binary, "#!/bin/sh\necho 'pretending to start' >&2\nexec sleep 60\n", {
      mode: 0o755,
    });
    const start = startNatsServer({
      storeDir: path.join(scratch, "s"),
      binary,
      startTimeoutMs: 300,
    });
    await expect(start).rejects.toThrow(NatsServerError);
    await expect(start).rejects.toThrow(/did not accept clients within 300 ms[\s\S]*pretending/);
  });

  it("opens a loopback monitoring port only when asked", async () => {
    await using plain = await NatsServer.start();
    const handle = await startNatsServer({ storeDir: path.join(scratch, "m"), monitorPort: 0 });
    try {
      expect(handle.monitorUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const varz = (await (await fetch(`${handle.monitorUrl}/varz`)).json()) as Record<
        string,
        number
      >;
      expect(varz.max_payload).toBe(8 * 1024 * 1024);
      const config = await readFile(path.join(plain.storeDir, "nats-server.conf"), "utf8");
      expect(config).not.toMatch(/^\s*(http|monitor)/m);
    } finally {
      await handle.stop();
    }
  });

  it("stops a stale nats-server named by the pid file, then takes its port", async () => {
    const pidFile = path.join(scratch, "run", "nats.pid");
    const storeDir = path.join(scratch, "store");
    // A run that crashed without stopping its server leaves it alive and recorded.
    const stale = await startNatsServer({ storeDir, pidFile });
    expect((await readFile(pidFile, "utf8")).trim()).toBe(String(stale.pid));

    const messages: string[] = [];
    const next = await startNatsServer({
      storeDir,
      port: stale.port,
      pidFile,
      logger: capturingLogger(messages),
    });
    try {
      expect(await stale.exited).toEqual({ code: expect.any(Number), signal: null });
      expect(messages).toContain("stopping stale nats-server");
      expect((await readFile(pidFile, "utf8")).trim()).toBe(String(next.pid));
      const nc = await connect({ servers: next.url });
      await nc.close();
    } finally {
      await next.stop();
      await next.stop(); // idempotent
    }
    expect(existsSync(pidFile)).toBe(false);
  });

  it("leaves a live process that is not nats-server alone", async () => {
    const pidFile = path.join(scratch, "nats.pid");
    await writeFile(pidFile, `${process.pid}\n`);
    const messages: string[] = [];
    const handle = await startNatsServer({
      storeDir: path.join(scratch, "s"),
      pidFile,
      logger: capturingLogger(messages),
    });
    await handle.stop();
    expect(messages).toContain("pid file names a non-nats process");
  });
});

function capturingLogger(messages: string[]) {
  const logger = {
    debug: () => {},
    info: (_: Record<string, unknown>, msg?: string) => void messages.push(msg ?? ""),
    warn: (_: Record<string, unknown>, msg?: string) => void messages.push(msg ?? ""),
    error: (_: Record<string, unknown>, msg?: string) => void messages.push(msg ?? ""),
    child: () => logger,
  };
  return logger;
}
