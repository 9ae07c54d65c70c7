//! One handler per client event. Each parses its payload (a malformed one gets INVALID_INPUT
//! and the socket stays usable), calls the chat controller, and returns its ack or the error;
//! `register` turns that `Result` into the ack and, for errors, also a `chat:error` (frontends
//! may not use acks).

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use tracing::{debug, warn, Instrument};

use super::connect::TokenExpiry;
use super::events::{self, BranchAck, ErrorAck, ErrorPayload, JoinReply, MessageAck, OkAck, StopAck};
use super::SocketState;
use crate::chat::{ChatError, Regenerate, SendMessage};
use crate::domain::{InvalidInput, SessionId, UserId};
use crate::telemetry::Untrusted;

/// An error for the client, with the session it concerns when known.
struct Failure {
    error: ChatError,
    session_id: Option<SessionId>,
}

impl Failure {
    fn new(error: impl Into<ChatError>, session_id: Option<SessionId>) -> Self {
        Self { error: error.into(), session_id }
    }
}

/// `socket.on(event, …)` with the payload as a JSON value (`None` when it is not JSON) and the
/// shared state: `EVENT => reply handler` runs [`reply`] with `handler`, `EVENT => ask parse`
/// runs [`ask`] with `parse`; the last form runs `$run(state, socket, payload, ack)`.
macro_rules! on_event {
    ($socket:expr, $state:expr, $event:expr => reply $handler:path) => {
        on_event!($socket, $state, $event, |state, s, data, ack| reply(
            $event, &state, s, data, ack, $handler
        ))
    };
    ($socket:expr, $state:expr, $event:expr => ask $parse:path) => {
        on_event!($socket, $state, $event, |state, s, data, ack| ask($event, $parse, &state, s, data, ack))
    };
    ($socket:expr, $state:expr, $event:expr, |$st:ident, $s:ident, $data:ident, $ack:ident| $run:expr) => {{
        let shared = $state.clone();
        $socket.on($event, move |$s: SocketRef, TryData(payload): TryData<Value>, $ack: AckSender| {
            let $st = shared.clone();
            let $data = payload.ok();
            async move { $run.await }
        });
    }};
}

/// Registers the chat events on a newly connected socket, one handler per event (the router:
/// event → auth and limits → payload parsed into its domain type → controller), and a fallback
/// that answers any other event `INVALID_INPUT`. Payloads arrive as JSON values and are parsed
/// by `events::parse_*` into typed requests, so a malformed one is `INVALID_INPUT` naming the
/// field at fault and the handler still runs (`Data<T>` would skip it; serde's own messages
/// name no field the contract knows).
pub fn register(socket: SocketRef, state: Arc<SocketState>, user: &UserId) {
    debug!(sid = %socket.id, user_id = %Untrusted(user.as_str()), "socket connected");
    metrics::gauge!("postchat_sockets_connected").increment(1.0);
    let closing = state.clone();
    socket.on_disconnect(move |s: SocketRef| {
        let closing = closing.clone();
        async move {
            metrics::gauge!("postchat_sockets_connected").decrement(1.0);
            if let Some(user) = s.extensions.get::<UserId>() {
                closing.sockets_per_user.close_socket(&user, &s.id.to_string()).await;
            }
            if let Some(TokenExpiry(at)) = s.extensions.get::<TokenExpiry>() {
                closing.token_expiries.forget(s.id, at);
            }
        }
    });
    on_event!(socket, state, events::CHAT_MESSAGE => ask Ask::message);
    on_event!(socket, state, events::CHAT_REGENERATE => ask Ask::regenerate);
    on_event!(socket, state, events::BRANCH_SELECT => reply branch_select);
    on_event!(socket, state, events::CHAT_STOP => reply chat_stop);
    on_event!(socket, state, events::CHAT_JOIN => reply chat_join);
    on_event!(socket, state, events::CHAT_LEAVE => reply chat_leave);
    socket.on_fallback(|s: SocketRef, Event(name): Event, ack: AckSender| async move {
        unknown_event(s, &name, ack)
    });
}

/// Runs `handler(state, socket, user, payload)` for `event` and acks its result (an error is
/// also sent as `chat:error`). `chat:message` acks by itself, before its answer starts.
async fn reply<R: Serialize>(
    event: &'static str,
    state: &SocketState,
    s: SocketRef,
    data: Option<Value>,
    ack: AckSender,
    handler: impl AsyncFnOnce(&SocketState, &SocketRef, UserId, Option<Value>) -> Result<R, Failure>,
) {
    metrics::counter!("postchat_events_received_total", "event" => event).increment(1);
    let Some(user) = authenticated(&s) else { return refuse(s, ack) };
    let span = tracing::info_span!(
        "event",
        name = event,
        sid = %s.id,
        user_id = %Untrusted(user.as_str()),
        session_id = tracing::field::Empty
    );
    if let Some(session_id) = session_hint(data.as_ref()) {
        span.record("session_id", tracing::field::display(session_id));
    }
    match handler(state, &s, user, data).instrument(span).await {
        Ok(reply) => send_ack(ack, &reply),
        Err(failure) => reply_error(&s, ack, failure),
    }
}

fn unknown_event(s: SocketRef, name: &str, ack: AckSender) {
    metrics::counter!("postchat_events_received_total", "event" => "unknown").increment(1);
    if authenticated(&s).is_none() {
        return refuse(s, ack);
    }
    let unknown = InvalidInput::new("event", format!("unknown event {name:?}"));
    reply_error(&s, ack, Failure::new(unknown, None));
}

/// What a client asks an answer for.
enum Ask {
    /// `chat:message`.
    Message(SendMessage),
    /// `chat:regenerate`.
    Regenerate(Regenerate),
}

/// Parses an event's payload into what it asks (given `MAX_MESSAGE_CHARS`).
type ParseAsk = fn(Option<Value>, usize) -> Result<Ask, InvalidInput>;

impl Ask {
    /// Parses a `chat:message` payload.
    fn message(data: Option<Value>, max_chars: usize) -> Result<Self, InvalidInput> {
        events::parse_chat_message(data, max_chars).map(Ask::Message)
    }

    /// Parses a `chat:regenerate` payload (its text is the stored one's).
    fn regenerate(data: Option<Value>, _: usize) -> Result<Self, InvalidInput> {
        events::parse_regenerate(data).map(Ask::Regenerate)
    }

    fn session_id(&self) -> SessionId {
        match self {
            Ask::Message(req) => req.session_id,
            Ask::Regenerate(req) => req.session_id,
        }
    }
}

/// `chat:message` and `chat:regenerate`: acked once stored, then the answer starts.
async fn ask(
    event: &'static str,
    parse: ParseAsk,
    state: &SocketState,
    s: SocketRef,
    data: Option<Value>,
    ack: AckSender,
) {
    let received = std::time::Instant::now();
    metrics::counter!("postchat_events_received_total", "event" => event).increment(1);
    let Some(user) = authenticated(&s) else { return refuse(s, ack) };
    let session_hint = session_hint(data.as_ref());
    let span = tracing::info_span!(
        "event",
        name = event,
        sid = %s.id,
        user_id = %Untrusted(user.as_str()),
        session_id = tracing::field::Empty,
        message_id = tracing::field::Empty
    );
    if let Some(session_id) = session_hint {
        span.record("session_id", tracing::field::display(session_id));
    }
    accept(state, s, user, (parse, data, session_hint), ack, received).instrument(span).await
}

async fn accept(
    state: &SocketState,
    s: SocketRef,
    user: UserId,
    (parse, data, session_hint): (ParseAsk, Option<Value>, Option<SessionId>),
    ack: AckSender,
    received: std::time::Instant,
) {
    if let Err(retry_after) = state.message_limit.check(&user).await {
        return reply_error(&s, ack, Failure::new(ChatError::RateLimited { retry_after }, session_hint));
    }
    let req = match parse(data, state.limits.max_message_chars) {
        Ok(req) => req,
        Err(e) => return reply_error(&s, ack, Failure::new(e, session_hint)),
    };
    let session_id = req.session_id();
    if let Err(e) = may_follow(state, &s, session_id) {
        return reply_error(&s, ack, Failure::new(e, Some(session_id)));
    }
    let accepted = match req {
        Ask::Message(req) => state.controller.accept_message(&user, req).await,
        Ask::Regenerate(req) => state.controller.regenerate(&user, req).await,
    };
    match accepted {
        Ok(accepted) => {
            s.join(events::room(session_id));
            state.controller.watch_soon(session_id);
            let reply =
                MessageAck { ok: true, message_id: accepted.message_id, duplicate: accepted.duplicate };
            tracing::Span::current().record("message_id", tracing::field::display(accepted.message_id));
            send_ack(ack, &reply);
            metrics::histogram!("postchat_ack_seconds").record(received.elapsed().as_secs_f64());
            accepted.start();
        }
        Err(e) => reply_error(&s, ack, Failure::new(e, Some(session_id))),
    }
}

/// The socket's user while its token is valid; `None` once it has expired.
fn authenticated(s: &SocketRef) -> Option<UserId> {
    let expired = s.extensions.get::<TokenExpiry>().is_none_or(TokenExpiry::has_passed);
    if expired {
        return None;
    }
    s.extensions.get::<UserId>()
}

/// A socket whose token expired: UNAUTHORIZED, then disconnected (the packet follows the error).
fn refuse(s: SocketRef, ack: AckSender) {
    reply_error(&s, ack, Failure::new(ChatError::Unauthorized, None));
    if let Err(e) = s.disconnect() {
        warn!(error = %e, "could not disconnect a socket with an expired token");
    }
}

/// Parses `{ sessionId }`, the payload of stop, join and leave.
fn session_payload(data: Option<Value>) -> Result<SessionId, Failure> {
    events::parse_session_id(data).map_err(|e| Failure::new(e, None))
}

async fn chat_stop(
    state: &SocketState,
    _: &SocketRef,
    user: UserId,
    data: Option<Value>,
) -> Result<StopAck, Failure> {
    let session_id = session_payload(data)?;
    match state.controller.stop(&user, session_id).await {
        Ok(stopped) => Ok(StopAck { ok: true, stopped }),
        Err(e) => Err(Failure::new(e, Some(session_id))),
    }
}

/// `chat:branch:select`: the selected branch's last messages.
async fn branch_select(
    state: &SocketState,
    _: &SocketRef,
    user: UserId,
    data: Option<Value>,
) -> Result<BranchAck, Failure> {
    let (session_id, message_id) = events::parse_branch_select(data).map_err(|e| Failure::new(e, None))?;
    // It reads a branch as a join does (and walks the one selected): counted as a join.
    if let Err(retry_after) = state.join_limit.check(&user).await {
        return Err(Failure::new(ChatError::RateLimited { retry_after }, Some(session_id)));
    }
    match state.controller.select_branch(&user, session_id, message_id).await {
        Ok(messages) => Ok(BranchAck { ok: true, messages }),
        Err(e) => Err(Failure::new(e, Some(session_id))),
    }
}

async fn chat_join(
    state: &SocketState,
    s: &SocketRef,
    user: UserId,
    data: Option<Value>,
) -> Result<JoinReply, Failure> {
    let session_id = session_payload(data)?;
    if let Err(retry_after) = state.join_limit.check(&user).await {
        return Err(Failure::new(ChatError::RateLimited { retry_after }, Some(session_id)));
    }
    may_follow(state, s, session_id).map_err(|e| Failure::new(e, Some(session_id)))?;
    let room = events::room(session_id);
    state
        .controller
        .join(&user, session_id, || s.join(room))
        .await
        .map(JoinReply)
        .map_err(|e| Failure::new(e, Some(session_id)))
}

async fn chat_leave(
    state: &SocketState,
    s: &SocketRef,
    user: UserId,
    data: Option<Value>,
) -> Result<OkAck, Failure> {
    let session_id = session_payload(data)?;
    let room = events::room(session_id);
    state
        .controller
        .leave(&user, session_id, || s.leave(room))
        .await
        .map(|()| OkAck { ok: true })
        .map_err(|e| Failure::new(e, Some(session_id)))
}

/// Whether `s` may follow `session_id`: it already does, or it follows fewer sessions than
/// `MAX_SESSIONS_PER_SOCKET` (each followed session costs every answer's delivery a room and,
/// in cluster mode, Redis reads).
fn may_follow(state: &SocketState, s: &SocketRef, session_id: SessionId) -> Result<(), InvalidInput> {
    let rooms = s.rooms();
    let cap = state.limits.max_sessions_per_socket;
    let room = events::room(session_id);
    if rooms.len() < cap || rooms.iter().any(|r| *r == room) {
        return Ok(());
    }
    Err(InvalidInput::new(
        "sessionId",
        format!("this socket follows {cap} sessions, the most it may (MAX_SESSIONS_PER_SOCKET): send chat:leave for one first"),
    ))
}

/// The `sessionId` of a payload when it is well formed, so an error about another field can
/// still say which session it concerns.
fn session_hint(data: Option<&Value>) -> Option<SessionId> {
    data?.get("sessionId")?.as_str().and_then(|raw| SessionId::parse(raw).ok())
}

fn send_ack<T: Serialize>(ack: AckSender, payload: &T) {
    if let Err(e) = ack.send(payload) {
        warn!(error = %e, "ack not sent");
    }
}

/// Answers an error in the ack (when asked for) and as `chat:error`.
fn reply_error(s: &SocketRef, ack: AckSender, failure: Failure) {
    if let ChatError::Store(e) = &failure.error {
        warn!(sid = %s.id, error = %e, "storage error");
    }
    let payload = ErrorPayload::new(&failure.error, failure.session_id, None);
    send_ack(ack, &ErrorAck { ok: false, error: &payload });
    if let Err(e) = s.emit(events::CHAT_ERROR, &payload) {
        warn!(sid = %s.id, error = %e, "chat:error not sent");
    }
}
