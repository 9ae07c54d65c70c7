// Cluster mode behind a real balancer (Debian's HAProxy, installed by tests/run-all.sh): two
// processes, clients that only know the balancer's address (a websocket client and a
// long-polling one, kept on its process by HAProxy's cookie), and a rolling restart of the
// process generating an answer: both clients reconnect through the balancer on their own,
// join again, and get the rest of the answer seq-exact; the answer is stored complete.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import http from "node:http";
import { io } from "socket.io-client";
import { api, createSession } from "../lib/client.mjs";
import { samplePost } from "./helpers/server.mjs";
import { freePort, startProcesses } from "./helpers/processes.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const question = "How does Rust keep idle connections cheap and what does Tokio do?";

function haproxyBinary() {
  for (const candidate of ["/usr/sbin/haproxy", "/usr/bin/haproxy"]) {
    try {
      execFileSync(candidate, ["-v"], { stdio: "pipe" });
      return candidate;
    } catch {}
  }
  return null;
}

/** HAProxy in front of `servers`: websocket upgrades tunnelled, long-polling kept on its
 * process by a cookie HAProxy inserts (the server sets none), processes checked on /readyz so
 * a draining one is taken out. docker/haproxy.cfg is the same setup for the compose stack. */
async function startHaproxy(binary, servers, { serverOptions = "", backendOptions = "" } = {}) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), "postchat-haproxy-"));
  const backends = servers
    .map((s, i) => `  server s${i} ${new URL(s.url).host} check cookie s${i} ${serverOptions}`)
    .join("\n");
  const config = `
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
  option redispatch
  retries 3
frontend web
  bind 127.0.0.1:${port}
  default_backend postchat
backend postchat
  balance roundrobin
  cookie SERVERID insert indirect nocache
  option httpchk GET /readyz
  default-server inter 300ms fall 1 rise 2
${backendOptions}
${backends}
`;
  const file = path.join(dir, "haproxy.cfg");
  writeFileSync(file, config);
  const child = spawn(binary, ["-db", "-f", file], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${url}/readyz`)).status === 200) break;
    } catch {}
    if (i > 100) throw new Error(`haproxy did not start:\n${output}`);
    await sleep(100);
  }
  return {
    url,
    logs: () => output,
    async stop() {
      child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A client that joins the session on every (re)connect and records what each join and the
 * tokens after it say. */
function watchingClient(url, token, sessionId, options) {
  const socket = io(url, { auth: { token }, forceNew: true, reconnectionDelay: 200, reconnectionDelayMax: 500, ...options });
  const joins = []; // { inFlight, tokens: [], end }
  let ended;
  const end = new Promise((resolve) => (ended = resolve));
  socket.on("connect", () => {
    // Live tokens may arrive before the ack (the socket is in the room once the snapshot is
    // taken): they belong to this join, after its snapshot.
    const join = { ack: null, tokens: [], transport: socket.io.engine.transport.name };
    socket.emit("chat:join", { sessionId }, (ack) => {
      join.ack = ack;
      joins.push(join);
    });
    pending = join;
  });
  let pending = null;
  socket.on("chat:stream:token", (t) => pending?.tokens.push(t));
  socket.on("chat:stream:end", (e) => ended(e));
  socket.on("chat:error", (e) => ended({ error: e }));
  return { socket, joins, end };
}

async function answersInFlight(server) {
  try {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    return Number(text.match(/^postchat_answers_in_flight (\S+)$/m)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

test("through HAProxy: a rolling restart mid-answer loses nothing for websocket and long-polling clients", async (t) => {
  const binary = haproxyBinary();
  if (!binary) {
    if (process.env.CI === "true") throw new Error("haproxy missing in CI (tests/run-all.sh installs it)");
    return t.skip("haproxy not installed");
  }
  const cluster = await startProcesses(2, { env: { LOCAL_AI_PACING_MS: "80", SHUTDOWN_GRACE_SECS: "60" } });
  if (!cluster) return t.skip("PostgreSQL unreachable");
  const balancer = await startHaproxy(binary, cluster.servers);
  const clients = [];
  try {
    const token = cluster.token("alice");
    const { session } = await createSession(balancer.url, token, samplePost);
    const ws = watchingClient(balancer.url, token, session.id, { transports: ["websocket"] });
    const polling = watchingClient(balancer.url, token, session.id, { transports: ["polling"], withCredentials: true });
    clients.push(ws, polling);
    while (ws.joins.length === 0 || polling.joins.length === 0) await sleep(50);
    const ack = await ws.socket.timeout(5000).emitWithAck("chat:message", { sessionId: session.id, content: question });
    assert.equal(ack.ok, true);
    while (polling.joins[0].tokens.length < 5) await sleep(50);

    // Deploy: the process generating the answer is told to stop.
    const generating = [];
    for (const s of cluster.servers) if ((await answersInFlight(s)) > 0) generating.push(s);
    assert.equal(generating.length, 1, "one process generates the answer");
    const exited = generating[0].stop();

    const [wsEnd, pollingEnd] = await Promise.all([ws.end, polling.end]);
    assert.deepEqual(await exited, { code: 0, signal: null }, "the drained process exits cleanly");
    const stored = (await api(balancer.url, token, "GET", `/api/sessions/${session.id}/messages`)).body.messages.at(-1);
    assert.equal(stored.status, "complete");
    for (const [name, client, end] of [["websocket", ws, wsEnd], ["polling", polling, pollingEnd]]) {
      assert.equal(end.content, stored.aiResponse, `${name}: the whole answer`);
      // Every join's snapshot and the tokens after it add up to the answer, seq-exact.
      for (const [i, join] of client.joins.entries()) {
        const inFlight = join.ack.inFlight;
        let next = inFlight ? inFlight.seq + 1 : 0;
        let text = inFlight ? inFlight.content : "";
        for (const tk of join.tokens) {
          assert.equal(tk.seq - (tk.count ?? 1) + 1, next, `${name}, join ${i}: no gap, no double`);
          next = tk.seq + 1;
          text += tk.token;
        }
        assert.ok(stored.aiResponse.startsWith(text), `${name}, join ${i}: a prefix of the answer`);
      }
    }
    const moved = [ws, polling].filter((c) => c.joins.length > 1);
    assert.ok(moved.length >= 1, "a client was moved to the other process and resumed there");
    assert.equal(polling.joins.at(-1).transport, "polling", "long-polling worked through the balancer");
  } finally {
    clients.forEach((c) => c.socket.close());
    await balancer.stop();
    await cluster.stop();
  }
});

/** A new Engine.IO handshake sent from `localAddress` (any 127.x address is this machine);
 * resolves to its HTTP status. */
function handshakeFrom(url, localAddress) {
  return new Promise((resolve, reject) => {
    const req = http.get(`${url}/socket.io/?EIO=4&transport=polling`, { localAddress, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.setTimeout(5000, () => req.destroy(new Error("handshake timed out")));
    req.on("error", reject);
  });
}

/** A websocket client connecting from `localAddress`; resolves to "connected" or its error. */
function connectFrom(url, token, localAddress) {
  const socket = io(url, { auth: { token }, forceNew: true, reconnection: false, transports: ["websocket"], localAddress });
  return new Promise((resolve) => {
    socket.on("connect", () => resolve("connected"));
    socket.on("connect_error", (e) => resolve(`connect_error: ${e.message} ${e.description ?? ""}`));
  }).finally(() => socket.close());
}

for (const [name, haproxyOptions] of [
  ["a PROXY protocol v2 header", { serverOptions: "send-proxy-v2" }],
  ["X-Forwarded-For", { backendOptions: "  option forwardfor" }],
]) {
  test(`through HAProxy (${name}): one address's flood of handshakes refuses that address only`, async (t) => {
    const binary = haproxyBinary();
    if (!binary) {
      if (process.env.CI === "true") throw new Error("haproxy missing in CI (tests/run-all.sh installs it)");
      return t.skip("haproxy not installed");
    }
    // HAProxy reaches the processes from 127.0.0.1, the one trusted proxy.
    const cluster = await startProcesses(2, { env: { TRUSTED_PROXIES: "127.0.0.1", RATE_LIMIT_CONNECTIONS_PER_MINUTE: "120", RATE_LIMIT_CONNECTIONS_BURST: "10" } });
    if (!cluster) return t.skip("PostgreSQL unreachable");
    const balancer = await startHaproxy(binary, cluster.servers, haproxyOptions);
    try {
      const flood = [];
      for (let i = 0; i < 30; i++) flood.push(await handshakeFrom(balancer.url, "127.0.0.5"));
      assert.ok(flood.includes(429), `the flooding address is refused in the end: ${flood}`);
      const victims = [];
      for (const address of ["127.0.0.6", "127.0.0.7", "127.0.0.8"]) {
        victims.push(await connectFrom(balancer.url, cluster.token(`victim${address}`), address));
      }
      assert.deepEqual(victims, ["connected", "connected", "connected"], "other addresses connect through the same balancer");
      assert.equal(await handshakeFrom(balancer.url, "127.0.0.9"), 200);
    } finally {
      await balancer.stop();
      await cluster.stop();
    }
  });
}
