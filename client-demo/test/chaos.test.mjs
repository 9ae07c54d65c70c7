// The chaos run (test/helpers/chaos.mjs) with every fault injected once: three processes under
// load; every answer checked on its sender and on a watcher on another process. The 10-minute
// run and its figures: docs/benchmarks.md, "Chaos run".
import { test } from "node:test";
import assert from "node:assert/strict";
import { runChaos } from "./helpers/chaos.mjs";

test("chaos: every fault once under load, every answer one outcome everywhere, stored as seen", async (t) => {
  const result = await runChaos({ seconds: 0, log: (line) => t.diagnostic(line) });
  if (!result) return t.skip("PostgreSQL unreachable");
  t.diagnostic(JSON.stringify({ ...result, violations: result.violations.slice(0, 20) }));
  assert.equal(result.faults.length, 8, "every fault was injected");
  // A process killed, paused past its lease or stopped: its answers are continued elsewhere.
  assert.equal(result.outcomes.interrupted ?? 0, 0, `no answer left interrupted: ${JSON.stringify(result.outcomes)}`);
  assert.ok(result.answers >= 30, `answers under load: ${result.answers}`);
  assert.ok((result.outcomes.complete ?? 0) >= result.answers / 2, `most answers complete: ${JSON.stringify(result.outcomes)}`);
  assert.deepEqual(result.violations, []);
});
