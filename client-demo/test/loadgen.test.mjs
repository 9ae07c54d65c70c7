// The load generator against a real server, briefly: each scenario runs, checks every answer,
// and reports JSON. (Benchmarks run it longer, in release mode: docs/benchmarks.md.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { binary, startServer } from "./helpers/server.mjs";

const run = promisify(execFile);
const loadgen = path.join(path.dirname(binary), "loadgen");
const secret = "loadgen-test-secret-0123456789abcdef";

test("the chat (also paced), fanout and idle (also with browser headers) scenarios run clean against the server", async () => {
  const server = await startServer({
    env: { JWT_SECRET: secret, MAX_SOCKETS_PER_USER: "0", DAILY_TOKEN_BUDGET: "0", CORS_ORIGINS: "*" },
  });
  const dir = mkdtempSync(path.join(tmpdir(), "loadgen-"));
  try {
    const addr = new URL(server.url).host;
    for (const [name, args] of [
      ["chat", ["chat", "--users", "5", "--seconds", "2", "--warmup-secs", "1"]],
      ["fanout", ["fanout", "--sockets", "5", "--seconds", "2"]],
      ["chat-paced", ["chat", "--users", "3", "--seconds", "2", "--think-ms", "100", "--warmup-secs", "0"]],
      ["idle", ["idle", "--connections", "50", "--hold", "1"]],
      ["idle-browser", ["idle", "--connections", "20", "--hold", "1", "--browser-headers"]],
    ]) {
      const out = path.join(dir, `${name}.json`);
      const { stdout } = await run(loadgen, ["--addr", addr, "--jwt-secret", secret, "--server-pid", String(server.process.pid), "--json", out, ...args]);
      assert.match(stdout, /violations\s+0/);
      const report = JSON.parse(readFileSync(out, "utf8"));
      assert.equal(report.violations, 0, name);
      if (!name.startsWith("idle")) assert.ok(report.figures["token events/s delivered"] > 0, name);
      else assert.equal(report.figures["connections open"], name === "idle" ? 50 : 20, name);
    }
  } finally {
    await server.stop();
  }
});
