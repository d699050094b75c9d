/**
 * The leader's periodic sweep of snapshot chunks that no version or checkpoint
 * references (see src/adapters/snapshots/snapshot-gc.ts for why it is safe against
 * snapshots in flight). One sweep at a time; a failed sweep waits for the next.
 */
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import { SnapshotStore } from "../adapters/snapshots/snapshot-store.js";
import { type Clock, every } from "../clock.js";
import { toErrorInfo } from "../errors.js";
import type { Logger } from "../logger.js";

/** Starts sweeping every `intervalMs`; returns the function that stops it. */
export function startSnapshotJanitor(
  nats: FleetNats,
  prefix: string,
  intervalMs: number,
  clock: Clock,
  log: Logger,
): () => void {
  let store: SnapshotStore | null = null;
  let running = false;
  return every(clock, intervalMs, () => {
    if (running) return;
    running = true;
    void (async () => {
      try {
        store ??= await SnapshotStore.open(nats.nc, { prefix }, clock);
        const report = await store.gc();
        log.info({ ...report }, "snapshot garbage collected");
      } catch (err) {
        log.warn({ err: toErrorInfo(err) }, "snapshot garbage collection failed");
      } finally {
        running = false;
      }
    })();
  });
}
