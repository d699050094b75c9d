/**
 * The agent's model endpoint inside its container: an HTTP server on the
 * container's own loopback that relays every request over the agent link
 * (`model_request`) and streams the answer back as it arrives (`model_response`,
 * `model_chunk`, `model_end`). The container has no network and no key; the node
 * forwards each call to the fleet's model gateway, which holds the keys.
 *
 * URL layout: `http://127.0.0.1:<port>/<upstream>/<path>` stands for
 * `<upstream's baseUrl>/<path>`, so an OpenAI client pointed at
 * `http://127.0.0.1:<port>/default` calls the `default` upstream transparently.
 *
 * The shim never waits on its own: every request ends with the host's
 * `model_end`, and a failure the bridge reports before the answer began becomes
 * an HTTP error with an OpenAI-style JSON body naming the clawfleet code.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { z } from "zod";
import { ErrorCodes, type ErrorInfo } from "../errors.js";
import type { HostMessageSchema } from "../protocol/agent-protocol.js";
import { MODEL_CREDENTIAL_HEADERS } from "../protocol/model-messages.js";

type HostMessage = z.output<typeof HostMessageSchema>;
type ModelAnswer = Extract<HostMessage, { type: "model_response" | "model_chunk" | "model_end" }>;

/** Request headers never relayed: credentials (the agent has only a dummy) and hop-by-hop ones. */
const DROPPED_HEADERS = new Set([
  ...MODEL_CREDENTIAL_HEADERS,
  "host",
  "connection",
  "content-length",
  "transfer-encoding",
  "keep-alive",
  "upgrade",
  "te",
  "trailer",
  "expect",
]);

const METHODS = new Set(["GET", "POST", "PUT", "PATCH", "DELETE"]);
const UPSTREAM = /^[A-Za-z0-9_-]{1,64}$/;

/** The HTTP status an agent's client sees for a bridge failure before any answer began. */
export function statusOfModelError(code: string): number {
  switch (code) {
    case ErrorCodes.INVALID_REQUEST:
      return 400;
    case ErrorCodes.MODEL_REQUEST_TOO_LARGE:
      return 413;
    case ErrorCodes.MODEL_UPSTREAM_UNKNOWN:
      return 404;
    case ErrorCodes.MODEL_UPSTREAM_TIMEOUT:
      return 504;
    case ErrorCodes.MODEL_CALL_OUTSIDE_TURN:
      return 409;
    case ErrorCodes.MODEL_GATEWAY_UNAVAILABLE:
    case ErrorCodes.CANCELED:
      return 503;
    default:
      return 502;
  }
}

interface PendingCall {
  readonly res: ServerResponse;
  began: boolean;
}

/** Options of a {@link ModelShim}. */
export interface ModelShimOptions {
  /** Writes one agent message to the host. */
  readonly send: (msg: unknown) => void;
  /** 0 picks a free port. */
  readonly port: number;
  /** Bodies over this are refused (413) and reported to the host by size only. */
  readonly maxRequestBytes: number;
}

/** The loopback model endpoint; see the module comment. */
export class ModelShim {
  private server: Server | undefined;
  private nextId = 1;
  private readonly calls = new Map<number, PendingCall>();

  constructor(private readonly options: ModelShimOptions) {}

  /** Listens on 127.0.0.1 and resolves with the root URL (`http://127.0.0.1:<port>`). */
  async listen(): Promise<string> {
    const server = createServer((req, res) => this.onRequest(req, res));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.options.port, "127.0.0.1", () => resolve());
    });
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  /** Hands the host's answer to the request it belongs to. */
  onHostMessage(msg: ModelAnswer): void {
    const call = this.calls.get(msg.id);
    if (!call) return;
    if (msg.type === "model_response") {
      if (call.began) return;
      call.began = true;
      call.res.writeHead(msg.status, msg.headers);
      // Streamed answers must reach the agent chunk by chunk, not when the buffer fills.
      call.res.flushHeaders();
    } else if (msg.type === "model_chunk") {
      if (call.began) call.res.write(msg.data);
    } else {
      this.calls.delete(msg.id);
      if (msg.error === undefined) {
        if (!call.began) call.res.writeHead(502);
        call.res.end();
      } else if (!call.began) this.answerError(call.res, msg.error);
      // Mid-answer: a torn stream must look torn to the client, not complete.
      else call.res.destroy();
    }
  }

  /** Stops listening and fails every open request. */
  async close(): Promise<void> {
    for (const [id, call] of this.calls) {
      this.calls.delete(id);
      call.res.destroy();
    }
    const server = this.server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://shim");
    const [, upstream = "", ...rest] = url.pathname.split("/");
    const method = req.method ?? "GET";
    if (!UPSTREAM.test(upstream) || !METHODS.has(method)) {
      req.resume();
      this.answerError(res, {
        code: ErrorCodes.INVALID_REQUEST,
        message: `not a model call: ${method} ${url.pathname} (expected /<upstream>/<path>)`,
      });
      return;
    }
    const id = this.nextId++;
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (value === undefined || DROPPED_HEADERS.has(name)) continue;
      headers[name] = Array.isArray(value) ? value.join(", ") : value;
    }
    const base = {
      type: "model_request",
      id,
      upstream,
      method,
      path: `/${rest.join("/")}${url.search}`,
      headers,
    };
    const parts: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > this.options.maxRequestBytes) over = true;
      else parts.push(chunk);
    });
    req.on("end", () => {
      this.calls.set(id, { res, began: false });
      if (over) this.options.send({ ...base, body: "", bodyBytes: size });
      else this.options.send({ ...base, body: Buffer.concat(parts).toString("utf8") });
    });
    // The client gave up (its own timeout, a cancel): stop the call upstream too.
    res.on("close", () => {
      if (!this.calls.delete(id) || res.writableFinished) return;
      this.options.send({ type: "model_abort", id });
    });
  }

  private answerError(res: ServerResponse, error: ErrorInfo): void {
    const body = JSON.stringify({
      error: { message: error.message, type: "clawfleet_error", code: error.code },
    });
    res.writeHead(statusOfModelError(error.code), { "content-type": "application/json" });
    res.end(body);
  }
}
