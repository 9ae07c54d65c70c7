//! The PostgreSQL backend.

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgQueryResult};
use sqlx::types::Json;
use sqlx::Connection;
use sqlx::Postgres;

use super::sql;
use super::sql_store::{Dialect, SqlStore};
use super::STATEMENT_CACHE;
use super::{FinishedAnswer, NewMessage, PoolOptions, StoreError};
use crate::domain::{Exchange, MessageId, Parent};

/// Chat data in PostgreSQL (`migrations/postgres`).
pub type PostgresStore = SqlStore<Postgres>;

impl SqlStore<Postgres> {
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
        let pool = options.sqlx().connect_with(connect).await?;
        Ok(Self { pool })
    }
}

/// Taken ids and client message ids are skipped, not errors: the ids returned say which rows
/// went in.
fn insert_messages() -> String {
    format!(
        "INSERT INTO messages \
         (id, chat_session_id, client_message_id, user_message, ai_response, intent_type, posts, \
          status, created_at, updated_at, parent_id) \
         SELECT id, chat_session_id, client_message_id, user_message, '', intent_type, '[]', \
          'streaming', created_at, created_at, {} \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], \
          $7::bool[], $8::uuid[]) \
          AS v (id, chat_session_id, client_message_id, user_message, intent_type, created_at, \
          follows_active, parent_id) \
         ON CONFLICT DO NOTHING RETURNING id",
        sql::parent_of_new("v.follows_active", "v.parent_id", "v.chat_session_id")
    )
}
const FINISH_MESSAGES: &str = "UPDATE messages SET ai_response = v.ai_response, posts = v.posts, \
     status = v.status, updated_at = $5, prompt_tokens = v.prompt_tokens, \
     completion_tokens = v.completion_tokens, usage_estimated = v.usage_estimated, cut = v.cut \
     FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::text[], $6::int8[], $7::int8[], $8::bool[], \
      $9::bool[]) \
      AS v (id, ai_response, posts, status, prompt_tokens, completion_tokens, usage_estimated, cut) \
     WHERE messages.id = v.id AND messages.status = 'streaming' AND messages.fence = 0 RETURNING messages.id";

/// The batched statements (`Store::insert_messages`, `path_exchanges`, `finish_messages`):
/// a column of the batch is an array parameter, so one prepared statement (and, after its first
/// runs, one cached plan) serves every batch size.
#[async_trait::async_trait]
impl Dialect for Postgres {
    /// Larger batches cost no more statements, only rows (docs/benchmarks.md).
    const MAX_BATCH: usize = 256;

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn insert_many(pool: &PgPool, messages: &[NewMessage]) -> Result<Vec<bool>, StoreError> {
        let stored: Vec<uuid::Uuid> = sqlx::query_scalar(&insert_messages())
            .bind(messages.iter().map(|m| m.id.as_uuid()).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.session_id.as_uuid()).collect::<Vec<_>>())
            .bind(
                messages.iter().map(|m| m.client_message_id.as_ref().map(|c| c.as_str())).collect::<Vec<_>>(),
            )
            .bind(messages.iter().map(|m| m.user_message.as_str()).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.intent_type.as_str()).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.created_at).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.parent == Parent::ActiveBranch).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.parent.exchange().map(|p| p.as_uuid())).collect::<Vec<_>>())
            .fetch_all(pool)
            .await?;
        Ok(messages.iter().map(|m| stored.contains(&m.id.as_uuid())).collect())
    }

    async fn path_exchanges_of(
        pool: &PgPool,
        starts: &[MessageId],
        limit: u32,
    ) -> Result<Vec<(MessageId, Exchange)>, StoreError> {
        let rows = sqlx::query_as::<_, sql::PathExchangeRow>(&sql::path_exchanges(
            "SELECT UNNEST($1::uuid[])",
            "$2",
        ))
        .bind(starts.iter().map(|s| s.as_uuid()).collect::<Vec<_>>())
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn finish_many(
        pool: &PgPool,
        answers: &[(MessageId, FinishedAnswer<'_>)],
    ) -> Result<Vec<MessageId>, StoreError> {
        let ids: Vec<(uuid::Uuid,)> = sqlx::query_as(FINISH_MESSAGES)
            .bind(answers.iter().map(|(id, _)| id.as_uuid()).collect::<Vec<_>>())
            .bind(answers.iter().map(|(_, a)| a.ai_response).collect::<Vec<_>>())
            .bind(answers.iter().map(|(_, a)| Json(a.posts)).collect::<Vec<_>>())
            .bind(answers.iter().map(|(_, a)| a.status.as_str()).collect::<Vec<_>>())
            .bind(crate::domain::now())
            .bind(answers.iter().map(|(_, a)| a.usage_columns().0).collect::<Vec<_>>())
            .bind(answers.iter().map(|(_, a)| a.usage_columns().1).collect::<Vec<_>>())
            .bind(answers.iter().map(|(_, a)| a.usage_columns().2).collect::<Vec<_>>())
            .bind(answers.iter().map(|(_, a)| a.cut).collect::<Vec<_>>())
            .fetch_all(pool)
            .await?;
        Ok(ids.into_iter().map(|(id,)| MessageId::from(id)).collect())
    }
}
