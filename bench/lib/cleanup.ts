/**
 * Undo steps for a bench: every process and temp dir it starts registers how to end
 * it, and they run in reverse order when the bench ends, fails or gets SIGINT, SIGTERM
 * or SIGHUP.
 */
import { rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";

type Step = { readonly name: string; readonly fn: () => unknown };

const STEP_TIMEOUT_MS = 20_000;

/** A stack of undo steps; see the module comment. */
export class Cleanup {
  private readonly steps: Step[] = [];
  private readonly children = new Set<Cleanup>();

  /** Registers `fn` to run when this scope ends (last registered runs first). */
  defer(name: string, fn: () => unknown): void {
    this.steps.push({ name, fn });
  }

  /**
   * Runs `body` in a nested scope whose steps run as soon as it ends, so one phase's
   * processes are gone before the next phase measures.
   */
  async scope<T>(body: (cleanup: Cleanup) => Promise<T>): Promise<T> {
    const child = new Cleanup();
    this.children.add(child);
    try {
      return await body(child);
    } finally {
      await child.run();
      this.children.delete(child);
    }
  }

  /** Runs every step (nested scopes first); a failing step is reported and skipped. */
  async run(): Promise<void> {
    for (const child of [...this.children].reverse()) await child.run();
    for (let step = this.steps.pop(); step !== undefined; step = this.steps.pop()) {
      try {
        await withTimeout(Promise.resolve().then(step.fn), STEP_TIMEOUT_MS, step.name);
      } catch (err) {
        process.stderr.write(
          `cleanup: ${step.name}: ${err instanceof Error ? err.message : err}\n`,
        );
      }
    }
  }
}

/**
 * Runs `body` with a root {@link Cleanup} that runs when it ends, and also on SIGINT or
 * SIGTERM, after which the process exits (130 / 143).
 */
export async function withCleanup<T>(body: (cleanup: Cleanup) => Promise<T>): Promise<T> {
  const cleanup = new Cleanup();
  const onSignal = (signal: keyof typeof SIGNALS) => {
    process.stderr.write(`\n${signal}: cleaning up\n`);
    void cleanup.run().finally(() => process.exit(128 + SIGNALS[signal]));
  };
  const signals = Object.keys(SIGNALS) as Array<keyof typeof SIGNALS>;
  for (const s of signals) process.once(s, onSignal);
  try {
    return await body(cleanup);
  } finally {
    await cleanup.run();
    for (const s of signals) process.off(s, onSignal);
  }
}

const SIGNALS = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 } as const;

/**
 * A fresh temp dir, removed by `cleanup`, and also (synchronously) if the process exits
 * without running it, e.g. on an uncaught exception.
 */
export async function tempDir(cleanup: Cleanup, prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  const removeOnExit = () => rmSync(dir, { recursive: true, force: true });
  process.once("exit", removeOnExit);
  cleanup.defer(`remove ${dir}`, async () => {
    await rm(dir, { recursive: true, force: true });
    process.off("exit", removeOnExit);
  });
  return dir;
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
