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
pub use message::{Exchange, IntentType, Message, MessageStatus, SocialPost, TokenUsage};
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
    use chrono::SubsecRound;
    let offset = CLOCK_OFFSET_MS.load(std::sync::atomic::Ordering::Relaxed);
    (chrono::Utc::now() + chrono::Duration::milliseconds(offset)).trunc_subsecs(6)
}

/// Sets how far the shared clock is ahead of this machine's (cluster mode: Redis's `TIME`).
pub fn set_clock_offset(ms: i64) {
    CLOCK_OFFSET_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
}
