//! The one [`Store`] of both backends: the shared SQL (`sql.rs`) run on a pool of database
//! `DB`. What differs per database (the batched statements, a statement's count of rows) is its
//! [`Dialect`], in `postgres.rs` and `sqlite.rs`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};
use uuid::Uuid;

use super::sql;
use super::{FinishedAnswer, NewMessage, Store, StoreError};
use crate::domain::{
    ChatSession, ClientMessageId, Exchange, Message, MessageId, Parent, Post, PostId, Preferences, SessionId,
    SocialPost, UserId,
};

/// What a database does its own way for the [`SqlStore`].
#[async_trait]
pub trait Dialect: Database {
    /// Most answers one batched statement should hold.
    const MAX_BATCH: usize;
    /// Stores several new exchanges in one statement (see `Store::insert_messages`).
    async fn insert_many(pool: &Pool<Self>, messages: &[NewMessage]) -> Result<Vec<bool>, StoreError>;
    /// The exchanges on the paths up from several exchanges in one statement (see
    /// `Store::path_exchanges`).
    async fn path_exchanges_of(
        pool: &Pool<Self>,
        starts: &[MessageId],
        limit: u32,
    ) -> Result<Vec<(MessageId, Exchange)>, StoreError>;
    /// Stores how several exchanges ended in one statement (those still `streaming`); the
    /// ids of those stored.
    async fn finish_many(
        pool: &Pool<Self>,
        answers: &[(MessageId, FinishedAnswer<'_>)],
    ) -> Result<Vec<MessageId>, StoreError>;
    /// How many rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

/// Chat data in a SQL database (`PostgresStore`, `SqliteStore`).
pub struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone() }
    }
}

/// sqlx's bounds for running the shared SQL on `DB`: its executors, and every type bound or read.
#[async_trait]
impl<DB> Store for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<bool>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<Uuid>: Encode<'q, DB> + Type<DB>,
    for<'q> Json<&'q [SocialPost]>: Encode<'q, DB> + Type<DB>,
    for<'q> Json<&'q Vec<crate::domain::Platform>>: Encode<'q, DB> + Type<DB>,
    for<'r> sql::PostRow: FromRow<'r, DB::Row>,
    for<'r> sql::SessionRow: FromRow<'r, DB::Row>,
    for<'r> sql::MessageRow: FromRow<'r, DB::Row>,
    for<'r> sql::BranchMessageRow: FromRow<'r, DB::Row>,
    for<'r> (Uuid,): FromRow<'r, DB::Row>,
    for<'r> sql::PreferencesRow: FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query(sql::PING).execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn max_batch(&self) -> usize {
        DB::MAX_BATCH
    }

    async fn insert_post(&self, post: &Post) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(sql::INSERT_POST)
            .bind(post.id.as_uuid())
            .bind(post.owner.as_str())
            .bind(&post.url)
            .bind(&post.title)
            .bind(post.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(sql::INSERT_POST_EXPANDED)
            .bind(post.id.as_uuid())
            .bind(&post.expanded.content)
            .bind(&post.expanded.summary)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_post(&self, id: PostId) -> Result<Option<Post>, StoreError> {
        sqlx::query_as::<_, sql::PostRow>(sql::GET_POST)
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await?
            .map(Post::try_from)
            .transpose()
    }

    async fn insert_session(&self, s: &ChatSession) -> Result<(), StoreError> {
        sqlx::query(sql::INSERT_SESSION)
            .bind(s.id.as_uuid())
            .bind(s.owner.as_str())
            .bind(s.post_id.as_uuid())
            .bind(&s.title)
            .bind(&s.summary)
            .bind(s.last_summary_at)
            .bind(s.created_at)
            .bind(s.updated_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_session(&self, id: SessionId) -> Result<Option<ChatSession>, StoreError> {
        sqlx::query_as::<_, sql::SessionRow>(&sql::get_session())
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await?
            .map(ChatSession::try_from)
            .transpose()
    }

    async fn list_sessions(&self, owner: &UserId) -> Result<Vec<ChatSession>, StoreError> {
        sqlx::query_as::<_, sql::SessionRow>(&sql::list_sessions())
            .bind(owner.as_str())
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(ChatSession::try_from)
            .collect()
    }

    async fn delete_session(&self, id: SessionId) -> Result<bool, StoreError> {
        // The daily budget reads at most the last day's usage.
        let day_ago = crate::domain::now() - chrono::Duration::days(1);
        let mut tx = self.pool.begin().await?;
        sqlx::query(sql::PRUNE_USAGE_OF_DELETED).bind(day_ago).execute(&mut *tx).await?;
        sqlx::query(sql::KEEP_USAGE_OF_DELETED).bind(id.as_uuid()).bind(day_ago).execute(&mut *tx).await?;
        sqlx::query(sql::DELETE_SESSION_MESSAGES).bind(id.as_uuid()).execute(&mut *tx).await?;
        let deleted = sqlx::query(sql::DELETE_SESSION).bind(id.as_uuid()).execute(&mut *tx).await?;
        let deleted = DB::rows_affected(&deleted);
        tx.commit().await?;
        Ok(deleted > 0)
    }

    async fn update_session_summary(
        &self,
        id: SessionId,
        summary: &str,
        at: DateTime<Utc>,
        through: Option<MessageId>,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::UPDATE_SESSION_SUMMARY)
            .bind(id.as_uuid())
            .bind(summary)
            .bind(at)
            .bind(through.map(|m| m.as_uuid()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn clear_session_summary(&self, id: SessionId) -> Result<(), StoreError> {
        sqlx::query(sql::CLEAR_SESSION_SUMMARY).bind(id.as_uuid()).execute(&self.pool).await?;
        Ok(())
    }

    async fn update_session_title(
        &self,
        id: SessionId,
        title: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::UPDATE_SESSION_TITLE)
            .bind(id.as_uuid())
            .bind(title)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_message(&self, m: &NewMessage) -> Result<(), StoreError> {
        sqlx::query(&sql::insert_message())
            .bind(m.id.as_uuid())
            .bind(m.session_id.as_uuid())
            .bind(m.client_message_id.as_ref().map(|c| c.as_str()))
            .bind(&m.user_message)
            .bind(m.intent_type.as_str())
            .bind(Json(&[] as &[SocialPost]))
            .bind(m.created_at)
            .bind(m.parent == Parent::ActiveBranch)
            .bind(m.parent.exchange().map(|p| p.as_uuid()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn finish_message(&self, id: MessageId, answer: FinishedAnswer<'_>) -> Result<bool, StoreError> {
        self.finish_taken_over(id, 0, answer).await
    }

    async fn take_over_message(&self, id: MessageId, fence: u64) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::TAKE_OVER_MESSAGE)
            .bind(id.as_uuid())
            .bind(i64::try_from(fence).unwrap_or(i64::MAX))
            .bind(crate::domain::now())
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn message_fence(&self, id: MessageId) -> Result<Option<u64>, StoreError> {
        let fence: Option<(i64,)> =
            sqlx::query_as(sql::MESSAGE_FENCE).bind(id.as_uuid()).fetch_optional(&self.pool).await?;
        Ok(fence.map(|(fence,)| u64::try_from(fence).unwrap_or(0)))
    }

    async fn finish_taken_over(
        &self,
        id: MessageId,
        fence: u64,
        answer: FinishedAnswer<'_>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::FINISH_MESSAGE)
            .bind(id.as_uuid())
            .bind(answer.ai_response)
            .bind(Json(answer.posts))
            .bind(answer.status.as_str())
            .bind(crate::domain::now())
            .bind(answer.usage_columns().0)
            .bind(answer.usage_columns().1)
            .bind(answer.usage_columns().2)
            .bind(answer.cut)
            .bind(i64::try_from(fence).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    // The batched statements differ: PostgreSQL binds arrays, SQLite writes a row each.
    async fn insert_messages(&self, messages: &[NewMessage]) -> Result<Vec<bool>, StoreError> {
        DB::insert_many(&self.pool, messages).await
    }

    async fn path_exchanges(
        &self,
        starts: &[MessageId],
        limit: u32,
    ) -> Result<Vec<(MessageId, Exchange)>, StoreError> {
        DB::path_exchanges_of(&self.pool, starts, limit).await
    }

    async fn finish_messages(
        &self,
        answers: &[(MessageId, FinishedAnswer<'_>)],
    ) -> Result<Vec<MessageId>, StoreError> {
        DB::finish_many(&self.pool, answers).await
    }

    async fn find_message_by_client_id(
        &self,
        session: SessionId,
        client_message_id: &ClientMessageId,
    ) -> Result<Option<Message>, StoreError> {
        sqlx::query_as::<_, sql::MessageRow>(&sql::find_message_by_client_id())
            .bind(session.as_uuid())
            .bind(client_message_id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(Message::try_from)
            .transpose()
    }

    async fn get_message(&self, session: SessionId, id: MessageId) -> Result<Option<Message>, StoreError> {
        sqlx::query_as::<_, sql::MessageRow>(&sql::get_message())
            .bind(session.as_uuid())
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await?
            .map(Message::try_from)
            .transpose()
    }

    async fn branch_messages(
        &self,
        session: SessionId,
        limit: u32,
        before: Option<MessageId>,
    ) -> Result<Vec<Message>, StoreError> {
        let query = match before {
            None => sql::active_branch_messages(),
            Some(_) => sql::branch_messages_before(),
        };
        let mut query =
            sqlx::query_as::<_, sql::BranchMessageRow>(&query).bind(session.as_uuid()).bind(i64::from(limit));
        if let Some(before) = before {
            query = query.bind(before.as_uuid());
        }
        query.fetch_all(&self.pool).await?.into_iter().map(Message::try_from).collect()
    }

    async fn all_messages(&self, session: SessionId) -> Result<Vec<Message>, StoreError> {
        let messages = sqlx::query_as::<_, sql::MessageRow>(&sql::all_messages())
            .bind(session.as_uuid())
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(Message::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(super::with_siblings(messages))
    }

    async fn select_branch(
        &self,
        session: SessionId,
        through: MessageId,
    ) -> Result<Option<MessageId>, StoreError> {
        // Two statements, not one transaction (SQLite refuses a reader turned writer under
        // load): an exchange made meanwhile is newer than the selection (stamped after the
        // read), or follows the exchange selected, so it is active (`sql::active_leaf`).
        let leaf: Option<(Uuid,)> = sqlx::query_as(sql::NEWEST_BELOW)
            .bind(session.as_uuid())
            .bind(through.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        let Some((leaf,)) = leaf else { return Ok(None) };
        sqlx::query(sql::SELECT_BRANCH)
            .bind(session.as_uuid())
            .bind(leaf)
            .bind(crate::domain::now())
            .execute(&self.pool)
            .await?;
        Ok(Some(leaf.into()))
    }

    async fn newest_message(&self, session: SessionId) -> Result<Option<MessageId>, StoreError> {
        let newest: Option<(Uuid,)> =
            sqlx::query_as(sql::NEWEST_MESSAGE).bind(session.as_uuid()).fetch_optional(&self.pool).await?;
        Ok(newest.map(|(id,)| id.into()))
    }

    async fn on_path(&self, from: MessageId, exchange: MessageId) -> Result<bool, StoreError> {
        let (found,): (i64,) = sqlx::query_as(sql::ON_PATH)
            .bind(from.as_uuid())
            .bind(exchange.as_uuid())
            .fetch_one(&self.pool)
            .await?;
        Ok(found > 0)
    }

    async fn message_session(&self, id: MessageId) -> Result<Option<SessionId>, StoreError> {
        let session: Option<(Uuid,)> =
            sqlx::query_as(sql::MESSAGE_SESSION).bind(id.as_uuid()).fetch_optional(&self.pool).await?;
        Ok(session.map(|(session,)| session.into()))
    }

    async fn interrupt_streaming(&self, created_before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query(sql::INTERRUPT_STREAMING)
            .bind(crate::domain::now())
            .bind(created_before)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn interrupt_message(&self, id: MessageId, ai_response: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::INTERRUPT_MESSAGE)
            .bind(id.as_uuid())
            .bind(ai_response)
            .bind(crate::domain::now())
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn tokens_used_since(&self, user: &UserId, since: DateTime<Utc>) -> Result<u64, StoreError> {
        let (used,): (i64,) = sqlx::query_as(sql::TOKENS_USED_SINCE)
            .bind(user.as_str())
            .bind(since)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(used).unwrap_or(0))
    }

    async fn get_preferences(&self, user: &UserId) -> Result<Option<Preferences>, StoreError> {
        Ok(sqlx::query_as::<_, sql::PreferencesRow>(sql::GET_PREFERENCES)
            .bind(user.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(Preferences::from))
    }

    async fn put_preferences(&self, user: &UserId, p: &Preferences) -> Result<(), StoreError> {
        sqlx::query(sql::PUT_PREFERENCES)
            .bind(user.as_str())
            .bind(&p.voice)
            .bind(&p.style)
            .bind(Json(&p.platforms))
            .bind(p.hashtags)
            .bind(p.emoji)
            .bind(crate::domain::now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
