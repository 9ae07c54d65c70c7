//! Domain types: validated values and the entities of a chat about a post. No I/O here.
//!
//! Wire and HTTP payloads are parsed into these types at the edge (`TryFrom`/`parse`), so the
//! layers below never see an unchecked id, an over-long message or an unknown platform.

mod error;
mod ids;
mod message;
mod message_text;
mod networks;
mod platform;
mod post;
mod preferences;
mod session;

pub use error::InvalidInput;
pub use ids::{ClientMessageId, MessageId, PostId, SessionId, UserId};
pub use message::{Exchange, IntentType, Message, MessageStatus, Parent, Siblings, SocialPost, TokenUsage};
pub use message_text::MessageText;
pub use networks::Networks;
pub use platform::Platform;
pub use post::{Post, PostExpanded};
pub use preferences::Preferences;
pub use session::ChatSession;

/// Milliseconds this process adds to its machine's clock: zero, or in cluster mode the offset
/// to Redis's clock measured at each lease renewal (`cluster/clock.rs`), so the timestamps
/// every process writes (a session's messages in order, a budget's day, what counts as an
/// old answer at start) are on the one clock they share.
static CLOCK_OFFSET_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// The current time on the clock shared by every process (see [`set_clock_offset`]),
/// truncated to microseconds, the precision both databases keep, so a value read back equals
/// the value written.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use std::sync::atomic::Ordering::Relaxed;
    let offset = CLOCK_OFFSET_MS.load(Relaxed);
    let micros = (chrono::Utc::now() + chrono::Duration::milliseconds(offset)).timestamp_micros();
    // Each correction of the offset may step back by a few milliseconds (the measure's
    // jitter): a process's timestamps never go back for that, so its messages keep their
    // order. A real correction (a clock far off) is taken at once.
    let mut last = LAST_NOW_MICROS.load(Relaxed);
    let micros = loop {
        let next = if last > micros && last - micros < 1_000_000 { last } else { micros };
        match LAST_NOW_MICROS.compare_exchange_weak(last, next, Relaxed, Relaxed) {
            Ok(_) => break next,
            Err(seen) => last = seen,
        }
    };
    chrono::DateTime::from_timestamp_micros(micros).unwrap_or_else(chrono::Utc::now)
}

/// The latest time [`now`] returned, in microseconds.
static LAST_NOW_MICROS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Sets how far the shared clock is ahead of this machine's (cluster mode: Redis's `TIME`).
pub fn set_clock_offset(ms: i64) {
    CLOCK_OFFSET_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_clock_never_steps_back_for_a_measures_jitter_but_takes_a_real_correction() {
        let before = now();
        set_clock_offset(-5);
        assert!(now() >= before, "5 ms back (jitter): not taken");
        set_clock_offset(-90_000);
        assert!(before - now() > chrono::Duration::seconds(80), "90 s back (a clock far off): taken");
        set_clock_offset(0);
    }
}
