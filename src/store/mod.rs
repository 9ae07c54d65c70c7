//! Persistence: the one trait at the storage seam, and its PostgreSQL and SQLite backends.
//!
//! Both backends run the same SQL (`sql.rs`) through sqlx's runtime `query_as().bind()`, each with
//! its own migrations folder, so neither database constrains the other (atuin's two-backend shape).
//! Which one runs is chosen by the `DATABASE_URL` scheme in [`connect`].

mod batched_messages;
mod metered;
mod postgres;
mod sql;
mod sql_store;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    ChatSession, ClientMessageId, Exchange, Message, MessageId, MessageStatus, Parent, Post, PostId,
    Preferences, SessionId, Siblings, SocialPost, TokenUsage, UserId,
};

pub use batched_messages::BatchedMessages;
pub use metered::MeteredStore;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached in time; the caller may retry later.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A unique constraint refused the write (for messages: the client message id was used).
    #[error("duplicate value for {0}")]
    Duplicate(&'static str),
    /// A row holds a value the domain does not know (a bug or a manual edit).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Query(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("bad DATABASE_URL: {0}")]
    BadUrl(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => StoreError::Unavailable(err),
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate("clientMessageId"),
            sqlx::Error::Database(db) if db.code().is_some_and(|c| is_unavailable(&c)) => {
                StoreError::Unavailable(err)
            }
            _ => StoreError::Query(err),
        }
    }
}

/// A statement the database did not run for reasons of the moment, not for what it is (worth
/// a retry later): PostgreSQL's `query_canceled` (its `statement_timeout`),
/// `lock_not_available`, a server shutting down or starting (`admin_shutdown`,
/// `crash_shutdown`, `cannot_connect_now`: a stopped server sends these to the connections it
/// closes, which the pool may hand out next), `too_many_connections` and the connection
/// exceptions (class 08, but for a protocol violation); SQLite's `BUSY` and `LOCKED` result
/// codes, extended ones included (the low byte).
fn is_unavailable(code: &str) -> bool {
    match code {
        "57014" | "55P03" | "57P01" | "57P02" | "57P03" | "53300" => true,
        // A protocol violation is a bug, not a moment; the rest of class 08 is a lost connection.
        "08P01" => false,
        connection if connection.len() == 5 && connection.starts_with("08") => true,
        sqlite if sqlite.len() < 5 => sqlite.parse::<u32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    }
}

/// A new exchange, stored when the user's message is accepted (status `streaming`).
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: MessageId,
    pub session_id: SessionId,
    pub client_message_id: Option<ClientMessageId>,
    pub user_message: String,
    pub intent_type: crate::domain::IntentType,
    pub created_at: DateTime<Utc>,
    /// Where it goes in the session's tree (resolved by the insert itself for the active
    /// branch, so a message costs no read for it).
    pub parent: Parent,
}

/// The end of an exchange: the answer and how it ended.
#[derive(Debug, Clone)]
pub struct FinishedAnswer<'a> {
    pub ai_response: &'a str,
    pub posts: &'a [SocialPost],
    pub status: MessageStatus,
    /// What the answer cost, when it reached the model.
    pub usage: Option<TokenUsage>,
    /// The answer stopped at `ANSWER_MAX_TOKENS`.
    pub cut: bool,
}

impl FinishedAnswer<'_> {
    /// The usage as its columns store it: `prompt_tokens`, `completion_tokens`,
    /// `usage_estimated` (all null when the answer never reached the model).
    pub(super) fn usage_columns(&self) -> (Option<i64>, Option<i64>, Option<bool>) {
        match self.usage {
            Some(u) => {
                (Some(i64::from(u.prompt_tokens)), Some(i64::from(u.completion_tokens)), Some(u.estimated))
            }
            None => (None, None, None),
        }
    }
}

/// `messages` (a whole session, oldest first) with each one's place among its siblings.
fn with_siblings(mut messages: Vec<Message>) -> Vec<Message> {
    let mut counts: std::collections::HashMap<Option<MessageId>, u32> = std::collections::HashMap::new();
    for message in &mut messages {
        let seen = counts.entry(message.parent_id).or_default();
        message.siblings = Some(Siblings { sibling_index: *seen, sibling_count: 0 });
        *seen += 1;
    }
    for message in &mut messages {
        if let Some(siblings) = &mut message.siblings {
            siblings.sibling_count = counts.get(&message.parent_id).copied().unwrap_or(1);
        }
    }
    messages
}

/// Everything the server keeps, behind one seam.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A cheap round trip, for readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Closes the pool, waiting for connections in use to be returned (at shutdown).
    async fn close(&self);
    /// Most answers one batched statement (`insert_messages`, `path_exchanges`,
    /// `finish_messages`) should hold.
    fn max_batch(&self) -> usize;

    async fn insert_post(&self, post: &Post) -> Result<(), StoreError>;
    async fn get_post(&self, id: PostId) -> Result<Option<Post>, StoreError>;

    async fn insert_session(&self, session: &ChatSession) -> Result<(), StoreError>;
    async fn get_session(&self, id: SessionId) -> Result<Option<ChatSession>, StoreError>;
    /// A user's sessions, most recently updated first.
    async fn list_sessions(&self, owner: &UserId) -> Result<Vec<ChatSession>, StoreError>;
    /// Deletes a session and its messages; false when it did not exist.
    async fn delete_session(&self, id: SessionId) -> Result<bool, StoreError>;
    async fn update_session_summary(
        &self,
        id: SessionId,
        summary: &str,
        at: DateTime<Utc>,
        through: Option<MessageId>,
    ) -> Result<(), StoreError>;
    /// Drops the session's summary (it summed up another branch than the active one).
    async fn clear_session_summary(&self, id: SessionId) -> Result<(), StoreError>;

    async fn update_session_title(
        &self,
        id: SessionId,
        title: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Stores a new exchange; [`StoreError::Duplicate`] when its client message id was used.
    async fn insert_message(&self, message: &NewMessage) -> Result<(), StoreError>;
    /// Stores how an exchange ended, if it is still `streaming` and never taken over: one
    /// already ended (swept `interrupted` while its process was paused) keeps that outcome,
    /// and one another process continues is stored by it. True when stored.
    async fn finish_message(&self, id: MessageId, answer: FinishedAnswer<'_>) -> Result<bool, StoreError>;
    /// Marks `streaming` exchange `id` as continued by another process under fencing token
    /// `fence` (cluster mode: its process died), if no later token took it: from then on only
    /// [`finish_taken_over`](Self::finish_taken_over) under that token stores its end. True
    /// when taken.
    async fn take_over_message(&self, id: MessageId, fence: u64) -> Result<bool, StoreError>;
    /// The fencing token exchange `id` was last taken over under (0: never); `None` when the
    /// exchange is gone.
    async fn message_fence(&self, id: MessageId) -> Result<Option<u64>, StoreError>;
    /// Stores how an exchange taken over under `fence` ended, if it still is `streaming` and
    /// no later token took it.
    async fn finish_taken_over(
        &self,
        id: MessageId,
        fence: u64,
        answer: FinishedAnswer<'_>,
    ) -> Result<bool, StoreError>;
    /// Stores several new exchanges in one statement; for each, in order, whether it was stored
    /// (`false`: its client message id, or its id, was already taken).
    async fn insert_messages(&self, messages: &[NewMessage]) -> Result<Vec<bool>, StoreError>;
    /// Up to `limit` exchanges on the path from each of `starts` (one or many) up towards its
    /// root, that one included, in one statement: each paired with the start it was read from,
    /// each start's oldest first. An answer's context (its branch, never the others): only
    /// the columns a prompt uses.
    async fn path_exchanges(
        &self,
        starts: &[MessageId],
        limit: u32,
    ) -> Result<Vec<(MessageId, Exchange)>, StoreError>;
    /// Stores how several exchanges ended, in one statement (those still `streaming`); the ids
    /// of those stored.
    async fn finish_messages(
        &self,
        answers: &[(MessageId, FinishedAnswer<'_>)],
    ) -> Result<Vec<MessageId>, StoreError>;
    async fn find_message_by_client_id(
        &self,
        session: SessionId,
        client_message_id: &ClientMessageId,
    ) -> Result<Option<Message>, StoreError>;
    /// Message `id` of `session`, if there is one (how an answer ended, read by cluster mode).
    async fn get_message(&self, session: SessionId, id: MessageId) -> Result<Option<Message>, StoreError>;
    /// Up to `limit` messages of a session's branch, oldest first, each with its siblings: the
    /// last ones of its active branch (the branch a client selected, or that of its newest
    /// exchange when that is newer), or those before `before` on its branch.
    async fn branch_messages(
        &self,
        session: SessionId,
        limit: u32,
        before: Option<MessageId>,
    ) -> Result<Vec<Message>, StoreError>;
    /// Every message of a session (the tree), oldest first, each with its siblings.
    async fn all_messages(&self, session: SessionId) -> Result<Vec<Message>, StoreError>;
    /// Makes the branch through exchange `through` of `session` active (down to its newest
    /// descendant, returned), as selected now; `None` when the session has no such exchange.
    async fn select_branch(
        &self,
        session: SessionId,
        through: MessageId,
    ) -> Result<Option<MessageId>, StoreError>;
    /// The session's newest exchange, whatever its branch.
    async fn newest_message(&self, session: SessionId) -> Result<Option<MessageId>, StoreError>;
    /// Whether `exchange` is on the path from exchange `from` up to its root (`from` included).
    async fn on_path(&self, from: MessageId, exchange: MessageId) -> Result<bool, StoreError>;
    /// The session of exchange `id`, if there is one.
    async fn message_session(&self, id: MessageId) -> Result<Option<SessionId>, StoreError>;
    /// Marks every `streaming` message created (or last taken over) before `created_before`
    /// `interrupted` (at start: they were lost with a crash).
    async fn interrupt_streaming(&self, created_before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Marks one message `interrupted` with the text it got, if it is still `streaming`
    /// (cluster mode: its process died); false when it had already ended.
    async fn interrupt_message(&self, id: MessageId, ai_response: &str) -> Result<bool, StoreError>;

    /// Model tokens spent by `user`'s answers created since `since`.
    async fn tokens_used_since(&self, user: &UserId, since: DateTime<Utc>) -> Result<u64, StoreError>;

    async fn get_preferences(&self, user: &UserId) -> Result<Option<Preferences>, StoreError>;
    async fn put_preferences(&self, user: &UserId, prefs: &Preferences) -> Result<(), StoreError>;
}

/// Prepared statements kept per connection: the fixed queries and, on SQLite, one per batch
/// size of each batched statement up to its `MAX_BATCH` (PostgreSQL binds a batch as arrays).
const STATEMENT_CACHE: usize = 256;

/// Pool settings shared by both backends.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: u32,
    /// How long a query waits for a connection before the database counts as unavailable.
    pub acquire_timeout: Duration,
    /// How long a statement may run, waiting for locks included, before the database counts as
    /// unavailable (zero: no limit). The database cancels it (PostgreSQL's `statement_timeout`,
    /// SQLite's busy timeout); a call that still has no answer a second after both timeouts (a
    /// frozen server, a dead network) is given up on (`MeteredStore`).
    pub statement_timeout: Duration,
}

/// A pooled connection idle for less than this is handed out without a ping first. sqlx pings
/// before every acquire by default (and again on every release, which stays): a round trip to
/// the database on the path of every statement, the ack's insert too; without it the server
/// delivered more at 500 users on PostgreSQL (docs/benchmarks.md). A connection
/// the database dropped while it sat idle longer (a restart, an idle timeout) is still found
/// before use, as HikariCP does with its `aliveBypassWindowMs`, also 500 ms.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_millis(500);

impl PoolOptions {
    /// sqlx's pool settings, the same for both backends.
    fn sqlx<DB: sqlx::Database>(&self) -> sqlx::pool::PoolOptions<DB> {
        sqlx::pool::PoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for < PING_IF_IDLE_FOR {
                        return Ok(true);
                    }
                    // An error drops this connection; the pool then tries another or opens one.
                    sqlx::Connection::ping(connection).await.map(|()| true)
                })
            })
    }

    /// The longest a store call may take: a connection, the statement, and a second for the
    /// database's own cancellation to arrive. `None` without a statement timeout.
    pub fn call_timeout(&self) -> Option<Duration> {
        (!self.statement_timeout.is_zero())
            .then(|| self.acquire_timeout + self.statement_timeout + Duration::from_secs(1))
    }
}

/// Opens the database named by `url` (`postgres://…`, `postgresql://…` or `sqlite://…`),
/// creating a SQLite file and its folder when missing, and applies that backend's migrations.
/// Every query is counted and timed (`MeteredStore`).
pub async fn connect(url: &str, options: &PoolOptions) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::connect(url, options).await?;
        Ok(Arc::new(MeteredStore::new(Arc::new(store), options.call_timeout())))
    } else if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(url, options).await?;
        Ok(Arc::new(MeteredStore::new(Arc::new(store), options.call_timeout())))
    } else {
        Err(StoreError::BadUrl("expected a postgres://, postgresql:// or sqlite:// URL".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_locks_shutdowns_and_lost_connections_are_unavailable_other_errors_are_not() {
        let unavailable = ["57014", "55P03", "57P01", "57P02", "57P03", "53300", "08006", "08003", "08007"];
        for code in unavailable.into_iter().chain(["5", "6", "517", "261", "262"]) {
            assert!(is_unavailable(code), "{code}");
        }
        for other in ["23505", "42P01", "1", "19", "2067", "55000", "53100", "08P01", "08", "abc"] {
            assert!(!is_unavailable(other), "{other}");
        }
    }

    #[test]
    fn a_call_may_take_a_connection_a_statement_and_a_second() {
        let options = PoolOptions {
            max_connections: 1,
            acquire_timeout: Duration::from_millis(3_000),
            statement_timeout: Duration::from_millis(5_000),
        };
        assert_eq!(options.call_timeout(), Some(Duration::from_millis(9_000)));
        let unlimited = PoolOptions { statement_timeout: Duration::ZERO, ..options };
        assert_eq!(unlimited.call_timeout(), None);
    }
}
