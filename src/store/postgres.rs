//! The PostgreSQL backend.

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::Connection;

use super::sql::{self, impl_store_for};
use super::STATEMENT_CACHE;
use super::{FinishedAnswer, NewMessage, PoolOptions, StoreError};
use crate::domain::{
    ChatSession, ClientMessageId, Message, MessageId, Post, PostId, Preferences, SessionId, SocialPost,
    UserId,
};

/// Chat data in PostgreSQL (`migrations/postgres`).
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects and applies the PostgreSQL migrations.
    pub async fn connect(url: &str, options: &PoolOptions) -> Result<Self, StoreError> {
        let connect = url.parse::<PgConnectOptions>()?.statement_cache_capacity(STATEMENT_CACHE);
        // Migrations on a connection of their own: they may take longer than a statement may.
        let mut migrating = PgConnection::connect_with(&connect).await?;
        sqlx::migrate!("migrations/postgres").run(&mut migrating).await?;
        migrating.close().await?;
        let connect = if options.statement_timeout.is_zero() {
            connect
        } else {
            let ms = options.statement_timeout.as_millis().to_string();
            connect.options([("statement_timeout", ms)])
        };
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        Ok(Self { pool })
    }
}

impl_store_for!(PostgresStore);
