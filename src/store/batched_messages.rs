//! The three statements every answer makes (its exchange inserted when the message is
//! accepted, the session's recent messages read for its context, the exchange updated when the
//! answer ends), gathered across answers: what queues while a statement runs goes out as one
//! statement for many answers. Under load this is what the database spends least on: a
//! statement's fixed cost (round trips, planning, commit) is paid once per batch instead of once
//! per answer (docs/benchmarks.md). At rest nothing waits: a batch of one is the plain statement.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use super::{FinishedAnswer, NewMessage, Store, StoreError};
use crate::domain::{Message, MessageId, MessageStatus, SessionId, SocialPost, TokenUsage};

/// Most answers in one statement (each distinct size is a prepared statement per connection;
/// `STATEMENT_CACHE` has room for all of them).
const MAX_BATCH: usize = 32;

/// Parts waiting for a statement, at most, before callers wait to queue.
const QUEUE: usize = 4_096;

/// Sends the answers' statements to the store in batches.
pub struct BatchedMessages {
    inserts: mpsc::Sender<Pending<NewMessage, ()>>,
    recents: mpsc::Sender<Pending<Recent, Vec<Message>>>,
    finishes: mpsc::Sender<Pending<Finished, ()>>,
}

/// A statement's part and who waits for its outcome.
struct Pending<T, R> {
    part: T,
    done: oneshot::Sender<Result<R, StoreError>>,
}

/// A read of a session's newest messages.
struct Recent {
    session_id: SessionId,
    limit: u32,
}

/// An answer's end, owned: it waits in a queue.
struct Finished {
    id: MessageId,
    ai_response: String,
    posts: Vec<SocialPost>,
    status: MessageStatus,
    usage: Option<TokenUsage>,
}

impl Finished {
    fn answer(&self) -> FinishedAnswer<'_> {
        FinishedAnswer {
            ai_response: &self.ai_response,
            posts: &self.posts,
            status: self.status,
            usage: self.usage,
        }
    }
}

impl BatchedMessages {
    /// Starts `statements` runners per kind of statement (at most that many statements of a
    /// kind run at once); they stop when this is dropped.
    pub fn new(store: Arc<dyn Store>, statements: usize) -> Self {
        let (inserts, queue) = mpsc::channel(QUEUE);
        spawn_runners(queue, statements, store.clone(), insert_batch);
        let (recents, queue) = mpsc::channel(QUEUE);
        spawn_runners(queue, statements, store.clone(), recent_batch);
        let (finishes, queue) = mpsc::channel(QUEUE);
        spawn_runners(queue, statements, store, finish_batch);
        Self { inserts, recents, finishes }
    }

    /// Stores a new exchange; [`StoreError::Duplicate`] when its client message id was used.
    pub async fn insert(&self, message: NewMessage) -> Result<(), StoreError> {
        queue(&self.inserts, message).await
    }

    /// A session's newest `limit` messages, oldest first (as `Store::recent_messages`).
    pub async fn recent(&self, session_id: SessionId, limit: u32) -> Result<Vec<Message>, StoreError> {
        queue(&self.recents, Recent { session_id, limit }).await
    }

    /// Stores how an exchange ended.
    pub async fn finish(&self, id: MessageId, answer: FinishedAnswer<'_>) -> Result<(), StoreError> {
        let finished = Finished {
            id,
            ai_response: answer.ai_response.to_owned(),
            posts: answer.posts.to_vec(),
            status: answer.status,
            usage: answer.usage,
        };
        queue(&self.finishes, finished).await
    }
}

async fn queue<T, R>(queue: &mpsc::Sender<Pending<T, R>>, part: T) -> Result<R, StoreError> {
    let (done, outcome) = oneshot::channel();
    queue.send(Pending { part, done }).await.map_err(|_| closed())?;
    outcome.await.map_err(|_| closed())?
}

fn closed() -> StoreError {
    StoreError::Unavailable(sqlx::Error::PoolClosed)
}

fn spawn_runners<T, R, W, F>(
    queue: mpsc::Receiver<Pending<T, R>>,
    runners: usize,
    store: Arc<dyn Store>,
    run: W,
) where
    T: Send + 'static,
    R: Send + 'static,
    W: Fn(Arc<dyn Store>, Vec<T>) -> F + Copy + Send + 'static,
    F: Future<Output = Vec<Result<R, StoreError>>> + Send,
{
    let queue = Arc::new(Mutex::new(queue));
    for _ in 0..runners.max(1) {
        let (queue, store) = (queue.clone(), store.clone());
        tokio::spawn(async move {
            loop {
                let mut batch = Vec::with_capacity(MAX_BATCH);
                // One runner at a time takes what has queued; the others run their statements.
                if queue.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
                    return;
                }
                let (parts, waiting): (Vec<T>, Vec<_>) = batch.into_iter().map(|p| (p.part, p.done)).unzip();
                let outcomes = run(store.clone(), parts).await;
                for (done, outcome) in waiting.into_iter().zip(outcomes) {
                    // The caller may have gone (its task cancelled): a write stands anyway.
                    let _ = done.send(outcome);
                }
            }
        });
    }
}

async fn insert_batch(store: Arc<dyn Store>, messages: Vec<NewMessage>) -> Vec<Result<(), StoreError>> {
    if let [message] = messages.as_slice() {
        return vec![store.insert_message(message).await];
    }
    match store.insert_messages(&messages).await {
        Ok(stored) => stored
            .into_iter()
            .map(|stored| if stored { Ok(()) } else { Err(StoreError::Duplicate("clientMessageId")) })
            .collect(),
        Err(e) => one_by_one(e, &messages, |m| store.insert_message(m)).await,
    }
}

async fn recent_batch(store: Arc<dyn Store>, reads: Vec<Recent>) -> Vec<Result<Vec<Message>, StoreError>> {
    if let [read] = reads.as_slice() {
        return vec![store.recent_messages(read.session_id, read.limit, None).await];
    }
    let limit = reads.iter().map(|r| r.limit).max().unwrap_or(0);
    let mut sessions: Vec<SessionId> = reads.iter().map(|r| r.session_id).collect();
    sessions.sort_unstable();
    sessions.dedup();
    let rows = match store.recent_messages_of(&sessions, limit).await {
        Ok(rows) => rows,
        Err(e) => return one_by_one(e, &reads, |r| store.recent_messages(r.session_id, r.limit, None)).await,
    };
    let mut by_session: HashMap<SessionId, Vec<Message>> = HashMap::new();
    for message in rows {
        by_session.entry(message.session_id).or_default().push(message);
    }
    reads
        .iter()
        .map(|read| {
            let all = by_session.get(&read.session_id).map(Vec::as_slice).unwrap_or_default();
            // Oldest first; the newest `limit` of them.
            Ok(all[all.len().saturating_sub(read.limit as usize)..].to_vec())
        })
        .collect()
}

async fn finish_batch(store: Arc<dyn Store>, answers: Vec<Finished>) -> Vec<Result<(), StoreError>> {
    if let [answer] = answers.as_slice() {
        return vec![store.finish_message(answer.id, answer.answer()).await];
    }
    let rows: Vec<(MessageId, FinishedAnswer<'_>)> = answers.iter().map(|a| (a.id, a.answer())).collect();
    match store.finish_messages(&rows).await {
        Ok(()) => answers.iter().map(|_| Ok(())).collect(),
        Err(e) => one_by_one(e, &answers, |a| store.finish_message(a.id, a.answer())).await,
    }
}

/// After a batch failed: when the database is out of reach, every part fails the same way;
/// otherwise one part spoiled the statement (its session deleted meanwhile, say), so each runs
/// alone and gets its own outcome.
async fn one_by_one<'a, T, R, F>(
    failure: StoreError,
    parts: &'a [T],
    run: impl Fn(&'a T) -> F,
) -> Vec<Result<R, StoreError>>
where
    F: Future<Output = Result<R, StoreError>>,
{
    if let StoreError::Unavailable(e) = &failure {
        // `StoreError` holds errors that cannot be cloned: each part gets one with the reason.
        let reason = e.to_string();
        return parts
            .iter()
            .map(|_| Err(StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(reason.clone())))))
            .collect();
    }
    let mut outcomes = Vec::with_capacity(parts.len());
    for part in parts {
        outcomes.push(run(part).await);
    }
    outcomes
}
