//! Answers being generated: at most one per session, with the text so far, so a client that
//! joins mid-answer gets everything without a gap or a double.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use crate::domain::{ClientMessageId, IntentType, MessageId, SessionId};

use super::ChatError;

/// The answers in flight, by session.
#[derive(Default)]
pub struct InFlightAnswers {
    answers: Mutex<HashMap<SessionId, Arc<InFlightAnswer>>>,
}

/// One answer being generated.
pub struct InFlightAnswer {
    pub session_id: SessionId,
    pub message_id: MessageId,
    pub intent: IntentType,
    /// The message it answers (its idempotency key and text), so a retry that arrives while it
    /// is still being generated is recognised as a duplicate, not refused as BUSY.
    pub client_message_id: Option<ClientMessageId>,
    pub user_message: String,
    cancel: CancellationToken,
    progress: Mutex<Progress>,
}

#[derive(Default)]
struct Progress {
    content: String,
    tokens: u64,
}

/// An in-flight answer as a joining client sees it: `content` holds tokens `0..=seq`
/// (`seq` is -1 before the first token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlightSnapshot {
    pub message_id: MessageId,
    pub intent: IntentType,
    pub content: String,
    pub seq: i64,
}

/// What a new answer claims a session with.
#[derive(Debug, Clone)]
pub struct Claim {
    pub session_id: SessionId,
    pub message_id: MessageId,
    pub intent: IntentType,
    pub client_message_id: Option<ClientMessageId>,
    pub user_message: String,
}

impl Claim {
    /// A claim without an idempotency key (tests).
    pub fn new(session_id: SessionId, intent: IntentType) -> Self {
        Self {
            session_id,
            message_id: MessageId::new(),
            intent,
            client_message_id: None,
            user_message: String::new(),
        }
    }
}

/// Holds a session's in-flight slot; releasing it (drop) lets the session take a new message.
pub struct InFlightGuard {
    answers: Arc<InFlightAnswers>,
    answer: Arc<InFlightAnswer>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short, non-async locks leaves plain data that is still
    // consistent (a string and a counter, a map of Arcs), so poisoning is ignored.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl InFlightAnswers {
    /// Claims the session for a new answer, or `Busy` when one is already in flight. The check
    /// and the claim are one step, so two messages racing for a session cannot both win.
    pub fn reserve(self: &Arc<Self>, claim: Claim) -> Result<InFlightGuard, ChatError> {
        let mut answers = lock(&self.answers);
        if answers.contains_key(&claim.session_id) {
            return Err(ChatError::Busy);
        }
        let session_id = claim.session_id;
        let answer = Arc::new(InFlightAnswer {
            session_id,
            message_id: claim.message_id,
            intent: claim.intent,
            client_message_id: claim.client_message_id,
            user_message: claim.user_message,
            cancel: CancellationToken::new(),
            progress: Mutex::default(),
        });
        answers.insert(session_id, answer.clone());
        Ok(InFlightGuard { answers: self.clone(), answer })
    }

    pub fn get(&self, session_id: SessionId) -> Option<Arc<InFlightAnswer>> {
        lock(&self.answers).get(&session_id).cloned()
    }

    /// How many answers are in flight.
    pub fn len(&self) -> usize {
        lock(&self.answers).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `join` (adding a socket to the session's room) so that the snapshot returned and the
    /// live tokens the socket receives afterwards meet exactly: every token is in one or the other.
    pub fn join_watching(&self, session_id: SessionId, join: impl FnOnce()) -> Option<InFlightSnapshot> {
        // The map lock keeps a new answer from starting between the join and the snapshot; the
        // progress lock keeps a token from being delivered between them.
        let answers = lock(&self.answers);
        match answers.get(&session_id) {
            None => {
                join();
                None
            }
            Some(answer) => {
                let progress = lock(&answer.progress);
                join();
                Some(InFlightSnapshot {
                    message_id: answer.message_id,
                    intent: answer.intent,
                    content: progress.content.clone(),
                    seq: progress.tokens as i64 - 1,
                })
            }
        }
    }
}

impl InFlightAnswer {
    /// Records a token and delivers it under the same lock, with its sequence number.
    pub fn append(&self, token: &str, deliver: impl FnOnce(u64)) {
        let mut progress = lock(&self.progress);
        let seq = progress.tokens;
        progress.content.push_str(token);
        progress.tokens += 1;
        deliver(seq);
    }

    /// The text generated so far.
    pub fn content(&self) -> String {
        lock(&self.progress).content.clone()
    }

    /// Asks the answer to stop; false when it was already asked.
    pub fn stop(&self) -> bool {
        let first = !self.cancel.is_cancelled();
        self.cancel.cancel();
        first
    }

    /// Resolves when the answer is asked to stop.
    pub fn stopped(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }
}

impl InFlightGuard {
    pub fn answer(&self) -> &Arc<InFlightAnswer> {
        &self.answer
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut answers = lock(&self.answers.answers);
        if answers.get(&self.answer.session_id).is_some_and(|a| Arc::ptr_eq(a, &self.answer)) {
            answers.remove(&self.answer.session_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_answer_for_the_same_session_is_busy_until_the_first_is_released() {
        let answers = Arc::new(InFlightAnswers::default());
        let session = SessionId::new();
        let guard = answers.reserve(Claim::new(session, IntentType::Question)).unwrap();
        assert!(matches!(answers.reserve(Claim::new(session, IntentType::Question)), Err(ChatError::Busy)));
        assert!(answers.reserve(Claim::new(SessionId::new(), IntentType::Question)).is_ok());
        drop(guard);
        assert!(answers.reserve(Claim::new(session, IntentType::Question)).is_ok());
    }

    #[test]
    fn tokens_get_gapless_sequence_numbers_and_the_snapshot_holds_them_all() {
        let answers = Arc::new(InFlightAnswers::default());
        let session = SessionId::new();
        let guard = answers.reserve(Claim::new(session, IntentType::Question)).unwrap();
        let mut seqs = vec![];
        for t in ["a ", "b ", "c"] {
            guard.answer().append(t, |seq| seqs.push(seq));
        }
        assert_eq!(seqs, vec![0, 1, 2]);
        let mut joined = false;
        let snap = answers.join_watching(session, || joined = true).unwrap();
        assert!(joined);
        assert_eq!((snap.content.as_str(), snap.seq), ("a b c", 2));
    }

    #[test]
    fn a_snapshot_before_any_token_has_seq_minus_one() {
        let answers = Arc::new(InFlightAnswers::default());
        let session = SessionId::new();
        let _guard = answers.reserve(Claim::new(session, IntentType::Question)).unwrap();
        assert_eq!(answers.join_watching(session, || {}).unwrap().seq, -1);
    }

    #[test]
    fn stop_is_idempotent() {
        let answers = Arc::new(InFlightAnswers::default());
        let guard = answers.reserve(Claim::new(SessionId::new(), IntentType::Question)).unwrap();
        assert!(guard.answer().stop());
        assert!(!guard.answer().stop());
    }
}
