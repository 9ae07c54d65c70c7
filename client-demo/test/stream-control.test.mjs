// Stream control and delivery: duplicates in parallel and after a reconnect, the grace period
// for answers nobody watches, a reader that stops reading, one that falls behind and catches up,
// shutdown with answers in flight, and recovery after a crash.
import { test } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { api, ask, collectAnswer, connect, createSession, devToken, request } from "../lib/client.mjs";
import { startServer, samplePost } from "./helpers/server.mjs";
import { startFakeOpenAI } from "./helpers/fake-openai.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const question = "How does Rust keep idle connections cheap and what does Tokio do?";

async function socketsBehind(server) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  return Number(text.match(/^postchat_sockets_behind (\S+)$/m)?.[1]);
}

/** Checks that token events cover every `seq` from 0 exactly once (a coalesced event carries
 * `count` tokens, ending at its `seq`); returns how many tokens they carry. */
function assertGapless(tokens, who) {
  let next = 0;
  for (const t of tokens) {
    assert.equal(t.seq - (t.count ?? 1) + 1, next, `${who}: no gap, no double`);
    next = t.seq + 1;
  }
  return next;
}

/** The fake provider's 5 MB flood is an answer as long as the server allows. */
const FLOOD_ALLOWED = { MODEL_CONTEXT_TOKENS: "10000000", ANSWER_MAX_TOKENS: "5000000" };

async function history(server, token, sessionId) {
  return (await api(server.url, token, "GET", `/api/sessions/${sessionId}/messages`)).body.messages;
}

test("parallel retries of one clientMessageId get one answer and the same messageId", async () => {
  const server = await startServer({ env: { LOCAL_AI_PACING_MS: "20" } });
  try {
    const token = await devToken(server.url, "alice");
    const { session } = await createSession(server.url, token, samplePost);
    const sockets = await Promise.all([connect(server.url, token), connect(server.url, token), connect(server.url, token)]);
    const payload = { sessionId: session.id, content: question, clientMessageId: "same-key" };
    const acks = await Promise.all(sockets.flatMap((s) => [request(s, "chat:message", payload), request(s, "chat:message", payload)]));
    assert.ok(acks.every((a) => a.ok), JSON.stringify(acks));
    assert.equal(new Set(acks.map((a) => a.messageId)).size, 1);
    assert.equal(acks.filter((a) => !a.duplicate).length, 1, "exactly one was new");
    await new Promise((r) => sockets[0].once("chat:stream:end", r));
    assert.equal((await history(server, token, session.id)).length, 1);
    sockets.forEach((s) => s.close());
  } finally {
    await server.stop();
  }
});

test("a retry after a reconnect is a duplicate, and the answer it refers to is complete", async () => {
  const server = await startServer({ env: { LOCAL_AI_PACING_MS: "20" } });
  try {
    const token = await devToken(server.url, "alice");
    const { session } = await createSession(server.url, token, samplePost);
    const first = await connect(server.url, token);
    const payload = { sessionId: session.id, content: question, clientMessageId: "retry-me" };
    const ack = await request(first, "chat:message", payload);
    first.close();
    const second = await connect(server.url, token);
    const again = await request(second, "chat:message", payload);
    assert.deepEqual(again, { ok: true, messageId: ack.messageId, duplicate: true });
    const conflict = await request(second, "chat:message", { ...payload, content: "Something else" });
    assert.equal(conflict.error.code, "CONFLICT");
    let messages = [];
    for (let i = 0; i < 100; i++) {
      messages = await history(server, token, session.id);
      if (messages[0]?.status === "complete") break;
      await sleep(50);
    }
    assert.equal(messages.length, 1);
    assert.equal(messages[0].status, "complete");
    second.close();
  } finally {
    await server.stop();
  }
});

test("a retry of an answered message while the next answer streams is a duplicate, not BUSY", async () => {
  const server = await startServer({ env: { LOCAL_AI_PACING_MS: "20" } });
  try {
    const token = await devToken(server.url, "alice");
    const { session } = await createSession(server.url, token, samplePost);
    const socket = await connect(server.url, token);
    const first = await ask(socket, session.id, question, { payload: { clientMessageId: "first" } });
    assert.equal(first.terminal.name, "chat:stream:end");
    const next = await request(socket, "chat:message", { sessionId: session.id, content: "And then?", clientMessageId: "next" });
    assert.equal(next.ok, true);
    const retry = await request(socket, "chat:message", { sessionId: session.id, content: question, clientMessageId: "first" });
    assert.deepEqual(retry, { ok: true, messageId: first.ack.messageId, duplicate: true });
    const other = await request(socket, "chat:message", { sessionId: session.id, content: "A third one", clientMessageId: "third" });
    assert.equal(other.error.code, "BUSY", "a new message still waits for the answer in flight");
    await new Promise((r) => socket.once("chat:stream:end", r));
    socket.close();
  } finally {
    await server.stop();
  }
});

test("an answer nobody watches for the grace period is cancelled and stored as interrupted", async () => {
  const server = await startServer({ env: { LOCAL_AI_PACING_MS: "150", WATCH_GRACE_SECS: "1" } });
  try {
    const token = await devToken(server.url, "alice");
    const { session } = await createSession(server.url, token, samplePost);
    const socket = await connect(server.url, token);
    await request(socket, "chat:message", { sessionId: session.id, content: question });
    await new Promise((r) => socket.once("chat:stream:token", r));
    socket.close();
    let stored;
    for (let i = 0; i < 60; i++) {
      await sleep(100);
      stored = (await history(server, token, session.id))[0];
      if (stored.status !== "streaming") break;
    }
    assert.equal(stored.status, "interrupted");
    assert.ok(stored.aiResponse.length > 0, "the partial answer is kept");
    // The session is free again.
    const again = await connect(server.url, token);
    assert.equal((await request(again, "chat:message", { sessionId: session.id, content: "What does Tokio do?" })).ok, true);
    again.close();
  } finally {
    await server.stop();
  }
});

test("a reader that stops reading is cut off as a slow consumer while the other tab gets every token", async () => {
  const fake = await startFakeOpenAI();
  const server = await startServer({
    env: { AI_PROVIDER: "openai", AI_BASE_URL: fake.url, AI_API_KEY: "k", SOCKET_QUEUE_PACKETS: "16", SLOW_CONSUMER_SECS: "1", ...FLOOD_ALLOWED },
  });
  try {
    const token = await devToken(server.url, "alice");
    const { session } = await createSession(server.url, token, samplePost);
    const stalled = await connect(server.url, token, { transports: ["websocket"] });
    const reader = await connect(server.url, token, { transports: ["websocket"] });
    await request(stalled, "chat:join", { sessionId: session.id });
    const stalledGone = new Promise((r) => stalled.once("disconnect", r));
    const stalledErrors = [];
    stalled.on("chat:error", (e) => stalledErrors.push(e));
    stalled.io.engine.transport.ws._socket.pause(); // stops reading from the TCP socket
    const answer = collectAnswer(reader);
    const ack = await request(reader, "chat:message", { sessionId: session.id, content: "What does the article say about the scheduler? (flood)" });
    answer.setMessageId(ack.messageId);
    const events = await answer.finished;
    const end = events.at(-1);
    assert.equal(end.name, "chat:stream:end");
    const tokens = events.filter((e) => e.name === "chat:stream:token").map((e) => e.payload);
    assert.equal(assertGapless(tokens, "the reader"), 4000);
    assert.equal(tokens.map((t) => t.token).join(""), end.payload.content);
    stalled.io.engine.transport.ws._socket.resume(); // it reads again: what is waiting arrives
    const reason = await Promise.race([stalledGone, sleep(15_000).then(() => "still connected")]);
    assert.equal(reason, "io server disconnect", "the stalled socket was disconnected by the server");
    assert.ok(stalledErrors.some((e) => e.code === "SLOW_CONSUMER" && e.retryable), JSON.stringify(stalledErrors));
    const stored = (await history(server, token, session.id))[0];
    assert.equal(stored.status, "complete");
    assert.equal(stored.aiResponse.length, end.payload.content.length);
    reader.close();
    stalled.close();
  } finally {
    await server.stop();
    await fake.close();
  }
});

test("a tab that fell behind catches up with every event in order, the next answer after the last one's end", async () => {
  const fake = await startFakeOpenAI();
  // A large outbox allowed: the tab stays connected however much the kernel buffers took.
  const server = await startServer({
    env: {
      AI_PROVIDER: "openai", AI_BASE_URL: fake.url, AI_API_KEY: "k",
      SOCKET_QUEUE_PACKETS: "16", SLOW_CONSUMER_SECS: "30", SLOW_CONSUMER_BYTES: String(64 << 20),
      HISTORY_MESSAGES: "0", // the next prompt without the 5 MB flood (counting it is slow)
      ...FLOOD_ALLOWED,
    },
  });
  try {
    const token = await devToken(server.url, "alice");
    const { session } = await createSession(server.url, token, samplePost);
    const behind = await connect(server.url, token, { transports: ["websocket"] });
    const asker = await connect(server.url, token, { transports: ["websocket"] });
    await request(behind, "chat:join", { sessionId: session.id });
    const seen = [];
    let disconnected = null;
    behind.on("disconnect", (reason) => (disconnected = reason));
    let onLastToken = null;
    for (const name of ["chat:stream:start", "chat:stream:token", "chat:stream:end", "chat:error"]) {
      behind.on(name, (payload) => {
        seen.push({ name, payload });
        // The next answer is asked for the moment this tab has the flood's last token: its
        // start must still come after the flood's end.
        if (name === "chat:stream:token" && payload.seq === 3999 && onLastToken) onLastToken();
      });
    }
    behind.io.engine.transport.ws._socket.pause(); // stops reading: its queue fills, then its outbox
    const flood = collectAnswer(asker);
    const first = await request(asker, "chat:message", { sessionId: session.id, content: "What does the article say about the scheduler? (flood)" });
    flood.setMessageId(first.messageId);
    assert.equal((await flood.finished).at(-1).name, "chat:stream:end");
    assert.equal(await socketsBehind(server), 1, "the paused tab has an outbox");
    const caughtUp = new Promise((r) => (onLastToken = r));
    behind.io.engine.transport.ws._socket.resume();
    await caughtUp;
    const next = collectAnswer(asker);
    const second = await request(asker, "chat:message", { sessionId: session.id, content: "What does Tokio do?" });
    next.setMessageId(second.messageId);
    await next.finished;
    const deadline = Date.now() + 10_000;
    while (seen.filter((e) => e.name === "chat:stream:end").length < 2 && Date.now() < deadline) await sleep(50);

    assert.equal(disconnected, null, "caught up, not cut off");
    assert.equal(await socketsBehind(server), 0, "its outbox is gone once it caught up");
    const ids = [first.messageId, second.messageId];
    const order = seen.filter((e) => e.name !== "chat:stream:token").map((e) => `${e.name} ${ids.indexOf(e.payload.messageId)}`);
    assert.deepEqual(order, ["chat:stream:start 0", "chat:stream:end 0", "chat:stream:start 1", "chat:stream:end 1"]);
    for (const [n, id] of ids.entries()) {
      const events = seen.filter((e) => e.payload.messageId === id).map((e) => e.name);
      assert.equal(events[0], "chat:stream:start", `answer ${n} starts first`);
      assert.equal(events.at(-1), "chat:stream:end", `answer ${n} ends last`);
      const tokens = seen.filter((e) => e.name === "chat:stream:token" && e.payload.messageId === id).map((e) => e.payload);
      assertGapless(tokens, `answer ${n}`);
      const end = seen.find((e) => e.name === "chat:stream:end" && e.payload.messageId === id).payload;
      assert.equal(tokens.map((t) => t.token).join(""), end.content, `answer ${n}: tokens make the content`);
    }
    assert.ok(seen.some((e) => (e.payload.count ?? 1) > 1), "the tab was behind: some tokens came coalesced");
    behind.close();
    asker.close();
  } finally {
    await server.stop();
    await fake.close();
  }
});

test("SIGTERM lets short answers finish, ends the long one with SERVER_SHUTDOWN, stores all, exits 0", async () => {
  const fake = await startFakeOpenAI({ tokenDelayMs: 300 });
  const server = await startServer({
    env: { AI_PROVIDER: "openai", AI_BASE_URL: fake.url, AI_API_KEY: "k", SHUTDOWN_GRACE_SECS: "2", TOKEN_IDLE_TIMEOUT_SECS: "5" },
    keepData: true,
  });
  const token = await devToken(server.url, "alice");
  const sessions = [];
  for (let i = 0; i < 3; i++) sessions.push((await createSession(server.url, token, samplePost)).session);
  const socket = await connect(server.url, token);
  const terminals = new Map();
  const done = new Promise((resolve) => {
    const record = (name) => (p) => {
      if (!p.messageId) return;
      terminals.set(p.sessionId, { name, ...p });
      if (terminals.size === 3) resolve();
    };
    socket.on("chat:stream:end", record("end"));
    socket.on("chat:error", record("error"));
  });
  // Two short answers (4 tokens, 300 ms apart) and a long one (40 tokens, 100 ms apart).
  await request(socket, "chat:message", { sessionId: sessions[0].id, content: "What does the article say about Tokio?" });
  await request(socket, "chat:message", { sessionId: sessions[1].id, content: "What does the article say about Rust?" });
  await request(socket, "chat:message", { sessionId: sessions[2].id, content: "What does the article say about the scheduler? (slow)" });
  await new Promise((r) => socket.once("chat:stream:token", r));
  const exited = server.stop({ keepData: true });
  await sleep(200);
  // No new sockets once shutdown has begun.
  const late = io(server.url, { auth: { token }, reconnection: false, forceNew: true, transports: ["websocket"] });
  const lateResult = await new Promise((r) => {
    late.once("connect", () => r("connected"));
    late.once("connect_error", (e) => r(e.message));
  });
  late.close();
  assert.notEqual(lateResult, "connected");
  await done;
  assert.equal(terminals.get(sessions[0].id).name, "end");
  assert.equal(terminals.get(sessions[1].id).name, "end");
  assert.equal(terminals.get(sessions[2].id).name, "error");
  assert.equal(terminals.get(sessions[2].id).code, "SERVER_SHUTDOWN");
  assert.deepEqual(await exited, { code: 0, signal: null });
  socket.close();

  const again = await startServer({ dataDir: server.dataDir });
  try {
    const statuses = [];
    for (const s of sessions) statuses.push((await history(again, token, s.id))[0]);
    assert.deepEqual(statuses.map((m) => m.status), ["complete", "complete", "interrupted"]);
    assert.equal(statuses[0].aiResponse, "Hello from the model.");
    assert.ok(statuses[2].aiResponse.startsWith("w0 "), "the long answer's partial text is kept");
  } finally {
    await again.stop();
    await fake.close();
  }
});

test("after a crash, answers left streaming show as interrupted in chat:join", async () => {
  const server = await startServer({ env: { LOCAL_AI_PACING_MS: "200" } });
  const token = await devToken(server.url, "alice");
  const { session } = await createSession(server.url, token, samplePost);
  const socket = await connect(server.url, token);
  const ack = await request(socket, "chat:message", { sessionId: session.id, content: question });
  await new Promise((r) => socket.once("chat:stream:token", r));
  server.process.kill("SIGKILL");
  await new Promise((r) => server.process.once("exit", r));
  socket.close();
  const again = await startServer({ dataDir: server.dataDir });
  try {
    const s = await connect(again.url, token);
    const joined = await request(s, "chat:join", { sessionId: session.id });
    assert.equal(joined.inFlight, null);
    assert.equal(joined.messages[0].id, ack.messageId);
    assert.equal(joined.messages[0].status, "interrupted");
    s.close();
  } finally {
    await again.stop();
  }
});
