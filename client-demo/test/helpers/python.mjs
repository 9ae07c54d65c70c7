// The Python clients' virtualenv (python-socketio, as Python users install it), made once under
// target/pyenv by tests/run-all.sh or, when missing, by the first test that needs it.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const venv = path.join(repo, "target/pyenv");
export const python = path.join(venv, "bin/python");
const requirements = path.join(repo, "client-demo/test/python/requirements.txt");

/** The virtualenv's python, made first when missing. */
export function pythonClients() {
  if (!existsSync(python)) {
    execFileSync("python3", ["-m", "venv", venv], { stdio: "inherit" });
    execFileSync(python, ["-m", "pip", "install", "-q", "-r", requirements], { stdio: "inherit" });
  }
  return python;
}

/** Runs a script of client-demo/test/python with `args`; its last line of output, parsed. */
export function runPython(script, args) {
  const out = execFileSync(pythonClients(), [path.join(repo, "client-demo/test/python", script), ...args], {
    encoding: "utf8",
    timeout: 60_000,
  });
  return JSON.parse(out.trim().split("\n").pop());
}
