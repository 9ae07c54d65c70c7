// History survives a restart, on the SQLite file and on PostgreSQL; a SIGTERM stops the server
// cleanly (exit 0).
import { test } from "node:test";
import assert from "node:assert/strict";
import { api, ask, connect, createSession, devToken, request } from "../lib/client.mjs";
import { freshPostgresUrl, startServer, samplePost } from "./helpers/server.mjs";

async function historySurvivesRestart(env, t) {
  const first = await startServer({ env });
  const token = await devToken(first.url, "alice");
  const { session } = await createSession(first.url, token, samplePost);
  const socket = await connect(first.url, token);
  const answer = await ask(socket, session.id, "What does Tokio do?");
  socket.close();
  const stopped = await first.stop({ keepData: true });
  assert.deepEqual(stopped, { code: 0, signal: null }, first.logs());

  const second = await startServer({ env, dataDir: first.dataDir });
  try {
    // The dev secret was kept: the old token still works.
    const history = await api(second.url, token, "GET", `/api/sessions/${session.id}/messages`);
    assert.equal(history.status, 200);
    assert.equal(history.body.messages.length, 1);
    assert.equal(history.body.messages[0].aiResponse, answer.terminal.payload.content);
    assert.equal(history.body.messages[0].status, "complete");
    const again = await connect(second.url, token);
    const joined = await request(again, "chat:join", { sessionId: session.id });
    assert.equal(joined.messages[0].id, answer.ack.messageId);
    again.close();
  } finally {
    await second.stop();
  }
}

test("history survives a restart on the SQLite file", async (t) => {
  await historySurvivesRestart({}, t);
});

test("history survives a restart on PostgreSQL", async (t) => {
  const url = freshPostgresUrl();
  if (!url) return t.skip("PostgreSQL unreachable (outside CI)");
  await historySurvivesRestart({ DATABASE_URL: url }, t);
});

test("an answer cut by a shutdown is stored, and a restart shows it interrupted", async () => {
  const first = await startServer({ env: { LOCAL_AI_PACING_MS: "200", SHUTDOWN_GRACE_SECS: "0" } });
  const token = await devToken(first.url, "alice");
  const { session } = await createSession(first.url, token, samplePost);
  const socket = await connect(first.url, token);
  const terminal = new Promise((r) => socket.once("chat:error", r));
  await request(socket, "chat:message", { sessionId: session.id, content: "How does Rust keep idle connections cheap?" });
  await new Promise((r) => socket.once("chat:stream:token", r));
  const stopped = first.stop({ keepData: true });
  const error = await terminal;
  assert.equal(error.code, "SERVER_SHUTDOWN");
  assert.equal(error.retryable, true);
  assert.deepEqual(await stopped, { code: 0, signal: null });
  socket.close();

  const second = await startServer({ dataDir: first.dataDir });
  try {
    const history = await api(second.url, token, "GET", `/api/sessions/${session.id}/messages`);
    assert.equal(history.body.messages[0].status, "interrupted");
    assert.ok(history.body.messages[0].aiResponse.length > 0, "the partial answer was kept");
  } finally {
    await second.stop();
  }
});
