// Engine.IO's heartbeat (PING_INTERVAL_MS, PING_TIMEOUT_MS), on a raw websocket so the test
// decides when to answer: a client that answers every ping stays connected; one that stops
// answering is closed once a ping goes unanswered past the timeout.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { devToken } from "../lib/client.mjs";
import { startServer } from "./helpers/server.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** An Engine.IO v4 websocket joined to the default namespace, answering pings while
 * `answering()` says so: { open (the handshake's open packet), pings (a count), closedAt }. */
async function rawSocket(url, token, answering) {
  const ws = new WebSocket(`${url.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket&token=${token}`);
  const state = { open: null, pings: 0, closedAt: null, connected: false, ws };
  ws.on("message", (data) => {
    const text = data.toString();
    if (text.startsWith("0")) {
      state.open = JSON.parse(text.slice(1));
      ws.send("40");
    } else if (text.startsWith("40")) {
      state.connected = true;
    } else if (text === "2") {
      state.pings += 1;
      if (answering()) ws.send("3");
    }
  });
  ws.on("close", () => (state.closedAt = Date.now()));
  await new Promise((resolve, reject) => (ws.once("open", resolve), ws.once("error", reject)));
  return state;
}

test("a client that answers pings stays connected; one that stops is closed after the ping timeout", async () => {
  const server = await startServer({ env: { PING_INTERVAL_MS: "300", PING_TIMEOUT_MS: "1000" } });
  try {
    const token = await devToken(server.url, "alice");
    let answering = true;
    const [steady, silent] = await Promise.all([
      rawSocket(server.url, token, () => true),
      rawSocket(server.url, token, () => answering),
    ]);
    await sleep(1_500);
    assert.deepEqual(steady.open && [steady.open.pingInterval, steady.open.pingTimeout], [300, 1000]);
    assert.ok(steady.connected && silent.connected, "both joined the namespace");
    assert.ok(steady.pings >= 3 && silent.pings >= 3, `pinged every 300 ms: ${steady.pings}, ${silent.pings}`);
    assert.equal(silent.closedAt, null, "answering, it stays");
    answering = false;
    const stopped = Date.now();
    await sleep(3_500);
    assert.ok(silent.closedAt !== null, "closed once a ping went unanswered");
    // The next ping within 300 ms, then 1 s for its pong: closed about 1.3 s after.
    const after = silent.closedAt - stopped;
    assert.ok(after >= 900 && after <= 3_000, `closed ${after} ms after it stopped answering`);
    assert.equal(steady.closedAt, null, "the client that answers is still connected");
    steady.ws.close();
  } finally {
    await server.stop();
  }
});
