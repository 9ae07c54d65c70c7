//! Sockets are disconnected when their token expires, not at their next event: a socket only
//! listening to its rooms would otherwise keep receiving answers for as long as it stays open.
//! One task for all sockets: every second it takes the sockets whose tokens have expired off
//! an ordered set (a few dozen bytes a socket; a disconnect takes the socket off), sends each
//! `chat:error` UNAUTHORIZED and disconnects it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use socketioxide::socket::Sid;
use socketioxide::SocketIo;
use tracing::warn;

use super::events::{self, ErrorPayload};
use crate::auth::now_secs;
use crate::chat::ChatError;

/// The sockets' token expiries, soonest first: (expiry in seconds since the epoch, socket).
#[derive(Default)]
pub struct TokenExpiries {
    due: Mutex<BTreeSet<(u64, Sid)>>,
}

impl TokenExpiries {
    fn due(&self) -> std::sync::MutexGuard<'_, BTreeSet<(u64, Sid)>> {
        // A plain set; a panic elsewhere cannot leave it half-written.
        self.due.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Watches socket `sid`, whose token stops being accepted at `expires_at`.
    pub fn watch(&self, sid: Sid, expires_at: u64) {
        self.due().insert((expires_at, sid));
    }

    /// Socket `sid` is gone.
    pub fn forget(&self, sid: Sid, expires_at: u64) {
        self.due().remove(&(expires_at, sid));
    }

    /// Takes the sockets whose tokens expired before `now`.
    fn take_expired(&self, now: u64) -> Vec<Sid> {
        let mut due = self.due();
        let still_valid = due.split_off(&(now.saturating_add(1), Sid::ZERO));
        std::mem::replace(&mut *due, still_valid).into_iter().map(|(_, sid)| sid).collect()
    }

    /// Every second, disconnects the sockets whose tokens expired; ends when `self` is dropped.
    pub fn spawn_sweep(self: &Arc<Self>, io: SocketIo) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(expiries) = weak.upgrade() else { break };
                for sid in expiries.take_expired(now_secs()) {
                    if let Some(socket) = io.get_socket(sid) {
                        let payload = ErrorPayload::new(&ChatError::Unauthorized, None, None);
                        if let Err(e) = socket.emit(events::CHAT_ERROR, &payload) {
                            warn!(%sid, error = %e, "chat:error not sent to a socket whose token expired");
                        }
                        if let Err(e) = socket.disconnect() {
                            warn!(%sid, error = %e, "could not disconnect a socket whose token expired");
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_sockets_are_taken_once_and_forgotten_ones_never() {
        let expiries = TokenExpiries::default();
        let (a, b, c) = (Sid::new(), Sid::new(), Sid::new());
        expiries.watch(a, 100);
        expiries.watch(b, 200);
        expiries.watch(c, 100);
        expiries.forget(c, 100);
        assert_eq!(expiries.take_expired(99), vec![]);
        assert_eq!(expiries.take_expired(100), vec![a], "an expiry of 100 has passed at 101, not at 100");
        assert_eq!(expiries.take_expired(150), vec![]);
        assert_eq!(expiries.take_expired(1_000), vec![b]);
    }
}
