// AI_PROVIDER=openai against a provider that misbehaves on purpose (a compromised or buggy
// endpoint): answers far past max_tokens, huge bodies, bracket floods, empty deltas forever,
// redirects elsewhere, its error echoing the API key, and a message that would make dozens of
// calls. Each ends with a clear outcome and the server's memory stays near where it was.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { readFileSync } from "node:fs";
import { api, ask, connect, createSession, devToken } from "../lib/client.mjs";
import { startServer, samplePost } from "./helpers/server.mjs";

const KEY = "sk-proj-hostileTestKey0123456789abcdefXYZ";
const MiB = 1024 * 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const chunk = (content) => JSON.stringify({ id: "x", object: "chat.completion.chunk", choices: [{ index: 0, delta: { content }, finish_reason: null }] });

/** Writes `piece` until `total` bytes are out or the client closed; resolves to the bytes sent. */
async function pour(res, piece, total) {
  let sent = 0;
  while (sent < total && !res.destroyed) {
    if (!res.write(piece)) {
      await new Promise((resolve) => {
        const done = () => {
          res.off("drain", done);
          res.off("close", done);
          resolve();
        };
        res.on("drain", done);
        res.on("close", done);
      });
    }
    sent += piece.length;
  }
  res.end();
  return sent;
}

/** What the provider does, from a word in the user's last message. */
const scenarios = {
  // 100 MB of answer, asked for 64 tokens.
  async flood(res, record) {
    res.writeHead(200, { "content-type": "text/event-stream" });
    record.sent = await pour(res, `data: ${chunk("word ".repeat(200))}\n\n`, 100 * MiB);
  },
  // A 50 MB completion where a stream was asked for.
  async whole(res, record) {
    res.writeHead(200, { "content-type": "application/json" });
    const head = '{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"';
    res.write(head);
    record.sent = await pour(res, "a".repeat(MiB), 50 * MiB);
  },
  // A 500 with a 200 MB body (a 500 is asked again: each time the same).
  async errorbody(res, record) {
    res.writeHead(500, { "content-type": "text/plain" });
    record.sent = await pour(res, "e".repeat(MiB), 200 * MiB);
  },
  // Posts as nothing but brackets: 20 MB of them.
  async brackets(res, record, kind) {
    if (kind !== "posts") return scenarios.plainpost(res);
    res.writeHead(200, { "content-type": "text/event-stream" });
    record.sent = await pour(res, `data: ${chunk("[".repeat(4096))}\n\n`, 20 * MiB);
  },
  // One word, then an empty delta every 200 ms for 30 s.
  async emptydeltas(res, record) {
    res.writeHead(200, { "content-type": "text/event-stream" });
    res.write(`data: ${chunk("Hello ")}\n\n`);
    for (let i = 0; i < 150 && !res.destroyed; i++) {
      res.write(`data: ${chunk("")}\n\n`);
      await sleep(200);
    }
    record.sent = -1;
    res.end();
  },
  async redirect(res) {
    res.writeHead(307, { location: `${internal.url}/v1/chat/completions` });
    res.end();
  },
  async echokey(res) {
    res.writeHead(401, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: { message: `Incorrect API key provided: ${KEY}. You can find your API key at https://platform.openai.com/account/api-keys.`, type: "invalid_request_error", code: "invalid_api_key" } }));
  },
  // Posts JSON never readable, each plain post 300 tokens reported.
  async manycalls(res, record, kind) {
    if (kind === "posts") return stream(res, ["Here are your posts, in prose."], 300);
    return scenarios.plainpost(res);
  },
  plainpost(res) {
    return stream(res, ["A plain post about Tokio. #rust"], 300);
  },
};

function stream(res, words, usage) {
  res.writeHead(200, { "content-type": "text/event-stream" });
  for (const w of words) res.write(`data: ${chunk(w)}\n\n`);
  res.write(`data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: usage, completion_tokens: 5, total_tokens: usage + 5 } })}\n\n`);
  res.end("data: [DONE]\n\n");
}

function kindOf(body) {
  const system = body.messages?.find((m) => m.role === "system")?.content ?? "";
  if (system.includes("[[task]]\nsocial_posts")) return "posts";
  if (system.includes("[[task]]\nsocial_post")) return "post";
  if (system.includes("[[task]]\nshorten")) return "shorten";
  if (system.includes("[[task]]\ntitle") || system.includes("[[task]]\nsummary")) return "background";
  return "answer";
}

let provider;
let internal;
let server;
let token;

async function listen(handler) {
  const s = http.createServer(handler);
  await new Promise((r) => s.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${s.address().port}`, close: () => new Promise((r) => { s.closeAllConnections(); s.close(r); }) };
}

before(async () => {
  const requests = [];
  internal = await listen((req, res) => {
    internal.hits = (internal.hits ?? 0) + 1;
    res.writeHead(200, { "content-type": "text/event-stream" });
    res.end(`data: ${chunk("SECRET-INTERNAL-DATA")}\n\ndata: [DONE]\n\n`);
  });
  provider = await listen(async (req, res) => {
    let raw = "";
    for await (const part of req) raw += part;
    const body = JSON.parse(raw || "{}");
    const kind = kindOf(body);
    const lastUser = [...(body.messages ?? [])].reverse().find((m) => m.role === "user")?.content ?? "";
    const name = Object.keys(scenarios).find((s) => lastUser.includes(s));
    const record = { kind, scenario: name, closedEarly: false };
    requests.push(record);
    res.on("close", () => (record.closedEarly = !res.writableFinished));
    if (kind === "background") return stream(res, ["A title"], 10);
    if (!name) return stream(res, ["Hello ", "there."], 10);
    await scenarios[name](res, record, kind);
  });
  provider.requests = requests;
  server = await startServer({
    env: {
      AI_PROVIDER: "openai", AI_BASE_URL: `${provider.url}/v1`, AI_API_KEY: KEY, AI_MODEL: "hostile",
      ANSWER_MAX_TOKENS: "64", TOKEN_IDLE_TIMEOUT_SECS: "1", FIRST_TOKEN_TIMEOUT_SECS: "10", ANSWER_TIMEOUT_SECS: "60",
      MAX_MODEL_CALLS_PER_MESSAGE: "4", DAILY_TOKEN_BUDGET: "0", SUMMARY_EVERY: "0",
    },
  });
  token = await devToken(server.url, "mallory");
  // Warm: the tokenizer and the pools are loaded before memory is compared.
  const warm = await askIn("What does the article say?");
  assert.equal(warm.terminal.name, "chat:stream:end");
});
after(async () => {
  await server?.stop();
  await provider?.close();
  await internal?.close();
});

function rssMiB() {
  const status = readFileSync(`/proc/${server.process.pid}/status`, "utf8");
  return Number(status.match(/VmRSS:\s+(\d+) kB/)[1]) / 1024;
}

async function askIn(content, asToken = token) {
  const { session } = await createSession(server.url, asToken, samplePost);
  const socket = await connect(server.url, asToken);
  try {
    const result = await ask(socket, session.id, content);
    const history = await api(server.url, asToken, "GET", `/api/sessions/${session.id}/messages`);
    return { ...result, stored: history.body.messages.at(-1), sessionId: session.id };
  } finally {
    socket.close();
  }
}

const requestsOf = (scenario) => provider.requests.filter((r) => r.scenario === scenario);


test("an answer far past ANSWER_MAX_TOKENS is cut there, stored cut, and the provider's request closed", async () => {
  const before = rssMiB();
  const result = await askIn("Tell me everything: flood");
  assert.equal(result.terminal.name, "chat:stream:end");
  assert.equal(result.terminal.payload.cut, true);
  assert.equal(result.stored.status, "complete");
  assert.equal(result.stored.cut, true);
  assert.ok(result.stored.aiResponse.length < 64 * 12, `at most 64 tokens: ${result.stored.aiResponse.length} characters`);
  assert.equal(result.terminal.payload.content, result.tokens.map((t) => t.token).join(""));
  const [record] = requestsOf("flood");
  await sleep(200);
  assert.ok(record.sent < 100 * MiB, "the provider was stopped before it sent it all");
  assert.ok(rssMiB() - before < 16, `memory: ${before} MiB then ${rssMiB()} MiB`);
});

test("a 50 MB completion instead of a stream is refused AI_ERROR without being held", async () => {
  const before = rssMiB();
  const result = await askIn("Answer in one piece: whole");
  assert.equal(result.terminal.name, "chat:error");
  assert.equal(result.terminal.payload.code, "AI_ERROR");
  assert.equal(result.stored.status, "error");
  assert.ok(rssMiB() - before < 16, `memory: ${before} MiB then ${rssMiB()} MiB`);
});

test("a 200 MB error body is read only as far as its message", async () => {
  const before = rssMiB();
  const result = await askIn("Fail loudly: errorbody");
  assert.equal(result.terminal.name, "chat:error");
  assert.equal(result.terminal.payload.code, "AI_UNAVAILABLE", "a 500: the provider is unavailable");
  const asked = requestsOf("errorbody");
  assert.ok(asked.length >= 2, "asked again, as after any 500");
  assert.ok(asked.every((r) => r.sent < 200 * MiB), "no body was read whole");
  assert.ok(rssMiB() - before < 16, `memory: ${before} MiB then ${rssMiB()} MiB`);
});

test("posts that are 20 MB of brackets neither hold memory nor stop the other posts", async () => {
  const before = rssMiB();
  const result = await askIn("Write a tweet and a LinkedIn post about this: brackets");
  assert.ok(["chat:social:generated", "chat:error"].includes(result.terminal.name), result.terminal.name);
  assert.equal(result.terminal.name, "chat:social:generated", "the posts are asked for one by one instead");
  assert.ok(rssMiB() - before < 16, `memory: ${before} MiB then ${rssMiB()} MiB`);
});

test("empty deltas are not progress: TOKEN_IDLE_TIMEOUT_SECS ends the answer", async () => {
  const started = Date.now();
  const result = await askIn("Keep me waiting: emptydeltas");
  assert.equal(result.terminal.name, "chat:error");
  assert.equal(result.terminal.payload.code, "AI_TIMEOUT");
  assert.ok(Date.now() - started < 10_000, `ended after ${Date.now() - started} ms, not after the 30 s of empty deltas`);
  assert.equal(result.stored.aiResponse, "Hello ", "the text before is kept");
});

test("a redirect is not followed: AI_ERROR, and the other address is never asked", async () => {
  const result = await askIn("Go elsewhere: redirect");
  assert.equal(result.terminal.name, "chat:error");
  assert.equal(result.terminal.payload.code, "AI_ERROR");
  assert.equal(internal.hits ?? 0, 0);
  assert.ok(!JSON.stringify(result.events).includes("SECRET-INTERNAL"));
  assert.match(server.logs(), /redirect/);
});

test("a provider error that echoes the API key is logged without it", async () => {
  const result = await askIn("Who am I: echokey");
  assert.equal(result.terminal.payload.code, "AI_ERROR");
  const logs = server.logs();
  assert.match(logs, /Incorrect API key provided/, "the error itself is logged");
  assert.ok(!logs.includes(KEY) && !logs.includes("hostileTestKey"), "the key is not");
  assert.ok(!JSON.stringify(result.events).includes("hostileTestKey"));
});

test("one message makes at most MAX_MODEL_CALLS_PER_MESSAGE calls and keeps the posts written", async () => {
  const result = await askIn("Write posts for twitter, linkedin, bluesky, mastodon, threads, facebook and instagram: manycalls");
  const calls = requestsOf("manycalls").filter((r) => r.kind !== "background");
  assert.equal(calls.length, 4, `calls: ${calls.map((c) => c.kind)}`);
  assert.equal(result.terminal.name, "chat:social:generated");
  assert.equal(result.terminal.payload.posts.length, 3, "the JSON call, then three posts one by one");
});

test("the daily budget is checked between the calls of one message, not only before it", async () => {
  const budgeted = await startServer({
    env: {
      AI_PROVIDER: "openai", AI_BASE_URL: `${provider.url}/v1`, AI_API_KEY: KEY, AI_MODEL: "hostile",
      ANSWER_MAX_TOKENS: "64", DAILY_TOKEN_BUDGET: "500", SUMMARY_EVERY: "0",
    },
  });
  try {
    const owner = await devToken(budgeted.url, "spender");
    const { session } = await createSession(budgeted.url, owner, samplePost);
    const socket = await connect(budgeted.url, owner);
    try {
      const before = provider.requests.length;
      const content = "Write posts for twitter, linkedin, bluesky and mastodon: manycalls budget";
      const result = await ask(socket, session.id, content);
      const calls = provider.requests.slice(before).filter((r) => r.kind !== "background");
      // 305 tokens a call: the second call starts under the budget of 500, a third would not.
      assert.equal(calls.length, 2, `calls: ${calls.map((c) => c.kind)}`);
      assert.equal(result.terminal.name, "chat:social:generated", "the post written is kept");
      assert.equal(result.terminal.payload.posts.length, 1);
      const next = await ask(socket, session.id, "And one more question?");
      assert.equal(next.ack.ok, false);
      assert.equal(next.ack.error.code, "RATE_LIMITED");
      assert.ok(next.ack.error.retryAfterMs > 0);
    } finally {
      socket.close();
    }
  } finally {
    await budgeted.stop();
  }
});
