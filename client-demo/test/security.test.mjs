// Security and abuse resistance: tokens, oversized messages, floods of messages and
// connections, sockets per user, the daily token budget.
import { test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { io } from "socket.io-client";
import { api, ask, connect, createSession, devToken, request } from "../lib/client.mjs";
import { startServer, samplePost } from "./helpers/server.mjs";
import { sign, now } from "./helpers/jwt.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const secret = "security-test-secret-0123456789abcdef";

function outcome(url, token, extra = {}) {
  const socket = io(url, { auth: { token }, reconnection: false, forceNew: true, transports: ["websocket"], ...extra });
  return new Promise((resolve) => {
    socket.once("connect", () => {
      socket.close();
      resolve("connected");
    });
    socket.once("connect_error", (e) => {
      socket.close();
      resolve(e.message);
    });
  });
}

function rssKiB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(status.match(/VmRSS:\s+(\d+)/)[1]);
}

test("HS256 tokens: only valid ones connect, every other kind is refused", async () => {
  const server = await startServer({ env: { JWT_SECRET: secret, JWT_AUDIENCE: "chat", JWT_ISSUER: "auth.example", JWT_CLOCK_SKEW_SECS: "5" } });
  try {
    const good = { sub: "alice", exp: now() + 600, aud: "chat", iss: "auth.example" };
    assert.equal(await outcome(server.url, sign(good, { key: secret })), "connected");
    const refused = {
      expired: sign({ ...good, exp: now() - 60 }, { key: secret }),
      "not yet valid": sign({ ...good, nbf: now() + 600 }, { key: secret }),
      "wrong audience": sign({ ...good, aud: "other" }, { key: secret }),
      "wrong issuer": sign({ ...good, iss: "evil.example" }, { key: secret }),
      "no exp": sign({ sub: "alice", aud: "chat", iss: "auth.example" }, { key: secret }),
      "no sub": sign({ exp: now() + 600, aud: "chat", iss: "auth.example" }, { key: secret }),
      "alg none": sign(good, { alg: "none" }),
      "bad signature": sign(good, { key: "another-secret-entirely-0123456789" }),
      oversized: sign({ ...good, pad: "x".repeat(10_000) }, { key: secret }),
    };
    for (const [name, token] of Object.entries(refused)) {
      assert.equal(await outcome(server.url, token), "unauthorized", name);
    }
  } finally {
    await server.stop();
  }
});

for (const [alg, keyType] of [["RS256", "rsa"], ["EdDSA", "ed25519"]]) {
  test(`${alg} pinned: tokens signed by the private key connect; HS256 with the public key as secret does not`, async () => {
    const { publicKey, privateKey } = crypto.generateKeyPairSync(keyType, keyType === "rsa" ? { modulusLength: 2048 } : {});
    const dir = mkdtempSync(path.join(tmpdir(), "postchat-keys-"));
    const pem = publicKey.export({ type: "spki", format: "pem" });
    writeFileSync(path.join(dir, "public.pem"), pem);
    const server = await startServer({ env: { JWT_ALGORITHM: alg, JWT_PUBLIC_KEY_FILE: path.join(dir, "public.pem") } });
    try {
      const claims = { sub: "alice", exp: now() + 600 };
      const token = sign(claims, { alg, key: privateKey });
      assert.equal(await outcome(server.url, token), "connected");
      assert.equal((await api(server.url, token, "GET", "/api/sessions")).status, 200);
      assert.equal(await outcome(server.url, sign(claims, { key: pem })), "unauthorized", "HS256 when the key is pinned");
      assert.equal(await outcome(server.url, sign(claims, { key: secret })), "unauthorized");
      assert.equal(await outcome(server.url, sign(claims, { alg: "none" })), "unauthorized");
      assert.doesNotMatch(server.logs(), /demo token/, "no dev mode with a public key");
    } finally {
      await server.stop();
    }
  });
}

for (const transport of ["websocket", "polling"]) {
  test(`a 2 MiB message over ${transport} closes that connection only, and memory stays flat`, async () => {
    const server = await startServer();
    try {
      const token = await devToken(server.url, "alice");
      const { session } = await createSession(server.url, token, samplePost);
      const bystander = await connect(server.url, token);
      const huge = "x".repeat(2 * 1024 * 1024);
      const before = rssKiB(server.process.pid);
      for (let i = 0; i < 15; i++) {
        const socket = await connect(server.url, token, { transports: [transport] });
        const closed = new Promise((r) => socket.once("disconnect", r));
        socket.emit("chat:message", { sessionId: session.id, content: huge });
        const reason = await Promise.race([closed, sleep(10_000).then(() => "still open")]);
        assert.notEqual(reason, "still open");
        socket.close();
      }
      const after = rssKiB(server.process.pid);
      assert.ok(after - before < 40 * 1024, `server memory grew ${(after - before) / 1024} MiB`);
      assert.ok(bystander.connected, "another connection is unaffected");
      const ok = await ask(bystander, session.id, "What does Tokio do?");
      assert.equal(ok.terminal.name, "chat:stream:end");
      assert.equal((await api(server.url, token, "GET", `/api/sessions/${session.id}/messages`)).body.messages.length, 1);
      bystander.close();
    } finally {
      await server.stop();
    }
  });
}

test("50 messages in a second across three tabs: the burst passes, the rest are RATE_LIMITED and cost nothing", async () => {
  const server = await startServer({ env: { RATE_LIMIT_MESSAGES_PER_MINUTE: "20", RATE_LIMIT_BURST: "5" } });
  try {
    const token = await devToken(server.url, "alice");
    const sessions = [];
    for (let i = 0; i < 10; i++) sessions.push((await createSession(server.url, token, samplePost)).session);
    const tabs = await Promise.all([connect(server.url, token), connect(server.url, token), connect(server.url, token)]);
    const acks = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        request(tabs[i % 3], "chat:message", { sessionId: sessions[i % 10].id, content: `What does Tokio do? (${i})` }),
      ),
    );
    const accepted = acks.filter((a) => a.ok);
    const limited = acks.filter((a) => !a.ok && a.error.code === "RATE_LIMITED");
    // Within the burst, two messages may race for one session: one of them is then BUSY.
    const busy = acks.filter((a) => !a.ok && a.error.code === "BUSY");
    const passed = accepted.length + busy.length;
    assert.ok(passed >= 5 && passed <= 7, `passed the limit: ${passed}`);
    assert.equal(passed + limited.length, 50);
    assert.ok(limited.every((a) => a.error.retryAfterMs > 0));
    await sleep(500);
    let stored = 0;
    for (const s of sessions) stored += (await api(server.url, token, "GET", `/api/sessions/${s.id}/messages`)).body.messages.length;
    assert.equal(stored, accepted.length, "refused messages stored nothing");
    tabs.forEach((t) => t.close());
  } finally {
    await server.stop();
  }
});

test("a user holds at most MAX_SOCKETS_PER_USER sockets", async () => {
  const server = await startServer({ env: { MAX_SOCKETS_PER_USER: "3" } });
  try {
    const token = await devToken(server.url, "alice");
    const open = [await connect(server.url, token), await connect(server.url, token), await connect(server.url, token)];
    assert.equal(await outcome(server.url, token), "too many connections");
    const bob = await devToken(server.url, "bob");
    assert.equal(await outcome(server.url, bob), "connected", "other users are not affected");
    open.pop().close();
    await sleep(200);
    assert.equal(await outcome(server.url, token), "connected");
    open.forEach((s) => s.close());
  } finally {
    await server.stop();
  }
});

test("new connections per IP are limited with 429 and Retry-After", async () => {
  const server = await startServer({ env: { RATE_LIMIT_CONNECTIONS_PER_MINUTE: "60", RATE_LIMIT_CONNECTIONS_BURST: "3" } });
  try {
    const statuses = [];
    let last;
    for (let i = 0; i < 5; i++) {
      last = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`);
      statuses.push(last.status);
    }
    assert.deepEqual(statuses.slice(0, 3), [200, 200, 200]);
    assert.equal(statuses[4], 429);
    assert.ok(Number(last.headers.get("retry-after")) >= 1);
    const body = await last.json();
    assert.equal(body.error.code, "RATE_LIMITED");
    assert.ok(body.error.retryAfterMs > 0);
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200, "the rest of the API is not limited");
  } finally {
    await server.stop();
  }
});

test("once the daily token budget is spent, messages are RATE_LIMITED until midnight UTC", async () => {
  const server = await startServer({ env: { DAILY_TOKEN_BUDGET: "100" } });
  try {
    const token = await devToken(server.url, "alice");
    const { session } = await createSession(server.url, token, samplePost);
    const socket = await connect(server.url, token);
    const first = await ask(socket, session.id, "What does Tokio do?", { payload: { clientMessageId: "spent-1" } });
    assert.equal(first.terminal.name, "chat:stream:end");
    const second = await request(socket, "chat:message", { sessionId: session.id, content: "And then?" });
    assert.equal(second.error.code, "RATE_LIMITED");
    // A retry of the message already answered is still its duplicate, not refused.
    const retry = await request(socket, "chat:message", { sessionId: session.id, content: "What does Tokio do?", clientMessageId: "spent-1" });
    assert.deepEqual(retry, { ok: true, messageId: first.ack.messageId, duplicate: true });
    const untilMidnight = new Date().setUTCHours(24, 0, 0, 0) - Date.now();
    assert.ok(Math.abs(second.error.retryAfterMs - untilMidnight) < 5_000, `${second.error.retryAfterMs} vs ${untilMidnight}`);
    const joined = await request(socket, "chat:join", { sessionId: session.id });
    assert.equal(joined.ok, true, "reads are not charged");
    socket.close();
  } finally {
    await server.stop();
  }
});
