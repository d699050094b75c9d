/**
 * The host end of the model bridge on one agent link: the agent's shim sends a
 * `model_request`, the relay hands it to the running turn's `onModelCall` hook
 * (which forwards it to the model gateway) and writes the answer back as
 * `model_response`, `model_chunk`s and one `model_end`, in order.
 *
 * Every request gets exactly one `model_end`, whatever happens (no hook, a
 * refused request, a failed call, the turn ending first), so the agent's HTTP
 * client is never left waiting: a bridge that cannot answer says so at once.
 * A failure of the bridge itself (not an upstream's HTTP error, which the agent
 * sees as it is) is also reported to the connection, which stops the turn with
 * it: the turn fails with the model error's code instead of the agent retrying
 * a dead endpoint for minutes.
 */
import { ClawfleetError, ErrorCodes, ModelError } from "../../errors.js";
import type { Logger } from "../../logger.js";
import type { AgentMessage } from "../../protocol/agent-protocol.js";
import type { ModelCallHook } from "./pool-adapter.js";

type ModelRequestLine = Extract<AgentMessage, { type: "model_request" }>;

interface InflightCall {
  readonly controller: AbortController;
}

/** Relays one agent's model calls; see the module comment. */
export class ModelRelay {
  private readonly inflight = new Map<number, InflightCall>();

  constructor(
    /** Writes one host message to the agent. */
    private readonly write: (msg: unknown) => void,
    /** Called when a call failed in the bridge: the connection stops the turn with it. */
    private readonly onBridgeFailure: (err: ClawfleetError) => void,
    private readonly logger: Logger,
  ) {}

  /** Relays `msg` through `hook`, the running turn's, or refuses it when no turn runs. */
  request(msg: ModelRequestLine, hook: ModelCallHook | undefined): void {
    if (this.inflight.has(msg.id)) {
      this.fail(
        msg.id,
        new ModelError(ErrorCodes.MODEL_BRIDGE_FAILED, `model request ${msg.id} sent twice`),
      );
      return;
    }
    if (hook === undefined) {
      const err = new ModelError(
        ErrorCodes.MODEL_CALL_OUTSIDE_TURN,
        "the agent called its model while no turn was running",
      );
      this.end(msg.id, err);
      return;
    }
    if (msg.bodyBytes !== undefined) {
      // The shim refused a body over its cap and sent only its size.
      this.fail(
        msg.id,
        new ModelError(
          ErrorCodes.MODEL_REQUEST_TOO_LARGE,
          `model request of ${msg.bodyBytes} bytes is over the limit`,
        ),
      );
      return;
    }
    const call: InflightCall = { controller: new AbortController() };
    this.inflight.set(msg.id, call);
    let began = false;
    const sink = {
      head: (status: number, headers: Record<string, string>) => {
        if (began || !this.inflight.has(msg.id)) return;
        began = true;
        this.write({ type: "model_response", id: msg.id, status, headers });
      },
      chunk: (data: string) => {
        if (!began || !this.inflight.has(msg.id) || data === "") return;
        this.write({ type: "model_chunk", id: msg.id, data });
      },
    };
    const { type: _type, id: _id, bodyBytes: _bytes, ...request } = msg;
    hook(request, sink, call.controller.signal).then(
      (error) => {
        if (!this.inflight.has(msg.id)) return;
        if (error) this.fail(msg.id, error);
        else this.end(msg.id);
      },
      (err: unknown) => {
        if (!this.inflight.has(msg.id)) return;
        const reason = err instanceof Error ? err.message : String(err);
        this.fail(
          msg.id,
          err instanceof ClawfleetError
            ? err
            : new ModelError(ErrorCodes.MODEL_BRIDGE_FAILED, `model call failed: ${reason}`, {
                cause: err,
              }),
        );
      },
    );
  }

  /** The agent's client went away: stop relaying call `id`. */
  abort(id: number): void {
    const call = this.inflight.get(id);
    if (!call) return;
    this.inflight.delete(id);
    call.controller.abort();
  }

  /** The turn ended: every call still in flight ends with `reason`. */
  abortAll(reason: ClawfleetError): void {
    for (const [id, call] of [...this.inflight]) {
      call.controller.abort();
      this.end(id, reason);
    }
  }

  /** Calls in flight (for tests and status). */
  get size(): number {
    return this.inflight.size;
  }

  private fail(id: number, err: ClawfleetError): void {
    this.end(id, err);
    // Canceled calls are the turn's own doing, not a bridge failure.
    if (err.code !== ErrorCodes.CANCELED) this.onBridgeFailure(err);
  }

  private end(id: number, err?: ClawfleetError): void {
    this.inflight.delete(id);
    if (err) this.logger.info({ id, code: err.code, err: err.message }, "model call failed");
    this.write({ type: "model_end", id, ...(err ? { error: err.toInfo() } : {}) });
  }
}
