// Against a real OpenAI-compatible server and a real small model (llama-cpp-python's server
// with SmolLM2-135M-Instruct, a 4,096-token window): what a user of a small local model gets.
// Slow (the model runs on the CPU; the first run on a machine also builds llama.cpp), but run
// in CI like every other test.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { api, ask, connect, createSession, devToken, request } from "../lib/client.mjs";
import { startServer, samplePost, twitterLength } from "./helpers/server.mjs";
import { startRealModel } from "./helpers/real-model.mjs";
import { startProcesses } from "./helpers/processes.mjs";

let model;
let server;
let token;
before(async () => {
  model = await startRealModel({ contextTokens: 4096 });
  server = await startServer({
    env: {
      AI_PROVIDER: "openai", AI_BASE_URL: model.url, AI_MODEL: model.model, AI_API_KEY: "unused",
      MODEL_CONTEXT_TOKENS: "4096", ANSWER_MAX_TOKENS: "160",
      FIRST_TOKEN_TIMEOUT_SECS: "120", TOKEN_IDLE_TIMEOUT_SECS: "60", ANSWER_TIMEOUT_SECS: "600",
      HISTORY_MESSAGES: "20", INTENT_TIMEOUT_MS: "8000",
    },
  });
  token = await devToken(server.url, "alice");
}, { timeout: 45 * 60_000 });
after(async () => {
  await server?.stop();
  await model?.stop();
});

function terminalOf(result) {
  return `${result.terminal.name} ${JSON.stringify(result.terminal.payload).slice(0, 300)}`;
}

// First, while the model is idle: later tests leave titles and summaries for it to write.
test("a message the trained classifier is unsure of goes to the model, which takes no json_schema: it falls back cleanly", async () => {
  const { session } = await createSession(server.url, token, samplePost);
  const socket = await connect(server.url, token);
  for (const text of ["bluesky?", "mastodon?"]) {
    const result = await ask(socket, session.id, text);
    assert.ok(["chat:stream:end", "chat:social:generated"].includes(result.terminal.name), terminalOf(result));
  }
  socket.close();
  assert.match(server.logs(), /refuses this response format/, "json_schema refused once, remembered");
  assert.equal(server.logs().match(/refuses this response format/g).length, 1, "only the first message paid");
});

test("a question streams from the real model and is stored with its usage", async () => {
  const { session } = await createSession(server.url, token, samplePost);
  const socket = await connect(server.url, token);
  const result = await ask(socket, session.id, "What does the article say about Tokio?");
  socket.close();
  assert.equal(result.terminal.name, "chat:stream:end", terminalOf(result));
  assert.ok(result.tokens.length > 1, "streamed in pieces");
  assert.equal(result.tokens.map((t) => t.token).join(""), result.terminal.payload.content);
  const stored = (await api(server.url, token, "GET", `/api/sessions/${session.id}/messages`)).body.messages.at(-1);
  assert.equal(stored.status, "complete");
  assert.equal(stored.aiResponse, result.terminal.payload.content);
  assert.ok(stored.usage.promptTokens > 50 && stored.usage.completionTokens > 0, JSON.stringify(stored.usage));
});

test("posts arrive for every platform asked for, within their limits, streamed", async () => {
  const { session } = await createSession(server.url, token, samplePost);
  const socket = await connect(server.url, token);
  const result = await ask(socket, session.id, "Write a tweet and a LinkedIn post about this article");
  socket.close();
  assert.equal(result.terminal.name, "chat:social:generated", terminalOf(result));
  const { posts, content } = result.terminal.payload;
  assert.deepEqual(posts.map((p) => p.platform), ["twitter", "linkedin"]);
  for (const post of posts) assert.ok(post.content.trim().length > 0, JSON.stringify(post));
  assert.ok(twitterLength(posts[0].content) <= 280);
  assert.ok(posts[1].characterCount <= 3000);
  assert.ok(result.tokens.length > 1, "the posts streamed");
  assert.equal(result.tokens.map((t) => t.token).join(""), content);
  assert.doesNotMatch(content, /"platform"\s*:/, "no raw JSON shown");
});

test("a 20-exchange session never fails for the model's window", async () => {
  const { session } = await createSession(server.url, token, samplePost);
  const socket = await connect(server.url, token);
  try {
    for (let i = 0; i < 20; i++) {
      const result = await ask(socket, session.id, `Question ${i + 1}: what else does the article say about chat servers and their connections?`);
      assert.equal(result.terminal.name, "chat:stream:end", `exchange ${i + 1}: ${terminalOf(result)}`);
    }
  } finally {
    socket.close();
  }
  const messages = (await api(server.url, token, "GET", `/api/sessions/${session.id}/messages?limit=50`)).body.messages;
  assert.equal(messages.length, 20);
  assert.ok(messages.every((m) => m.status === "complete"), JSON.stringify(messages.map((m) => m.status)));
});


// llama-cpp-python refuses a whole completion over its window, naming it, but ends a stream
// over it empty (200, no events): such a stream is asked again whole, and the window learned.
test("a new user's settings only (provider, URL, key, model): long questions outgrow the 4k window, then posts; every answer ends within 90 s", { timeout: 10 * 60_000 }, async () => {
  const fresh = await startServer({
    env: { AI_PROVIDER: "openai", AI_BASE_URL: model.url, AI_MODEL: model.model, AI_API_KEY: "unused", RUST_LOG: "info" },
  });
  try {
    const alice = await devToken(fresh.url, "alice");
    const { session } = await createSession(fresh.url, alice, samplePost);
    const socket = await connect(fresh.url, alice);
    const brief = Array.from({ length: 110 }, (_, i) => `Point ${i} of my brief: the scheduler and its wakers.`).join(" ");
    for (let i = 0; i < 3; i++) {
      const started = Date.now();
      const result = await ask(socket, session.id, `Question ${i}. Here is my brief: ${brief} What does the article say about it?`);
      const took = Date.now() - started;
      if (result.terminal?.name !== "chat:stream:end") console.log(fresh.logs().split("\n").filter((l) => /WARN|ERROR|learned/.test(l)).join("\n"));
      assert.equal(result.terminal?.name, "chat:stream:end", `question ${i}: ${result.terminal ? terminalOf(result) : JSON.stringify(result.ack)}`);
      assert.ok(took < 90_000, `question ${i} took ${took} ms`);
    }
    // The other flow, in the same long session: posts.
    const started = Date.now();
    const posts = await ask(socket, session.id, "Write a tweet and a LinkedIn post about this article");
    assert.equal(posts.terminal?.name, "chat:social:generated", posts.terminal ? terminalOf(posts) : JSON.stringify(posts.ack));
    assert.ok(Date.now() - started < 90_000, `posts took ${Date.now() - started} ms`);
    socket.close();
    assert.match(fresh.logs(), /model window learned context_tokens=4096/, "learned from the server's refusal");
  } finally {
    await fresh.stop();
  }
});

// Cluster mode: the process writing an answer is killed; another continues it with the real
// model (llama-cpp-python takes no prefill: the logged text as the assistant's turn, then an
// instruction to continue it exactly).
test("a process killed mid-answer: another continues it with the real model, one gapless answer stored complete", { timeout: 5 * 60_000 }, async (t) => {
  const env = { AI_PROVIDER: "openai", AI_BASE_URL: model.url, AI_MODEL: model.model, AI_API_KEY: "unused", ANSWER_MAX_TOKENS: "120" };
  const cluster = await startProcesses(2, { env });
  if (!cluster) return t.skip("PostgreSQL unreachable");
  try {
    const [a, b] = cluster.servers;
    const alice = cluster.token("alice");
    const { session } = await createSession(a.url, alice, samplePost);
    const [onA, onB] = await Promise.all([connect(a.url, alice), connect(b.url, alice)]);
    await request(onB, "chat:join", { sessionId: session.id });
    const seen = [];
    onB.onAny((name, payload) => seen.push({ name, payload }));
    const ack = await request(onA, "chat:message", { sessionId: session.id, content: "What does the article say about Tokio and its scheduler?" });
    const deadline = Date.now() + 120_000;
    while (seen.filter((e) => e.name === "chat:stream:token").length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    a.process.kill("SIGKILL");
    const ended = () => seen.find((e) => e.payload?.messageId === ack.messageId && ["chat:stream:end", "chat:error"].includes(e.name));
    while (!ended() && Date.now() < deadline + 60_000) await new Promise((r) => setTimeout(r, 100));
    const mine = seen.filter((e) => e.payload?.messageId === ack.messageId);
    const resumed = mine.find((e) => e.name === "chat:stream:status" && e.payload.state === "resumed");
    assert.ok(resumed, "told it resumed");
    let next = 0;
    for (const e of mine.filter((e) => e.name === "chat:stream:token")) {
      assert.equal(e.payload.seq - (e.payload.count ?? 1) + 1, next, `no gap, no double at ${e.payload.seq}`);
      next = e.payload.seq + 1;
    }
    const end = mine.at(-1);
    assert.equal(end.name, "chat:stream:end", JSON.stringify(end.payload).slice(0, 300));
    const text = mine.filter((e) => e.name === "chat:stream:token").map((e) => e.payload.token).join("");
    assert.equal(end.payload.content, text);
    const stored = (await api(b.url, alice, "GET", `/api/sessions/${session.id}/messages`)).body.messages.find((m) => m.id === ack.messageId);
    assert.deepEqual([stored.status, stored.aiResponse], ["complete", text]);
    onB.close();
  } finally {
    await cluster.stop();
  }
});
