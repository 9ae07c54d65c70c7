//! One clock for the cluster: Redis's. Stream ids, lease deadlines and rates come from Redis's
//! `TIME`; what a process computes from the time and another process compares (watcher
//! deadlines, how far back a stream is trimmed) uses its estimate of that same clock, and so
//! does every timestamp it writes (`domain::now`: messages are ordered by theirs), so a
//! process whose own clock is off (by a minute and a half, say) behaves as the others do.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// This process's estimate of Redis's clock: its own, plus the offset last measured.
#[derive(Debug, Default)]
pub struct RedisClock {
    offset_ms: AtomicI64,
    /// Whether an offset was measured yet (the first is kept however slow its reply).
    synced: AtomicBool,
}

/// A `TIME` whose round trip took longer than this is not used to correct the offset.
const SLOW_REPLY_MS: i64 = 20;

/// This machine's own clock (`domain::now` is already the shared one).
fn local_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl RedisClock {
    /// Redis's time now, in milliseconds (as last measured).
    pub fn now_ms(&self) -> i64 {
        local_ms() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Measures the offset with `TIME`, taken to be read half way through the round trip.
    pub async fn sync(&self, conn: &mut impl redis::aio::ConnectionLike) -> redis::RedisResult<()> {
        let before = local_ms();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
        let after = local_ms();
        let redis_ms = secs * 1_000 + micros / 1_000;
        // A slow reply says little about when Redis read its clock: the last good offset stays.
        let first = !self.synced.swap(true, Ordering::Relaxed);
        if after - before > SLOW_REPLY_MS && !first {
            return Ok(());
        }
        let offset = redis_ms - (before + after) / 2;
        self.offset_ms.store(offset, Ordering::Relaxed);
        // Every timestamp this process writes is on Redis's clock too.
        crate::domain::set_clock_offset(offset);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_is_the_local_clock_plus_the_offset() {
        let clock = RedisClock::default();
        clock.offset_ms.store(-90_000, Ordering::Relaxed);
        let diff = local_ms() - clock.now_ms();
        assert!((89_990..=90_010).contains(&diff), "{diff}");
    }
}
