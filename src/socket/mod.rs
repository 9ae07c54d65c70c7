//! The socket layer: Socket.IO on socketioxide. It authenticates the handshake, registers one
//! handler per event, parses payloads into domain types, and delivers answers to rooms.
//! The contract (event names, payloads, acks) is `events.rs`; the full text is docs/protocol.md.

mod backlog;
mod connect;
pub mod events;
mod handlers;
mod outbox;
mod rooms;
mod token_expiry;

use std::sync::Arc;

use socketioxide::extract::SocketRef;
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::SocketIo;

use crate::auth::JwtKeys;
use crate::chat::ChatController;
use crate::domain::UserId;
use crate::limits::RateLimit;
use crate::limits::SocketsPerUser;

pub use rooms::{SessionRooms, SlowConsumer};
pub use token_expiry::TokenExpiries;

/// Socket.IO limits, from the config.
#[derive(Debug, Clone)]
pub struct SocketLimits {
    /// Largest polling body, websocket message and websocket frame.
    pub max_payload_bytes: usize,
    /// Packets queued per socket before an emit fails.
    pub queue_packets: usize,
    /// Bytes a websocket reads at a time (held by every connection).
    pub ws_read_buffer_bytes: usize,
    /// Engine.IO's heartbeat: a ping this often, closed when its pong is this late.
    pub ping_interval: std::time::Duration,
    pub ping_timeout: std::time::Duration,
    /// Longest `content` of a `chat:message`.
    pub max_message_chars: usize,
    /// Most sessions one socket may follow (rooms it is in).
    pub max_sessions_per_socket: usize,
}

/// What every handler needs.
pub struct SocketState {
    pub controller: Arc<ChatController>,
    /// Per-user `chat:message` limit.
    pub message_limit: Arc<RateLimit<UserId>>,
    /// Per-user `chat:join` limit.
    pub join_limit: Arc<RateLimit<UserId>>,
    /// Sockets each user holds open.
    pub sockets_per_user: SocketsPerUser,
    /// When each socket's token expires (the socket is disconnected then).
    pub token_expiries: Arc<TokenExpiries>,
    pub limits: SocketLimits,
}

/// Builds the Socket.IO layer (path `/socket.io/`, both transports, Engine.IO v3 and v4).
pub fn layer(limits: &SocketLimits) -> (SocketIoLayer, SocketIo) {
    let max = limits.max_payload_bytes;
    SocketIo::builder()
        .max_payload(max as u64)
        .ws_max_message_size(max)
        .ws_max_frame_size(max)
        .max_buffer_size(limits.queue_packets)
        .ws_read_buffer_size(limits.ws_read_buffer_bytes)
        .ping_interval(limits.ping_interval)
        .ping_timeout(limits.ping_timeout)
        .build_layer()
}

/// Registers the default namespace: auth at the handshake, then the chat events.
///
/// The event handlers are registered in the admission middleware, before socketioxide sends the
/// connect packet: its connect handler runs in a task of its own after that packet, so a client
/// that emits as soon as it is connected (`chat:join` on `connect`, the usual frontend code)
/// could otherwise reach a socket with no handlers yet, and its event would vanish.
pub fn register(io: &SocketIo, state: Arc<SocketState>, keys: Arc<JwtKeys>) {
    let admit = move |socket: SocketRef, auth: socketioxide::extract::TryData<serde_json::Value>| {
        let keys = keys.clone();
        let state = state.clone();
        async move {
            if !state.controller.is_accepting() {
                return Err(connect::Refused::ShuttingDown);
            }
            let (user, expiry) = connect::authenticate(&socket, auth.0.ok(), &keys)?;
            if !state.sockets_per_user.open_socket(&user, &socket.id.to_string()).await {
                return Err(connect::Refused::TooManySockets);
            }
            state.token_expiries.watch(socket.id, expiry.0);
            handlers::register(socket, state, &user);
            Ok(())
        }
    };
    io.ns("/", (async || {}).with(admit));
}
