// The per-user chat:message limit: a burst, then RATE_LIMITED with retryAfterMs; a refused
// message stores nothing and starts no answer; reads are not charged; users are limited apart.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { api, connect, createSession, devToken, request } from "../lib/client.mjs";
import { startServer, samplePost } from "./helpers/server.mjs";

let server;
before(async () => {
  server = await startServer({ env: { RATE_LIMIT_MESSAGES_PER_MINUTE: "6", RATE_LIMIT_BURST: "2" } });
});
after(async () => server.stop());

test("after the burst, messages get RATE_LIMITED with a retry time and cost nothing", async () => {
  const token = await devToken(server.url, "alice");
  const sessions = [];
  for (let i = 0; i < 3; i++) sessions.push((await createSession(server.url, token, samplePost)).session);
  const socket = await connect(server.url, token);
  const errors = [];
  socket.on("chat:error", (e) => errors.push(e));
  const acks = [];
  for (const session of sessions) {
    acks.push(await request(socket, "chat:message", { sessionId: session.id, content: "What does Tokio do?" }));
  }
  assert.deepEqual(acks.map((a) => a.ok), [true, true, false]);
  const limited = acks[2].error;
  assert.equal(limited.code, "RATE_LIMITED");
  assert.equal(limited.retryable, true);
  assert.ok(limited.retryAfterMs > 0 && limited.retryAfterMs <= 10_000, `${limited.retryAfterMs}`);
  assert.ok(errors.some((e) => e.code === "RATE_LIMITED" && e.retryAfterMs > 0));
  const history = await api(server.url, token, "GET", `/api/sessions/${sessions[2].id}/messages`);
  assert.equal(history.body.messages.length, 0, "the refused message was not stored");

  // Reads are not charged.
  for (let i = 0; i < 5; i++) {
    assert.equal((await request(socket, "chat:join", { sessionId: sessions[0].id })).ok, true);
  }
  // Another user has their own allowance.
  const bob = await devToken(server.url, "bob");
  const { session } = await createSession(server.url, bob, samplePost);
  const other = await connect(server.url, bob);
  assert.equal((await request(other, "chat:message", { sessionId: session.id, content: "What does Tokio do?" })).ok, true);
  other.close();
  socket.close();
});
