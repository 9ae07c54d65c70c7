//! The cap on sockets one user holds open at once: tabs and devices are welcome, a script
//! opening thousands is not. In cluster mode the cap counts the user's sockets on every
//! process ([`SharedCounts`]); this process's own count is the fallback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Counted, SharedCounts};
use crate::domain::UserId;

pub struct SocketsPerUser {
    max: usize,
    open: Mutex<HashMap<UserId, usize>>,
    shared: Arc<dyn SharedCounts>,
}

impl SocketsPerUser {
    /// At most `max` sockets per user (0 means no cap), counted in `shared` first.
    pub fn new(max: usize, shared: Arc<dyn SharedCounts>) -> Self {
        Self { max, open: Mutex::default(), shared }
    }

    /// Counts socket `sid` of `user`, or false when they are at the cap.
    pub async fn open_socket(&self, user: &UserId, sid: &str) -> bool {
        match self.shared.open_socket(user, sid, self.max).await {
            Counted::Shared(false) => false,
            Counted::Shared(true) => {
                // Counted here too: the fallback while the shared count cannot be had.
                *self.open().entry(user.clone()).or_insert(0) += 1;
                true
            }
            Counted::Here => self.try_open(user),
        }
    }

    /// Socket `sid` of `user` closed.
    pub async fn close_socket(&self, user: &UserId, sid: &str) {
        self.close(user);
        self.shared.close_socket(user, sid).await;
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, usize>> {
        // Plain counters; a panic elsewhere cannot leave them half-written.
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a new socket for `user` here, or false when they are at the cap.
    fn try_open(&self, user: &UserId) -> bool {
        let mut open = self.open();
        let count = open.entry(user.clone()).or_insert(0);
        if self.max > 0 && *count >= self.max {
            return false;
        }
        *count += 1;
        true
    }

    /// A socket of `user` closed (here).
    fn close(&self, user: &UserId) {
        let mut open = self.open();
        if let Some(count) = open.get_mut(user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_at_the_cap_must_close_one_first() {
        let cap = SocketsPerUser::new(2, Arc::new(super::super::CountedHere));
        let alice = UserId::parse("alice").unwrap();
        assert!(cap.try_open(&alice) && cap.try_open(&alice));
        assert!(!cap.try_open(&alice));
        assert!(cap.try_open(&UserId::parse("bob").unwrap()));
        cap.close(&alice);
        assert!(cap.try_open(&alice));
    }
}
