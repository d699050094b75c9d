/**
 * The model gateway end to end: a real nats-server, the gateway role, the node's
 * `callModel`, and upstreams on loopback — aimock for real provider answers
 * (OpenAI and Anthropic, JSON and SSE, a 429), bare HTTP servers for what goes
 * wrong (an answer that never comes, garbage, a closed port). Waits are on
 * events (a request reaching an upstream, a chunk reaching the sink), never on
 * fixed sleeps; timeouts under test are a few hundred milliseconds of the
 * gateway's own timers.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { NatsConnection } from "@nats-io/nats-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  callModel,
  type ModelCallOptions,
  type ModelCallOutcome,
} from "../../src/adapters/model/model-client.js";
import { ConfigError, ErrorCodes } from "../../src/errors.js";
import type { Logger } from "../../src/logger.js";
import { ModelGatewaySchema } from "../../src/model-gateway-options.js";
import { fleetSubjects } from "../../src/protocol/fleet-subjects.js";
import type { ModelCallRequest } from "../../src/protocol/model-messages.js";
import { ModelGateway } from "../../src/roles/model-gateway.js";
import { deferred } from "../harness/deferred.js";
import {
  ModelStandIn,
  RawUpstream,
  STAND_IN_USAGE,
  userCountAnswer,
} from "../harness/model-stand-in.js";
import { NatsServer } from "../harness/nats-server.js";

const KEY = "sk-test-7f3a9c1e5b2d4f60a8e1";
const FILE_KEY = "ant-test-2b8e4d6f0a1c3e5f7091";
const subjects = fleetSubjects("mg");

/** A logger that keeps every line, bindings included, as JSON text. */
function capturingLogger(lines: string[], bindings: Record<string, unknown> = {}): Logger {
  const log = (level: string) => (obj: Record<string, unknown>, msg?: string) => {
    lines.push(JSON.stringify({ level, ...bindings, ...obj, msg }));
  };
  return {
    debug: log("debug"),
    info: log("info"),
    warn: log("warn"),
    error: log("error"),
    child: (more) => capturingLogger(lines, { ...bindings, ...more }),
  };
}

const chat = (...users: string[]) =>
  JSON.stringify({ model: "m1", messages: users.map((content) => ({ role: "user", content })) });

describe("model gateway", () => {
  let nats: NatsServer;
  let gatewayNc: NatsConnection;
  let nc: NatsConnection;
  let spy: NatsConnection;
  let model: ModelStandIn;
  let hang: RawUpstream;
  let garbage: RawUpstream;
  let lockstep: RawUpstream;
  let echo: RawUpstream;
  let mirror: RawUpstream;
  let gateway: ModelGateway;
  let dir: string;
  const logs: string[] = [];
  /** Everything the gateway sent back (every reply inbox), to look for the keys in. */
  const wire: string[] = [];
  /** Requests published on the model subject. */
  const published: string[] = [];

  beforeAll(async () => {
    nats = await NatsServer.start();
    gatewayNc = await nats.connect();
    nc = await nats.connect();
    spy = await nats.connect();
    spy.subscribe("_INBOX.>", { callback: (_e, m) => void wire.push(m.string()) });
    spy.subscribe(subjects.modelCall, { callback: (_e, m) => void published.push(m.string()) });
    await spy.flush();

    model = await ModelStandIn.start();
    // Streamed answers come a few characters at a time, with a pause between writes.
    model.mock.on(
      { userMessage: "stream slowly" },
      { content: "one two three four" },
      {
        chunkSize: 4,
        latency: 15,
      },
    );
    model.countUserMessages();
    hang = await RawUpstream.start();
    garbage = await RawUpstream.start(({ req, res }) => {
      if (req.url === "/json") {
        res.writeHead(200, { "content-type": "application/json" }).end("not json");
      } else if (req.url === "/sse") {
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.end('data: {"ok":true}\n\ndata: oops\n\ndata: [DONE]\n\n');
      } else if (req.url === "/stall") {
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.write('data: {"n":1}\n\n');
      } else if (req.url === "/big") {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ pad: "x".repeat(10_000) }));
      }
    });
    lockstep = await RawUpstream.start();
    // Echoes the credential it was sent, as "invalid key" errors of real providers do.
    echo = await RawUpstream.start(({ req, res }) => {
      res.writeHead(401, { "content-type": "application/json", "set-cookie": "s=1" });
      res.end(JSON.stringify({ error: `bad key: ${req.headers.authorization}` }));
    });
    // aimock's journal masks credentials: this one shows the exact headers it was sent.
    mirror = await RawUpstream.start(({ res }) => {
      res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}');
    });
    dir = await mkdtemp(path.join(tmpdir(), "clawfleet-model-"));
    const keyFile = path.join(dir, "anthropic.key");
    await writeFile(keyFile, `${FILE_KEY}\n`);
    const fast = { idleTimeoutMs: 300, timeoutMs: 2000 };
    const settings = ModelGatewaySchema.parse({
      maxRequestBytes: 4096,
      maxResponseBytes: 8192,
      upstreams: {
        default: { baseUrl: model.openaiUrl, keyEnv: "TEST_MODEL_KEY" },
        claude: { baseUrl: model.url, api: "anthropic", keyFile },
        mirror: { baseUrl: mirror.url, keyEnv: "TEST_MODEL_KEY" },
        "mirror-claude": { baseUrl: mirror.url, api: "anthropic", keyFile },
        local: { baseUrl: mirror.url },
        hang: { baseUrl: hang.url, ...fast },
        slow: { baseUrl: hang.url, idleTimeoutMs: 60_000 },
        garbage: { baseUrl: garbage.url, ...fast },
        lockstep: { baseUrl: lockstep.url },
        echo: { baseUrl: echo.url, keyEnv: "TEST_MODEL_KEY" },
        down: { baseUrl: await RawUpstream.closedUrl() },
      },
    });
    gateway = new ModelGateway({
      nats: { nc: gatewayNc, subjects },
      settings,
      logger: capturingLogger(logs),
      env: { TEST_MODEL_KEY: ` ${KEY} ` },
    });
    await gateway.start();
  });

  afterAll(async () => {
    await gateway?.stop();
    for (const upstream of [hang, garbage, lockstep, echo, mirror]) await upstream?.stop();
    await model?.stop();
    await nats?.[Symbol.asyncDispose]();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const outcomes: ModelCallOutcome[] = [];

  /** One call through the gateway, recording what reached the sink. */
  async function call(
    upstream: string,
    init: Partial<ModelCallRequest> & { onChunk?: (data: string) => void } = {},
    options: Partial<ModelCallOptions> = {},
    to = subjects,
  ) {
    const heads: Array<{ status: number; headers: Record<string, string> }> = [];
    const chunks: string[] = [];
    const { onChunk, ...fields } = init;
    const request: ModelCallRequest = {
      upstream,
      method: "POST",
      path: "/chat/completions",
      headers: { "content-type": "application/json" },
      body: chat("hello"),
      tenant: "t1",
      session: "s1",
      taskId: "task-1",
      attempt: 1,
      node: "node-a",
      container: "c1",
      ...fields,
    };
    const outcome = await callModel(
      { nc, subjects: to },
      request,
      {
        head: (status, headers) => heads.push({ status, headers }),
        chunk: (data) => {
          chunks.push(data);
          onChunk?.(data);
        },
      },
      {
        signal: new AbortController().signal,
        maxWaitMs: 10_000,
        stallMs: 5_000,
        maxRequestBytes: 1 << 20,
        ...options,
      },
    );
    outcomes.push(outcome);
    return { outcome, heads, chunks, body: chunks.join("") };
  }

  it("relays a JSON answer, with the upstream's usage in the summary", async () => {
    const r = await call("default", { body: chat("hi", "again") });
    expect(r.outcome.error).toBeUndefined();
    expect(r.heads).toHaveLength(1);
    expect(r.heads[0]!.status).toBe(200);
    expect(r.heads[0]!.headers["content-type"]).toMatch(/^application\/json/);
    expect(r.heads[0]!.headers["x-request-id"]).toBeDefined();
    expect(r.heads[0]!.headers["access-control-allow-origin"]).toBeUndefined();
    const answer = JSON.parse(r.body) as { choices: Array<{ message: { content: string } }> };
    expect(answer.choices[0]!.message.content).toBe(userCountAnswer(2));
    expect(r.outcome.summary).toMatchObject({
      provider: "default",
      model: "m1",
      status: 200,
      stream: false,
      usage: STAND_IN_USAGE,
    });
    expect(r.outcome.summary.latencyMs).toBeGreaterThanOrEqual(0);
  });

  it("relays an SSE answer chunk by chunk, with the usage of its last chunk", async () => {
    const body = JSON.stringify({
      model: "m1",
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: "user", content: "stream slowly" }],
    });
    const r = await call("default", { body });
    expect(r.outcome.error).toBeUndefined();
    expect(r.heads[0]).toMatchObject({
      status: 200,
      headers: { "content-type": "text/event-stream" },
    });
    expect(r.chunks.length).toBeGreaterThan(1);
    const events = r.body
      .split("\n\n")
      .filter((e) => e !== "")
      .map((e) => e.replace(/^data: /, ""));
    expect(events.at(-1)).toBe("[DONE]");
    const deltas = events
      .slice(0, -1)
      .map((e) => JSON.parse(e) as { choices: Array<{ delta: { content?: string } }> })
      .map((e) => e.choices[0]?.delta.content ?? "");
    expect(deltas.join("")).toBe("one two three four");
    expect(r.outcome.summary).toMatchObject({ status: 200, stream: true, model: "m1" });
    expect(r.outcome.summary.usage).toBeDefined();
  });

  it("relays each streamed piece before the upstream writes the next", async () => {
    const first = deferred<void>();
    const pending = call("lockstep", { onChunk: () => first.resolve() });
    const { res } = await lockstep.next();
    res.writeHead(200, { "content-type": "text/event-stream" });
    res.write('data: {"n":1}\n\n');
    await first.promise;
    res.end('data: {"n":2,"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\ndata: [DONE]\n\n');
    const r = await pending;
    expect(r.outcome.error).toBeUndefined();
    expect(r.chunks[0]).toBe('data: {"n":1}\n\n');
    expect(r.body).toBe(
      'data: {"n":1}\n\ndata: {"n":2,"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\ndata: [DONE]\n\n',
    );
    expect(r.outcome.summary).toMatchObject({ stream: true, usage: { input: 3, output: 4 } });
  });

  it("streams Anthropic answers with the key from keyFile and usage from message_start and message_delta", async () => {
    const body = JSON.stringify({
      model: "claude-x",
      max_tokens: 100,
      stream: true,
      messages: [{ role: "user", content: "hi" }],
    });
    const r = await call("claude", {
      path: "/v1/messages",
      headers: {
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": "agent",
      },
      body,
    });
    expect(r.outcome.error).toBeUndefined();
    expect(r.body).toContain("event: message_start");
    expect(r.outcome.summary).toMatchObject({
      provider: "claude",
      model: "claude-x",
      stream: true,
    });
    expect(r.outcome.summary.usage).toEqual(STAND_IN_USAGE);
    // aimock masks the value: that it is the key is the mirror's to show, below.
    const seen = model.lastRequest().headers;
    expect(seen["x-api-key"]).toBe("[REDACTED]");
    expect(seen.authorization).toBeUndefined();
  });

  it("relays an upstream's 429 as it is, retry-after and rate-limit headers included", async () => {
    model.mock.nextRequestError(429, { message: "slow down", type: "rate_limit_error" });
    const r = await call("default");
    expect(r.outcome.error).toBeUndefined();
    expect(r.heads[0]!.status).toBe(429);
    expect(r.heads[0]!.headers["retry-after"]).toBeDefined();
    expect(Object.keys(r.heads[0]!.headers).some((h) => h.startsWith("x-ratelimit-"))).toBe(true);
    expect(JSON.parse(r.body)).toMatchObject({ error: { message: "slow down" } });
    expect(r.outcome.summary.status).toBe(429);
  });

  it("puts the gateway's key in place of the agent's credentials", async () => {
    const agentHeaders = {
      "content-type": "application/json",
      Authorization: "Bearer agent-token",
      "x-api-key": "agent-key",
      cookie: "a=1",
      "accept-encoding": "gzip",
      "x-trace": "kept",
    };
    const openai = call("mirror", { headers: agentHeaders });
    const seen = (await mirror.next()).req.headers;
    expect((await openai).outcome.error).toBeUndefined();
    expect(seen.authorization).toBe(`Bearer ${KEY}`);
    expect(seen["x-api-key"]).toBeUndefined();
    expect(seen.cookie).toBeUndefined();
    expect(seen["accept-encoding"]).toBe("identity");
    expect(seen["x-trace"]).toBe("kept");

    const anthropic = call("mirror-claude", {
      path: "/v1/messages",
      headers: { ...agentHeaders, "anthropic-version": "2023-06-01" },
    });
    const seenByClaude = (await mirror.next()).req.headers;
    expect((await anthropic).outcome.error).toBeUndefined();
    expect(seenByClaude["x-api-key"]).toBe(FILE_KEY);
    expect(seenByClaude["anthropic-version"]).toBe("2023-06-01");
    expect(seenByClaude.authorization).toBeUndefined();

    const local = call("local", { headers: agentHeaders });
    const seenLocally = (await mirror.next()).req.headers;
    expect((await local).outcome.error).toBeUndefined();
    expect(seenLocally.authorization).toBeUndefined();
    expect(seenLocally["x-api-key"]).toBeUndefined();
  });

  it("redacts a key the upstream quotes, and drops its cookies", async () => {
    const r = await call("echo");
    expect(r.heads[0]!.status).toBe(401);
    expect(r.heads[0]!.headers["set-cookie"]).toBeUndefined();
    expect(r.body).toBe(JSON.stringify({ error: "bad key: Bearer [redacted]" }));
  });

  it("ends a call for an unknown upstream MODEL_UPSTREAM_UNKNOWN", async () => {
    const r = await call("nope");
    expect(r.outcome.error).toMatchObject({
      code: ErrorCodes.MODEL_UPSTREAM_UNKNOWN,
      retryable: false,
    });
    expect(r.heads).toEqual([]);
    expect(r.outcome.summary).toMatchObject({ provider: "nope", status: 0 });
    const inherited = await call("constructor");
    expect(inherited.outcome.error?.code).toBe(ErrorCodes.MODEL_UPSTREAM_UNKNOWN);
  });

  it("refuses a request over the limit before sending it, and so does the gateway", async () => {
    const before = model.requests().length;
    await spy.flush();
    const sent = published.length;
    const body = chat("x".repeat(3000));
    const local = await call("default", { body }, { maxRequestBytes: 1024 });
    expect(local.outcome.error).toMatchObject({ code: ErrorCodes.MODEL_REQUEST_TOO_LARGE });
    expect(local.outcome.summary.status).toBe(0);

    const remote = await call("default", { body: chat("y".repeat(5000)) });
    expect(remote.outcome.error).toMatchObject({
      code: ErrorCodes.MODEL_REQUEST_TOO_LARGE,
      retryable: false,
    });
    expect(model.requests().length).toBe(before);
    // The spy has every message the server routed before its flush: only the second call.
    await spy.flush();
    const sentNow = published.slice(sent);
    expect(sentNow).toHaveLength(1);
    expect(sentNow[0]).toContain("yyyy");
  });

  it("ends an answer over maxResponseBytes MODEL_RESPONSE_TOO_LARGE", async () => {
    const r = await call("garbage", { path: "/big" });
    expect(r.outcome.error).toMatchObject({ code: ErrorCodes.MODEL_RESPONSE_TOO_LARGE });
    expect(r.heads).toEqual([]);
  });

  it("says MODEL_GATEWAY_UNAVAILABLE at once when no gateway listens", async () => {
    const started = Date.now();
    const r = await call("default", {}, {}, fleetSubjects("nobody"));
    expect(r.outcome.error).toMatchObject({
      code: ErrorCodes.MODEL_GATEWAY_UNAVAILABLE,
      retryable: true,
    });
    expect(r.outcome.summary).toMatchObject({ provider: "default", model: "m1", status: 0 });
    // An upper bound only: no-responders comes back from the server, not a timer.
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it("times out an upstream that never answers MODEL_UPSTREAM_TIMEOUT", async () => {
    const r = await call("hang");
    expect(r.outcome.error).toMatchObject({
      code: ErrorCodes.MODEL_UPSTREAM_TIMEOUT,
      retryable: true,
    });
    expect(r.outcome.error?.message).toMatch(/did not begin answering within 300 ms/);
    expect(r.heads).toEqual([]);
    await hang.next();
  });

  it("times out a stream that stops halfway, after its head", async () => {
    const r = await call("garbage", { path: "/stall" });
    expect(r.outcome.error).toMatchObject({ code: ErrorCodes.MODEL_UPSTREAM_TIMEOUT });
    expect(r.heads[0]!.status).toBe(200);
    expect(r.outcome.summary).toMatchObject({ status: 200, stream: true });
  });

  it("fails garbage MODEL_UPSTREAM_FAILED: JSON that does not parse, an SSE line that is not JSON", async () => {
    const json = await call("garbage", { path: "/json" });
    expect(json.outcome.error).toMatchObject({
      code: ErrorCodes.MODEL_UPSTREAM_FAILED,
      retryable: true,
    });
    expect(json.heads).toEqual([]);
    const sse = await call("garbage", { path: "/sse" });
    expect(sse.outcome.error).toMatchObject({ code: ErrorCodes.MODEL_UPSTREAM_FAILED });
    expect(sse.outcome.error?.message).toMatch(/neither JSON nor \[DONE\]/);
    expect(sse.body).not.toContain("oops");
  });

  it("fails a call to an upstream that is down MODEL_UPSTREAM_FAILED", async () => {
    const r = await call("down");
    expect(r.outcome.error).toMatchObject({
      code: ErrorCodes.MODEL_UPSTREAM_FAILED,
      retryable: true,
    });
    expect(r.outcome.error?.message).toMatch(/ECONNREFUSED/);
    expect(r.outcome.summary.status).toBe(0);
  });

  it("answers a malformed request with an end frame, and goes on serving", async () => {
    const frames: string[] = [];
    for await (const m of await nc.requestMany(subjects.modelCall, "not json", {
      strategy: "sentinel",
      noMux: true,
      maxWait: 5000,
    }))
      frames.push(m.string());
    expect(frames).toHaveLength(2);
    expect(JSON.parse(frames[0]!)).toMatchObject({
      kind: "end",
      seq: 0,
      error: { code: ErrorCodes.INVALID_REQUEST },
      retryable: false,
    });
    expect(frames[1]).toBe("");
    const invalid = await call("default", { attempt: 0 });
    expect(invalid.outcome.error).toMatchObject({ code: ErrorCodes.INVALID_REQUEST });
    expect(invalid.outcome.error?.message).toMatch(/at attempt/);
    expect((await call("default")).outcome.error).toBeUndefined();
  });

  it("serves calls concurrently, and stops a canceled one at once", async () => {
    const abort = new AbortController();
    const slow = call("slow", {}, { signal: abort.signal });
    const hung = await hang.next();
    // Another call completes while the first one waits for its upstream.
    expect((await call("default")).outcome.error).toBeUndefined();
    abort.abort();
    const r = await slow;
    expect(r.outcome.error).toMatchObject({ code: ErrorCodes.CANCELED, retryable: false });
    hung.res.destroy();
  });

  it("ends a call whose gateway falls silent MODEL_BRIDGE_FAILED", async () => {
    const r = await call("slow", {}, { stallMs: 200 });
    expect(r.outcome.error).toMatchObject({
      code: ErrorCodes.MODEL_BRIDGE_FAILED,
      retryable: true,
    });
    (await hang.next()).res.destroy();
  });

  it("ends the calls in flight MODEL_GATEWAY_UNAVAILABLE when it stops", async () => {
    const other = fleetSubjects("mg2");
    const second = new ModelGateway({
      nats: { nc: gatewayNc, subjects: other },
      settings: ModelGatewaySchema.parse({ upstreams: { slow: { baseUrl: hang.url } } }),
    });
    await second.start();
    const pending = call("slow", {}, {}, other);
    const hung = await hang.next();
    const closed = new Promise<void>((resolve) => hung.res.on("close", () => resolve()));
    await second.stop();
    const r = await pending;

    expect(r.outcome.error).toMatchObject({ code: ErrorCodes.MODEL_GATEWAY_UNAVAILABLE });
    await closed; // the upstream request was aborted, not left running
    expect(second.inflight).toBe(0);
  });

  it("refuses to start without a key it was told to read (ConfigError), naming no key", async () => {
    const missingEnv = new ModelGateway({
      nats: { nc: gatewayNc, subjects: fleetSubjects("mg3") },
      settings: ModelGatewaySchema.parse({
        upstreams: { a: { baseUrl: model.openaiUrl, keyEnv: "NO_SUCH_KEY_VAR" } },
      }),
      env: {},
    });
    await expect(missingEnv.start()).rejects.toThrow(ConfigError);
    await expect(missingEnv.start()).rejects.toThrow(/NO_SUCH_KEY_VAR/);
    const missingFile = new ModelGateway({
      nats: { nc: gatewayNc, subjects: fleetSubjects("mg3") },
      settings: ModelGatewaySchema.parse({
        upstreams: { a: { baseUrl: model.openaiUrl, keyFile: path.join(dir, "absent.key") } },
      }),
    });
    await expect(missingFile.start()).rejects.toThrow(/cannot read its keyFile .*ENOENT/);
    const inUrl = new ModelGateway({
      nats: { nc: gatewayNc, subjects: fleetSubjects("mg3") },
      settings: ModelGatewaySchema.parse({
        upstreams: { a: { baseUrl: "http://user:hunter2@127.0.0.1:9/v1" } },
      }),
    });
    const refused = await inUrl.start().catch((err: Error) => err);
    expect(refused).toBeInstanceOf(ConfigError);
    expect((refused as Error).message).not.toContain("hunter2");
  });

  it("shows no key in any frame, summary, error or log line", async () => {
    await spy.flush();
    expect(wire.length).toBeGreaterThan(10);
    expect(logs.length).toBeGreaterThan(10);
    const seen = [
      ...wire,
      ...logs,
      ...outcomes.map((o) => JSON.stringify({ ...o, message: o.error?.message })),
    ];
    for (const key of [KEY, FILE_KEY]) expect(seen.filter((s) => s.includes(key))).toEqual([]);
  });
});
