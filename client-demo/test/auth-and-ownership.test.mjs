// The handshake needs a valid JWT (auth.token, ?token= or Bearer header); nobody reaches
// another user's session, and NOT_FOUND never tells "someone else's" from "missing".
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { api, connect, createSession, devToken, request } from "../lib/client.mjs";
import { startServer, samplePost } from "./helpers/server.mjs";

let server;
let alice;
let bob;
before(async () => {
  server = await startServer();
  alice = await devToken(server.url, "alice");
  bob = await devToken(server.url, "bob");
});
after(async () => server.stop());

function connectError(options) {
  const socket = io(server.url, { reconnection: false, forceNew: true, ...options });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => {
      socket.close();
      reject(new Error("connected without a valid token"));
    });
    socket.once("connect_error", (err) => {
      socket.close();
      resolve(err);
    });
  });
}

for (const [name, options] of [
  ["no token", {}],
  ["a malformed token", { auth: { token: "not-a-jwt" } }],
  ["a token signed with another secret", { auth: { token: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.c2lnbmF0dXJl" } }],
  ["a non-string token", { auth: { token: 42 } }],
]) {
  for (const transports of [["websocket"], ["polling"]]) {
    test(`${name} fails the connection with "unauthorized" (${transports[0]})`, async () => {
      const err = await connectError({ ...options, transports });
      assert.equal(err.message, "unauthorized");
    });
  }
}

test("a token in the query string is accepted (2.x clients)", async () => {
  const socket = await connect(server.url, alice, { auth: undefined, query: { token: alice } });
  assert.ok(socket.connected);
  socket.close();
});

test("a Bearer header is accepted (Node clients)", async () => {
  const socket = await connect(server.url, alice, {
    auth: undefined,
    transports: ["websocket"],
    extraHeaders: { authorization: `Bearer ${alice}` },
  });
  assert.ok(socket.connected);
  socket.close();
});

test("the dev token route knows nothing of bad users", async () => {
  const res = await fetch(`${server.url}/dev/token`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ user: "" }) });
  assert.equal(res.status, 400);
});

test("another user's session is NOT_FOUND on every event, like a missing one", async () => {
  const { session } = await createSession(server.url, alice, samplePost);
  const socket = await connect(server.url, bob);
  const errors = [];
  socket.on("chat:error", (e) => errors.push(e));
  for (const [event, payload] of [
    ["chat:message", { sessionId: session.id, content: "Let me in" }],
    ["chat:join", { sessionId: session.id }],
    ["chat:stop", { sessionId: session.id }],
    ["chat:leave", { sessionId: session.id }],
    ["chat:message", { sessionId: "01900000-0000-7000-8000-000000000000", content: "Missing" }],
  ]) {
    const ack = await request(socket, event, payload);
    assert.equal(ack.ok, false, event);
    assert.equal(ack.error.code, "NOT_FOUND", event);
    assert.equal(ack.error.message, "not found");
    assert.equal(ack.error.retryable, false);
  }
  assert.equal(errors.length, 5);
  assert.ok(errors.every((e) => e.code === "NOT_FOUND"));
  const history = await api(server.url, alice, "GET", `/api/sessions/${session.id}/messages`);
  assert.equal(history.body.messages.length, 0, "nothing was stored for bob's attempt");
  socket.close();
});

test("another user's session, post and messages are 404 over HTTP", async () => {
  const { session, post } = await createSession(server.url, alice, samplePost);
  for (const path of [`/api/sessions/${session.id}`, `/api/sessions/${session.id}/messages`, `/api/posts/${post.id}`]) {
    const res = await api(server.url, bob, "GET", path);
    assert.equal(res.status, 404, path);
    assert.deepEqual(res.body, { error: { code: "NOT_FOUND", message: "not found" } });
  }
  assert.equal((await api(server.url, bob, "DELETE", `/api/sessions/${session.id}`)).status, 404);
  assert.equal((await api(server.url, bob, "POST", "/api/sessions", { postId: post.id })).status, 404);
  assert.equal((await api(server.url, alice, "GET", `/api/sessions/${session.id}`)).status, 200);
  const list = await api(server.url, bob, "GET", "/api/sessions");
  assert.ok(list.body.sessions.every((s) => s.id !== session.id));
});

test("the HTTP API refuses requests without a valid bearer token", async () => {
  for (const headers of [{}, { authorization: "Bearer nope" }, { authorization: `Basic ${alice}` }]) {
    const res = await fetch(`${server.url}/api/sessions`, { headers });
    assert.equal(res.status, 401);
    assert.deepEqual(await res.json(), { error: { code: "UNAUTHORIZED", message: "unauthorized" } });
  }
});
