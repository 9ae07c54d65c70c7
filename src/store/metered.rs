//! A `Store` that counts and times every query by operation (`postchat_db_queries_total`,
//! `postchat_db_query_seconds`), around either backend, and bounds each call's time
//! (`PoolOptions::call_timeout`).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{FinishedAnswer, NewMessage, Store, StoreError};
use crate::domain::{
    ChatSession, ClientMessageId, Exchange, Message, MessageId, Post, PostId, Preferences, SessionId, UserId,
};

pub struct MeteredStore {
    inner: Arc<dyn Store>,
    /// The longest a call may take before it fails as unavailable (`PoolOptions::call_timeout`).
    call_timeout: Option<Duration>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, call_timeout: Option<Duration>) -> Self {
        Self { inner, call_timeout }
    }

    /// Counts and times `query`, and gives up on it after the call timeout: a database that
    /// stopped answering (frozen, its network gone) must not hold the caller, nor a batch of
    /// answers, forever.
    async fn timed<T>(
        &self,
        op: &'static str,
        query: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = match self.call_timeout {
            None => query.await,
            Some(limit) => tokio::time::timeout(limit, query).await.unwrap_or_else(|_| {
                let unanswered = format!("no answer from the database within {} ms", limit.as_millis());
                Err(StoreError::Unavailable(sqlx::Error::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    unanswered,
                ))))
            }),
        };
        record(op, started, &result);
        result
    }
}

fn record<T>(op: &'static str, started: Instant, result: &Result<T, StoreError>) {
    // A database out of reach (or too slow: timed out, locked) apart from a failed query.
    let outcome = match result {
        Ok(_) => "ok",
        Err(StoreError::Unavailable(_)) => "unavailable",
        Err(_) => "error",
    };
    metrics::counter!("postchat_db_queries_total", "op" => op, "outcome" => outcome).increment(1);
    metrics::histogram!("postchat_db_query_seconds", "op" => op).record(started.elapsed().as_secs_f64());
}

#[async_trait]
impl Store for MeteredStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", self.inner.ping()).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }
    async fn insert_post(&self, post: &Post) -> Result<(), StoreError> {
        self.timed("insert_post", self.inner.insert_post(post)).await
    }
    async fn get_post(&self, id: PostId) -> Result<Option<Post>, StoreError> {
        self.timed("get_post", self.inner.get_post(id)).await
    }
    async fn insert_session(&self, session: &ChatSession) -> Result<(), StoreError> {
        self.timed("insert_session", self.inner.insert_session(session)).await
    }
    async fn get_session(&self, id: SessionId) -> Result<Option<ChatSession>, StoreError> {
        self.timed("get_session", self.inner.get_session(id)).await
    }
    async fn list_sessions(&self, owner: &UserId) -> Result<Vec<ChatSession>, StoreError> {
        self.timed("list_sessions", self.inner.list_sessions(owner)).await
    }
    async fn delete_session(&self, id: SessionId) -> Result<bool, StoreError> {
        self.timed("delete_session", self.inner.delete_session(id)).await
    }
    async fn update_session_summary(
        &self,
        id: SessionId,
        summary: &str,
        at: DateTime<Utc>,
        through: Option<MessageId>,
    ) -> Result<(), StoreError> {
        self.timed("update_session_summary", self.inner.update_session_summary(id, summary, at, through))
            .await
    }
    async fn clear_session_summary(&self, id: SessionId) -> Result<(), StoreError> {
        self.timed("clear_session_summary", self.inner.clear_session_summary(id)).await
    }
    async fn update_session_title(
        &self,
        id: SessionId,
        title: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.timed("update_session_title", self.inner.update_session_title(id, title, at)).await
    }
    async fn insert_messages(&self, messages: &[NewMessage]) -> Result<Vec<bool>, StoreError> {
        metrics::histogram!("postchat_db_batch_rows", "op" => "insert_messages")
            .record(messages.len() as f64);
        self.timed("insert_messages", self.inner.insert_messages(messages)).await
    }
    async fn path_exchanges(
        &self,
        starts: &[MessageId],
        limit: u32,
    ) -> Result<Vec<(MessageId, Exchange)>, StoreError> {
        metrics::histogram!("postchat_db_batch_rows", "op" => "path_exchanges").record(starts.len() as f64);
        self.timed("path_exchanges", self.inner.path_exchanges(starts, limit)).await
    }
    async fn finish_messages(
        &self,
        answers: &[(MessageId, FinishedAnswer<'_>)],
    ) -> Result<Vec<MessageId>, StoreError> {
        metrics::histogram!("postchat_db_batch_rows", "op" => "finish_messages").record(answers.len() as f64);
        self.timed("finish_messages", self.inner.finish_messages(answers)).await
    }
    async fn insert_message(&self, message: &NewMessage) -> Result<(), StoreError> {
        self.timed("insert_message", self.inner.insert_message(message)).await
    }
    async fn finish_message(&self, id: MessageId, answer: FinishedAnswer<'_>) -> Result<bool, StoreError> {
        self.timed("finish_message", self.inner.finish_message(id, answer)).await
    }
    async fn find_message_by_client_id(
        &self,
        session: SessionId,
        key: &ClientMessageId,
    ) -> Result<Option<Message>, StoreError> {
        self.timed("find_message_by_client_id", self.inner.find_message_by_client_id(session, key)).await
    }
    async fn get_message(&self, session: SessionId, id: MessageId) -> Result<Option<Message>, StoreError> {
        self.timed("get_message", self.inner.get_message(session, id)).await
    }
    async fn branch_messages(
        &self,
        session: SessionId,
        limit: u32,
        before: Option<MessageId>,
    ) -> Result<Vec<Message>, StoreError> {
        self.timed("branch_messages", self.inner.branch_messages(session, limit, before)).await
    }
    async fn all_messages(&self, session: SessionId) -> Result<Vec<Message>, StoreError> {
        self.timed("all_messages", self.inner.all_messages(session)).await
    }
    async fn select_branch(
        &self,
        session: SessionId,
        through: MessageId,
    ) -> Result<Option<MessageId>, StoreError> {
        self.timed("select_branch", self.inner.select_branch(session, through)).await
    }
    async fn newest_message(&self, session: SessionId) -> Result<Option<MessageId>, StoreError> {
        self.timed("newest_message", self.inner.newest_message(session)).await
    }
    async fn on_path(&self, from: MessageId, exchange: MessageId) -> Result<bool, StoreError> {
        self.timed("on_path", self.inner.on_path(from, exchange)).await
    }
    async fn message_session(&self, id: MessageId) -> Result<Option<SessionId>, StoreError> {
        self.timed("message_session", self.inner.message_session(id)).await
    }
    async fn interrupt_streaming(&self, created_before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.timed("interrupt_streaming", self.inner.interrupt_streaming(created_before)).await
    }

    async fn take_over_message(&self, id: MessageId, fence: u64) -> Result<bool, StoreError> {
        self.timed("take_over_message", self.inner.take_over_message(id, fence)).await
    }
    async fn message_fence(&self, id: MessageId) -> Result<Option<u64>, StoreError> {
        self.timed("message_fence", self.inner.message_fence(id)).await
    }
    async fn finish_taken_over(
        &self,
        id: MessageId,
        fence: u64,
        answer: FinishedAnswer<'_>,
    ) -> Result<bool, StoreError> {
        self.timed("finish_taken_over", self.inner.finish_taken_over(id, fence, answer)).await
    }
    async fn interrupt_message(&self, id: MessageId, ai_response: &str) -> Result<bool, StoreError> {
        self.timed("interrupt_message", self.inner.interrupt_message(id, ai_response)).await
    }
    async fn tokens_used_since(&self, user: &UserId, since: DateTime<Utc>) -> Result<u64, StoreError> {
        self.timed("tokens_used_since", self.inner.tokens_used_since(user, since)).await
    }
    async fn get_preferences(&self, user: &UserId) -> Result<Option<Preferences>, StoreError> {
        self.timed("get_preferences", self.inner.get_preferences(user)).await
    }
    async fn put_preferences(&self, user: &UserId, prefs: &Preferences) -> Result<(), StoreError> {
        self.timed("put_preferences", self.inner.put_preferences(user, prefs)).await
    }
}
