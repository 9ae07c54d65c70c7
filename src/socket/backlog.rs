//! Tokens a socket could not take yet. When a socket's queue is full, its tokens wait here and
//! go out as one coalesced event as soon as it has room again: nothing is dropped, `seq` stays
//! exact (the event carries the last token's `seq` and `count`, the number of tokens in it).
//! A socket that stays stuck past a bound is a slow consumer.

use std::time::{Duration, Instant};

use crate::domain::MessageId;

/// The tokens one socket is behind on, for one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    pub message_id: MessageId,
    /// The waiting tokens, concatenated.
    pub text: String,
    pub first_seq: u64,
    pub last_seq: u64,
    since: Instant,
}

impl Backlog {
    pub fn new(message_id: MessageId, token: &str, seq: u64) -> Self {
        Self { message_id, text: token.to_owned(), first_seq: seq, last_seq: seq, since: Instant::now() }
    }

    /// Adds the next token (its `seq` follows the last one).
    pub fn push(&mut self, token: &str, seq: u64) {
        self.text.push_str(token);
        self.last_seq = seq;
    }

    /// How many tokens wait.
    pub fn count(&self) -> u64 {
        self.last_seq - self.first_seq + 1
    }

    /// Whether the socket has been stuck too long, or is too far behind, to keep waiting for.
    pub fn is_stuck(&self, max_wait: Duration, max_bytes: usize) -> bool {
        self.since.elapsed() >= max_wait || self.text.len() > max_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_coalesce_with_their_range() {
        let mut b = Backlog::new(MessageId::new(), "a ", 4);
        b.push("b ", 5);
        b.push("c", 6);
        assert_eq!((b.text.as_str(), b.first_seq, b.last_seq, b.count()), ("a b c", 4, 6, 3));
    }

    #[test]
    fn a_backlog_is_stuck_after_the_wait_or_past_the_size() {
        let b = Backlog::new(MessageId::new(), "abc", 0);
        assert!(!b.is_stuck(Duration::from_secs(60), 10));
        assert!(b.is_stuck(Duration::ZERO, 10));
        assert!(b.is_stuck(Duration::from_secs(60), 2));
    }
}
