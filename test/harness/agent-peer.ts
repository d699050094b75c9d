/**
 * The agent end of an {@link AgentConnection}, played by a test over a pair of
 * real streams, on a simulated clock: `send` writes an agent line, `next`
 * waits for the host's next message of a type.
 */
import { once } from "node:events";
import { PassThrough } from "node:stream";
import { SimulatedClock } from "xstate";
import {
  AgentConnection,
  type AgentConnectionOptions,
  LineFramer,
} from "../../src/adapters/agent-link/agent-connection.js";

/** A connection and the test's end of it; see the module comment. */
export function agentPeer(
  options: Partial<Pick<AgentConnectionOptions, "cancelGraceMs" | "missedHeartbeats">> = {},
) {
  const fromAgent = new PassThrough();
  const toAgent = new PassThrough();
  const clock = new SimulatedClock();
  const conn = new AgentConnection({
    input: fromAgent,
    output: toAgent,
    heartbeatMs: 100,
    missedHeartbeats: 3,
    clock,
    ...options,
  });
  const received: unknown[] = [];
  const waiters: { pred: (m: unknown) => boolean; resolve: (m: unknown) => void }[] = [];
  const hostLines = new LineFramer(
    1 << 20,
    (line) => {
      const msg = JSON.parse(line) as unknown;
      const waiter = waiters.find((w) => w.pred(msg));
      if (waiter === undefined) received.push(msg);
      else {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(msg);
      }
    },
    () => {},
  );
  toAgent.on("data", (chunk: Buffer) => hostLines.push(chunk));
  /** Writes an agent line and resolves once the connection has consumed it. */
  async function send(msg: unknown): Promise<void> {
    const consumed = once(fromAgent, "data");
    fromAgent.write(`${JSON.stringify(msg)}\n`);
    await consumed;
  }
  /** Resolves with the next host message of `type` (or one already received). */
  function next(type: string): Promise<Record<string, unknown>> {
    const pred = (m: unknown) => (m as { type?: string }).type === type;
    const seen = received.find(pred);
    if (seen !== undefined) {
      received.splice(received.indexOf(seen), 1);
      return Promise.resolve(seen as Record<string, unknown>);
    }
    return new Promise((resolve) =>
      waiters.push({ pred, resolve: (m) => resolve(m as Record<string, unknown>) }),
    );
  }
  return { conn, clock, fromAgent, send, next };
}
