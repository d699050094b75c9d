import { defineConfig } from "vitest/config";

const shared = {
  testTimeout: 60_000,
  hookTimeout: 60_000,
};

export default defineConfig({
  test: {
    pool: "forks",
    // Two cores: integration tests spawn real servers and agents, so keep concurrency low.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    // The Docker tests share one engine and the density test drives it into memory pressure
    // on purpose: they run after the rest (group 1), and the density test after them alone
    // (group 2), so no test's timing depends on another's load; OpenClaw's last (group 3).
    projects: [
      {
        test: {
          ...shared,
          name: "main",
          include: ["test/**/*.test.ts"],
          exclude: ["test/docker/**", "test/openclaw/**"],
        },
      },
      {
        test: {
          ...shared,
          name: "docker",
          include: ["test/docker/**/*.test.ts"],
          exclude: ["test/docker/density.test.ts"],
          sequence: { groupOrder: 1 },
        },
      },
      {
        test: {
          ...shared,
          name: "density",
          include: ["test/docker/density.test.ts"],
          sequence: { groupOrder: 2 },
        },
      },
      {
        // Real OpenClaw (~10 s to start, ~1.3 GB at its peak): alone, after everything else,
        // so neither its load nor the others' skews the other's timings.
        test: {
          ...shared,
          testTimeout: 300_000,
          hookTimeout: 300_000,
          name: "openclaw",
          include: ["test/openclaw/**/*.test.ts"],
          sequence: { groupOrder: 3 },
        },
      },
    ],
  },
});
