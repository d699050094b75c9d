/**
 * The liveness monitor tells a node that left from one that was lost: a node that
 * announced it is stopping and then deleted its key left (no warning); a node whose key
 * went without that announcement was lost. Either way its attempts are retried.
 */
import { describe, expect, it } from "vitest";
import { connectFleet } from "../../src/adapters/nats/fleet-nats.js";
import { systemClock } from "../../src/clock.js";
import { resolveFleetOptions } from "../../src/fleet-options.js";
import type { Logger } from "../../src/logger.js";
import type { NodeHeartbeat } from "../../src/protocol/fleet-messages.js";
import { LivenessMonitor } from "../../src/roles/liveness-monitor.js";
import { NatsServer } from "../harness/nats-server.js";

interface Line {
  level: "debug" | "info" | "warn" | "error";
  msg?: string;
  obj: Record<string, unknown>;
}

function capturingLogger(lines: Line[]): Logger {
  const at =
    (level: Line["level"]) =>
    (obj: Record<string, unknown>, msg?: string): void => {
      lines.push({ level, msg, obj });
    };
  const log: Logger = {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: () => log,
  };
  return log;
}

const heartbeat = (id: string, seq: number, stopping?: boolean): NodeHeartbeat => ({
  id,
  startedAt: "2026-01-01T00:00:00.000Z",
  at: new Date().toISOString(),
  seq,
  ...(stopping ? { stopping } : {}),
  pools: [],
  containers: [],
});

describe("the liveness monitor", () => {
  it("reads a node that announced stopping and deleted its key as leaving, not lost", async () => {
    await using nats = await NatsServer.start();
    const fleet = await connectFleet(nats.url);
    const lines: Line[] = [];
    const seen: NodeHeartbeat[] = [];
    const gone: string[] = [];
    let wake = () => {};
    const next = () => new Promise<void>((r) => (wake = r));
    // Long timeouts: only the deletes below end these nodes.
    const options = resolveFleetOptions({ nodeTimeoutMs: 60_000, leaseTtlMs: 60_000 });
    const monitor = new LivenessMonitor(fleet, options, systemClock, capturingLogger(lines), {
      nodeSeen: (hb) => {
        seen.push(hb);
        wake();
      },
      nodeLost: (id) => {
        gone.push(id);
        wake();
      },
      leaseExpired: () => {},
      running: () => [],
    });
    try {
      await monitor.start();
      const put = async (hb: NodeHeartbeat) => {
        const arrived = next();
        await fleet.kv.nodes.put(hb.id, JSON.stringify(hb));
        await arrived;
      };
      const del = async (id: string) => {
        const arrived = next();
        await fleet.kv.nodes.delete(id);
        await arrived;
      };

      await put(heartbeat("leaving", 1));
      await put(heartbeat("leaving", 2, true));
      await del("leaving");
      await put(heartbeat("vanishing", 1));
      await del("vanishing");

      expect(gone).toEqual(["leaving", "vanishing"]);
      const about = (node: string) =>
        lines.filter((l) => l.obj.node === node).map((l) => [l.level, l.msg]);
      expect(about("leaving")).toEqual([["info", "node left"]]);
      expect(about("vanishing")).toEqual([["warn", "node lost"]]);
    } finally {
      monitor.stop();
      await fleet.close();
    }
  });
});
