// The operators' contract: secrets, the token subcommand, origins, refusals at start, summaries.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { io } from "socket.io-client";
import { api, ask, connect, createSession, devToken } from "../lib/client.mjs";
import { binary, freshPostgresUrl, runToExit, startServer, samplePost } from "./helpers/server.mjs";
import { freePort } from "./helpers/processes.mjs";

const secret = "a-test-secret-that-is-long-enough-0123456789";

function tokenFromCli(user, env) {
  return execFileSync(binary, ["token", "--user", user], { env: { PATH: process.env.PATH, ...env } }).toString().trim();
}

test("with JWT_SECRET set, `postchat token` makes working tokens and the dev route is gone", async () => {
  const server = await startServer({ env: { JWT_SECRET: secret, CORS_ORIGINS: "*" } });
  try {
    assert.doesNotMatch(server.logs(), /demo token/);
    const dev = await fetch(`${server.url}/dev/token`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"user":"x"}' });
    assert.equal(dev.status, 404);
    const token = tokenFromCli("alice", { JWT_SECRET: secret });
    const socket = await connect(server.url, token);
    assert.ok(socket.connected);
    socket.close();
    const wrong = tokenFromCli("alice", { JWT_SECRET: "some-other-secret-entirely-0123456789" });
    await assert.rejects(connect(server.url, wrong), /unauthorized/);
  } finally {
    await server.stop();
  }
});

test("in dev mode the printed demo token works", async () => {
  const server = await startServer();
  try {
    const token = server.logs().match(/demo token for user 'demo': (\S+)/)[1];
    assert.equal((await api(server.url, token, "GET", "/api/sessions")).status, 200);
  } finally {
    await server.stop();
  }
});

function connectWithOrigin(url, token, origin, transports) {
  const socket = io(url, { auth: { token }, transports, extraHeaders: { origin }, reconnection: false, forceNew: true });
  return new Promise((resolve) => {
    socket.once("connect", () => {
      socket.close();
      resolve("connected");
    });
    socket.once("connect_error", () => {
      socket.close();
      resolve("refused");
    });
  });
}

test("only configured origins may open a socket, on websocket and on polling", async () => {
  const server = await startServer({ env: { JWT_SECRET: secret, CORS_ORIGINS: "https://app.example" } });
  try {
    const token = tokenFromCli("alice", { JWT_SECRET: secret });
    for (const transports of [["websocket"], ["polling"]]) {
      assert.equal(await connectWithOrigin(server.url, token, "https://app.example", transports), "connected", transports[0]);
      assert.equal(await connectWithOrigin(server.url, token, "https://evil.example", transports), "refused", transports[0]);
    }
    const preflight = await fetch(`${server.url}/api/sessions`, {
      method: "OPTIONS",
      headers: { origin: "https://app.example", "access-control-request-method": "GET", "access-control-request-headers": "authorization" },
    });
    assert.equal(preflight.headers.get("access-control-allow-origin"), "https://app.example");
  } finally {
    await server.stop();
  }
});

test("a REDIS_URL the server cannot honour stops it at start with a clear message", async () => {
  // Cluster mode needs a database every process shares (the default SQLite file is one's own).
  await assert.rejects(startServer({ env: { REDIS_URL: "redis://127.0.0.1:6379" } }), /needs a DATABASE_URL every process shares/);
  const databaseUrl = freshPostgresUrl();
  if (!databaseUrl) return;
  const nobody = await freePort();
  await assert.rejects(
    startServer({ env: { DATABASE_URL: databaseUrl, REDIS_URL: `redis://127.0.0.1:${nobody}` } }),
    /cluster mode: REDIS_URL: .*(refused|Connection)/i,
  );
  await assert.rejects(startServer({ env: { DATABASE_URL: databaseUrl, REDIS_URL: "http://127.0.0.1:6379" } }), /cluster mode: REDIS_URL/);
});

test("--help and a refused start show no password, key or secret from the environment", async () => {
  const env = {
    JWT_SECRET: "jwt-secret-value-0123456789abcdef-xyz",
    AI_API_KEY: "sk-api-key-value",
    DATABASE_URL: "postgres://app:pg-password-value@127.0.0.1:1/app",
    REDIS_URL: "redis://:redis-password-value@127.0.0.1:1",
    AI_BASE_URL: "https://user:base-password-value@llm.example/v1",
    POST_FETCH_PROXY: "http://user:proxy-password-value@127.0.0.1:1",
  };
  const secrets = ["jwt-secret-value", "sk-api-key-value", "pg-password-value", "redis-password-value", "base-password-value", "proxy-password-value"];
  const help = await runToExit({ env, args: ["--help"] });
  assert.equal(help.code, 0);
  assert.match(help.output, /REDIS_URL/);
  for (const secret of secrets) assert.ok(!help.output.includes(secret), `--help shows ${secret}`);
  const refused = await runToExit({ env });
  assert.notEqual(refused.code, 0, "the unreachable Redis stops it");
  for (const secret of secrets) assert.ok(!refused.output.includes(secret), `the start's output shows ${secret}:\n${refused.output}`);
});

test("a bad DATABASE_URL stops the server at start with a clear message", async () => {
  await assert.rejects(startServer({ env: { DATABASE_URL: "mysql://x" } }), /postgres:\/\/, postgresql:\/\/ or sqlite:\/\//);
});

test("the session summary is refreshed every SUMMARY_EVERY exchanges", async () => {
  const server = await startServer({ env: { SUMMARY_EVERY: "2" } });
  try {
    const token = await devToken(server.url, "alice");
    const { session } = await createSession(server.url, token, samplePost);
    const socket = await connect(server.url, token);
    await ask(socket, session.id, "What does Tokio do?");
    assert.equal((await api(server.url, token, "GET", `/api/sessions/${session.id}`)).body.summary, "");
    await ask(socket, session.id, "Why no garbage collector?");
    socket.close();
    let summary = "";
    for (let i = 0; i < 50 && !summary; i++) {
      await new Promise((r) => setTimeout(r, 50));
      summary = (await api(server.url, token, "GET", `/api/sessions/${session.id}`)).body.summary;
    }
    assert.match(summary, /What does Tokio do\?/);
    assert.match(summary, /Why no garbage collector\?/);
  } finally {
    await server.stop();
  }
});
