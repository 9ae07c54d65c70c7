//! The post (article) a chat session is about, with its expanded content.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{PostId, UserId};

/// An article a user chats about: where it lives and what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Post {
    pub id: PostId,
    #[serde(skip)]
    pub owner: UserId,
    pub url: String,
    pub title: String,
    pub expanded: PostExpanded,
    pub created_at: DateTime<Utc>,
}

/// The post's readable text and summary (the design's `post_expanded`): the material answers
/// are drawn from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostExpanded {
    pub content: String,
    pub summary: String,
}
