import { JetStreamApiError, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import {
  isCasConflict,
  isNoResponders,
  isNotFound,
  isRequestTimeout,
  isTransient,
  retryTransient,
  ServerApiCodes,
} from "../../src/adapters/nats/nats-retry.js";
import { systemClock } from "../../src/clock.js";
import { ErrorCodes, RetryableError } from "../../src/errors.js";
import { NatsServer } from "../harness/nats-server.js";

/** The error `p` rejects with. */
async function failure(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected a rejection");
}

describe("isTransient, on errors a real nats-server produces", () => {
  it("retries what a restart or an election looks like", async () => {
    await using nats = await NatsServer.start();
    const nc = await nats.connect();
    const noResponders = await failure(nc.request("nobody.listens", "x"));
    expect(isNoResponders(noResponders)).toBe(true);
    expect(isTransient(noResponders)).toBe(true);

    nc.subscribe("never.answers", { callback: () => {} });
    const timeout = await failure(nc.request("never.answers", "x", { timeout: 50 }));
    expect(isRequestTimeout(timeout)).toBe(true);
    expect(isTransient(timeout)).toBe(true);

    // What js.publish reports when no stream (or no JetStream yet) answers.
    const js = jetstream(nc);
    const noStream = await failure(js.publish("no.stream.here", "x"));
    expect(isTransient(noStream)).toBe(true);

    // The server is down: the request waits for a reconnect that does not come in time.
    const jsm = await jetstreamManager(nc, { timeout: 200 });
    await nats.stop();
    const down = await failure(jsm.streams.info("ANY"));
    expect(isTransient(down)).toBe(true);
    await nats.startAgain();
  });

  it("surfaces answers and a connection closed for good", async () => {
    await using nats = await NatsServer.start();
    const nc = await nats.connect();
    const jsm = await jetstreamManager(nc);
    const notFound = await failure(jsm.streams.info("NO_SUCH_STREAM"));
    expect(isNotFound(notFound)).toBe(true);
    expect(isTransient(notFound)).toBe(false);

    const kv = await new Kvm(nc).create("retry_test");
    await kv.create("k", "1");
    const conflict = await failure(kv.create("k", "2"));
    expect(isCasConflict(conflict)).toBe(true);
    expect(isTransient(conflict)).toBe(false);

    await nc.close();
    const closed = await failure(nc.request("any.subject", "x"));
    expect(isTransient(closed)).toBe(false);
  });

  it("surfaces bugs and our own verdicts", () => {
    expect(isTransient(new TypeError("x is not a function"))).toBe(false);
    expect(isTransient(z.string().safeParse(1).error)).toBe(false);
    expect(isTransient(new RetryableError(ErrorCodes.NODE_LOST, "our own error decides"))).toBe(
      false,
    );
  });

  it("retries the server's 'JetStream system temporarily unavailable'", () => {
    // Only a cluster mid-election answers this; the client builds it from the API reply.
    const unavailable = new JetStreamApiError({
      code: 503,
      err_code: ServerApiCodes.ClusterNotAvailable,
      description: "JetStream system temporarily unavailable",
    });
    expect(isTransient(unavailable)).toBe(true);
  });
});

describe("retryTransient", () => {
  it("surfaces a bug at its first occurrence, even without a limit of attempts", async () => {
    let calls = 0;
    const err = await failure(
      retryTransient(
        async () => {
          calls++;
          throw new TypeError("undefined is not an object");
        },
        { clock: systemClock },
      ),
    );
    expect(err).toBeInstanceOf(TypeError);
    expect(calls).toBe(1);
  });

  it("rides out no responders until someone answers", async () => {
    await using nats = await NatsServer.start();
    const nc = await nats.connect();
    let calls = 0;
    const reply = await retryTransient(
      async () => {
        // The responder appears after the first failure, as a restarted service would.
        if (++calls === 2)
          nc.subscribe("late.service", { callback: (_e, m) => void m.respond("up") });
        return (await nc.request("late.service", "x")).string();
      },
      { clock: systemClock, attempts: 5 },
    );
    expect(reply).toBe("up");
    expect(calls).toBe(2);
  });
});
