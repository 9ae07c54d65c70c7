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
    ChatSession, ClientMessageId, Exchange, Message, MessageId, Platform, Post, PostExpanded, Preferences,
    Siblings, SocialPost, TokenUsage, UserId,
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

const SESSION_COLUMNS: &str =
    "id, user_id, post_id, title, summary, last_summary_at, summary_through, created_at, updated_at";
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
pub(super) const UPDATE_SESSION_SUMMARY: &str = "UPDATE chat_sessions \
     SET summary = $2, last_summary_at = $3, updated_at = $3, summary_through = $4 WHERE id = $1";
/// A summary of another branch than the one now active is dropped (a new one is made from the
/// active branch when due).
pub(super) const CLEAR_SESSION_SUMMARY: &str = "UPDATE chat_sessions \
     SET summary = '', last_summary_at = NULL, summary_through = NULL WHERE id = $1";

pub(super) const MESSAGE_COLUMNS: &str =
    "id, chat_session_id, parent_id, client_message_id, user_message, ai_response, \
     intent_type, posts, status, prompt_tokens, completion_tokens, usage_estimated, cut, \
     created_at, updated_at";
/// `columns` of the messages aliased `m`.
fn of_m(columns: &str) -> String {
    columns.split(',').map(|column| format!("m.{}", column.trim())).collect::<Vec<_>>().join(", ")
}
/// What [`ExchangeRow`] reads: an answer's context needs no more.
pub(super) const EXCHANGE_COLUMNS: &str = "id, chat_session_id, user_message, ai_response, created_at";
/// Up to `limit` exchanges on the path up from each exchange of `starts` (a query of one column,
/// `id`), that one included, with the exchange each was read from (`origin`): per start,
/// oldest first. A prompt's history: the branch it is asked on, never the others.
pub(super) fn path_exchanges(starts: &str, limit: &str) -> String {
    format!(
        "WITH RECURSIVE st (id) AS ({starts}), \
         path (origin, id, depth) AS (SELECT st.id, st.id, 0 FROM st WHERE {limit} > 0 \
           UNION ALL SELECT p.origin, {PARENT_OF_P}, p.depth + 1 FROM path p \
           WHERE p.id IS NOT NULL AND p.depth + 1 < {limit}) \
         SELECT p.origin, {} FROM path p CROSS JOIN messages m WHERE m.id = p.id \
         ORDER BY p.origin, p.depth DESC",
        of_m(EXCHANGE_COLUMNS)
    )
}
pub(super) fn insert_message() -> String {
    format!(
        "INSERT INTO messages \
         (id, chat_session_id, client_message_id, user_message, ai_response, intent_type, posts, \
          status, created_at, updated_at, parent_id) \
         VALUES ($1, $2, $3, $4, '', $5, $6, 'streaming', $7, $7, {})",
        parent_of_new("$8", "$9", "$2")
    )
}

/// The newest exchange of session `session` (an SQL expression) on its active branch: the one
/// a client selected (`active_message_id`), unless an exchange was made since (newer than the
/// selection, or following the exchange selected: one stamped before the selection and stored
/// after it); else the session's newest. NULL for a session without exchanges.
pub(super) fn active_leaf(session: &str) -> String {
    format!(
        "(SELECT CASE WHEN s.active_message_id IS NOT NULL AND NOT EXISTS \
           (SELECT 1 FROM messages n WHERE n.chat_session_id = s.id AND n.created_at > s.active_set_at) \
           AND NOT EXISTS (SELECT 1 FROM messages c WHERE c.parent_id = s.active_message_id) \
         THEN s.active_message_id ELSE \
           (SELECT n.id FROM messages n WHERE n.chat_session_id = s.id \
            ORDER BY n.created_at DESC, n.id DESC LIMIT 1) END \
         FROM chat_sessions s WHERE s.id = {session})"
    )
}

/// A new exchange's `parent_id`: the active branch's last exchange when `follows_active` (an
/// SQL boolean), else `parent` (NULL: a first exchange).
pub(super) fn parent_of_new(follows_active: &str, parent: &str, session: &str) -> String {
    format!("CASE WHEN {follows_active} THEN {} ELSE {parent} END", active_leaf(session))
}
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
/// Up to `$2` exchanges of session `$1`'s branch ending at `start` (an SQL expression), each
/// with its siblings counted, oldest first: the path from there towards the root, walked up
/// the primary key (its length, not the session's, is what it costs).
fn branch_messages_from(start: &str) -> String {
    format!(
        "WITH RECURSIVE path (id, depth) AS (SELECT {start}, 0 WHERE $2 > 0 \
           UNION ALL SELECT {PARENT_OF_P}, p.depth + 1 FROM path p \
           WHERE p.id IS NOT NULL AND p.depth + 1 < $2) \
         SELECT {}, {SIBLINGS} FROM path p CROSS JOIN messages m WHERE m.id = p.id AND m.chat_session_id = $1 \
         ORDER BY p.depth DESC",
        of_m(MESSAGE_COLUMNS)
    )
}
/// The parent of the path's exchange `p`, looked up by its primary key. A scalar subquery, not a
/// join: for a join SQLite builds a Bloom filter over the whole table at every step of the walk
/// (docs/benchmarks.md, "Branches"). NULL past the root, where the walk stops. For the same
/// reason the path's rows are joined to their messages with `CROSS JOIN` (SQLite keeps that
/// order: the path outside, a primary-key lookup inside), not scanned the other way round.
const PARENT_OF_P: &str = "(SELECT m.parent_id FROM messages m WHERE m.id = p.id)";
/// How many exchanges follow the parent of `m` (`sibling_count`) and how many of them came
/// before it (`sibling_index`), through the parent index (the roots' partial index for a
/// first exchange).
const SIBLINGS: &str = "CASE WHEN m.parent_id IS NULL THEN \
       (SELECT COUNT(*) FROM messages s WHERE s.chat_session_id = m.chat_session_id AND s.parent_id IS NULL) \
     ELSE (SELECT COUNT(*) FROM messages s WHERE s.parent_id = m.parent_id) END AS sibling_count, \
     CASE WHEN m.parent_id IS NULL THEN \
       (SELECT COUNT(*) FROM messages s WHERE s.chat_session_id = m.chat_session_id AND s.parent_id IS NULL \
        AND (s.created_at, s.id) < (m.created_at, m.id)) \
     ELSE (SELECT COUNT(*) FROM messages s WHERE s.parent_id = m.parent_id \
        AND (s.created_at, s.id) < (m.created_at, m.id)) END AS sibling_index";
/// The active branch's last `$2` exchanges.
pub(super) fn active_branch_messages() -> String {
    branch_messages_from(&active_leaf("$1"))
}
/// The `$2` exchanges before exchange `$3` on its branch.
pub(super) fn branch_messages_before() -> String {
    branch_messages_from("(SELECT parent_id FROM messages WHERE id = $3 AND chat_session_id = $1)")
}
/// Every exchange of a session, oldest first (the tree, by `parent_id`).
pub(super) fn all_messages() -> String {
    format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_session_id = $1 ORDER BY created_at, id")
}
/// The newest exchange at or below exchange `$2` of session `$1` (the end of the branch through
/// it), walking down the parent index.
pub(super) const NEWEST_BELOW: &str = "WITH RECURSIVE below (id) AS \
     (SELECT id FROM messages WHERE id = $2 AND chat_session_id = $1 \
      UNION ALL SELECT m.id FROM below b CROSS JOIN messages m WHERE m.parent_id = b.id) \
     SELECT m.id FROM below b CROSS JOIN messages m WHERE m.id = b.id ORDER BY m.created_at DESC, m.id DESC LIMIT 1";
pub(super) const SELECT_BRANCH: &str =
    "UPDATE chat_sessions SET active_message_id = $2, active_set_at = $3 WHERE id = $1";
/// Whether exchange `$2` is on the path from exchange `$1` to its root (`$1` itself included).
pub(super) const ON_PATH: &str = "WITH RECURSIVE up (id) AS (SELECT $1 \
     UNION ALL SELECT (SELECT m.parent_id FROM messages m WHERE m.id = up.id) FROM up \
     WHERE up.id IS NOT NULL AND up.id <> $2) \
     SELECT COUNT(*) FROM up WHERE id = $2";
pub(super) const MESSAGE_SESSION: &str = "SELECT chat_session_id FROM messages WHERE id = $1";
/// The session's newest exchange, whatever its branch.
pub(super) const NEWEST_MESSAGE: &str =
    "SELECT id FROM messages WHERE chat_session_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1";
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
    summary_through: Option<Uuid>,
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
            summary_through: row.summary_through.map(Into::into),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct MessageRow {
    id: Uuid,
    chat_session_id: Uuid,
    parent_id: Option<Uuid>,
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
            parent_id: row.parent_id.map(Into::into),
            siblings: None,
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

/// A message read on its branch, with its siblings counted.
#[derive(sqlx::FromRow)]
pub(super) struct BranchMessageRow {
    #[sqlx(flatten)]
    message: MessageRow,
    sibling_index: i64,
    sibling_count: i64,
}

impl TryFrom<BranchMessageRow> for Message {
    type Error = StoreError;
    fn try_from(row: BranchMessageRow) -> Result<Self, StoreError> {
        let mut message = Message::try_from(row.message)?;
        message.siblings = Some(Siblings {
            sibling_index: u32::try_from(row.sibling_index).unwrap_or(u32::MAX),
            sibling_count: u32::try_from(row.sibling_count).unwrap_or(u32::MAX),
        });
        Ok(message)
    }
}

/// An exchange read on the path up from exchange `origin` (a prompt's history).
#[derive(sqlx::FromRow)]
pub(super) struct PathExchangeRow {
    origin: Uuid,
    #[sqlx(flatten)]
    exchange: ExchangeRow,
}

impl From<PathExchangeRow> for (MessageId, Exchange) {
    fn from(row: PathExchangeRow) -> Self {
        (row.origin.into(), row.exchange.into())
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
