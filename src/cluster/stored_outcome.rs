//! The end of an answer as its stored row says: told to the sockets here when the stream
//! cannot tell it (Redis lost its data before this process read the end, or Redis is away for
//! longer than a lease), and appended by the sweep when the answer's own end never reached the
//! stream. Its sender was told the same, so every socket sees one outcome.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::chat::{AnswerAudience, AnswerEvent, ChatError, ChatSessionService, InFlightAnswers};
use crate::domain::{IntentType, Message, MessageId, MessageStatus, SessionId};

/// How often the row is read while it is still `streaming`.
const POLL: Duration = Duration::from_millis(500);
/// Longest the row is waited for (a dead process's answer is swept well within it, once Redis
/// answers); then the watchers are told `CLUSTER_UNAVAILABLE`.
const WAIT: Duration = Duration::from_secs(120);

/// Ends the mirror of `message_id` from its stored row, unless its terminal entry reaches the
/// follower first (whoever forgets the mirror delivers the end).
pub(super) fn spawn(
    sessions: Arc<ChatSessionService>,
    inflight: Arc<InFlightAnswers>,
    audience: Arc<dyn AnswerAudience>,
    session_id: SessionId,
    message_id: MessageId,
) {
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        while started.elapsed() < WAIT {
            if inflight.get(session_id).is_none_or(|a| a.message_id != message_id) {
                return; // Its terminal entry arrived after all.
            }
            match sessions.recent_message(session_id, message_id).await {
                Ok(Some(row)) if row.status != MessageStatus::Streaming => {
                    if inflight.forget_mirror(session_id, Some(message_id)) {
                        info!(%message_id, status = row.status.as_str(), "an answer's end told from its stored row");
                        terminal(&row, |event| audience.deliver(event));
                    }
                    return;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, %message_id, "stored answer not read yet"),
            }
            tokio::time::sleep(POLL).await;
        }
        if inflight.forget_mirror(session_id, Some(message_id)) {
            let error = &ChatError::ClusterUnavailable;
            audience.deliver(AnswerEvent::Failed { session_id, message_id, error });
        }
    });
}

/// The terminal event the row's status says, given to `emit` (an error's own code is not
/// stored: `CLUSTER_UNAVAILABLE`, retryable, stands for it).
pub(super) fn terminal(row: &Message, emit: impl FnOnce(AnswerEvent<'_>)) {
    let (session_id, message_id) = (row.session_id, row.id);
    match row.status {
        MessageStatus::Interrupted => {
            emit(AnswerEvent::Failed { session_id, message_id, error: &ChatError::ProcessLost })
        }
        MessageStatus::Error | MessageStatus::Streaming => {
            emit(AnswerEvent::Failed { session_id, message_id, error: &ChatError::ClusterUnavailable })
        }
        MessageStatus::Complete if row.intent_type == IntentType::SocialPost => {
            emit(AnswerEvent::SocialGenerated {
                session_id,
                message_id,
                content: &row.ai_response,
                posts: &row.posts,
            });
        }
        MessageStatus::Complete | MessageStatus::Stopped => emit(AnswerEvent::End {
            session_id,
            message_id,
            intent: row.intent_type,
            content: &row.ai_response,
            stopped: row.status == MessageStatus::Stopped,
            cut: row.cut,
        }),
    }
}
