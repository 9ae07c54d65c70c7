// Every malformed payload is answered with INVALID_INPUT (in the ack and as chat:error) naming
// what is wrong, and the socket stays usable afterwards.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { api, ask, connect, createSession, devToken, request } from "../lib/client.mjs";
import { startServer, samplePost } from "./helpers/server.mjs";

let server;
let token;
let session;
before(async () => {
  server = await startServer({ env: { MAX_MESSAGE_CHARS: "100" } });
  token = await devToken(server.url, "alice");
  ({ session } = await createSession(server.url, token, samplePost));
});
after(async () => server.stop());

const cases = () => [
  ["not an object (string)", "chat:message", "hello", "payload"],
  ["not an object (number)", "chat:message", 42, "payload"],
  ["not an object (array)", "chat:message", [session.id, "hi"], "payload"],
  ["null", "chat:message", null, "payload"],
  ["missing sessionId", "chat:message", { content: "hi" }, "sessionId"],
  ["sessionId of the wrong type", "chat:message", { sessionId: 12, content: "hi" }, "sessionId"],
  ["sessionId that is no id", "chat:message", { sessionId: "abc", content: "hi" }, "sessionId"],
  ["missing content", "chat:message", { sessionId: session.id }, "content"],
  ["content of the wrong type", "chat:message", { sessionId: session.id, content: { text: "hi" } }, "content"],
  ["blank content", "chat:message", { sessionId: session.id, content: "   \n " }, "content"],
  ["content over the limit", "chat:message", { sessionId: session.id, content: "x".repeat(101) }, "content"],
  ["a NUL byte", "chat:message", { sessionId: session.id, content: "a\u0000b" }, "content"],
  ["clientMessageId of the wrong type", "chat:message", { sessionId: session.id, content: "hi", clientMessageId: 5 }, "clientMessageId"],
  ["clientMessageId too long", "chat:message", { sessionId: session.id, content: "hi", clientMessageId: "k".repeat(65) }, "clientMessageId"],
  ["chat:join without sessionId", "chat:join", {}, "sessionId"],
  ["chat:stop with a bad sessionId", "chat:stop", { sessionId: ["x"] }, "sessionId"],
  ["chat:leave with a string", "chat:leave", "room", "payload"],
  ["an unknown event", "chat:delete-everything", { sessionId: session.id }, "event"],
];

test("each malformed payload gets INVALID_INPUT naming its field, and the socket stays usable", async () => {
  const socket = await connect(server.url, token);
  const errors = [];
  socket.on("chat:error", (e) => errors.push(e));
  for (const [name, event, payload, field] of cases()) {
    const ack = await request(socket, event, payload);
    assert.equal(ack.ok, false, name);
    assert.equal(ack.error.code, "INVALID_INPUT", name);
    assert.equal(ack.error.retryable, false, name);
    assert.ok(ack.error.message.startsWith(`${field}:`), `${name}: ${ack.error.message}`);
    assert.ok(socket.connected, `${name}: still connected`);
  }
  assert.equal(errors.length, cases().length, "every error also came as chat:error");
  const ok = await ask(socket, session.id, "What does Tokio do?");
  assert.equal(ok.terminal.name, "chat:stream:end");
  const history = await api(server.url, token, "GET", `/api/sessions/${session.id}/messages`);
  assert.equal(history.body.messages.length, 1, "no bad message was stored");
  socket.close();
});

test("a malformed message without an ack callback still gets chat:error", async () => {
  const socket = await connect(server.url, token);
  const error = new Promise((r) => socket.once("chat:error", r));
  socket.emit("chat:message", { sessionId: session.id, content: "" });
  const e = await error;
  assert.equal(e.code, "INVALID_INPUT");
  assert.equal(e.sessionId, session.id);
  socket.close();
});

test("malformed HTTP bodies get INVALID_INPUT in the API's error format", async () => {
  const bad = [
    ["/api/posts", "not json"],
    ["/api/posts", JSON.stringify({ url: "ftp://x", title: "t" })],
    ["/api/posts", JSON.stringify({ url: "https://x", title: "t", content: 5 })],
    ["/api/posts", JSON.stringify({ title: "no url" })],
    ["/api/posts", JSON.stringify({ url: "https://x", title: 5 })],
    ["/api/sessions", JSON.stringify({ postId: "nope" })],
  ];
  for (const [path, body] of bad) {
    const res = await fetch(`${server.url}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body,
    });
    assert.equal(res.status, 400, `${path} ${body}`);
    const json = await res.json();
    assert.equal(json.error.code, "INVALID_INPUT");
  }
  const prefs = await api(server.url, token, "PUT", "/api/preferences", { voice: "v", style: "s", platforms: ["myspace"], hashtags: true, emoji: false });
  assert.equal(prefs.status, 400);
  const noPlatforms = await api(server.url, token, "PUT", "/api/preferences", { voice: "v", style: "s", platforms: [], hashtags: true, emoji: false });
  assert.equal(noPlatforms.status, 400);
  assert.match(noPlatforms.body.error.message, /platforms/);
});

test("an HTTP body over the size limit is refused", async () => {
  const res = await fetch(`${server.url}/api/posts`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ url: "https://x", title: "t", content: "x".repeat(70 * 1024) }),
  });
  assert.equal(res.status, 413);
});
