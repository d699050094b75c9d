/**
 * Checks a request the CLI built from flags against the API's own zod schema before it
 * is sent, so a value the gateway would refuse is reported in the user's words: the flag
 * they typed (`--timeout`), not the wire field (`timeoutMs`), as a short sentence, not
 * zod's rendering. The gateway still validates; this only words the refusal.
 */
import type { z } from "zod";
import { UsageError } from "./cli-errors.js";

/** How the user names a request field: its flag (or argument) and, for numbers, the unit. */
export interface FieldName {
  readonly flag: string;
  readonly unit?: string;
}

/** Request fields by the names the user knows them by. */
export type FieldNames = Readonly<Record<string, FieldName>>;

/** Throws a {@link UsageError} naming each refused flag once, when `body` fails `schema`. */
export function checkRequest(schema: z.ZodType, body: unknown, names: FieldNames): void {
  const parsed = schema.safeParse(body);
  if (parsed.success) return;
  const said = new Set<string>();
  const sentences: string[] = [];
  for (const issue of parsed.error.issues) {
    const key = issue.path.map(String).join(".");
    if (said.has(key)) continue;
    said.add(key);
    sentences.push(describeIssue(issue, names, body));
  }
  throw new UsageError(sentences.join("; "));
}

/** One zod issue as a sentence about the flag: "--timeout must be at least 100 ms, got 0". */
export function describeIssue(issue: z.core.$ZodIssue, names: FieldNames, body?: unknown): string {
  const top = String(issue.path[0] ?? "");
  const named = names[top];
  const name = named ?? { flag: issue.path.map(String).join(".") || "the request" };
  const flag =
    named && issue.path.length > 1 ? `${name.flag} (${issue.path.slice(1).join(".")})` : name.flag;
  const unit = name.unit ? ` ${name.unit}` : "";
  const value = valueAt(body, issue.path);
  const got =
    value === undefined || value === ""
      ? ""
      : `, got ${typeof value === "string" ? `'${value}'` : JSON.stringify(value)}`;
  switch (issue.code) {
    case "too_small":
      if (issue.origin === "string" && Number(issue.minimum) <= 1)
        return `${flag} must not be empty`;
      return issue.origin === "string"
        ? `${flag} must be at least ${issue.minimum} characters${got}`
        : `${flag} must be at least ${issue.minimum}${unit}${got}`;
    case "too_big":
      return issue.origin === "string"
        ? `${flag} must be at most ${issue.maximum} characters`
        : `${flag} must be at most ${issue.maximum}${unit}${got}`;
    case "invalid_type":
      return issue.expected === "int"
        ? `${flag} must be a whole number${got}`
        : `${flag} must be a ${issue.expected}${got}`;
    case "invalid_value":
      return `${flag} must be one of ${issue.values.map(String).join(", ")}${got}`;
    case "unrecognized_keys":
      return `unknown ${issue.keys.length === 1 ? "field" : "fields"} ${issue.keys.join(", ")}`;
    default:
      // Custom messages of our schemas read as a predicate ("must be 1-128 characters of …").
      return /^must\b/.test(issue.message)
        ? `${flag} ${issue.message}${got}`
        : `${flag}: ${issue.message.charAt(0).toLowerCase()}${issue.message.slice(1)}${got}`;
  }
}

function valueAt(body: unknown, path: readonly PropertyKey[]): unknown {
  let v = body;
  for (const k of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}
