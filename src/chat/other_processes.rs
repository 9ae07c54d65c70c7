//! What the chat layer needs from the other processes of a cluster, as ports it owns: whether
//! a session's answer is someone else's (its lease), who watches a session elsewhere, whether a
//! cached copy is still current, and what a user spent today. `cluster/` implements them over
//! Redis; one process uses [`OneProcess`], for which there are no other processes.
//!
//! Where an answer's events go is the other port, [`AnswerAudience`](super::AnswerAudience):
//! in cluster mode the audience `cluster::join` returns also appends them to the session's
//! stream.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::inflight::InFlightAnswer;
use super::{CacheVersion, ChatError};
use crate::domain::{ClientMessageId, MessageId, SessionId, UserId};

/// The lease of a session's answer across processes: one answer per session, wherever it is
/// generated. The lease is released when the answer's in-flight guard is (the implementation
/// hooks [`InFlightAnswers::on_release`](super::InFlightAnswers::on_release)).
#[async_trait]
pub trait AnswerLeases: Send + Sync {
    /// Claims the session for `answer` (generated here, already reserved in this process) and
    /// reads in the same look what accepting its message needs from the other processes: the
    /// cache versions of the session and of its owner's preferences; with `limits.budget`,
    /// what the owner spent that day, claiming nothing when that reaches the day's allowance
    /// ([`LeaseClaim::BudgetSpent`]); with `limits.rate`, the message counted against the
    /// owner's message rate across processes, claiming nothing when it is over it
    /// ([`LeaseClaim::RateLimited`]). Cluster mode: one round trip.
    async fn admit(
        &self,
        answer: &InFlightAnswer,
        owner: &UserId,
        limits: AdmissionLimits,
    ) -> Result<Admission, ChatError>;
    /// Asks the process generating the session's answer to stop it: true for the first request
    /// while that process lives and the answer runs; false when no other process answers.
    /// `mirrored`: the answer of another process this process follows in the session; when
    /// its process died and no other has taken it over yet, the stop waits for the takeover.
    async fn stop_elsewhere(
        &self,
        session_id: SessionId,
        mirrored: Option<MessageId>,
    ) -> Result<bool, ChatError>;
    /// The answer holding the session now, as its lease says (`None`: the session is free).
    async fn holder(&self, session_id: SessionId) -> Result<Option<MessageId>, ChatError>;
    /// Gives up the answer generated here for another process to continue (shutdown): once
    /// its events so far are in, its lease goes as if its process had died, so the first
    /// sweep elsewhere takes it over.
    fn hand_over(&self, session_id: SessionId, message_id: MessageId);
    /// Forgets the answer generated here that another process took over (this one was found
    /// dead): nothing more of it is sent from here.
    fn let_go(&self, session_id: SessionId, message_id: MessageId);
}

/// The daily budget an admission checks: the day (of `now`) and the tokens it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetAsk {
    pub now: DateTime<Utc>,
    pub per_day: u64,
}

/// A user's message rate across processes: `per_minute` after a burst of `burst` (one process
/// counts it in the socket layer, before a message is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateAsk {
    pub per_minute: u32,
    pub burst: u32,
}

/// The limits an admission checks besides the claim (`None`: not checked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionLimits {
    pub budget: Option<BudgetAsk>,
    pub rate: Option<RateAsk>,
}

/// What an admission found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub claim: LeaseClaim,
    /// The version a cached copy of the session must have now (`None`: bypass the cache).
    pub session_version: Option<CacheVersion>,
    /// The same for the owner's preferences.
    pub preferences_version: Option<CacheVersion>,
    /// What the owner spent on the budget's day as every process counts it; `None` when not
    /// asked or not counted yet (then [`SpentTokens`] is asked).
    pub spent: Option<u64>,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseClaim {
    /// The session is this answer's.
    Ours,
    /// Another process answers the session.
    Taken(AnswerElsewhere),
    /// Nothing was claimed: the owner spent the day's allowance (as counted across processes;
    /// only when a budget was asked).
    BudgetSpent,
    /// Nothing was claimed: the owner's messages are over their rate across processes (only
    /// when a rate was asked); the wait until the next may go.
    RateLimited(std::time::Duration),
}

/// An answer another process generates: which message it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerElsewhere {
    pub message_id: MessageId,
    pub client_message_id: Option<ClientMessageId>,
}

/// The sockets of other processes that watch a session, and the answers they see.
#[async_trait]
pub trait OtherWatchers: Send + Sync {
    /// Brings this process up to date with the session's answer generated elsewhere, so that
    /// a `chat:join` here snapshots it exactly; an error when that could not be done in time.
    async fn catch_up(&self, session_id: SessionId) -> Result<(), ChatError>;
    /// Starts following the session's answers without waiting (a socket here sent to it).
    fn follow_soon(&self, session_id: SessionId);
    /// Whether a socket on another process watches the session (true when it cannot be told:
    /// an answer is not cancelled for want of an answer).
    async fn watching(&self, session_id: SessionId) -> bool;
}

/// The versions cached copies are served under (`SessionCache`): a write anywhere makes every
/// process's copy stale. `None` when the version cannot be known (the cache is bypassed).
#[async_trait]
pub trait CacheVersions: Send + Sync {
    async fn session(&self, id: SessionId) -> Option<CacheVersion>;
    /// Makes every other copy of the session stale; the version of this change.
    async fn session_changed(&self, id: SessionId) -> Option<CacheVersion>;
    async fn preferences(&self, user: &UserId) -> Option<CacheVersion>;
    /// Makes every other copy of the user's preferences stale; the version of this change.
    async fn preferences_changed(&self, user: &UserId) -> Option<CacheVersion>;
}

/// The model tokens each user spent today, as every process counts them.
#[async_trait]
pub trait SpentTokens: Send + Sync {
    /// What `user` spent on `now`'s day, if counted yet (`None`: read the store, then `seed`).
    async fn spent(&self, user: &UserId, now: DateTime<Utc>) -> Result<Option<u64>, ChatError>;
    /// Starts the day's count from the store's figure (unless another process did first).
    async fn seed(&self, user: &UserId, now: DateTime<Utc>, spent: u64) -> Result<(), ChatError>;
    /// Adds the tokens of answer `message_id`, already stored with it, to the day's count,
    /// once however often it is called for that answer.
    async fn charge(&self, user: &UserId, now: DateTime<Utc>, message_id: MessageId, tokens: u64);
}

/// One process: no other process answers, watches or caches anything.
pub struct OneProcess;

#[async_trait]
impl AnswerLeases for OneProcess {
    async fn admit(
        &self,
        _: &InFlightAnswer,
        _: &UserId,
        _: AdmissionLimits,
    ) -> Result<Admission, ChatError> {
        // The in-flight reservation already made the session this answer's; every copy is
        // current; the budget counts in this process, the rate in the socket layer.
        Ok(Admission {
            claim: LeaseClaim::Ours,
            session_version: Some(CacheVersion::default()),
            preferences_version: Some(CacheVersion::default()),
            spent: None,
        })
    }

    async fn stop_elsewhere(&self, _: SessionId, _: Option<MessageId>) -> Result<bool, ChatError> {
        Ok(false)
    }

    // One process drains its answers itself and is never taken for dead.
    fn hand_over(&self, _: SessionId, _: MessageId) {}

    fn let_go(&self, _: SessionId, _: MessageId) {}

    async fn holder(&self, _: SessionId) -> Result<Option<MessageId>, ChatError> {
        // Only this process answers: its in-flight answers say it all.
        Ok(None)
    }
}

#[async_trait]
impl OtherWatchers for OneProcess {
    async fn catch_up(&self, _: SessionId) -> Result<(), ChatError> {
        Ok(())
    }

    fn follow_soon(&self, _: SessionId) {}

    async fn watching(&self, _: SessionId) -> bool {
        false
    }
}

#[async_trait]
impl CacheVersions for OneProcess {
    async fn session(&self, _: SessionId) -> Option<CacheVersion> {
        Some(CacheVersion::default())
    }

    async fn session_changed(&self, _: SessionId) -> Option<CacheVersion> {
        Some(CacheVersion::default())
    }

    async fn preferences(&self, _: &UserId) -> Option<CacheVersion> {
        Some(CacheVersion::default())
    }

    async fn preferences_changed(&self, _: &UserId) -> Option<CacheVersion> {
        Some(CacheVersion::default())
    }
}
