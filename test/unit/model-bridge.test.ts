/**
 * The model bridge inside one agent link, end to end in-process: an agent's
 * HTTP client → the shim on loopback → protocol lines → the host's relay → the
 * turn's model hook, and the answer back chunk by chunk. The node → gateway leg
 * is tested against a real NATS server in test/integration/model-gateway.test.ts.
 */
import { PassThrough } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { AgentConnection } from "../../src/adapters/agent-link/agent-connection.js";
import type {
  AgentModelRequest,
  ModelCallHook,
  TurnHooks,
} from "../../src/adapters/agent-link/pool-adapter.js";
import { AgentHost } from "../../src/agents/agent-host.js";
import type {
  AgentHostConfig,
  DriverContext,
  RuntimeDriver,
} from "../../src/agents/runtime-driver.js";
import { AgentHostConfigSchema } from "../../src/agents/runtime-driver.js";
import { ClawfleetError, ErrorCodes, ModelError } from "../../src/errors.js";
import { agentPeer } from "../harness/agent-peer.js";
import { deferred } from "../harness/deferred.js";

/** A driver whose turn is whatever the test makes it do with the context. */
class ScriptDriver implements RuntimeDriver {
  readonly name = "script";
  readonly capabilities = ["release"];
  released = 0;
  constructor(private readonly body: (ctx: DriverContext) => Promise<string>) {}
  async start(): Promise<void> {}
  runTurn(_turn: unknown, ctx: DriverContext): Promise<string> {
    return this.body(ctx);
  }
  async release(): Promise<void> {
    this.released++;
  }
  async stop(): Promise<void> {}
}

const config: AgentHostConfig = AgentHostConfigSchema.parse({
  runtime: "command",
  command: { argv: ["true"] },
  model: { upstream: "up1", model: "m1" },
  maxRequestBytes: 4096,
  heartbeatMs: 50,
});

function untilAborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) =>
    signal.addEventListener("abort", () => resolve(), { once: true }),
  );
}

const hostsToStop: (() => void)[] = [];
afterEach(() => {
  for (const stop of hostsToStop.splice(0)) stop();
});

/** An agent host with `driver`, linked to a real AgentConnection through in-memory pipes. */
async function link(driver: RuntimeDriver) {
  const toHost = new PassThrough();
  const toAgent = new PassThrough();
  const exited = deferred<number>();
  const conn = new AgentConnection({
    input: toHost,
    output: toAgent,
    heartbeatMs: 1000,
    missedHeartbeats: 10,
  });
  const host = new AgentHost(config, "/nonexistent-workspace", () => driver, {
    input: toAgent,
    write: (line) => toHost.write(line),
    diag: () => {},
    exit: (code) => exited.resolve(code),
  });
  await host.start();
  await conn.waitReady(5000);
  hostsToStop.push(() => {
    toAgent.end();
    conn.close(new ModelError(ErrorCodes.INTERNAL, "test over"));
  });
  return { conn, exited: exited.promise };
}

const hooks = (onModelCall?: ModelCallHook): TurnHooks => ({
  async onStep() {},
  async onEffect() {},
  onLog() {},
  ...(onModelCall ? { onModelCall } : {}),
});
const turn = {
  type: "turn" as const,
  taskId: "t1",
  attempt: 1,
  tenant: "a",
  session: "s",
  input: "hi",
};
const run = (conn: AgentConnection, h: TurnHooks, signal = new AbortController().signal) =>
  conn.runTurn(turn, h, { timeoutMs: 30_000, signal });

describe("model bridge (shim ↔ relay)", () => {
  it("relays a request without credentials and streams the answer chunk by chunk", async () => {
    const seen: AgentModelRequest[] = [];
    const firstChunkRead = deferred<void>();
    const driver = new ScriptDriver(async (ctx) => {
      expect(ctx.model.env.OPENAI_BASE_URL).toBe(`${ctx.model.url}/up1`);
      expect(ctx.model.env.OPENAI_API_KEY).toBe("clawfleet-no-key");
      const res = await fetch(`${ctx.model.baseUrl}/v1/chat/completions?x=1`, {
        method: "POST",
        headers: {
          authorization: "Bearer sk-should-not-travel",
          "x-api-key": "also-not",
          "content-type": "application/json",
        },
        body: JSON.stringify({ model: "m1", stream: true }),
      });
      const reader = res.body!.getReader();
      const decoder = new TextDecoder();
      const parts: string[] = [];
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parts.push(decoder.decode(value, { stream: true }));
        firstChunkRead.resolve();
      }
      return `${res.status} ${res.headers.get("content-type")} ${parts.join("")}`;
    });
    const { conn } = await link(driver);
    const output = run(
      conn,
      hooks(async (request, sink) => {
        seen.push(request);
        sink.head(200, { "content-type": "text/event-stream" });
        sink.chunk("data: one\n\n");
        // The agent reads the first chunk before the second exists: streamed, not buffered.
        await firstChunkRead.promise;
        sink.chunk("data: [DONE]\n\n");
        return undefined;
      }),
    );
    await expect(output).resolves.toBe("200 text/event-stream data: one\n\ndata: [DONE]\n\n");
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({
      upstream: "up1",
      method: "POST",
      path: "/v1/chat/completions?x=1",
      body: JSON.stringify({ model: "m1", stream: true }),
    });
    expect(seen[0]!.headers).not.toHaveProperty("authorization");
    expect(seen[0]!.headers).not.toHaveProperty("x-api-key");
    expect(seen[0]!.headers["content-type"]).toBe("application/json");
  });

  it("fails the turn with the bridge's code, and the agent's client gets it at once", async () => {
    let clientSaw = "";
    const driver = new ScriptDriver(async (ctx) => {
      const res = await fetch(`${ctx.model.baseUrl}/v1/chat/completions`, {
        method: "POST",
        body: "{}",
      });
      clientSaw = `${res.status} ${await res.text()}`;
      // A real agent would retry for minutes; the host has already stopped the turn.
      await untilAborted(ctx.signal);
      throw new Error("aborted");
    });
    const { conn } = await link(driver);
    const output = run(
      conn,
      hooks(
        async () =>
          new ModelError(ErrorCodes.MODEL_GATEWAY_UNAVAILABLE, "no model gateway is running"),
      ),
    );
    const err = (await output.catch((e: unknown) => e)) as ClawfleetError;
    expect(err).toBeInstanceOf(ClawfleetError);
    expect(err.code).toBe(ErrorCodes.MODEL_GATEWAY_UNAVAILABLE);
    expect(err.retryable).toBe(true);
    expect(clientSaw).toMatch(/^503 /);
    expect(JSON.parse(clientSaw.slice(4))).toMatchObject({
      error: { code: "MODEL_GATEWAY_UNAVAILABLE", type: "clawfleet_error" },
    });
  });

  it("refuses a body over the shim's cap without sending it, and fails the turn", async () => {
    let called = false;
    let status = 0;
    const driver = new ScriptDriver(async (ctx) => {
      const res = await fetch(`${ctx.model.baseUrl}/v1/chat/completions`, {
        method: "POST",
        body: "x".repeat(10_000),
      });
      status = res.status;
      await res.text();
      await untilAborted(ctx.signal);
      throw new ModelError(ErrorCodes.CANCELED, "stopped");
    });
    const { conn } = await link(driver);
    const err = (await run(
      conn,
      hooks(async () => {
        called = true;
        return undefined;
      }),
    ).catch((e: unknown) => e)) as ClawfleetError;
    expect(err.code).toBe(ErrorCodes.MODEL_REQUEST_TOO_LARGE);
    expect(err.retryable).toBe(false);
    expect(status).toBe(413);
    expect(called).toBe(false);
  });

  it("refuses model calls when the turn has no model hook, and answers garbage paths", async () => {
    const statuses: number[] = [];
    const driver = new ScriptDriver(async (ctx) => {
      for (const url of [`${ctx.model.baseUrl}/v1/models`, `${ctx.model.url}/bad%20name/v1`]) {
        const res = await fetch(url);
        statuses.push(res.status);
        await res.text();
      }
      return "ok";
    });
    const { conn } = await link(driver);
    // No hook: the call is refused (409) and the turn goes on; a path naming no upstream is a 400.
    await expect(run(conn, hooks())).resolves.toBe("ok");
    expect(statuses).toEqual([409, 400]);
  });

  it("tells the relay when the agent's client gives up, and aborts the hook's call", async () => {
    const aborted = deferred<void>();
    const driver = new ScriptDriver(async (ctx) => {
      const controller = new AbortController();
      const res = fetch(`${ctx.model.baseUrl}/v1/chat/completions`, {
        method: "POST",
        body: "{}",
        signal: controller.signal,
      }).catch(() => null);
      await called.promise;
      controller.abort();
      await res;
      await aborted.promise;
      return "gave up";
    });
    const called = deferred<void>();
    const { conn } = await link(driver);
    const output = run(
      conn,
      hooks(async (_req, _sink, signal) => {
        called.resolve();
        await untilAborted(signal);
        aborted.resolve();
        return new ModelError(ErrorCodes.CANCELED, "aborted by the client");
      }),
    );
    await expect(output).resolves.toBe("gave up");
  });

  it("passes release to the driver between turns", async () => {
    const driver = new ScriptDriver(async () => "ok");
    const { conn } = await link(driver);
    await conn.release();
    await conn.release();
    expect(driver.released).toBe(2);
  });
});

describe("model relay on the protocol", () => {
  it("answers a request outside a turn with MODEL_CALL_OUTSIDE_TURN", async () => {
    const p = agentPeer();
    await p.send({ type: "ready" });
    await p.send({
      type: "model_request",
      id: 7,
      upstream: "u",
      method: "POST",
      path: "/v1/x",
    });
    expect(await p.next("model_end")).toMatchObject({
      id: 7,
      error: { code: ErrorCodes.MODEL_CALL_OUTSIDE_TURN },
    });
    expect(p.conn.alive).toBe(true);
  });
});
