/**
 * pino behind the core's {@link Logger} interface: JSON lines on stderr, so a
 * command's stdout stays for its answer.
 */
import pino from "pino";
import type { Logger } from "../logger.js";

/** Log levels the CLI accepts. */
export const LOG_LEVELS = ["debug", "info", "warn", "error", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** A pino logger writing to stderr at `level`. */
export function pinoLogger(level: LogLevel): Logger {
  return pino({ level, base: { pid: process.pid } }, pino.destination(2)) as unknown as Logger;
}
