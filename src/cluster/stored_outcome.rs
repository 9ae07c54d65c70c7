//! The end of an answer as its stored row says: told to the sockets here when the stream
//! cannot tell it (Redis lost its data, or was away from this process for longer than a
//! lease), and appended by the sweep when the answer's own end never reached the stream. Its
//! sender was told the same, so every socket sees one outcome.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::chat::{AnswerAudience, AnswerEvent, ChatError, ChatSessionService, InFlightAnswers};
use crate::domain::{IntentType, Message, MessageId, MessageStatus, SessionId};

/// How often the row is read while it is still `streaming`: soon at first, then less often.
const POLL_FIRST: Duration = Duration::from_millis(250);
const POLL_MOST: Duration = Duration::from_secs(5);

/// Takes over the end of mirrored answer `message_id` for the sockets here: its mirror is
/// forgotten now (nothing from the stream reaches them for it any more) and its terminal event
/// is told from its row once the row is no longer `streaming` (its process stores it, or the
/// sweep does). Past `wait` (longer than any answer may run) it is told `CLUSTER_UNAVAILABLE`.
pub(super) fn take_over(
    sessions: Arc<ChatSessionService>,
    inflight: &InFlightAnswers,
    audience: Arc<dyn AnswerAudience>,
    (session_id, message_id): (SessionId, MessageId),
    wait: Duration,
) {
    if !inflight.forget_mirror(session_id, Some(message_id)) {
        return; // Ended already.
    }
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut poll = POLL_FIRST;
        while started.elapsed() < wait {
            match sessions.message(session_id, message_id).await {
                Ok(Some(row)) if row.status != MessageStatus::Streaming => {
                    info!(%message_id, status = row.status.as_str(), "an answer's end told from its stored row");
                    return terminal(&row, |event| audience.deliver(event));
                }
                Ok(None) => return, // Deleted with its session: nobody watches it.
                Ok(Some(_)) => {}
                Err(e) => warn!(error = %e, %message_id, "stored answer not read yet"),
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(POLL_MOST);
        }
        let error = &ChatError::ClusterUnavailable;
        audience.deliver(AnswerEvent::Failed { session_id, message_id, error });
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
