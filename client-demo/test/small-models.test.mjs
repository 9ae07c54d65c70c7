// What small local models and their servers bring (llama.cpp's server, Ollama): a context window
// of a few thousand tokens, no `json_schema`. Against the fake provider set up like them.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { api, ask, connect, createSession, devToken } from "../lib/client.mjs";
import { startServer, samplePost } from "./helpers/server.mjs";
import { startFakeOpenAI } from "./helpers/fake-openai.mjs";

const longPost = {
  ...samplePost,
  content: Array.from({ length: 400 }, (_, i) => `Sentence ${i} says something about Tokio and its scheduler.`).join(" "),
};

async function withServer({ fakeOptions, env }, body) {
  const fake = await startFakeOpenAI(fakeOptions);
  const server = await startServer({
    env: { AI_PROVIDER: "openai", AI_BASE_URL: fake.url, AI_API_KEY: "k", AI_MODEL: "small", FIRST_TOKEN_TIMEOUT_SECS: "5", ...env },
  });
  try {
    const token = await devToken(server.url, "alice");
    await body({ fake, server, token });
  } finally {
    await server.stop();
    await fake.close();
  }
}

test("a 20-exchange session on a 1,024-token window never fails for its window", async () => {
  // The fake refuses any prompt over ~4,000 characters (about 1,000 tokens), as a 1,024-token model would.
  const env = { MODEL_CONTEXT_TOKENS: "1024", ANSWER_MAX_TOKENS: "256", HISTORY_MESSAGES: "20", SUMMARY_EVERY: "0" };
  await withServer({ fakeOptions: { contextWindowChars: 4_000 }, env }, async ({ fake, server, token }) => {
    const { session } = await createSession(server.url, token, longPost);
    const socket = await connect(server.url, token);
    try {
      for (let i = 0; i < 20; i++) {
        const question = `Question ${i}: ${"what does the article say about the scheduler and its queues? ".repeat(4)}`;
        const result = await ask(socket, session.id, question);
        assert.equal(result.terminal.name, "chat:stream:end", `exchange ${i}: ${JSON.stringify(result.terminal.payload)}`);
      }
    } finally {
      socket.close();
    }
    const answers = fake.requests.filter((r) => r.kind === "answer");
    assert.equal(answers.length, 20, "every prompt fitted the first time");
    assert.ok(answers.every((r) => r.body.max_tokens === 256));
    const last = answers.at(-1).body.messages;
    assert.ok(last.length > 3, "recent exchanges are kept");
    assert.ok(last.length < 41, "old exchanges are left out");
    assert.match(last.at(-1).content, /^Question 19/, "the new question is always there");
    assert.ok(last.some((m) => m.content.startsWith("Question 18")), "the newest exchange is the first kept");
    const history = await api(server.url, token, "GET", `/api/sessions/${session.id}/messages?limit=50`);
    assert.ok(history.body.messages.every((m) => m.status === "complete"));
  });
});

test("a provider that finds the prompt too long is asked once more with a trimmed prompt, never shown the refusal", async () => {
  // Our count says the prompt fits 4,096 tokens; the model's own tokenizer says no above 11,000 characters.
  const env = { MODEL_CONTEXT_TOKENS: "4096", ANSWER_MAX_TOKENS: "512" };
  await withServer({ fakeOptions: { contextWindowChars: 11_000 }, env }, async ({ fake, server, token }) => {
    const { session } = await createSession(server.url, token, longPost);
    const socket = await connect(server.url, token);
    const result = await ask(socket, session.id, "What does the article say about the scheduler?");
    socket.close();
    assert.equal(result.terminal.name, "chat:stream:end", JSON.stringify(result.terminal.payload));
    assert.equal(result.terminal.payload.content, "Hello from the model.");
    const answers = fake.requests.filter((r) => r.kind === "answer");
    assert.equal(answers.length, 2, "refused once, then trimmed");
    assert.ok(JSON.stringify(answers[1].body.messages).length < JSON.stringify(answers[0].body.messages).length);
  });
});

test("a prompt still too long after trimming ends with AI_ERROR, and the session takes the next message", async () => {
  const env = { MODEL_CONTEXT_TOKENS: "4096", ANSWER_MAX_TOKENS: "512" };
  await withServer({ fakeOptions: { contextWindowChars: 500 }, env }, async ({ fake, server, token }) => {
    const { session } = await createSession(server.url, token, longPost);
    const socket = await connect(server.url, token);
    const result = await ask(socket, session.id, "What does the article say about the scheduler?");
    assert.equal(result.terminal.payload.code, "AI_ERROR");
    assert.doesNotMatch(result.terminal.payload.message, /maximum context length/, "the provider's words stay in the log");
    assert.equal(fake.requests.filter((r) => r.kind === "answer").length, 2);
    const next = await ask(socket, session.id, "And Tokio?");
    assert.equal(next.ack.ok, true, "not BUSY, not bricked");
    socket.close();
  });
});

test("a server that refuses json_schema (llama.cpp) is asked with json_object at once, and only the first message pays", async () => {
  await withServer({ fakeOptions: { schemaRefused: true }, env: {} }, async ({ fake, server, token }) => {
    const { session } = await createSession(server.url, token, samplePost);
    const socket = await connect(server.url, token);
    const first = await ask(socket, session.id, "bluesky?");
    assert.equal(first.terminal.name, "chat:social:generated", "the classifier decided, not the rules");
    const classified = fake.requests.filter((r) => r.kind === "classifier");
    assert.deepEqual(classified.map((r) => r.body.response_format?.type), ["json_schema", "json_object"]);
    const second = await ask(socket, session.id, "mastodon?");
    assert.deepEqual(second.terminal.payload.posts.map((p) => p.platform), ["mastodon"]);
    const after = fake.requests.filter((r) => r.kind === "classifier").slice(2);
    assert.deepEqual(after.map((r) => r.body.response_format?.type), ["json_object"], "remembered: one request");
    socket.close();
  });
});

test("an answer cap or context window that cannot work is refused at start, naming it", async () => {
  const { runToExit } = await import("./helpers/server.mjs");
  for (const [env, name] of [
    [{ ANSWER_MAX_TOKENS: "0" }, "ANSWER_MAX_TOKENS=0"],
    [{ MODEL_CONTEXT_TOKENS: "1024", ANSWER_MAX_TOKENS: "900" }, "ANSWER_MAX_TOKENS=900"],
    [{ MODEL_CONTEXT_TOKENS: "100" }, "MODEL_CONTEXT_TOKENS=100"],
    [{ ANSWER_MAX_TOKENS: "lots" }, "ANSWER_MAX_TOKENS"],
  ]) {
    const { code, output } = await runToExit({ env });
    assert.notEqual(code, 0, JSON.stringify(env));
    assert.match(output, new RegExp(name), output);
  }
});
