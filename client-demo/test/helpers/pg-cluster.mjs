// A PostgreSQL cluster of the test's own (initdb + pg_ctl on its own port), so a test can stop
// and start a database without touching the shared server. Needs root (to run as `postgres`).
import { execFileSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import path from "node:path";

function pgBin(tool) {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return null;
  for (const version of readdirSync(root).sort().reverse()) {
    const candidate = path.join(root, version, "bin", tool);
    if (existsSync(candidate)) return candidate;
  }
  return null;
}

/** Why a private cluster cannot be made here, or null when it can. */
export function clusterUnavailable() {
  if (userInfo().uid !== 0) return "needs root to run initdb as postgres";
  if (!pgBin("initdb")) return "no initdb";
  return null;
}

export function startCluster() {
  const dir = mkdtempSync(path.join(tmpdir(), "postchat-pg-"));
  const id = (flag) => Number(execFileSync("id", [flag, "postgres"]).toString().trim());
  chownSync(dir, id("-u"), id("-g"));
  const data = path.join(dir, "data");
  const port = 20000 + Math.floor(Math.random() * 20000);
  const asPostgres = (tool, args) =>
    execFileSync("runuser", ["-u", "postgres", "--", pgBin(tool), ...args], { stdio: "pipe" });
  asPostgres("initdb", ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync"]);
  const ctl = (action) =>
    asPostgres("pg_ctl", [
      "-D", data, "-l", path.join(dir, "log"), "-w", "-t", "30",
      ...(action === "start" ? ["-o", `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`] : ["-m", "fast"]),
      action,
    ]);
  ctl("start");
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    stop: () => ctl("stop"),
    start: () => ctl("start"),
  };
}
