//! The audience of an answer generated here in cluster mode: the sockets here, as in one
//! process, and the session's stream, for the sockets of every other process.

use std::sync::Arc;

use super::logged_event::LoggedEvent;
use super::Cluster;
use crate::chat::{AnswerAudience, AnswerEvent, InFlightAnswers, SessionChange};
use crate::domain::{MessageId, SessionId};

/// Delivers to the local rooms and logs to the session's stream.
pub(super) struct ClusterAudience {
    local: Arc<dyn AnswerAudience>,
    cluster: Arc<Cluster>,
    /// To find a starting answer's message and key, which go into its logged start.
    inflight: Arc<InFlightAnswers>,
}

impl ClusterAudience {
    pub(super) fn new(
        local: Arc<dyn AnswerAudience>,
        cluster: Arc<Cluster>,
        inflight: Arc<InFlightAnswers>,
    ) -> Self {
        Self { local, cluster, inflight }
    }

    /// Appends the event to the session's stream (queued: the writer sends it).
    fn log(&self, event: &AnswerEvent<'_>) {
        let session_id = event.session_id();
        let (logged, fence) = match event {
            AnswerEvent::Start { message_id, .. } => {
                let answer = self.inflight.get(session_id);
                let claim = answer.as_ref().map(|a| (&a.client_message_id, a.user_message.as_str()));
                (LoggedEvent::of(event, claim), self.cluster.fence_of(*message_id))
            }
            AnswerEvent::Resumed { message_id, .. } => {
                let answer = self.inflight.get(session_id).filter(|a| a.message_id == *message_id);
                let logged =
                    answer.map_or_else(|| LoggedEvent::of(event, None), |a| LoggedEvent::resumed(&a));
                (logged, self.cluster.fence_of(*message_id))
            }
            _ => (LoggedEvent::of(event, None), None),
        };
        self.cluster.log.append(session_id, logged, fence);
    }
}

impl AnswerAudience for ClusterAudience {
    fn deliver(&self, event: AnswerEvent<'_>) {
        self.log(&event);
        self.local.deliver(event);
    }

    fn deliver_here(&self, event: AnswerEvent<'_>) {
        self.local.deliver(event);
    }

    fn deliver_end<'a>(
        &'a self,
        event: AnswerEvent<'a>,
        free: Box<dyn FnOnce() + Send + 'a>,
    ) -> futures::future::BoxFuture<'a, ()> {
        // The terminal entry releases the lease in the same script (`answer_log::APPEND`):
        // once Redis has it (or never will: the lease then runs out), the end is told here.
        self.log(&event);
        let logged = self.cluster.log.settled(event.message_id());
        Box::pin(async move {
            logged.await;
            free();
            self.local.deliver(event);
        })
    }

    fn session_updated(&self, session_id: SessionId, change: SessionChange<'_>) {
        self.local.session_updated(session_id, change);
        let logged = LoggedEvent::Title { title: change.title.to_owned(), active: change.active_message_id };
        self.cluster.log.append(session_id, logged, None);
    }

    fn watchers(&self, session_id: SessionId) -> usize {
        self.local.watchers(session_id)
    }

    fn settled(&self, message_id: MessageId) -> futures::future::BoxFuture<'static, bool> {
        Box::pin(self.cluster.log.settled(message_id))
    }
}
