//! The cap on sockets one user holds open at once: tabs and devices are welcome, a script
//! opening thousands is not. In cluster mode the cap counts the user's sockets on every
//! process (in Redis); this process's own count is the fallback while Redis fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::cluster::Cluster;
use crate::domain::UserId;

pub struct SocketsPerUser {
    max: usize,
    open: Mutex<HashMap<UserId, usize>>,
    shared: Option<Arc<Cluster>>,
}

impl SocketsPerUser {
    /// At most `max` sockets per user; 0 means no cap. With a cluster, counted across it.
    pub fn new(max: usize, cluster: Option<Arc<Cluster>>) -> Self {
        Self { max, open: Mutex::default(), shared: cluster }
    }

    /// Counts socket `sid` of `user`, or false when they are at the cap.
    pub async fn open_socket(&self, user: &UserId, sid: &str) -> bool {
        if let Some(cluster) = &self.shared {
            match cluster.open_socket(user, sid, self.max).await {
                Ok(false) => return false,
                Ok(true) => {
                    *self.open().entry(user.clone()).or_insert(0) += 1;
                    return true;
                }
                Err(e) => {
                    cluster.record(false);
                    tracing::warn!(error = %e, "shared socket count unavailable: counting here");
                }
            }
        }
        self.try_open(user)
    }

    /// Socket `sid` of `user` closed.
    pub async fn close_socket(&self, user: &UserId, sid: &str) {
        self.close(user);
        if let Some(cluster) = &self.shared {
            if let Err(e) = cluster.close_socket(user, sid).await {
                tracing::warn!(error = %e, "a closed socket is still counted in Redis until this process stops");
            }
        }
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
        let cap = SocketsPerUser::new(2, None);
        let alice = UserId::parse("alice").unwrap();
        assert!(cap.try_open(&alice) && cap.try_open(&alice));
        assert!(!cap.try_open(&alice));
        assert!(cap.try_open(&UserId::parse("bob").unwrap()));
        cap.close(&alice);
        assert!(cap.try_open(&alice));
    }
}
