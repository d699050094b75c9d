/**
 * The tasks a leadership term holds open: one task actor each, and per session
 * the queue of its open tasks in submission order (stream sequence), whose head
 * is the only one that may be placed. Everything that decides about a task lives
 * in its actor; an entry here holds only what the runtime needs to reach NATS
 * for it (the submission to ack, the record's revision and write chain).
 */
import type { JsMsg } from "@nats-io/jetstream";
import type { Actor } from "xstate";
import type { taskMachine } from "../actors/task-machine.js";
import type { TaskRecord } from "../protocol/api-schemas.js";

/** One open task of this term. */
export interface OpenTask {
  readonly actor: Actor<typeof taskMachine>;
  /** The submission's stream sequence: the session's order. */
  readonly seq: number;
  /** `tenant/session`. */
  readonly sessionKey: string;
  /** The submission, acked when the task ends (null once acked or never held). */
  msg: JsMsg | null;
  /** The KV revision of the record as last written (compare-and-set). */
  revision: number;
  /** The record's JSON as last written, to skip writes that change nothing. */
  written: string;
  /** Record writes in order; the result is published at its end. */
  writing: Promise<void>;
  /** A record write failed for good: the record in KV is behind, so the task is not ended. */
  writeFailed: boolean;
  /** When this term saw the current attempt start running (for lease expiry). */
  runningSince: number;
  /** Resolves with the final record once it is written and published. */
  readonly done: Promise<TaskRecord>;
}

/** The open tasks and the sessions' queues of one term. */
export class OpenTasks {
  private readonly tasks = new Map<string, OpenTask>();
  private readonly sessions = new Map<string, string[]>();

  get(taskId: string): OpenTask | undefined {
    return this.tasks.get(taskId);
  }

  values(): IterableIterator<OpenTask> {
    return this.tasks.values();
  }

  /** Adds a task to its session's queue, in stream order (a redelivery may come late). */
  add(taskId: string, t: OpenTask): void {
    this.tasks.set(taskId, t);
    const queue = this.sessions.get(t.sessionKey) ?? [];
    let i = queue.length;
    while (i > 0 && this.tasks.get(queue[i - 1]!)!.seq > t.seq) i--;
    queue.splice(i, 0, taskId);
    this.sessions.set(t.sessionKey, queue);
  }

  /** Removes a finished task; the next one of its session becomes the head. */
  remove(taskId: string): void {
    const t = this.tasks.get(taskId);
    if (!t) return;
    this.tasks.delete(taskId);
    const queue = this.sessions.get(t.sessionKey);
    if (!queue) return;
    const i = queue.indexOf(taskId);
    if (i >= 0) queue.splice(i, 1);
    if (queue.length === 0) this.sessions.delete(t.sessionKey);
  }

  /** The open tasks of a session, in order. */
  ofSession(sessionKey: string): OpenTask[] {
    return (this.sessions.get(sessionKey) ?? []).map((id) => this.tasks.get(id)!);
  }

  /** The first open task of every session. */
  *heads(): Iterable<OpenTask> {
    for (const queue of this.sessions.values()) {
      const head = this.tasks.get(queue[0]!);
      if (head) yield head;
    }
  }

  clear(): void {
    this.tasks.clear();
    this.sessions.clear();
  }
}
