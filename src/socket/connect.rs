//! The handshake: a socket connects only with a valid JWT, from `auth.token`, `?token=` or an
//! `Authorization: Bearer` header. The user id goes into the socket's extensions.

use serde_json::Value;
use socketioxide::extract::SocketRef;
use tracing::debug;

use crate::auth::{bearer, query_token, AuthError, JwtKeys};
use crate::domain::UserId;

/// When the socket's token stops being accepted (seconds since the epoch, skew included): past
/// it, the socket's next event is answered UNAUTHORIZED and the socket is disconnected.
#[derive(Debug, Clone, Copy)]
pub struct TokenExpiry(pub u64);

impl TokenExpiry {
    pub fn has_passed(self) -> bool {
        crate::auth::now_secs() > self.0
    }
}

/// A refused handshake. Its text is what the client's `connect_error` carries.
#[derive(Debug)]
pub enum Refused {
    Unauthorized,
    ShuttingDown,
    TooManySockets,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Unauthorized => "unauthorized",
            Refused::ShuttingDown => "server shutting down",
            Refused::TooManySockets => "too many connections",
        })
    }
}

/// Verifies the handshake's token and keeps the user (and the token's expiry) on the socket.
pub fn authenticate(
    socket: &SocketRef,
    auth: Option<Value>,
    keys: &JwtKeys,
) -> Result<(UserId, TokenExpiry), Refused> {
    let token = handshake_token(socket, auth.as_ref()).ok_or(AuthError::Missing);
    match token.and_then(|t| keys.verify(&t)) {
        Ok(verified) => {
            let expiry = TokenExpiry(verified.expires_at);
            socket.extensions.insert::<UserId>(verified.user.clone());
            socket.extensions.insert(expiry);
            Ok((verified.user, expiry))
        }
        Err(reason) => {
            debug!(sid = %socket.id, %reason, "handshake refused");
            Err(Refused::Unauthorized)
        }
    }
}

fn handshake_token(socket: &SocketRef, auth: Option<&Value>) -> Option<String> {
    if let Some(token) = auth.and_then(|a| a.get("token")).and_then(Value::as_str) {
        return Some(token.to_owned());
    }
    let parts = socket.req_parts();
    if let Some(token) = parts.uri.query().and_then(query_token) {
        return Some(token);
    }
    parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(bearer)
        .map(str::to_owned)
}
