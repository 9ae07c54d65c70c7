//! What an answer tells the clients watching its session, and the port it tells them through.

use crate::domain::{IntentType, MessageId, SessionId, SocialPost};

use super::ChatError;

/// One event of an answer's life, in the order PROTOCOL.md fixes: `Start`, `Token`s (and
/// `Waiting`s), then exactly one of `End`, `SocialGenerated` or `Failed`.
#[derive(Debug)]
pub enum AnswerEvent<'a> {
    Start {
        session_id: SessionId,
        message_id: MessageId,
        intent: IntentType,
    },
    /// One token, or (relayed from another process) `count` tokens concatenated, the last
    /// numbered `seq`.
    Token {
        session_id: SessionId,
        message_id: MessageId,
        token: &'a str,
        seq: u64,
        count: u64,
    },
    /// The provider is busy; the answer is asked for again after `retry_after`.
    Waiting {
        session_id: SessionId,
        message_id: MessageId,
        retry_after: std::time::Duration,
    },
    /// The provider reads a long prompt, `prompt_tokens` long: about `expected` at its pace.
    Reading {
        session_id: SessionId,
        message_id: MessageId,
        prompt_tokens: usize,
        expected: std::time::Duration,
    },
    /// Another process continues the answer from its token `seq` (-1: none) as logged; what
    /// a socket holds past it was never logged and is written again.
    Resumed {
        session_id: SessionId,
        message_id: MessageId,
        seq: i64,
    },
    End {
        session_id: SessionId,
        message_id: MessageId,
        intent: IntentType,
        content: &'a str,
        stopped: bool,
        /// The answer stopped at `ANSWER_MAX_TOKENS`.
        cut: bool,
    },
    SocialGenerated {
        session_id: SessionId,
        message_id: MessageId,
        content: &'a str,
        posts: &'a [SocialPost],
    },
    Failed {
        session_id: SessionId,
        message_id: MessageId,
        error: &'a ChatError,
    },
}

impl AnswerEvent<'_> {
    /// The answer it is about.
    pub fn message_id(&self) -> MessageId {
        match self {
            AnswerEvent::Start { message_id, .. }
            | AnswerEvent::Token { message_id, .. }
            | AnswerEvent::Waiting { message_id, .. }
            | AnswerEvent::Reading { message_id, .. }
            | AnswerEvent::Resumed { message_id, .. }
            | AnswerEvent::End { message_id, .. }
            | AnswerEvent::SocialGenerated { message_id, .. }
            | AnswerEvent::Failed { message_id, .. } => *message_id,
        }
    }

    pub fn session_id(&self) -> SessionId {
        match self {
            AnswerEvent::Start { session_id, .. }
            | AnswerEvent::Token { session_id, .. }
            | AnswerEvent::Waiting { session_id, .. }
            | AnswerEvent::Reading { session_id, .. }
            | AnswerEvent::Resumed { session_id, .. }
            | AnswerEvent::End { session_id, .. }
            | AnswerEvent::SocialGenerated { session_id, .. }
            | AnswerEvent::Failed { session_id, .. } => *session_id,
        }
    }
}

/// What `chat:session:updated` tells a session's room.
#[derive(Debug, Clone, Copy)]
pub struct SessionChange<'a> {
    /// The session's title.
    pub title: &'a str,
    /// The exchange its active branch ends at now, when its branches changed (a branch made
    /// by an edit or a regenerated answer, or selected); `None` when only the title did.
    pub active_message_id: Option<MessageId>,
}

/// Everyone watching a session: the socket layer's rooms. Delivery is synchronous so that the
/// in-flight answer can deliver a token and record it under one lock (see `inflight.rs`).
pub trait AnswerAudience: Send + Sync + 'static {
    fn deliver(&self, event: AnswerEvent<'_>);

    /// Delivers to the sockets of this process only: what another process already logged for
    /// the others (an answer taken over here, caught up for the sockets that mirrored it).
    fn deliver_here(&self, event: AnswerEvent<'_>) {
        self.deliver(event);
    }

    /// Tells the session's room that the session changed (its title, its branches:
    /// `chat:session:updated`).
    fn session_updated(&self, session_id: SessionId, change: SessionChange<'_>);

    /// How many sockets watch the session now (an answer nobody watches for the grace period
    /// is cancelled).
    fn watchers(&self, session_id: SessionId) -> usize;

    /// Resolves once everything delivered of answer `message_id` so far has reached every
    /// watcher that can be reached (cluster mode: the session's stream); false when it could
    /// not (the answer then ends as that failure says, the same for every socket).
    fn settled(&self, _message_id: MessageId) -> futures::future::BoxFuture<'static, bool> {
        Box::pin(std::future::ready(true))
    }

    /// Delivers an answer's terminal event, freeing its session first (`free` drops its
    /// in-flight claim), so a client that sees the end may send its next message at once. In
    /// cluster mode the end also goes to every other process first, freeing the session there
    /// in the same step (its lease), so that next message may go to any process.
    fn deliver_end<'a>(
        &'a self,
        event: AnswerEvent<'a>,
        free: Box<dyn FnOnce() + Send + 'a>,
    ) -> futures::future::BoxFuture<'a, ()> {
        free();
        self.deliver(event);
        Box::pin(std::future::ready(()))
    }
}
