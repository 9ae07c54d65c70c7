//! Cluster mode (`REDIS_URL`): several server processes sharing one database and one Redis
//! behave as one server (PROTOCOL.md, "Several processes"). docs/cluster.md has the design, the
//! guarantees fault by fault, and why socketioxide's Redis adapter is not used.
//!
//! This module implements the ports the chat layer, the limits and `/readyz` own
//! (`chat::other_processes`, `limits::SharedCounts`, `http::Dependency`); startup picks it or
//! the one-process implementations once. Nothing below imports it.
//!
//! One token, from the process generating the answer to a socket on another process:
//! 1. `audience.rs`: the answer delivers the token to the sockets here (the local rooms) and
//!    queues it in the answer log.
//! 2. `answer_log.rs`: one writer task joins the answer's queued tokens into one entry and
//!    appends it to the session's stream (`logged_event.rs` is the entry's format) through a
//!    script that checks the answer's fencing token (`lease.rs`) and appends each entry once.
//! 3. `follower.rs`, on every process with a socket watching the session: one blocking `XREAD`
//!    of the streams of the sessions watched there (and of its own control stream,
//!    `control.rs`), from the last entry it delivered; the entry is decoded (`tail.rs`) and the
//!    token delivered to the sockets there, under the mirrored answer's lock, so a `chat:join`
//!    there snapshots it exactly (a join first catches up: `tail.rs` reads the stream back to
//!    the answer's start).
//!
//! Around it: `lease.rs` (one answer per session across processes, renewals with fencing
//! tokens, `fences.rs` the tokens held here), `keeper.rs` (renewals and sweeps, every 2 s),
//! `sweeper.rs` (a dead or paused process's answers continued here, or stored `interrupted`),
//! `stored_outcome.rs` (an answer's end told from its row when the stream cannot tell it),
//! `control.rs` (stop requests, wakes), `shared_limits.rs` (rates, sockets per user, the daily
//! token budget, counted in Redis), `cache_versions.rs` (no process serves a cached copy
//! another changed), `clock.rs` (Redis's clock, for anything compared across processes),
//! `keys.rs` (every key's name), `lua.rs` (the scripts, called by their SHA1).

mod answer_log;
mod audience;
mod cache_versions;
mod clock;
mod control;
mod fences;

mod follower;
mod keeper;
mod keys;
mod lease;
mod logged_event;
mod lua;
mod shared_limits;
mod stored_outcome;
mod sweeper;
mod tail;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{info, warn};

use crate::chat::{
    day_name, Admission, AdmissionLimits, AnswerAudience, AnswerElsewhere, AnswerLeases, CacheVersion,
    ChatController, ChatError, ChatSessionService, InFlightAnswer, InFlightAnswers, LeaseClaim,
    OtherWatchers,
};
use crate::domain::{ClientMessageId, MessageId, SessionId, UserId};
use answer_log::AnswerLog;
use audience::ClusterAudience;
use clock::RedisClock;
use follower::Follower;
use keys::Keys;
use lease::{Claimed, LeaseHolder, ReadWithClaim};

/// How long an answer's lease lives without renewal: a process dead for this long has its
/// answers swept (stored `interrupted`, watchers told). Renewed every [`RENEW_EVERY`].
const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often leases are renewed, watchers refreshed and expired leases swept.
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// The origin of the entries a sweep appends (a process's own are its id).
const SWEEPER: &str = "sweeper";
/// Longest wait for a Redis reply: Redis trouble is an error, never a hang.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1_000);

/// What a started member gives the chat layer: its ports, over Redis.
pub struct Started {
    /// The local rooms and the session's stream: where an answer generated here goes.
    pub audience: Arc<dyn AnswerAudience>,
    pub leases: Arc<dyn AnswerLeases>,
    pub watchers: Arc<dyn OtherWatchers>,
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("REDIS_URL: {0}")]
    Redis(#[from] redis::RedisError),
}

/// This process's membership of the cluster: its Redis connection, its id, the key names.
pub struct Cluster {
    redis: ConnectionManager,
    client: redis::Client,
    /// This process's id, random per start.
    id: String,
    keys: Keys,
    healthy: AtomicBool,
    /// How many times Redis came back after failing (cached copies from before are stale).
    epoch: AtomicU64,
    log: AnswerLog,
    /// Redis's clock as this process estimates it (watcher deadlines, trimming).
    pub(crate) clock: Arc<RedisClock>,
    /// The fencing token each answer generated here claimed its session under, until its
    /// release is sent.
    fences: Arc<fences::Fences>,
    /// How long a session's stream outlives its last event: longer than any answer runs.
    answer_keep: Duration,
    /// Answers' tokens Redis did not take (user, day, tokens): added at the next budget read.
    uncharged: std::sync::Mutex<Vec<(UserId, String, MessageId, u64)>>,
    /// `RESUME_ANSWERS_ON_PROCESS_DEATH`: a dead process's answers are continued, not ended.
    resume_answers: bool,
    /// What continues them here (set once the controller is built: it is built from this
    /// member's ports).
    controller: std::sync::OnceLock<std::sync::Weak<ChatController>>,
}

impl Cluster {
    /// Connects to Redis (refusing to start when it cannot be reached) and starts the answer
    /// log's writer. `answer_keep` is how long a session's stream outlives its last event.
    pub async fn connect(
        url: &str,
        prefix: &str,
        inflight: Arc<InFlightAnswers>,
        answer_keep: Duration,
        resume_answers: bool,
    ) -> Result<Arc<Self>, ClusterError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let mut redis = client.get_connection_manager_with_config(config).await?;
        let id = format!("{:016x}", rand::random::<u64>());
        let keys = Keys::new(prefix);
        // Alive from the start (the follower renews it): what it counts in shared limits counts.
        redis::cmd("SET")
            .arg(keys.alive(&id))
            .arg(1)
            .arg("PX")
            .arg(LEASE_TTL.as_millis() as u64)
            .query_async::<()>(&mut redis)
            .await?;
        let clock = Arc::new(RedisClock::default());
        clock.sync(&mut redis).await?;
        let fences = Arc::new(fences::Fences::default());
        let log = AnswerLog::start(
            answer_log::Parts {
                redis: redis.clone(),
                keys: keys.clone(),
                process: id.clone(),
                clock: clock.clone(),
            },
            inflight,
            fences.clone(),
            answer_keep,
        );
        info!(process = %id, prefix, "cluster mode: connected to Redis");
        let healthy = AtomicBool::new(true);
        let (epoch, uncharged) = (AtomicU64::new(0), std::sync::Mutex::default());
        Ok(Arc::new(Self {
            redis,
            client,
            id,
            keys,
            healthy,
            epoch,
            log,
            clock,
            fences,
            answer_keep,
            uncharged,
            resume_answers,
            controller: std::sync::OnceLock::new(),
        }))
    }

    /// Lets this process continue the answers of processes found dead (with
    /// `RESUME_ANSWERS_ON_PROCESS_DEATH`), through `controller`.
    pub fn resume_with(&self, controller: &Arc<ChatController>) {
        let _ = self.controller.set(Arc::downgrade(controller));
    }

    /// The controller that continues a dead process's answers here; `None` when answers are
    /// not resumed, or this process is shutting down (it neither sweeps nor continues then:
    /// the other processes do).
    fn resumer(&self) -> Option<Arc<ChatController>> {
        let controller = self.controller.get()?.upgrade()?;
        (self.resume_answers && controller.is_accepting()).then_some(controller)
    }

    /// Whether this process sweeps expired leases now: not while it drains with answers
    /// resumed (a sweep here could only end what another process can continue).
    fn sweeps(&self) -> bool {
        !self.resume_answers
            || self.controller.get().and_then(|c| c.upgrade()).is_none_or(|c| c.is_accepting())
    }

    /// A connection that reconnects by itself (commands fail while Redis is away).
    fn redis(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// Waits until the events of the answers generated here are in Redis, up to `limit`
    /// (shutdown: their watchers elsewhere see them end).
    pub async fn flushed(&self, limit: Duration) {
        if tokio::time::timeout(limit, self.log.flushed()).await.is_err() {
            warn!("answer events not all written to Redis before shutdown");
        }
    }

    /// Records whether the last Redis call worked (`/readyz`, and the log line on a change).
    fn record(&self, ok: bool) {
        let was = self.healthy.swap(ok, Ordering::AcqRel);
        if !was {
            // Counted on every failure too: a copy read while Redis flickered is not trusted.
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        if was != ok {
            if ok {
                info!("Redis reachable again");
            } else {
                warn!("Redis unreachable");
            }
            metrics::gauge!("postchat_cluster_redis_up").set(if ok { 1.0 } else { 0.0 });
        }
    }

    /// Changes each time Redis fails and comes back.
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Claims `session_id` for the answer `message_id` of `owner` across processes, with what
    /// the claim script reads besides (see `lease::claim`).
    async fn claim_lease(
        &self,
        answer: (SessionId, MessageId, Option<&ClientMessageId>),
        owner: &UserId,
        budget: Option<(&str, u64)>,
        rate: Option<(u32, u32)>,
    ) -> Result<(Claimed, ReadWithClaim), ChatError> {
        let claimed = lease::claim(self, answer, owner, budget, rate).await;
        self.record(claimed.is_ok());
        if let Ok((Claimed::Yes { fence }, _)) = &claimed {
            self.fences.insert(answer.0, answer.1, *fence);
        }
        claimed.map_err(|e| unavailable(&e))
    }

    /// The fencing token of an answer generated here, until its release.
    fn fence_of(&self, message_id: MessageId) -> Option<u64> {
        self.fences.of(message_id)
    }

    /// Frees the session of an answer generated here: the release is queued after the
    /// answer's last event (its fencing token is forgotten once the release is sent).
    fn release(&self, session_id: SessionId, message_id: MessageId) {
        self.log.release(session_id, message_id);
    }

    /// Who holds the session's lease (the process generating its answer), if anyone.
    async fn holder(&self, session_id: SessionId) -> Result<Option<LeaseHolder>, ChatError> {
        let holder = lease::holder(self, session_id).await;
        self.record(holder.is_ok());
        holder.map_err(|e| unavailable(&e))
    }

    /// Asks the process `holder` names to stop the answer it generates; true for the first
    /// request while that process lives and the answer runs.
    async fn request_stop(&self, session_id: SessionId, holder: &LeaseHolder) -> Result<bool, ChatError> {
        let sent = control::request_stop(self, session_id, holder).await;
        self.record(sent.is_ok());
        sent.map_err(|e| unavailable(&e))
    }

    /// Whether a socket on any other process watches the session (Redis trouble counts as
    /// watched: an answer is not cancelled because the count could not be read).
    async fn watched_elsewhere(&self, session_id: SessionId) -> bool {
        let mut redis = self.redis();
        let now = self.clock.now_ms();
        let watched: Result<u64, _> = redis::cmd("ZCOUNT")
            .arg(self.keys.watchers(session_id))
            .arg(now)
            .arg("+inf")
            .query_async(&mut redis)
            .await;
        self.record(watched.is_ok());
        watched.map_or(true, |n| n > 0)
    }

    /// Starts the member's tasks: the follower (reads the streams of watched sessions and
    /// this process's control stream, delivering to `rooms`) and the lease keeper (renews,
    /// sweeps); leases are released as the answers in `inflight` end. Its ports for the chat.
    pub fn start(
        self: &Arc<Self>,
        inflight: Arc<InFlightAnswers>,
        rooms: Arc<dyn AnswerAudience>,
        sessions: Arc<ChatSessionService>,
    ) -> Started {
        let released = self.clone();
        inflight.on_release(move |session, message| released.release(session, message));
        keeper::spawn(self.clone(), inflight.clone(), sessions.clone());
        let audience = Arc::new(ClusterAudience::new(rooms.clone(), self.clone(), inflight.clone()));
        let watchers = Follower::start(self.clone(), inflight, rooms, sessions, self.answer_keep);
        Started { audience, leases: self.clone(), watchers }
    }

    /// A plain connection of its own (the follower's blocking reads must not hold up the
    /// shared connection).
    async fn dedicated(
        &self,
        response_timeout: Duration,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(response_timeout))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT));
        self.client.get_multiplexed_async_connection_with_config(&config).await
    }
}

/// `CLUSTER_UNAVAILABLE`, with the cause logged.
fn unavailable(e: &redis::RedisError) -> ChatError {
    warn!(error = %e, "Redis call failed");
    ChatError::ClusterUnavailable
}

#[async_trait::async_trait]
impl AnswerLeases for Cluster {
    async fn admit(
        &self,
        answer: &InFlightAnswer,
        owner: &UserId,
        limits: AdmissionLimits,
    ) -> Result<Admission, ChatError> {
        if limits.budget.is_some() {
            self.charge_missed().await;
        }
        let epoch = self.epoch();
        let budget = limits.budget.map(|b| (day_name(b.now), b.per_day));
        let ours = (answer.session_id, answer.message_id, answer.client_message_id.as_ref());
        let budget = budget.as_ref().map(|(day, per_day)| (day.as_str(), *per_day));
        let rate = limits.rate.map(|r| (r.per_minute, r.burst));
        let (claimed, read) = self.claim_lease(ours, owner, budget, rate).await?;
        let claim = match claimed {
            Claimed::Yes { .. } => LeaseClaim::Ours,
            Claimed::Taken(holder) => LeaseClaim::Taken(AnswerElsewhere {
                message_id: holder.message_id,
                client_message_id: holder.client_message_id,
            }),
            Claimed::BudgetSpent => LeaseClaim::BudgetSpent,
            Claimed::RateLimited(wait) => LeaseClaim::RateLimited(wait),
        };
        let version = |version| Some(CacheVersion { epoch, version });
        Ok(Admission {
            claim,
            session_version: version(read.session_version),
            preferences_version: version(read.preferences_version),
            spent: read.spent,
        })
    }

    async fn stop_elsewhere(
        &self,
        session_id: SessionId,
        mirrored: Option<MessageId>,
    ) -> Result<bool, ChatError> {
        match self.holder(session_id).await? {
            // `stopped: true` once, and only for an answer a live process generates (or that
            // the process taking it over will stop).
            Some(holder) if holder.process != self.id => self.request_stop(session_id, &holder).await,
            // Free: the answer mirrored here lost its process and waits for another to take it
            // over, which stops it; or this process's answer that has just ended.
            None if self.resume_answers => match mirrored {
                Some(message_id) => {
                    let asked = control::ask_stop(self, message_id).await;
                    self.record(asked.is_ok());
                    asked.map_err(|e| unavailable(&e))
                }
                None => Ok(false),
            },
            _ => Ok(false),
        }
    }

    fn hand_over(&self, session_id: SessionId, message_id: MessageId) {
        self.fences.remove(message_id);
        self.log.let_go(session_id, message_id, true);
    }

    fn let_go(&self, session_id: SessionId, message_id: MessageId) {
        self.fences.remove(message_id);
        self.log.let_go(session_id, message_id, false);
    }

    async fn holder(&self, session_id: SessionId) -> Result<Option<MessageId>, ChatError> {
        Ok(Cluster::holder(self, session_id).await?.map(|holder| holder.message_id))
    }
}

#[async_trait::async_trait]
impl crate::http::Dependency for Cluster {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn reachable(&self) -> bool {
        let ok = redis::cmd("PING").query_async::<String>(&mut self.redis()).await.is_ok();
        self.record(ok);
        ok
    }
}
