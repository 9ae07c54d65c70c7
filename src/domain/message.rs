//! A message is one exchange: the user's text and the answer to it (the design's Message entity).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ClientMessageId, MessageId, Platform, SessionId};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentType {
    /// A question about the post: answered as streamed text.
    Question,
    /// A request for social-media posts: answered with posts per platform.
    SocialPost,
}

impl IntentType {
    pub fn as_str(self) -> &'static str {
        match self {
            IntentType::Question => "question",
            IntentType::SocialPost => "social_post",
        }
    }
}

impl FromStr for IntentType {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "question" => Ok(IntentType::Question),
            "social_post" => Ok(IntentType::SocialPost),
            other => Err(format!("unknown intent type {other:?}")),
        }
    }
}

/// Where an exchange is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// The answer is being generated.
    Streaming,
    /// The answer finished normally.
    Complete,
    /// The user stopped the answer; `ai_response` holds what was generated until then.
    Stopped,
    /// The server lost the answer (crash, shutdown, nobody watching); partial text kept.
    Interrupted,
    /// Generation failed; partial text kept.
    Error,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Streaming => "streaming",
            MessageStatus::Complete => "complete",
            MessageStatus::Stopped => "stopped",
            MessageStatus::Interrupted => "interrupted",
            MessageStatus::Error => "error",
        }
    }
}

impl FromStr for MessageStatus {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "streaming" => Ok(MessageStatus::Streaming),
            "complete" => Ok(MessageStatus::Complete),
            "stopped" => Ok(MessageStatus::Stopped),
            "interrupted" => Ok(MessageStatus::Interrupted),
            "error" => Ok(MessageStatus::Error),
            other => Err(format!("unknown message status {other:?}")),
        }
    }
}

/// One generated social-media post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SocialPost {
    pub platform: Platform,
    pub content: String,
    pub hashtags: Vec<String>,
    /// `content` measured as `platform` counts it.
    pub character_count: usize,
}

impl SocialPost {
    /// A post whose content is cut to fit its platform and whose count is measured, never trusted.
    pub fn fitted(platform: Platform, content: &str, hashtags: Vec<String>) -> Self {
        let content = platform.fit(content.trim());
        Self { platform, character_count: platform.count(&content), content, hashtags }
    }
}

/// What an answer cost in model tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// True when counted here with the tokenizer because the provider did not report it.
    pub estimated: bool,
}

impl TokenUsage {
    /// As the provider reported it.
    pub fn reported(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self { prompt_tokens, completion_tokens, estimated: false }
    }

    /// As counted here.
    pub fn estimated(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self { prompt_tokens, completion_tokens, estimated: true }
    }

    /// Both costs together (several model calls for one answer).
    pub fn plus(self, other: TokenUsage) -> Self {
        Self {
            prompt_tokens: self.prompt_tokens + other.prompt_tokens,
            completion_tokens: self.completion_tokens + other.completion_tokens,
            estimated: self.estimated || other.estimated,
        }
    }
}

/// An earlier exchange of a session as a prompt uses it: the question and its answer (the
/// context read fetches only these columns, not a whole [`Message`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub id: MessageId,
    pub session_id: SessionId,
    pub user_message: String,
    pub ai_response: String,
    pub created_at: DateTime<Utc>,
}

/// Where a new exchange goes in its session's tree of branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parent {
    /// After the last exchange of the session's active branch (a message without `parentId`).
    ActiveBranch,
    /// A first exchange of the session (`parentId: null`): a branch from the root.
    Root,
    /// After this exchange of the session (an edit, a regenerated answer).
    Exchange(MessageId),
}

impl Parent {
    /// The exchange named, if one is.
    pub fn exchange(self) -> Option<MessageId> {
        match self {
            Parent::Exchange(id) => Some(id),
            Parent::ActiveBranch | Parent::Root => None,
        }
    }
}

/// Where an exchange stands among the exchanges that follow the same parent (its siblings:
/// the answers regenerated and the messages edited there), in creation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Siblings {
    /// From 0.
    pub sibling_index: u32,
    /// 1 when it has none.
    pub sibling_count: u32,
}

/// One exchange of a chat session, as stored and as sent to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: MessageId,
    pub session_id: SessionId,
    /// The exchange it follows (`None`: a first exchange).
    pub parent_id: Option<MessageId>,
    /// Its place among its siblings, where read with them (a branch, the tree).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub siblings: Option<Siblings>,
    pub user_message: String,
    pub ai_response: String,
    pub intent_type: IntentType,
    pub posts: Vec<SocialPost>,
    pub status: MessageStatus,
    /// Model tokens the answer cost; `None` until it ends (or when it never reached the model).
    pub usage: Option<TokenUsage>,
    /// The answer stopped at `ANSWER_MAX_TOKENS` (complete, but cut short).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub cut: bool,
    #[serde(skip)]
    pub client_message_id: Option<ClientMessageId>,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub updated_at: DateTime<Utc>,
}
