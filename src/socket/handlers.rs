//! One handler per client event. Each parses its payload (a malformed one gets INVALID_INPUT
//! and the socket stays usable), calls the chat controller, and answers by ack and, for
//! errors, also by `chat:error` (frontends may not use acks).

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use tracing::{debug, warn};

use super::events::{self, ErrorAck, ErrorPayload, JoinAck, MessageAck, OkAck, StopAck};
use super::SocketState;
use crate::chat::ChatError;
use crate::domain::{InvalidInput, SessionId, UserId};

/// Registers the chat events on a newly connected socket.
pub fn register(socket: SocketRef, state: Arc<SocketState>) {
    debug!(sid = %socket.id, "socket connected");
    macro_rules! on {
        ($event:expr, $handler:ident) => {{
            let state = state.clone();
            socket.on(
                $event,
                move |s: SocketRef, TryData(data): TryData<Value>, ack: AckSender| {
                    let state = state.clone();
                    async move {
                        match s.extensions.get::<UserId>() {
                            Some(user) => $handler(&state, s, user, data.ok(), ack).await,
                            None => reply_error(&s, ack, &ChatError::Unauthorized, None),
                        }
                    }
                },
            );
        }};
    }
    on!(events::CHAT_MESSAGE, chat_message);
    on!(events::CHAT_STOP, chat_stop);
    on!(events::CHAT_JOIN, chat_join);
    on!(events::CHAT_LEAVE, chat_leave);
    socket.on_fallback(
        |s: SocketRef, Event(name): Event, ack: AckSender| async move {
            let error = ChatError::InvalidInput(InvalidInput::new(
                "event",
                format!("unknown event {name:?}"),
            ));
            reply_error(&s, ack, &error, None);
        },
    );
}

async fn chat_message(
    state: &SocketState,
    s: SocketRef,
    user: UserId,
    data: Option<Value>,
    ack: AckSender,
) {
    let session_hint = session_hint(data.as_ref());
    if let Err(retry_after) = state.rate_limit.check(&user) {
        return reply_error(
            &s,
            ack,
            &ChatError::RateLimited { retry_after },
            session_hint,
        );
    }
    let req = match events::parse_chat_message(data, state.limits.max_message_chars) {
        Ok(req) => req,
        Err(e) => return reply_error(&s, ack, &e.into(), session_hint),
    };
    let session_id = req.session_id;
    match state.controller.accept_message(&user, req).await {
        Ok(accepted) => {
            s.join(events::room(session_id));
            send_ack(
                ack,
                &MessageAck {
                    ok: true,
                    message_id: accepted.message_id,
                    duplicate: accepted.duplicate,
                },
            );
            accepted.start();
        }
        Err(e) => reply_error(&s, ack, &e, Some(session_id)),
    }
}

async fn chat_stop(
    state: &SocketState,
    s: SocketRef,
    user: UserId,
    data: Option<Value>,
    ack: AckSender,
) {
    let session_id = match events::parse_session_id(data) {
        Ok(id) => id,
        Err(e) => return reply_error(&s, ack, &e.into(), None),
    };
    match state.controller.stop(&user, session_id).await {
        Ok(stopped) => send_ack(ack, &StopAck { ok: true, stopped }),
        Err(e) => reply_error(&s, ack, &e, Some(session_id)),
    }
}

async fn chat_join(
    state: &SocketState,
    s: SocketRef,
    user: UserId,
    data: Option<Value>,
    ack: AckSender,
) {
    let session_id = match events::parse_session_id(data) {
        Ok(id) => id,
        Err(e) => return reply_error(&s, ack, &e.into(), None),
    };
    let room = events::room(session_id);
    match state
        .controller
        .join(&user, session_id, || s.join(room))
        .await
    {
        Ok(joined) => send_ack(ack, &JoinAck::new(&joined)),
        Err(e) => reply_error(&s, ack, &e, Some(session_id)),
    }
}

async fn chat_leave(
    state: &SocketState,
    s: SocketRef,
    user: UserId,
    data: Option<Value>,
    ack: AckSender,
) {
    let session_id = match events::parse_session_id(data) {
        Ok(id) => id,
        Err(e) => return reply_error(&s, ack, &e.into(), None),
    };
    match state.controller.sessions().exists(&user, session_id).await {
        Ok(true) => {
            s.leave(events::room(session_id));
            send_ack(ack, &OkAck { ok: true });
        }
        Ok(false) => reply_error(&s, ack, &ChatError::NotFound, Some(session_id)),
        Err(e) => reply_error(&s, ack, &e, Some(session_id)),
    }
}

/// The `sessionId` of a payload when it is well formed, so an error about another field can
/// still say which session it concerns.
fn session_hint(data: Option<&Value>) -> Option<SessionId> {
    data?
        .get("sessionId")?
        .as_str()
        .and_then(|raw| SessionId::parse(raw).ok())
}

fn send_ack<T: Serialize>(ack: AckSender, payload: &T) {
    if let Err(e) = ack.send(payload) {
        warn!(error = %e, "ack not sent");
    }
}

/// Answers an error in the ack (when asked for) and as `chat:error`.
fn reply_error(s: &SocketRef, ack: AckSender, error: &ChatError, session_id: Option<SessionId>) {
    if let ChatError::Store(e) = error {
        warn!(sid = %s.id, error = %e, "storage error");
    }
    let payload = ErrorPayload::new(error, session_id, None);
    send_ack(
        ack,
        &ErrorAck {
            ok: false,
            error: &payload,
        },
    );
    if let Err(e) = s.emit(events::CHAT_ERROR, &payload) {
        warn!(sid = %s.id, error = %e, "chat:error not sent");
    }
}
