// Small helpers over the postchat protocol (docs/protocol.md), shared by the demo and the tests.
import { io } from "socket.io-client";

/** A token from the dev-mode route (dev mode only). */
export async function devToken(baseUrl, user) {
  const res = await fetch(`${baseUrl}/dev/token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user }),
  });
  if (!res.ok) throw new Error(`dev token: HTTP ${res.status} (is the server in dev mode?)`);
  return (await res.json()).token;
}

/** Calls the HTTP API; resolves to { status, body }. */
export async function api(baseUrl, token, method, path, body) {
  const res = await fetch(`${baseUrl}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** Creates a post and a session about it; resolves to { post, session }. */
export async function createSession(baseUrl, token, post) {
  const created = await api(baseUrl, token, "POST", "/api/posts", post);
  if (created.status !== 201) throw new Error(`create post: ${JSON.stringify(created)}`);
  const session = await api(baseUrl, token, "POST", "/api/sessions", { postId: created.body.id });
  if (session.status !== 201) throw new Error(`create session: ${JSON.stringify(session)}`);
  return { post: created.body, session: session.body };
}

/** Connects a socket.io-client 4.x socket; resolves once connected, rejects on connect_error. */
export function connect(baseUrl, token, options = {}) {
  const socket = io(baseUrl, { auth: { token }, reconnection: false, forceNew: true, ...options });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", (err) => {
      socket.close();
      reject(err);
    });
  });
}

/** Emits with an ack; resolves to the ack. */
export function request(socket, event, payload, timeoutMs = 10_000) {
  return socket.timeout(timeoutMs).emitWithAck(event, payload);
}

const TERMINAL = ["chat:stream:end", "chat:social:generated", "chat:error"];

/**
 * Records every stream event of one answer (matched by messageId once known) until its terminal
 * event. `onToken` sees each token as it arrives.
 */
export function collectAnswer(socket, { onToken, awaitId = false } = {}) {
  const events = [];
  let messageId = null;
  // With `awaitId`, events before the answer's id is known wait, then only its own count (the
  // socket may be in the room already, getting the end of an earlier answer meanwhile).
  let early = awaitId ? [] : null;
  let done;
  const finished = new Promise((resolve) => (done = resolve));
  const names = ["chat:stream:start", "chat:stream:token", "chat:stream:status", ...TERMINAL];
  const handlers = names.map((name) => {
    const handler = (payload) => {
      if (early && !messageId) return early.push([handler, payload]);
      if (messageId && payload.messageId && payload.messageId !== messageId) return;
      if (name === "chat:error" && !payload.messageId) return; // not about this answer
      events.push({ name, payload });
      if (name === "chat:stream:token" && onToken) onToken(payload.token);
      if (TERMINAL.includes(name)) {
        names.forEach((n, i) => socket.off(n, handlers[i]));
        done(events);
      }
    };
    socket.on(name, handler);
    return handler;
  });
  return {
    events,
    /** Stops collecting (the answer will not come: its message was refused). */
    cancel: () => names.forEach((n, i) => socket.off(n, handlers[i])),
    setMessageId: (id) => {
      messageId = id;
      const waited = early ?? [];
      early = null;
      waited.forEach(([handler, payload]) => handler(payload));
    },
    finished,
  };
}

/** Sends a chat message and waits for its whole answer: { ack, events, terminal, tokens }. */
export async function ask(socket, sessionId, content, extra = {}) {
  return answerTo(socket, "chat:message", { sessionId, content, ...extra.payload }, extra);
}

/** Asks for exchange `messageId`'s answer again (chat:regenerate: a sibling of it) and waits for
 * the whole new answer, as `ask`. */
export async function regenerate(socket, sessionId, messageId, extra = {}) {
  return answerTo(socket, "chat:regenerate", { sessionId, messageId, ...extra.payload }, extra);
}

async function answerTo(socket, event, payload, extra) {
  const answer = collectAnswer(socket, { ...extra, awaitId: true });
  let ack;
  try {
    ack = await request(socket, event, payload);
  } finally {
    if (!ack?.ok) answer.cancel();
  }
  if (!ack.ok) return { ack, events: [], terminal: null, tokens: [] };
  answer.setMessageId(ack.messageId);
  const events = await answer.finished;
  return {
    ack,
    events,
    terminal: events[events.length - 1],
    tokens: events.filter((e) => e.name === "chat:stream:token").map((e) => e.payload),
  };
}
