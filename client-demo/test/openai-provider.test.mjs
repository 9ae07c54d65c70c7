// AI_PROVIDER=openai against a fake OpenAI-compatible server that behaves like the real ones
// (helpers/fake-openai.mjs): what the socket client receives and what is stored, for a normal
// stream and for each way a provider fails, is busy, or is smaller than hoped.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { api, ask, connect, createSession, devToken, request } from "../lib/client.mjs";
import { startServer, samplePost } from "./helpers/server.mjs";
import { startFakeOpenAI } from "./helpers/fake-openai.mjs";

let fake;
let server;
let token;
before(async () => {
  fake = await startFakeOpenAI();
  server = await startServer({
    env: { AI_PROVIDER: "openai", AI_BASE_URL: fake.url, AI_API_KEY: "test-key", AI_MODEL: "fake-model", TOKEN_IDLE_TIMEOUT_SECS: "1", FIRST_TOKEN_TIMEOUT_SECS: "5" },
  });
  token = await devToken(server.url, "alice");
});
after(async () => {
  await server.stop();
  await fake.close();
});

async function askIn(content) {
  const { session } = await createSession(server.url, token, samplePost);
  const socket = await connect(server.url, token);
  try {
    const result = await ask(socket, session.id, content);
    const history = await api(server.url, token, "GET", `/api/sessions/${session.id}/messages`);
    return { ...result, stored: history.body.messages.at(-1) };
  } finally {
    socket.close();
  }
}

function assertOneTerminal(result) {
  const terminals = result.events.filter((e) => ["chat:stream:end", "chat:social:generated", "chat:error"].includes(e.name));
  assert.equal(terminals.length, 1);
}

test("a normal stream is forwarded token by token, empty chunks skipped, and stored", async () => {
  const result = await askIn("What does the article say about Tokio?");
  assertOneTerminal(result);
  assert.deepEqual(result.tokens.map((t) => t.token), ["Hello ", "from ", "the ", "model."]);
  assert.equal(result.terminal.name, "chat:stream:end");
  assert.equal(result.terminal.payload.content, "Hello from the model.");
  assert.equal(result.stored.status, "complete");
  assert.equal(result.stored.aiResponse, "Hello from the model.");
  const sent = fake.requests.findLast((r) => r.kind === "answer").body;
  assert.equal(sent.model, "fake-model");
  assert.equal(sent.stream, true);
  assert.equal(sent.max_tokens, 1024, "ANSWER_MAX_TOKENS is sent");
  assert.equal(sent.messages[0].role, "system");
  assert.match(sent.messages[0].content, /untrusted/);
  assert.match(sent.messages[0].content, /Tokio schedules tasks/);
  assert.equal(sent.messages.at(-1).content, "What does the article say about Tokio?");
  assert.deepEqual(result.stored.usage, { promptTokens: 100, completionTokens: 4, estimated: false }, "the provider's count is stored");
});

test("a slow stream arrives in order with every token", async () => {
  const result = await askIn("What does it say about the scheduler? (slow)");
  assertOneTerminal(result);
  assert.equal(result.tokens.length, 40);
  assert.deepEqual(result.tokens.map((t) => t.seq), [...Array(40).keys()]);
  assert.equal(result.stored.status, "complete");
});

test("a 429 is asked again after its Retry-After, each wait told to the room, then its wait is retryAfterMs", async () => {
  const before = fake.requests.length;
  const result = await askIn("What does it say about the scheduler? (status-429)");
  assertOneTerminal(result);
  assert.equal(result.terminal.payload.code, "AI_UNAVAILABLE");
  assert.equal(result.terminal.payload.retryAfterMs, 1000, "the Retry-After header, not a guess");
  const waits = result.events.filter((e) => e.name === "chat:stream:status");
  assert.equal(waits.length, 3, "three waits, each told");
  for (const w of waits) {
    assert.deepEqual(w.payload, { sessionId: result.terminal.payload.sessionId, messageId: result.ack.messageId, state: "waiting", retryAfterMs: 1000 });
  }
  assert.equal(fake.requests.slice(before).filter((r) => r.kind === "answer").length, 4, "asked once and again three times");
});

test("a provider busy for longer than FIRST_TOKEN_TIMEOUT_SECS is not waited for: AI_UNAVAILABLE with its wait", async () => {
  const started = Date.now();
  const result = await askIn("What does it say about the scheduler? (busy-long)");
  assert.equal(result.terminal.payload.code, "AI_UNAVAILABLE");
  assert.equal(result.terminal.payload.retryAfterMs, 60000);
  assert.equal(result.events.filter((e) => e.name === "chat:stream:status").length, 0);
  assert.ok(Date.now() - started < 4000, "no silent wait");
});

test("a provider busy once: the wait is told, then the answer streams", async () => {
  const result = await askIn("What does it say about the scheduler? (busy-once)");
  assert.equal(result.terminal.name, "chat:stream:end");
  const names = result.events.map((e) => e.name);
  assert.ok(names.indexOf("chat:stream:status") < names.indexOf("chat:stream:token"), names.join());
  assert.equal(result.terminal.payload.content, "Hello from the model.");
  assert.equal(result.stored.status, "complete");
});

for (const [scenario, code] of [["status-429", "AI_UNAVAILABLE"], ["status-500", "AI_UNAVAILABLE"]]) {
  test(`${scenario} ends the answer with ${code}, retryable, and stores it as error`, async () => {
    const before = fake.requests.length;
    const result = await askIn(`What does it say about the scheduler? (${scenario})`);
    assertOneTerminal(result);
    assert.equal(result.terminal.name, "chat:error");
    assert.equal(result.terminal.payload.code, code);
    assert.equal(result.terminal.payload.retryable, true);
    assert.equal(result.terminal.payload.messageId, result.ack.messageId);
    assert.doesNotMatch(result.terminal.payload.message, /exploded|slow down/, "provider bodies are not shown");
    assert.equal(result.stored.status, "error");
    assert.ok(fake.requests.length - before >= 2, "asked again before giving up");
  });
}

test("a stall after some tokens ends with AI_TIMEOUT and keeps the partial answer", async () => {
  const result = await askIn("What does it say about the scheduler? (stall)");
  assertOneTerminal(result);
  assert.equal(result.terminal.payload.code, "AI_TIMEOUT");
  assert.equal(result.terminal.payload.retryable, true);
  assert.deepEqual(result.tokens.map((t) => t.token), ["Hello ", "from ", "the "]);
  assert.equal(result.stored.status, "error");
  assert.equal(result.stored.aiResponse, "Hello from the ");
});

test("a malformed chunk ends with AI_ERROR and keeps the tokens before it", async () => {
  const result = await askIn("What does it say about the scheduler? (malformed)");
  assertOneTerminal(result);
  assert.equal(result.terminal.payload.code, "AI_ERROR");
  assert.equal(result.terminal.payload.retryable, false);
  assert.equal(result.stored.status, "error");
  assert.equal(result.stored.aiResponse, result.tokens.map((t) => t.token).join(""));
});

test("a 200 that is a whole completion instead of a stream is read as one answer, not an empty one", async () => {
  const result = await askIn("What does it say about the scheduler? (not-sse)");
  assertOneTerminal(result);
  assert.equal(result.terminal.name, "chat:stream:end");
  assert.equal(result.terminal.payload.content, "not a stream");
  assert.equal(result.stored.status, "complete");
});

test("an empty completion is asked for once more", async () => {
  const result = await askIn("What does it say about the scheduler? (empty-once)");
  assert.equal(result.terminal.name, "chat:stream:end");
  assert.equal(result.terminal.payload.content, "Hello from the model.");
  const always = await askIn("What does it say about the scheduler? (empty-always)");
  assert.equal(always.terminal.payload.code, "AI_ERROR");
  assert.equal(always.stored.status, "error");
});

test("an answer stopped at ANSWER_MAX_TOKENS is stored complete and marked cut", async () => {
  const result = await askIn("What does it say about the scheduler? (long-answer)");
  assert.equal(result.terminal.name, "chat:stream:end");
  assert.equal(result.terminal.payload.cut, true);
  assert.equal(result.stored.status, "complete");
  assert.equal(result.stored.cut, true);
  const normal = await askIn("What does Tokio do?");
  assert.equal(normal.terminal.payload.cut, undefined);
  assert.equal(normal.stored.cut, undefined);
});

test("social posts stream as they are written, then come fitted to their limits, with the preferences in the prompt", async () => {
  await api(server.url, token, "PUT", "/api/preferences", { voice: "wry and warm", style: "storytelling", platforms: ["twitter", "bluesky"], hashtags: true, emoji: false });
  const before = fake.requests.length;
  const result = await askIn("Write social posts about this");
  assertOneTerminal(result);
  assert.equal(result.terminal.name, "chat:social:generated");
  const { posts, content } = result.terminal.payload;
  assert.deepEqual(posts.map((p) => p.platform), ["twitter", "bluesky"]);
  assert.ok(result.tokens.length > 10, "the posts streamed");
  assert.equal(result.tokens.map((t) => t.token).join(""), content, "content is the text streamed");
  assert.match(content, /^X \(Twitter\):\nA twitter post about the article\./);
  assert.match(content, /\n\nBluesky:\nA bluesky post about the article\./);
  assert.doesNotMatch(content, /[{}"]/, "no JSON is shown");
  assert.ok(posts[0].characterCount <= 280, "the over-long tweet was shortened");
  assert.equal(posts[0].content, "Short twitter post.", "rewritten once within its limit");
  const asked = fake.requests.slice(before);
  const shorten = asked.find((r) => r.kind === "shorten");
  assert.match(shorten.body.messages.at(-1).content, /counts \d+ characters; its limit is 280/);
  assert.equal(result.stored.usage.estimated, false);
  assert.equal(result.stored.usage.promptTokens, 200, "both calls are counted");
  assert.deepEqual(posts[0].hashtags, ["#rust", "#chat"]);
  const postsRequest = asked.find((r) => r.kind === "posts");
  assert.equal(postsRequest.body.stream, true);
  assert.equal(postsRequest.body.response_format.type, "json_object");
  const system = postsRequest.body.messages[0].content;
  assert.match(system, /wry and warm/);
  assert.match(system, /storytelling/);
  assert.match(system, /twitter \(limit 280\)/);
  assert.equal(result.stored.status, "complete");
});

test("chat:stop closes the provider's request and stores the partial answer as stopped", async () => {
  const { session } = await createSession(server.url, token, samplePost);
  const socket = await connect(server.url, token);
  const ended = new Promise((r) => socket.once("chat:stream:end", r));
  await request(socket, "chat:message", { sessionId: session.id, content: "What does it say about the scheduler? (slow)" });
  await new Promise((r) => socket.once("chat:stream:token", r));
  const upstream = fake.requests.at(-1);
  const started = Date.now();
  assert.deepEqual(await request(socket, "chat:stop", { sessionId: session.id }), { ok: true, stopped: true });
  const end = await ended;
  assert.equal(end.stopped, true);
  for (let i = 0; i < 50 && !upstream.closedEarly; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(upstream.closedEarly, true, "the upstream request was dropped");
  assert.ok(Date.now() - started < 1000, "within a second");
  const stored = (await api(server.url, token, "GET", `/api/sessions/${session.id}/messages`)).body.messages[0];
  assert.equal(stored.status, "stopped");
  assert.equal(stored.aiResponse, end.content);
  socket.close();
});

test("a provider that refuses connections gives AI_UNAVAILABLE", async () => {
  const dead = await startServer({ env: { AI_PROVIDER: "openai", AI_BASE_URL: "http://127.0.0.1:9/v1", AI_API_KEY: "k" } });
  try {
    const t = await devToken(dead.url, "alice");
    const { session } = await createSession(dead.url, t, samplePost);
    const socket = await connect(dead.url, t);
    const result = await ask(socket, session.id, "Anyone there?");
    socket.close();
    assert.equal(result.terminal.payload.code, "AI_UNAVAILABLE");
    assert.equal(result.terminal.payload.retryable, true);
  } finally {
    await dead.stop();
  }
});

test("posts that do not come back as JSON are asked for one platform at a time as plain text, streamed, never shown raw", async () => {
  await api(server.url, token, "PUT", "/api/preferences", { voice: "plain", style: "short", platforms: ["linkedin", "mastodon"], hashtags: true, emoji: false });
  const before = fake.requests.length;
  const result = await askIn("Write social posts about this posts-garbage");
  assert.equal(result.terminal.name, "chat:social:generated");
  const { posts, content } = result.terminal.payload;
  assert.doesNotMatch(content, /lovely posts/);
  assert.deepEqual(posts.map((p) => [p.platform, p.content, p.hashtags]), [
    ["linkedin", "Plain linkedin post about Tokio. #rust", ["#rust"]],
    ["mastodon", "Plain mastodon post about Tokio. #rust", ["#rust"]],
  ]);
  assert.equal(content, "LinkedIn:\nHere is your post:\nPlain linkedin post about Tokio. #rust\n\nMastodon:\nHere is your post:\nPlain mastodon post about Tokio. #rust");
  assert.equal(result.tokens.map((t) => t.token).join(""), content);
  const plain = fake.requests.slice(before).filter((r) => r.kind === "post");
  assert.equal(plain.length, 2, "one request per platform");
  assert.ok(plain.every((r) => r.body.stream === true && !r.body.response_format));
  assert.equal(result.stored.status, "complete");
});

test("platforms the model left out of its JSON are asked for as plain text", async () => {
  await api(server.url, token, "PUT", "/api/preferences", { voice: "plain", style: "short", platforms: ["linkedin", "mastodon"], hashtags: true, emoji: false });
  const before = fake.requests.length;
  const result = await askIn("Write social posts about this posts-partial");
  assert.deepEqual(result.terminal.payload.posts.map((p) => p.platform), ["linkedin", "mastodon"]);
  assert.match(result.terminal.payload.posts[1].content, /^Plain mastodon post/);
  assert.deepEqual(fake.requests.slice(before).filter((r) => r.kind === "post").length, 1);
});

test("a message the trained classifier is unsure of goes to the classifier, which can make it a request for posts", async () => {
  const before = fake.requests.length;
  const result = await askIn("bluesky?");
  assert.equal(result.terminal.name, "chat:social:generated");
  assert.deepEqual(result.terminal.payload.posts.map((p) => p.platform), ["bluesky"]);
  const classifier = fake.requests.slice(before).find((r) => r.kind === "classifier");
  assert.ok(classifier, "the classifier was asked");
  assert.equal(classifier.body.temperature, 0);
  assert.ok(classifier.body.max_tokens <= 100 || classifier.body.max_completion_tokens <= 100);
  assert.equal(classifier.body.response_format.json_schema.name, "intent");
  assert.equal(classifier.body.messages.at(-1).content, "bluesky?");
});

test("a classifier reply that is not JSON falls back to the trained classifier", async () => {
  const before = fake.requests.length;
  const result = await askIn("classifier-garbage twitter?");
  assert.equal(result.terminal.name, "chat:stream:end", "the trained classifier says question");
  assert.ok(fake.requests.slice(before).some((r) => r.kind === "classifier"));
});

test("clear messages never wait for the classifier", async () => {
  const before = fake.requests.length;
  await askIn("What does Tokio do?");
  assert.ok(!fake.requests.slice(before).some((r) => r.kind === "classifier"));
});

test("AI_PROVIDER=ollama finds Ollama at OLLAMA_HOST (the compose stack's setting) when AI_BASE_URL is unset", async () => {
  const ollama = await startServer({
    env: { AI_PROVIDER: "ollama", OLLAMA_HOST: fake.url.replace(/\/v1$/, "/"), AI_MODEL: "llama3.2" },
  });
  try {
    const aliceToken = await devToken(ollama.url, "alice");
    const { session } = await createSession(ollama.url, aliceToken, samplePost);
    const socket = await connect(ollama.url, aliceToken);
    const before = fake.requests.length;
    const result = await ask(socket, session.id, "What does the article say about the scheduler?");
    assert.equal(result.terminal.name, "chat:stream:end");
    const sent = fake.requests.slice(before).find((r) => r.kind === "answer");
    assert.equal(sent.path, "/v1/chat/completions");
    assert.equal(sent.body.model, "llama3.2");
    socket.close();
  } finally {
    await ollama.stop();
  }
});
