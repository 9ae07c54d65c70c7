// Cluster mode in tests: a redis-server of the test's own (on a free port, nothing saved, so
// the test can kill and restart it) and several postchat processes sharing it and one fresh
// PostgreSQL database, as a deployment behind a balancer runs them.
import { spawn } from "node:child_process";
import net from "node:net";
import crypto from "node:crypto";
import { freshPostgresUrl, startServer } from "./server.mjs";
import { sign, now } from "./jwt.mjs";

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts `redis-server` on `port` (a free one by default); resolves to { url, port, stop(), start() }. */
export async function startRedis(port) {
  port ??= await freePort();
  let child = null;
  const launch = () =>
    new Promise((resolve, reject) => {
      child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      let output = "";
      const timer = setTimeout(() => reject(new Error(`redis-server did not start:\n${output}`)), 10_000);
      child.stdout.on("data", (d) => {
        output += d;
        if (output.includes("Ready to accept connections")) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited with ${code}:\n${output}`));
      });
    });
  await launch();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    /** Kills it (SIGKILL: everything it held is gone, as after a crash). */
    async stop() {
      if (!child || child.exitCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await exited;
    },
    /** Starts it again on the same port, empty. */
    start: launch,
  };
}

/**
 * Starts `count` postchat processes sharing one fresh PostgreSQL database and one redis-server
 * of their own. Resolves to { servers, redis, databaseUrl, token(user), startOne(), stop() }.
 */
export async function startProcesses(count, { env = {} } = {}) {
  const databaseUrl = freshPostgresUrl();
  if (!databaseUrl) return null;
  const redis = await startRedis();
  const secret = crypto.randomBytes(32).toString("hex");
  const shared = {
    DATABASE_URL: databaseUrl,
    REDIS_URL: redis.url,
    REDIS_PREFIX: `test${crypto.randomBytes(4).toString("hex")}`,
    JWT_SECRET: secret,
    ...env,
  };
  const startOne = (extra = {}) => startServer({ env: { ...shared, ...extra } });
  const servers = [];
  for (let i = 0; i < count; i++) servers.push(await startOne());
  return {
    servers,
    redis,
    databaseUrl,
    startOne,
    token: (user) => sign({ sub: user, iat: now(), exp: now() + 3600 }, { key: secret }),
    async stop() {
      await Promise.all(servers.map((s) => s.stop().catch(() => {})));
      await redis.stop();
    },
  };
}
