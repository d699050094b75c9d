/**
 * The orchestrator's two durable JetStream consumers: submissions (held
 * unacknowledged until their task ends) and node events (acknowledged once
 * applied). Both survive a change of leader; the intake is re-created from its
 * ack floor so a new leader sees every open task at once instead of waiting
 * out the previous leader's ack wait.
 */
import { AckPolicy, type ConsumerMessages, DeliverPolicy } from "@nats-io/jetstream";
import type { FleetNats } from "../adapters/nats/fleet-nats.js";
import { isNotFound } from "../adapters/nats/nats-retry.js";

const NS_PER_MS = 1_000_000;

/** How long a held submission may go without `working()` before it is redelivered. */
export const INTAKE_ACK_WAIT_MS = 60_000;

/** Opens the submissions consumer from the first unacknowledged submission. */
export async function openIntake(nats: FleetNats): Promise<ConsumerMessages> {
  const { jsm, js, subjects } = nats;
  const stream = subjects.streams.tasks;
  const name = subjects.consumers.tasks;
  let startSeq = 1;
  try {
    const info = await jsm.consumers.info(stream, name);
    startSeq = info.ack_floor.stream_seq + 1;
    await jsm.consumers.delete(stream, name);
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  await jsm.consumers.add(stream, {
    durable_name: name,
    ack_policy: AckPolicy.Explicit,
    ack_wait: INTAKE_ACK_WAIT_MS * NS_PER_MS,
    max_ack_pending: 100_000,
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: startSeq,
    filter_subject: subjects.tasksWildcard,
  });
  return (await js.consumers.get(stream, name)).consume({ max_messages: 512 });
}

/** Opens the node events consumer (created once, shared by every term). */
export async function openEvents(nats: FleetNats): Promise<ConsumerMessages> {
  const { jsm, js, subjects } = nats;
  const stream = subjects.streams.events;
  const name = subjects.consumers.events;
  try {
    await jsm.consumers.info(stream, name);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await jsm.consumers.add(stream, {
      durable_name: name,
      ack_policy: AckPolicy.Explicit,
      ack_wait: 10_000 * NS_PER_MS,
      max_ack_pending: 100_000,
      deliver_policy: DeliverPolicy.All,
      filter_subject: subjects.taskEventsWildcard,
    });
  }
  return (await js.consumers.get(stream, name)).consume({ max_messages: 512 });
}
