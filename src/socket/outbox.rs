//! What one socket is behind on: the events its full queue refused, in the order they were
//! sent. While a socket has an outbox, everything for it goes through the outbox, so a socket
//! that catches up gets every event in order: a later answer's `chat:stream:start` never
//! overtakes an earlier answer's last tokens or its terminal event. Tokens of one answer that
//! wait together go out as one coalesced event (`backlog.rs`). A socket that makes no progress
//! for a while, or falls too far behind, is a slow consumer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::backlog::Backlog;
use crate::domain::{MessageId, SessionId};

/// An event waiting for room in a socket's queue.
#[derive(Debug)]
pub enum Waiting {
    /// Tokens of one answer, sent as one coalesced `chat:stream:token`.
    Tokens { session_id: SessionId, backlog: Backlog },
    /// Any other event, serialized.
    Event { session_id: SessionId, name: &'static str, payload: Box<RawValue> },
}

/// What became of one offer to a socket's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Yes,
    QueueFull,
    /// The socket is closed: nothing more will reach it.
    Gone,
}

/// Token events an outbox delivered, and how many tokens they carried (for the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delivered {
    pub token_events: u64,
    pub tokens: u64,
}

impl std::ops::AddAssign for Delivered {
    fn add_assign(&mut self, other: Self) {
        self.token_events += other.token_events;
        self.tokens += other.tokens;
    }
}

/// Where an outbox stands after [`Outbox::flush`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flushed {
    pub delivered: Delivered,
    /// Nothing waits any more (the outbox can go).
    pub empty: bool,
    /// The socket is closed (the outbox can go).
    pub gone: bool,
}

/// The events one socket is behind on, oldest first.
#[derive(Debug)]
pub struct Outbox {
    /// Tells this outbox from a later one of the same socket (its retry task stops then).
    pub id: u64,
    waiting: VecDeque<Waiting>,
    bytes: usize,
    /// When the socket last took something (or fell behind, if it has not since).
    progress: Instant,
}

impl Outbox {
    /// An empty outbox, with an id no other outbox has had.
    pub fn new() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Self { id, waiting: VecDeque::new(), bytes: 0, progress: Instant::now() }
    }

    /// Queues a token: joined to the last waiting event when that holds this answer's tokens.
    /// Queues `count` tokens (concatenated in `token`), the last numbered `seq`.
    pub fn push_token(
        &mut self,
        session_id: SessionId,
        message_id: MessageId,
        token: &str,
        seq: u64,
        count: u64,
    ) {
        self.bytes += token.len();
        match self.waiting.back_mut() {
            Some(Waiting::Tokens { backlog, .. }) if backlog.message_id == message_id => {
                backlog.push(token, seq)
            }
            _ => {
                let backlog = Backlog::new(message_id, token, seq + 1 - count.max(1), seq);
                self.waiting.push_back(Waiting::Tokens { session_id, backlog });
            }
        }
    }

    /// Queues any other event.
    pub fn push_event(&mut self, session_id: SessionId, name: &'static str, payload: Box<RawValue>) {
        self.bytes += payload.get().len();
        self.waiting.push_back(Waiting::Event { session_id, name, payload });
    }

    /// The session of the oldest waiting event (for the SLOW_CONSUMER error).
    pub fn oldest_session(&self) -> Option<SessionId> {
        self.waiting.front().map(|w| match w {
            Waiting::Tokens { session_id, .. } | Waiting::Event { session_id, .. } => *session_id,
        })
    }

    /// Offers the waiting events to `send`, oldest first, until one is refused.
    pub fn flush(&mut self, mut send: impl FnMut(&Waiting) -> Sent) -> Flushed {
        let mut flushed = Flushed::default();
        while let Some(next) = self.waiting.front() {
            match send(next) {
                Sent::Yes => {
                    self.progress = Instant::now();
                    self.bytes -= next.bytes();
                    if let Waiting::Tokens { backlog, .. } = next {
                        flushed.delivered += Delivered { token_events: 1, tokens: backlog.count() };
                    }
                    self.waiting.pop_front();
                }
                Sent::QueueFull => return flushed,
                Sent::Gone => {
                    flushed.gone = true;
                    return flushed;
                }
            }
        }
        flushed.empty = true;
        flushed
    }

    /// Whether the socket has taken nothing for `max_wait`, or is more than `max_bytes` behind.
    pub fn is_stuck(&self, max_wait: Duration, max_bytes: usize) -> bool {
        self.progress.elapsed() >= max_wait || self.bytes > max_bytes
    }
}

impl Waiting {
    fn bytes(&self) -> usize {
        match self {
            Waiting::Tokens { backlog, .. } => backlog.text.len(),
            Waiting::Event { payload, .. } => payload.get().len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        serde_json::value::to_raw_value(text).unwrap()
    }

    /// What `flush` offered, as short labels, with the queue taking `room` events.
    fn flush_with_room(outbox: &mut Outbox, room: usize) -> (Vec<String>, Flushed) {
        let mut offered = Vec::new();
        let flushed = outbox.flush(|w| {
            if offered.len() == room {
                return Sent::QueueFull;
            }
            offered.push(match w {
                Waiting::Tokens { backlog: b, .. } => {
                    format!("tokens {}..={} {}", b.first_seq, b.last_seq, b.text)
                }
                Waiting::Event { name, .. } => name.to_string(),
            });
            Sent::Yes
        });
        (offered, flushed)
    }

    #[test]
    fn a_later_answer_waits_behind_the_earlier_answers_end() {
        let (session, first, second) = (SessionId::new(), MessageId::new(), MessageId::new());
        let mut outbox = Outbox::new();
        outbox.push_token(session, first, "a", 7, 1);
        outbox.push_token(session, first, "b", 8, 1);
        outbox.push_event(session, "chat:stream:end", raw("end 1"));
        outbox.push_event(session, "chat:stream:start", raw("start 2"));
        outbox.push_token(session, second, "c", 0, 1);

        let (offered, flushed) = flush_with_room(&mut outbox, 1);
        assert_eq!(offered, ["tokens 7..=8 ab"]);
        assert_eq!((flushed.delivered, flushed.empty), (Delivered { token_events: 1, tokens: 2 }, false));

        let (offered, flushed) = flush_with_room(&mut outbox, 10);
        assert_eq!(offered, ["chat:stream:end", "chat:stream:start", "tokens 0..=0 c"]);
        assert!(flushed.empty);
        assert_eq!(outbox.bytes, 0);
    }

    #[test]
    fn tokens_after_an_event_do_not_join_the_tokens_before_it() {
        let (session, answer) = (SessionId::new(), MessageId::new());
        let mut outbox = Outbox::new();
        outbox.push_token(session, answer, "a", 0, 1);
        outbox.push_event(session, "chat:session:updated", raw("title"));
        outbox.push_token(session, answer, "b", 1, 1);
        let (offered, _) = flush_with_room(&mut outbox, 10);
        assert_eq!(offered, ["tokens 0..=0 a", "chat:session:updated", "tokens 1..=1 b"]);
    }

    #[test]
    fn a_closed_socket_ends_the_flush() {
        let mut outbox = Outbox::new();
        outbox.push_event(SessionId::new(), "chat:stream:end", raw("end"));
        let flushed = outbox.flush(|_| Sent::Gone);
        assert!(flushed.gone && !flushed.empty);
    }

    #[test]
    fn stuck_without_progress_or_past_the_size_not_while_it_takes_events() {
        let session = SessionId::new();
        let mut outbox = Outbox::new();
        outbox.push_token(session, MessageId::new(), "abc", 0, 1);
        assert!(!outbox.is_stuck(Duration::from_secs(60), 10));
        assert!(outbox.is_stuck(Duration::ZERO, 10));
        assert!(outbox.is_stuck(Duration::from_secs(60), 2));
        outbox.progress -= Duration::from_secs(5);
        assert!(outbox.is_stuck(Duration::from_secs(1), 10));
        outbox.push_event(session, "chat:stream:end", raw("end"));
        flush_with_room(&mut outbox, 1);
        assert!(!outbox.is_stuck(Duration::from_secs(1), 100), "it took an event: progress");
    }
}
