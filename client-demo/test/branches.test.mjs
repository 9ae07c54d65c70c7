// Branches from socket.io-client: a regenerated answer and an edited message are siblings of
// the exchanges they redo (nothing is replaced); a prompt's history is its own branch; the
// active branch is what chat:join and the messages API show, with parentId, siblingIndex and
// siblingCount; chat:branch:select moves it; other tabs hear of each change; every bad input
// gets its error and changes nothing. With the fake OpenAI-compatible provider, whose requests
// show the prompts; the same flow on PostgreSQL.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { api, ask, connect, createSession, devToken, regenerate, request } from "../lib/client.mjs";
import { startServer, freshPostgresUrl, samplePost } from "./helpers/server.mjs";
import { startFakeOpenAI } from "./helpers/fake-openai.mjs";

let fake;
let server;
let token;
const provider = () => ({ AI_PROVIDER: "openai", AI_BASE_URL: fake.url, AI_API_KEY: "k", AI_MODEL: "fake-model" });
before(async () => {
  fake = await startFakeOpenAI();
  server = await startServer({ env: provider() });
  token = await devToken(server.url, "alice");
});
after(async () => {
  await server.stop();
  await fake.close();
});

const branchOf = (messages) => messages.map((m) => [m.userMessage, m.parentId, m.siblingIndex, m.siblingCount]);

/** The `chat:session:updated` events `socket` gets from now on. */
function updates(socket) {
  const seen = [];
  socket.on("chat:session:updated", (p) => seen.push(p));
  return seen;
}

async function waitFor(check, what) {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 25));
  assert.ok(check(), what);
}

/** The answer requests the fake provider got whose last user message is `content`. */
const promptsFor = (content) => fake.requests.filter((r) => r.kind === "answer" && r.body.messages.at(-1)?.content?.includes(content));

async function treeFlow(url, token) {
  const { session } = await createSession(url, token, samplePost);
  const socket = await connect(url, token);
  const tab = await connect(url, token);
  assert.equal((await request(tab, "chat:join", { sessionId: session.id })).ok, true);
  const heard = updates(tab);
  const first = await ask(socket, session.id, "What is the first point?");
  const second = await ask(socket, session.id, "What is the second point?");
  assert.equal(second.terminal.name, "chat:stream:end");

  // Regenerate the second answer: a sibling after the first exchange, streamed to its end.
  const again = await regenerate(socket, session.id, second.ack.messageId);
  assert.equal(again.ack.ok, true);
  assert.notEqual(again.ack.messageId, second.ack.messageId);
  assert.equal(again.terminal.name, "chat:stream:end");
  await waitFor(() => heard.some((u) => u.activeMessageId === again.ack.messageId), "the other tab hears of the new branch");
  let { messages } = (await api(url, token, "GET", `/api/sessions/${session.id}/messages`)).body;
  assert.deepEqual(branchOf(messages), [
    ["What is the first point?", null, 0, 1],
    ["What is the second point?", first.ack.messageId, 1, 2],
  ]);
  assert.equal(messages[1].id, again.ack.messageId);
  assert.equal(messages[1].aiResponse, again.terminal.payload.content);
  const tree = (await api(url, token, "GET", `/api/sessions/${session.id}/messages?all=true`)).body.messages;
  assert.equal(tree.length, 3, "the old answer stays");
  const old = tree.find((m) => m.id === second.ack.messageId);
  assert.equal(old.aiResponse, second.terminal.payload.content);
  assert.deepEqual([old.siblingIndex, old.siblingCount], [0, 2]);

  // Edit the first message: a new first exchange; the next question's prompt holds that branch only.
  const edited = await ask(socket, session.id, "What is the first point, in short?", { payload: { parentId: null } });
  assert.equal(edited.ack.ok, true);
  const third = await ask(socket, session.id, "What is the third point?");
  assert.equal(third.ack.ok, true);
  const prompt = promptsFor("What is the third point?").at(-1).body.messages.map((m) => m.content).join("\n");
  assert.match(prompt, /What is the first point, in short\?/);
  assert.doesNotMatch(prompt, /What is the second point\?/, "another branch's exchange is not in the prompt");
  ({ messages } = (await api(url, token, "GET", `/api/sessions/${session.id}/messages`)).body);
  assert.deepEqual(branchOf(messages), [
    ["What is the first point, in short?", null, 1, 2],
    ["What is the third point?", edited.ack.messageId, 0, 1],
  ]);

  // Select the old second answer's branch (from another socket): the ack and every view follow.
  const selected = await request(tab, "chat:branch:select", { sessionId: session.id, messageId: second.ack.messageId });
  assert.equal(selected.ok, true);
  assert.deepEqual(branchOf(selected.messages), [
    ["What is the first point?", null, 0, 2],
    ["What is the second point?", first.ack.messageId, 0, 2],
  ]);
  const joined = await request(socket, "chat:join", { sessionId: session.id });
  assert.deepEqual(joined.messages.map((m) => m.id), selected.messages.map((m) => m.id));
  const fourth = await ask(socket, session.id, "What comes after the second point?");
  ({ messages } = (await api(url, token, "GET", `/api/sessions/${session.id}/messages`)).body);
  assert.deepEqual(messages.map((m) => m.id), [first.ack.messageId, second.ack.messageId, fourth.ack.messageId], "a message follows the selected branch");
  assert.deepEqual(messages.map((m) => m.parentId), [null, first.ack.messageId, second.ack.messageId]);
  const before = (await api(url, token, "GET", `/api/sessions/${session.id}/messages?before=${fourth.ack.messageId}&limit=1`)).body;
  assert.deepEqual(before.messages.map((m) => m.id), [second.ack.messageId], "pages back along the branch");
  socket.close();
  tab.close();
}

test("regenerate and edit make siblings; prompts, join, the API and other tabs follow the active branch", async () => {
  await treeFlow(server.url, token);
});

test("the same branches on PostgreSQL", async (t) => {
  const database = freshPostgresUrl();
  if (!database) return t.skip("no PostgreSQL here");
  const pg = await startServer({ env: { ...provider(), DATABASE_URL: database } });
  try {
    await treeFlow(pg.url, await devToken(pg.url, "alice"));
  } finally {
    await pg.stop();
  }
});

test("the same clientMessageId regenerates once", async () => {
  const { session } = await createSession(server.url, token, samplePost);
  const socket = await connect(server.url, token);
  const first = await ask(socket, session.id, "What is the first point?");
  const again = await regenerate(socket, session.id, first.ack.messageId, { payload: { clientMessageId: "regen-1" } });
  const retry = await request(socket, "chat:regenerate", { sessionId: session.id, messageId: first.ack.messageId, clientMessageId: "regen-1" });
  assert.deepEqual([retry.ok, retry.messageId, retry.duplicate], [true, again.ack.messageId, true]);
  const tree = (await api(server.url, token, "GET", `/api/sessions/${session.id}/messages?all=true`)).body.messages;
  assert.equal(tree.length, 2);
  socket.close();
});

test("every bad branch input gets its error and changes nothing", async () => {
  const { session } = await createSession(server.url, token, samplePost);
  const { session: mine } = await createSession(server.url, token, samplePost);
  const bob = await devToken(server.url, "bob");
  const { session: bobs } = await createSession(server.url, bob, samplePost);
  const socket = await connect(server.url, token);
  const bobSocket = await connect(server.url, bob);
  const first = await ask(socket, session.id, "What is the first point?");
  const elsewhere = await ask(socket, mine.id, "What is the first point?");
  const bobsMessage = await ask(bobSocket, bobs.id, "What is the first point?");
  const unknown = "0190f000-0000-7000-8000-000000000000";
  const refused = async (event, payload) => (await request(socket, event, payload)).error;
  const send = (extra) => refused("chat:message", { sessionId: session.id, content: "An edit", ...extra });
  const cases = [
    [await send({ parentId: unknown }), "NOT_FOUND"],
    // Another user's exchange is not told apart from a missing one.
    [await send({ parentId: bobsMessage.ack.messageId }), "NOT_FOUND"],
    [await send({ parentId: elsewhere.ack.messageId }), "INVALID_INPUT", "parentId: is an exchange of another session"],
    [await send({ parentId: "nope" }), "INVALID_INPUT", "parentId"],
    [await send({ parentId: 5 }), "INVALID_INPUT", "parentId"],
    [await refused("chat:regenerate", { sessionId: session.id, messageId: unknown }), "NOT_FOUND"],
    [await refused("chat:regenerate", { sessionId: session.id, messageId: bobsMessage.ack.messageId }), "NOT_FOUND"],
    [await refused("chat:regenerate", { sessionId: session.id, messageId: elsewhere.ack.messageId }), "NOT_FOUND"],
    [await refused("chat:regenerate", { sessionId: session.id }), "INVALID_INPUT", "messageId"],
    [await refused("chat:regenerate", { sessionId: bobs.id, messageId: bobsMessage.ack.messageId }), "NOT_FOUND"],
    [await refused("chat:branch:select", { sessionId: session.id, messageId: unknown }), "NOT_FOUND"],
    [await refused("chat:branch:select", { sessionId: session.id, messageId: elsewhere.ack.messageId }), "NOT_FOUND"],
    [await refused("chat:branch:select", { sessionId: session.id, messageId: "x" }), "INVALID_INPUT", "messageId"],
    [await refused("chat:branch:select", { sessionId: bobs.id, messageId: bobsMessage.ack.messageId }), "NOT_FOUND"],
  ];
  for (const [error, code, text] of cases) {
    assert.equal(error?.code, code, JSON.stringify(error));
    if (text) assert.match(error.message, new RegExp(text.replace(/[?]/g, "\\?")));
  }
  // Regenerating while the session answers: BUSY (the one being answered, or another).
  const slow = await request(socket, "chat:message", { sessionId: session.id, content: "slow: tell me everything" });
  assert.equal(slow.ok, true);
  assert.equal((await refused("chat:regenerate", { sessionId: session.id, messageId: slow.messageId })).code, "BUSY");
  assert.equal((await refused("chat:regenerate", { sessionId: session.id, messageId: first.ack.messageId })).code, "BUSY");
  await request(socket, "chat:stop", { sessionId: session.id });
  const allBad = await fetch(`${server.url}/api/sessions/${session.id}/messages?all=true&limit=5`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(allBad.status, 400);
  assert.equal((await allBad.json()).error.code, "INVALID_INPUT");
  const tree = (await api(server.url, token, "GET", `/api/sessions/${session.id}/messages?all=true`)).body.messages;
  assert.equal(tree.length, 2, "only the two messages accepted are stored");
  socket.close();
  bobSocket.close();
});
