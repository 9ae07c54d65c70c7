// socket.io-client 2.x (Engine.IO v3) completes the question flow, with its token in the query.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { createSession } from "../lib/client.mjs";
import { useServer, samplePost, upgraded } from "./helpers/server.mjs";

const ioV2 = createRequire(import.meta.url)("socket.io-client-v2");

const ctx = useServer();

for (const transports of [["websocket"], ["polling", "websocket"]]) {
  test(`a 2.x client over ${transports.join("+")} asks a question and gets the streamed answer`, async () => {
    const { session } = await createSession(ctx.url, ctx.token, samplePost);
    const socket = ioV2(ctx.url, { query: { token: ctx.token }, transports, reconnection: false, forceNew: true });
    try {
      await new Promise((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("error", reject);
        socket.once("connect_error", reject);
      });
      if (transports.length > 1) {
        assert.equal(await upgraded(socket.io.engine), "websocket");
      }
      const tokens = [];
      socket.on("chat:stream:token", (t) => tokens.push(t));
      const ended = new Promise((r) => socket.once("chat:stream:end", r));
      const ack = await new Promise((r) => socket.emit("chat:message", { sessionId: session.id, content: "What does Tokio do?" }, r));
      assert.equal(ack.ok, true);
      const end = await ended;
      assert.equal(end.messageId, ack.messageId);
      assert.deepEqual(tokens.map((t) => t.seq), tokens.map((_, i) => i));
      assert.equal(end.content, tokens.map((t) => t.token).join(""));
      assert.match(end.content, /Tokio/);
    } finally {
      socket.close();
    }
  });
}

test("a 2.x client with a bad token is refused", async () => {
  const socket = ioV2(ctx.url, { query: { token: "bad" }, transports: ["websocket"], reconnection: false, forceNew: true });
  const message = await new Promise((resolve) => {
    socket.once("connect", () => resolve("connected"));
    socket.once("error", (e) => resolve(typeof e === "string" ? e : e?.message));
  });
  socket.close();
  assert.equal(message, "unauthorized");
});
