/**
 * A real nats-server for tests, on a free loopback port with its own temporary store:
 *
 * ```ts
 * await using nats = await NatsServer.start();
 * const nc = await nats.connect();
 * ```
 *
 * Disposal closes every connection the harness handed out, stops the server and removes
 * the store. Early exits and start timeouts surface as the launcher's NatsServerError.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { type ConnectionOptions, connect, type NatsConnection } from "@nats-io/transport-node";
import {
  type NatsServerHandle,
  type StartNatsServerOptions,
  startNatsServer,
} from "../../src/adapters/nats/nats-server-process.js";
import { type Logger, silentLogger } from "../../src/logger.js";

// Node 20 defines Symbol.asyncDispose (and esbuild lowers `await using` to it); older
// runtimes would not, and a missing symbol would make disposal silently never run.
(Symbol as { asyncDispose?: symbol }).asyncDispose ??= Symbol.for("Symbol.asyncDispose");

/** Options of {@link NatsServer.start}. */
export interface NatsServerTestOptions {
  logger?: Logger;
  /** Passed to the launcher as is, e.g. a config template or a monitor port. */
  launch?: Omit<StartNatsServerOptions, "storeDir" | "port" | "logger">;
}

/** Connection defaults suited to tests that restart the server under live clients. */
const TEST_CONNECTION_DEFAULTS: Partial<ConnectionOptions> = {
  // Reconnect quickly and forever: a restart mid-test must not exhaust the attempts.
  reconnectTimeWait: 50,
  maxReconnectAttempts: -1,
};

/** A nats-server owned by one test; see the module comment. */
export class NatsServer implements AsyncDisposable {
  readonly storeDir: string;
  readonly #options: NatsServerTestOptions;
  readonly #connections = new Set<NatsConnection>();
  #handle: NatsServerHandle | undefined;
  #port: number;
  #disposed = false;

  private constructor(storeDir: string, handle: NatsServerHandle, options: NatsServerTestOptions) {
    this.storeDir = storeDir;
    this.#handle = handle;
    this.#port = handle.port;
    this.#options = options;
  }

  /** Starts a server on a free loopback port with a fresh temporary store directory. */
  static async start(options: NatsServerTestOptions = {}): Promise<NatsServer> {
    const storeDir = await mkdtemp(path.join(tmpdir(), "clawfleet-nats-"));
    try {
      const handle = await startNatsServer({
        ...options.launch,
        storeDir,
        port: 0,
        logger: options.logger ?? silentLogger,
      });
      return new NatsServer(storeDir, handle, options);
    } catch (err) {
      await rm(storeDir, { recursive: true, force: true });
      throw err;
    }
  }

  /** The client URL; stable across {@link restart}. */
  get url(): string {
    return `nats://127.0.0.1:${this.#port}`;
  }

  /** The client port; stable across {@link restart}. */
  get port(): number {
    return this.#port;
  }

  /** The running server's pid, or undefined while stopped. */
  get pid(): number | undefined {
    return this.#handle?.pid;
  }

  /** A client connection, closed when the harness is disposed. */
  async connect(options: Partial<ConnectionOptions> = {}): Promise<NatsConnection> {
    const nc = await connect({ ...TEST_CONNECTION_DEFAULTS, ...options, servers: this.url });
    this.#connections.add(nc);
    void nc.closed().then(() => this.#connections.delete(nc));
    return nc;
  }

  /** Stops the server and starts it again on the same port and store; JetStream data survives. */
  async restart(): Promise<void> {
    await this.stop();
    await this.startAgain();
  }

  /** Starts the server again after {@link stop}, on the same port and store. */
  async startAgain(): Promise<void> {
    if (this.#disposed) throw new Error("NatsServer was disposed");
    if (this.#handle !== undefined) return;
    this.#handle = await startNatsServer({
      ...this.#options.launch,
      storeDir: this.storeDir,
      port: this.#port,
      logger: this.#options.logger ?? silentLogger,
    });
  }

  /** Stops the server, keeping its store (and port) for {@link startAgain}. */
  async stop(): Promise<void> {
    const handle = this.#handle;
    this.#handle = undefined;
    await handle?.stop();
  }

  /** Closes the harness's connections, stops the server and removes its store. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    await Promise.all([...this.#connections].map((nc) => nc.close().catch(() => {})));
    await this.stop();
    await rm(this.storeDir, { recursive: true, force: true });
  }
}
