//! How an answer ended, and what follows from it: the status it is stored with, the terminal
//! event its room gets, and the metrics it counts in.

use tracing::{info, warn};

use crate::ai::{AiError, Written};
use crate::chat::{AnswerEvent, ChatError};
use crate::domain::{IntentType, MessageId, MessageStatus, SessionId, SocialPost};

/// How an answer ended, before it is stored and announced.
pub(super) enum Outcome {
    Answered(Written),
    /// `chat:stop`.
    Stopped,
    /// Nobody watched the session for the grace period.
    Abandoned,
    Failed(ChatError),
    ShutDown,
    /// The continuation of an answer whose process died could not be written (the provider
    /// refused, timed out): it ends as it would have without one, `interrupted`.
    NotContinued,
    /// Another process continues it (see [`Lost::TakenOver`](crate::chat::Lost)).
    TakenOver,
    /// Handed to another process to continue (shutdown).
    HandedOver,
}

const SHUTTING_DOWN: ChatError = ChatError::ShuttingDown;
const PROCESS_LOST: ChatError = ChatError::ProcessLost;

/// What an answer is, for its terminal event.
pub(super) struct AnswerId {
    pub session_id: SessionId,
    pub message_id: MessageId,
    pub intent: IntentType,
}

impl Outcome {
    /// The status the answer is stored with.
    pub(super) fn status(&self) -> MessageStatus {
        match self {
            Outcome::Answered(_) => MessageStatus::Complete,
            Outcome::Stopped => MessageStatus::Stopped,
            Outcome::Failed(_) => MessageStatus::Error,
            Outcome::ShutDown | Outcome::Abandoned | Outcome::NotContinued => MessageStatus::Interrupted,
            // Never stored here: the process that continues it stores it.
            Outcome::TakenOver | Outcome::HandedOver => MessageStatus::Streaming,
        }
    }

    /// The posts stored with it (social posts that were written).
    pub(super) fn posts(&self) -> &[SocialPost] {
        match self {
            Outcome::Answered(Written { posts: Some(posts), .. }) => posts,
            _ => &[],
        }
    }

    /// Whether it stopped at `ANSWER_MAX_TOKENS`.
    pub(super) fn cut(&self) -> bool {
        matches!(self, Outcome::Answered(Written { cut: true, .. }))
    }

    /// The one terminal event of the answer, once `stored` says whether storing it worked.
    pub(super) fn terminal_event<'a>(
        &'a self,
        id: &AnswerId,
        content: &'a str,
        stored: &'a Result<(), ChatError>,
    ) -> AnswerEvent<'a> {
        let AnswerId { session_id, message_id, intent } = *id;
        let end = |stopped: bool, cut: bool| AnswerEvent::End {
            session_id,
            message_id,
            intent,
            content,
            stopped,
            cut,
        };
        let failed = |error: &'a ChatError| AnswerEvent::Failed { session_id, message_id, error };
        match (stored, self) {
            (Err(e), _) => failed(e),
            (Ok(()), Outcome::Answered(Written { posts: Some(posts), .. })) => {
                AnswerEvent::SocialGenerated { session_id, message_id, content, posts }
            }
            (Ok(()), Outcome::Answered(Written { posts: None, cut })) => end(false, *cut),
            (Ok(()), Outcome::Stopped | Outcome::Abandoned) => end(true, false),
            (Ok(()), Outcome::Failed(e)) => failed(e),
            (Ok(()), Outcome::ShutDown | Outcome::TakenOver | Outcome::HandedOver) => failed(&SHUTTING_DOWN),
            (Ok(()), Outcome::NotContinued) => failed(&PROCESS_LOST),
        }
    }

    /// Counts the answer in the metrics and logs how it ended.
    pub(super) fn record(&self, event: &AnswerEvent<'_>, took: std::time::Duration, chars: usize) {
        let status = self.status().as_str();
        metrics::gauge!("postchat_answers_in_flight").decrement(1.0);
        metrics::histogram!("postchat_answer_seconds").record(took.as_secs_f64());
        metrics::counter!("postchat_answers_total", "status" => status).increment(1);
        if let Outcome::Failed(ChatError::Ai(e)) = self {
            let kind = match e {
                AiError::Unavailable { .. } => "unavailable",
                AiError::Timeout => "timeout",
                AiError::ContextTooLong(_) => "context_too_long",
                AiError::Failed(_) => "failed",
                // The message's allowance, not the provider.
                AiError::BudgetSpent | AiError::TooManyCalls(_) => "",
            };
            if !kind.is_empty() {
                metrics::counter!("postchat_provider_failures_total", "kind" => kind).increment(1);
            }
        }
        match event {
            AnswerEvent::Failed { error, .. } => warn!(error = %error, status, "answer failed"),
            _ => info!(status, chars, "answer finished"),
        }
    }
}
