//! The chat controller: accepts a user's message (validate, authorize, deduplicate, claim the
//! session, store), starts its answer, and serves stop and join.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{info, instrument, warn};

use crate::ai::{AiService, IntentRequest};
use crate::domain::{
    ClientMessageId, IntentType, Message, MessageId, MessageStatus, MessageText, Parent, Platform, SessionId,
    UserId,
};
use crate::store::{NewMessage, StoreError};
use crate::telemetry::Untrusted;

use super::answer::{AnswerJob, AnswerRunner, AnswerSettings};
use super::inflight::{Claim, InFlightGuard, Lost, Origin};
use super::{
    Admission, AdmissionLimits, AnswerAudience, AnswerElsewhere, AnswerEvent, AnswerLeases, AskedSession,
    BudgetAsk, ChatError, ChatSessionService, GenerationSlots, InFlightAnswers, InFlightSnapshot, LeaseClaim,
    OtherWatchers, RateAsk, SessionChange, SessionEntry, TokenBudget,
};

/// Tunables of the chat flow (from the config).
#[derive(Debug, Clone)]
pub struct ChatSettings {
    /// How each answer runs.
    pub answers: AnswerSettings,
    /// How many messages the `chat:join` ack carries.
    pub join_history: u32,
    /// Most answers generated at once (`None`: no bound); see [`GenerationSlots`].
    pub answers_generating: Option<usize>,
    /// Each user's message rate across processes, counted by the admission (`None`: off; one
    /// process counts it in the socket layer only).
    pub message_rate: Option<RateAsk>,
}

/// A `chat:message`, parsed.
#[derive(Debug, Clone)]
pub struct SendMessage {
    pub session_id: SessionId,
    pub content: MessageText,
    pub client_message_id: Option<ClientMessageId>,
    /// Where the exchange goes (`parentId`): after the active branch unless the client named
    /// an exchange (an edit) or the root.
    pub parent: Parent,
}

/// A `chat:regenerate`, parsed: answer exchange `message_id`'s user message again, as a
/// sibling of it.
#[derive(Debug, Clone)]
pub struct Regenerate {
    pub session_id: SessionId,
    pub message_id: MessageId,
    pub client_message_id: Option<ClientMessageId>,
}

/// A message the server accepted: ack it, then [`start`](AcceptedMessage::start) its answer.
pub struct AcceptedMessage {
    pub message_id: MessageId,
    /// True when this was a retry of an earlier message (same `clientMessageId`): no new answer.
    pub duplicate: bool,
    job: Option<AnswerJob>,
}

impl AcceptedMessage {
    /// Starts generating the answer (none for a duplicate). Call after the ack is sent, so the
    /// client sees the ack before `chat:stream:start`.
    pub fn start(self) {
        if let Some(job) = self.job {
            job.spawn();
        }
    }
}

/// An answer whose process died (or handed it over), for this process to continue.
#[derive(Debug, Clone)]
pub struct OrphanedAnswer {
    pub session_id: SessionId,
    pub message_id: MessageId,
    /// What its process wrote and logged (the text, in how many tokens); `None` when not even
    /// its start was logged: it is answered from the start here.
    pub logged: Option<(String, u64)>,
    /// A stop was asked for while no process held it: it ends stopped at once.
    pub stop_asked: bool,
    /// The fencing token this process took it over under.
    pub fence: u64,
}

/// What `chat:join` returns.
pub struct JoinedSession {
    pub entry: Arc<SessionEntry>,
    pub messages: Vec<Message>,
    pub in_flight: Option<InFlightSnapshot>,
}

/// The chat logic: which messages are answered, and the sessions' stop and join.
pub struct ChatController {
    sessions: Arc<ChatSessionService>,
    /// Detects each message's intent.
    ai: AiService,
    inflight: Arc<InFlightAnswers>,
    /// Runs the answers.
    answers: Arc<AnswerRunner>,
    /// Model tokens each user may spend a day: checked here, charged by the answers.
    budget: Arc<TokenBudget>,
    join_history: u32,
    message_rate: Option<RateAsk>,
    accepting: AtomicBool,
    /// Whether another process answers a session.
    leases: Arc<dyn AnswerLeases>,
    /// The sockets of other processes, and the answers generated there.
    watchers: Arc<dyn OtherWatchers>,
}

/// What the controller is built from.
pub struct ChatParts {
    pub sessions: Arc<ChatSessionService>,
    pub ai: AiService,
    /// Everyone watching a session (in cluster mode, the local rooms and the session's stream).
    pub audience: Arc<dyn AnswerAudience>,
    pub inflight: Arc<InFlightAnswers>,
    pub budget: TokenBudget,
    pub leases: Arc<dyn AnswerLeases>,
    pub watchers: Arc<dyn OtherWatchers>,
}

impl ChatController {
    pub fn new(parts: ChatParts, settings: ChatSettings) -> Arc<Self> {
        let ChatParts { sessions, ai, audience, inflight, budget, leases, watchers } = parts;
        let budget = Arc::new(budget);
        let answers = AnswerRunner::new(
            sessions.clone(),
            ai.clone(),
            audience,
            settings.answers,
            budget.clone(),
            GenerationSlots::new(settings.answers_generating),
            (watchers.clone(), leases.clone()),
        );
        Arc::new(Self {
            sessions,
            ai,
            inflight,
            answers: Arc::new(answers),
            budget,
            join_history: settings.join_history,
            message_rate: settings.message_rate,
            accepting: AtomicBool::new(true),
            leases,
            watchers,
        })
    }

    pub fn inflight(&self) -> &InFlightAnswers {
        &self.inflight
    }

    /// Accepts a user's message: the session must be the user's, a repeated `clientMessageId`
    /// returns the first message, and only one answer may be in flight per session.
    #[instrument(skip_all, fields(user_id = %Untrusted(user.as_str()), session_id = %req.session_id))]
    pub async fn accept_message(
        self: &Arc<Self>,
        user: &UserId,
        req: SendMessage,
    ) -> Result<AcceptedMessage, ChatError> {
        if !self.is_accepting() {
            return Err(ChatError::ShuttingDown);
        }
        self.sessions.check_owner(user, req.session_id).await?;
        if let Parent::Exchange(parent) = req.parent {
            self.sessions.check_parent(user, req.session_id, parent, "parentId").await?;
        }
        let intent = self.ai.detect_intent(req.content.as_str()).await;
        self.accept_with_intent(user, req, intent).await
    }

    /// Answers exchange `req.message_id`'s user message again (`chat:regenerate`): a new
    /// exchange after the same parent, with the same intent, accepted as a `chat:message`
    /// (the same limits, idempotency and `BUSY`); the old answer stays. `BUSY` while that
    /// exchange is still being answered.
    #[instrument(skip_all, fields(user_id = %Untrusted(user.as_str()), session_id = %req.session_id))]
    pub async fn regenerate(
        self: &Arc<Self>,
        user: &UserId,
        req: Regenerate,
    ) -> Result<AcceptedMessage, ChatError> {
        if !self.is_accepting() {
            return Err(ChatError::ShuttingDown);
        }
        self.sessions.check_owner(user, req.session_id).await?;
        let original = self.sessions.message(req.session_id, req.message_id).await?;
        let original = original.ok_or(ChatError::NotFound)?;
        if original.status == MessageStatus::Streaming {
            return Err(ChatError::Busy);
        }
        // Stored, so it was valid; whatever the length limit is now, it is asked again whole.
        let content = MessageText::parse(original.user_message, usize::MAX / 4)?;
        let intent = crate::ai::stored_intent(original.intent_type, content.as_str());
        let parent = original.parent_id.map_or(Parent::Root, Parent::Exchange);
        let send = SendMessage {
            session_id: req.session_id,
            content,
            client_message_id: req.client_message_id,
            parent,
        };
        self.accept_with_intent(user, send, intent).await
    }

    /// Makes the branch through exchange `message_id` active (`chat:branch:select`); that
    /// branch's last messages. The session's room hears of it (`chat:session:updated`).
    pub async fn select_branch(
        &self,
        user: &UserId,
        session_id: SessionId,
        message_id: MessageId,
    ) -> Result<Vec<Message>, ChatError> {
        let entry = self.sessions.session(user, session_id).await?;
        let leaf = self.sessions.select_branch(&entry, message_id).await?;
        let messages = self.sessions.messages(user, session_id, self.join_history, None).await?;
        let change = SessionChange { title: &entry.session.title, active_message_id: Some(leaf) };
        self.answers.audience().session_updated(session_id, change);
        Ok(messages)
    }

    /// Accepts a message whose intent is known.
    async fn accept_with_intent(
        self: &Arc<Self>,
        user: &UserId,
        req: SendMessage,
        intent: IntentRequest,
    ) -> Result<AcceptedMessage, ChatError> {
        let message_id = MessageId::new();
        let guard = match self.reserve(&req, message_id, intent.intent).await {
            Ok(guard) => guard,
            Err(ChatError::Busy) => return self.busy_unless_retry(&req).await,
            Err(e) => return Err(e),
        };
        // One look at the other processes (the claim, the cache versions, the day's spending,
        // the message rate); a refusal after it drops the guard, which releases the claim.
        let now = crate::domain::now();
        let budget = self.budget.is_limited().then(|| BudgetAsk { now, per_day: self.budget.per_day() });
        let limits = AdmissionLimits { budget, rate: self.message_rate };
        match self.leases.admit(guard.answer(), user, limits).await? {
            Admission { claim: LeaseClaim::Taken(holder), .. } => {
                drop(guard);
                self.busy_elsewhere(&req, holder).await
            }
            Admission { claim: LeaseClaim::BudgetSpent, .. } => {
                drop(guard);
                let refused =
                    ChatError::RateLimited { retry_after: super::token_budget::until_tomorrow(now) };
                self.stored_duplicate(&req).await?.ok_or(refused)
            }
            Admission { claim: LeaseClaim::RateLimited(retry_after), .. } => {
                drop(guard);
                self.stored_duplicate(&req).await?.ok_or(ChatError::RateLimited { retry_after })
            }
            admission => self.admitted(req, user, guard, admission, now, intent).await,
        }
    }

    /// Reserves the session here for a new answer. An answer that is over does not block it: a
    /// client that saw its end (relayed by another process) may ask next before this process
    /// has freed its own answer, or read the end of another process's answer it mirrors, and
    /// is not told `BUSY` for it (the wait is short and bounded). A mirror blocks only while
    /// its answer holds the session's lease.
    async fn reserve(
        &self,
        req: &SendMessage,
        message_id: MessageId,
        intent: IntentType,
    ) -> Result<InFlightGuard, ChatError> {
        let claim = || claim_for(req, message_id, intent);
        match self.inflight.reserve(claim()) {
            Err(ChatError::Busy) => {}
            reserved => return reserved,
        }
        // Freed meanwhile: reserved now, or taken by another message (then `BUSY`).
        let Some(blocking) = self.inflight.get(req.session_id) else { return self.inflight.reserve(claim()) };
        let over = match blocking.origin {
            Origin::Here => blocking.is_ending(),
            // A Redis error keeps the answer's `BUSY` (and its retry's duplicate ack).
            Origin::Process(_) => {
                matches!(self.leases.holder(req.session_id).await, Ok(holder) if holder != Some(blocking.message_id))
            }
        };
        if !over {
            return Err(ChatError::Busy);
        }
        self.inflight.gone(&blocking, ENDED_ANSWER_WAIT).await;
        self.inflight.reserve(claim())
    }

    /// Accepts a message whose session this answer claimed: its copies at the versions the
    /// claim read, the budget, then the stored message and its answer.
    async fn admitted(
        self: &Arc<Self>,
        req: SendMessage,
        user: &UserId,
        guard: InFlightGuard,
        admission: Admission,
        now: DateTime<Utc>,
        intent: IntentRequest,
    ) -> Result<AcceptedMessage, ChatError> {
        let message_id = guard.answer().message_id;
        let (session_version, preferences_version) =
            (admission.session_version, admission.preferences_version);
        let asked =
            self.sessions.asked_at(user, req.session_id, session_version, preferences_version).await?;
        // A repeated `clientMessageId` is found by the database's unique key when the message is
        // inserted (or on the rare refusals below), not by a read before every message.
        let tokens_left = match self.check_budget(user, now, admission.spent).await {
            Ok(left) => left,
            Err(refused) => {
                drop(guard);
                return self.stored_duplicate(&req).await?.ok_or(refused);
            }
        };
        self.store_and_answer(req, message_id, asked, guard, intent, tokens_left).await
    }

    /// Claims the session across processes for the answer `guard` holds here; the answer
    /// that has it when another process generates one.
    async fn claim_across(
        &self,
        guard: &InFlightGuard,
        owner: &UserId,
    ) -> Result<Option<AnswerElsewhere>, ChatError> {
        Ok(match self.leases.admit(guard.answer(), owner, AdmissionLimits::default()).await?.claim {
            LeaseClaim::Ours => None,
            LeaseClaim::Taken(holder) => Some(holder),
            // Asked without limits: never refused for one.
            LeaseClaim::BudgetSpent | LeaseClaim::RateLimited(_) => unreachable!("no limit was asked"),
        })
    }

    /// Another process answers the session: a retry of the message it answers is a
    /// duplicate (stored there just before, or about to be); anything else is handled as a
    /// local `BUSY`.
    async fn busy_elsewhere(
        &self,
        req: &SendMessage,
        holder: AnswerElsewhere,
    ) -> Result<AcceptedMessage, ChatError> {
        if req.client_message_id.is_some() && req.client_message_id == holder.client_message_id {
            if let Some(first) = self.stored_duplicate(req).await? {
                return Ok(first);
            }
            return Ok(AcceptedMessage { message_id: holder.message_id, duplicate: true, job: None });
        }
        self.stored_duplicate(req).await?.ok_or(ChatError::Busy)
    }

    /// The session is answering: a retry of the message being answered, or of an earlier one
    /// already answered, is a duplicate; anything else is `BUSY`.
    async fn busy_unless_retry(&self, req: &SendMessage) -> Result<AcceptedMessage, ChatError> {
        if let (Some(key), Some(current)) = (&req.client_message_id, self.inflight.get(req.session_id)) {
            if current.client_message_id.as_ref() == Some(key) {
                if current.user_message != req.content.as_str() {
                    return Err(ChatError::Conflict);
                }
                return Ok(AcceptedMessage { message_id: current.message_id, duplicate: true, job: None });
            }
        }
        self.stored_duplicate(req).await?.ok_or(ChatError::Busy)
    }

    /// Stores the accepted message and readies its answer (or, when its key turns out to be
    /// taken, treats it as the retry it is).
    async fn store_and_answer(
        self: &Arc<Self>,
        req: SendMessage,
        message_id: MessageId,
        mut asked: AskedSession,
        guard: InFlightGuard,
        intent: IntentRequest,
        tokens_left: Option<u64>,
    ) -> Result<AcceptedMessage, ChatError> {
        let new = NewMessage {
            id: message_id,
            session_id: req.session_id,
            client_message_id: req.client_message_id.clone(),
            user_message: req.content.as_str().to_owned(),
            intent_type: intent.intent,
            created_at: crate::domain::now(),
            parent: req.parent,
        };
        match self.sessions.save_message(&new).await {
            Ok(()) => {}
            // The key is taken: a retry of a stored message (or a parallel retry that won).
            Err(StoreError::Duplicate(_)) => {
                drop(guard);
                return self.retry_of_stored(&req, asked, intent.platforms, tokens_left).await;
            }
            Err(e) => return Err(e.into()),
        }
        info!(%message_id, intent = intent.intent.as_str(), "message accepted");
        if req.parent != Parent::ActiveBranch {
            self.branched(&mut asked, req.parent, message_id).await;
        }
        let job = self.answers.job(asked, guard, new.user_message, intent.platforms, tokens_left);
        Ok(AcceptedMessage { message_id, duplicate: false, job: Some(job) })
    }

    /// After a new branch was stored: the summary goes with it only if made on the path it
    /// follows (else a prompt finds it off its path and leaves it out), and other tabs learn
    /// of it before its answer starts.
    async fn branched(&self, asked: &mut AskedSession, parent: Parent, message_id: MessageId) {
        match self.sessions.follow_summary(&asked.entry, parent.exchange()).await {
            Ok(entry) => asked.entry = entry,
            Err(e) => warn!(error = %e, "the summary of another branch not dropped"),
        }
        let change = SessionChange { title: &asked.entry.session.title, active_message_id: Some(message_id) };
        self.answers.audience().session_updated(asked.entry.session.id, change);
    }

    /// The stored message `req` repeats (same `clientMessageId`), as its duplicate; `None` when
    /// `req` has no key or nothing was stored under it.
    async fn stored_duplicate(&self, req: &SendMessage) -> Result<Option<AcceptedMessage>, ChatError> {
        self.stored_under_key(req).await?.map(|first| duplicate_of(&first, req)).transpose()
    }

    /// The message stored under `req`'s `clientMessageId`; `None` without a key or a message.
    async fn stored_under_key(&self, req: &SendMessage) -> Result<Option<Message>, ChatError> {
        let Some(key) = &req.client_message_id else { return Ok(None) };
        self.sessions.message_by_client_id(req.session_id, key).await
    }

    /// A message whose key is already stored, sent to a session with no answer in flight: the
    /// stored one's duplicate. If that one is still `streaming`, nothing answers it: the accept
    /// that stored it was told it failed (its insert timed out, then committed), so it is
    /// answered now, as the first and only answer to that key.
    async fn retry_of_stored(
        self: &Arc<Self>,
        req: &SendMessage,
        asked: AskedSession,
        platforms: Vec<Platform>,
        tokens_left: Option<u64>,
    ) -> Result<AcceptedMessage, ChatError> {
        let Some(first) = self.stored_under_key(req).await? else { return Err(ChatError::Conflict) };
        let mut accepted = duplicate_of(&first, req)?;
        if first.status == MessageStatus::Streaming {
            let claim = Claim {
                session_id: first.session_id,
                message_id: first.id,
                intent: first.intent_type,
                client_message_id: first.client_message_id.clone(),
                user_message: first.user_message.clone(),
            };
            let guard = match self.inflight.reserve(claim) {
                Ok(guard) => guard,
                // A parallel retry of the same key got there first: it answers it.
                Err(ChatError::Busy)
                    if self.inflight.get(first.session_id).is_some_and(|a| a.message_id == first.id) =>
                {
                    return Ok(accepted);
                }
                Err(e) => return Err(e),
            };
            if let Some(holder) = self.claim_across(&guard, &asked.entry.session.owner).await? {
                // Another process answers it (or another message) already.
                return if holder.message_id == first.id { Ok(accepted) } else { Err(ChatError::Busy) };
            }
            info!(message_id = %first.id, "answering a stored message that nothing answered");
            accepted.job = Some(self.answers.job(asked, guard, first.user_message, platforms, tokens_left));
        }
        Ok(accepted)
    }

    /// The model tokens `user` has left on `now`'s day (`None`: no budget), given what the
    /// other processes counted (`counted`; asked again, or read from the store, when `None`);
    /// `RATE_LIMITED` once none.
    async fn check_budget(
        &self,
        user: &UserId,
        now: DateTime<Utc>,
        counted: Option<u64>,
    ) -> Result<Option<u64>, ChatError> {
        if !self.budget.is_limited() {
            return Ok(None);
        }
        let spent = match counted {
            Some(spent) => spent,
            None => {
                let stored = self.sessions.tokens_used_since(user, super::token_budget::day_start(now));
                self.budget.spent(user, now, stored).await?
            }
        };
        self.budget.check(spent, now).map_err(|retry_after| ChatError::RateLimited { retry_after })
    }

    /// Continues an answer whose process died (cluster mode), from what that process logged:
    /// same message, its tokens numbered on, its end told and stored here. Refused when this
    /// process is shutting down, already answers the session, or the answer is no longer
    /// `streaming` (its process stored its end before dying): the sweep then ends it as stored.
    pub async fn resume(self: &Arc<Self>, orphan: OrphanedAnswer) -> Result<(), ChatError> {
        if !self.is_accepting() {
            return Err(ChatError::ShuttingDown);
        }
        let (session_id, message_id) = (orphan.session_id, orphan.message_id);
        let row = self.sessions.message(session_id, message_id).await?.ok_or(ChatError::NotFound)?;
        // A later answer of the session's means it was let go (its start never logged).
        let newest = self.sessions.newest_message_id(session_id).await?;
        let superseded = orphan.logged.is_none() && newest != Some(message_id);
        if row.status != MessageStatus::Streaming || superseded {
            return Err(ChatError::NotFound);
        }
        // From now on only this process can store its end (its first one may only be paused).
        if !self.sessions.take_over_message(message_id, orphan.fence).await? {
            return Err(ChatError::NotFound);
        }
        let owner = self.sessions.owner_of(session_id).await?.ok_or(ChatError::NotFound)?;
        let asked = self.sessions.asked_at(&owner, session_id, None, None).await?;
        // Its budget was checked when it was accepted: what is left today bounds the rest.
        let tokens_left = match self.check_budget(&owner, crate::domain::now(), None).await {
            Err(ChatError::RateLimited { .. }) => Some(0),
            checked => checked?,
        };
        let claim = Claim {
            session_id,
            message_id,
            intent: row.intent_type,
            client_message_id: row.client_message_id.clone(),
            user_message: row.user_message.clone(),
        };
        let audience = self.answers.audience();
        let catch_up = |token: &str, seq, count| {
            audience.deliver_here(AnswerEvent::Token { session_id, message_id, token, seq, count });
        };
        let (text, tokens) = orphan.logged.clone().unwrap_or_default();
        let guard = self.inflight.adopt(claim, text, tokens, catch_up)?;
        if orphan.stop_asked {
            guard.answer().stop();
        }
        if !self.is_accepting() {
            // Shutdown began meanwhile, after its answers were handed over: this one too.
            guard.answer().lose(Lost::HandedOver);
        }
        let platforms = crate::ai::stored_intent(row.intent_type, &row.user_message).platforms;
        info!(%message_id, tokens, started = orphan.logged.is_some(), "continuing an answer whose process stopped");
        let started = orphan.logged.is_some();
        let job = (asked, guard, row.user_message);
        self.answers.resumed_job(job, platforms, tokens_left, (started, orphan.fence)).spawn();
        Ok(())
    }

    /// Asks the session's in-flight answer to stop, wherever it is generated; `Ok(false)` when
    /// none was running.
    pub async fn stop(&self, user: &UserId, session_id: SessionId) -> Result<bool, ChatError> {
        self.sessions.session(user, session_id).await?;
        if let Some(answer) = self.inflight.get(session_id).filter(|a| a.origin == Origin::Here) {
            return Ok(answer.stop());
        }
        let mirrored = self.inflight.get(session_id).map(|a| a.message_id);
        self.leases.stop_elsewhere(session_id, mirrored).await
    }

    /// Makes sure this process follows the session's answers generated elsewhere (a socket
    /// here joined its room by sending a message), without waiting.
    pub fn watch_soon(&self, session_id: SessionId) {
        self.watchers.follow_soon(session_id);
    }

    /// Lets a socket watch a session: `join` adds it to the session's room at the moment that
    /// makes the returned in-flight snapshot and the live stream meet without gap or double.
    pub async fn join(
        &self,
        user: &UserId,
        session_id: SessionId,
        join: impl FnOnce(),
    ) -> Result<JoinedSession, ChatError> {
        let entry = self.sessions.session(user, session_id).await?;
        // Caught up with answers generated elsewhere first, so the snapshot is exact.
        self.watchers.catch_up(session_id).await?;
        let in_flight = self.inflight.join_watching(session_id, join);
        let messages = self.sessions.messages(user, session_id, self.join_history, None).await?;
        Ok(JoinedSession { entry, messages, in_flight })
    }

    /// Stops a socket watching a session: `leave` takes it out of the session's room, once the
    /// session is known to be the user's (`NOT_FOUND` otherwise).
    pub async fn leave(
        &self,
        user: &UserId,
        session_id: SessionId,
        leave: impl FnOnce(),
    ) -> Result<(), ChatError> {
        if !self.sessions.exists(user, session_id).await? {
            return Err(ChatError::NotFound);
        }
        leave();
        Ok(())
    }

    /// Refuses new messages (and new sockets) from now on: the first step of shutdown.
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Release);
    }

    /// False once shutdown has begun.
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    /// Waits for answers in flight to finish, up to `grace`; then ends the rest with
    /// `SERVER_SHUTDOWN` (their partial text stored) and waits for them to record that.
    pub async fn drain(&self, grace: Duration) {
        self.stop_accepting();
        if self.answers.resumes_answers() {
            let local = self.inflight.local();
            info!(answers = local.len(), "handing the answers in flight over to other processes");
            local.iter().for_each(|answer| answer.lose(Lost::HandedOver));
        }
        self.answers.drain(grace, || self.inflight.len()).await;
    }
}

/// The in-flight claim of a new message.
/// Longest a message waits for this process to let go of an answer that is over.
const ENDED_ANSWER_WAIT: Duration = Duration::from_secs(1);

fn claim_for(req: &SendMessage, message_id: MessageId, intent: IntentType) -> Claim {
    Claim {
        session_id: req.session_id,
        message_id,
        intent,
        client_message_id: req.client_message_id.clone(),
        user_message: req.content.as_str().to_owned(),
    }
}

/// The answer to a repeated `clientMessageId`: the first message if the content matches.
fn duplicate_of(first: &Message, req: &SendMessage) -> Result<AcceptedMessage, ChatError> {
    if first.user_message != req.content.as_str() {
        return Err(ChatError::Conflict);
    }
    Ok(AcceptedMessage { message_id: first.id, duplicate: true, job: None })
}
