// Starts the real postchat binary for a test: its own port, data folder and database.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { before, after } from "node:test";
import { devToken } from "../../lib/client.mjs";

export { samplePost } from "../../lib/sample-post.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../../..");
export const binary = process.env.POSTCHAT_BIN ?? path.join(repo, "target/debug/postchat");
const pgServer = process.env.TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432";

/** A fresh PostgreSQL database URL, or null (skip) when PostgreSQL is unreachable outside CI. */
export function freshPostgresUrl() {
  const name = `postchat_js_${process.pid}_${Date.now()}_${Math.floor(Math.random() * 1e6)}`;
  try {
    execFileSync("psql", [`${pgServer}/postgres`, "-v", "ON_ERROR_STOP=1", "-qc", `CREATE DATABASE ${name}`], {
      stdio: "pipe",
    });
  } catch (err) {
    if (process.env.CI === "true") throw new Error(`PostgreSQL unreachable in CI: ${err.message}`);
    return null;
  }
  return `${pgServer}/${name}`;
}

function serverEnv(dir, env) {
  return {
    PATH: process.env.PATH,
    RUST_LOG: process.env.RUST_LOG ?? "warn",
    HOST: "127.0.0.1",
    PORT: "0",
    DATA_DIR: dir,
    LOCAL_AI_PACING_MS: "0",
    // Tests send messages and create posts faster than people do; the tests of the limits
    // turn them on.
    RATE_LIMIT_MESSAGES_PER_MINUTE: "0",
    RATE_LIMIT_CONNECTIONS_PER_MINUTE: "0",
    RATE_LIMIT_POSTS_PER_MINUTE: "0",
    RATE_LIMIT_SESSIONS_PER_MINUTE: "0",
    RATE_LIMIT_PAGE_FETCHES_PER_MINUTE: "0",
    RATE_LIMIT_JOINS_PER_MINUTE: "0",
    ...env,
  };
}

/** Runs the binary with `env` (and `args`) until it exits: { code, output }. For settings it
 * must refuse at start. */
export async function runToExit({ env = {}, args = [], timeoutMs = 20_000 } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), "postchat-test-"));
  const child = spawn(binary, args, { env: serverEnv(dir, env), stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const code = await new Promise((resolve) => child.once("exit", (code) => resolve(code)));
  clearTimeout(timer);
  rmSync(dir, { recursive: true, force: true });
  return { code, output };
}

/**
 * Starts a server. Options: env (extra environment), dataDir (reuse a folder, e.g. for a
 * restart), launcher (a command to run it through). Resolves to { url, dataDir, process, stop(), logs() }.
 */
export async function startServer({ env = {}, dataDir, launcher = [] } = {}) {
  const dir = dataDir ?? mkdtempSync(path.join(tmpdir(), "postchat-test-"));
  // `launcher`: a command that runs the binary (e.g. prlimit with a lower open-files limit).
  const [command, ...args] = [...launcher, binary];
  const child = spawn(command, args, { env: serverEnv(dir, env), stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${output}`)), 20_000);
    const onData = () => {
      const match = output.match(/listening on (http:\/\/\S+)/);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stdout.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${output}`));
    });
  });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  return {
    url,
    dataDir: dir,
    process: child,
    logs: () => output,
    /** SIGTERM, then resolves to the exit { code, signal }. */
    async stop({ keepData = false } = {}) {
      if (child.exitCode === null) child.kill("SIGTERM");
      const result = await exited;
      if (!keepData && !dataDir) rmSync(dir, { recursive: true, force: true });
      return result;
    },
  };
}

/** X's weighted length, independently of the server: URLs 23, characters outside Latin 2. */
export function twitterLength(text) {
  let total = 0;
  for (const word of text.split(/(\s+)/)) {
    if (/^https?:\/\/\S+$/.test(word)) {
      total += 23;
      continue;
    }
    const segmenter = new Intl.Segmenter("en", { granularity: "grapheme" });
    for (const { segment } of segmenter.segment(word)) {
      if (/\p{Extended_Pictographic}/u.test(segment)) {
        total += 2;
        continue;
      }
      for (const ch of segment) {
        const c = ch.codePointAt(0);
        const light = c <= 0x10ff || (c >= 0x2000 && c <= 0x200d) || (c >= 0x2010 && c <= 0x201f) || (c >= 0x2032 && c <= 0x2037);
        total += light ? 1 : 2;
      }
    }
  }
  return total;
}

export const LIMITS = { twitter: 280, bluesky: 300, threads: 500, mastodon: 500, linkedin: 3000, instagram: 2200, facebook: 63206 };

/**
 * One server for a whole test file, started before its tests and stopped after them, with a dev
 * token for `alice`. Returns an object whose `url` and `token` are set once started.
 */
export function useServer(options) {
  const ctx = { url: null, token: null, server: null };
  before(async () => {
    ctx.server = await startServer(options);
    ctx.url = ctx.server.url;
    ctx.token = await devToken(ctx.url, "alice");
  });
  after(async () => ctx.server.stop());
  return ctx;
}

/** Resolves once an Engine.IO client (socket.io-client 4.x or 2.x) has upgraded from polling to
 * websocket; fails after `ms` (the server's upgrade path, not an answer over polling). */
export async function upgraded(engine, ms = 5000) {
  if (engine.transport.name !== "websocket") {
    let timer;
    await Promise.race([
      new Promise((resolve) => engine.once("upgrade", resolve)),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no upgrade to websocket within ${ms} ms`)), ms);
      }),
    ]).finally(() => clearTimeout(timer));
  }
  return engine.transport.name;
}
