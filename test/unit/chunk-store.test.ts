import { randomBytes } from "node:crypto";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { type ObjectStore, Objm } from "@nats-io/obj";
import { describe, expect, it } from "vitest";
import { isTransient } from "../../src/adapters/nats/nats-retry.js";
import { ChunkStore } from "../../src/adapters/snapshots/chunk-store.js";
import { systemClock } from "../../src/clock.js";
import { ClawfleetError, ErrorCodes } from "../../src/errors.js";
import { NatsServer } from "../harness/nats-server.js";

const BUCKET = "chunk_test";

/** A chunk store over a real bucket; `beforeGetBlob` runs at the exact point of a multi-message read. */
async function chunkStore(nc: NatsConnection, beforeGetBlob: () => Promise<void>) {
  const js = jetstream(nc);
  const os = await new Objm(js).create(BUCKET);
  const faulty = new Proxy(os, {
    get(target, prop, receiver) {
      if (prop !== "getBlob") return Reflect.get(target, prop, receiver);
      return async (name: string) => {
        await beforeGetBlob();
        return target.getBlob(name);
      };
    },
  }) as ObjectStore;
  const options = {
    compress: false,
    maxMessageBytes: 1024,
    refreshAfterMs: 60_000,
    cacheEntries: 10,
  };
  return new ChunkStore(faulty, BUCKET, js, await jetstreamManager(nc), options, systemClock);
}

describe("ChunkStore.read", () => {
  it("keeps a transient failure of a multi-message read retryable, never SNAPSHOT_CORRUPT", async () => {
    await using nats = await NatsServer.start();
    const nc = await nats.connect();
    let fault: unknown;
    const store = await chunkStore(nc, async () => {
      if (fault !== undefined) throw fault;
    });
    const data = randomBytes(4096); // four data messages: read through getBlob
    const hash = ChunkStore.hash(data);
    await store.ensure("acme", hash, data, Date.now());
    expect(await store.read("acme", hash)).toEqual(data);

    // The real error a request meets while a restarted server's service is not back yet.
    fault = await nc.request("nobody.listens", "x").catch((err: unknown) => err);
    const err = await store.read("acme", hash).catch((e: unknown) => e);
    expect(isTransient(err)).toBe(true);
    expect((err as ClawfleetError).code).not.toBe(ErrorCodes.SNAPSHOT_CORRUPT);

    fault = undefined;
    expect(await store.read("acme", hash)).toEqual(data);
  });

  it("keeps a failure of the client itself retryable: it says nothing of the stored bytes", async () => {
    await using nats = await NatsServer.start();
    const nc = await nats.connect();
    let fault: unknown;
    const store = await chunkStore(nc, async () => {
      if (fault !== undefined) throw fault;
    });
    const data = randomBytes(4096);
    const hash = ChunkStore.hash(data);
    await store.ensure("acme", hash, data, Date.now());
    // A real JetStream API refusal, as a consumer's stream may give while a server restarts.
    fault = await (await jetstreamManager(nc)).streams.info("nope").catch((e: unknown) => e);
    const err = await store.read("acme", hash).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCodes.SNAPSHOT_STORE_ERROR, retryable: true });
  });

  it("calls an object whose stored bytes the client rejects corrupt", async () => {
    await using nats = await NatsServer.start();
    const nc = await nats.connect();
    const store = await chunkStore(nc, async () => {
      // What the client throws when the digest of the bytes read does not match.
      throw new Error("received a corrupt object, digests do not match");
    });
    const data = randomBytes(4096);
    const hash = ChunkStore.hash(data);
    await store.ensure("acme", hash, data, Date.now());
    const err = await store.read("acme", hash).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClawfleetError);
    expect(err).toMatchObject({ code: ErrorCodes.SNAPSHOT_CORRUPT, retryable: false });
  });
});
