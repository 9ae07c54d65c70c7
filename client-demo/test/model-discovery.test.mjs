// Local models with no tuning: pointed at a self-hosted server with only AI_PROVIDER, AI_BASE_URL,
// AI_API_KEY and AI_MODEL, the server learns the model's window from the server (or from its
// refusal), sizes answers for it, and gives a long prompt on a slow reader the time it needs,
// telling the user it is being read. Against the fake provider answering as each server does.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ask, connect, createSession, devToken } from "../lib/client.mjs";
import { startServer, samplePost } from "./helpers/server.mjs";
import { startFakeOpenAI } from "./helpers/fake-openai.mjs";

const NEW_USER = (fake) => ({ AI_PROVIDER: "openai", AI_BASE_URL: fake.url, AI_API_KEY: "k", AI_MODEL: "fake-model" });
// What the server logs of the window, read by the tests.
const LOGS = { RUST_LOG: "info" };

async function withServer(fakeOptions, env, body) {
  const fake = await startFakeOpenAI(fakeOptions);
  const server = await startServer({ env: { ...NEW_USER(fake), ...LOGS, ...env } });
  try {
    const token = await devToken(server.url, "alice");
    await body({ fake, server, token });
  } finally {
    await server.stop();
    await fake.close();
  }
}

async function gauge(server, name) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  return Number(text.match(new RegExp(`^${name} (\\S+)$`, "m"))?.[1]);
}

/** A question about 1,500 tokens long (a pasted brief). */
const longQuestion = (n) => `Question ${n}: given this brief, what does the article say about the scheduler? ` +
  Array.from({ length: 130 }, (_, i) => `Point ${i} of the brief is about tasks and their wakers.`).join(" ");

for (const server of ["llama.cpp", "vllm", "ollama", "lmstudio"]) {
  test(`${server}: the window is asked of the server at start, answers are sized for it, and long questions outgrow it without failing`, async () => {
    await withServer({ serves: { server, window: 4096 } }, {}, async ({ fake, server: app, token }) => {
      assert.equal(await gauge(app, "postchat_model_context_tokens"), 4096);
      assert.match(app.logs(), /model window learned context_tokens=4096 answer_max_tokens=512/);
      const { session } = await createSession(app.url, token, samplePost);
      const socket = await connect(app.url, token);
      for (let i = 0; i < 4; i++) {
        const result = await ask(socket, session.id, longQuestion(i));
        assert.equal(result.terminal?.name, "chat:stream:end", JSON.stringify(result.terminal?.payload ?? result.ack));
      }
      socket.close();
      const answers = fake.requests.filter((r) => r.kind === "answer");
      assert.equal(answers.length, 4, "no prompt refused: every one fit the window");
      assert.ok(answers.every((r) => r.body.max_tokens === 512), "an eighth of the window for the answer");
    });
  });
}

test("llama-cpp-python tells its window only when it refuses a whole completion (a stream over it ends empty): learned from that refusal, the answer still comes, later prompts fit", async () => {
  await withServer({ serves: { server: "llama-cpp-python", window: 4096 } }, {}, async ({ fake, server: app, token }) => {
    assert.equal(await gauge(app, "postchat_model_context_tokens"), 128000, "nothing to ask: the default until told");
    const { session } = await createSession(app.url, token, samplePost);
    const socket = await connect(app.url, token);
    for (let i = 0; i < 4; i++) {
      const result = await ask(socket, session.id, longQuestion(i));
      assert.equal(result.terminal?.name, "chat:stream:end", JSON.stringify(result.terminal?.payload ?? result.ack));
    }
    socket.close();
    assert.equal(await gauge(app, "postchat_model_context_tokens"), 4096);
    assert.match(app.logs(), /model window learned context_tokens=4096 answer_max_tokens=512 from="a context-length refusal"/);
    const answers = fake.requests.filter((r) => r.kind === "answer");
    assert.equal(answers.length, 6, "an empty stream, the same asked whole (refused, naming the window), then every prompt fits");
    const whole = answers.findIndex((r) => !r.body.stream);
    assert.ok(whole > 0 && answers[whole - 1].body.stream, "the empty stream was asked again whole");
    assert.equal(answers.at(-1).body.max_tokens, 512);
  });
});

test("a slow reader: a long prompt gets the time its reading takes past FIRST_TOKEN_TIMEOUT_SECS, and the room is told it is being read", async () => {
  // 2 ms a token: a 2,000-token prompt takes 4 s to read, past the 2 s first-token floor. The
  // first (long) question measures the pace; the second is told as being read.
  await withServer({ serves: { server: "llama.cpp", window: 16384 }, readMsPerToken: 2 }, { FIRST_TOKEN_TIMEOUT_SECS: "2" }, async ({ server: app, token }) => {
    const { session } = await createSession(app.url, token, samplePost);
    const socket = await connect(app.url, token);
    const first = await ask(socket, session.id, longQuestion(0));
    assert.equal(first.terminal?.name, "chat:stream:end", JSON.stringify(first.terminal?.payload ?? first.ack));
    const long = await ask(socket, session.id, longQuestion(1));
    socket.close();
    assert.equal(long.terminal?.name, "chat:stream:end", JSON.stringify(long.terminal?.payload ?? long.ack));
    const reading = long.events.find((e) => e.name === "chat:stream:status");
    assert.equal(reading?.payload.state, "reading", JSON.stringify(long.events.slice(0, 3)));
    assert.ok(reading.payload.promptTokens > 1000, JSON.stringify(reading.payload));
    assert.ok(reading.payload.expectedMs >= 2000, JSON.stringify(reading.payload));
    assert.ok(long.events.indexOf(reading) < long.events.findIndex((e) => e.name === "chat:stream:token"), "before the first token");
    assert.ok(await gauge(app, "postchat_provider_prompt_tokens_per_second") > 0);
  });
});

test("ANSWER_MAX_TOKENS over half the window the server reports is refused at start, naming both", async () => {
  const fake = await startFakeOpenAI({ serves: { server: "llama.cpp", window: 2048 } });
  try {
    const { runToExit } = await import("./helpers/server.mjs");
    const { code, output } = await runToExit({ env: { ...NEW_USER(fake), ANSWER_MAX_TOKENS: "1500" } });
    assert.notEqual(code, 0);
    assert.match(output, /ANSWER_MAX_TOKENS=1500: must be at most half the model's window \(1024 of 2048, from llama.cpp \/props n_ctx\)/);
  } finally {
    await fake.close();
  }
});
