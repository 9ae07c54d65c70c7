//! The end of a mirrored answer whose last entries Redis lost (restarted empty before this
//! process read them): told to the sockets here from the stored row, as its sender was told,
//! once the row is no longer `streaming` (its process stores it, or the sweep does).

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::chat::{AnswerAudience, AnswerEvent, ChatError, ChatSessionService, InFlightAnswers};
use crate::domain::{IntentType, Message, MessageId, MessageStatus, SessionId};

/// How often the row is read while it is still `streaming`.
const POLL: Duration = Duration::from_millis(500);
/// Longest the row is waited for (a dead process's answer is swept well within it).
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
                        info!(%message_id, status = row.status.as_str(), "an answer lost with Redis's data: ended from its stored row");
                        deliver(&*audience, &row);
                    }
                    return;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, %message_id, "stored answer not read yet"),
            }
            tokio::time::sleep(POLL).await;
        }
    });
}

/// The terminal event the row's status says (an error's own code was lost with Redis:
/// `CLUSTER_UNAVAILABLE`, retryable, stands for it).
fn deliver(audience: &dyn AnswerAudience, row: &Message) {
    let (session_id, message_id) = (row.session_id, row.id);
    let failed = |error: &ChatError| audience.deliver(AnswerEvent::Failed { session_id, message_id, error });
    match row.status {
        MessageStatus::Interrupted => failed(&ChatError::ProcessLost),
        MessageStatus::Error | MessageStatus::Streaming => failed(&ChatError::ClusterUnavailable),
        MessageStatus::Complete if row.intent_type == IntentType::SocialPost => {
            audience.deliver(AnswerEvent::SocialGenerated {
                session_id,
                message_id,
                content: &row.ai_response,
                posts: &row.posts,
            });
        }
        MessageStatus::Complete | MessageStatus::Stopped => audience.deliver(AnswerEvent::End {
            session_id,
            message_id,
            intent: row.intent_type,
            content: &row.ai_response,
            stopped: row.status == MessageStatus::Stopped,
            cut: row.cut,
        }),
    }
}
