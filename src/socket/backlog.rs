//! Tokens a socket could not take yet. When a socket's queue is full, its tokens wait (in its
//! outbox, `outbox.rs`) and go out as one coalesced event as soon as it has room again: nothing
//! is dropped, `seq` stays exact (the event carries the last token's `seq` and `count`, the
//! number of tokens in it).

use crate::domain::MessageId;

/// The tokens one socket is behind on, for one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    pub message_id: MessageId,
    /// The waiting tokens, concatenated.
    pub text: String,
    pub first_seq: u64,
    pub last_seq: u64,
}

impl Backlog {
    /// Tokens `first_seq..=last_seq`, concatenated in `text`.
    pub fn new(message_id: MessageId, text: &str, first_seq: u64, last_seq: u64) -> Self {
        Self { message_id, text: text.to_owned(), first_seq, last_seq }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_coalesce_with_their_range() {
        let mut b = Backlog::new(MessageId::new(), "a ", 4, 4);
        b.push("b ", 5);
        b.push("c", 6);
        assert_eq!((b.text.as_str(), b.first_seq, b.last_seq, b.count()), ("a b c", 4, 6, 3));
    }
}
