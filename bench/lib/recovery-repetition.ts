/**
 * One repetition of the recovery bench: the task it runs, a fresh session's task with
 * one fault injected right after its step {@link FAULT_AFTER} is checkpointed, and the
 * times from the fault to the fleet's detection, requeue, resume and end.
 */
import type { ChaosFleet } from "../../test/harness/chaos-fleet.js";
import type { Cleanup } from "./cleanup.js";
import { round } from "./measure.js";
import {
  addNode,
  type FaultKind,
  gone,
  inject,
  locate,
  release,
  settled,
  type TimedEvent,
  type timedEvents,
} from "./recovery-faults.js";
import type { Rep } from "./recovery-report.js";
import { progress } from "./report.js";

/** The fault is injected once this step is checkpointed, while the agent runs the next one. */
export const FAULT_AFTER = 3;
/** Timeline lines that end a task. */
const TERMINAL = ["succeeded", "failed", "canceled"];
/** Bound of each wait for the fleet; far above every expected figure. */
const WAIT_MS = 60_000;

/** The task: three quick checkpointed steps, the step the fault lands in, then two more. */
export function taskOps(sleepMs: number): object[] {
  const line = (n: number) => ({
    op: "write",
    path: "progress.md",
    text: `step ${n}\n`,
    append: true,
  });
  return [
    line(1),
    line(2),
    line(3),
    { op: "sleep", ms: sleepMs },
    line(5),
    { op: "reply", text: "recovered" },
  ];
}

/** What every repetition shares: the fleet, its recorded events and the nodes alive. */
export interface Ctx {
  readonly fleet: ChaosFleet;
  readonly events: ReturnType<typeof timedEvents>["events"];
  /** Nodes alive now. */
  live: string[];
  nextNode: number;
  readonly params: Readonly<Record<"reps" | "warmup" | "sleep", number>>;
  /** The fleet's options, for a node started in place of a killed one. */
  readonly config: object;
  readonly input: string;
  readonly cleanup: Cleanup;
}

/** Tasks one repetition may start before it gives up on landing its fault in time. */
const MAX_TRIES = 3;

/**
 * One measured repetition: a fresh session's task, the fault right after its step 3, and
 * the recovery. Should the task get past step 4 before the fault (a slow /proc scan on a
 * busy host), nothing is injected and a new task is started, at most {@link MAX_TRIES} times.
 */
export async function runRep(
  ctx: Ctx,
  kind: FaultKind,
  rep: number,
  warmup: boolean,
): Promise<Rep> {
  for (let tries = 1; ; tries++) {
    const session = `${warmup ? "warmup" : kind}-${rep}${tries > 1 ? `-try${tries}` : ""}`;
    const r = await faultOnce(ctx, kind, rep, session).catch((err: unknown) => {
      if (err instanceof FatalError) throw err;
      return failedRep(rep, session, (err as Error).message.split("\n")[0]!);
    });
    if (r !== "late") return { ...r, tries };
    progress(`${kind} ${rep}: the task passed step ${FAULT_AFTER + 1} before the fault; again`);
    if (tries === MAX_TRIES) {
      return {
        ...failedRep(rep, session, `the fault came late ${MAX_TRIES} times`),
        tries,
      };
    }
  }
}

/** A failure the bench cannot go on after. */
class FatalError extends Error {}

/** A repetition that ended before anything was measured. */
function failedRep(rep: number, session: string, error: string): Rep {
  return {
    rep,
    session,
    task_id: null,
    tries: 1,
    node: null,
    container: null,
    detected_by: null,
    detect_ms: null,
    requeue_ms: null,
    placed_ms: null,
    resume_ms: null,
    first_step_ms: null,
    done_ms: null,
    resumed_on: null,
    resumed_after_step: null,
    status: null,
    attempts: null,
    agent_left_running: false,
    error,
  };
}

/** One task with one fault; "late" if the task got past the step the fault is meant for. */
async function faultOnce(
  ctx: Ctx,
  kind: FaultKind,
  rep: number,
  session: string,
): Promise<Rep | "late"> {
  const { fleet, events } = ctx;
  await settled(fleet, ctx.live, WAIT_MS);
  const { taskId } = await fleet.client.submit({
    session,
    input: ctx.input,
    idempotencyKey: `recovery-${session}`,
  });
  const of = (match: (e: TimedEvent) => boolean, what: string) =>
    events.waitFor((e) => e.taskId === taskId && match(e), `${what} of ${taskId}`, WAIT_MS);
  const node = (type: string, attempt: number) => (e: TimedEvent) =>
    e.source === "task" && e.type === type && e.attempt === attempt;
  const line = (type: string, attempt: number) => (e: TimedEvent) =>
    e.source === "timeline" && e.type === type && e.attempt === attempt;
  const pastFaultStep = () =>
    events.items.some(
      (e) =>
        e.taskId === taskId &&
        ((node("step", 1)(e) && (e.step ?? 0) > FAULT_AFTER) ||
          (e.source === "timeline" && TERMINAL.includes(e.type))),
    );

  const started = await of(node("started", 1), "attempt 1's start");
  const target = await locate(fleet, started.node!, started.container!);
  await of((e) => node("step", 1)(e) && e.step === FAULT_AFTER, `step ${FAULT_AFTER}`);
  if (pastFaultStep()) {
    await fleet.finished(taskId, WAIT_MS).catch(() => {});
    return "late";
  }
  let agentStopped = false;
  const faultAt = performance.now();
  inject(kind, target);
  if (kind === "agent-hang") {
    agentStopped = true;
    ctx.cleanup.defer(`release stopped agent ${target.agentPid}`, () => release(target.agentPid));
  }
  const since = (e: TimedEvent | null) => (e === null ? null : round(e.seenAt - faultAt, 1));

  let detect: TimedEvent | null = null;
  let requeued: TimedEvent | null = null;
  let resumed: TimedEvent | null = null;
  let firstStep: TimedEvent | null = null;
  let done: TimedEvent | null = null;
  let placed: TimedEvent | null = null;
  let status: string | null = null;
  let attempts: number | null = null;
  let error: string | undefined;
  let leftRunning = false;
  try {
    detect = await of(
      kind === "node-kill" ? line("requeued", 1) : node("failed", 1),
      "the loss of attempt 1",
    );
    requeued = await of(line("requeued", 1), "the requeue");
    resumed = await of(node("started", 2), "attempt 2's start");
    firstStep = await of(node("step", 2), "attempt 2's first step");
    done = await of((e) => e.source === "timeline" && TERMINAL.includes(e.type), "the end");
    placed = events.items.find((e) => e.taskId === taskId && line("placed", 2)(e)) ?? null;
    const record = await fleet.finished(taskId, WAIT_MS);
    status = record.status;
    attempts = record.attempts;
    if (record.status !== "succeeded" || record.attempts !== 2) {
      error = `ended ${record.status} after ${record.attempts} attempts: ${record.error?.code ?? ""} ${record.error?.message ?? ""}`;
    }
    const late = events.items.some(
      (e) => e.taskId === taskId && node("step", 1)(e) && (e.step ?? 0) > FAULT_AFTER,
    );
    if (late) error ??= `attempt 1 checkpointed a step after ${FAULT_AFTER}: the fault came late`;
  } catch (err) {
    error = (err as Error).message.split("\n")[0];
    progress(`${kind} ${rep}: ${await fleet.diagnose(taskId).catch(() => "")}`);
  }
  // The fleet gave the attempt up: its agent must be gone by now, or soon.
  if (!(await gone(target.agentPid, 10_000))) {
    leftRunning = true;
    error ??= `agent ${target.agentPid} still alive 10 s after the attempt was given up`;
  }
  if (agentStopped || leftRunning) release(target.agentPid);
  if (kind === "node-kill") {
    // Without a second node the next kills have nowhere to resume: that ends the bench.
    await replaceNode(ctx, target.node).catch((err: unknown) => {
      throw new FatalError(`could not replace ${target.node}: ${(err as Error).message}`);
    });
  }

  return {
    rep,
    session,
    task_id: taskId,
    tries: 1,
    node: target.node,
    container: target.container,
    detected_by: detect?.error?.code ?? null,
    detect_ms: since(detect),
    requeue_ms: since(requeued),
    placed_ms: since(placed),
    resume_ms: since(resumed),
    first_step_ms: since(firstStep),
    done_ms: since(done),
    resumed_on: resumed
      ? { node: resumed.node!, container: resumed.container!, rung: placedRung(placed) }
      : null,
    resumed_after_step: firstStep?.step === undefined ? null : firstStep.step - 1,
    status,
    attempts,
    agent_left_running: leftRunning,
    ...(error === undefined ? {} : { error }),
  };
}

/** The placement rung of attempt 2, as the `placed` line names it. */
function placedRung(placed: TimedEvent | null): string | null {
  const rung = (placed as { rung?: unknown } | null)?.rung;
  return typeof rung === "string" ? rung : null;
}

/** Waits for the killed node to exit and starts a fresh one, so the next kill has a survivor. */
async function replaceNode(ctx: Ctx, killed: string): Promise<void> {
  await ctx.fleet.nodes.get(killed)?.exited;
  ctx.live = ctx.live.filter((n) => n !== killed);
  const id = `node-${ctx.nextNode++}`;
  progress(`starting ${id} in place of ${killed}`);
  await addNode(ctx.fleet, id, ctx.config, 1);
  ctx.live.push(id);
}
