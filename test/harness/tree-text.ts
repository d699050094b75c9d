/** Every file under a directory as text, for tests that assert a secret is in none of them. */
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";

/** Every file under `dir`, as text, joined; files gone or unreadable meanwhile count as empty. */
export async function treeText(dir: string): Promise<string> {
  const parts: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) {
      parts.push(await readFile(path.join(e.parentPath, e.name), "utf8").catch(() => ""));
    }
  }
  return parts.join("\n");
}
