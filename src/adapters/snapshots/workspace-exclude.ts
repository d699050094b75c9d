/**
 * Exclude patterns: the paths a snapshot leaves out (live database files,
 * caches, FIFOs the agent made), and their compilation into a predicate used by
 * the workspace walk (`workspace-scan.ts`).
 */
import path from "node:path";
import { z } from "zod";

/** An exclude pattern: see {@link compileExclude}. */
export const ExcludePatternSchema = z
  .string()
  .min(1)
  .max(1024)
  .refine((p) => !p.includes("\0") && p !== "/", "not a usable pattern");

/** Files SQLite keeps beside a live database; never copy them while it runs. */
export const SQLITE_LIVE_FILES: readonly string[] = Object.freeze(["*-wal", "*-shm", "*-journal"]);

/**
 * Compiles exclude patterns into a predicate over workspace-relative paths.
 * `*` matches within one path component, `**` across components, `?` one
 * character. A pattern without `/` matches the last component at any depth
 * (`*-wal`, `node_modules`); with `/` it matches the whole path (`cache/**`,
 * `/build`). A trailing `/` matches directories only. An excluded directory is
 * skipped with everything below it.
 */
export function compileExclude(
  patterns: readonly string[],
): (rel: string, isDir: boolean) => boolean {
  const rules = patterns.map((raw) => {
    const dirOnly = raw.endsWith("/");
    let body = dirOnly ? raw.slice(0, -1) : raw;
    const anchored = body.includes("/");
    body = body.replace(/^\/+/, "");
    return { re: globToRegExp(body), dirOnly, anchored };
  });
  if (rules.length === 0) return () => false;
  return (rel, isDir) =>
    rules.some(
      (r) => (!r.dirOnly || isDir) && r.re.test(r.anchored ? rel : path.posix.basename(rel)),
    );
}

function globToRegExp(glob: string): RegExp {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "*") {
      if (glob[i + 1] === "*") {
        i++;
        if (glob[i + 1] === "/") {
          i++;
          re += "(?:.*/)?";
        } else {
          re += ".*";
        }
      } else {
        re += "[^/]*";
      }
    } else if (c === "?") {
      re += "[^/]";
    } else {
      re += c.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    }
  }
  return new RegExp(`^${re}$`, "s");
}
