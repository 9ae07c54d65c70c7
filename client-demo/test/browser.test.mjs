// The demo page in headless Chromium (Debian's, driven by playwright-core): sign in, create a
// session, watch an answer stream, stop one, watch posts grow and become cards, reload
// mid-answer, see the wait while the provider is busy, and regenerate, edit and move between
// branches.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { api, devToken } from "../lib/client.mjs";
import { startServer, samplePost, LIMITS } from "./helpers/server.mjs";
import { startFakeOpenAI } from "./helpers/fake-openai.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const artifacts = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../target/browser");
const longQuestion = "How does Rust keep idle connections cheap, what does Tokio do and why is latency flat?";

let server;
let browser;
before(async () => {
  if (!existsSync(CHROMIUM)) {
    if (process.env.CI === "true") throw new Error(`${CHROMIUM} is missing (tests/run-all.sh installs it)`);
    return;
  }
  server = await startServer({ env: { LOCAL_AI_PACING_MS: "80" } });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Signs `user` in (dev mode) on the open page and creates a session for the sample post. */
async function signInWithASession(page, user) {
  await page.fill("#user", user);
  await page.click("#dev-signin");
  await page.waitForSelector("#status:text('connected')");
  await page.fill("#post-url", samplePost.url);
  await page.fill("#post-text", samplePost.content);
  await page.click("#new-session button[type=submit]");
  await page.waitForSelector("#question:not([disabled])");
}

async function assistantText(page) {
  return page.locator("li.assistant .text").last().textContent();
}

test("the demo page streams, stops, shows post cards and resumes after a reload", async (t) => {
  if (!browser) return t.skip("no Chromium here");
  const page = await browser.newPage();
  page.on("pageerror", (err) => assert.fail(`page error: ${err.message}`));
  const consoleErrors = [];
  page.on("console", (msg) => msg.type() === "error" && consoleErrors.push(msg.text()));
  await page.goto(server.url);

  // Sign in (dev mode) and create a session for a post with its text.
  await page.fill("#user", "alice");
  await page.click("#dev-signin");
  await page.waitForSelector("#status:text('connected')");
  await page.fill("#post-url", samplePost.url);
  await page.fill("#post-title", samplePost.title);
  await page.fill("#post-text", samplePost.content);
  await page.click("#new-session button[type=submit]");
  await page.waitForSelector("#question:not([disabled])");
  // Untitled until its first exchange: the session goes by its post's title.
  await page.waitForSelector(`#sessions li:text('${samplePost.title}')`);

  // Shift+Enter breaks the line; Enter sends.
  await page.fill("#question", "first line");
  await page.press("#question", "Shift+Enter");
  assert.equal(await page.inputValue("#question"), "first line\n");
  assert.equal(await page.locator("li.user").count(), 0, "nothing sent");

  // An answer streams: text appears while Stop is still enabled, then it ends.
  await page.fill("#question", longQuestion);
  await page.press("#question", "Enter");
  await page.waitForSelector("li.assistant.streaming");
  await page.waitForFunction(() => document.querySelector("li.assistant.streaming .text")?.textContent.length > 0);
  const partial = await assistantText(page);
  assert.equal(await page.isEnabled("#stop"), true, "tokens arrived before the end");
  await page.waitForSelector("li.assistant.streaming", { state: "detached", timeout: 20_000 });
  const full = await assistantText(page);
  assert.ok(full.length > partial.length && full.startsWith(partial), "the answer grew as it streamed");
  assert.equal(await page.isEnabled("#stop"), false);

  // Stop mid-answer.
  await page.fill("#question", longQuestion);
  await page.click("#send");
  await page.waitForFunction(() => document.querySelector("li.assistant.streaming .text")?.textContent.length > 10);
  await page.click("#stop");
  await page.waitForSelector("li.assistant:last-child .note:text('stopped')");
  const stopped = await assistantText(page);
  assert.ok(stopped.length < full.length, "the stopped answer is shorter");

  // Social posts as cards, each within its platform's limit.
  await page.fill("#question", "Write a tweet, a Bluesky post and a LinkedIn post about this");
  await page.click("#send");
  // The posts grow as they stream, under each platform's name, before the cards replace them.
  await page.waitForFunction(() => /X \(Twitter\):\n\S/.test(document.querySelector("li.assistant.streaming .text")?.textContent ?? ""));
  const growing = await assistantText(page);
  await page.waitForFunction((before) => (document.querySelector("li.assistant.streaming .text")?.textContent.length ?? 0) > before, growing.length);
  assert.doesNotMatch(growing, /[{}]|"platform"/, "the posts' text, not their JSON");
  await page.waitForSelector("li.assistant:last-child .card", { timeout: 20_000 });
  const cards = await page.locator("li.assistant:last-child .card").evaluateAll((els) =>
    els.map((el) => ({ platform: el.dataset.platform, count: el.querySelector(".count").textContent })),
  );
  assert.deepEqual(cards.map((c) => c.platform), ["twitter", "bluesky", "linkedin"]);
  for (const c of cards) {
    const [count, limit] = c.count.split("/").map(Number);
    assert.equal(limit, LIMITS[c.platform]);
    assert.ok(count > 0 && count <= limit, `${c.platform}: ${c.count}`);
  }

  // Reload mid-answer: the page resumes and shows the whole answer.
  await page.fill("#question", longQuestion);
  await page.click("#send");
  await page.waitForFunction(() => document.querySelector("li.assistant.streaming .text")?.textContent.length > 10);
  await page.reload();
  await page.waitForSelector("li.assistant.streaming", { timeout: 10_000 });
  assert.equal(await page.inputValue("#user"), "alice", "after a reload the page says who is signed in");
  await page.waitForSelector("li.assistant.streaming", { state: "detached", timeout: 20_000 });
  const resumed = await assistantText(page);
  const token = await devToken(server.url, "alice");
  const sessionId = await page.evaluate(() => JSON.parse(localStorage.getItem("postchat")).sessionId);
  const stored = (await api(server.url, token, "GET", `/api/sessions/${sessionId}/messages`)).body.messages.at(-1);
  assert.equal(stored.status, "complete");
  assert.equal(resumed, stored.aiResponse, "nothing lost or doubled across the reload");
  assert.equal(await page.locator("li.user").count(), 4, "each question shows once");

  // The session got its title from the first exchange.
  assert.match(await page.textContent("#session-title"), /How does Rust keep idle connections cheap/);
  assert.deepEqual(consoleErrors, [], "no error in the console (no favicon 404)");

  mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: path.join(artifacts, "demo-page.png"), fullPage: true });
});

test("while the provider is busy the page counts down to the next try, then the answer streams", async (t) => {
  if (!browser) return t.skip("no Chromium here");
  const fake = await startFakeOpenAI();
  const busy = await startServer({ env: { AI_PROVIDER: "openai", AI_BASE_URL: fake.url, AI_API_KEY: "k", FIRST_TOKEN_TIMEOUT_SECS: "10" } });
  const page = await browser.newPage();
  try {
    await page.goto(busy.url);
    await signInWithASession(page, "dave");
    // The fake answers 429 with Retry-After: 1 once, then streams.
    await page.fill("#question", "What does the article say about the scheduler? (busy-once)");
    await page.click("#send");
    await page.waitForSelector("li.assistant.streaming .note.waiting");
    assert.match(await page.textContent("li.assistant.streaming .note.waiting"), /The AI provider is busy: asking again in [01] s…/);
    await page.waitForSelector("li.assistant:not(.streaming)", { timeout: 10_000 });
    assert.equal(await page.locator("li.assistant .note.waiting").count(), 0, "the wait is over");
    assert.equal(await assistantText(page), "Hello from the model.");
  } finally {
    await page.close();
    await busy.stop();
    await fake.close();
  }
});

test("while a slow local model reads a long question the page says so, then the answer streams", async (t) => {
  if (!browser) return t.skip("no Chromium here");
  // A llama.cpp server reading 2 ms a token: the first long question measures its pace, the
  // second is told as being read (about 4 s).
  const fake = await startFakeOpenAI({ serves: { server: "llama.cpp", window: 16384 }, readMsPerToken: 2 });
  const slow = await startServer({ env: { AI_PROVIDER: "openai", AI_BASE_URL: fake.url, AI_API_KEY: "k", AI_MODEL: "fake-model" } });
  const page = await browser.newPage();
  const brief = Array.from({ length: 130 }, (_, i) => `Point ${i} of the brief is about tasks and their wakers.`).join(" ");
  try {
    await page.goto(slow.url);
    await signInWithASession(page, "erin");
    for (const n of [1, 2]) {
      await page.fill("#question", `Question ${n}: ${brief} What does the article say?`);
      await page.click("#send");
      if (n === 2) {
        await page.waitForSelector("li.assistant.streaming .note.waiting");
        assert.match(await page.textContent("li.assistant.streaming .note.waiting"), /The model is reading your question \(\d+ tokens\): about \d+ s left…/);
      }
      await page.waitForFunction((n) => document.querySelectorAll("li.assistant:not(.streaming)").length >= n, n, { timeout: 30_000 });
    }
    assert.equal(await page.locator("li.assistant .note.waiting").count(), 0, "the reading is over");
  } finally {
    await page.close();
    await slow.stop();
    await fake.close();
  }
});

test("a rate-limited message shows when to retry", async (t) => {
  if (!browser) return t.skip("no Chromium here");
  const limited = await startServer({ env: { RATE_LIMIT_MESSAGES_PER_MINUTE: "1", RATE_LIMIT_BURST: "1", LOCAL_AI_PACING_MS: "0" } });
  const page = await browser.newPage();
  try {
    await page.goto(limited.url);
    await signInWithASession(page, "carol");
    await page.fill("#question", "What does Tokio do?");
    await page.click("#send");
    await page.waitForSelector("li.assistant:not(.streaming)");
    await page.fill("#question", "And Socket.IO?");
    await page.click("#send");
    await page.waitForSelector("#error:not([hidden])");
    assert.match(await page.textContent("#error"), /You are sending too fast: try again in \d+ s\./);
  } finally {
    await page.close();
    await limited.stop();
  }
});

test("Regenerate, Edit and ‹ n/m › make and move between branches on the demo page", async (t) => {
  if (!browser) return t.skip("no Chromium here");
  const page = await browser.newPage();
  page.on("pageerror", (err) => assert.fail(`page error: ${err.message}`));
  try {
    await page.goto(server.url);
    await signInWithASession(page, "dora");
    await page.fill("#question", "What does Tokio do?");
    await page.press("#question", "Enter");
    await page.waitForSelector("li.assistant:not(.streaming) .regenerate");
    const first = await assistantText(page);

    // Regenerate: a second answer to the same message, streamed; the exchange shows 2/2.
    await page.click("li.assistant .regenerate");
    await page.waitForSelector("li.user .sibling-at:text('2/2')");
    await page.waitForSelector("li.assistant:not(.streaming) .regenerate");
    assert.equal(await page.locator("li.user").count(), 1, "one exchange on the branch shown");

    // ‹ shows the first answer again (the branch it is on becomes the active one).
    await page.click("li.user .sibling-prev");
    await page.waitForSelector("li.user .sibling-at:text('1/2')");
    assert.equal(await assistantText(page), first);
    assert.ok(await page.locator("li.user .sibling-prev").isDisabled());

    // Edit: the message's text in the composer; Send makes a third sibling, answered.
    await page.click("li.user .edit");
    assert.equal(await page.inputValue("#question"), "What does Tokio do?");
    assert.ok(await page.locator("#editing").isVisible());
    await page.fill("#question", "What does Tokio do, in one line?");
    await page.press("#question", "Enter");
    await page.waitForSelector("li.user .sibling-at:text('3/3')");
    await page.waitForSelector("li.user:has-text('What does Tokio do, in one line?')");
    await page.waitForSelector("li.assistant:not(.streaming) .regenerate");
    assert.ok(await page.locator("#editing").isHidden());

    // After a reload the page shows the same branch.
    await page.reload();
    await page.waitForSelector("li.user .sibling-at:text('3/3')");
  } finally {
    await page.close();
  }
});
