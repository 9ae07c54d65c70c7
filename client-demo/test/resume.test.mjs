// An answer that outlives its process (cluster mode, RESUME_ANSWERS_ON_PROCESS_DEATH, on by
// default): when the process generating an answer dies, another takes it over and continues it
// from the text logged so far; a process told to stop hands its answers over the same way.
// Real processes, a redis-server of the test's own, PostgreSQL (PROTOCOL.md, "Several
// processes"; docs/cluster.md, "Answers that outlive their process").
import { test } from "node:test";
import assert from "node:assert/strict";
import { api, ask, collectAnswer, connect, createSession, request } from "../lib/client.mjs";
import { samplePost } from "./helpers/server.mjs";
import { startProcesses } from "./helpers/processes.mjs";
import { startFakeOpenAI } from "./helpers/fake-openai.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const question = "How does Rust keep idle connections cheap and what does Tokio do?";
const TERMINALS = ["chat:stream:end", "chat:social:generated", "chat:error"];

async function history(url, token, sessionId) {
  return (await api(url, token, "GET", `/api/sessions/${sessionId}/messages`)).body.messages;
}

async function withProcesses(t, count, env, body) {
  const cluster = await startProcesses(count, { env });
  if (!cluster) return t.skip("PostgreSQL unreachable");
  try {
    await body(cluster);
  } finally {
    await cluster.stop();
  }
}

/** Every event a socket receives about answer `messageId` (`null`: any), in order. */
function record(socket) {
  const events = [];
  socket.onAny((name, payload) => events.push({ name, payload, at: Date.now() }));
  return events;
}

/**
 * What a client shows of answer `messageId` from `events` (after a join's snapshot `from`:
 * { content, seq }): tokens must follow on with no gap and no double; a `resumed` status sets
 * the answer back to its `seq` (a client drops what it holds past it). Asserts one terminal
 * event and nothing of the answer after it; returns { text, terminal, resumed }.
 */
function follow(events, messageId, who, from = { content: "", seq: -1 }) {
  const mine = events.filter((e) => e.payload?.messageId === messageId);
  let pieces = from.content ? [{ seq: from.seq, token: from.content }] : [];
  let next = from.seq + 1;
  let resumed = 0;
  for (const e of mine.slice(0, -1)) {
    if (e.name === "chat:stream:status" && e.payload.state === "resumed") {
      resumed += 1;
      assert.ok(e.payload.seq <= next - 1, `${who}: resumed at ${e.payload.seq}, past what was seen (${next - 1})`);
      pieces = pieces.filter((p) => p.seq <= e.payload.seq);
      next = e.payload.seq + 1;
    } else if (e.name === "chat:stream:token") {
      assert.equal(e.payload.seq - (e.payload.count ?? 1) + 1, next, `${who}: no gap, no double at seq ${e.payload.seq}`);
      pieces.push({ seq: e.payload.seq, token: e.payload.token });
      next = e.payload.seq + 1;
    }
    assert.ok(!TERMINALS.includes(e.name), `${who}: one terminal event, then nothing (got ${e.name} early)`);
  }
  const terminal = mine.at(-1);
  assert.ok(terminal && TERMINALS.includes(terminal.name), `${who}: ends with a terminal event`);
  return { text: pieces.map((p) => p.token).join(""), terminal, resumed };
}

const finished = (events, messageId) => events.some((e) => e.payload?.messageId === messageId && TERMINALS.includes(e.name));

async function eventually(check, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(100);
  }
}

/** The answer the offline engine writes to `question` about the sample post, with no fault. */
async function undisturbed(server, token) {
  const { session } = await createSession(server.url, token, samplePost);
  const socket = await connect(server.url, token);
  const { terminal } = await ask(socket, session.id, question);
  socket.close();
  return terminal.payload.content;
}

test("a process killed mid-answer: another continues it within 15 s, every socket (watchers on two processes, the sender back through another) sees one gapless answer ending once, stored complete", async (t) => {
  await withProcesses(t, 3, { LOCAL_AI_PACING_MS: "150" }, async (cluster) => {
    const [a, b, c] = cluster.servers;
    const token = cluster.token("alice");
    const expected = await undisturbed(b, token);
    const { session } = await createSession(a.url, token, samplePost);
    const [onA, onB, onC] = await Promise.all([connect(a.url, token), connect(b.url, token), connect(c.url, token)]);
    await request(onB, "chat:join", { sessionId: session.id });
    await request(onC, "chat:join", { sessionId: session.id });
    const [seenA, seenB, seenC] = [record(onA), record(onB), record(onC)];
    const ack = await request(onA, "chat:message", { sessionId: session.id, content: question });
    await eventually(() => seenB.filter((e) => e.name === "chat:stream:token").length >= 4, 10_000, "tokens on B");
    const killed = Date.now();
    a.process.kill("SIGKILL");
    // The sender's client reconnects to another process and joins the session there.
    const back = await connect(c.url, token);
    const seenBack = record(back);
    const joined = await request(back, "chat:join", { sessionId: session.id });
    assert.equal(joined.inFlight?.messageId, ack.messageId, "the answer is in flight for the client that came back");
    const firstContinued = await eventually(
      () => seenB.find((e) => e.name === "chat:stream:status" && e.payload.state === "resumed"),
      15_000,
      "resumed on B",
    );
    assert.ok(firstContinued.at - killed < 15_000, `taken over within 15 s (${firstContinued.at - killed} ms)`);
    await eventually(() => [seenB, seenC, seenBack].every((s) => finished(s, ack.messageId)), 30_000, "the end everywhere");
    await sleep(500);
    const results = [
      follow(seenB, ack.messageId, "watcher on B"),
      follow(seenC, ack.messageId, "watcher on C"),
      follow(seenBack, ack.messageId, "the sender, back on C", joined.inFlight),
    ];
    for (const { text, terminal, resumed } of results) {
      assert.equal(terminal.name, "chat:stream:end", JSON.stringify(terminal.payload));
      assert.equal(terminal.payload.content, text, "the end's content is the tokens seen");
      assert.equal(text, expected, "the whole answer, as it is written without a fault");
      assert.ok(resumed <= 1);
    }
    assert.equal(results[0].resumed, 1, "the watcher was told the answer resumed");
    assert.ok(seenA.length > 0);
    const stored = (await history(b.url, token, session.id)).find((m) => m.id === ack.messageId);
    assert.deepEqual([stored.status, stored.aiResponse], ["complete", expected]);
    const next = await ask(onB, session.id, "What does it say about the scheduler?");
    assert.equal(next.terminal.name, "chat:stream:end", "the session takes a new message");
    [onB, onC, back].forEach((s) => s.close());
  });
});

test("a process paused past its lease (SIGSTOP): another continues the answer; back, the paused one writes nothing more of it and its own socket follows the continuation", async (t) => {
  await withProcesses(t, 2, { LOCAL_AI_PACING_MS: "200" }, async (cluster) => {
    const [a, b] = cluster.servers;
    const token = cluster.token("paula");
    const expected = await undisturbed(b, token);
    const { session } = await createSession(a.url, token, samplePost);
    const [onA, onB] = await Promise.all([connect(a.url, token), connect(b.url, token)]);
    await request(onB, "chat:join", { sessionId: session.id });
    const [seenA, seenB] = [record(onA), record(onB)];
    const ack = await request(onA, "chat:message", { sessionId: session.id, content: question });
    await eventually(() => seenB.filter((e) => e.name === "chat:stream:token").length >= 3, 10_000, "tokens on B");
    a.process.kill("SIGSTOP");
    try {
      await eventually(() => seenB.some((e) => e.name === "chat:stream:status" && e.payload.state === "resumed"), 20_000, "continued elsewhere");
    } finally {
      a.process.kill("SIGCONT");
    }
    await eventually(() => finished(seenA, ack.messageId) && finished(seenB, ack.messageId), 30_000, "the end on both");
    await sleep(2_000);
    for (const [seen, who] of [[seenA, "the sender on the paused process"], [seenB, "the watcher"]]) {
      const { text, terminal } = follow(seen, ack.messageId, who);
      assert.equal(terminal.name, "chat:stream:end", `${who}: ${JSON.stringify(terminal.payload)}`);
      assert.equal(terminal.payload.content, text, `${who}: the end's content is the tokens kept`);
      assert.equal(text, expected, `${who}: the whole answer`);
    }
    const stored = (await history(b.url, token, session.id)).find((m) => m.id === ack.messageId);
    assert.deepEqual([stored.status, stored.aiResponse], ["complete", expected]);
    const next = await ask(onA, session.id, "What does it say about the scheduler?");
    assert.equal(next.terminal.name, "chat:stream:end", "the session takes a new message, on the paused process too");
    [onA, onB].forEach((s) => s.close());
  });
});

test("50 answers in flight on a killed process: all continued to their end, every session usable after", async (t) => {
  await withProcesses(t, 2, { LOCAL_AI_PACING_MS: "100", RATE_LIMIT_MESSAGES_PER_MINUTE: "0" }, async (cluster) => {
    const [a, b] = cluster.servers;
    const token = cluster.token("bob");
    const expected = await undisturbed(b, token);
    const onA = await connect(a.url, token);
    const onB = await connect(b.url, token);
    const seen = record(onB);
    const asked = [];
    for (let i = 0; i < 50; i++) {
      const { session } = await createSession(a.url, token, samplePost);
      await request(onB, "chat:join", { sessionId: session.id });
      const ack = await request(onA, "chat:message", { sessionId: session.id, content: question });
      assert.equal(ack.ok, true, JSON.stringify(ack));
      asked.push({ session, ack });
    }
    await eventually(() => seen.filter((e) => e.name === "chat:stream:token").length >= 100, 20_000, "tokens on B");
    a.process.kill("SIGKILL");
    await eventually(() => asked.every(({ ack }) => finished(seen, ack.messageId)), 60_000, "every answer ended on B").catch((e) => {
      const left = asked.filter(({ ack }) => !finished(seen, ack.messageId));
      const about = (m) => seen.filter((e) => e.payload?.messageId === m).map((e) => `${e.name}:${e.payload.seq ?? e.payload.state ?? ""}`);
      console.log("UNFINISHED", left.length, JSON.stringify(left.slice(0, 3).map(({ ack }) => [ack.messageId, about(ack.messageId).slice(-6)])));
      console.log(b.logs().split("\n").filter((l) => l.includes("WARN") || l.includes("ERROR")).slice(-20).join("\n"));
      throw e;
    });
    for (const { session, ack } of asked) {
      const { text, terminal } = follow(seen, ack.messageId, `answer ${ack.messageId}`);
      assert.equal(terminal.name, "chat:stream:end", JSON.stringify(terminal.payload));
      assert.equal(text, expected);
      const stored = (await history(b.url, token, session.id)).find((m) => m.id === ack.messageId);
      assert.deepEqual([stored.status, stored.aiResponse], ["complete", expected]);
    }
    const { session } = asked[17];
    assert.equal((await ask(onB, session.id, "And the scheduler?")).terminal.name, "chat:stream:end");
    onB.close();
  });
});

test("social posts killed mid-way: the posts' text goes on from where it stopped, and the posts are read from the whole", async (t) => {
  await withProcesses(t, 2, { LOCAL_AI_PACING_MS: "120" }, async (cluster) => {
    const [a, b] = cluster.servers;
    const token = cluster.token("hana");
    const { session } = await createSession(a.url, token, samplePost);
    const [onA, onB] = await Promise.all([connect(a.url, token), connect(b.url, token)]);
    await request(onB, "chat:join", { sessionId: session.id });
    const seen = record(onB);
    const content = "Write posts for Twitter and LinkedIn about this article";
    const ack = await request(onA, "chat:message", { sessionId: session.id, content });
    await eventually(() => seen.filter((e) => e.name === "chat:stream:token").length >= 8, 15_000, "tokens on B");
    a.process.kill("SIGKILL");
    await eventually(() => finished(seen, ack.messageId), 30_000, "the posts on B");
    const { text, terminal, resumed } = follow(seen, ack.messageId, "watcher on B");
    assert.equal(resumed, 1);
    assert.equal(terminal.name, "chat:social:generated", JSON.stringify(terminal.payload));
    assert.equal(terminal.payload.content, text, "the posts' text is the tokens seen");
    assert.deepEqual(terminal.payload.posts.map((p) => p.platform).sort(), ["linkedin", "twitter"]);
    for (const post of terminal.payload.posts) {
      assert.ok(post.content.length > 20, `a whole ${post.platform} post: ${JSON.stringify(post.content)}`);
    }
    const stored = (await history(b.url, token, session.id)).find((m) => m.id === ack.messageId);
    assert.equal(stored.status, "complete");
    assert.deepEqual(stored.posts.map((p) => p.content), terminal.payload.posts.map((p) => p.content));
    onB.close();
  });
});

test("a process killed while continuing another's answer: a third continues it, still one gapless answer", async (t) => {
  await withProcesses(t, 3, { LOCAL_AI_PACING_MS: "150", RUST_LOG: "info" }, async (cluster) => {
    const [a, b, c] = cluster.servers;
    const token = cluster.token("carol");
    const expected = await undisturbed(c, token);
    const { session } = await createSession(a.url, token, samplePost);
    const onA = await connect(a.url, token);
    const watchers = await Promise.all([b, c].map((s) => connect(s.url, token)));
    for (const w of watchers) await request(w, "chat:join", { sessionId: session.id });
    const seen = watchers.map(record);
    const ack = await request(onA, "chat:message", { sessionId: session.id, content: question });
    await eventually(() => seen[0].filter((e) => e.name === "chat:stream:token").length >= 3, 10_000, "tokens");
    a.process.kill("SIGKILL");
    const resumed = await eventually(
      () => seen[0].find((e) => e.name === "chat:stream:status" && e.payload.state === "resumed"),
      15_000,
      "the first takeover",
    );
    // Whichever process took it over dies too, two tokens later.
    const seqAt = resumed.payload.seq;
    await eventually(() => seen[0].some((e) => e.name === "chat:stream:token" && e.payload.seq >= seqAt + 2), 10_000, "continued tokens");
    // Kill the one whose log says it took the answer over.
    const taker = [b, c].find((s) => s.logs().includes(`continuing an answer whose process stopped`));
    assert.ok(taker, "one of the others took it over");
    const survivor = taker === b ? 1 : 0;
    taker.process.kill("SIGKILL");
    await eventually(() => finished(seen[survivor], ack.messageId), 30_000, "the end on the survivor");
    const { text, terminal, resumed: times } = follow(seen[survivor], ack.messageId, "the surviving watcher");
    assert.equal(terminal.name, "chat:stream:end", JSON.stringify(terminal.payload));
    assert.equal(text, expected);
    assert.equal(times, 2, "resumed twice");
    const alive = taker === b ? c : b;
    const stored = (await history(alive.url, token, session.id)).find((m) => m.id === ack.messageId);
    assert.deepEqual([stored.status, stored.aiResponse], ["complete", expected]);
    watchers[survivor].close();
  });
});

test("chat:stop while the answer waits to be taken over: the takeover stops it, stored stopped with the text logged", async (t) => {
  await withProcesses(t, 2, { LOCAL_AI_PACING_MS: "150" }, async (cluster) => {
    const [a, b] = cluster.servers;
    const token = cluster.token("dave");
    const { session } = await createSession(a.url, token, samplePost);
    const [onA, onB] = await Promise.all([connect(a.url, token), connect(b.url, token)]);
    await request(onB, "chat:join", { sessionId: session.id });
    const seen = record(onB);
    const ack = await request(onA, "chat:message", { sessionId: session.id, content: question });
    await eventually(() => seen.filter((e) => e.name === "chat:stream:token").length >= 3, 10_000, "tokens on B");
    a.process.kill("SIGKILL");
    await sleep(300);
    const stop = await request(onB, "chat:stop", { sessionId: session.id });
    assert.deepEqual([stop.ok, stop.stopped], [true, true], JSON.stringify(stop));
    await eventually(() => finished(seen, ack.messageId), 20_000, "the end on B");
    const { text, terminal } = follow(seen, ack.messageId, "watcher on B");
    assert.equal(terminal.name, "chat:stream:end", JSON.stringify(terminal.payload));
    assert.equal(terminal.payload.stopped, true);
    assert.equal(terminal.payload.content, text);
    const stored = (await history(b.url, token, session.id)).find((m) => m.id === ack.messageId);
    assert.deepEqual([stored.status, stored.aiResponse], ["stopped", text]);
    onB.close();
  });
});

test("a continuation asks the provider to go on from the logged text (llama.cpp: a final assistant message; vLLM: continue_final_message; others: an instruction), and a refused one ends interrupted", async (t) => {
  for (const server of ["llama.cpp", "vllm", "hosted"]) {
    const fake = await startFakeOpenAI({ serves: server === "hosted" ? null : { server, window: 8192 } });
    try {
      const env = { AI_PROVIDER: "openai", AI_BASE_URL: fake.url, AI_API_KEY: "k", AI_MODEL: "fake-model" };
      await withProcesses(t, 2, env, async (cluster) => {
        let [a, b] = cluster.servers;
        const token = cluster.token("erin");
        for (const refused of [false, true]) {
          const { session } = await createSession(a.url, token, samplePost);
          const [onA, onB] = await Promise.all([connect(a.url, token), connect(b.url, token)]);
          await request(onB, "chat:join", { sessionId: session.id });
          const seen = record(onB);
          const content = `What does the post say about Tokio? (slow${refused ? " refuse-continuation" : ""})`;
          const ack = await request(onA, "chat:message", { sessionId: session.id, content });
          await eventually(() => seen.filter((e) => e.name === "chat:stream:token").length >= 5, 10_000, "tokens on B");
          a.process.kill("SIGKILL");
          await eventually(() => finished(seen, ack.messageId), 30_000, `the end (${server})`);
          const { text, terminal } = follow(seen, ack.messageId, `watcher (${server})`);
          const continuation = fake.requests.filter((r) => r.continued !== null && r.continued !== undefined).at(-1);
          assert.ok(continuation, `${server}: a continuation was asked for`);
          assert.ok(text.startsWith(continuation.continued), `${server}: from the text logged (${JSON.stringify(continuation.continued)})`);
          const last = continuation.body.messages.at(-1);
          if (server === "hosted") {
            assert.equal(last.role, "user");
            assert.match(last.content, /Continue it exactly where it stops/);
          } else {
            assert.deepEqual([last.role, last.content], ["assistant", continuation.continued]);
          }
          assert.equal(continuation.body.continue_final_message, server === "vllm" ? true : undefined);
          const stored = (await history(b.url, token, session.id)).find((m) => m.id === ack.messageId);
          if (refused) {
            assert.equal(terminal.name, "chat:error");
            assert.equal(terminal.payload.code, "SERVER_SHUTDOWN");
            assert.deepEqual([stored.status, stored.aiResponse], ["interrupted", text]);
          } else {
            assert.equal(terminal.name, "chat:stream:end", JSON.stringify(terminal.payload));
            const words = Array.from({ length: 40 }, (_, i) => `w${i} `).join("");
            assert.equal(text, words, `${server}: the whole answer, no word twice or missing`);
            assert.deepEqual([stored.status, stored.aiResponse], ["complete", words]);
          }
          onB.close();
          onA.close();
          // The next round needs a live generating process.
          a = await cluster.startOne();
          cluster.servers.push(a);
        }
      });
    } finally {
      await fake.close();
    }
  }
});

test("SIGTERM under load hands the answers over: the process exits in seconds, every answer ends once, gapless and complete", async (t) => {
  await withProcesses(t, 2, { LOCAL_AI_PACING_MS: "150", SHUTDOWN_GRACE_SECS: "120", RATE_LIMIT_MESSAGES_PER_MINUTE: "0" }, async (cluster) => {
    const [a, b] = cluster.servers;
    const token = cluster.token("frank");
    const expected = await undisturbed(b, token);
    const onA = await connect(a.url, token);
    const onB = await connect(b.url, token);
    const seen = record(onB);
    const asked = [];
    for (let i = 0; i < 20; i++) {
      const { session } = await createSession(a.url, token, samplePost);
      await request(onB, "chat:join", { sessionId: session.id });
      asked.push({ session, ack: await request(onA, "chat:message", { sessionId: session.id, content: question }) });
    }
    await eventually(() => seen.filter((e) => e.name === "chat:stream:token").length >= 40, 20_000, "tokens on B");
    const stopping = Date.now();
    const exited = await a.stop();
    const took = Date.now() - stopping;
    assert.deepEqual(exited, { code: 0, signal: null });
    assert.ok(took < 10_000, `the draining process exited in seconds (${took} ms), not after its answers`);
    await eventually(() => asked.every(({ ack }) => finished(seen, ack.messageId)), 60_000, "every answer ended on B");
    for (const { session, ack } of asked) {
      const { text, terminal } = follow(seen, ack.messageId, `answer ${ack.messageId}`);
      assert.equal(terminal.name, "chat:stream:end", JSON.stringify(terminal.payload));
      assert.equal(text, expected);
      const stored = (await history(b.url, token, session.id)).find((m) => m.id === ack.messageId);
      assert.deepEqual([stored.status, stored.aiResponse], ["complete", expected]);
    }
    onB.close();
  });
});

test("RESUME_ANSWERS_ON_PROCESS_DEATH=false keeps answers to their process: a dead one's end interrupted, a draining one finishes its own", async (t) => {
  await withProcesses(t, 2, { LOCAL_AI_PACING_MS: "150", RESUME_ANSWERS_ON_PROCESS_DEATH: "false" }, async (cluster) => {
    const [a, b] = cluster.servers;
    const token = cluster.token("gina");
    const { session } = await createSession(a.url, token, samplePost);
    const [onA, onB] = await Promise.all([connect(a.url, token), connect(b.url, token)]);
    await request(onB, "chat:join", { sessionId: session.id });
    const seen = record(onB);
    const ack = await request(onA, "chat:message", { sessionId: session.id, content: question });
    await eventually(() => seen.filter((e) => e.name === "chat:stream:token").length >= 3, 10_000, "tokens on B");
    a.process.kill("SIGKILL");
    await eventually(() => finished(seen, ack.messageId), 20_000, "the end on B");
    const { text, terminal, resumed } = follow(seen, ack.messageId, "watcher on B");
    assert.deepEqual([terminal.name, terminal.payload.code, resumed], ["chat:error", "SERVER_SHUTDOWN", 0]);
    const stored = (await history(b.url, token, session.id)).find((m) => m.id === ack.messageId);
    assert.deepEqual([stored.status, stored.aiResponse], ["interrupted", text]);
    onB.close();
  });
});
