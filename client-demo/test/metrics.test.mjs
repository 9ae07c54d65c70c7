// /metrics in Prometheus text: the families operators rely on, and the database cost of an
// answer: exactly two writes (insert at acceptance, update at the end) and, on a session cache
// hit, one read (the recent exchanges).
import { test } from "node:test";
import assert from "node:assert/strict";
import { api, ask, connect } from "../lib/client.mjs";
import { useServer, samplePost } from "./helpers/server.mjs";

const ctx = useServer({ env: { SUMMARY_EVERY: "0" } });

async function scrape() {
  const res = await fetch(`${ctx.url}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /text\/plain/);
  return res.text();
}

/** Counter values by label set, for one metric family. */
function samples(text, name) {
  const out = {};
  for (const line of text.split("\n")) {
    const m = line.match(new RegExp(`^${name}(\\{[^}]*\\})? ([0-9.e+-]+)$`));
    if (m) out[m[1] ?? ""] = Number(m[2]);
  }
  return out;
}

/** What one answer on a warm session costs the database, by query. */
async function databaseCost(extra) {
  const post = await api(ctx.url, ctx.token, "POST", "/api/posts", samplePost);
  const session = (await api(ctx.url, ctx.token, "POST", "/api/sessions", { postId: post.body.id, title: "Metered" })).body;
  const socket = await connect(ctx.url, ctx.token);
  await ask(socket, session.id, "What does Tokio do?", extra("warm-up")); // warms the caches
  const before = samples(await scrape(), "postchat_db_queries_total");
  const answer = await ask(socket, session.id, "What does Socket.IO add?", extra("measured"));
  assert.equal(answer.terminal.name, "chat:stream:end");
  const after = samples(await scrape(), "postchat_db_queries_total");
  socket.close();
  const diff = {};
  for (const [labels, value] of Object.entries(after)) {
    const delta = value - (before[labels] ?? 0);
    if (delta) diff[labels.match(/op="([^"]+)"/)[1]] = delta;
  }
  return diff;
}

test("an answer on a cached session costs two writes and one read", async () => {
  assert.deepEqual(await databaseCost(() => ({})), { insert_message: 1, finish_message: 1, path_exchanges: 1 });
});

test("an idempotency key costs no extra query: the insert finds repeats", async () => {
  const keyed = (key) => ({ payload: { clientMessageId: `${key}-${Date.now()}` } });
  assert.deepEqual(await databaseCost(keyed), { insert_message: 1, finish_message: 1, path_exchanges: 1 });
});

test("the metric families are there, with bounded labels", async () => {
  const socket = await connect(ctx.url, ctx.token);
  const post = await api(ctx.url, ctx.token, "POST", "/api/posts", samplePost);
  const session = (await api(ctx.url, ctx.token, "POST", "/api/sessions", { postId: post.body.id, title: "T" })).body;
  await ask(socket, session.id, "What does Tokio do?");
  const text = await scrape();
  for (const family of [
    "postchat_sockets_connected",
    "postchat_events_received_total",
    "postchat_answers_in_flight",
    "postchat_answers_total",
    "postchat_token_events_sent_total",
    "postchat_ack_seconds_bucket",
    "postchat_first_token_seconds_bucket",
    "postchat_answer_seconds_bucket",
    "postchat_provider_first_token_seconds_bucket",
    "postchat_session_cache_total",
    "postchat_db_query_seconds_bucket",
  ]) {
    assert.match(text, new RegExp(`^${family}`, "m"), family);
  }
  assert.ok(samples(text, "postchat_events_received_total")['{event="chat:message"}'] >= 1);
  assert.ok(samples(text, "postchat_sockets_connected")[""] >= 1);
  assert.doesNotMatch(text, new RegExp(session.id), "no session ids in labels");
  assert.doesNotMatch(text, /alice/, "no user ids in labels");
  socket.close();
});

test("HTTP responses carry a request id", async () => {
  const res = await fetch(`${ctx.url}/healthz`);
  assert.match(res.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/);
  const given = await fetch(`${ctx.url}/healthz`, { headers: { "x-request-id": "abc-123" } });
  assert.equal(given.headers.get("x-request-id"), "abc-123");
});
