// The core flow over real socket.io-client 4.x: ask a question, get a streamed answer; ask for
// social posts, get posts that fit; on websocket, polling, and polling upgraded to websocket.
import { test } from "node:test";
import assert from "node:assert/strict";
import { api, ask, connect, createSession, request, collectAnswer } from "../lib/client.mjs";
import { io } from "socket.io-client";
import { useServer, samplePost, twitterLength, LIMITS, upgraded } from "./helpers/server.mjs";

const ctx = useServer();

/** The order and consistency PROTOCOL.md fixes for one streamed answer. */
function assertWellFormedStream(result, { intent }) {
  const names = result.events.map((e) => e.name);
  assert.equal(names[0], "chat:stream:start");
  assert.equal(result.events[0].payload.intentType, intent);
  assert.equal(result.events[0].payload.messageId, result.ack.messageId);
  const seqs = result.tokens.map((t) => t.seq);
  assert.deepEqual(seqs, seqs.map((_, i) => i), "seq counts from 0 with no gaps");
  assert.ok(result.tokens.length > 0, "tokens were streamed");
  const terminal = names.filter((n) => ["chat:stream:end", "chat:social:generated", "chat:error"].includes(n));
  assert.equal(terminal.length, 1, "exactly one terminal event");
  assert.equal(result.terminal.payload.content, result.tokens.map((t) => t.token).join(""));
}

for (const [name, options] of [
  ["websocket only", { transports: ["websocket"] }],
  ["long-polling only", { transports: ["polling"] }],
  ["polling upgraded to websocket", {}],
]) {
  test(`a question gets a streamed answer over ${name}`, async () => {
    const { session } = await createSession(ctx.url, ctx.token, samplePost);
    const socket = await connect(ctx.url, ctx.token, options);
    try {
      if (name.includes("upgraded")) {
        assert.equal(await upgraded(socket.io.engine), "websocket");
      }
      const result = await ask(socket, session.id, "How does Rust keep idle connections cheap?");
      assert.equal(result.ack.ok, true);
      assertWellFormedStream(result, { intent: "question" });
      assert.equal(result.terminal.name, "chat:stream:end");
      assert.equal(result.terminal.payload.intentType, "question");
      assert.match(result.terminal.payload.content, /state machines/);
      assert.equal(result.terminal.payload.stopped, undefined);
    } finally {
      socket.close();
    }
  });
}

test("the ack comes before any output of the answer", async () => {
  const { session } = await createSession(ctx.url, ctx.token, samplePost);
  const socket = await connect(ctx.url, ctx.token);
  const order = [];
  socket.on("chat:stream:start", () => order.push("start"));
  // A callback ack runs as its packet is read (a promise would resolve a tick later).
  const ack = await new Promise((resolve) =>
    socket.emit("chat:message", { sessionId: session.id, content: "What does Tokio do?" }, (reply) => {
      order.push("ack");
      resolve(reply);
    }),
  );
  await new Promise((r) => socket.once("chat:stream:end", r));
  assert.equal(ack.ok, true);
  assert.deepEqual(order.slice(0, 2), ["ack", "start"]);
  socket.close();
});

test("the answer is stored complete and shows in the history", async () => {
  const { session } = await createSession(ctx.url, ctx.token, samplePost);
  const socket = await connect(ctx.url, ctx.token);
  const result = await ask(socket, session.id, "What does Socket.IO add?");
  socket.close();
  const history = await api(ctx.url, ctx.token, "GET", `/api/sessions/${session.id}/messages`);
  assert.equal(history.status, 200);
  const [message] = history.body.messages;
  assert.equal(message.id, result.ack.messageId);
  assert.equal(message.sessionId, session.id);
  assert.equal(message.userMessage, "What does Socket.IO add?");
  assert.equal(message.aiResponse, result.terminal.payload.content);
  assert.equal(message.status, "complete");
  assert.equal(message.intentType, "question");
  assert.deepEqual(message.posts, []);
});

test("a request for social posts gets one post per named platform, each within its limit", async () => {
  const { session } = await createSession(ctx.url, ctx.token, samplePost);
  const socket = await connect(ctx.url, ctx.token);
  const result = await ask(socket, session.id, "Write a tweet, a Bluesky post and a LinkedIn post about this");
  socket.close();
  assertWellFormedStream(result, { intent: "social_post" });
  assert.equal(result.terminal.name, "chat:social:generated");
  const { posts } = result.terminal.payload;
  assert.deepEqual(posts.map((p) => p.platform), ["twitter", "bluesky", "linkedin"]);
  for (const post of posts) {
    assert.ok(post.content.length > 0);
    assert.ok(Array.isArray(post.hashtags));
    assert.ok(post.characterCount <= LIMITS[post.platform], `${post.platform}: ${post.characterCount}`);
  }
  const tweet = posts.find((p) => p.platform === "twitter");
  assert.equal(tweet.characterCount, twitterLength(tweet.content));
  const bluesky = posts.find((p) => p.platform === "bluesky");
  assert.ok([...new Intl.Segmenter().segment(bluesky.content)].length <= 300);

  const history = await api(ctx.url, ctx.token, "GET", `/api/sessions/${session.id}/messages`);
  assert.deepEqual(history.body.messages[0].posts, posts);
  assert.equal(history.body.messages[0].intentType, "social_post");
});

test("social posts follow the user's preferences when no platform is named", async () => {
  const prefs = { voice: "casual and friendly", style: "storytelling", platforms: ["mastodon", "threads"], hashtags: false, emoji: true };
  const stored = await api(ctx.url, ctx.token, "PUT", "/api/preferences", prefs);
  assert.equal(stored.status, 200);
  const { session } = await createSession(ctx.url, ctx.token, samplePost);
  const socket = await connect(ctx.url, ctx.token);
  const result = await ask(socket, session.id, "Create social media posts for this article");
  socket.close();
  const { posts } = result.terminal.payload;
  assert.deepEqual(posts.map((p) => p.platform), ["mastodon", "threads"]);
  for (const post of posts) {
    assert.deepEqual(post.hashtags, []);
    assert.match(post.content, /Just read this/, "casual voice");
    assert.match(post.content, /\p{Extended_Pictographic}/u, "emoji welcome");
  }
  await api(ctx.url, ctx.token, "PUT", "/api/preferences", { ...prefs, platforms: ["twitter", "linkedin"], emoji: false, hashtags: true, voice: "professional", style: "concise" });
});

test("a repeated clientMessageId gets the first message back and no second answer", async () => {
  const { session } = await createSession(ctx.url, ctx.token, samplePost);
  const socket = await connect(ctx.url, ctx.token);
  const first = await ask(socket, session.id, "What does Tokio do?", { payload: { clientMessageId: "k-1" } });
  let starts = 0;
  socket.on("chat:stream:start", () => starts++);
  const again = await request(socket, "chat:message", { sessionId: session.id, content: "What does Tokio do?", clientMessageId: "k-1" });
  assert.deepEqual(again, { ok: true, messageId: first.ack.messageId, duplicate: true });
  const conflict = await request(socket, "chat:message", { sessionId: session.id, content: "Something else", clientMessageId: "k-1" });
  assert.equal(conflict.ok, false);
  assert.equal(conflict.error.code, "CONFLICT");
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(starts, 0);
  const history = await api(ctx.url, ctx.token, "GET", `/api/sessions/${session.id}/messages`);
  assert.equal(history.body.messages.length, 1);
  socket.close();
});

test("chat:join acks the session, its messages and no answer in flight", async () => {
  const { session, post } = await createSession(ctx.url, ctx.token, samplePost);
  const socket = await connect(ctx.url, ctx.token);
  // The session is named in the background once the answer ends: join once it has been.
  const titled = new Promise((resolve) => socket.once("chat:session:updated", resolve));
  await ask(socket, session.id, "What does Tokio do?");
  await titled;
  const joined = await request(socket, "chat:join", { sessionId: session.id });
  assert.equal(joined.ok, true);
  assert.equal(joined.session.id, session.id);
  assert.ok(joined.session.title.startsWith("What does Tokio do"), "named after its first exchange");
  assert.equal(joined.session.post.id, post.id);
  assert.equal(joined.session.post.url, post.url);
  assert.equal(joined.messages.length, 1);
  assert.equal(joined.messages[0].status, "complete");
  assert.equal(joined.inFlight, null);
  assert.deepEqual(await request(socket, "chat:leave", { sessionId: session.id }), { ok: true });
  socket.close();
});

test("chat:stop with nothing in flight says so", async () => {
  const { session } = await createSession(ctx.url, ctx.token, samplePost);
  const socket = await connect(ctx.url, ctx.token);
  assert.deepEqual(await request(socket, "chat:stop", { sessionId: session.id }), { ok: true, stopped: false });
  socket.close();
});

test("a second tab that joined the session sees the same stream", async () => {
  const { session } = await createSession(ctx.url, ctx.token, samplePost);
  const tab1 = await connect(ctx.url, ctx.token);
  const tab2 = await connect(ctx.url, ctx.token);
  await request(tab2, "chat:join", { sessionId: session.id });
  const watched = collectAnswer(tab2);
  const result = await ask(tab1, session.id, "What does Tokio do?");
  const seen = await watched.finished;
  assert.deepEqual(seen.map((e) => e.name), result.events.map((e) => e.name));
  assert.equal(seen.at(-1).payload.content, result.terminal.payload.content);
  tab1.close();
  tab2.close();
});

test("an untitled session is named after its first exchange, and its room is told", async () => {
  const { session } = await createSession(ctx.url, ctx.token, samplePost);
  const socket = await connect(ctx.url, ctx.token);
  const updated = new Promise((r) => socket.once("chat:session:updated", r));
  await ask(socket, session.id, "how does tokio schedule tasks?");
  const event = await updated;
  assert.equal(event.sessionId, session.id);
  assert.equal(event.title, "How does tokio schedule tasks — Building real-time chat servers in Rust");
  const fetched = await api(ctx.url, ctx.token, "GET", `/api/sessions/${session.id}`);
  assert.equal(fetched.body.title, event.title);
  // A second exchange does not rename it.
  let renamed = false;
  socket.on("chat:session:updated", () => (renamed = true));
  await ask(socket, session.id, "What does Socket.IO add?");
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(renamed, false);
  socket.close();
});

test("a session created with a title keeps it", async () => {
  const created = await api(ctx.url, ctx.token, "POST", "/api/posts", samplePost);
  const session = (await api(ctx.url, ctx.token, "POST", "/api/sessions", { postId: created.body.id, title: "My own title" })).body;
  const socket = await connect(ctx.url, ctx.token);
  let renamed = false;
  socket.on("chat:session:updated", () => (renamed = true));
  await ask(socket, session.id, "What does Tokio do?");
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(renamed, false);
  assert.equal((await api(ctx.url, ctx.token, "GET", `/api/sessions/${session.id}`)).body.title, "My own title");
  socket.close();
});

test("an event sent the instant the socket connects is handled (no handler-registration race)", async () => {
  const { session } = await createSession(ctx.url, ctx.token, samplePost);
  const acks = await Promise.all(
    Array.from({ length: 15 }, () => {
      const socket = io(ctx.url, { auth: { token: ctx.token }, transports: ["websocket"], forceNew: true, reconnection: false });
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("a join sent on connect was never answered")), 5_000);
        socket.on("connect", () => {
          socket.emit("chat:join", { sessionId: session.id }, (ack) => {
            clearTimeout(timer);
            socket.close();
            resolve(ack);
          });
        });
      });
    }),
  );
  assert.ok(acks.every((a) => a.ok));
});
