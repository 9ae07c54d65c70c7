//! Answers: each one runs from `chat:stream:start` to its one terminal event. An answer belongs
//! to the session, not to a socket: a client that disconnects does not stop it.
//!
//! [`AnswerRunner`] holds what every answer needs (the session service, the AI service, the
//! room, the tasks shutdown waits for); the controller holds the runner and hands it each
//! accepted message as an [`AnswerJob`]. `run.rs` is an answer's life in steps, `outcome.rs`
//! how it ended (stored status, terminal event, metrics), `terminal.rs` the guarantee of one
//! terminal event.

mod outcome;
mod run;
mod terminal;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, Instrument};

use crate::ai::{AiService, Allowance, UsageMeter};
use crate::domain::Platform;

use super::inflight::InFlightGuard;
use super::{
    AnswerAudience, AnswerLeases, AskedSession, ChatSessionService, GenerationSlots, OtherWatchers,
    TokenBudget,
};

/// Tunables of an answer's run (from the config).
#[derive(Debug, Clone)]
pub struct AnswerSettings {
    /// Longest an answer may take in all (the watchdog for a provider that never ends).
    pub answer_timeout: Duration,
    /// An answer nobody has watched for this long is cancelled and stored as interrupted.
    pub watch_grace: Duration,
    /// Refresh the session summary every this many exchanges (0: never).
    pub summary_every: usize,
    /// Most requests to the model for one message (`MAX_MODEL_CALLS_PER_MESSAGE`).
    pub max_model_calls: u32,
    /// Cluster mode with `RESUME_ANSWERS_ON_PROCESS_DEATH`: another process continues an
    /// answer of a process found dead, and a draining process hands its answers over.
    pub resume_answers: bool,
}

/// What every answer's run needs.
pub(super) struct AnswerRunner {
    sessions: Arc<ChatSessionService>,
    ai: AiService,
    audience: Arc<dyn AnswerAudience>,
    settings: AnswerSettings,
    /// Model tokens each user may spend a day: answers charge it as they end.
    budget: Arc<TokenBudget>,
    /// Bounds the answers generated at once.
    generation: GenerationSlots,
    /// Answers (and their background titles and summaries) run here, so shutdown can wait.
    tasks: TaskTracker,
    /// Cancelled when shutdown's grace period is over: answers still running end then.
    shutdown: CancellationToken,
    /// Asked whether other processes' sockets watch a session.
    watchers: Arc<dyn OtherWatchers>,
    /// Where answers handed to another process give up their leases.
    leases: Arc<dyn AnswerLeases>,
}

/// One accepted message's answer, ready to run.
pub(super) struct AnswerJob {
    runner: Arc<AnswerRunner>,
    /// The session with its owner's preferences, as read when the message was accepted.
    asked: AskedSession,
    guard: InFlightGuard,
    question: String,
    /// Platforms the user named (social posts); empty for their defaults.
    platforms: Vec<Platform>,
    /// What the model calls cost so far; kept outside `generate` so a stopped or failed answer
    /// still records it.
    usage: UsageMeter,
    /// The text another process wrote and logged before it died: this answer continues it.
    continued: Option<String>,
    /// The fencing token its row was taken over under (0: its first process's).
    row_fence: u64,
}

impl AnswerRunner {
    pub(super) fn new(
        sessions: Arc<ChatSessionService>,
        ai: AiService,
        audience: Arc<dyn AnswerAudience>,
        settings: AnswerSettings,
        budget: Arc<TokenBudget>,
        generation: GenerationSlots,
        others: (Arc<dyn OtherWatchers>, Arc<dyn AnswerLeases>),
    ) -> Self {
        let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let (watchers, leases) = others;
        Self { sessions, ai, audience, settings, budget, generation, tasks, shutdown, watchers, leases }
    }

    /// The answer to `question`, holding the session's in-flight claim until it ends, and
    /// spending at most `tokens_left` of its user's daily budget (`None`: no budget).
    pub(super) fn job(
        self: &Arc<Self>,
        asked: AskedSession,
        guard: InFlightGuard,
        question: String,
        platforms: Vec<Platform>,
        tokens_left: Option<u64>,
    ) -> AnswerJob {
        let allowance = Allowance { tokens: tokens_left, calls: self.settings.max_model_calls };
        AnswerJob {
            runner: self.clone(),
            asked,
            guard,
            question,
            platforms,
            usage: UsageMeter::new(allowance),
            continued: None,
            row_fence: 0,
        }
    }

    /// The continuation of an answer whose process died, its row taken over under `fence`:
    /// from the text that process logged (the guard's answer holds it; `started` false when not
    /// even its start was logged: answered from the start).
    pub(super) fn resumed_job(
        self: &Arc<Self>,
        (asked, guard, question): (AskedSession, InFlightGuard, String),
        platforms: Vec<Platform>,
        tokens_left: Option<u64>,
        (started, fence): (bool, u64),
    ) -> AnswerJob {
        let logged = started.then(|| guard.answer().content());
        AnswerJob {
            continued: logged,
            row_fence: fence,
            ..self.job(asked, guard, question, platforms, tokens_left)
        }
    }

    /// Everyone watching a session.
    pub(super) fn audience(&self) -> &Arc<dyn AnswerAudience> {
        &self.audience
    }

    /// Whether answers outlive their process (see [`AnswerSettings::resume_answers`]).
    pub(super) fn resumes_answers(&self) -> bool {
        self.settings.resume_answers
    }

    /// Waits for answers in flight to finish, up to `grace`; then ends the rest with
    /// `SERVER_SHUTDOWN` (their partial text stored) and waits for them to record that.
    pub(super) async fn drain(&self, grace: Duration, in_flight: impl Fn() -> usize) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            info!(in_flight = in_flight(), "grace period over: ending answers still running");
            self.shutdown.cancel();
            // Ending is prompt (store the partial answer, emit); bound it all the same.
            let _ = tokio::time::timeout(Duration::from_secs(10), self.tasks.wait()).await;
        }
    }
}

impl AnswerJob {
    /// Runs the answer in the background (shutdown waits for it).
    pub(super) fn spawn(self) {
        let tasks = self.runner.tasks.clone();
        let span = tracing::info_span!("answer", message_id = %self.guard.answer().message_id);
        tasks.spawn(self.run().instrument(span));
    }
}
