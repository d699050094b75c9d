/**
 * A task's end is made sure of by whoever takes its submission next. A leader
 * may stop after writing a task's final record and before closing its checkpoint
 * log, publishing its result and acking its submission; the next leader finds the
 * submission unacked and the record final, and finishes the job: the log closed
 * (so an attempt dispatched too late cannot run the turn again), the result
 * published once, the submission acked. The crash is set up exactly: the state a
 * stopped leader leaves is written directly, then an orchestrator starts.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectFleet, type FleetNats } from "../../src/adapters/nats/fleet-nats.js";
import { CheckpointLog } from "../../src/adapters/records/checkpoint-log.js";
import { resolveFleetOptions } from "../../src/fleet-options.js";
import type { TaskRecord } from "../../src/protocol/api-schemas.js";
import type { Submission } from "../../src/protocol/fleet-messages.js";
import { type LocalFleet, startLocalFleet } from "../../src/roles/fleet-roles.js";
import { retrying, withTimeout } from "../harness/arrivals.js";
import { NatsServer } from "../harness/nats-server.js";

describe("a task ended by a leader that stopped before its result", () => {
  let nats: NatsServer;
  let fleet: FleetNats;
  let roles: LocalFleet | undefined;
  let dataDir: string;

  beforeAll(async () => {
    nats = await NatsServer.start();
    dataDir = await mkdtemp(path.join(tmpdir(), "clawfleet-task-end-"));
    fleet = await connectFleet(nats.url, { name: "task-end" });
  });
  afterAll(async () => {
    await roles?.stop();
    await fleet?.close();
    await nats?.[Symbol.asyncDispose]();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it("is finished by the next leader: log closed, result published once, submission acked", async () => {
    const taskId = "t-ended";
    const createdAt = new Date().toISOString();
    const record: TaskRecord = {
      taskId,
      tenant: "default",
      session: "s",
      status: "succeeded",
      priority: "normal",
      attempts: 1,
      steps: 1,
      output: "done",
      createdAt,
      finishedAt: createdAt,
      history: [],
    };
    const submission: Submission = {
      taskId,
      tenant: "default",
      session: "s",
      input: "hello",
      priority: "normal",
      createdAt,
    };
    // What the stopped leader left: the final record, attempt 1's open log, the submission.
    await fleet.kv.tasks.put(taskId, JSON.stringify(record));
    const log = await CheckpointLog.open(fleet.kv.checkpoints, taskId, 1, "node-a");
    await log.append({ step: 1, name: "text", output: "done", at: createdAt });
    await fleet.js.publish(fleet.subjects.task("default", "s"), JSON.stringify(submission), {
      msgID: taskId,
    });

    const nc = await connect({ servers: nats.url });
    const results = nc.subscribe(fleet.subjects.result(taskId), { max: 1 });
    roles = await startLocalFleet(
      resolveFleetOptions({ natsUrl: nats.url, dataDir, nodeId: "orch" }),
      { roles: ["orchestrator"] },
    );
    const published = (async () => {
      for await (const m of results) return m.json<TaskRecord>();
    })();
    expect(await withTimeout(published, 15_000, "the result")).toEqual(record);
    await nc.close();

    expect(await CheckpointLog.read(fleet.kv.checkpoints, taskId)).toMatchObject({ ended: true });
    // A late attempt 2 cannot open the log any more.
    await expect(CheckpointLog.open(fleet.kv.checkpoints, taskId, 2, "node-b")).rejects.toThrow(
      /has ended/,
    );
    // Acked: nothing of the stream is left for the intake consumer, and one result is stored.
    // (The ack follows the result: wait for the server to have it.)
    await retrying(async () => {
      const info = await fleet.jsm.consumers.info(
        fleet.subjects.streams.tasks,
        fleet.subjects.consumers.tasks,
      );
      expect(info.num_ack_pending + info.num_pending).toBe(0);
    }, "the submission's ack");
    const stream = await fleet.jsm.streams.info(fleet.subjects.streams.results, {
      subjects_filter: fleet.subjects.result(taskId),
    });
    expect(stream.state.subjects?.[fleet.subjects.result(taskId)]).toBe(1);
  });
});
