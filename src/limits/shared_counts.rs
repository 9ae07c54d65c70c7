//! What the limits need from the other processes: counts they all share, so a user's rate or
//! sockets are counted once however many processes serve them. `cluster/` counts in Redis;
//! one process counts here ([`CountedHere`]), as does a cluster process while Redis fails.

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::UserId;

/// A count's answer: from the shared count, or "count it here".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted<T> {
    Shared(T),
    /// Not counted across processes (one process, or Redis failing): the caller counts it.
    Here,
}

/// Counts shared by every process.
#[async_trait]
pub trait SharedCounts: Send + Sync {
    /// One request of `key` under the limit `name` (`per_minute` after a burst of `burst`):
    /// `None` to go, or the wait.
    async fn rate(
        &self,
        name: &'static str,
        key: &str,
        per_minute: u32,
        burst: u32,
    ) -> Counted<Option<Duration>>;
    /// Counts socket `sid` of `user`, unless they hold `max` (0: no cap): true when counted.
    async fn open_socket(&self, user: &UserId, sid: &str, max: usize) -> Counted<bool>;
    /// Socket `sid` of `user` closed.
    async fn close_socket(&self, user: &UserId, sid: &str);
}

/// One process: everything is counted here.
pub struct CountedHere;

#[async_trait]
impl SharedCounts for CountedHere {
    async fn rate(&self, _: &'static str, _: &str, _: u32, _: u32) -> Counted<Option<Duration>> {
        Counted::Here
    }

    async fn open_socket(&self, _: &UserId, _: &str, _: usize) -> Counted<bool> {
        Counted::Here
    }

    async fn close_socket(&self, _: &UserId, _: &str) {}
}
