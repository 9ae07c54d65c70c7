//! The fencing tokens of the answers generated here, from their claim until their lease's
//! release has been sent (after their last entry): renewals are made under them until then, so
//! an answer whose end waits in the log (Redis stalled) keeps its lease.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::domain::{MessageId, SessionId};

#[derive(Default)]
pub(super) struct Fences(Mutex<HashMap<MessageId, (SessionId, u64)>>);

impl Fences {
    fn lock(&self) -> MutexGuard<'_, HashMap<MessageId, (SessionId, u64)>> {
        // Plain numbers: a panic elsewhere cannot leave them half-written.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn insert(&self, session_id: SessionId, message_id: MessageId, fence: u64) {
        self.lock().insert(message_id, (session_id, fence));
    }

    pub(super) fn of(&self, message_id: MessageId) -> Option<u64> {
        self.lock().get(&message_id).map(|(_, fence)| *fence)
    }

    /// The answer's lease was released (or given up on).
    pub(super) fn remove(&self, message_id: MessageId) {
        self.lock().remove(&message_id);
    }

    /// Every lease held here: session, answer, fencing token.
    pub(super) fn held(&self) -> Vec<(SessionId, MessageId, u64)> {
        self.lock().iter().map(|(m, (s, f))| (*s, *m, *f)).collect()
    }
}
