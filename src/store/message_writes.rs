//! The two writes every answer makes (its exchange inserted when the message is accepted, then
//! updated when the answer ends), gathered across answers: what queues while a statement runs
//! goes out as one multi-row statement. Under load this is what the database spends least on:
//! a statement's fixed cost (round trips, planning, commit) is paid once per batch instead of
//! once per answer (docs/benchmarks.md). At rest nothing waits: a batch of one is the plain
//! single-row statement.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use super::{FinishedAnswer, NewMessage, Store, StoreError};
use crate::domain::{MessageId, MessageStatus, SocialPost, TokenUsage};

/// Most rows in one statement (each distinct size is a prepared statement per connection, and
/// sqlx keeps 100 of them).
const MAX_BATCH: usize = 32;

/// Writes waiting for a statement, at most, before callers wait to queue.
const QUEUE: usize = 4_096;

/// Sends the answers' writes to the store in batches.
pub struct MessageWrites {
    inserts: mpsc::Sender<Pending<NewMessage>>,
    finishes: mpsc::Sender<Pending<Finished>>,
}

/// A write and who waits for its outcome.
struct Pending<T> {
    write: T,
    done: oneshot::Sender<Result<(), StoreError>>,
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

impl MessageWrites {
    /// Starts `statements` writers per kind of write (at most that many statements of a kind
    /// run at once); they stop when this is dropped.
    pub fn new(store: Arc<dyn Store>, statements: usize) -> Self {
        let (inserts, queue) = mpsc::channel(QUEUE);
        spawn_writers(queue, statements, store.clone(), insert_batch);
        let (finishes, queue) = mpsc::channel(QUEUE);
        spawn_writers(queue, statements, store, finish_batch);
        Self { inserts, finishes }
    }

    /// Stores a new exchange; [`StoreError::Duplicate`] when its client message id was used.
    pub async fn insert(&self, message: NewMessage) -> Result<(), StoreError> {
        queue(&self.inserts, message).await
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

async fn queue<T>(queue: &mpsc::Sender<Pending<T>>, write: T) -> Result<(), StoreError> {
    let (done, outcome) = oneshot::channel();
    queue.send(Pending { write, done }).await.map_err(|_| closed())?;
    outcome.await.map_err(|_| closed())?
}

fn closed() -> StoreError {
    StoreError::Unavailable(sqlx::Error::PoolClosed)
}

fn spawn_writers<T, W, F>(queue: mpsc::Receiver<Pending<T>>, writers: usize, store: Arc<dyn Store>, write: W)
where
    T: Send + 'static,
    W: Fn(Arc<dyn Store>, Vec<T>) -> F + Copy + Send + 'static,
    F: Future<Output = Vec<Result<(), StoreError>>> + Send,
{
    let queue = Arc::new(Mutex::new(queue));
    for _ in 0..writers.max(1) {
        let (queue, store) = (queue.clone(), store.clone());
        tokio::spawn(async move {
            loop {
                let mut batch = Vec::with_capacity(MAX_BATCH);
                // One writer at a time takes what has queued; the others run their statements.
                if queue.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
                    return;
                }
                let (writes, waiting): (Vec<T>, Vec<_>) =
                    batch.into_iter().map(|p| (p.write, p.done)).unzip();
                let outcomes = write(store.clone(), writes).await;
                for (done, outcome) in waiting.into_iter().zip(outcomes) {
                    // The caller may have gone (its task cancelled): the write stands anyway.
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

/// After a batch failed: when the database is out of reach, every write fails the same way;
/// otherwise one row spoiled the statement (its session deleted meanwhile, say), so each is
/// written alone and gets its own outcome.
async fn one_by_one<'a, T, F>(
    failure: StoreError,
    writes: &'a [T],
    write: impl Fn(&'a T) -> F,
) -> Vec<Result<(), StoreError>>
where
    F: Future<Output = Result<(), StoreError>>,
{
    if let StoreError::Unavailable(e) = &failure {
        let reason = e.to_string();
        return writes
            .iter()
            .map(|_| Err(StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(reason.clone())))))
            .collect();
    }
    let mut outcomes = Vec::with_capacity(writes.len());
    for w in writes {
        outcomes.push(write(w).await);
    }
    outcomes
}
