//! The SQLite backend: the zero-setup default (a file under `./data/`).

use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteQueryResult, SqliteSynchronous,
};
use sqlx::types::Json;
use sqlx::Sqlite;

use super::sql;
use super::sql_store::{Dialect, SqlStore};
use super::STATEMENT_CACHE;
use super::{FinishedAnswer, NewMessage, PoolOptions, StoreError};
use crate::domain::{Exchange, MessageId, Parent, SocialPost};

/// Chat data in a SQLite file (`migrations/sqlite`).
pub type SqliteStore = SqlStore<Sqlite>;

impl SqlStore<Sqlite> {
    /// Opens (creating when missing, with its folder) the database file and applies the SQLite
    /// migrations. WAL lets readers run beside the one writer; the busy timeout (the statement
    /// timeout, 5 s without one) queues writers instead of failing them at once.
    pub async fn connect(url: &str, options: &PoolOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(if options.statement_timeout.is_zero() {
                std::time::Duration::from_secs(5)
            } else {
                options.statement_timeout
            })
            .statement_cache_capacity(STATEMENT_CACHE);
        if let Some(dir) = connect.get_filename().parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::BadUrl(format!("cannot create {}: {e}", dir.display())))?;
            }
        }
        let pool = options.sqlx().connect_with(connect).await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

/// `insert_messages`: this, then a `VALUES` row per message, then `INSERT_MESSAGES_TAIL`.
const INSERT_MESSAGES_HEAD: &str = "INSERT INTO messages \
     (id, chat_session_id, client_message_id, user_message, ai_response, intent_type, posts, \
      status, created_at, updated_at, parent_id) ";
/// Taken ids and client message ids are skipped, not errors: the ids returned say which rows
/// went in.
const INSERT_MESSAGES_TAIL: &str = " ON CONFLICT DO NOTHING RETURNING id";
/// `finish_messages`: this, then a `VALUES` row per answer, then `FINISH_MESSAGES_TAIL`.
const FINISH_MESSAGES_HEAD: &str = "WITH v (id, ai_response, posts, status, updated_at, \
     prompt_tokens, completion_tokens, usage_estimated, cut) AS (";
const FINISH_MESSAGES_TAIL: &str = ") UPDATE messages SET ai_response = v.ai_response, \
     posts = v.posts, status = v.status, updated_at = v.updated_at, \
     prompt_tokens = v.prompt_tokens, completion_tokens = v.completion_tokens, \
     usage_estimated = v.usage_estimated, cut = v.cut FROM v \
     WHERE messages.id = v.id AND messages.status = 'streaming' AND messages.fence = 0 RETURNING messages.id";

/// The batched statements (`Store::insert_messages`, `path_exchanges`, `finish_messages`):
/// SQLite has no arrays, so each answer is a row of `VALUES` (or a part of a `UNION ALL`), and
/// each batch size a statement of its own.
#[async_trait::async_trait]
impl Dialect for Sqlite {
    /// Each size is a prepared statement per connection (`STATEMENT_CACHE` has room for all of
    /// them); up to 256 gave fewer answers per second, not more (docs/benchmarks.md).
    const MAX_BATCH: usize = 32;

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn insert_many(pool: &SqlitePool, messages: &[NewMessage]) -> Result<Vec<bool>, StoreError> {
        let mut query = sqlx::QueryBuilder::new(INSERT_MESSAGES_HEAD);
        query.push_values(messages, |mut row, m| {
            row.push_bind(m.id.as_uuid())
                .push_bind(m.session_id.as_uuid())
                .push_bind(m.client_message_id.as_ref().map(|c| c.as_str()))
                .push_bind(m.user_message.as_str())
                .push("''")
                .push_bind(m.intent_type.as_str())
                .push_bind(Json(&[] as &[SocialPost]))
                .push("'streaming'")
                .push_bind(m.created_at)
                .push_bind(m.created_at);
            match m.parent {
                // The active branch's last exchange, read in the statement (the session's id
                // bound once more).
                Parent::ActiveBranch => {
                    let leaf = sql::active_leaf("?");
                    let (head, tail) = leaf.split_once('?').unwrap_or((&leaf, ""));
                    row.push(head).push_bind_unseparated(m.session_id.as_uuid()).push_unseparated(tail);
                }
                Parent::Root => {
                    row.push("NULL");
                }
                Parent::Exchange(parent) => {
                    row.push_bind(parent.as_uuid());
                }
            }
        });
        query.push(INSERT_MESSAGES_TAIL);
        let stored: Vec<uuid::Uuid> = query.build_query_scalar().fetch_all(pool).await?;
        Ok(messages.iter().map(|m| stored.contains(&m.id.as_uuid())).collect())
    }

    async fn path_exchanges_of(
        pool: &SqlitePool,
        starts: &[MessageId],
        limit: u32,
    ) -> Result<Vec<(MessageId, Exchange)>, StoreError> {
        // The starts as `VALUES (?), (?)...`; the limit is ours (a number), not the user's:
        // written into the SQL.
        let values = vec!["(?)"; starts.len()].join(", ");
        let statement = sql::path_exchanges(&format!("VALUES {values}"), &limit.to_string());
        let mut query = sqlx::query_as::<_, sql::PathExchangeRow>(&statement);
        for start in starts {
            query = query.bind(start.as_uuid());
        }
        let rows = query.fetch_all(pool).await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn finish_many(
        pool: &SqlitePool,
        answers: &[(MessageId, FinishedAnswer<'_>)],
    ) -> Result<Vec<MessageId>, StoreError> {
        let now = crate::domain::now();
        let mut query = sqlx::QueryBuilder::new(FINISH_MESSAGES_HEAD);
        query.push_values(answers, |mut row, (id, answer)| {
            row.push_bind(id.as_uuid())
                .push_bind(answer.ai_response)
                .push_bind(Json(answer.posts))
                .push_bind(answer.status.as_str())
                .push_bind(now)
                .push_bind(answer.usage_columns().0)
                .push_bind(answer.usage_columns().1)
                .push_bind(answer.usage_columns().2)
                .push_bind(answer.cut);
        });
        query.push(FINISH_MESSAGES_TAIL);
        let ids: Vec<(uuid::Uuid,)> = query.build_query_as().fetch_all(pool).await?;
        Ok(ids.into_iter().map(|(id,)| MessageId::from(id)).collect())
    }
}
