#!/usr/bin/env node
// The npm registry reachable here lacks some platform builds of optional packages
// (biome, rollup, msgpackr-extract for other OSes and CPUs). `npm install` then leaves
// them out of package-lock.json, and `npm ci` refuses a lock that misses them. This
// adds an entry for each missing optional platform package, with the os/cpu/libc its
// name declares, so `npm ci` accepts the lock and skips them as foreign platforms.
// Run it after every `npm install` that changes the lock: `npm run lock:stubs`.
import { readFileSync, writeFileSync } from "node:fs";

const OS = ["aix", "android", "darwin", "freebsd", "linux", "netbsd", "openbsd", "openharmony", "sunos", "win32"];
const CPU = ["arm", "arm64", "ia32", "loong64", "mips64el", "ppc64", "riscv64", "s390x", "x64"];
const file = new URL("../package-lock.json", import.meta.url);
const lock = JSON.parse(readFileSync(file, "utf8"));
const packages = lock.packages;
let added = 0;

for (const [key, pkg] of Object.entries(packages)) {
  for (const [name, version] of Object.entries(pkg.optionalDependencies ?? {})) {
    const path = `node_modules/${name}`;
    if (packages[path]) continue;
    const tokens = name.split("/").pop().split("-");
    const os = tokens.find((t) => OS.includes(t));
    const cpu = tokens.find((t) => CPU.includes(t));
    if (!os || !cpu) continue; // not a platform build: leave it to npm
    const stub = { version, optional: true, os: [os], cpu: [cpu] };
    if (pkg.dev || key === "") stub.dev = pkg.dev ?? false;
    if (tokens.some((t) => t.startsWith("musl"))) stub.libc = ["musl"];
    else if (os === "linux" && tokens.some((t) => t.startsWith("gnu"))) stub.libc = ["glibc"];
    if (!stub.dev) delete stub.dev;
    packages[path] = stub;
    added++;
  }
}
lock.packages = Object.fromEntries(Object.entries(packages).sort(([a], [b]) => (a === "" ? -1 : b === "" ? 1 : a < b ? -1 : a > b ? 1 : 0)));
writeFileSync(file, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`lock-platform-stubs: added ${added} optional platform entries`);
