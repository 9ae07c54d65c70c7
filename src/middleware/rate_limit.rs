//! The per-user limit on `chat:message` (governor's GCRA): a burst, then a steady rate. A
//! refused message costs nothing: no database write, no model call. Reads are not charged.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::domain::UserId;

/// How many messages a user may send.
pub struct MessageRateLimit {
    limiter: Option<DefaultKeyedRateLimiter<UserId>>,
}

impl MessageRateLimit {
    /// `per_minute` messages a minute after a burst of `burst`; `per_minute == 0` disables it.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
        });
        Self { limiter }
    }

    /// `Ok` when `user` may send now; otherwise how long until they may.
    pub fn check(&self, user: &UserId) -> Result<(), Duration> {
        match &self.limiter {
            None => Ok(()),
            Some(limiter) => limiter
                .check_key(user)
                .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// Forgets users whose allowance is full again, so memory follows active users only.
    pub fn forget_idle_users(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_user_waits() {
        let limit = MessageRateLimit::new(60, 3);
        let alice = UserId::parse("alice").unwrap();
        for _ in 0..3 {
            assert!(limit.check(&alice).is_ok());
        }
        let wait = limit.check(&alice).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limit.check(&UserId::parse("bob").unwrap()).is_ok(), "users are limited apart");
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let limit = MessageRateLimit::new(0, 0);
        let alice = UserId::parse("alice").unwrap();
        assert!((0..1_000).all(|_| limit.check(&alice).is_ok()));
    }
}
