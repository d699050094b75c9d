/**
 * Shared pieces of the Docker tests: a unique fleet name per test, turns, a
 * command run inside a container (docker exec), and waiting for pool events.
 */
import { PassThrough } from "node:stream";
import type Docker from "dockerode";
import type { TurnHooks } from "../../src/adapters/agent-link/pool-adapter.js";
import type { DockerPoolEvent } from "../../src/adapters/docker/docker-pool.js";
import { type DockerFleetSettings, resolveFleetOptions } from "../../src/fleet-options.js";
import type { TurnMessage } from "../../src/protocol/agent-protocol.js";

export const MiB = 2 ** 20;

/** A fleet name no other test uses, so sweeps never touch another test's containers. */
export function uniqueFleet(stem: string): string {
  return `t${stem}${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
}

/** Node-wide Docker settings with test-friendly defaults. */
export function dockerSettings(over: Record<string, unknown> = {}): DockerFleetSettings {
  return resolveFleetOptions({ docker: { statsIntervalMs: 200, ...over } }).docker;
}

export const quietHooks: TurnHooks = { async onStep() {}, async onEffect() {}, onLog() {} };

export function turn(taskId: string, input: unknown, session = "s"): TurnMessage {
  const text = typeof input === "string" ? input : JSON.stringify(input);
  return { type: "turn", taskId, attempt: 1, tenant: "t", session, input: text };
}

/** Runs `cmd` in a running container as its user; resolves with stdout (stderr joined on failure). */
export async function execIn(docker: Docker, id: string, cmd: string[]): Promise<string> {
  const exec = await docker.getContainer(id).exec({
    Cmd: cmd,
    AttachStdout: true,
    AttachStderr: true,
  });
  const stream = await exec.start({ hijack: true, stdin: false });
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = "";
  let stderr = "";
  out.on("data", (c: Buffer) => {
    stdout += c.toString();
  });
  err.on("data", (c: Buffer) => {
    stderr += c.toString();
  });
  docker.modem.demuxStream(stream, out, err);
  await new Promise<void>((resolve) => {
    stream.on("end", resolve);
    stream.on("close", resolve);
  });
  const { ExitCode } = await exec.inspect();
  if (ExitCode !== 0) throw new Error(`exec ${cmd.join(" ")} exited ${ExitCode}: ${stderr}`);
  return stdout;
}

/** Records pool events and resolves waits on them (no sleeping). */
export class EventLog {
  readonly events: DockerPoolEvent[] = [];
  private waiters: {
    pred: (e: DockerPoolEvent) => boolean;
    resolve: (e: DockerPoolEvent) => void;
  }[] = [];

  readonly push = (e: DockerPoolEvent): void => {
    this.events.push(e);
    this.waiters = this.waiters.filter((w) => {
      if (!w.pred(e)) return true;
      w.resolve(e);
      return false;
    });
  };

  /** The first event (past or future) matching `pred`. */
  wait<T extends DockerPoolEvent["type"]>(
    type: T,
    pred: (e: Extract<DockerPoolEvent, { type: T }>) => boolean = () => true,
  ): Promise<Extract<DockerPoolEvent, { type: T }>> {
    const match = (e: DockerPoolEvent): boolean =>
      e.type === type && pred(e as Extract<DockerPoolEvent, { type: T }>);
    const past = this.events.find(match);
    if (past) return Promise.resolve(past as Extract<DockerPoolEvent, { type: T }>);
    return new Promise((resolve) => {
      this.waiters.push({
        pred: match,
        resolve: (e) => resolve(e as Extract<DockerPoolEvent, { type: T }>),
      });
    });
  }

  of<T extends DockerPoolEvent["type"]>(type: T): Extract<DockerPoolEvent, { type: T }>[] {
    return this.events.filter((e) => e.type === type) as Extract<DockerPoolEvent, { type: T }>[];
  }
}
