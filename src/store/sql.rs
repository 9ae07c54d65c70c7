//! The SQL both backends run and the rows it reads, so a query is written and fixed in one
//! place; `sql_store.rs` runs it.
//!
//! The SQL is the common dialect of PostgreSQL and SQLite: `$n` parameters (sqlx binds them by
//! number on SQLite too), row-value comparisons and partial indexes work on both. The batched
//! statements alone differ (PostgreSQL binds arrays, SQLite has none): each backend's file
//! holds its own.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use crate::domain::{
    ChatSession, ClientMessageId, Exchange, Message, Platform, Post, PostExpanded, Preferences, SocialPost,
    TokenUsage, UserId,
};

use super::StoreError;

pub(super) const PING: &str = "SELECT 1";

pub(super) const INSERT_POST: &str =
    "INSERT INTO posts (id, owner_id, url, title, created_at) VALUES ($1, $2, $3, $4, $5)";
pub(super) const INSERT_POST_EXPANDED: &str =
    "INSERT INTO post_expanded (post_id, content, summary) VALUES ($1, $2, $3)";
pub(super) const GET_POST: &str = "SELECT p.id, p.owner_id, p.url, p.title, p.created_at, \
     COALESCE(e.content, '') AS content, COALESCE(e.summary, '') AS summary \
     FROM posts p LEFT JOIN post_expanded e ON e.post_id = p.id WHERE p.id = $1";

const SESSION_COLUMNS: &str = "id, user_id, post_id, title, summary, last_summary_at, created_at, updated_at";
pub(super) const INSERT_SESSION: &str = "INSERT INTO chat_sessions \
     (id, user_id, post_id, title, summary, last_summary_at, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
pub(super) fn get_session() -> String {
    format!("SELECT {SESSION_COLUMNS} FROM chat_sessions WHERE id = $1")
}
pub(super) fn list_sessions() -> String {
    format!(
        "SELECT {SESSION_COLUMNS} FROM chat_sessions WHERE user_id = $1 \
         ORDER BY updated_at DESC, id DESC LIMIT 500"
    )
}
pub(super) const DELETE_SESSION_MESSAGES: &str = "DELETE FROM messages WHERE chat_session_id = $1";
pub(super) const DELETE_SESSION: &str = "DELETE FROM chat_sessions WHERE id = $1";
pub(super) const UPDATE_SESSION_TITLE: &str =
    "UPDATE chat_sessions SET title = $2, updated_at = $3 WHERE id = $1";
pub(super) const UPDATE_SESSION_SUMMARY: &str =
    "UPDATE chat_sessions SET summary = $2, last_summary_at = $3, updated_at = $3 WHERE id = $1";

pub(super) const MESSAGE_COLUMNS: &str =
    "id, chat_session_id, client_message_id, user_message, ai_response, \
     intent_type, posts, status, prompt_tokens, completion_tokens, usage_estimated, cut, \
     created_at, updated_at";
/// What [`ExchangeRow`] reads: an answer's context needs no more.
pub(super) const EXCHANGE_COLUMNS: &str = "id, chat_session_id, user_message, ai_response, created_at";
pub(super) const INSERT_MESSAGE: &str = "INSERT INTO messages \
     (id, chat_session_id, client_message_id, user_message, ai_response, intent_type, posts, \
      status, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, '', $5, $6, 'streaming', $7, $7)";
/// Only an answer still `streaming` is finished: one ended meanwhile elsewhere (swept as
/// interrupted when its process seemed dead) keeps that outcome.
pub(super) const FINISH_MESSAGE: &str = "UPDATE messages \
     SET ai_response = $2, posts = $3, status = $4, updated_at = $5, prompt_tokens = $6, \
     completion_tokens = $7, usage_estimated = $8, cut = $9 WHERE id = $1 AND status = 'streaming' AND fence = $10";
/// An answer another process continues (cluster mode) under fencing token `$2`, above any it
/// was taken under before: only its end under that token is stored from then on.
pub(super) const MESSAGE_FENCE: &str = "SELECT fence FROM messages WHERE id = $1";
pub(super) const TAKE_OVER_MESSAGE: &str = "UPDATE messages SET fence = $2, updated_at = $3      WHERE id = $1 AND status = 'streaming' AND fence < $2";
pub(super) fn find_message_by_client_id() -> String {
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages \
         WHERE chat_session_id = $1 AND client_message_id = $2"
    )
}
pub(super) fn get_message() -> String {
    format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_session_id = $1 AND id = $2")
}
pub(super) fn recent_messages() -> String {
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_session_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT $2"
    )
}
pub(super) fn recent_messages_before() -> String {
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_session_id = $1 \
         AND (created_at, id) < \
             (SELECT created_at, id FROM messages WHERE id = $3 AND chat_session_id = $1) \
         ORDER BY created_at DESC, id DESC LIMIT $2"
    )
}
pub(super) const INTERRUPT_STREAMING: &str =
    "UPDATE messages SET status = 'interrupted', updated_at = $1 WHERE status = 'streaming' AND updated_at < $2";
pub(super) const INTERRUPT_MESSAGE: &str = "UPDATE messages \
     SET status = 'interrupted', ai_response = $2, updated_at = $3 WHERE id = $1 AND status = 'streaming'";

pub(super) const TOKENS_USED_SINCE: &str = "SELECT CAST(COALESCE(SUM(\
     COALESCE(m.prompt_tokens, 0) + COALESCE(m.completion_tokens, 0)), 0) AS BIGINT) \
     + (SELECT CAST(COALESCE(SUM(d.tokens), 0) AS BIGINT) FROM usage_of_deleted_answers d \
        WHERE d.user_id = $1 AND d.created_at >= $2) \
     FROM messages m JOIN chat_sessions s ON s.id = m.chat_session_id \
     WHERE s.user_id = $1 AND m.created_at >= $2";
/// Before a session's messages are deleted: the usage of those created since $2, kept for the
/// daily budget.
pub(super) const KEEP_USAGE_OF_DELETED: &str = "INSERT INTO usage_of_deleted_answers \
     (user_id, created_at, tokens) SELECT s.user_id, m.created_at, \
     COALESCE(m.prompt_tokens, 0) + COALESCE(m.completion_tokens, 0) \
     FROM messages m JOIN chat_sessions s ON s.id = m.chat_session_id \
     WHERE m.chat_session_id = $1 AND m.created_at >= $2 \
     AND (m.prompt_tokens IS NOT NULL OR m.completion_tokens IS NOT NULL)";
pub(super) const PRUNE_USAGE_OF_DELETED: &str = "DELETE FROM usage_of_deleted_answers WHERE created_at < $1";

pub(super) const GET_PREFERENCES: &str =
    "SELECT voice, style, platforms, hashtags, emoji FROM user_preferences WHERE user_id = $1";
pub(super) const PUT_PREFERENCES: &str = "INSERT INTO user_preferences \
     (user_id, voice, style, platforms, hashtags, emoji, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (user_id) DO UPDATE SET voice = excluded.voice, style = excluded.style, \
     platforms = excluded.platforms, hashtags = excluded.hashtags, emoji = excluded.emoji, \
     updated_at = excluded.updated_at";

#[derive(sqlx::FromRow)]
pub(super) struct PostRow {
    id: Uuid,
    owner_id: String,
    url: String,
    title: String,
    created_at: DateTime<Utc>,
    content: String,
    summary: String,
}

impl TryFrom<PostRow> for Post {
    type Error = StoreError;
    fn try_from(row: PostRow) -> Result<Self, StoreError> {
        Ok(Post {
            id: row.id.into(),
            owner: user_id(&row.owner_id)?,
            url: row.url,
            title: row.title,
            expanded: PostExpanded { content: row.content, summary: row.summary },
            created_at: row.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SessionRow {
    id: Uuid,
    user_id: String,
    post_id: Uuid,
    title: String,
    summary: String,
    last_summary_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<SessionRow> for ChatSession {
    type Error = StoreError;
    fn try_from(row: SessionRow) -> Result<Self, StoreError> {
        Ok(ChatSession {
            id: row.id.into(),
            owner: user_id(&row.user_id)?,
            post_id: row.post_id.into(),
            title: row.title,
            summary: row.summary,
            last_summary_at: row.last_summary_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct MessageRow {
    id: Uuid,
    chat_session_id: Uuid,
    client_message_id: Option<String>,
    user_message: String,
    ai_response: String,
    intent_type: String,
    posts: Json<Vec<SocialPost>>,
    status: String,
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    usage_estimated: Option<bool>,
    cut: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<MessageRow> for Message {
    type Error = StoreError;
    fn try_from(row: MessageRow) -> Result<Self, StoreError> {
        Ok(Message {
            id: row.id.into(),
            session_id: row.chat_session_id.into(),
            client_message_id: row
                .client_message_id
                .as_deref()
                .map(ClientMessageId::parse)
                .transpose()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            user_message: row.user_message,
            ai_response: row.ai_response,
            intent_type: row.intent_type.parse().map_err(StoreError::Corrupt)?,
            posts: row.posts.0,
            status: row.status.parse().map_err(StoreError::Corrupt)?,
            usage: match (row.prompt_tokens, row.completion_tokens) {
                (Some(prompt), Some(completion)) => Some(TokenUsage {
                    prompt_tokens: u32::try_from(prompt).unwrap_or(u32::MAX),
                    completion_tokens: u32::try_from(completion).unwrap_or(u32::MAX),
                    estimated: row.usage_estimated.unwrap_or(true),
                }),
                _ => None,
            },
            cut: row.cut,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ExchangeRow {
    id: Uuid,
    chat_session_id: Uuid,
    user_message: String,
    ai_response: String,
    created_at: DateTime<Utc>,
}

impl From<ExchangeRow> for Exchange {
    fn from(row: ExchangeRow) -> Self {
        Exchange {
            id: row.id.into(),
            session_id: row.chat_session_id.into(),
            user_message: row.user_message,
            ai_response: row.ai_response,
            created_at: row.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct PreferencesRow {
    voice: String,
    style: String,
    platforms: Json<Vec<Platform>>,
    hashtags: bool,
    emoji: bool,
}

impl From<PreferencesRow> for Preferences {
    fn from(row: PreferencesRow) -> Self {
        Preferences {
            voice: row.voice,
            style: row.style,
            platforms: row.platforms.0,
            hashtags: row.hashtags,
            emoji: row.emoji,
        }
    }
}

fn user_id(raw: &str) -> Result<UserId, StoreError> {
    UserId::parse(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}
