// A database that is up but does not answer in time (its messages table locked, as by a
// migration): STORAGE_UNAVAILABLE within DATABASE_STATEMENT_TIMEOUT_MS, not a wait without end,
// and answers again once the lock is gone. A message that was stored but never answered (its
// accept was told the insert failed, then the insert committed) is answered when sent again
// with its clientMessageId.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { api, ask, connect, devToken, request } from "../lib/client.mjs";
import { freshPostgresUrl, samplePost, startServer } from "./helpers/server.mjs";

async function withSession(t, fn) {
  const url = freshPostgresUrl();
  if (!url) return t.skip("PostgreSQL is unreachable");
  const server = await startServer({
    env: { DATABASE_URL: url, DATABASE_STATEMENT_TIMEOUT_MS: "500", DATABASE_ACQUIRE_TIMEOUT_MS: "1000" },
  });
  try {
    const token = await devToken(server.url, "alice");
    const post = await api(server.url, token, "POST", "/api/posts", samplePost);
    const session = (await api(server.url, token, "POST", "/api/sessions", { postId: post.body.id, title: "Slow" })).body;
    const socket = await connect(server.url, token);
    try {
      await fn({ url, server, session, socket });
    } finally {
      socket.close();
    }
  } finally {
    await server.stop();
  }
}

/** A psql session holding an exclusive lock on messages until `release()`. */
async function lockMessages(url) {
  const psql = spawn("psql", [url, "-v", "ON_ERROR_STOP=1", "-qAt"], { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  psql.stdout.on("data", (d) => (out += d));
  psql.stdin.write("BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n");
  for (let i = 0; i < 100 && !out.includes("locked"); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(out.includes("locked"), "the lock is held");
  const exited = new Promise((r) => psql.on("exit", r));
  return { release: async () => { psql.stdin.end("ROLLBACK;\n"); await exited; } };
}

test("a locked messages table gives STORAGE_UNAVAILABLE in time, then the message is answered", async (t) => {
  await withSession(t, async ({ url, server, session, socket }) => {
    assert.equal((await ask(socket, session.id, "What does Tokio do?")).terminal.name, "chat:stream:end");

    const lock = await lockMessages(url);
    const started = Date.now();
    const ack = await request(socket, "chat:message", {
      sessionId: session.id,
      content: "Still there?",
      clientMessageId: "locked-1",
    });
    const waited = Date.now() - started;
    await lock.release();
    assert.equal(ack.ok, false);
    assert.equal(ack.error.code, "STORAGE_UNAVAILABLE");
    assert.equal(ack.error.retryable, true);
    assert.ok(waited >= 400 && waited < 2_500, `answered in ${waited} ms`);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metrics, /^postchat_db_queries_total\{op="insert_message",outcome="unavailable"\} [1-9]/m);

    // The session is free again, and the same message (same key) gets its one answer.
    const again = await ask(socket, session.id, "Still there?", { payload: { clientMessageId: "locked-1" } });
    assert.equal(again.ack.ok, true);
    assert.equal(again.ack.duplicate, undefined);
    assert.equal(again.terminal.name, "chat:stream:end");
  });
});

test("a stored message nothing answered is answered when its clientMessageId comes again", async (t) => {
  await withSession(t, async ({ url, session, socket }) => {
    // What an accept leaves when its insert timed out after committing: the exchange stored,
    // `streaming`, and no answer running.
    const id = execFileSync("psql", [url, "-v", "ON_ERROR_STOP=1", "-qAt", "-c",
      `INSERT INTO messages (id, chat_session_id, client_message_id, user_message, intent_type, status, created_at, updated_at)
       VALUES (gen_random_uuid(), '${session.id}', 'orphan-1', 'What does Tokio do?', 'question', 'streaming', now(), now())
       RETURNING id`]).toString().trim();

    const answer = await ask(socket, session.id, "What does Tokio do?", { payload: { clientMessageId: "orphan-1" } });
    assert.equal(answer.ack.ok, true);
    assert.equal(answer.ack.duplicate, true);
    assert.equal(answer.ack.messageId, id);
    assert.equal(answer.terminal.name, "chat:stream:end");
    assert.ok(answer.tokens.length > 0);
    const status = execFileSync("psql", [url, "-qAt", "-c", `SELECT status FROM messages WHERE id = '${id}'`]);
    assert.equal(status.toString().trim(), "complete");

    // Answered once: the key again is a plain duplicate, with no second answer.
    const ack = await request(socket, "chat:message", {
      sessionId: session.id,
      content: "What does Tokio do?",
      clientMessageId: "orphan-1",
    });
    assert.deepEqual([ack.ok, ack.duplicate, ack.messageId], [true, true, id]);
  });
});
