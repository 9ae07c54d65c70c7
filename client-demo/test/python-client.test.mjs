// python-socketio, as Python users connect: its websocket client sends the server's own
// origin (`Origin: http://host:port`), which a production server (JWT_SECRET set,
// CORS_ORIGINS unset: no cross-origin browser allowed) must accept as same-origin.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createSession } from "../lib/client.mjs";
import { startServer, samplePost } from "./helpers/server.mjs";
import { sign, now } from "./helpers/jwt.mjs";
import { runPython } from "./helpers/python.mjs";

const secret = "python-client-test-secret-0123456789abcdef";

for (const transport of ["websocket", "polling"]) {
  test(`python-socketio over ${transport} connects to a production server and gets its answer`, async () => {
    const server = await startServer({ env: { JWT_SECRET: secret } });
    try {
      const token = sign({ sub: "alice", exp: now() + 600 }, { key: secret });
      const { session } = await createSession(server.url, token, samplePost);
      const result = runPython("chat_client.py", [server.url, token, session.id, transport]);
      assert.equal(result.error, null, JSON.stringify(result));
      assert.equal(result.connected, true);
      assert.equal(result.transport, transport);
      assert.equal(result.ack.ok, true);
      assert.ok(result.tokens.length > 0);
      assert.equal(result.final, result.tokens.join(""));
    } finally {
      await server.stop();
    }
  });
}

test("a cross-origin websocket is still refused without CORS_ORIGINS", async () => {
  const server = await startServer({ env: { JWT_SECRET: secret } });
  try {
    const { host } = new URL(server.url);
    const upgrade = (origin) =>
      fetch(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { origin } }).then((r) => r.status);
    assert.equal(await upgrade("https://evil.example"), 403);
    assert.equal(await upgrade(`http://${host}`), 200, "the server's own origin");
  } finally {
    await server.stop();
  }
});
