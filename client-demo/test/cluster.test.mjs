// Cluster mode (REDIS_URL): several real processes sharing one PostgreSQL database and one
// redis-server of the test's own, with clients on different processes as a balancer spreads
// them (PROTOCOL.md, "Several processes").
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { api, ask, collectAnswer, connect, createSession, request } from "../lib/client.mjs";
import { samplePost } from "./helpers/server.mjs";
import { startProcesses } from "./helpers/processes.mjs";
import { latencyProxy } from "./helpers/chaos.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const question = "How does Rust keep idle connections cheap and what does Tokio do?";

/** Token events cover every `seq` from 0 exactly once; returns their text. */
function assertGapless(tokens, who) {
  let next = 0;
  for (const t of tokens) {
    assert.equal(t.seq - (t.count ?? 1) + 1, next, `${who}: no gap, no double at seq ${t.seq}`);
    next = t.seq + 1;
  }
  return tokens.map((t) => t.token).join("");
}

const tokensOf = (events) => events.filter((e) => e.name === "chat:stream:token").map((e) => e.payload);

async function history(url, token, sessionId) {
  return (await api(url, token, "GET", `/api/sessions/${sessionId}/messages`)).body.messages;
}

/** Polls `check` every 100 ms until it returns a truthy value, for up to `ms`. */
async function eventually(check, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(100);
  }
}

/** Starts processes for one test and stops them after; skips when PostgreSQL is missing outside CI. */
async function withProcesses(t, count, env, body) {
  const cluster = await startProcesses(count, { env });
  if (!cluster) return t.skip("PostgreSQL unreachable");
  try {
    await body(cluster);
  } finally {
    await cluster.stop();
  }
}

/** Alice's session with a socket on `a` that asks a question and one on `b` that watched the
 * session first: { token, session, onA, onB, answer, watched, ack }. */
async function askWatchedElsewhere(cluster, a, b) {
  const token = cluster.token("alice");
  const { session } = await createSession(a.url, token, samplePost);
  const [onA, onB] = await Promise.all([connect(a.url, token), connect(b.url, token)]);
  await request(onB, "chat:join", { sessionId: session.id });
  const watched = collectAnswer(onB);
  const answer = collectAnswer(onA);
  const ack = await request(onA, "chat:message", { sessionId: session.id, content: question });
  answer.setMessageId(ack.messageId);
  watched.setMessageId(ack.messageId);
  return { token, session, onA, onB, answer, watched, ack };
}

test("every event of an answer reaches the session's sockets on every process, gapless, in order", async (t) => {
  await withProcesses(t, 3, { LOCAL_AI_PACING_MS: "5" }, async (cluster) => {
    const [a, b, c] = cluster.servers;
    const token = cluster.token("alice");
    const { session } = await createSession(a.url, token, samplePost);
    const sender = await connect(a.url, token);
    const watchers = await Promise.all([connect(b.url, token), connect(c.url, token)]);
    for (const w of watchers) assert.equal((await request(w, "chat:join", { sessionId: session.id })).ok, true);
    const titled = watchers.map((w) => new Promise((resolve) => w.once("chat:session:updated", resolve)));
    const watched = watchers.map((w) => collectAnswer(w));
    const answer = await ask(sender, session.id, question);
    assert.equal(answer.terminal.name, "chat:stream:end");
    const content = answer.terminal.payload.content;
    assert.equal(assertGapless(answer.tokens, "sender"), content);
    for (const [i, w] of watched.entries()) {
      const events = await w.finished;
      assert.deepEqual(
        events.map((e) => e.name).filter((n) => n !== "chat:stream:token"),
        ["chat:stream:start", "chat:stream:end"],
        `watcher ${i}: start, tokens, end`,
      );
      assert.equal(events[0].payload.messageId, answer.ack.messageId);
      assert.equal(assertGapless(tokensOf(events), `watcher ${i}`), content);
      assert.equal(events.at(-1).payload.content, content);
    }
    const titles = await Promise.all(titled);
    assert.ok(titles.every((u) => u.sessionId === session.id && u.title.length > 0), "chat:session:updated everywhere");
    [sender, ...watchers].forEach((s) => s.close());
  });
});

test("one answer per session across processes: BUSY elsewhere, and a clientMessageId retry elsewhere is the same message", async (t) => {
  await withProcesses(t, 2, { LOCAL_AI_PACING_MS: "40" }, async (cluster) => {
    const [a, b] = cluster.servers;
    const token = cluster.token("alice");
    const { session } = await createSession(a.url, token, samplePost);
    const [onA, onB] = await Promise.all([connect(a.url, token), connect(b.url, token)]);
    const payload = { sessionId: session.id, content: question, clientMessageId: "key-1" };
    const running = collectAnswer(onA);
    const first = await request(onA, "chat:message", payload);
    assert.equal(first.ok, true);
    running.setMessageId(first.messageId);
    const busy = await request(onB, "chat:message", { sessionId: session.id, content: "And what about the scheduler?" });
    assert.equal(busy.ok, false);
    assert.equal(busy.error.code, "BUSY");
    const retry = await request(onB, "chat:message", payload);
    assert.deepEqual([retry.ok, retry.messageId, retry.duplicate], [true, first.messageId, true]);
    const conflict = await request(onB, "chat:message", { ...payload, content: "something else entirely?" });
    assert.equal(conflict.error?.code, "CONFLICT");
    await running.finished;
    // Once it ended, the other process takes the session's next message.
    const next = await ask(onB, session.id, "What does it say about the scheduler?");
    assert.equal(next.ack.ok, true, JSON.stringify(next.ack));
    assert.equal(next.terminal.name, "chat:stream:end");
    assert.equal((await history(b.url, token, session.id)).length, 2);
    [onA, onB].forEach((s) => s.close());
  });
});

test("the next message, sent to another process the moment an answer ends there, is taken: never BUSY for the answer that ended", async (t) => {
  await withProcesses(t, 1, { LOCAL_AI_PACING_MS: "2" }, async (cluster) => {
    // B reaches Redis 80 ms a round trip away: it reads the end of A's answer well after the
    // client has seen it on A, while its mirror of that answer is still there.
    const proxy = await latencyProxy(cluster.redis.port);
    proxy.setDelay(40);
    t.after(() => proxy.close());
    const b = await cluster.startOne({ REDIS_URL: `redis://127.0.0.1:${proxy.port}` });
    cluster.servers.push(b);
    const [a] = cluster.servers;
    const token = cluster.token("alice");
    const { session } = await createSession(a.url, token, samplePost);
    const [onA, onB] = await Promise.all([connect(a.url, token), connect(b.url, token)]);
    assert.equal((await request(onB, "chat:join", { sessionId: session.id })).ok, true);
    for (let i = 0; i < 3; i++) {
      for (const [where, socket] of [["A", onA], ["B", onB]]) {
        const answered = await ask(socket, session.id, `Question ${i} about the scheduler?`);
        assert.equal(answered.ack.ok, true, `message ${i} on ${where}: ${JSON.stringify(answered.ack)}`);
        assert.equal(answered.terminal.name, "chat:stream:end");
      }
    }
    [onA, onB].forEach((s) => s.close());
  });
});

test("with the shipped limits a message is acked after one round trip to Redis: its rate, the day's budget, the claim and the cache versions in one look", async (t) => {
  // The shipped message rate (20 a minute after a burst of 5) and daily budget, on a process
  // that reaches Redis 300 ms a round trip away: two awaited round trips would take 600 ms.
  await withProcesses(t, 0, {}, async (cluster) => {
    const proxy = await latencyProxy(cluster.redis.port);
    t.after(() => proxy.close());
    const limits = { RATE_LIMIT_MESSAGES_PER_MINUTE: "20", RATE_LIMIT_BURST: "5", LOCAL_AI_PACING_MS: "0" };
    const a = await cluster.startOne({ ...limits, REDIS_URL: `redis://127.0.0.1:${proxy.port}` });
    cluster.servers.push(a);
    const token = cluster.token("alice");
    const { session } = await createSession(a.url, token, samplePost);
    const socket = await connect(a.url, token);
    // The first message of the day reads the day's spending from the database once.
    assert.equal((await ask(socket, session.id, "What is this about?")).terminal.name, "chat:stream:end");
    proxy.setDelay(150);
    const took = [];
    for (let i = 0; i < 3; i++) {
      await sleep(700); // the last answer's end and release are through
      const answer = collectAnswer(socket, { awaitId: true });
      const sent = Date.now();
      const ack = await request(socket, "chat:message", { sessionId: session.id, content: `Question ${i} about the scheduler?` });
      took.push(Date.now() - sent);
      assert.equal(ack.ok, true, JSON.stringify(ack));
      answer.setMessageId(ack.messageId);
      assert.equal((await answer.finished).at(-1).name, "chat:stream:end");
    }
    assert.ok(took.every((ms) => ms >= 300), `each message went to Redis: ${took.join(", ")} ms`);
    assert.ok(Math.min(...took) < 600, `one round trip, not two: ${took.join(", ")} ms`);
    socket.close();
  });
});

test("the next message, sent to the generating process the moment another process relays the end, is taken: never BUSY", async (t) => {
  await withProcesses(t, 1, { LOCAL_AI_PACING_MS: "2" }, async (cluster) => {
    // A generates and reaches Redis 80 ms a round trip away: B relays the end to its socket
    // well before A hears back from its own terminal append (and frees the session here).
    const proxy = await latencyProxy(cluster.redis.port);
    proxy.setDelay(40);
    t.after(() => proxy.close());
    const a = await cluster.startOne({ REDIS_URL: `redis://127.0.0.1:${proxy.port}` });
    cluster.servers.push(a);
    const [b] = cluster.servers;
    const token = cluster.token("alice");
    const { session } = await createSession(b.url, token, samplePost);
    const [onA, onB] = await Promise.all([connect(a.url, token), connect(b.url, token)]);
    assert.equal((await request(onB, "chat:join", { sessionId: session.id })).ok, true);
    for (let i = 0; i < 3; i++) {
      const relayed = collectAnswer(onB, { awaitId: true });
      const ack = await request(onA, "chat:message", { sessionId: session.id, content: `Question ${i} about the scheduler?` });
      assert.equal(ack.ok, true, `message ${i}: ${JSON.stringify(ack)}`);
      relayed.setMessageId(ack.messageId);
      assert.equal((await relayed.finished).at(-1).name, "chat:stream:end");
      const next = await ask(onA, session.id, `And ${i}?`);
      assert.equal(next.ack.ok, true, `the next message ${i}: ${JSON.stringify(next.ack)}`);
      assert.equal(next.terminal.name, "chat:stream:end");
    }
    [onA, onB].forEach((s) => s.close());
  });
});

test("chat:stop on another process stops the answer where it is generated, within a second", async (t) => {
  await withProcesses(t, 2, { LOCAL_AI_PACING_MS: "100" }, async (cluster) => {
    const [a, b] = cluster.servers;
    const { token, session, onA, onB, answer, watched } = await askWatchedElsewhere(cluster, a, b);
    await new Promise((r) => onB.once("chat:stream:token", r));
    const asked = Date.now();
    const [stop, again] = await Promise.all([
      request(onB, "chat:stop", { sessionId: session.id }),
      request(onB, "chat:stop", { sessionId: session.id }),
    ]);
    assert.deepEqual([stop, again].map((s) => s.stopped).sort(), [false, true], "stopped: true once");
    assert.ok(stop.ok && again.ok);
    const [mine, theirs] = await Promise.all([answer.finished, watched.finished]);
    const took = Date.now() - asked;
    assert.ok(took < 1000, `stopped within a second (took ${took} ms)`);
    for (const events of [mine, theirs]) {
      assert.equal(events.at(-1).name, "chat:stream:end");
      assert.equal(events.at(-1).payload.stopped, true);
    }
    const stored = (await history(b.url, token, session.id))[0];
    assert.equal(stored.status, "stopped");
    assert.equal(stored.aiResponse, mine.at(-1).payload.content);
    // The processes' control streams (the stop went through one) expire once their process is
    // gone: each has a time to live, renewed while it runs.
    const redis = (...args) => execFileSync("redis-cli", ["-p", String(cluster.redis.port), ...args], { encoding: "utf8" }).trim();
    const controls = redis("--scan", "--pattern", "*:process:*:control").split("\n").filter(Boolean);
    assert.ok(controls.length >= 1, "the stop went through a control stream");
    for (const key of controls) {
      const ttl = Number(redis("PTTL", key));
      assert.ok(ttl > 0 && ttl <= 60_000, `${key} expires (PTTL ${ttl})`);
    }
    [onA, onB].forEach((s) => s.close());
  });
});

test("quiet sessions cost no read: a follower reads only its busy sessions, and an answer from another process still reaches every watcher", async (t) => {
  await withProcesses(t, 2, { LOCAL_AI_PACING_MS: "5" }, async (cluster) => {
    const [a, b] = cluster.servers;
    const token = cluster.token("alice");
    const redis = (...args) => execFileSync("redis-cli", ["-p", String(cluster.redis.port), ...args], { encoding: "utf8" }).trim();
    // Ten sessions watched on B, each answered once on B (B's own answers), then idle.
    const onB = await connect(b.url, token);
    const sessions = [];
    for (let i = 0; i < 10; i++) {
      const { session } = await createSession(a.url, token, samplePost);
      assert.equal((await request(onB, "chat:join", { sessionId: session.id })).ok, true);
      const own = await ask(onB, session.id, question);
      assert.equal(own.terminal.name, "chat:stream:end");
      sessions.push(session);
    }
    // Every command Redis runs for 1.5 s, with its arguments (MONITOR).
    const monitor = spawn("redis-cli", ["-p", String(cluster.redis.port), "MONITOR"]);
    let seen = "";
    monitor.stdout.on("data", (chunk) => (seen += chunk));
    await sleep(1500);
    monitor.kill();
    const reads = seen.split("\n").filter((line) => /"XREAD"/i.test(line));
    assert.ok(reads.length >= 2, `both followers read (${reads.length} reads)`);
    for (const line of reads) assert.doesNotMatch(line, /:events"/, "no idle session in a read");
    // B's registrations gone (as when their keys expire while B is paused): B registers again
    // at its next upkeep and reads what woke nobody meanwhile.
    for (const key of redis("--scan", "--pattern", "*:watchers").split("\n").filter(Boolean)) redis("DEL", key);
    // An answer generated on A in each session reaches B's socket whole, start to end.
    const onA = await connect(a.url, token);
    for (const session of sessions) {
      const watched = collectAnswer(onB);
      const answer = await ask(onA, session.id, question);
      watched.setMessageId(answer.ack.messageId);
      const late = sleep(10_000).then(() => assert.fail("the answer did not reach the watcher on B within 10 s"));
      const events = await Promise.race([watched.finished, late]);
      assert.equal(events[0].name, "chat:stream:start");
      assert.equal(events.at(-1).name, "chat:stream:end");
      assert.equal(assertGapless(tokensOf(events), "watcher"), answer.terminal.payload.content);
    }
    [onA, onB].forEach((s) => s.close());
  });
});

test("chat:join on another process mid-answer acks inFlight exactly and the live tokens follow from seq + 1", async (t) => {
  await withProcesses(t, 2, { LOCAL_AI_PACING_MS: "30" }, async (cluster) => {
    const [a, b] = cluster.servers;
    const token = cluster.token("alice");
    const { session } = await createSession(a.url, token, samplePost);
    const onA = await connect(a.url, token);
    const answer = collectAnswer(onA);
    const ack = await request(onA, "chat:message", { sessionId: session.id, content: question });
    answer.setMessageId(ack.messageId);
    // Let a few tokens go by, then join from a socket on the other process.
    for (let i = 0; i < 5; i++) await new Promise((r) => onA.once("chat:stream:token", r));
    const onB = await connect(b.url, token);
    const live = collectAnswer(onB);
    live.setMessageId(ack.messageId);
    const joined = await request(onB, "chat:join", { sessionId: session.id });
    assert.equal(joined.ok, true);
    const inFlight = joined.inFlight;
    assert.equal(inFlight.messageId, ack.messageId);
    assert.ok(inFlight.seq >= 4, `tokens so far are in the snapshot (seq ${inFlight.seq})`);
    const events = await live.finished;
    const tokens = tokensOf(events);
    assert.equal(tokens[0].seq - (tokens[0].count ?? 1) + 1, inFlight.seq + 1, "live tokens start at seq + 1");
    let next = inFlight.seq + 1;
    for (const tk of tokens) {
      assert.equal(tk.seq - (tk.count ?? 1) + 1, next, "no gap, no double");
      next = tk.seq + 1;
    }
    const full = (await answer.finished).at(-1).payload.content;
    assert.equal(inFlight.content + tokens.map((tk) => tk.token).join(""), full);
    [onA, onB].forEach((s) => s.close());
  });
});

test("an answer is not cancelled while a socket on another process watches it", async (t) => {
  await withProcesses(t, 2, { LOCAL_AI_PACING_MS: "150", WATCH_GRACE_SECS: "1" }, async (cluster) => {
    const [a, b] = cluster.servers;
    const { token, session, onA, onB, watched } = await askWatchedElsewhere(cluster, a, b);
    onA.close(); // nobody watches on the generating process any more
    const events = await watched.finished;
    assert.equal(events.at(-1).name, "chat:stream:end");
    assert.notEqual(events.at(-1).payload.stopped, true);
    assert.equal((await history(b.url, token, session.id))[0].status, "complete");

    // With nobody watching anywhere, it is cancelled after the grace period.
    const again = await request(onB, "chat:message", { sessionId: session.id, content: question });
    onB.close();
    const stored = await eventually(
      async () => (await history(b.url, token, session.id)).find((m) => m.id === again.messageId && m.status !== "streaming"),
      15_000,
      "the unwatched answer ends",
    );
    assert.equal(stored.status, "interrupted");
  });
});

// With answers resumed (the default) a dead process's answers are continued: resume.test.mjs.
// These hold what happens without (RESUME_ANSWERS_ON_PROCESS_DEATH=false), or when a takeover
// fails.
test("a process killed mid-answer: another stores it interrupted within 15 s, tells its watchers, frees the session", async (t) => {
  await withProcesses(t, 2, { LOCAL_AI_PACING_MS: "200", RESUME_ANSWERS_ON_PROCESS_DEATH: "false" }, async (cluster) => {
    const [a, b] = cluster.servers;
    const { token, session, onA, onB, watched, ack } = await askWatchedElsewhere(cluster, a, b);
    for (let i = 0; i < 3; i++) await new Promise((r) => onB.once("chat:stream:token", r));
    const killed = Date.now();
    a.process.kill("SIGKILL");
    const events = await watched.finished;
    const took = Date.now() - killed;
    assert.ok(took < 15_000, `told within 15 s (took ${took} ms)`);
    const terminal = events.at(-1);
    assert.equal(terminal.name, "chat:error");
    assert.equal(terminal.payload.code, "SERVER_SHUTDOWN");
    const stored = (await history(b.url, token, session.id)).find((m) => m.id === ack.messageId);
    assert.equal(stored.status, "interrupted");
    assert.equal(stored.aiResponse, assertGapless(tokensOf(events), "watcher"), "the text its watchers saw is stored");
    const next = await ask(onB, session.id, "What does it say about the scheduler?");
    assert.equal(next.terminal.name, "chat:stream:end", "the session takes a new message");
    onB.close();
  });
});

async function ready(url) {
  const res = await fetch(`${url}/readyz`);
  return { status: res.status, body: await res.json() };
}

/** Every event a socket receives, in order, with when it came. */
function record(socket) {
  const events = [];
  socket.onAny((name, payload) => events.push({ name, payload, at: Date.now() }));
  return events;
}

const TERMINALS = ["chat:stream:end", "chat:social:generated", "chat:error"];

/** The entries of a session's Redis stream, oldest first: { origin, event }. */
function streamEntries(cluster, sessionId) {
  const key = execFileSync("redis-cli", ["-p", String(cluster.redis.port), "--scan", "--pattern", `*:session:${sessionId}:events`], { encoding: "utf8" }).trim();
  const raw = execFileSync("redis-cli", ["-p", String(cluster.redis.port), "--json", "XRANGE", key, "-", "+"], { encoding: "utf8" });
  return JSON.parse(raw).map(([, fields]) => {
    const f = Object.fromEntries(fields.reduce((pairs, v, i) => (i % 2 ? pairs.at(-1).push(v) : pairs.push([v]), pairs), []));
    return { origin: f.o, event: JSON.parse(f.e) };
  });
}

/** The events of answer `messageId`: exactly one terminal, and nothing of it after that. */
function assertOneOutcome(events, messageId, who) {
  const mine = events.filter((e) => e.payload?.messageId === messageId);
  const terminals = mine.filter((e) => TERMINALS.includes(e.name));
  assert.equal(terminals.length, 1, `${who}: one terminal event, got ${terminals.map((e) => e.payload.code ?? e.name)}`);
  assert.equal(mine.at(-1), terminals[0], `${who}: nothing after the terminal event`);
  return terminals[0];
}

test("a process paused past its lease (SIGSTOP) is fenced off: one outcome on every socket, the stored one, nothing after", async (t) => {
  await withProcesses(t, 2, { LOCAL_AI_PACING_MS: "200", RESUME_ANSWERS_ON_PROCESS_DEATH: "false" }, async (cluster) => {
    const [a, b] = cluster.servers;
    const token = cluster.token("alice");
    const { session } = await createSession(a.url, token, samplePost);
    const [onA, onB] = await Promise.all([connect(a.url, token), connect(b.url, token)]);
    await request(onB, "chat:join", { sessionId: session.id });
    const [seenA, seenB] = [record(onA), record(onB)];
    const ack = await request(onA, "chat:message", { sessionId: session.id, content: question });
    await eventually(() => seenB.some((e) => e.name === "chat:stream:token"), 10_000, "tokens on B");
    a.process.kill("SIGSTOP");
    try {
      // Swept while paused: B's sockets are told, the text so far stored interrupted.
      await eventually(() => seenB.some((e) => e.name === "chat:error"), 20_000, "the sweep's terminal on B");
    } finally {
      a.process.kill("SIGCONT");
    }
    // A comes back mid-answer: it must find itself fenced off, not stream on.
    await eventually(() => seenA.some((e) => TERMINALS.includes(e.name)), 10_000, "A's own socket gets its outcome");
    await sleep(3_000);
    const onBEnd = assertOneOutcome(seenB, ack.messageId, "the watcher on B");
    const onAEnd = assertOneOutcome(seenA, ack.messageId, "the sender on A");
    for (const end of [onBEnd, onAEnd]) {
      assert.equal(end.name, "chat:error");
      assert.equal(end.payload.code, "SERVER_SHUTDOWN");
    }
    const stored = (await history(b.url, token, session.id)).find((m) => m.id === ack.messageId);
    assert.equal(stored.status, "interrupted", "the stored status agrees with what the sockets saw");
    assert.equal(stored.aiResponse, assertGapless(tokensOf(seenB), "watcher"), "and its text with the watcher's");
    // Fenced at the source: the resumed process wrote nothing of the answer after the sweep.
    const entries = streamEntries(cluster, session.id);
    const swept = entries.findIndex((e) => e.origin === "sweeper");
    assert.ok(swept >= 0, "the sweep's terminal is in the stream");
    const after = entries.slice(swept + 1).filter((e) => e.event.m === ack.messageId);
    assert.deepEqual(after.map((e) => e.event.k), [], "no entry of the swept answer after the sweep's");
    const next = await ask(onA, session.id, "What does it say about the scheduler?");
    assert.equal(next.terminal.name, "chat:stream:end", "the session takes a new message, on the resumed process too");
    [onA, onB].forEach((s) => s.close());
  });
});

test("a watcher's Redis connection cut mid-answer (CLIENT KILL): it reconnects and delivers the whole answer once, no error", async (t) => {
  await withProcesses(t, 2, { LOCAL_AI_PACING_MS: "100" }, async (cluster) => {
    const [a, b] = cluster.servers;
    const { token, session, onA, onB, answer, watched, ack } = await askWatchedElsewhere(cluster, a, b);
    for (let i = 0; i < 5; i++) await new Promise((r) => onB.once("chat:stream:token", r));
    // The followers' connections, blocked in XREAD, are cut; Redis stays up.
    const redis = (...args) => execFileSync("redis-cli", ["-p", String(cluster.redis.port), ...args], { encoding: "utf8" });
    const readers = redis("CLIENT", "LIST").split("\n").filter((l) => / cmd=xread/.test(l)).map((l) => l.match(/^id=(\d+)/)[1]);
    assert.ok(readers.length >= 1, "a follower is blocked in XREAD");
    for (const id of readers) redis("CLIENT", "KILL", "ID", id);
    const [mine, theirs] = await Promise.all([answer.finished, watched.finished]);
    assert.equal(theirs.at(-1).name, "chat:stream:end", `the watcher's answer ends normally: ${JSON.stringify(theirs.at(-1))}`);
    assert.ok(!theirs.some((e) => e.name === "chat:error"), "no error was invented");
    assert.equal(assertGapless(tokensOf(theirs), "watcher"), theirs.at(-1).payload.content, "every token once, in order");
    assert.equal(theirs.at(-1).payload.content, mine.at(-1).payload.content);
    const stored = (await history(b.url, token, session.id)).find((m) => m.id === ack.messageId);
    assert.equal(stored.status, "complete");
    [onA, onB].forEach((s) => s.close());
  });
});

test("Redis paused 3.5 s (CLIENT PAUSE) mid-answer: the answer finishes whole on both processes, a join during the pause waits or is refused retryable", async (t) => {
  await withProcesses(t, 2, { LOCAL_AI_PACING_MS: "100" }, async (cluster) => {
    const [a, b] = cluster.servers;
    const { token, session, onA, onB, answer, watched, ack } = await askWatchedElsewhere(cluster, a, b);
    for (let i = 0; i < 5; i++) await new Promise((r) => onB.once("chat:stream:token", r));
    execFileSync("redis-cli", ["-p", String(cluster.redis.port), "CLIENT", "PAUSE", "3500", "ALL"]);
    const paused = Date.now();
    // A third tab joins on B during the pause.
    const onB2 = await connect(b.url, token);
    const live = collectAnswer(onB2);
    live.setMessageId(ack.messageId);
    let joined = await request(onB2, "chat:join", { sessionId: session.id });
    if (!joined.ok) {
      assert.equal(joined.error.code, "CLUSTER_UNAVAILABLE", JSON.stringify(joined));
      assert.equal(joined.error.retryable, true);
      await eventually(async () => {
        joined = await request(onB2, "chat:join", { sessionId: session.id });
        return joined.ok;
      }, 10_000, "the join accepted after the pause");
    }
    assert.ok(Date.now() - paused < 8_000, "the join waited no longer than a bounded time");
    const [mine, theirs] = await Promise.all([answer.finished, watched.finished]);
    for (const [events, who] of [[mine, "sender"], [theirs, "watcher"]]) {
      assert.equal(events.at(-1).name, "chat:stream:end", `${who}: ${JSON.stringify(events.at(-1))}`);
      assert.equal(assertGapless(tokensOf(events), who), events.at(-1).payload.content, `${who}: every token once`);
    }
    const full = mine.at(-1).payload.content;
    if (joined.inFlight) {
      const tail = await live.finished;
      assert.equal(joined.inFlight.messageId, ack.messageId);
      let next = joined.inFlight.seq + 1;
      for (const tk of tokensOf(tail)) {
        assert.equal(tk.seq - (tk.count ?? 1) + 1, next, "the joined tab: no gap, no double after its snapshot");
        next = tk.seq + 1;
      }
      assert.equal(joined.inFlight.content + tokensOf(tail).map((tk) => tk.token).join(""), full, "snapshot and live tokens make the answer");
    } else {
      const storedNow = joined.messages.find((m) => m.id === ack.messageId);
      assert.equal(storedNow?.aiResponse, full, "joined after the end: the stored answer is whole");
    }
    const stored = (await history(b.url, token, session.id)).find((m) => m.id === ack.messageId);
    assert.equal(stored.status, "complete");
    [onA, onB, onB2].forEach((s) => s.close());
  });
});

test("a process killed with 1,000 answers in flight: all stored interrupted within 15 s, every session free again", async (t) => {
  // A word every 5 s: every answer is still in flight when the process is killed. 1,000
  // answers reading their context at once from a debug build may wait on the pool: given time.
  const env = {
    LOCAL_AI_PACING_MS: "5000",
    MAX_SESSIONS_PER_SOCKET: "2000",
    DATABASE_ACQUIRE_TIMEOUT_MS: "30000",
    RESUME_ANSWERS_ON_PROCESS_DEATH: "false",
  };
  await withProcesses(t, 2, env, async (cluster) => {
    const [a, b] = cluster.servers;
    const token = cluster.token("alice");
    const sessions = [];
    for (let i = 0; i < 1000; i++) sessions.push((await createSession(a.url, token, samplePost)).session.id);
    const onA = await connect(a.url, token);
    for (let i = 0; i < sessions.length; i += 100) {
      const acks = await Promise.all(
        sessions.slice(i, i + 100).map((sessionId) => request(onA, "chat:message", { sessionId, content: question })),
      );
      assert.ok(acks.every((ack) => ack.ok), "every message accepted");
    }
    const streaming = () =>
      Number(execFileSync("psql", [cluster.databaseUrl, "-tAc", "select count(*) from messages where status = 'streaming'"], { encoding: "utf8" }).trim());
    const statuses = execFileSync("psql", [cluster.databaseUrl, "-tAc", "select status, left(ai_response, 80), count(*) from messages group by 1, 2"], { encoding: "utf8" });
    // A debug build starting 1,000 answers at once can be slower than Redis's 1 s reply
    // timeout for the answer log, which ends those answers CLUSTER_UNAVAILABLE (a stall
    // shorter than the lease that loses answers: #26's stall point, not built yet).
    const inFlight = streaming();
    t.diagnostic(`in flight when killed: ${inFlight} (${statuses.replace(/\n/g, " ")})`);
    assert.ok(inFlight >= 900, `nearly 1,000 answers in flight: ${statuses}`);
    const killed = Date.now();
    a.process.kill("SIGKILL");
    await eventually(() => streaming() === 0, 15_000, "every answer of the killed process stored");
    const took = Date.now() - killed;
    t.diagnostic(`1,000 answers swept in ${took} ms`);
    const interrupted = execFileSync("psql", [cluster.databaseUrl, "-tAc", "select count(*) from messages where status = 'interrupted'"], { encoding: "utf8" }).trim();
    assert.equal(Number(interrupted), inFlight, "every answer in flight stored interrupted");
    const onB = await connect(b.url, token);
    const next = await ask(onB, sessions.at(-1), "What does it say about the scheduler?");
    assert.equal(next.ack.ok, true, "a swept session takes a new message");
    [onA, onB].forEach((s) => s.close());
  });
});

test("clocks 90 s apart (faketime): a join mid-answer finds it whole, a watcher elsewhere keeps it alive, messages keep their order", async (t) => {
  // libfaketime preloaded into the server itself: the `faketime` wrapper forks and would not
  // pass the test's SIGTERM on to it.
  const faketime = ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1"].find((p) => existsSync(p));
  if (!faketime) {
    if (process.env.CI === "true") throw new Error("faketime missing in CI (tests/run-all.sh installs it)");
    return t.skip("faketime not installed");
  }
  const env = { LOCAL_AI_PACING_MS: "150", WATCH_GRACE_SECS: "2" };
  const cluster = await startProcesses(0, { env });
  if (!cluster) return t.skip("PostgreSQL unreachable");
  try {
    // The process generating runs 90 s ahead, the watching one 90 s behind.
    const a = await cluster.startOne({ LD_PRELOAD: faketime, FAKETIME: "+90s" });
    const b = await cluster.startOne({ LD_PRELOAD: faketime, FAKETIME: "-90s" });
    cluster.servers.push(a, b);
    const token = cluster.token("alice");
    const { session } = await createSession(a.url, token, samplePost);
    const sender = await connect(a.url, token);
    const ack = await request(sender, "chat:message", { sessionId: session.id, content: question });
    await new Promise((r) => sender.once("chat:stream:token", r));
    sender.close(); // from now on only the socket on B watches
    await sleep(1_000);
    const onB = await connect(b.url, token);
    const live = collectAnswer(onB);
    live.setMessageId(ack.messageId);
    const joined = await request(onB, "chat:join", { sessionId: session.id });
    assert.ok(joined.inFlight, "the join finds the answer in flight (its start was not trimmed by a clock ahead)");
    assert.equal(joined.inFlight.messageId, ack.messageId);
    const events = await live.finished;
    assert.equal(events.at(-1).name, "chat:stream:end", "not cancelled: the watcher on B counts, whatever its clock");
    const after = tokensOf(events);
    if (after.length) assert.equal(after[0].seq - (after[0].count ?? 1) + 1, joined.inFlight.seq + 1, "live tokens follow the snapshot");
    assert.equal(joined.inFlight.content + after.map((x) => x.token).join(""), events.at(-1).payload.content);
    const stored = (await history(b.url, token, session.id)).find((m) => m.id === ack.messageId);
    assert.equal(stored.status, "complete");
    // The next message, through B (its clock 180 s behind A's), comes after A's in the
    // session's history, and both are stamped with the shared (Redis's) clock.
    const next = await ask(onB, session.id, "And what does it say about the scheduler?");
    assert.equal(next.terminal.name, "chat:stream:end");
    const messages = await history(b.url, token, session.id);
    assert.deepEqual(messages.map((m) => m.id), [ack.messageId, next.ack.messageId], "in the order they were sent");
    for (const m of messages) {
      const off = Math.abs(Date.parse(m.createdAt) - Date.now());
      assert.ok(off < 30_000, `stamped on the shared clock, not 90 s off (${m.createdAt})`);
    }
    onB.close();
  } finally {
    await cluster.stop();
  }
});

test("Redis down: /readyz 503 and CLUSTER_UNAVAILABLE, never a hang; Redis back: every process recovers by itself", async (t) => {
  await withProcesses(t, 2, { LOCAL_AI_PACING_MS: "100" }, async (cluster) => {
    const [a, b] = cluster.servers;
    const { token, session, onA, onB, answer, watched, ack } = await askWatchedElsewhere(cluster, a, b);
    for (let i = 0; i < 3; i++) await new Promise((r) => onB.once("chat:stream:token", r));

    await cluster.redis.stop();
    // The answer in flight cannot be followed any more: both sides are told, with a code.
    const [mine, theirs] = await Promise.all([answer.finished, watched.finished]);
    assert.equal(mine.at(-1).payload.code, "CLUSTER_UNAVAILABLE");
    assert.equal(theirs.at(-1).payload.code, "CLUSTER_UNAVAILABLE");
    assert.equal(mine.at(-1).payload.retryable, true);
    for (const server of [a, b]) {
      assert.deepEqual(await ready(server.url), { status: 503, body: { status: "redis unavailable" } });
    }
    const asked = Date.now();
    const refused = await request(onB, "chat:message", { sessionId: session.id, content: "What does it say about the scheduler?" });
    assert.equal(refused.error?.code, "CLUSTER_UNAVAILABLE");
    assert.ok(Date.now() - asked < 5000, "refused promptly, not hung");
    const stored = (await history(b.url, token, session.id)).find((m) => m.id === ack.messageId);
    assert.equal(stored.status, "error");

    await cluster.redis.start();
    for (const server of [a, b]) {
      await eventually(async () => (await ready(server.url)).status === 200, 15_000, `${server.url} ready again`);
    }
    // Rooms across processes work again without a restart: the watcher on B, still in the
    // session's room, gets the next answer generated on A.
    const again = collectAnswer(onB);
    const next = await eventually(async () => {
      const reply = await ask(onA, session.id, "What does it say about the scheduler?");
      return reply.ack.ok ? reply : null;
    }, 15_000, "a message accepted again");
    again.setMessageId(next.ack.messageId);
    const events = await again.finished;
    assert.equal(events.at(-1).name, "chat:stream:end");
    assert.equal(assertGapless(tokensOf(events), "watcher after recovery"), next.terminal.payload.content);
    [onA, onB].forEach((s) => s.close());
  });
});

test("rolling restart: a SIGTERMed process hands its sockets over, finishes its answers, and its clients resume elsewhere seq-exact", async (t) => {
  await withProcesses(t, 3, { LOCAL_AI_PACING_MS: "60", SHUTDOWN_GRACE_SECS: "60" }, async (cluster) => {
    const [a, b, c] = cluster.servers;
    const { token, session, onA, onB, watched, ack } = await askWatchedElsewhere(cluster, a, b);
    for (let i = 0; i < 5; i++) await new Promise((r) => onA.once("chat:stream:token", r));

    const gone = new Promise((resolve) => onA.once("disconnect", resolve));
    const exited = a.stop();
    // The client is told by its transport closing (so a socket.io client reconnects by itself).
    assert.equal(await gone, "transport close");
    // New connections go elsewhere: this process no longer listens.
    const port = Number(new URL(a.url).port);
    await assert.rejects(
      new Promise((resolve, reject) => net.connect(port, "127.0.0.1").once("connect", resolve).once("error", reject)),
      /ECONNREFUSED/,
    );
    // Its client comes back through the balancer to another process and resumes there.
    const onC = await connect(c.url, token);
    const live = collectAnswer(onC);
    live.setMessageId(ack.messageId);
    const joined = await request(onC, "chat:join", { sessionId: session.id });
    assert.equal(joined.inFlight?.messageId, ack.messageId, "still being generated by the draining process");
    const events = await live.finished;
    const tokens = tokensOf(events);
    let next = joined.inFlight.seq + 1;
    for (const tk of tokens) {
      assert.equal(tk.seq - (tk.count ?? 1) + 1, next, "resumed with no gap, no double");
      next = tk.seq + 1;
    }
    const end = events.at(-1);
    assert.equal(end.name, "chat:stream:end", JSON.stringify(end));
    assert.equal(joined.inFlight.content + tokens.map((tk) => tk.token).join(""), end.payload.content);
    // The watcher that never moved saw it all.
    const theirs = await watched.finished;
    assert.equal(assertGapless(tokensOf(theirs), "watcher on b"), end.payload.content);
    assert.deepEqual(await exited, { code: 0, signal: null });
    const stored = (await history(b.url, token, session.id)).find((m) => m.id === ack.messageId);
    assert.deepEqual([stored.status, stored.aiResponse], ["complete", end.payload.content]);
    // The session is free for the next message, on any process.
    const next2 = await ask(onC, session.id, "What does it say about the scheduler?");
    assert.equal(next2.terminal.name, "chat:stream:end");
    [onB, onC].forEach((s) => s.close());
  });
});

/** "connected", or the connect_error's message. */
async function outcome(url, token) {
  try {
    (await connect(url, token)).close();
    return "connected";
  } catch (err) {
    return err.message;
  }
}

test("limits count across processes: messages per user, sockets per user, connections per IP", async (t) => {
  const env = {
    LOCAL_AI_PACING_MS: "20",
    RATE_LIMIT_MESSAGES_PER_MINUTE: "2",
    RATE_LIMIT_BURST: "2",
    MAX_SOCKETS_PER_USER: "2",
    RATE_LIMIT_CONNECTIONS_PER_MINUTE: "60",
    RATE_LIMIT_CONNECTIONS_BURST: "8",
  };
  await withProcesses(t, 3, env, async (cluster) => {
    const [a, b, c] = cluster.servers;
    const token = cluster.token("alice");
    const sessions = [];
    for (const server of [a, b, c]) sessions.push((await createSession(server.url, token, samplePost)).session);
    // Two sockets of alice's, on two processes: a third on the third process is refused.
    const [onA, onB] = await Promise.all([connect(a.url, token), connect(b.url, token)]);
    assert.equal(await outcome(c.url, token), "too many connections");
    // A burst of two messages, spread over processes; the third is refused wherever it goes.
    assert.equal((await request(onA, "chat:message", { sessionId: sessions[0].id, content: question })).ok, true);
    assert.equal((await request(onB, "chat:message", { sessionId: sessions[1].id, content: question })).ok, true);
    const third = await request(onA, "chat:message", { sessionId: sessions[2].id, content: question });
    assert.equal(third.error?.code, "RATE_LIMITED");
    assert.ok(third.error.retryAfterMs > 0 && third.error.retryAfterMs <= 30_000, `${third.error.retryAfterMs}`);
    // B has counted one message of alice's itself: its refusal is the shared count's (the claim's).
    const fourth = await request(onB, "chat:message", { sessionId: sessions[2].id, content: question });
    assert.equal(fourth.error?.code, "RATE_LIMITED");
    // A socket closed on one process frees its place for another process.
    onA.close();
    await eventually(async () => (await outcome(c.url, token)) === "connected", 5_000, "a place freed across processes");
    onB.close();
    // Handshakes per IP: 8 in a burst across the three processes (4 were made above), then 429.
    const statuses = [];
    for (let i = 0; i < 6; i++) {
      const server = cluster.servers[i % 3];
      statuses.push((await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`)).status);
    }
    assert.ok(statuses.includes(429), `the shared burst runs out: ${statuses.join(",")}`);
    assert.deepEqual(statuses.slice(statuses.indexOf(429)).filter((s) => s !== 429), [], statuses.join(","));
  });
});

test("the daily token budget counts across processes", async (t) => {
  await withProcesses(t, 2, { LOCAL_AI_PACING_MS: "50", DAILY_TOKEN_BUDGET: "100" }, async (cluster) => {
    const [a, b] = cluster.servers;
    const token = cluster.token("alice");
    const { session } = await createSession(a.url, token, samplePost);
    const [onA, onB] = await Promise.all([connect(a.url, token), connect(b.url, token)]);
    const answer = collectAnswer(onB);
    const first = await request(onB, "chat:message", { sessionId: session.id, content: question });
    answer.setMessageId(first.messageId);
    // Process A reads the budget (nothing spent yet) and refuses only because B is answering.
    const busy = await request(onA, "chat:message", { sessionId: session.id, content: "And the scheduler?" });
    assert.equal(busy.error?.code, "BUSY");
    await answer.finished;
    // B's answer spent the budget: A knows, although it read "nothing spent" a moment ago.
    const spent = await request(onA, "chat:message", { sessionId: session.id, content: "What does it say about the scheduler?" });
    assert.equal(spent.error?.code, "RATE_LIMITED");
    // The same message sent through both processes at once (a client's resend): refused on
    // both, neither told it is a duplicate of a message that was never stored.
    const again = { sessionId: session.id, content: "And the timers?", clientMessageId: "twice" };
    const both = await Promise.all([request(onA, "chat:message", again), request(onB, "chat:message", again)]);
    for (const ack of both) assert.equal(ack.error?.code, "RATE_LIMITED", JSON.stringify(ack));
    [onA, onB].forEach((s) => s.close());
  });
});

test("caches stay coherent: a session renamed or deleted, or preferences changed, on one process is never served stale by another", async (t) => {
  await withProcesses(t, 2, { LOCAL_AI_PACING_MS: "5" }, async (cluster) => {
    const [a, b] = cluster.servers;
    const token = cluster.token("alice");
    const { session } = await createSession(a.url, token, samplePost);
    // B caches the untitled session and the default preferences.
    assert.equal((await api(b.url, token, "GET", `/api/sessions/${session.id}`)).body.title, "");
    assert.equal((await api(b.url, token, "GET", "/api/preferences")).body.voice, "professional");

    // A's first exchange names the session; once A has said so, B says so too.
    const onA = await connect(a.url, token);
    const named = new Promise((resolve) => onA.once("chat:session:updated", resolve));
    await ask(onA, session.id, question);
    const { title } = await named;
    assert.equal((await api(b.url, token, "GET", `/api/sessions/${session.id}`)).body.title, title);

    const prefs = { voice: "playful", style: "short", platforms: ["bluesky"], hashtags: false, emoji: true };
    assert.equal((await api(a.url, token, "PUT", "/api/preferences", prefs)).status, 200);
    assert.deepEqual((await api(b.url, token, "GET", "/api/preferences")).body, prefs);

    assert.equal((await api(a.url, token, "DELETE", `/api/sessions/${session.id}`)).status, 204);
    assert.equal((await api(b.url, token, "GET", `/api/sessions/${session.id}`)).status, 404);
    const onB = await connect(b.url, token);
    const refused = await request(onB, "chat:message", { sessionId: session.id, content: question });
    assert.equal(refused.error?.code, "NOT_FOUND");
    [onA, onB].forEach((s) => s.close());
  });
});
