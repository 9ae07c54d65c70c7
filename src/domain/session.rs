//! A chat session: one user's conversation about one post.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{MessageId, PostId, SessionId, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatSession {
    pub id: SessionId,
    #[serde(skip)]
    pub owner: UserId,
    pub post_id: PostId,
    pub title: String,
    /// A running summary of the conversation, so the AI context stays bounded.
    pub summary: String,
    pub last_summary_at: Option<DateTime<Utc>>,
    /// The newest exchange the summary covers: a branch that does not pass through it has no
    /// use for the summary (`None`: no summary, or one made before branches).
    #[serde(skip)]
    pub summary_through: Option<MessageId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
