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

/// Current time truncated to microseconds, the precision both databases keep, so a value
/// read back equals the value written.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}
