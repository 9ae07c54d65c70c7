//! The cap on sockets one user holds open at once: tabs and devices are welcome, a script
//! opening thousands is not.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::UserId;

pub struct SocketsPerUser {
    max: usize,
    open: Mutex<HashMap<UserId, usize>>,
}

impl SocketsPerUser {
    /// At most `max` sockets per user; 0 means no cap.
    pub fn new(max: usize) -> Self {
        Self { max, open: Mutex::default() }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, usize>> {
        // Plain counters; a panic elsewhere cannot leave them half-written.
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a new socket for `user`, or false when they are at the cap.
    pub fn try_open(&self, user: &UserId) -> bool {
        let mut open = self.open();
        let count = open.entry(user.clone()).or_insert(0);
        if self.max > 0 && *count >= self.max {
            return false;
        }
        *count += 1;
        true
    }

    /// A socket of `user` closed.
    pub fn close(&self, user: &UserId) {
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
        let cap = SocketsPerUser::new(2);
        let alice = UserId::parse("alice").unwrap();
        assert!(cap.try_open(&alice) && cap.try_open(&alice));
        assert!(!cap.try_open(&alice));
        assert!(cap.try_open(&UserId::parse("bob").unwrap()));
        cap.close(&alice);
        assert!(cap.try_open(&alice));
    }
}
