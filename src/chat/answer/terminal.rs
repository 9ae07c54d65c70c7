//! The promise of exactly one terminal event per answer, even when its task dies.

use std::sync::Arc;

use tracing::warn;

use super::AnswerRunner;
use crate::chat::inflight::{InFlightAnswer, InFlightGuard};
use crate::chat::{AnswerEvent, ChatError};
use crate::domain::MessageStatus;
use crate::store::FinishedAnswer;

/// Announces an answer's end exactly once: `deliver` consumes it, and if the job dies before
/// (a panic), dropping it tells the room `INTERNAL` and stores the text so far as an error.
pub(super) struct Terminal {
    runner: Arc<AnswerRunner>,
    answer: Arc<InFlightAnswer>,
    /// The fencing token its row is stored under (0 unless it was taken over).
    row_fence: u64,
    delivered: bool,
}

impl Terminal {
    pub(super) fn new(runner: Arc<AnswerRunner>, answer: Arc<InFlightAnswer>, row_fence: u64) -> Self {
        Self { runner, answer, row_fence, delivered: false }
    }

    /// Delivers the end, releasing the answer's claim on its session (`guard`) just before
    /// any socket can see it (see [`AnswerAudience::deliver_end`]).
    pub(super) async fn deliver(mut self, event: AnswerEvent<'_>, guard: InFlightGuard) {
        self.delivered = true;
        self.answer.mark_ending();
        self.runner.audience.deliver_end(event, Box::new(move || drop(guard))).await;
    }
}

impl Terminal {
    /// The answer goes on in another process, which tells its end: none is told from here.
    pub(super) fn hand_off(mut self) {
        self.delivered = true;
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if self.delivered {
            return;
        }
        let runner = self.runner.clone();
        let (session_id, message_id) = (self.answer.session_id, self.answer.message_id);
        warn!(%message_id, "answer ended without a terminal event: reporting INTERNAL");
        runner.audience.deliver(AnswerEvent::Failed { session_id, message_id, error: &ChatError::Internal });
        let (content, fence) = (self.answer.content(), self.row_fence);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let finished = FinishedAnswer {
                    ai_response: &content,
                    posts: &[],
                    status: MessageStatus::Error,
                    usage: None,
                    cut: false,
                };
                if let Err(e) = runner.sessions.finish_message(message_id, fence, finished).await {
                    warn!(error = %e, "could not store the broken answer");
                }
            });
        }
    }
}
