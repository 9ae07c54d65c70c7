//! The Redis keys of cluster mode, all under one prefix (`REDIS_PREFIX`), so several
//! deployments (or test runs) can share a Redis.

use crate::domain::{MessageId, SessionId, UserId};

/// Key names.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    /// The stream of a session's answer events (every process watching it reads it).
    pub fn events(&self, session_id: SessionId) -> String {
        format!("{}:session:{session_id}:events", self.prefix)
    }

    /// The lease of the answer a session has in flight (one per session).
    pub fn lease(&self, session_id: SessionId) -> String {
        format!("{}:session:{session_id}:answer", self.prefix)
    }

    /// The fencing token of a session's answers: incremented by every claim and by every
    /// sweep, so a lease holder paused past its lease finds it fenced off when it comes back.
    pub fn fence(&self, session_id: SessionId) -> String {
        format!("{}:session:{session_id}:fence", self.prefix)
    }

    /// Set once answer `message_id`'s tokens are charged to its user's day.
    pub fn charged(&self, message_id: MessageId) -> String {
        format!("{}:answer:{message_id}:charged", self.prefix)
    }

    /// A value set once by the first process to connect: another value after a reconnection
    /// means Redis lost its data meanwhile (restarted empty).
    pub fn marker(&self) -> String {
        format!("{}:marker", self.prefix)
    }

    /// The fence the last sweep of the session set: an answer claimed under an older one was
    /// swept, and writes nothing more.
    pub fn swept(&self, session_id: SessionId) -> String {
        format!("{}:session:{session_id}:swept", self.prefix)
    }

    /// The last entry of the session's answer appended to its stream (`message number`), so
    /// an entry sent again after a stall is not appended twice.
    pub fn appended(&self, session_id: SessionId) -> String {
        format!("{}:session:{session_id}:appended", self.prefix)
    }

    /// Held (for a few seconds) by the process sweeping the session's answer, so processes do
    /// not sweep it twice at once.
    pub fn sweeping(&self, session_id: SessionId) -> String {
        format!("{}:session:{session_id}:sweeping", self.prefix)
    }

    /// Every lease with its deadline, for the sweeper.
    pub fn leases(&self) -> String {
        format!("{}:answers", self.prefix)
    }

    /// The processes with sockets watching a session, each with a deadline.
    pub fn watchers(&self, session_id: SessionId) -> String {
        format!("{}:session:{session_id}:watchers", self.prefix)
    }

    /// Set by the first stop request for an answer, so a stop is acked `stopped: true` once.
    pub fn stop_asked(&self, message_id: crate::domain::MessageId) -> String {
        format!("{}:answer:{message_id}:stop", self.prefix)
    }

    /// A process's control stream: stop requests from other processes.
    pub fn control(&self, process: &str) -> String {
        format!("{}:process:{process}:control", self.prefix)
    }

    /// What goes before and after a process id in its control stream's key (for a script
    /// that wakes the processes it finds).
    pub fn control_around(&self) -> (String, String) {
        (format!("{}:process:", self.prefix), ":control".to_owned())
    }

    /// The version of a session (bumped on every change: the caches' check).
    pub fn session_version(&self, session_id: SessionId) -> String {
        format!("{}:session:{session_id}:version", self.prefix)
    }

    /// The version of a user's preferences.
    pub fn preferences_version(&self, user: &UserId) -> String {
        format!("{}:user:{}:preferences-version", self.prefix, user.as_str())
    }

    /// A rate limit's state for one key (GCRA's theoretical arrival time).
    pub fn rate(&self, limit: &str, key: &str) -> String {
        format!("{}:rate:{limit}:{key}", self.prefix)
    }

    /// The open sockets (or connections) counted against one key.
    pub fn open(&self, what: &str, key: &str) -> String {
        format!("{}:open:{what}:{key}", self.prefix)
    }

    /// A process's heartbeat (what it counts in [`open`](Self::open) sets dies with it).
    pub fn alive(&self, process: &str) -> String {
        format!("{}:process:{process}:alive", self.prefix)
    }

    /// What goes before and after a process id in its heartbeat's key (for a script that
    /// builds the keys of the processes it finds).
    pub fn alive_around(&self) -> (String, String) {
        (format!("{}:process:", self.prefix), ":alive".to_owned())
    }

    /// Model tokens a user spent on one day.
    pub fn tokens_spent(&self, user: &UserId, day: &str) -> String {
        format!("{}:user:{}:tokens:{day}", self.prefix, user.as_str())
    }
}
