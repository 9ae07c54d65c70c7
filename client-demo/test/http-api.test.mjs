// The HTTP API of PROTOCOL.md: shapes, paging, deletion, preferences, health.
import { test } from "node:test";
import assert from "node:assert/strict";
import { api, ask, connect, createSession, devToken } from "../lib/client.mjs";
import { useServer, samplePost } from "./helpers/server.mjs";

const ctx = useServer();

test("health and readiness answer", async () => {
  assert.equal((await fetch(`${ctx.url}/healthz`)).status, 200);
  const ready = await fetch(`${ctx.url}/readyz`);
  assert.equal(ready.status, 200);
  assert.deepEqual(await ready.json(), { status: "ready" });
});

test("a post comes back with its expanded content, camelCase", async () => {
  const created = await api(ctx.url, ctx.token, "POST", "/api/posts", samplePost);
  assert.equal(created.status, 201);
  assert.deepEqual(Object.keys(created.body).sort(), ["content", "createdAt", "id", "summary", "title", "url"]);
  const fetched = await api(ctx.url, ctx.token, "GET", `/api/posts/${created.body.id}`);
  assert.deepEqual(fetched.body, created.body);
  // Without content the page is fetched; an unreachable one is a clear 422, not a post.
  const bare = await api(ctx.url, ctx.token, "POST", "/api/posts", { url: "https://unreachable.invalid/x", title: "Only a title" });
  assert.equal(bare.status, 422);
  assert.equal(bare.body.error.code, "INVALID_INPUT");
  assert.match(bare.body.error.message, /could not be fetched/);
});

test("sessions are created, listed in an object, fetched and deleted", async () => {
  const { session, post } = await createSession(ctx.url, ctx.token, samplePost);
  assert.equal(session.postId, post.id);
  assert.equal(session.title, "", "untitled until its first exchange");
  const titled = await api(ctx.url, ctx.token, "POST", "/api/sessions", { postId: post.id, title: "My chat" });
  assert.equal(titled.body.title, "My chat");
  const list = await api(ctx.url, ctx.token, "GET", "/api/sessions");
  assert.ok(Array.isArray(list.body.sessions));
  assert.equal(list.body.sessions[0].id, titled.body.id, "most recent first");
  assert.equal((await api(ctx.url, ctx.token, "GET", `/api/sessions/${session.id}`)).body.id, session.id);
  assert.equal((await api(ctx.url, ctx.token, "DELETE", `/api/sessions/${session.id}`)).status, 204);
  assert.equal((await api(ctx.url, ctx.token, "GET", `/api/sessions/${session.id}`)).status, 404);
  assert.equal((await api(ctx.url, ctx.token, "GET", `/api/sessions/not-an-id`)).status, 404);
});

test("messages come newest last and page backwards with before", async () => {
  const { session } = await createSession(ctx.url, ctx.token, samplePost);
  const socket = await connect(ctx.url, ctx.token);
  const ids = [];
  for (const q of ["What does Tokio do?", "Why no garbage collector?", "What does Socket.IO add?"]) {
    ids.push((await ask(socket, session.id, q)).ack.messageId);
  }
  socket.close();
  const all = await api(ctx.url, ctx.token, "GET", `/api/sessions/${session.id}/messages`);
  assert.deepEqual(all.body.messages.map((m) => m.id), ids);
  assert.deepEqual(Object.keys(all.body.messages[0]).sort(), ["aiResponse", "createdAt", "id", "intentType", "parentId", "posts", "sessionId", "siblingCount", "siblingIndex", "status", "usage", "userMessage"]);
  assert.deepEqual(all.body.messages.map((m) => m.parentId), [null, ids[0], ids[1]], "one branch");
  const usage = all.body.messages[0].usage;
  assert.equal(usage.estimated, true, "the offline engine's usage is counted here");
  assert.ok(usage.promptTokens > 50 && usage.completionTokens > 0, JSON.stringify(usage));
  const last = await api(ctx.url, ctx.token, "GET", `/api/sessions/${session.id}/messages?limit=1`);
  assert.deepEqual(last.body.messages.map((m) => m.id), [ids[2]]);
  const page = await api(ctx.url, ctx.token, "GET", `/api/sessions/${session.id}/messages?limit=5&before=${ids[2]}`);
  assert.deepEqual(page.body.messages.map((m) => m.id), ids.slice(0, 2));
  for (const q of ["limit=0", "limit=101", "limit=abc", "before=xyz"]) {
    const bad = await api(ctx.url, ctx.token, "GET", `/api/sessions/${session.id}/messages?${q}`);
    assert.equal(bad.status, 400, q);
    assert.equal(bad.body.error.code, "INVALID_INPUT");
  }
});

test("preferences have defaults and are replaced by PUT", async () => {
  const fresh = await devToken(ctx.url, "carol");
  const defaults = await api(ctx.url, fresh, "GET", "/api/preferences");
  assert.deepEqual(defaults.body, { voice: "professional", style: "concise", platforms: ["twitter", "linkedin"], hashtags: true, emoji: false });
  const next = { voice: "playful", style: "short", platforms: ["bluesky", "bluesky", "threads"], hashtags: false, emoji: true };
  const put = await api(ctx.url, fresh, "PUT", "/api/preferences", next);
  assert.deepEqual(put.body, { ...next, platforms: ["bluesky", "threads"] });
  assert.deepEqual((await api(ctx.url, fresh, "GET", "/api/preferences")).body, put.body);
});

test("unknown routes answer 404 in the API's error format", async () => {
  const res = await api(ctx.url, ctx.token, "GET", "/api/nothing-here");
  assert.equal(res.status, 404);
  assert.equal(res.body.error.code, "NOT_FOUND");
});
