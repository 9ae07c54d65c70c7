// Behaviour while an answer is in flight: BUSY, stop, resume by chat:join. The local engine is
// paced so an answer lasts long enough to act during it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { api, connect, createSession, request, collectAnswer } from "../lib/client.mjs";
import { useServer, samplePost } from "./helpers/server.mjs";

const ctx = useServer({ env: { LOCAL_AI_PACING_MS: "40" } });

const question = "How does Rust keep idle connections cheap and what does Tokio do?";

test("a second message while an answer is in flight gets BUSY and the socket stays usable", async () => {
  const { session } = await createSession(ctx.url, ctx.token, samplePost);
  const socket = await connect(ctx.url, ctx.token);
  const errors = [];
  socket.on("chat:error", (e) => errors.push(e));
  const answer = collectAnswer(socket);
  const first = await request(socket, "chat:message", { sessionId: session.id, content: question });
  answer.setMessageId(first.messageId);
  const second = await request(socket, "chat:message", { sessionId: session.id, content: "And another?" });
  assert.equal(second.ok, false);
  assert.equal(second.error.code, "BUSY");
  assert.equal(second.error.retryable, true);
  const events = await answer.finished;
  assert.equal(events.at(-1).name, "chat:stream:end");
  assert.ok(errors.some((e) => e.code === "BUSY" && e.sessionId === session.id));
  const third = await request(socket, "chat:message", { sessionId: session.id, content: "What does Tokio do?" });
  assert.equal(third.ok, true, "the session takes messages again after the answer");
  socket.close();
});

test("parallel messages on one session: exactly one is accepted", async () => {
  const { session } = await createSession(ctx.url, ctx.token, samplePost);
  const socket = await connect(ctx.url, ctx.token);
  const acks = await Promise.all(
    Array.from({ length: 5 }, (_, i) => request(socket, "chat:message", { sessionId: session.id, content: `Question ${i}?` })),
  );
  assert.equal(acks.filter((a) => a.ok).length, 1);
  assert.equal(acks.filter((a) => !a.ok && a.error.code === "BUSY").length, 4);
  await new Promise((r) => socket.once("chat:stream:end", r));
  socket.close();
});

test("chat:stop ends the answer with stopped: true and stores the partial text", async () => {
  const { session } = await createSession(ctx.url, ctx.token, samplePost);
  const socket = await connect(ctx.url, ctx.token);
  const answer = collectAnswer(socket);
  const ack = await request(socket, "chat:message", { sessionId: session.id, content: question });
  answer.setMessageId(ack.messageId);
  await new Promise((r) => socket.once("chat:stream:token", r));
  const stop = await request(socket, "chat:stop", { sessionId: session.id });
  assert.deepEqual(stop, { ok: true, stopped: true });
  const events = await answer.finished;
  const end = events.at(-1);
  assert.equal(end.name, "chat:stream:end");
  assert.equal(end.payload.stopped, true);
  const tokens = events.filter((e) => e.name === "chat:stream:token").map((e) => e.payload.token).join("");
  assert.equal(end.payload.content, tokens);
  const history = await api(ctx.url, ctx.token, "GET", `/api/sessions/${session.id}/messages`);
  assert.equal(history.body.messages[0].status, "stopped");
  assert.equal(history.body.messages[0].aiResponse, end.payload.content);
  socket.close();
});

test("a client that reconnects mid-answer gets the text so far in chat:join, then the rest", async () => {
  const { session } = await createSession(ctx.url, ctx.token, samplePost);
  const first = await connect(ctx.url, ctx.token);
  const ack = await request(first, "chat:message", { sessionId: session.id, content: question });
  await new Promise((r) => first.once("chat:stream:token", r));
  first.close(); // the answer goes on without it

  await new Promise((r) => setTimeout(r, 150));
  const second = await connect(ctx.url, ctx.token);
  const tokens = [];
  second.on("chat:stream:token", (t) => tokens.push(t));
  const ended = new Promise((r) => second.once("chat:stream:end", r));
  const joined = await request(second, "chat:join", { sessionId: session.id });
  assert.equal(joined.inFlight.messageId, ack.messageId);
  assert.equal(joined.inFlight.intentType, "question");
  assert.ok(joined.inFlight.seq >= 0);
  const end = await ended;
  const live = tokens.filter((t) => t.seq > joined.inFlight.seq);
  assert.deepEqual(tokens.map((t) => t.seq), live.map((t) => t.seq), "no token at or below the snapshot's seq is sent again");
  const seqs = live.map((t) => t.seq);
  assert.deepEqual(seqs, seqs.map((_, i) => joined.inFlight.seq + 1 + i), "live tokens follow the snapshot with no gap");
  assert.equal(joined.inFlight.content + live.map((t) => t.token).join(""), end.content);
  second.close();
});
