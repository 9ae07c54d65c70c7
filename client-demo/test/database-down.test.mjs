// PostgreSQL stopped and started again under a running server: messages get
// STORAGE_UNAVAILABLE quickly and cost no model call, /readyz reports it, and the server
// recovers by itself. The database is a cluster of the test's own, never the shared one.
import { test } from "node:test";
import assert from "node:assert/strict";
import { api, ask, connect, devToken, request } from "../lib/client.mjs";
import { startServer, samplePost } from "./helpers/server.mjs";
import { startFakeOpenAI } from "./helpers/fake-openai.mjs";
import { clusterUnavailable, startCluster } from "./helpers/pg-cluster.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("a database outage gives STORAGE_UNAVAILABLE without a model call, and the server recovers", async (t) => {
  const why = clusterUnavailable();
  if (why) {
    if (process.env.CI === "true") throw new Error(`cannot run in CI: ${why}`);
    return t.skip(why);
  }
  const cluster = startCluster();
  const fake = await startFakeOpenAI();
  const server = await startServer({
    env: { DATABASE_URL: cluster.url, DATABASE_ACQUIRE_TIMEOUT_MS: "1000", AI_PROVIDER: "openai", AI_BASE_URL: fake.url, AI_API_KEY: "k" },
  });
  try {
    const token = await devToken(server.url, "alice");
    // Titled, so no background naming call reaches the model during the outage.
    const post = await api(server.url, token, "POST", "/api/posts", samplePost);
    const session = (await api(server.url, token, "POST", "/api/sessions", { postId: post.body.id, title: "Outage" })).body;
    const socket = await connect(server.url, token);
    assert.equal((await ask(socket, session.id, "What does Tokio do?")).terminal.name, "chat:stream:end");

    cluster.stop();
    const calls = fake.requests.length;
    assert.equal((await fetch(`${server.url}/readyz`)).status, 503);
    const started = Date.now();
    const ack = await request(socket, "chat:message", { sessionId: session.id, content: "Is the article still there for me?" });
    assert.equal(ack.ok, false);
    assert.equal(ack.error.code, "STORAGE_UNAVAILABLE");
    assert.equal(ack.error.retryable, true);
    assert.match(ack.error.message, /^storage is unavailable \(ref [0-9a-f]{8}\)$/);
    assert.ok(Date.now() - started < 3_000, `answered in ${Date.now() - started} ms`);
    assert.equal(fake.requests.length, calls, "no model call");
    const http = await api(server.url, token, "GET", "/api/sessions");
    assert.equal(http.status, 503);
    assert.equal(http.body.error.code, "STORAGE_UNAVAILABLE");

    cluster.start();
    let ready = 0;
    for (let i = 0; i < 40 && ready !== 200; i++) {
      await sleep(250);
      ready = (await fetch(`${server.url}/readyz`)).status;
    }
    assert.equal(ready, 200, "ready again");
    const again = await ask(socket, session.id, "What does Tokio do?");
    assert.equal(again.terminal.name, "chat:stream:end");
    socket.close();
  } finally {
    await server.stop();
    await fake.close();
    try { cluster.stop(); } catch { /* already stopped */ }
  }
});
