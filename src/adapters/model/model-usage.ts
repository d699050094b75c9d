/**
 * Reading what an upstream's answer says about itself: its token usage, and
 * whether a streamed answer is well-formed. The gateway relays bytes as they
 * arrive and reads them on the side, so metering never delays the agent.
 *
 * Usage comes in the providers' own shapes:
 * - OpenAI chat: `usage.prompt_tokens` / `usage.completion_tokens`, in the JSON
 *   answer or, streamed with `stream_options.include_usage`, in the last chunk;
 * - OpenAI responses: `usage.input_tokens` / `usage.output_tokens`, streamed in
 *   `response.completed`'s `response.usage`;
 * - Anthropic messages: `usage.input_tokens` / `usage.output_tokens`, streamed as
 *   `message_start`'s `message.usage` and then `message_delta`'s `usage`, whose
 *   `output_tokens` is cumulative (the last one counts).
 */
import type { ModelUsage } from "../../protocol/model-messages.js";

/** The `model` a JSON request body names, if it names one (the summary's `model`). */
export function requestedModel(body: string | undefined): string | undefined {
  if (!body?.trimStart().startsWith("{")) return undefined;
  try {
    const model = (JSON.parse(body) as { model?: unknown }).model;
    return typeof model === "string" ? model : undefined;
  } catch {
    return undefined;
  }
}

/** The usage a non-streamed JSON answer reports, if it reports one. */
export function usageOfAnswer(answer: unknown): ModelUsage | undefined {
  return isRecord(answer) ? mergeUsage(undefined, answer.usage) : undefined;
}

/**
 * Reads a server-sent-events answer as it streams: checks that every event's
 * data is JSON or `[DONE]`, and keeps the usage the events report.
 *
 * Lines end in `\n` or `\r\n` (what every provider sends); a lone `\r` as a line
 * end, which the SSE grammar also allows, is not recognised.
 */
export class SseAnswerReader {
  private pending = "";
  private data: string[] = [];
  private current: ModelUsage | undefined;

  /** The usage the events so far reported, if any did. */
  get usage(): ModelUsage | undefined {
    return this.current;
  }

  /** Reads the next piece of the answer; returns what is wrong with it, or undefined if nothing is. */
  push(text: string): string | undefined {
    this.pending += text;
    const lines = this.pending.split("\n");
    // The last piece has no line end yet: it waits for the next push (or end()).
    this.pending = lines.pop() ?? "";
    for (const line of lines) {
      const bad = this.line(line.endsWith("\r") ? line.slice(0, -1) : line);
      if (bad) return bad;
    }
    return undefined;
  }

  /** The answer is complete: reads an unterminated last line and event. */
  end(): string | undefined {
    const rest = this.pending;
    this.pending = "";
    return (rest === "" ? undefined : this.line(rest)) ?? this.dispatch();
  }

  private line(line: string): string | undefined {
    if (line === "") return this.dispatch();
    if (line === "data") this.data.push("");
    else if (line.startsWith("data:")) {
      const value = line.slice(5);
      this.data.push(value.startsWith(" ") ? value.slice(1) : value);
    }
    // `event:`, `id:`, `retry:` and `:` comments carry nothing to check or count.
    return undefined;
  }

  /** One whole event (its data lines joined, as the SSE grammar says). */
  private dispatch(): string | undefined {
    if (this.data.length === 0) return undefined;
    const data = this.data.join("\n");
    this.data = [];
    if (data === "[DONE]") return undefined;
    let event: unknown;
    try {
      event = JSON.parse(data);
    } catch {
      return `a streamed event's data is neither JSON nor [DONE]: ${JSON.stringify(data.slice(0, 80))}`;
    }
    if (!isRecord(event)) return undefined;
    this.current = mergeUsage(this.current, event.usage);
    if (isRecord(event.message)) this.current = mergeUsage(this.current, event.message.usage);
    if (isRecord(event.response)) this.current = mergeUsage(this.current, event.response.usage);
    return undefined;
  }
}

/** `usage` (in either provider's names) over `before`: a field it does not give keeps its value. */
function mergeUsage(before: ModelUsage | undefined, usage: unknown): ModelUsage | undefined {
  if (!isRecord(usage)) return before;
  const input = count(usage.prompt_tokens) ?? count(usage.input_tokens);
  const output = count(usage.completion_tokens) ?? count(usage.output_tokens);
  if (input === undefined && output === undefined) return before;
  return { input: input ?? before?.input ?? 0, output: output ?? before?.output ?? 0 };
}

function count(value: unknown): number | undefined {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0 ? value : undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
