/**
 * Model upstreams for tests, all on loopback:
 *
 * - {@link ModelStandIn}: aimock's `LLMock` (OpenAI chat and responses, Anthropic
 *   messages, JSON and SSE), strict, so a request no fixture matches is a loud 503
 *   rather than a quiet 404;
 * - {@link RawUpstream}: a bare node HTTP server for what aimock will not do on
 *   cue (an answer that never comes, garbage, a stream written in lock-step with
 *   the test), which hands each request to the test as an event.
 *
 * ```ts
 * const model = await ModelStandIn.start();
 * model.countUserMessages();            // "I see 2 user messages", with usage
 * // point an upstream at `${model.url}/v1` (OpenAI) or `model.url` (Anthropic)
 * await model.stop();                   // in afterAll
 * ```
 *
 * aimock keeps some counters module-global: one stand-in per test file.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import {
  type ChatCompletionRequest,
  type FixtureOpts,
  type JournalEntry,
  LLMock,
} from "@copilotkit/aimock";

// Node 20 defines Symbol.asyncDispose; see nats-server.ts.
(Symbol as { asyncDispose?: symbol }).asyncDispose ??= Symbol.for("Symbol.asyncDispose");

/** Token counts every {@link ModelStandIn.countUserMessages} answer reports. */
export const STAND_IN_USAGE = { input: 100, output: 10 } as const;

/** What {@link ModelStandIn.countUserMessages} answers for a conversation with `n` user messages. */
export function userCountAnswer(n: number): string {
  return `I see ${n} user messages`;
}

/** aimock on a free loopback port; see the module comment. */
export class ModelStandIn implements AsyncDisposable {
  private constructor(
    /** The mock itself, for fixtures (`on`, `prependFixture`, `nextRequestError`) and its journal. */
    readonly mock: LLMock,
    /** `http://127.0.0.1:<port>`: an Anthropic upstream's baseUrl; OpenAI's is {@link openaiUrl}. */
    readonly url: string,
  ) {}

  /** Starts an LLMock on 127.0.0.1, port 0, strict. */
  static async start(): Promise<ModelStandIn> {
    const mock = new LLMock({ host: "127.0.0.1", port: 0, strict: true, journalMaxEntries: 0 });
    const url = await mock.start();
    return new ModelStandIn(mock, url.replace(/\/+$/, ""));
  }

  /** The OpenAI-style base URL: `<url>/v1`. */
  get openaiUrl(): string {
    return `${this.url}/v1`;
  }

  /**
   * A fixture for every chat request (appended: fixtures added before it win):
   * the answer says how many user messages it saw, so a test can tell what the
   * upstream received, and reports {@link STAND_IN_USAGE} in the provider's own names.
   */
  countUserMessages(options: FixtureOpts = {}): this {
    this.mock.on(
      { predicate: () => true },
      (req: ChatCompletionRequest) => ({
        content: userCountAnswer(req.messages.filter((m) => m.role === "user").length),
        usage: {
          prompt_tokens: STAND_IN_USAGE.input,
          completion_tokens: STAND_IN_USAGE.output,
          input_tokens: STAND_IN_USAGE.input,
          output_tokens: STAND_IN_USAGE.output,
        },
      }),
      options,
    );
    return this;
  }

  /** Every request the stand-in received, oldest first. */
  requests(): JournalEntry[] {
    return this.mock.getRequests();
  }

  /** The last request received; throws when there is none. */
  lastRequest(): JournalEntry {
    const last = this.mock.getLastRequest();
    if (!last) throw new Error("the model stand-in received no request");
    return last;
  }

  async stop(): Promise<void> {
    await this.mock.stop();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** One request to a {@link RawUpstream}: its head and body, and its response to write. */
export interface RawExchange {
  readonly req: IncomingMessage;
  readonly body: string;
  readonly res: ServerResponse;
}

type RawHandler = (exchange: RawExchange) => void;

/** A bare loopback HTTP server; see the module comment. */
export class RawUpstream implements AsyncDisposable {
  private readonly waiters: Array<(e: RawExchange) => void> = [];
  private readonly unclaimed: RawExchange[] = [];

  private constructor(
    private readonly server: Server,
    /** `http://127.0.0.1:<port>`. */
    readonly url: string,
  ) {}

  /**
   * Starts a server that passes each request, body read, to `handler`; without
   * one, requests wait (unanswered) for {@link next}.
   */
  static async start(handler?: RawHandler): Promise<RawUpstream> {
    let self: RawUpstream | undefined;
    const server = createServer((req, res) => {
      const parts: Buffer[] = [];
      req.on("data", (d: Buffer) => parts.push(d));
      req.on("end", () =>
        self!.arrived({ req, body: Buffer.concat(parts).toString(), res }, handler),
      );
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    self = new RawUpstream(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    return self;
  }

  /** A loopback URL nothing listens on (a port just released). */
  static async closedUrl(): Promise<string> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    return `http://127.0.0.1:${port}`;
  }

  /** The next request received (handled or not), as soon as its body is read. */
  next(): Promise<RawExchange> {
    const ready = this.unclaimed.shift();
    if (ready) return Promise.resolve(ready);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private arrived(exchange: RawExchange, handler: RawHandler | undefined): void {
    handler?.(exchange);
    const waiter = this.waiters.shift();
    if (waiter) waiter(exchange);
    else this.unclaimed.push(exchange);
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}
