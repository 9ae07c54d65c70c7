//! The three statements every answer makes (its exchange inserted when the message is
//! accepted, the session's recent messages read for its context, the exchange updated when the
//! answer ends), gathered across answers: what queues while a statement runs goes out as one
//! statement for many answers. Under load this is what the database spends least on: a
//! statement's fixed cost (round trips, planning, commit) is paid once per batch instead of once
//! per answer (docs/benchmarks.md). At rest nothing waits: a batch of one is the plain statement.
//! When the database is the bottleneck, inserts go first: the ack waits for them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use super::{FinishedAnswer, NewMessage, Store, StoreError};
use crate::domain::{Exchange, MessageId, MessageStatus, SocialPost, TokenUsage};

/// Parts waiting for a statement, at most, before callers wait to queue.
const QUEUE: usize = 4_096;

/// Sends the answers' statements to the store in batches.
pub struct BatchedMessages {
    inserts: mpsc::Sender<Pending<NewMessage, ()>>,
    recents: mpsc::Sender<Pending<Recent, Vec<Exchange>>>,
    finishes: mpsc::Sender<Pending<Finished, bool>>,
}

/// A statement's part and who waits for its outcome.
struct Pending<T, R> {
    part: T,
    done: oneshot::Sender<Result<R, StoreError>>,
}

/// A read of the exchanges on the path up from one (a prompt's history).
struct Recent {
    from: MessageId,
    limit: u32,
}

/// An answer's end, owned: it waits in a queue.
struct Finished {
    id: MessageId,
    ai_response: String,
    posts: Vec<SocialPost>,
    status: MessageStatus,
    usage: Option<TokenUsage>,
    cut: bool,
}

impl Finished {
    fn answer(&self) -> FinishedAnswer<'_> {
        FinishedAnswer {
            ai_response: &self.ai_response,
            posts: &self.posts,
            status: self.status,
            usage: self.usage,
            cut: self.cut,
        }
    }
}

impl BatchedMessages {
    /// Starts `statements` runners shared by the three kinds of statement (at most that many
    /// statements run at once), which take the most urgent kind first (see [`Queues::next`]);
    /// they stop when this is dropped.
    pub fn new(store: Arc<dyn Store>, statements: usize) -> Self {
        let (inserts, insert_queue) = mpsc::channel(QUEUE);
        let (recents, recent_queue) = mpsc::channel(QUEUE);
        let (finishes, finish_queue) = mpsc::channel(QUEUE);
        let queues = Queues {
            inserts: insert_queue,
            recents: recent_queue,
            finishes: finish_queue,
            max_batch: store.max_batch().max(1),
        };
        spawn_runners(Arc::new(Mutex::new(queues)), statements, store);
        Self { inserts, recents, finishes }
    }

    /// Stores a new exchange; [`StoreError::Duplicate`] when its client message id was used.
    pub async fn insert(&self, message: NewMessage) -> Result<(), StoreError> {
        queue(&self.inserts, message).await
    }

    /// Up to `limit` exchanges on the path up from exchange `from` (included), oldest first
    /// (as `Store::path_exchanges`).
    pub async fn recent(&self, from: MessageId, limit: u32) -> Result<Vec<Exchange>, StoreError> {
        queue(&self.recents, Recent { from, limit }).await
    }

    /// Stores how an exchange ended, if it is still `streaming`; true when stored.
    pub async fn finish(&self, id: MessageId, answer: FinishedAnswer<'_>) -> Result<bool, StoreError> {
        let finished = Finished {
            id,
            ai_response: answer.ai_response.to_owned(),
            posts: answer.posts.to_vec(),
            status: answer.status,
            usage: answer.usage,
            cut: answer.cut,
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

/// The three queues, drained most urgent first.
struct Queues {
    inserts: mpsc::Receiver<Pending<NewMessage, ()>>,
    recents: mpsc::Receiver<Pending<Recent, Vec<Exchange>>>,
    finishes: mpsc::Receiver<Pending<Finished, bool>>,
    /// Most parts in one batch: the store's [`Store::max_batch`].
    max_batch: usize,
}

/// What one runner took: every part queued of one kind, up to [`Queues::max_batch`].
enum Batch {
    Inserts(Vec<Pending<NewMessage, ()>>),
    Recents(Vec<Pending<Recent, Vec<Exchange>>>),
    Finishes(Vec<Pending<Finished, bool>>),
}

impl Queues {
    /// The next batch, inserts before reads before finishes: the ack and `chat:stream:start`
    /// wait for the insert, the first token for the read, the terminal event for the finish.
    /// When the database is the bottleneck, the wait then builds up after the ack instead of
    /// before it. Nothing waits for ever: a session has at most one answer in flight, so ahead
    /// of a finish are at most one insert and one read per other session. `None` once
    /// `BatchedMessages` is dropped.
    async fn next(&mut self) -> Option<Batch> {
        let (mut inserts, mut recents, mut finishes) = (Vec::new(), Vec::new(), Vec::new());
        // All three senders go together: one closed queue means all are.
        tokio::select! {
            biased;
            n = self.inserts.recv_many(&mut inserts, self.max_batch) => (n > 0).then_some(Batch::Inserts(inserts)),
            n = self.recents.recv_many(&mut recents, self.max_batch) => (n > 0).then_some(Batch::Recents(recents)),
            n = self.finishes.recv_many(&mut finishes, self.max_batch) => (n > 0).then_some(Batch::Finishes(finishes)),
        }
    }
}

fn spawn_runners(queues: Arc<Mutex<Queues>>, runners: usize, store: Arc<dyn Store>) {
    for _ in 0..runners.max(1) {
        let (queues, store) = (queues.clone(), store.clone());
        tokio::spawn(async move {
            loop {
                // One runner at a time takes what has queued; the others run their statements.
                // (A statement of its own: the lock is released before the batch runs.)
                let Some(batch) = queues.lock().await.next().await else { return };
                match batch {
                    Batch::Inserts(batch) => settle(batch, |parts| insert_batch(store.clone(), parts)).await,
                    Batch::Recents(batch) => settle(batch, |parts| recent_batch(store.clone(), parts)).await,
                    Batch::Finishes(batch) => settle(batch, |parts| finish_batch(store.clone(), parts)).await,
                }
            }
        });
    }
}

/// Runs one batch and gives each waiting caller its own outcome.
async fn settle<T, R, F>(batch: Vec<Pending<T, R>>, run: impl FnOnce(Vec<T>) -> F)
where
    F: Future<Output = Vec<Result<R, StoreError>>>,
{
    let (parts, waiting): (Vec<T>, Vec<_>) = batch.into_iter().map(|p| (p.part, p.done)).unzip();
    let outcomes = run(parts).await;
    for (done, outcome) in waiting.into_iter().zip(outcomes) {
        // The caller may have gone (its task cancelled): a write stands anyway.
        let _ = done.send(outcome);
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

async fn recent_batch(store: Arc<dyn Store>, reads: Vec<Recent>) -> Vec<Result<Vec<Exchange>, StoreError>> {
    let limit = reads.iter().map(|r| r.limit).max().unwrap_or(0);
    let mut starts: Vec<MessageId> = reads.iter().map(|r| r.from).collect();
    starts.sort_unstable();
    starts.dedup();
    let rows = match store.path_exchanges(&starts, limit).await {
        Ok(rows) => rows,
        Err(e) if reads.len() == 1 => return vec![Err(e)],
        Err(e) => {
            let store = &store;
            return one_by_one(e, &reads, |r| async move {
                let rows = store.path_exchanges(&[r.from], r.limit).await?;
                Ok(rows.into_iter().map(|(_, exchange)| exchange).collect())
            })
            .await;
        }
    };
    let mut by_start: HashMap<MessageId, Vec<Exchange>> = HashMap::new();
    for (start, exchange) in rows {
        by_start.entry(start).or_default().push(exchange);
    }
    reads
        .iter()
        .map(|read| {
            let all = by_start.get(&read.from).map(Vec::as_slice).unwrap_or_default();
            // Oldest first; the newest `limit` of them.
            Ok(all[all.len().saturating_sub(read.limit as usize)..].to_vec())
        })
        .collect()
}

async fn finish_batch(store: Arc<dyn Store>, answers: Vec<Finished>) -> Vec<Result<bool, StoreError>> {
    if let [answer] = answers.as_slice() {
        return vec![store.finish_message(answer.id, answer.answer()).await];
    }
    let rows: Vec<(MessageId, FinishedAnswer<'_>)> = answers.iter().map(|a| (a.id, a.answer())).collect();
    match store.finish_messages(&rows).await {
        Ok(stored) => answers.iter().map(|a| Ok(stored.contains(&a.id))).collect(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IntentType;

    fn pending<T, R>(part: T) -> Pending<T, R> {
        Pending { part, done: oneshot::channel().0 }
    }

    #[tokio::test]
    async fn inserts_are_taken_before_reads_and_reads_before_finishes_at_most_max_batch_at_a_time() {
        let (inserts, insert_queue) = mpsc::channel(QUEUE);
        let (recents, recent_queue) = mpsc::channel(QUEUE);
        let (finishes, finish_queue) = mpsc::channel(QUEUE);
        let mut queues =
            Queues { inserts: insert_queue, recents: recent_queue, finishes: finish_queue, max_batch: 2 };
        let session_id = crate::domain::SessionId::new();
        // Queued in the opposite order of their urgency.
        let finished = Finished {
            id: MessageId::new(),
            ai_response: "done".into(),
            posts: Vec::new(),
            status: MessageStatus::Complete,
            usage: None,
            cut: false,
        };
        finishes.send(pending(finished)).await.unwrap();
        recents.send(pending(Recent { from: MessageId::new(), limit: 10 })).await.unwrap();
        for _ in 0..3 {
            let message = NewMessage {
                id: MessageId::new(),
                session_id,
                client_message_id: None,
                user_message: "hello".into(),
                intent_type: IntentType::Question,
                created_at: chrono::Utc::now(),
                parent: crate::domain::Parent::ActiveBranch,
            };
            inserts.send(pending(message)).await.unwrap();
        }

        assert!(
            matches!(queues.next().await, Some(Batch::Inserts(batch)) if batch.len() == 2),
            "at most max_batch"
        );
        assert!(matches!(queues.next().await, Some(Batch::Inserts(batch)) if batch.len() == 1));
        assert!(matches!(queues.next().await, Some(Batch::Recents(batch)) if batch.len() == 1));
        assert!(matches!(queues.next().await, Some(Batch::Finishes(batch)) if batch.len() == 1));
        drop((inserts, recents, finishes));
        assert!(queues.next().await.is_none(), "no batch once the senders are gone");
    }
}
