//! The SQLite backend: the zero-setup default (a file under `./data/`).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::types::Json;

use super::sql::{self, impl_store_for};
use super::STATEMENT_CACHE;
use super::{FinishedAnswer, NewMessage, PoolOptions, StoreError};
use crate::domain::{
    ChatSession, ClientMessageId, Message, MessageId, Post, PostId, Preferences, SessionId, SocialPost,
    UserId,
};

/// Chat data in a SQLite file (`migrations/sqlite`).
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
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
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

impl_store_for!(SqliteStore);
