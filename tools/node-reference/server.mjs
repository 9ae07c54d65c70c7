// A Node.js socket.io 4.8 server with postchat's chat events, for the benchmark's side-by-side
// comparison (tests/bench.sh node; docs/benchmarks.md). What the load generator's `chat`
// scenario uses, done the way a Node.js team would write it in a day: HTTP `POST /api/posts` and
// `POST /api/sessions` with a bearer JWT (HS256), the socket authenticated by `auth.token`,
// `chat:message` validated, deduplicated by `clientMessageId`, one answer per session (`BUSY`),
// acked, then `chat:stream:start`, one `chat:stream:token` per word and `chat:stream:end` to the
// session's room, the exchange kept in memory (Node 20 has no SQLite of its own: this only
// flatters Node). The answer is the same offline one the Rust server's engine streams at full
// speed: a few sentences of the post, word by word, each word after a turn of the event loop
// (as an async model stream yields).
//
// PORT (default 3400) and JWT_SECRET from the environment. Not a product: no persistence,
// no limits, no shutdown beyond exiting.
import http from "node:http";
import crypto from "node:crypto";
import { Server } from "socket.io";

const port = Number(process.env.PORT ?? 3400);
const secret = process.env.JWT_SECRET ?? "";
const posts = new Map();
const sessions = new Map();

/** The user a HS256 JWT names (`sub`), or null when it is not valid now. */
function userOf(token) {
  const parts = String(token ?? "").split(".");
  if (parts.length !== 3) return null;
  const signature = crypto.createHmac("sha256", secret).update(`${parts[0]}.${parts[1]}`).digest("base64url");
  if (signature.length !== parts[2].length || !crypto.timingSafeEqual(Buffer.from(signature), Buffer.from(parts[2]))) {
    return null;
  }
  try {
    const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8"));
    if (typeof claims.exp === "number" && claims.exp * 1000 < Date.now()) return null;
    return typeof claims.sub === "string" ? claims.sub : null;
  } catch {
    return null;
  }
}

function reply(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

/** `POST /api/posts` and `POST /api/sessions`: what the load generator sets up with. */
function api(req, res) {
  const user = userOf((req.headers.authorization ?? "").replace(/^Bearer /, ""));
  if (!user) return reply(res, 401, { error: { code: "UNAUTHORIZED" } });
  let raw = "";
  req.on("data", (chunk) => (raw += chunk));
  req.on("end", () => {
    let body;
    try {
      body = JSON.parse(raw);
    } catch {
      return reply(res, 400, { error: { code: "INVALID_INPUT" } });
    }
    if (req.method === "POST" && req.url === "/api/posts") {
      const id = crypto.randomUUID();
      posts.set(id, { id, owner: user, title: String(body.title ?? ""), content: String(body.content ?? "") });
      return reply(res, 201, { id });
    }
    if (req.method === "POST" && req.url === "/api/sessions") {
      const post = posts.get(body.postId);
      if (!post || post.owner !== user) return reply(res, 404, { error: { code: "NOT_FOUND" } });
      const id = crypto.randomUUID();
      sessions.set(id, { id, owner: user, post, messages: [], byClientId: new Map(), answering: null });
      return reply(res, 201, { id, postId: post.id, title: String(body.title ?? "") });
    }
    reply(res, 404, { error: { code: "NOT_FOUND" } });
  });
}

/** The offline answer: the post's first sentences (37 words, as the Rust engine's for the bench). */
function answerTo(session) {
  return session.post.content.split(" ").slice(0, 37).join(" ");
}

const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

async function streamAnswer(io, session, message) {
  const room = `session:${session.id}`;
  const base = { sessionId: session.id, messageId: message.id };
  io.to(room).emit("chat:stream:start", { ...base, intent: "question" });
  const words = answerTo(session).split(/(?<= )/);
  let content = "";
  for (const [seq, token] of words.entries()) {
    await nextTurn();
    content += token;
    io.to(room).emit("chat:stream:token", { ...base, token, seq });
  }
  message.aiResponse = content;
  message.status = "complete";
  session.answering = null;
  io.to(room).emit("chat:stream:end", { ...base, content, stopped: false, cut: false });
}

function onMessage(io, socket, payload, ack) {
  if (typeof ack !== "function") return;
  const session = sessions.get(payload?.sessionId);
  if (!session || session.owner !== socket.data.user) return ack({ ok: false, error: { code: "NOT_FOUND" } });
  const content = payload.content;
  if (typeof content !== "string" || content.trim() === "" || content.length > 8000) {
    return ack({ ok: false, error: { code: "INVALID_INPUT", field: "content" } });
  }
  const key = payload.clientMessageId;
  const first = key === undefined ? undefined : session.byClientId.get(key);
  if (first) return ack({ ok: true, messageId: first.id, duplicate: true });
  if (session.answering) return ack({ ok: false, error: { code: "BUSY" } });
  const message = { id: crypto.randomUUID(), userMessage: content, status: "streaming", aiResponse: "" };
  session.messages.push(message);
  if (key !== undefined) session.byClientId.set(key, message);
  session.answering = message;
  socket.join(`session:${session.id}`);
  ack({ ok: true, messageId: message.id, duplicate: false });
  streamAnswer(io, session, message);
}

const server = http.createServer(api);
const io = new Server(server, { transports: ["websocket", "polling"], serveClient: false });
io.use((socket, next) => {
  const user = userOf(socket.handshake.auth?.token);
  if (!user) return next(new Error("UNAUTHORIZED"));
  socket.data.user = user;
  next();
});
io.on("connection", (socket) => {
  socket.on("chat:message", (payload, ack) => onMessage(io, socket, payload, ack));
});
server.listen(port, "127.0.0.1", () => console.log(`node reference listening on 127.0.0.1:${port}`));
