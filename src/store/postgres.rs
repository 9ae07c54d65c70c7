//! The PostgreSQL backend.

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::Json;

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
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(url.parse::<PgConnectOptions>()?.statement_cache_capacity(STATEMENT_CACHE))
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

impl_store_for!(PostgresStore);
