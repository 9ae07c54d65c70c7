// The postchat demo page: sign in, sessions, streamed answers with Stop, social post cards,
// preferences, every error code shown, resume after a reload or a reconnect, and branches:
// Regenerate under an answer, Edit on a message, ‹ n/m › between an exchange's siblings.
// Everything from the server is rendered as text (textContent), never as HTML.
"use strict";

const LIMITS = { twitter: 280, linkedin: 3000, threads: 500, bluesky: 300, mastodon: 500, facebook: 63206, instagram: 2200 };
const ERROR_TEXT = {
  UNAUTHORIZED: "Your sign-in is no longer valid: sign in again.",
  NOT_FOUND: "That session does not exist.",
  INVALID_INPUT: "That message was not accepted",
  RATE_LIMITED: "You are sending too fast",
  BUSY: "An answer is still being written for this session: wait for it or press Stop.",
  CONFLICT: "That message was already sent with other content.",
  AI_UNAVAILABLE: "The AI provider is unavailable right now. Try again shortly.",
  AI_TIMEOUT: "The AI provider took too long. Try again.",
  AI_ERROR: "The AI provider failed to answer. Try again.",
  STORAGE_UNAVAILABLE: "Storage is unavailable right now. Try again shortly.",
  SLOW_CONSUMER: "This connection fell behind; reconnecting to catch up.",
  SERVER_SHUTDOWN: "The server is restarting; your answer was saved as far as it got.",
  INTERNAL: "Something went wrong on the server.",
};

const $ = (id) => document.getElementById(id);
const saved = JSON.parse(localStorage.getItem("postchat") || "{}");
const state = { server: saved.server || location.origin, token: saved.token || null, sessionId: saved.sessionId || null, socket: null, answer: null, editing: null };
const persist = () => localStorage.setItem("postchat", JSON.stringify({ server: state.server, token: state.token, sessionId: state.sessionId }));

function showError(err) {
  const box = $("error");
  if (!err) { box.hidden = true; return; }
  let text = ERROR_TEXT[err.code] || err.message || String(err);
  if (err.code === "INVALID_INPUT") text += `: ${err.message}`;
  if (err.code === "RATE_LIMITED" && err.retryAfterMs) text += `: try again in ${Math.ceil(err.retryAfterMs / 1000)} s.`;
  box.textContent = text;
  box.dataset.code = err.code || "";
  box.hidden = false;
}

async function api(method, path, body) {
  const res = await fetch(state.server + path, {
    method,
    headers: { authorization: `Bearer ${state.token}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = res.status === 204 ? null : await res.json();
  if (!res.ok) throw json?.error ?? { message: `HTTP ${res.status}` };
  return json;
}

// ---- rendering ----

function bubble(role, text) {
  const li = document.createElement("li");
  li.className = `bubble ${role}`;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.append(body);
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function note(li, text) {
  const n = document.createElement("span");
  n.className = "note";
  n.textContent = text;
  li.append(n);
}

function cards(li, posts) {
  li.querySelector(".text").hidden = true; // the cards say it better than the streamed text
  const grid = document.createElement("div");
  grid.className = "cards";
  for (const post of posts) {
    const card = document.createElement("article");
    card.className = "card";
    card.dataset.platform = post.platform;
    const head = document.createElement("header");
    const name = document.createElement("strong");
    name.textContent = post.platform;
    const count = document.createElement("span");
    const limit = LIMITS[post.platform];
    count.className = `count${post.characterCount > limit ? " over" : ""}`;
    count.textContent = `${post.characterCount}/${limit}`;
    head.append(name, count);
    const body = document.createElement("div");
    body.className = "post-content";
    body.textContent = post.content;
    const copy = document.createElement("button");
    copy.type = "button";
    copy.textContent = "Copy";
    copy.onclick = () => navigator.clipboard?.writeText(post.content).then(() => (copy.textContent = "Copied"));
    card.append(head, body, copy);
    grid.append(card);
  }
  li.append(grid);
}

function renderMessage(m) {
  userBubble(m);
  const li = bubble("assistant", m.aiResponse);
  li.dataset.messageId = m.id;
  if (m.posts?.length) cards(li, m.posts);
  if (m.status !== "complete" && m.status !== "streaming") note(li, m.status);
  if (m.cut) note(li, CUT_NOTE);
  if (m.status !== "streaming") regenerateButton(li, m.id);
  return li;
}

// ---- branches ----

/** The user's message of exchange `m`, with Edit and, when it has siblings, ‹ n/m ›. */
function userBubble(m) {
  const li = bubble("user", m.userMessage);
  li.dataset.exchangeId = m.id;
  const tools = document.createElement("span");
  tools.className = "tools";
  if ((m.siblingCount ?? 1) > 1) {
    const pick = (step) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = step < 0 ? "sibling-prev" : "sibling-next";
      b.textContent = step < 0 ? "‹" : "›";
      const to = m.siblingIndex + step;
      b.disabled = to < 0 || to >= m.siblingCount;
      b.onclick = () => selectSibling(m, to).catch(showError);
      return b;
    };
    const at = document.createElement("span");
    at.className = "sibling-at";
    at.textContent = `${m.siblingIndex + 1}/${m.siblingCount}`;
    tools.append(pick(-1), at, pick(1));
  }
  const edit = document.createElement("button");
  edit.type = "button";
  edit.className = "edit";
  edit.textContent = "Edit";
  edit.onclick = () => startEditing(m);
  tools.append(edit);
  li.append(tools);
  return li;
}

function regenerateButton(li, messageId) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "regenerate";
  b.textContent = "Regenerate";
  b.onclick = () => regenerate(messageId).catch(showError);
  li.append(b);
}

/** Makes sibling number `index` of exchange `m` (same parent) the active branch. */
async function selectSibling(m, index) {
  const { messages } = await api("GET", `/api/sessions/${state.sessionId}/messages?all=true`);
  const siblings = messages.filter((x) => x.parentId === m.parentId);
  const target = siblings[index];
  if (!target) return;
  const ack = await state.socket.timeout(10_000).emitWithAck("chat:branch:select", { sessionId: state.sessionId, messageId: target.id });
  if (!ack.ok) return showError(ack.error);
  showError(null);
  showBranch(ack.messages, undefined);
}

async function regenerate(messageId) {
  showError(null);
  const clientMessageId = crypto.randomUUID?.() ?? String(Date.now());
  const ack = await state.socket.timeout(10_000).emitWithAck("chat:regenerate", { sessionId: state.sessionId, messageId, clientMessageId });
  if (!ack.ok) return showError(ack.error);
  // The new answer ends the active branch now: shown from the session (once, if the room's
  // chat:session:updated asked for it too).
  rejoin();
}

/** Joins the open session again to show it as it is now; once more after a join in flight. */
function rejoin() {
  if (!state.sessionId) return;
  if (state.joining) {
    state.rejoinAfter = true;
    return;
  }
  openSession(state.sessionId);
}

/** Edit: the message's text goes to the composer; Send makes a sibling of that exchange. */
function startEditing(m) {
  state.editing = { parentId: m.parentId ?? null };
  $("question").value = m.userMessage;
  $("editing").hidden = false;
  $("question").focus();
}

function stopEditing() {
  state.editing = null;
  $("editing").hidden = true;
}

function setBusy(busy) {
  $("stop").disabled = !busy;
  $("send").disabled = busy || !state.sessionId;
}

// ---- the answer being streamed ----

function startAnswer(messageId, content = "", seq = -1) {
  const li = document.querySelector(`[data-message-id="${messageId}"]`) || bubble("assistant", "");
  li.dataset.messageId = messageId;
  li.querySelector(".text").textContent = content;
  li.classList.add("streaming");
  // The tokens since the snapshot (`content` up to `seq`), kept apart: a `resumed` status may
  // take the last of them back.
  state.answer = { messageId, seq, li, base: content, baseSeq: seq, pieces: [] };
  setBusy(true);
}

function finishAnswer(payload, extra) {
  const answer = state.answer;
  if (!answer || answer.messageId !== payload.messageId) return;
  stopWaiting(answer);
  answer.li.classList.remove("streaming");
  answer.li.querySelector(".text").textContent = payload.content ?? answer.li.querySelector(".text").textContent;
  if (extra) extra(answer.li);
  if (!answer.li.querySelector(".regenerate")) regenerateButton(answer.li, answer.messageId);
  state.answer = null;
  setBusy(false);
}

function onToken(t) {
  const answer = state.answer;
  if (!answer || answer.messageId !== t.messageId) return;
  const first = t.seq - (t.count ?? 1) + 1;
  if (t.seq <= answer.seq) return; // already in the resumed text
  let token = t.token;
  if (first <= answer.seq) token = ""; // a coalesced event overlapping the snapshot: rare, resync at the end
  stopWaiting(answer);
  answer.li.querySelector(".text").textContent += token;
  answer.pieces.push([t.seq, token]);
  answer.seq = t.seq;
}

/** chat:stream:status resumed: another server continues the answer (its own stopped) from token
 * `seq`; what this page holds past it was never logged there and is written again. */
function onResumed(answer, s) {
  if (s.seq >= answer.seq) return;
  answer.pieces = answer.pieces.filter(([seq]) => seq <= s.seq);
  answer.seq = Math.max(s.seq, answer.baseSeq);
  answer.li.querySelector(".text").textContent = answer.base + answer.pieces.map(([, token]) => token).join("");
}

const CUT_NOTE = "cut short: the answer reached its length limit";

/** chat:stream:status: the provider is busy (a countdown until it is asked again), or it is
 * reading a long prompt (about how long is left). The first token ends either. */
function onStatus(s) {
  const answer = state.answer;
  if (answer?.messageId === s.messageId && s.state === "resumed") return onResumed(answer, s);
  if (!answer || answer.messageId !== s.messageId || !["waiting", "reading"].includes(s.state)) return;
  let waiting = answer.li.querySelector(".waiting");
  if (!waiting) {
    waiting = document.createElement("span");
    waiting.className = "note waiting";
    answer.li.append(waiting);
  }
  const until = Date.now() + (s.state === "reading" ? s.expectedMs : s.retryAfterMs);
  const tick = () => {
    const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
    waiting.textContent = s.state === "reading"
      ? `The model is reading your question (${s.promptTokens} tokens): about ${left} s left…`
      : `The AI provider is busy: asking again in ${left} s…`;
  };
  clearInterval(answer.countdown);
  tick();
  answer.countdown = setInterval(tick, 250);
}

function stopWaiting(answer) {
  clearInterval(answer.countdown);
  answer.li.querySelector(".waiting")?.remove();
}

// ---- socket ----

function connect() {
  state.socket?.close();
  const socket = io(state.server, { auth: { token: state.token } });
  state.socket = socket;
  socket.on("connect", () => {
    $("status").textContent = "connected";
    if (state.sessionId) openSession(state.sessionId);
  });
  socket.on("disconnect", (reason) => {
    $("status").textContent = `disconnected (${reason})`;
    if (reason === "io server disconnect") setTimeout(() => socket.connect(), 500); // e.g. slow consumer
  });
  socket.on("connect_error", (err) => {
    $("status").textContent = `cannot connect: ${err.message}`;
    if (err.message === "unauthorized") showError({ code: "UNAUTHORIZED" });
  });
  // While a chat:join is unanswered, the stream's events wait: the socket is in the room as
  // soon as the snapshot is taken, so live events may come before the ack, and they follow it.
  const live = (handler) => (payload) => (state.joining ? state.joining.push(() => handler(payload)) : handler(payload));
  socket.on("chat:stream:start", live((p) => p.sessionId === state.sessionId && startAnswer(p.messageId)));
  socket.on("chat:stream:token", live(onToken));
  socket.on("chat:stream:status", live(onStatus));
  socket.on("chat:stream:end", live((p) => finishAnswer(p, (li) => {
    if (p.stopped) note(li, "stopped");
    if (p.cut) note(li, CUT_NOTE);
  })));
  socket.on("chat:social:generated", live((p) => finishAnswer(p, (li) => cards(li, p.posts))));
  socket.on("chat:error", live((e) => {
    if (e.messageId) finishAnswer({ messageId: e.messageId }, (li) => note(li, `error: ${e.code}`));
    showError(e);
  }));
  socket.on("chat:session:updated", (p) => {
    if (p.sessionId === state.sessionId && p.title) $("session-title").textContent = p.title;
    // Another tab (or this one) made or selected a branch: shown as the session has it now.
    if (p.sessionId === state.sessionId && p.activeMessageId) rejoin();
    loadSessions();
  });
}

/** The user a JWT speaks for (its `sub`), or null when it cannot be read. */
function tokenUser(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).sub ?? null;
  } catch {
    return null;
  }
}

async function signedIn(token) {
  state.token = token;
  persist();
  // After a reload too, the user field says who is signed in.
  $("user").value = tokenUser(token) ?? $("user").value;
  showError(null);
  $("status").textContent = "connecting…";
  connect();
  await Promise.all([loadSessions(), loadPreferences()]);
}

// ---- sessions ----

async function loadSessions() {
  const { sessions } = await api("GET", "/api/sessions");
  const list = $("sessions");
  list.replaceChildren();
  for (const s of sessions) {
    const li = document.createElement("li");
    // Until its first exchange names it, a session goes by its post's title.
    li.textContent = s.title || "…";
    if (!s.title) api("GET", `/api/posts/${s.postId}`).then((post) => (li.textContent = post.title), () => (li.textContent = "Untitled session"));
    li.dataset.sessionId = s.id;
    li.classList.toggle("active", s.id === state.sessionId);
    li.onclick = () => openSession(s.id);
    list.append(li);
  }
}

async function openSession(sessionId) {
  if (sessionId !== state.sessionId) stopEditing();
  state.sessionId = sessionId;
  persist();
  const joining = (state.joining = []);
  let ack;
  try {
    ack = await state.socket.timeout(10_000).emitWithAck("chat:join", { sessionId });
  } catch (err) {
    ack = { ok: false, error: { code: "TIMEOUT", message: err.message } };
  }
  if (state.joining !== joining) {
    // Another join started meanwhile (a click, a reconnect): its ack is the one shown.
    joining.forEach((replay) => replay());
    return;
  }
  state.joining = null;
  showJoined(sessionId, ack);
  // The events that came before the ack, after its snapshot (tokens it holds are skipped by seq).
  joining.forEach((replay) => replay());
  if (state.rejoinAfter) {
    // The session changed while it was being joined: joined again.
    state.rejoinAfter = false;
    rejoin();
  }
}

function showJoined(sessionId, ack) {
  if (!ack.ok) {
    showError(ack.error);
    // A session that is gone (or not the user's) is closed; one that could not be joined this
    // time (rate-limited, too slow) stays open, as shown.
    if (["NOT_FOUND", "UNAUTHORIZED"].includes(ack.error?.code)) {
      state.sessionId = null;
      persist();
    }
    return;
  }
  $("session-title").textContent = ack.session.title || ack.session.post.title;
  showBranch(ack.messages, ack.inFlight);
  $("question").disabled = false;
  document.querySelectorAll("#sessions li").forEach((li) => li.classList.toggle("active", li.dataset.sessionId === sessionId));
}

/** Shows a branch's messages; `inFlight` (from a join) is the answer being written (null:
 * none), `undefined` when not known (a selection's ack: the answer this page follows goes on). */
function showBranch(messages, inFlight) {
  $("messages").replaceChildren();
  const streaming = state.answer;
  state.answer = null;
  for (const m of messages) {
    if (inFlight && m.id === inFlight.messageId) {
      // The answer in flight: its text so far, then the live tokens after its seq.
      userBubble(m);
      startAnswer(m.id, inFlight.content, inFlight.seq);
    } else if (inFlight === undefined && streaming?.messageId === m.id) {
      // Still being written (a branch selected meanwhile): it goes on from where it was.
      userBubble(m);
      $("messages").append(streaming.li);
      state.answer = streaming;
    } else {
      renderMessage(m);
    }
  }
  if (!state.answer && inFlight) {
    // Written on a branch not shown: followed out of sight, so Stop stays on for it.
    startAnswer(inFlight.messageId, inFlight.content, inFlight.seq);
    state.answer.li.remove();
  } else if (!state.answer && streaming && inFlight === undefined) {
    state.answer = streaming;
    streaming.li.remove();
  }
  setBusy(Boolean(state.answer));
}

// ---- preferences ----

async function loadPreferences() {
  const prefs = await api("GET", "/api/preferences");
  $("pref-voice").value = prefs.voice;
  $("pref-style").value = prefs.style;
  $("pref-hashtags").checked = prefs.hashtags;
  $("pref-emoji").checked = prefs.emoji;
  const box = $("pref-platforms");
  box.querySelectorAll("label").forEach((l) => l.remove());
  for (const platform of Object.keys(LIMITS)) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.value = platform;
    input.checked = prefs.platforms.includes(platform);
    label.append(input, ` ${platform}`);
    box.append(label);
  }
}

// ---- wiring ----

$("server").value = state.server;
$("signin").onsubmit = async (e) => {
  e.preventDefault();
  state.server = $("server").value.replace(/\/$/, "") || location.origin;
  try {
    const res = await fetch(`${state.server}/dev/token`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ user: $("user").value }) });
    if (!res.ok) throw (await res.json().catch(() => null))?.error ?? { message: "dev sign-in is only available in dev mode: paste a JWT" };
    await signedIn((await res.json()).token);
  } catch (err) {
    showError(err);
  }
};
$("use-jwt").onclick = () => {
  state.server = $("server").value.replace(/\/$/, "") || location.origin;
  signedIn($("jwt").value.trim()).catch(showError);
};
$("new-session").onsubmit = async (e) => {
  e.preventDefault();
  try {
    const body = { url: $("post-url").value.trim() };
    if ($("post-title").value.trim()) body.title = $("post-title").value.trim();
    if ($("post-text").value.trim()) body.content = $("post-text").value.trim();
    const post = await api("POST", "/api/posts", body);
    const session = await api("POST", "/api/sessions", { postId: post.id });
    e.target.reset();
    await loadSessions();
    await openSession(session.id);
  } catch (err) {
    showError(err);
  }
};
$("composer").onsubmit = async (e) => {
  e.preventDefault();
  const content = $("question").value.trim();
  if (!content || !state.sessionId) return;
  showError(null);
  // The question shows at once; the answer's bubble comes with chat:stream:start.
  const mine = state.editing ? null : bubble("user", content);
  const clientMessageId = crypto.randomUUID?.() ?? String(Date.now());
  const message = { sessionId: state.sessionId, content, clientMessageId };
  const editing = state.editing;
  if (editing) message.parentId = editing.parentId;
  const ack = await state.socket.timeout(10_000).emitWithAck("chat:message", message);
  if (!ack.ok) {
    mine?.remove();
    return showError(ack.error);
  }
  $("question").value = "";
  if (editing) {
    // The edit is a new branch, active now: shown from the session.
    stopEditing();
    return rejoin();
  }
  if (!state.answer || state.answer.messageId !== ack.messageId) startAnswer(ack.messageId);
};
// Enter sends; Shift+Enter breaks the line (and an IME's Enter completes its word).
$("question").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").onclick = () => state.socket.emit("chat:stop", { sessionId: state.sessionId });
$("cancel-edit").onclick = () => {
  stopEditing();
  $("question").value = "";
};
$("preferences").onsubmit = async (e) => {
  e.preventDefault();
  const platforms = [...$("pref-platforms").querySelectorAll("input:checked")].map((i) => i.value);
  try {
    await api("PUT", "/api/preferences", { voice: $("pref-voice").value, style: $("pref-style").value, platforms, hashtags: $("pref-hashtags").checked, emoji: $("pref-emoji").checked });
    showError(null);
  } catch (err) {
    showError(err);
  }
};
if (state.token) signedIn(state.token).catch(showError);
