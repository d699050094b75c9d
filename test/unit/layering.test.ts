/**
 * The folder tree is the architecture: each layer imports only what lies below
 * it. The edge (gateway) and supervision reach each other only through NATS; the
 * NATS plumbing knows no store built on it. This reads every import in src/ and
 * fails on one that runs back up a layer.
 */
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";

const SRC = path.resolve(import.meta.dirname, "../../src");

/** What each area must not import (areas are top folders of src/, and adapters' planes). */
const FORBIDDEN: Record<string, readonly string[]> = {
  errors: ["*"],
  clock: ["*"],
  protocol: ["*"],
  "adapters/nats": [
    "adapters/records",
    "adapters/snapshots",
    "adapters/workspace",
    "adapters/agent-link",
    "adapters/process",
    "adapters/docker",
  ],
  adapters: ["actors", "roles", "gateway", "supervisor", "cli", "sim", "agents"],
  agents: ["adapters", "actors", "roles", "gateway", "supervisor", "cli", "sim"],
  actors: ["roles", "gateway", "supervisor", "cli", "sim"],
  gateway: ["supervisor", "roles", "cli", "sim"],
  supervisor: ["gateway", "roles", "cli", "sim"],
};

/** What `*` still allows below it. */
const BASE = new Set(["errors"]);

/** The area of a file or module path relative to src/ (`adapters/nats`, `gateway`, `errors`...). */
function areaOf(rel: string): string {
  const parts = rel.replace(/\.(ts|js)$/, "").split("/");
  if (parts[0] === "adapters" && parts.length > 2) return `adapters/${parts[1]}`;
  return parts.length === 1 ? parts[0]! : parts[0]!;
}

function forbids(from: string, to: string): boolean {
  const rules = [FORBIDDEN[from], from.startsWith("adapters/") ? FORBIDDEN.adapters : undefined];
  for (const rule of rules) {
    if (!rule) continue;
    if (rule.includes("*") && to !== from && !BASE.has(to)) return true;
    if (rule.some((r) => to === r || to.startsWith(`${r}/`))) return true;
  }
  return false;
}

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sourceFiles(p)));
    else if (e.name.endsWith(".ts")) out.push(p);
  }
  return out;
}

/** Relative module specifiers of static imports, re-exports and dynamic imports. */
function importsOf(text: string): string[] {
  const specs: string[] = [];
  for (const m of text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)["'](\.[^"']+)["']/gm))
    specs.push(m[1]!);
  return specs;
}

describe("layering", () => {
  it("has no import in src/ that runs back up a layer", async () => {
    const violations: string[] = [];
    let seen = 0;
    for (const file of await sourceFiles(SRC)) {
      const rel = path.relative(SRC, file);
      const from = areaOf(rel);
      for (const spec of importsOf(await readFile(file, "utf8"))) {
        const target = path.relative(SRC, path.resolve(path.dirname(file), spec));
        if (target.startsWith("..")) continue;
        const to = areaOf(target);
        seen++;
        if (forbids(from, to)) violations.push(`${rel} -> ${target}`);
      }
    }
    expect(seen).toBeGreaterThan(300); // the parser found the imports it judges
    expect(violations).toEqual([]);
  });

  it("keeps benches on src/ and the shared test harness, never on test files", async () => {
    const BENCH = path.resolve(SRC, "../bench");
    const TEST = path.resolve(SRC, "../test");
    const bad: string[] = [];
    for (const file of await sourceFiles(BENCH)) {
      for (const spec of importsOf(await readFile(file, "utf8"))) {
        const target = path.resolve(path.dirname(file), spec);
        if (target.startsWith(`${TEST}/`) && !target.startsWith(`${TEST}/harness/`)) {
          bad.push(`${path.relative(BENCH, file)} -> ${spec}`);
        }
      }
    }
    expect(bad).toEqual([]);
  });

  it("catches an import that runs back up", () => {
    expect(forbids("supervisor", "gateway")).toBe(true);
    expect(forbids("adapters/nats", "adapters/snapshots")).toBe(true);
    expect(forbids("adapters/records", "roles")).toBe(true);
    expect(forbids("protocol", "adapters/nats")).toBe(true);
    expect(forbids("protocol", "errors")).toBe(false);
    expect(forbids("gateway", "adapters/records")).toBe(false);
    expect(importsOf('import { a } from "../gateway/x.js";\nexport * from "./y.js";')).toEqual([
      "../gateway/x.js",
      "./y.js",
    ]);
  });
});
