/**
 * A whole fleet for a test: a real nats-server (see {@link NatsServer}), every
 * role started as `clawfleet up` would (each with its own NATS connection), a
 * temporary data dir, and an API client.
 *
 * ```ts
 * await using fleet = await TestFleet.start({ pools: [{ minIdle: 1, max: 2 }] });
 * const task = await fleet.client.run({ session: "s", input: "hi" });
 * ```
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { SnapshotStore } from "../../src/adapters/snapshots/snapshot-store.js";
import { type FleetOptions, resolveFleetOptions } from "../../src/fleet-options.js";
import { FleetClient } from "../../src/gateway/fleet-client.js";
import type { Logger } from "../../src/logger.js";
import { type LocalFleet, type RoleName, startLocalFleet } from "../../src/roles/fleet-roles.js";
import { NatsServer } from "./nats-server.js";
import { readSessionFile } from "./session-file.js";

/** Options of {@link TestFleet.start}: fleet options plus which roles to run. */
export interface TestFleetOptions extends Omit<FleetOptions, "natsUrl" | "dataDir"> {
  roles?: readonly RoleName[];
  logger?: Logger;
}

/** A running fleet owned by one test. */
export class TestFleet implements AsyncDisposable {
  private constructor(
    readonly nats: NatsServer,
    readonly fleet: LocalFleet,
    readonly client: FleetClient,
    readonly dataDir: string,
  ) {}

  /** Starts nats-server, the roles and a client. */
  static async start(options: TestFleetOptions = {}): Promise<TestFleet> {
    const { roles, logger, ...fleetOptions } = options;
    const nats = await NatsServer.start();
    const dataDir = await mkdtemp(path.join(tmpdir(), "clawfleet-data-"));
    try {
      const resolved = resolveFleetOptions({
        nodeId: "node-a",
        ...fleetOptions,
        natsUrl: nats.url,
        dataDir,
      });
      const fleet = await startLocalFleet(resolved, { roles, logger });
      const client = new FleetClient(await nats.connect(), { prefix: resolved.prefix });
      return new TestFleet(nats, fleet, client, dataDir);
    } catch (err) {
      await nats.stop();
      await rm(dataDir, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * A file of the session's files as its next turn gets them (the latest known-good
   * version in the snapshot store), or null when the session or the file does not exist.
   */
  async sessionFile(session: string, file: string, tenant = "default"): Promise<string | null> {
    const nc = await this.nats.connect();
    try {
      const store = await SnapshotStore.open(nc, { prefix: this.fleet.options.prefix });
      return await readSessionFile(store, this.dataDir, tenant, session, file);
    } finally {
      await nc.close();
    }
  }

  /** The URL of the fleet's nats-server. */
  get url(): string {
    return this.nats.url;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.fleet.stop();
    await this.nats[Symbol.asyncDispose]();
    await rm(this.dataDir, { recursive: true, force: true });
  }
}
