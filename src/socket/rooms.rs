//! Delivery of answers to a session's room: every socket that joined the session (other tabs,
//! other devices) gets the same stream.

use serde::Serialize;
use socketioxide::{SendError, SocketError, SocketIo};
use tracing::{error, warn};

use super::events::{self, ErrorPayload, SocialGenerated, StreamEnd, StreamStart, StreamToken};
use crate::chat::{AnswerAudience, AnswerEvent};

/// The socket layer's side of [`AnswerAudience`].
pub struct SessionRooms {
    io: SocketIo,
}

impl SessionRooms {
    pub fn new(io: SocketIo) -> Self {
        Self { io }
    }

    /// Emits to each socket of the room. A socket whose queue is full has stopped reading:
    /// it is disconnected rather than silently missing tokens; on reconnect, `chat:join`
    /// gives it the whole answer so far.
    fn send<T: Serialize>(&self, room: String, event: &'static str, payload: &T) {
        for socket in self.io.to(room).sockets() {
            match socket.emit(event, payload) {
                Ok(()) | Err(SendError::Socket(SocketError::Closed)) => {}
                Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                    warn!(sid = %socket.id, event, "socket queue full: disconnecting slow consumer");
                    if let Err(e) = socket.disconnect() {
                        warn!(error = %e, "disconnecting slow consumer failed");
                    }
                }
                Err(e) => error!(error = %e, event, "emit failed"),
            }
        }
    }
}

impl AnswerAudience for SessionRooms {
    fn deliver(&self, event: AnswerEvent<'_>) {
        let room = events::room(event.session_id());
        match event {
            AnswerEvent::Start { session_id, message_id, intent } => self.send(
                room,
                events::STREAM_START,
                &StreamStart { session_id, message_id, intent_type: intent },
            ),
            AnswerEvent::Token { session_id, message_id, token, seq } => {
                self.send(room, events::STREAM_TOKEN, &StreamToken { session_id, message_id, token, seq })
            }
            AnswerEvent::End { session_id, message_id, intent, content, stopped } => self.send(
                room,
                events::STREAM_END,
                &StreamEnd { session_id, message_id, intent_type: intent, content, stopped },
            ),
            AnswerEvent::SocialGenerated { session_id, message_id, content, posts } => self.send(
                room,
                events::SOCIAL_GENERATED,
                &SocialGenerated { session_id, message_id, content, posts },
            ),
            AnswerEvent::Failed { session_id, message_id, error } => self.send(
                room,
                events::CHAT_ERROR,
                &ErrorPayload::new(error, Some(session_id), Some(message_id)),
            ),
        }
    }
}
