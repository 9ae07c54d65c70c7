// MAX_ANSWERS_GENERATING: answers beyond the bound are acknowledged and started at once, then
// wait for a slot before generating; a waiting answer can be stopped; the wait is visible in
// /metrics.
import { test } from "node:test";
import assert from "node:assert/strict";
import { api, collectAnswer, connect, createSession, request } from "../lib/client.mjs";
import { useServer, samplePost } from "./helpers/server.mjs";

// One slot, and answers paced so that the first lasts long enough to act while it runs.
const ctx = useServer({ env: { LOCAL_AI_PACING_MS: "40", MAX_ANSWERS_GENERATING: "1" } });
const question = "How does Rust keep idle connections cheap and what does Tokio do?";

async function answersWaiting() {
  const text = await (await fetch(`${ctx.url}/metrics`)).text();
  return Number(text.match(/^postchat_answers_waiting (\S+)$/m)?.[1] ?? 0);
}

/** Sends a question on a new session; returns its socket, ack and collected answer. */
async function send() {
  const { session } = await createSession(ctx.url, ctx.token, samplePost);
  const socket = await connect(ctx.url, ctx.token);
  const answer = collectAnswer(socket);
  const started = new Promise((r) => socket.once("chat:stream:start", r));
  const ack = await request(socket, "chat:message", { sessionId: session.id, content: question });
  assert.equal(ack.ok, true);
  answer.setMessageId(ack.messageId);
  return { session, socket, ack, answer, started };
}

test("an answer beyond the bound is acked and started at once, then generated after the one before it", async () => {
  const first = await send();
  await new Promise((r) => first.socket.once("chat:stream:token", r));
  const second = await send();
  await second.started; // not held back by the first answer
  assert.equal(await answersWaiting(), 1, "the second answer waits for the slot");
  const firstEvents = await first.answer.finished;
  const secondEvents = await second.answer.finished;
  assert.equal(firstEvents.at(-1).name, "chat:stream:end");
  assert.equal(secondEvents.at(-1).name, "chat:stream:end");
  assert.ok(secondEvents.at(-1).payload.content.length > 0);
  assert.equal(await answersWaiting(), 0);
  first.socket.close();
  second.socket.close();
});

test("the second answer's first token comes after the first answer's end", async () => {
  const order = [];
  const first = await send();
  const second = await send();
  first.socket.once("chat:stream:end", () => order.push("first ended"));
  second.socket.once("chat:stream:token", () => order.push("second's first token"));
  await Promise.all([first.answer.finished, second.answer.finished]);
  assert.deepEqual(order, ["first ended", "second's first token"]);
  first.socket.close();
  second.socket.close();
});

test("chat:stop ends an answer that waits for a slot, stored as stopped, and the session goes on", async () => {
  const first = await send();
  await new Promise((r) => first.socket.once("chat:stream:token", r));
  const second = await send();
  await second.started;
  const stop = await request(second.socket, "chat:stop", { sessionId: second.session.id });
  assert.deepEqual(stop, { ok: true, stopped: true });
  const events = await second.answer.finished;
  const end = events.at(-1);
  assert.equal(end.name, "chat:stream:end");
  assert.equal(end.payload.stopped, true);
  assert.equal(end.payload.content, "");
  assert.equal(events.filter((e) => e.name === "chat:stream:token").length, 0);
  assert.equal(await answersWaiting(), 0, "a stopped answer no longer waits");
  const stored = await api(ctx.url, ctx.token, "GET", `/api/sessions/${second.session.id}/messages`);
  assert.equal(stored.body.messages[0].status, "stopped");
  // The first answer still ends normally, and the stopped session takes its next message.
  assert.equal((await first.answer.finished).at(-1).name, "chat:stream:end");
  const next = collectAnswer(second.socket);
  const ack = await request(second.socket, "chat:message", { sessionId: second.session.id, content: question });
  assert.equal(ack.ok, true);
  next.setMessageId(ack.messageId);
  assert.equal((await next.finished).at(-1).name, "chat:stream:end");
  first.socket.close();
  second.socket.close();
});
