//! Rate limits (governor's GCRA): a burst, then a steady rate, per key. Used per user on
//! `chat:message` (a refused message costs nothing: no database write, no model call; reads are
//! not charged; in cluster mode the count across processes is the claim's, after the intent,
//! docs/cluster.md "One look per message") and per IP address on new Socket.IO connections.

use std::fmt::Display;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::{Counted, CountedHere, SharedCounts};

/// A per-key limit; `None` inside when turned off.
pub struct RateLimit<K: Hash + Eq + Clone> {
    limiter: Option<DefaultKeyedRateLimiter<K>>,
    per_minute: u32,
    burst: u32,
    /// Where it is counted first (cluster mode: across processes), and its name there.
    shared: Arc<dyn SharedCounts>,
    name: &'static str,
}

impl<K: Hash + Eq + Clone + Display> RateLimit<K> {
    /// `per_minute` a minute after a burst of `burst`; `per_minute == 0` turns it off.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
        });
        Self { limiter, per_minute, burst, shared: Arc::new(CountedHere), name: "" }
    }

    /// Counts it in `shared` under `name` (cluster mode: across processes).
    pub fn shared(mut self, shared: &Arc<dyn SharedCounts>, name: &'static str) -> Self {
        (self.shared, self.name) = (shared.clone(), name);
        self
    }

    /// `Ok` when `key` may go now; otherwise how long until it may. Counted here when the
    /// shared count cannot be had.
    pub async fn check(&self, key: &K) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        match self.shared.rate(self.name, &key.to_string(), self.per_minute, self.burst).await {
            Counted::Shared(None) => return Ok(()),
            Counted::Shared(Some(wait)) => return Err(wait),
            Counted::Here => {}
        }
        limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets keys whose allowance is full again, so memory follows active keys only.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    #[tokio::test]
    async fn a_burst_passes_then_the_user_waits() {
        let limit = RateLimit::new(60, 3);
        let alice = UserId::parse("alice").unwrap();
        for _ in 0..3 {
            assert!(limit.check(&alice).await.is_ok());
        }
        let wait = limit.check(&alice).await.unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limit.check(&UserId::parse("bob").unwrap()).await.is_ok(), "users are limited apart");
    }

    #[tokio::test]
    async fn zero_turns_the_limit_off() {
        let limit = RateLimit::new(0, 0);
        let alice = UserId::parse("alice").unwrap();
        for _ in 0..1_000 {
            assert!(limit.check(&alice).await.is_ok());
        }
    }
}
